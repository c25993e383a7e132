// Package config is spareline's configuration contract: the YAML file's
// structure, its defaults and its validation. Every field carries a doc
// comment; the README's configuration table is written from these.
//
// Loading collects every problem it finds (unknown and duplicate keys, bad
// durations, references to carriers that do not exist, unreadable TLS files...)
// and reports each one with the key path and the line of the YAML file, so
// that `spareline check` can print one line per problem.
package config

import "time"

// Config is the whole file.
type Config struct {
	// Instance names this gateway among those sharing a store (Redis): it
	// is the owner written in the store's per-account delivery leases, so
	// that one gateway at a time delivers an account's receipts and MO
	// messages. Empty (the default) uses the host name and the SMPP listen
	// addresses, which is distinct between live gateways on plain hosts and
	// stable across restarts (a restarted gateway takes its own leases back
	// at once). Set it when the host name is not unique — two replicas with
	// a fixed hostname (a compose `hostname:`, a k8s pod spec) listening on
	// the same port would share one lease and both deliver, duplicating
	// receipts. Printable, at most 64 characters; keep it stable across
	// restarts and distinct between replicas (e.g. the StatefulSet pod
	// name).
	Instance string `yaml:"instance"`
	// SMPP is the northbound (platform-facing) SMPP server.
	SMPP SMPP `yaml:"smpp"`
	// HTTP serves /metrics, /healthz, /readyz and /status.
	HTTP HTTP `yaml:"http"`
	// Store holds in-flight message state.
	Store Store `yaml:"store"`
	// Accounts are the platforms allowed to bind.
	Accounts []Account `yaml:"accounts"`
	// Carriers are the operators' SMSCs.
	Carriers []Carrier `yaml:"carriers"`
	// Routing maps destination numbers to carriers.
	Routing Routing `yaml:"routing"`
	// Modems are the GSM modems of the backup channel.
	Modems []Modem `yaml:"modems"`
	// Failover says when traffic moves to the modems.
	Failover Failover `yaml:"failover"`
	// Log holds the log files spareline writes besides its main log
	// (stderr).
	Log Log `yaml:"log"`
}

// SMPP is the platform-facing server.
type SMPP struct {
	// Listen is the plain TCP address, e.g. "0.0.0.0:2775". Empty disables it.
	Listen string `yaml:"listen"`
	// TLSListen is the SMPP-over-TLS address. Empty disables it.
	TLSListen string `yaml:"tls_listen"`
	// TLSCert is the PEM certificate file for TLSListen.
	TLSCert string `yaml:"tls_cert"`
	// TLSKey is the PEM key file for TLSListen.
	TLSKey string `yaml:"tls_key"`
	// Window is how many requests one platform session may have unanswered
	// at once; beyond it spareline answers ESME_RTHROTTLED. Default 256.
	Window int `yaml:"window"`
	// EnquireLink is how often spareline sends enquire_link on an idle
	// session. Default 30s.
	EnquireLink Duration `yaml:"enquire_link"`
	// IdleTimeout closes a session from which nothing arrived this long.
	// Default 5m.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ResponseTimeout is how long spareline waits for a platform's response
	// (deliver_sm_resp, enquire_link_resp) before it retries. Default 10s.
	ResponseTimeout Duration `yaml:"response_timeout"`
	// MaxCommandLength is the largest PDU accepted, in octets. Default 65536.
	MaxCommandLength int `yaml:"max_command_length"`
	// BindTimeout closes a connection that has not bound this long after
	// connecting. Default 30s.
	BindTimeout Duration `yaml:"bind_timeout"`
}

// HTTP is the operations endpoint.
type HTTP struct {
	// Listen is the address of /metrics, /healthz, /readyz, /status,
	// /status.json and /message.
	// Default "127.0.0.1:9090"; empty disables it.
	Listen string `yaml:"listen"`
}

// Store selects where in-flight state lives.
type Store struct {
	// Redis is a redis URL (redis://, rediss://, or redis-sentinel style
	// options, see docs/operations.md and the store package doc). Empty uses the embedded store at Path.
	Redis string `yaml:"redis"`
	// Path is the embedded store's directory. Default "./spareline-data".
	Path string `yaml:"path"`
	// TTL is how long finished message records are kept (for late receipts).
	// Default 72h.
	TTL Duration `yaml:"ttl"`
}

