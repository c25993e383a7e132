package config

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"
)

// Defaults, as documented on the fields in config.go and in docs/config.md.
const (
	DefaultSMPPWindow           = 256
	DefaultSMPPEnquireLink      = 30 * time.Second
	DefaultSMPPIdleTimeout      = 5 * time.Minute
	DefaultSMPPResponseTimeout  = 10 * time.Second
	DefaultMaxCommandLength     = 65536
	DefaultBindTimeout          = 30 * time.Second
	DefaultHTTPListen           = "127.0.0.1:9090"
	DefaultStorePath            = "./spareline-data"
	DefaultStoreTTL             = 72 * time.Hour
	DefaultCarrierBinds         = 1
	DefaultCarrierWindow        = 64
	DefaultCarrierEnquireLink   = 10 * time.Second
	DefaultCarrierRespTimeout   = 5 * time.Second
	DefaultCarrierConnTimeout   = 10 * time.Second
	DefaultReceiptID            = "as_is"
	DefaultUnmatchedAfter       = time.Minute
	MinUnmatchedAfter           = 10 * time.Second
	DefaultBindMode             = "transceiver"
	DefaultInterfaceVersion     = "3.4"
	DefaultCountryCode          = "86"
	DefaultPreset               = "cn"
	DefaultModemBaud            = 115200
	DefaultModemMaxPerMinute    = 10
	DefaultModemSendTimeout     = 60 * time.Second
	DefaultDownAfterTimeouts    = 3
	DefaultUpAfter              = 30 * time.Second
	DefaultOnUnknown            = "resend"
	DefaultHoldFor              = 10 * time.Minute
	DefaultModemReceiptTimeout  = 10 * time.Minute
	defaultResendFailedReceipts = true
)

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }

// applyDefaults fills every key that was absent (or null) in the file.
// Explicit values, including explicit zeros, are kept and judged by validate.
func applyDefaults(c *Config, d *decoder) {
	dInt := func(p *int, path string, v int) {
		if !d.set[path] {
			*p = v
		}
	}
	dDur := func(p *Duration, path string, v time.Duration) {
		if !d.set[path] {
			*p = Duration(v)
		}
	}
	dStr := func(p *string, path string, v string) {
		if !d.set[path] {
			*p = v
		}
	}

	dInt(&c.SMPP.Window, "smpp.window", DefaultSMPPWindow)
	dDur(&c.SMPP.EnquireLink, "smpp.enquire_link", DefaultSMPPEnquireLink)
	dDur(&c.SMPP.IdleTimeout, "smpp.idle_timeout", DefaultSMPPIdleTimeout)
	dDur(&c.SMPP.ResponseTimeout, "smpp.response_timeout", DefaultSMPPResponseTimeout)
	dInt(&c.SMPP.MaxCommandLength, "smpp.max_command_length", DefaultMaxCommandLength)
	dDur(&c.SMPP.BindTimeout, "smpp.bind_timeout", DefaultBindTimeout)

	dStr(&c.HTTP.Listen, "http.listen", DefaultHTTPListen)

	dStr(&c.Store.Path, "store.path", DefaultStorePath)
	dDur(&c.Store.TTL, "store.ttl", DefaultStoreTTL)

	for i := range c.Carriers {
		ca := &c.Carriers[i]
		p := fmt.Sprintf("carriers[%d].", i)
		dInt(&ca.Binds, p+"binds", DefaultCarrierBinds)
		dInt(&ca.Window, p+"window", DefaultCarrierWindow)
		dDur(&ca.EnquireLink, p+"enquire_link", DefaultCarrierEnquireLink)
		dDur(&ca.ResponseTimeout, p+"response_timeout", DefaultCarrierRespTimeout)
		dDur(&ca.ConnectTimeout, p+"connect_timeout", DefaultCarrierConnTimeout)
		dStr(&ca.ReceiptID, p+"receipt_id", DefaultReceiptID)
		// Unset, at least response_timeout + 5s (the least validation
		// takes), so that a long response_timeout alone is no error.
		dDur(&ca.UnmatchedReceiptsAfter, p+"unmatched_receipts_after",
			max(DefaultUnmatchedAfter, ca.ResponseTimeout.D()+5*time.Second))
		dStr(&ca.BindMode, p+"bind_mode", DefaultBindMode)
		dStr(&ca.InterfaceVersion, p+"interface_version", DefaultInterfaceVersion)
	}

	dStr(&c.Routing.CountryCode, "routing.country_code", DefaultCountryCode)
	if c.Routing.Preset == nil {
		p := DefaultPreset
		c.Routing.Preset = &p
	}

	for i := range c.Modems {
		m := &c.Modems[i]
		p := fmt.Sprintf("modems[%d].", i)
		dInt(&m.Baud, p+"baud", DefaultModemBaud)
		dInt(&m.MaxPerMinute, p+"max_per_minute", DefaultModemMaxPerMinute)
		dDur(&m.SendTimeout, p+"send_timeout", DefaultModemSendTimeout)
		if !d.set[p+"name"] {
			m.Name = m.Device
		}
	}

	f := &c.Failover
	dInt(&f.DownAfterTimeouts, "failover.down_after_timeouts", DefaultDownAfterTimeouts)
	dDur(&f.UpAfter, "failover.up_after", DefaultUpAfter)
	if f.ResendFailedReceipts == nil {
		b := defaultResendFailedReceipts
		f.ResendFailedReceipts = &b
	}
	dStr(&f.OnUnknown, "failover.on_unknown", DefaultOnUnknown)
	dDur(&f.HoldFor, "failover.hold_for", DefaultHoldFor)
	dDur(&f.ModemReceiptTimeout, "failover.modem_receipt_timeout", DefaultModemReceiptTimeout)
}

