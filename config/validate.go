package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spareline/spareline/store"
)

// SMPP 3.4 field limits (§5.2.1 system_id, §5.2.2 password, §5.2.3
// system_type): C-Octet Strings of at most 16, 9 and 13 octets including the
// terminating NUL.
const (
	MaxSystemIDLen   = 15
	MaxPasswordLen   = 8
	MaxSystemTypeLen = 12
	// minCommandLength is the SMPP PDU header (SMPP 3.4 §3.2: command_length,
	// command_id, command_status, sequence_number).
	minCommandLength = 16
	// maxPEMFile bounds the certificate and key files read at load time.
	maxPEMFile = 1 << 20
	// MaxModemSendTimeout bounds modems[].send_timeout. Siemens documents
	// AT+CMGS answers within 60 s; the dispatcher bounds one modem send of a
	// message (every part, every attempt) at 10 minutes, so a longer per-part
	// wait would leave no room to retry on another modem.
	MaxModemSendTimeout = 5 * time.Minute
)

// Presets known to the routing package, each with the carrier names its
// segments route to (routing.PresetCarriers). config does not import routing
// (see DESIGN.md: config uses none of the other packages); keep in step with
// routing.New (TestPresetCarriersMatchRouting checks).
var knownPresets = map[string][]string{"": nil, "cn": {"mobile", "telecom", "unicom"}}