// Account is one platform login.
type Account struct {
	// SystemID is the bind's system_id.
	SystemID string `yaml:"system_id"`
	// Password is the bind's password (at most 8 characters in SMPP 3.4).
	Password string `yaml:"password"`
	// PasswordEnv names an environment variable holding the password instead.
	PasswordEnv string `yaml:"password_env"`
	// PasswordFile names a file holding the password instead.
	PasswordFile string `yaml:"password_file"`
	// Allow lists the CIDRs the account may bind from. Empty allows any.
	Allow []string `yaml:"allow"`
	// MaxTPS caps submits per second across the account's sessions; beyond it
	// spareline answers ESME_RTHROTTLED. 0 = unlimited.
	MaxTPS int `yaml:"max_tps"`
	// MO marks the account that receives mobile-originated messages. When no
	// account sets it, the first account receives them.
	MO bool `yaml:"mo"`
	// Trace logs every PDU of the account's sessions once bound (as
	// carriers[].trace). Default false.
	Trace bool `yaml:"trace"`
}

// Carrier is one operator SMSC.
type Carrier struct {
	// Name is the carrier's name; the cn preset uses mobile, unicom, telecom.
	Name string `yaml:"name"`
	// Address is the SMSC's host:port.
	Address string `yaml:"address"`
	// SystemID is spareline's login at the SMSC.
	SystemID string `yaml:"system_id"`
	// Password is spareline's password at the SMSC.
	Password string `yaml:"password"`
	// PasswordEnv names an environment variable holding the password instead.
	PasswordEnv string `yaml:"password_env"`
	// PasswordFile names a file holding the password instead.
	PasswordFile string `yaml:"password_file"`
	// SystemType is sent in the bind. Default "".
	SystemType string `yaml:"system_type"`
	// AddrTON, AddrNPI and AddressRange are sent in the bind (SMPP 3.4
	// §5.2.7-9): some SMSCs route MO messages and receipts to a receiver
	// by address_range (the service number). Default 0, 0, "".
	AddrTON      int    `yaml:"addr_ton"`
	AddrNPI      int    `yaml:"addr_npi"`
	AddressRange string `yaml:"address_range"`
	// Binds is the number of transceiver connections (with BindMode
	// "transmitter_receiver": of transmitter and receiver pairs). Default 1.
	Binds int `yaml:"binds"`
	// BindMode is how spareline binds: "transceiver" (default: one
	// bind_transceiver connection per bind) or "transmitter_receiver" (a
	// bind_transmitter connection for submits and a bind_receiver one for
	// receipts per bind, for SMSCs that take no transceiver binds).
	BindMode string `yaml:"bind_mode"`
	// InterfaceVersion is the SMPP version spareline binds with: "3.4"
	// (default) or "3.3", for SMSCs built on SMPP 3.3 (GSM 03.39), which
	// know no optional parameters: their submits carry none (sar_*
	// become a concatenation UDH, message_payload moves into
	// short_message; content longer than 254 octets goes to the modems).
	InterfaceVersion string `yaml:"interface_version"`
	// Window is the number of unanswered submits per bind. Default 64.
	Window int `yaml:"window"`
	// MaxTPS caps submits per second across the carrier's binds. 0 = unlimited.
	MaxTPS int `yaml:"max_tps"`
	// EnquireLink is the keep-alive interval. Default 10s.
	EnquireLink Duration `yaml:"enquire_link"`
	// ResponseTimeout is how long a submit waits for submit_sm_resp. Default 5s.
	ResponseTimeout Duration `yaml:"response_timeout"`
	// ConnectTimeout bounds the TCP connect and the bind. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// ReceiptID says how the carrier writes message ids in receipts compared to
	// its submit_sm_resp: "as_is" (default), "hex" (resp decimal, receipt hex)
	// or "decimal" (resp hex, receipt decimal).
	ReceiptID string `yaml:"receipt_id"`
	// UnmatchedReceiptsAfter is how long a receipt that matches no message
	// of spareline's waits for one (a receipt may overtake its link by a
	// few milliseconds) before it goes to the platform as the carrier sent
	// it, to the account that receives MO messages: the carrier's receipts
	// for messages the platform sent it directly, before it was repointed,
	// reach the platform as they would have on its own bind. 0 keeps such a
	// receipt (for a late link) until store.ttl, then drops it. Default 1m.
	UnmatchedReceiptsAfter Duration `yaml:"unmatched_receipts_after"`
	// UnmatchedReceiptsTo is the account (system_id) those receipts go to;
	// "" = the account that receives MO messages. A platform that had one
	// connection per carrier, now bound to spareline with the system_id it
	// used at that carrier, gets that carrier's old receipts on the same
	// connection as before.
	UnmatchedReceiptsTo string `yaml:"unmatched_receipts_to"`
	// Trace logs every PDU of the carrier's sessions (hex, at info, a bind's
	// password blanked; message text included), for a diagnosis with the
	// carrier's engineers. A reload turns it on and off. Default false.
	Trace bool `yaml:"trace"`
	// ReceiveOnly says no route is meant to reach this carrier: its binds
	// are kept for what it sends (MO messages to a short code, the late
	// receipts of a carrier being retired), and check does not ask for a
	// route to it. Default false.
	ReceiveOnly bool `yaml:"receive_only"`
	// TLS dials the SMSC over TLS.
	TLS bool `yaml:"tls"`
	// TLSInsecure skips verification of the carrier's certificate.
	TLSInsecure bool `yaml:"tls_insecure"`
	// TLSCA is a PEM file of CA certificates that verify the carrier's
	// certificate instead of the system roots. Read and checked at load.
	TLSCA string `yaml:"tls_ca"`
	// TLSServerName is the name the carrier's certificate is verified
	// against (and sent as SNI). Default: the host of Address.
	TLSServerName string `yaml:"tls_server_name"`
	// TLSCAPEM is the content of TLSCA as read at load (not a YAML key):
	// the carrier builds its trust pool from it, and a reload that changes
	// it reconnects the carrier.
	TLSCAPEM []byte `yaml:"-"`
}