// resolvePasswords reads password_env and password_file into Password, for
// accounts and carriers. Problems name the key, the variable or the file,
// never the value.
func resolvePasswords(c *Config, d *decoder) {
	for i := range c.Accounts {
		a := &c.Accounts[i]
		resolvePassword(d, fmt.Sprintf("accounts[%d]", i), &a.Password, a.PasswordEnv, a.PasswordFile)
	}
	for i := range c.Carriers {
		ca := &c.Carriers[i]
		resolvePassword(d, fmt.Sprintf("carriers[%d]", i), &ca.Password, ca.PasswordEnv, ca.PasswordFile)
	}
}

func resolvePassword(d *decoder, path string, pw *string, env, file string) {
	n := 0
	for _, s := range []string{*pw, env, file} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		key := path + ".password"
		if *pw == "" {
			key = path + ".password_file"
		}
		d.problem(key, d.line(key), "set only one of password, password_env and password_file")
		return
	}
	switch {
	case env != "":
		key := path + ".password_env"
		v, ok := os.LookupEnv(env)
		switch {
		case !ok:
			d.problem(key, d.line(key), "environment variable %s is not set", env)
		case v == "":
			d.problem(key, d.line(key), "environment variable %s is empty", env)
		default:
			*pw = v
		}
	case file != "":
		key := path + ".password_file"
		b, err := readSmallFile(file, maxPasswordFile)
		if err != nil {
			// The error names the file and the reason, never content.
			d.problem(key, d.line(key), "cannot read password file: %v", err)
			return
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			d.problem(key, d.line(key), "password file %s is empty", file)
			return
		}
		*pw = v
	}
}

// maxPasswordFile bounds what is read of a password_file; a password is at
// most 8 octets in SMPP 3.4, so anything this large is the wrong file.
const maxPasswordFile = 4096

// readSmallFile reads a regular file of at most limit bytes. Devices, FIFOs
// and directories are refused before they are opened, so that a mistyped
// path (/dev/zero, a pipe) cannot hang or exhaust the loader.
func readSmallFile(name string, limit int64) ([]byte, error) {
	if err := regularFile(name); err != nil {
		return nil, err
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}

// regularFile returns an error unless name is (a symlink to) a regular file.
func regularFile(name string) error {
	fi, err := os.Stat(name)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", name)
	}
	return nil
}

// redactURL hides the password of a redis URL ("redis://user:pw@host").
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "***" // cannot tell where a password would be
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "***")
		}
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "***")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