// validate checks the decoded, defaulted configuration; it adds every
// problem it finds to d.
func validate(c *Config, d *decoder) {
	p := func(key string, format string, args ...any) {
		d.problem(key, d.line(key), format, args...)
	}
	// pAt reports a problem with a missing key at the line of the key that
	// needs it.
	pAt := func(key, at string, format string, args ...any) {
		d.problem(key, d.line(at), format, args...)
	}

	// instance
	checkInstance(p, c.Instance)

	// smpp
	s := &c.SMPP
	switch {
	case s.Listen != "" || s.TLSListen != "":
	case !d.set["smpp"]:
		p("smpp.listen", "no listener: the file has no smpp section; add one, e.g. smpp: { listen: \"0.0.0.0:2775\" }")
	default:
		p("smpp.listen", "no listener: set smpp.listen (e.g. listen: \"0.0.0.0:2775\") or smpp.tls_listen")
	}
	checkListen(p, "smpp.listen", s.Listen)
	checkListen(p, "smpp.tls_listen", s.TLSListen)
	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		pAt("smpp.tls_key", "smpp.tls_cert", "tls_cert is set but tls_key is not")
	case s.TLSCert == "" && s.TLSKey != "":
		pAt("smpp.tls_cert", "smpp.tls_key", "tls_key is set but tls_cert is not")
	case s.TLSCert != "" && s.TLSKey != "":
		// The error names the file or says what is wrong with the PEM;
		// it never includes key material.
		certPEM, err := readSmallFile(s.TLSCert, maxPEMFile)
		if err != nil {
			p("smpp.tls_cert", "cannot read certificate: %v", err)
		}
		keyPEM, kerr := readSmallFile(s.TLSKey, maxPEMFile)
		if kerr != nil {
			p("smpp.tls_key", "cannot read key: %v", kerr)
		}
		if err == nil && kerr == nil {
			// As tls.LoadX509KeyPair, from bounded reads.
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				p("smpp.tls_cert", "cannot load certificate and key: %v", err)
			}
		}
		if s.TLSListen == "" {
			p("smpp.tls_cert", "tls_cert and tls_key are set but tls_listen is not")
		}
	}
	if s.TLSListen != "" && (s.TLSCert == "" || s.TLSKey == "") {
		p("smpp.tls_listen", "tls_listen needs tls_cert and tls_key")
	}
	atLeast(p, d, "smpp.window", s.Window, 1)
	atLeast(p, d, "smpp.max_command_length", s.MaxCommandLength, minCommandLength)
	positive(p, d, "smpp.enquire_link", s.EnquireLink)
	positive(p, d, "smpp.idle_timeout", s.IdleTimeout)
	positive(p, d, "smpp.response_timeout", s.ResponseTimeout)
	positive(p, d, "smpp.bind_timeout", s.BindTimeout)

	// http
	checkListen(p, "http.listen", c.HTTP.Listen)

	// store
	if c.Store.Redis == "" && c.Store.Path == "" {
		p("store.path", "empty: set store.path (embedded store) or store.redis")
	}
	if c.Store.Redis != "" {
		if err := store.CheckRedisURL(c.Store.Redis); err != nil {
			p("store.redis", "%v", err)
		}
	}
	positive(p, d, "store.ttl", c.Store.TTL)

	// accounts
	if len(c.Accounts) == 0 {
		p("accounts", "no accounts: no platform could bind")
	}
	ids := map[string]string{}
	mo := ""
	for i, a := range c.Accounts {
		k := fmt.Sprintf("accounts[%d]", i)
		switch {
		case a.SystemID == "":
			p(k+".system_id", "empty")
		case len(a.SystemID) > MaxSystemIDLen:
			p(k+".system_id", "longer than %d octets (SMPP 3.4 §5.2.1)", MaxSystemIDLen)
		}
		if first, dup := ids[a.SystemID]; dup && a.SystemID != "" {
			p(k+".system_id", "duplicate system_id %q (also %s)", a.SystemID, first)
		} else {
			ids[a.SystemID] = k
		}
		if a.Password == "" && a.PasswordEnv == "" && a.PasswordFile == "" {
			p(k+".password", "no password: set password, password_env or password_file")
		}
		checkPasswordLen(p, k, a.Password, a.PasswordEnv, a.PasswordFile)
		for j, cidr := range a.Allow {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				hint := ""
				if _, err := netip.ParseAddr(cidr); err == nil {
					hint = " (write " + cidr + "/32 or /128 for one address)"
				}
				p(fmt.Sprintf("%s.allow[%d]", k, j), "%q is not a CIDR%s", cidr, hint)
			}
		}
		notNegative(p, k+".max_tps", a.MaxTPS)
		if a.MO {
			if mo != "" {
				p(k+".mo", "only one account may receive MO messages (also %s)", mo)
			} else {
				mo = k
			}
		}
	}

	// carriers
	names := map[string]string{}
	receiveOnly := map[string]bool{}
	for _, ca := range c.Carriers {
		receiveOnly[ca.Name] = ca.ReceiveOnly
	}
	for i, ca := range c.Carriers {
		k := fmt.Sprintf("carriers[%d]", i)
		if ca.Name == "" {
			p(k+".name", "empty")
		} else if first, dup := names[ca.Name]; dup {
			p(k+".name", "duplicate carrier name %q (also %s)", ca.Name, first)
		} else {
			names[ca.Name] = k
		}
		if ca.Address == "" {
			p(k+".address", "empty: want host:port")
		} else if msg := hostPort(ca.Address, true); msg != "" {
			p(k+".address", "%s", msg)
		}
		switch {
		case ca.SystemID == "":
			p(k+".system_id", "empty")
		case len(ca.SystemID) > MaxSystemIDLen:
			p(k+".system_id", "longer than %d octets (SMPP 3.4 §5.2.1)", MaxSystemIDLen)
		}
		checkPasswordLen(p, k, ca.Password, ca.PasswordEnv, ca.PasswordFile)
		if len(ca.SystemType) > MaxSystemTypeLen {
			p(k+".system_type", "longer than %d octets (SMPP 3.4 §5.2.3)", MaxSystemTypeLen)
		}
		for key, v := range map[string]int{".addr_ton": ca.AddrTON, ".addr_npi": ca.AddrNPI} {
			if v < 0 || v > 255 {
				p(k+key, "%d is not an octet (0-255; SMPP 3.4 §5.2.5, §5.2.6)", v)
			}
		}
		if len(ca.AddressRange) > 40 {
			p(k+".address_range", "longer than 40 octets (SMPP 3.4 §5.2.7)")
		}
		atLeast(p, d, k+".binds", ca.Binds, 1)
		atLeast(p, d, k+".window", ca.Window, 1)
		notNegative(p, k+".max_tps", ca.MaxTPS)
		positive(p, d, k+".enquire_link", ca.EnquireLink)
		positive(p, d, k+".response_timeout", ca.ResponseTimeout)
		positive(p, d, k+".connect_timeout", ca.ConnectTimeout)
		switch ca.BindMode {
		case "transceiver", "transmitter_receiver":
		default:
			p(k+".bind_mode", "%q is not one of transceiver, transmitter_receiver", ca.BindMode)
		}
		switch ca.InterfaceVersion {
		case "3.4", "3.3":
		default:
			p(k+".interface_version", "%q is not one of 3.4, 3.3", ca.InterfaceVersion)
		}
		switch ca.ReceiptID {
		case "as_is", "hex", "decimal":
		default:
			p(k+".receipt_id", "%q is not one of as_is, hex, decimal", ca.ReceiptID)
		}
		// Shorter, a receipt that overtook its submit_sm_resp (up to
		// response_timeout) and a link delayed by a store hiccup (the link
		// write is tried for a few seconds) would go to the platform under
		// the carrier's id, and the link would find no receipt to take:
		// the platform would never match it.
		if u, least := ca.UnmatchedReceiptsAfter.D(), max(MinUnmatchedAfter, ca.ResponseTimeout.D()+5*time.Second); u < 0 || (u > 0 && u < least) {
			p(k+".unmatched_receipts_after", "%s: want 0 (keep them) or at least %s (response_timeout + 5s, and 10s)", u, least)
		}
		if to := ca.UnmatchedReceiptsTo; to != "" && ids[to] == "" {
			p(k+".unmatched_receipts_to", "%q is not the system_id of an account", to)
		}
		if ca.TLSInsecure && !ca.TLS {
			p(k+".tls_insecure", "set without tls: true")
		}
		if ca.TLSServerName != "" && !ca.TLS {
			p(k+".tls_server_name", "set without tls: true")
		}
		if ca.TLSCA != "" {
			switch {
			case !ca.TLS:
				p(k+".tls_ca", "set without tls: true")
			case ca.TLSInsecure:
				p(k+".tls_ca", "set with tls_insecure: true, which skips verification; set only one")
			}
			// Loaded even when another problem was found, so that
			// `spareline check` reports an unreadable file too.
			pemCA, err := loadCA(ca.TLSCA)
			if err != nil {
				p(k+".tls_ca", "%v", err)
			} else {
				c.Carriers[i].TLSCAPEM = pemCA
			}
		}
	}

	// routing
	r := &c.Routing
	if r.CountryCode == "" || len(r.CountryCode) > 3 || !digits(r.CountryCode) || r.CountryCode[0] == '0' {
		p("routing.country_code", "%q is not a country calling code (1 to 3 digits, e.g. \"86\")", r.CountryCode)
	}
	if _, known := knownPresets[deref(r.Preset)]; r.Preset != nil && !known {
		p("routing.preset", "unknown preset %q (known: \"cn\", or \"\" for none)", *r.Preset)
	}
	for _, prefix := range sortedKeys(r.Prefixes) {
		k := "routing.prefixes." + prefix
		if prefix == "" || !digits(prefix) {
			p(k, "prefix %q is not digits (a national number prefix such as \"1703\")", prefix)
		}
		carrier := r.Prefixes[prefix]
		if carrier == "" {
			continue // "" routes the prefix to the modem pool
		}
		if _, ok := names[carrier]; !ok {
			p(k, "carrier %q is not defined in carriers", carrier)
		}
	}
	if r.Default != "" {
		if _, ok := names[r.Default]; !ok {
			p("routing.default", "carrier %q is not defined in carriers", r.Default)
		}
	}
	for _, from := range sortedKeys(r.Redirect) {
		k := "routing.redirect." + from
		to := r.Redirect[from]
		if _, ok := names[from]; !ok {
			p(k, "carrier %q is not defined in carriers", from)
			continue
		}
		switch {
		case to == "" && len(c.Modems) == 0:
			p(k, "redirected to the modem pool, and no modems are configured: every number of carrier %q would be refused (ESME_RINVDSTADR)", from)
		case to == "":
			// the modem pool
		case to == from:
			p(k, "carrier %q is redirected to itself: remove the entry to route to it", from)
		default:
			if _, ok := names[to]; !ok {
				p(k, "carrier %q is not defined in carriers", to)
			} else if _, again := r.Redirect[to]; again {
				p(k, "carrier %q is redirected too (routing.redirect.%s): redirect %s straight to where %s goes", to, to, from, to)
			} else if receiveOnly[to] {
				p(k, "carrier %q is receive_only: it takes no messages", to)
			}
		}
	}
	checkReachable(p, c)

	// modems
	modemNames := map[string]string{}
	devices := map[string]string{}
	for i, m := range c.Modems {
		k := fmt.Sprintf("modems[%d]", i)
		if m.Device == "" {
			p(k+".device", "empty: want the serial port, e.g. /dev/ttyUSB0")
		} else if first, dup := devices[m.Device]; dup {
			p(k+".device", "device %s is also used by %s", m.Device, first)
		} else {
			devices[m.Device] = k
		}
		if m.Name == "" {
			if m.Device != "" {
				p(k+".name", "empty")
			}
		} else if first, dup := modemNames[m.Name]; dup {
			p(k+".name", "duplicate modem name %q (also %s)", m.Name, first)
		} else {
			modemNames[m.Name] = k
		}
		atLeast(p, d, k+".baud", m.Baud, 1)
		atLeast(p, d, k+".max_per_minute", m.MaxPerMinute, 1)
		positive(p, d, k+".send_timeout", m.SendTimeout)
		if m.SendTimeout.D() > MaxModemSendTimeout {
			p(k+".send_timeout", "%s is longer than %s: a modem that has not answered AT+CMGS by then will not answer at all (Siemens documents 60 s), and a longer wait would leave no time, within the 10 minutes one message may spend on the modems, to retry it on another modem",
				m.SendTimeout.D(), MaxModemSendTimeout)
		}
		if n := strings.TrimPrefix(m.Number, "+"); m.Number != "" && (n == "" || !digits(n) || len(n) > 20) {
			p(k+".number", "%q is not a phone number: want digits, optionally after a +, at most 20", m.Number)
		}
	}
	if len(c.Carriers) == 0 && len(c.Modems) == 0 {
		p("carriers", "no carriers and no modems: nothing could send a message")
	}

	// failover
	f := &c.Failover
	atLeast(p, d, "failover.down_after_timeouts", f.DownAfterTimeouts, 1)
	positive(p, d, "failover.up_after", f.UpAfter)
	switch f.OnUnknown {
	case "resend", "hold":
	default:
		p("failover.on_unknown", "%q is not one of resend, hold", f.OnUnknown)
	}
	positive(p, d, "failover.hold_for", f.HoldFor)
	positive(p, d, "failover.modem_receipt_timeout", f.ModemReceiptTimeout)

	// log
	if msg := checkLogFile(c.Log.Messages); msg != "" {
		p("log.messages", "%s", msg)
	}
}