// Routing picks the carrier for a destination.
type Routing struct {
	// CountryCode is the local country code, stripped during normalisation.
	// Default "86".
	CountryCode string `yaml:"country_code"`
	// Preset is a built-in segment table: "cn" (default) or "" for none.
	Preset *string `yaml:"preset"`
	// Prefixes overrides and extends the preset: national prefix -> carrier.
	Prefixes map[string]string `yaml:"prefixes"`
	// Default is the carrier for numbers no prefix matches; "" = modem pool.
	Default string `yaml:"default"`
	// Redirect sends the numbers routed to a carrier (the key) elsewhere:
	// to another carrier, or "" for the modem pool, while the carrier's
	// binds stay up for the receipts and MO messages it still sends (a
	// carrier's announced maintenance, a contract being moved). Reloadable.
	Redirect map[string]string `yaml:"redirect"`
}

// Modem is one GSM modem of the backup channel.
type Modem struct {
	// Name labels the modem in logs and metrics. Default: the device path.
	Name string `yaml:"name"`
	// Device is the serial port, e.g. /dev/ttyUSB0.
	Device string `yaml:"device"`
	// Baud is the serial speed. Default 115200.
	Baud int `yaml:"baud"`
	// PIN is the SIM PIN, entered when the SIM asks for it.
	PIN string `yaml:"pin"`
	// MaxPerMinute caps sends per minute on this modem. Default 10.
	MaxPerMinute int `yaml:"max_per_minute"`
	// SendTimeout is how long one SMS part may wait for the modem's answer
	// to AT+CMGS before the send counts as failed (and may be retried on
	// another modem). Default 60s, at most MaxModemSendTimeout.
	SendTimeout Duration `yaml:"send_timeout"`
	// Number is the SIM's own number (its MSISDN, e.g. "+8613912345678"):
	// the destination_addr of the MO messages that arrive on this modem,
	// as a carrier's MO messages carry the number they were sent to, so
	// that a platform routing MO by that number can. "" = an empty
	// destination_addr.
	Number string `yaml:"number"`
}

// Failover says when a carrier is considered failed.
type Failover struct {
	// DownAfterTimeouts is the number of consecutive response timeouts that
	// mark a carrier down. Default 3.
	DownAfterTimeouts int `yaml:"down_after_timeouts"`
	// UpAfter is how long a recovered carrier stays on probation. Default 30s.
	UpAfter Duration `yaml:"up_after"`
	// ResendFailedReceipts resends by modem a message whose carrier receipt
	// failed for a reason other than the number. Default true.
	ResendFailedReceipts *bool `yaml:"resend_failed_receipts"`
	// OnUnknown is what happens to a message the carrier never answered:
	// "resend" (default) by modem, or "hold" for a receipt during HoldFor.
	OnUnknown string `yaml:"on_unknown"`
	// HoldFor is how long "hold" waits for a carrier receipt. Default 10m.
	HoldFor Duration `yaml:"hold_for"`
	// ModemReceiptTimeout is how long a modem send waits for a status report
	// before the platform gets a receipt saying what is known. Default 10m.
	ModemReceiptTimeout Duration `yaml:"modem_receipt_timeout"`
}

// Log is the log files spareline writes besides its main log.
type Log struct {
	// Messages is the file of the message event log: one JSON line per
	// message event (a submit answered, a failover to the modems, a modem
	// send, a receipt, an MO message), so that what happened to a message
	// can be found after the fact. Destinations are masked; message text and
	// passwords are never written. Empty (the default) turns it off. The
	// directory must exist; the file is created (mode 0640) or appended to.
	// A reload (SIGHUP) closes and reopens it, so that logrotate can move
	// it, and a changed path switches files.
	Messages string `yaml:"messages"`
}

// Duration is a time.Duration written in YAML as a Go duration string ("5s").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