// checkReachable reports a carrier no route reaches: the proxy restricts the
// preset to the configured carriers (routing.Table.Restrict), so a carrier
// whose name is not one of the preset's, that no routing.prefixes entry names
// and that is not routing.default gets no message at all, while the numbers
// meant for it take routing.default (the modem pool when "", and
// ESME_RINVDSTADR when there are no modems).
func checkReachable(p problemFunc, c *Config) {
	preset := DefaultPreset // as the proxy reads a nil preset
	if c.Routing.Preset != nil {
		preset = *c.Routing.Preset
	}
	presetNames, known := knownPresets[preset]
	if !known {
		return // reported as an unknown preset
	}
	routed := map[string]bool{c.Routing.Default: true}
	for _, name := range presetNames {
		routed[name] = true
	}
	for _, name := range c.Routing.Prefixes {
		routed[name] = true
	}
	for _, name := range c.Routing.Redirect {
		routed[name] = true // the target of another carrier's numbers
	}
	for i, ca := range c.Carriers {
		if ca.Name == "" || routed[ca.Name] || ca.ReceiveOnly {
			continue
		}
		k := fmt.Sprintf("carriers[%d].name", i)
		how := fmt.Sprintf("route numbers to it with routing.prefixes (e.g. \"138\": %s) or routing.default (or, for a carrier kept only for what it sends, set receive_only: true)", ca.Name)
		if len(presetNames) == 0 {
			p(k, "no route reaches carrier %q: routing.preset is \"\" (none), no routing.prefixes entry names it and it is not routing.default, "+
				"so it would get no message; %s", ca.Name, how)
			continue
		}
		p(k, "no route reaches carrier %q: routing.preset %q knows only %s, no routing.prefixes entry names it and it is not routing.default, "+
			"so it would get no message and the numbers meant for it go to routing.default (the modem pool when empty); "+
			"name it %s as the preset does, or %s",
			ca.Name, preset, strings.Join(presetNames, ", "), orList(presetNames), how)
	}
}

// orList writes "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkLogFile says what keeps a log file from being opened for append at
// path ("" when nothing does, or when path is empty: off). Nothing is
// created or written: the directory must exist (spareline does not make
// it), an existing file must be a regular file (or /dev/stdout, /dev/stderr)
// that opens for writing, and a new one needs a directory
// this process may write in (checked where the system tells, see
// dirWritable).
func checkLogFile(path string) string {
	if path == "" {
		return ""
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("directory %s does not exist", dir)
	case err != nil:
		return fmt.Sprintf("directory %s: %v", dir, err)
	case !di.IsDir():
		return fmt.Sprintf("%s is not a directory", dir)
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := dirWritable(dir); err != nil {
			return fmt.Sprintf("cannot create %s: %v", path, err)
		}
		return ""
	case err != nil:
		return fmt.Sprintf("%v", err)
	case fi.IsDir():
		return fmt.Sprintf("%s is a directory; want a file", path)
	case !fi.Mode().IsRegular() && path != "/dev/stdout" && path != "/dev/stderr":
		// A FIFO would block the open until a reader comes; a device (a
		// typo naming /dev/ttyUSB0) would be written to.
		return fmt.Sprintf("%s is not a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Sprintf("cannot be opened for append: %v", err)
	}
	_ = f.Close()
	return ""
}

type problemFunc func(key string, format string, args ...any)

func checkPasswordLen(p problemFunc, k, pw, env, file string) {
	if len(pw) <= MaxPasswordLen {
		return
	}
	// Name where the password came from; never the password.
	switch {
	case env != "":
		p(k+".password_env", "the password in %s is longer than %d octets (SMPP 3.4 §5.2.2)", env, MaxPasswordLen)
	case file != "":
		p(k+".password_file", "the password in %s is longer than %d octets (SMPP 3.4 §5.2.2)", file, MaxPasswordLen)
	default:
		p(k+".password", "longer than %d octets (SMPP 3.4 §5.2.2)", MaxPasswordLen)
	}
}

// checkListen checks a listen address; empty means disabled.
// MaxInstanceLen bounds the instance name (characters).
const MaxInstanceLen = 64

// checkInstance: printable UTF-8 (it is written in leases and logs, so no
// control characters), at most MaxInstanceLen characters, not blank.
func checkInstance(p problemFunc, name string) {
	if name == "" {
		return
	}
	if !utf8.ValidString(name) {
		p("instance", "not valid UTF-8")
		return
	}
	if n := utf8.RuneCountInString(name); n > MaxInstanceLen {
		p("instance", "%d characters, more than %d", n, MaxInstanceLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			p("instance", "contains the unprintable character %U", r)
			return
		}
	}
	if strings.TrimSpace(name) == "" {
		p("instance", "only spaces: leave it empty for the default (host name and listen addresses)")
	}
}

func checkListen(p problemFunc, key, addr string) {
	if addr == "" {
		return
	}
	if msg := hostPort(addr, false); msg != "" {
		p(key, "%s", msg)
	}
}

// hostPort checks addr is host:port; a dial address needs a host and a
// non-zero port, a listen address may have neither (":2775", "[::]:0").
func hostPort(addr string, dial bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port", addr)
	}
	if dial && host == "" {
		return fmt.Sprintf("%q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (dial && n == 0) {
		return fmt.Sprintf("%q has no valid port", addr)
	}
	return ""
}

func atLeast(p problemFunc, d *decoder, key string, v, minimum int) {
	if v < 0 {
		p(key, "must not be negative")
	} else if v < minimum && d.set[key] {
		p(key, "must be at least %d", minimum)
	}
}

func notNegative(p problemFunc, key string, v int) {
	if v < 0 {
		p(key, "must not be negative")
	}
}

func positive(p problemFunc, d *decoder, key string, v Duration) {
	if time.Duration(v) <= 0 && d.set[key] {
		p(key, "must be longer than 0")
	}
}

// loadCA reads a PEM CA bundle (bounded, a regular file) and checks that it
// holds at least one certificate and nothing but parseable certificates.
// The error names the file and the block, never content.
func loadCA(name string) ([]byte, error) {
	b, err := readSmallFile(name, maxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read CA file: %w", err)
	}
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		n++
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is a %q, want CERTIFICATE", name, n, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("%s: certificate %d does not parse: %w", name, n, err)
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in the file", name)
	}
	return b, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
