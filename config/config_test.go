package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/routing"
)

// minimal is the smallest valid configuration; cases below extend it.
const minimal = `smpp:
  listen: ":2775"
accounts:
  - system_id: platform
    password: secret
carriers:
  - name: mobile
    address: "127.0.0.1:7801"
    system_id: ent01
    password: pw
`

// marked returns the text without its "#<" markers and the line of the
// first marker: test cases mark the line a problem must be reported at.
func marked(t *testing.T, text string) (string, int) {
	t.Helper()
	line := 0
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if j := strings.Index(l, "#<"); j >= 0 {
			if line == 0 {
				line = i + 1
			}
			lines[i] = strings.TrimRight(l[:j], " ")
		}
	}
	return strings.Join(lines, "\n"), line
}

func problems(t *testing.T, err error) []Problem {
	t.Helper()
	var e *Errors
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not *Errors", err, err)
	}
	return e.Problems
}

func TestProblems(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SPARELINE_TEST_EMPTY", "")

	tests := []struct {
		name string
		yaml string // a "#<" marks the line of the wanted problem
		key  string
		msg  string // a part of the message
	}{
		{"unknown key", minimal + "failover:\n  up_afer: 30s #<\n", "failover.up_afer", "unknown key"},
		{"unknown section", minimal + "carrier: {} #<\n", "carrier", "unknown key"},
		{"unknown key in a list item", minimal + "modems:\n  - device: /dev/ttyUSB0\n    bauds: 9600 #<\n", "modems[0].bauds", "unknown key"},
		{"duplicate key", minimal + "http:\n  listen: \":1\"\n  listen: \":2\" #<\n", "http.listen", "duplicate key (first at line 12)"},
		{"duplicate section", minimal + "smpp: #<\n  window: 1\n", "smpp", "duplicate key"},
		{"bad duration", minimal + "    response_timeout: 5 #<\n", "carriers[0].response_timeout", `invalid duration "5"`},
		{"bad duration word", minimal + "store:\n  ttl: three days #<\n", "store.ttl", "invalid duration"},
		{"negative duration", minimal + "failover:\n  hold_for: -1m #<\n", "failover.hold_for", "must not be negative"},
		{"zero duration", minimal + "    enquire_link: 0s #<\n", "carriers[0].enquire_link", "longer than 0"},
		{"negative window", minimal + "    window: -1 #<\n", "carriers[0].window", "must not be negative"},
		{"negative max_tps", minimal + "    max_tps: -5 #<\n", "carriers[0].max_tps", "must not be negative"},
		{"zero binds", minimal + "    binds: 0 #<\n", "carriers[0].binds", "at least 1"},
		{"not an integer", minimal + "    binds: two #<\n", "carriers[0].binds", "expected an integer"},
		{"not a bool", minimal + "    tls: \"yes\" #<\n", "carriers[0].tls", "expected true or false"},
		{"not a list", minimal + "modems: /dev/ttyUSB0 #<\n", "modems", "expected a sequence"},
		{"not a mapping", minimal + "failover: [] #<\n", "failover", "expected a mapping"},
		{"empty carrier name", minimal + "  - address: \"127.0.0.1:7802\" #<\n    system_id: x\n", "carriers[1].name", "empty"},
		{"duplicate carrier name", minimal + "  - name: mobile #<\n    address: \"127.0.0.1:7802\"\n    system_id: x\n", "carriers[1].name", `duplicate carrier name "mobile"`},
		{"address without port", minimal + "  - name: unicom\n    address: 127.0.0.1 #<\n    system_id: x\n", "carriers[1].address", "not host:port"},
		{"address without host", minimal + "  - name: unicom\n    address: \":7802\" #<\n    system_id: x\n", "carriers[1].address", "no host"},
		{"address bad port", minimal + "  - name: unicom\n    address: \"h:99999\" #<\n    system_id: x\n", "carriers[1].address", "no valid port"},
		{"prefix to an undefined carrier", minimal + "routing:\n  prefixes:\n    \"1703\": cmcc #<\n", "routing.prefixes.1703", `carrier "cmcc" is not defined`},
		{"default to an undefined carrier", minimal + "routing:\n  default: cmcc #<\n", "routing.default", `carrier "cmcc" is not defined`},
		{"prefix not digits", minimal + "routing:\n  prefixes:\n    \"+86170\": mobile #<\n", "routing.prefixes.+86170", "not digits"},
		{"unknown preset", minimal + "routing:\n  preset: us #<\n", "routing.preset", `unknown preset "us"`},
		{"redirect of an undefined carrier", minimal + "routing:\n  redirect:\n    cmcc: mobile #<\n", "routing.redirect.cmcc", `carrier "cmcc" is not defined`},
		{"redirect to an undefined carrier", minimal + "routing:\n  redirect:\n    mobile: cmcc #<\n", "routing.redirect.mobile", `carrier "cmcc" is not defined`},
		{"redirect to no modems", minimal + "routing:\n  redirect:\n    mobile: \"\" #<\n", "routing.redirect.mobile", "no modems are configured"},
		{"redirect to itself", minimal + "routing:\n  redirect:\n    mobile: mobile #<\n", "routing.redirect.mobile", "redirected to itself"},
		{"redirect chain", minimal + "  - name: unicom\n    address: \"h:1\"\n    system_id: x\n  - name: telecom\n    address: \"h:2\"\n    system_id: x\n" +
			"routing:\n  redirect:\n    mobile: unicom #<\n    unicom: telecom\n", "routing.redirect.mobile", `carrier "unicom" is redirected too (routing.redirect.unicom)`},
		{"redirect to a receive_only carrier", minimal + "  - name: mo\n    address: \"h:1\"\n    system_id: x\n    receive_only: true\n" +
			"routing:\n  redirect:\n    mobile: mo #<\n", "routing.redirect.mobile", `carrier "mo" is receive_only`},
		{"carrier no route reaches", strings.Replace(minimal, "  - name: mobile\n", "  - name: cmcc #<\n", 1), "carriers[0].name",
			`no route reaches carrier "cmcc": routing.preset "cn" knows only mobile, telecom, unicom`},
		{"carrier no route reaches says what to do", strings.Replace(minimal, "  - name: mobile\n", "  - name: cmcc #<\n", 1), "carriers[0].name",
			`name it mobile, telecom or unicom as the preset does, or route numbers to it with routing.prefixes (e.g. "138": cmcc) or routing.default`},
		{"carrier no route reaches without a preset", strings.Replace(minimal, "  - name: mobile\n", "  - name: mobile #<\n", 1) + "routing:\n  preset: \"\"\n",
			"carriers[0].name", `no route reaches carrier "mobile": routing.preset is "" (none)`},
		{"bad country code", minimal + "routing:\n  country_code: \"+86\" #<\n", "routing.country_code", "not a country calling code"},
		{"duplicate section after a list", minimal + "  - name: unicom\n    address: \"h:1\"\n    system_id: x\n" +
			"accounts: #<\n", "accounts", "duplicate key (first at line 3)"},
		{"duplicate account", strings.Replace(minimal, "carriers:", "  - system_id: platform #<\n    password: other\ncarriers:", 1), "accounts[1].system_id", `duplicate system_id "platform"`},
		{"empty system_id", strings.Replace(minimal, "carriers:", "  - password: x #<\ncarriers:", 1), "accounts[1].system_id", "empty"},
		{"long system_id", strings.Replace(minimal, "platform", "platform-0123456 #<", 1), "accounts[0].system_id", "longer than 15 octets"},
		{"long carrier system_id", strings.Replace(minimal, "ent01", "enterprise-0123456 #<", 1), "carriers[0].system_id", "longer than 15 octets"},
		{"long password", strings.Replace(minimal, "secret", "secret123 #<", 1), "accounts[0].password", "longer than 8 octets"},
		{"long carrier password", strings.Replace(minimal, "pw\n", "pw45678901 #<\n", 1), "carriers[0].password", "longer than 8 octets"},
		{"no account password", strings.Replace(minimal, "  - system_id: platform\n    password: secret\n", "  - system_id: platform #<\n", 1), "accounts[0].password", "no password"},
		{"bad CIDR", strings.Replace(minimal, "carriers:", "    allow: [\"10.0.0.0/8\", \"10.0.0.300/8\"] #<\ncarriers:", 1), "accounts[0].allow[1]", "is not a CIDR"},
		{"IP not CIDR", strings.Replace(minimal, "carriers:", "    allow:\n      - 10.1.2.3 #<\ncarriers:", 1), "accounts[0].allow[0]", "10.1.2.3/32"},
		{"two MO accounts", strings.Replace(minimal, "carriers:", "    mo: true\n  - system_id: other\n    password: x\n    mo: true #<\ncarriers:", 1), "accounts[1].mo", "only one account"},
		{"bad receipt_id", minimal + "    receipt_id: base64 #<\n", "carriers[0].receipt_id", `"base64" is not one of as_is, hex, decimal`},
		{"unmatched_receipts_after too short", minimal + "    unmatched_receipts_after: 5s #<\n", "carriers[0].unmatched_receipts_after", "want 0 (keep them) or at least 10s"},
		{"unmatched_receipts_after within response_timeout", minimal + "    response_timeout: 30s\n    unmatched_receipts_after: 30s #<\n", "carriers[0].unmatched_receipts_after", "at least 35s"},
		{"unmatched_receipts_to no account", minimal + "    unmatched_receipts_to: nobody #<\n", "carriers[0].unmatched_receipts_to", `"nobody" is not the system_id of an account`},
		{"unmatched_receipts_after negative", minimal + "    unmatched_receipts_after: -1m #<\n", "carriers[0].unmatched_receipts_after", "must not be negative"},
		{"addr_ton not an octet", minimal + "    addr_ton: 300 #<\n", "carriers[0].addr_ton", "not an octet"},
		{"bad bind_mode", minimal + "    bind_mode: duplex #<\n", "carriers[0].bind_mode", `"duplex" is not one of transceiver, transmitter_receiver`},
		{"redis URL scheme", "store:\n  redis: http://127.0.0.1:6379 #<\n" + minimal, "store.redis", "scheme"},
		{"redis database", "store:\n  redis: redis://:pw@127.0.0.1:6379/x #<\n" + minimal, "store.redis", "database"},
		{"redis port out of range", "store:\n  redis: redis://localhost:637990 #<\n" + minimal, "store.redis", `address "localhost:637990": port 637990 is out of range: want 1-65535`},
		{"bad on_unknown", minimal + "failover:\n  on_unknown: drop #<\n", "failover.on_unknown", `"drop" is not one of resend, hold`},
		{"tls_insecure without tls", minimal + "    tls_insecure: true #<\n", "carriers[0].tls_insecure", "without tls"},
		{"tls_ca without tls", minimal + "    tls_ca: " + garbage + " #<\n", "carriers[0].tls_ca", "without tls"},
		{"tls_server_name without tls", minimal + "    tls_server_name: smsc.example #<\n", "carriers[0].tls_server_name", "without tls"},
		{"tls_ca missing", minimal + "    tls: true\n    tls_ca: " + filepath.Join(dir, "nope-ca.pem") + " #<\n", "carriers[0].tls_ca", "cannot read CA file"},
		{"tls_ca not PEM", minimal + "    tls: true\n    tls_ca: " + garbage + " #<\n", "carriers[0].tls_ca", "no PEM certificate"},
		{"tls_ca is a device", minimal + "    tls: true\n    tls_ca: /dev/zero #<\n", "carriers[0].tls_ca", "not a regular file"},
		{"modem send_timeout zero", minimal + "modems:\n  - device: /dev/ttyUSB0\n    send_timeout: 0s #<\n", "modems[0].send_timeout", "longer than 0"},
		{"modem send_timeout too long", minimal + "modems:\n  - device: /dev/ttyUSB0\n    send_timeout: 1h #<\n", "modems[0].send_timeout",
			"longer than 5m0s: a modem that has not answered AT+CMGS by then will not answer at all (Siemens documents 60 s), and a longer wait would leave no time, within the 10 minutes one message may spend on the modems, to retry it on another modem"},
		{"modem send_timeout not a duration", minimal + "modems:\n  - device: /dev/ttyUSB0\n    send_timeout: 30 #<\n", "modems[0].send_timeout", ""},
		{"cert without key", strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\"\n  tls_cert: c.pem #<\n", 1), "smpp.tls_key", "tls_cert is set but tls_key is not"},
		{"key without cert", strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\"\n  tls_key: k.pem #<\n", 1), "smpp.tls_cert", "tls_key is set but tls_cert is not"},
		{"missing cert files", strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\"\n  tls_cert: "+filepath.Join(dir, "nope.pem")+" #<\n  tls_key: "+filepath.Join(dir, "nope.key")+"\n", 1), "smpp.tls_cert", "cannot read certificate"},
		{"cert is a device", strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\"\n  tls_cert: "+garbage+"\n  tls_key: /dev/zero #<\n", 1), "smpp.tls_key", "not a regular file"},
		{"password_file is a device", strings.Replace(minimal, "password: secret", "password_file: /dev/zero #<", 1), "accounts[0].password_file", "not a regular file"},
		{"invalid cert files", strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\"\n  tls_cert: "+garbage+" #<\n  tls_key: "+garbage+"\n", 1), "smpp.tls_cert", "cannot load certificate and key"},
		{"tls_listen without cert", strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\" #<\n", 1), "smpp.tls_listen", "needs tls_cert and tls_key"},
		{"no listener", strings.Replace(minimal, "smpp:\n  listen: \":2775\"\n", "smpp: #<\n  window: 10\n", 1), "smpp.listen", `no listener: set smpp.listen (e.g. listen: "0.0.0.0:2775") or smpp.tls_listen`},
		{"no smpp section", strings.Replace(minimal, "smpp:\n  listen: \":2775\"\n", "", 1) + "#<", "smpp.listen", `no listener: the file has no smpp section; add one, e.g. smpp: { listen: "0.0.0.0:2775" }`},
		{"bad listen address", strings.Replace(minimal, "\":2775\"", "2775 #<", 1), "smpp.listen", "not host:port"},
		{"bad http listen", minimal + "http:\n  listen: localhost #<\n", "http.listen", "not host:port"},
		{"modem number not a number", minimal + "modems:\n  - device: /dev/ttyUSB0\n    number: \"139 1234\" #<\n", "modems[0].number", "not a phone number"},
		{"empty modem device", minimal + "modems:\n  - name: m0 #<\n", "modems[0].device", "empty"},
		{"duplicate modem name", minimal + "modems:\n  - device: /dev/ttyUSB0\n    name: m\n  - device: /dev/ttyUSB1\n    name: m #<\n", "modems[1].name", `duplicate modem name "m"`},
		{"duplicate modem device", minimal + "modems:\n  - device: /dev/ttyUSB0\n  - device: /dev/ttyUSB0 #<\n    name: other\n", "modems[1].device", "also used by modems[0]"},
		{"duplicate default modem names", minimal + "modems:\n  - device: /dev/ttyUSB0\n  - device: /dev/ttyUSB0 #<\n", "modems[1].device", "also used"},
		{"password_env not set", strings.Replace(minimal, "password: secret", "password_env: SPARELINE_TEST_UNSET_VARIABLE #<", 1), "accounts[0].password_env", "SPARELINE_TEST_UNSET_VARIABLE is not set"},
		{"password_env empty", strings.Replace(minimal, "password: pw", "password_env: SPARELINE_TEST_EMPTY #<", 1), "carriers[0].password_env", "SPARELINE_TEST_EMPTY is empty"},
		{"password_file unreadable", strings.Replace(minimal, "password: secret", "password_file: "+filepath.Join(dir, "missing")+" #<", 1), "accounts[0].password_file", "cannot read password file"},
		{"password and password_env", strings.Replace(minimal, "password: secret", "password: secret #<\n    password_env: HOME", 1), "accounts[0].password", "only one of password, password_env and password_file"},
		{"password_env and password_file", strings.Replace(minimal, "password: pw", "password_env: HOME\n    password_file: /etc/hostname #<", 1), "carriers[0].password_file", "only one of"},
		{"no store", minimal + "store:\n  path: \"\" #<\n", "store.path", "empty"},
		{"instance too long", minimal + "instance: " + strings.Repeat("n", 65) + " #<\n", "instance", "65 characters, more than 64"},
		{"instance with a control character", minimal + "instance: \"pod\\t0\" #<\n", "instance", "unprintable character U+0009"},
		{"instance blank", minimal + "instance: \"  \" #<\n", "instance", "only spaces"},
		{"instance not a string", minimal + "instance: [a] #<\n", "instance", ""},
		{"merge key", minimal + "http: &h\n  listen: \":1\"\nfailover:\n  <<: *h #<\n", "failover.<<", "merge keys"},
		{"yaml syntax", minimal + "routing:\n  preset: [cn #<\n", "", "YAML syntax"},
		{"tab indentation", minimal + "routing:\n\tpreset: cn #<\n", "", "YAML syntax"},
		// yaml.v3 names the line before the block the error is in (here
		// the carrier's entry): the error's own line is found.
		{"unclosed flow deep in a block", minimal + "carriers:\n  - name: b\n    address: \"127.0.0.1:1\"\n    system_id: x\n    password: y\n  bad: [unclosed #<\n    window: 5\n", "", "YAML syntax"},
		{"unclosed flow after a valid multi-line one", minimal + "routing:\n  prefixes: {\"1703\": mobile,\n    \"1705\": mobile}\n  preset: [cn #<\n", "", "YAML syntax"},
		{"second document", minimal + "--- #<\nsmpp: {}\n", "", "second YAML document"},
		{"not a mapping at top", "- smpp #<\n", "", "must be a mapping"},
		{"nothing can send", "smpp: {listen: \":1\"}\naccounts: [{system_id: a, password: b}]\n#<", "carriers", "no carriers and no modems"},
		{"no accounts", strings.Replace(minimal, "accounts:\n  - system_id: platform\n    password: secret\n", "", 1) + "#<", "accounts", "no accounts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, line := marked(t, tt.yaml)
			if strings.HasSuffix(tt.yaml, "#<") {
				line = 0 // a marker alone on the last line: the problem has no line
			}
			cfg, err := Parse([]byte(text), "test.yaml")
			if err == nil {
				t.Fatalf("no problem reported; want %s: %s\n%s", tt.key, tt.msg, text)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with problems")
			}
			var found []string
			for _, p := range problems(t, err) {
				found = append(found, p.String())
				if p.Key == tt.key && strings.Contains(p.Msg, tt.msg) {
					if p.Line != line {
						t.Errorf("%s: line %d, want %d", p, p.Line, line)
					}
					if p.File != "test.yaml" {
						t.Errorf("%s: file %q", p, p.File)
					}
					return
				}
			}
			t.Errorf("want %s: %s (line %d); got:\n%s", tt.key, tt.msg, line, strings.Join(found, "\n"))
		})
	}
}

// TestEveryProblemReported checks that loading does not stop at the first
// problem, and that problems come sorted by line.
func TestEveryProblemReported(t *testing.T) {
	text := `smpp:
  listen: ":2775"
  windw: 5
accounts:
  - system_id: platform
    password: toolongpassword
    allow: [nonsense]
carriers:
  - name: mobile
    address: nohostport
    system_id: ent01
    response_timeout: fast
  - name: mobile
    address: "h:1"
    system_id: ent02
    receipt_id: weird
routing:
  default: nobody
failover:
  on_unknown: maybe
`
	_, err := Parse([]byte(text), "many.yaml")
	want := []string{
		"many.yaml:3: smpp.windw: unknown key",
		"many.yaml:6: accounts[0].password: longer than 8 octets (SMPP 3.4 §5.2.2)",
		`many.yaml:7: accounts[0].allow[0]: "nonsense" is not a CIDR`,
		`many.yaml:10: carriers[0].address: "nohostport" is not host:port`,
		`many.yaml:12: carriers[0].response_timeout: invalid duration "fast" (want a Go duration such as "5s", "1m30s", "72h")`,
		`many.yaml:13: carriers[1].name: duplicate carrier name "mobile" (also carriers[0])`,
		`many.yaml:16: carriers[1].receipt_id: "weird" is not one of as_is, hex, decimal`,
		`many.yaml:18: routing.default: carrier "nobody" is not defined in carriers`,
		`many.yaml:20: failover.on_unknown: "maybe" is not one of resend, hold`,
	}
	got := problems(t, err)
	var lines []string
	for _, p := range got {
		lines = append(lines, p.String())
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if err.Error() != strings.Join(lines, "\n") {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestProblemString(t *testing.T) {
	for _, tt := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.yaml", Key: "carriers[1].response_timeout", Line: 7, Msg: "bad"}, "a.yaml:7: carriers[1].response_timeout: bad"},
		{Problem{File: "a.yaml", Key: "accounts", Msg: "no accounts"}, "a.yaml: accounts: no accounts"},
		{Problem{File: "a.yaml", Line: 3, Msg: "YAML syntax: x"}, "a.yaml:3: YAML syntax: x"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal+"modems:\n  - device: /dev/ttyUSB0\n"), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.SMPP
	if s.Window != 256 || s.EnquireLink.D() != 30*time.Second || s.IdleTimeout.D() != 5*time.Minute ||
		s.ResponseTimeout.D() != 10*time.Second || s.MaxCommandLength != 65536 || s.BindTimeout.D() != 30*time.Second {
		t.Errorf("smpp defaults: %+v", s)
	}
	if cfg.HTTP.Listen != "127.0.0.1:9090" {
		t.Errorf("http.listen = %q", cfg.HTTP.Listen)
	}
	if cfg.Store.Path != "./spareline-data" || cfg.Store.TTL.D() != 72*time.Hour || cfg.Store.Redis != "" {
		t.Errorf("store defaults: %+v", cfg.Store)
	}
	c := cfg.Carriers[0]
	if c.Binds != 1 || c.Window != 64 || c.EnquireLink.D() != 10*time.Second || c.ResponseTimeout.D() != 5*time.Second ||
		c.ConnectTimeout.D() != 10*time.Second || c.ReceiptID != "as_is" || c.UnmatchedReceiptsAfter.D() != time.Minute || c.MaxTPS != 0 || c.TLS {
		t.Errorf("carrier defaults: %+v", c)
	}
	if cfg.Routing.CountryCode != "86" || cfg.Routing.Preset == nil || *cfg.Routing.Preset != "cn" || cfg.Routing.Default != "" {
		t.Errorf("routing defaults: %+v", cfg.Routing)
	}
	m := cfg.Modems[0]
	if m.Baud != 115200 || m.MaxPerMinute != 10 || m.Name != "/dev/ttyUSB0" || m.SendTimeout.D() != 60*time.Second {
		t.Errorf("modem defaults: %+v", m)
	}
	f := cfg.Failover
	if f.DownAfterTimeouts != 3 || f.UpAfter.D() != 30*time.Second || f.ResendFailedReceipts == nil || !*f.ResendFailedReceipts ||
		f.OnUnknown != "resend" || f.HoldFor.D() != 10*time.Minute || f.ModemReceiptTimeout.D() != 10*time.Minute {
		t.Errorf("failover defaults: %+v", f)
	}
}

// Explicit values, including the ones that switch a feature off, win over
// defaults; a null value counts as absent.
func TestExplicitValues(t *testing.T) {
	cfg, err := Parse([]byte(minimal+`http:
  listen: ""
routing:
  preset: ""
  default: mobile
  country_code: ~
failover:
  resend_failed_receipts: false
  on_unknown: hold
  hold_for: 1m30s
`), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Listen != "" {
		t.Errorf(`http.listen: "" should disable, got %q`, cfg.HTTP.Listen)
	}
	if *cfg.Routing.Preset != "" {
		t.Errorf("preset %q, want none", *cfg.Routing.Preset)
	}
	if cfg.Routing.CountryCode != "86" {
		t.Errorf("null country_code should take the default, got %q", cfg.Routing.CountryCode)
	}
	if *cfg.Failover.ResendFailedReceipts || cfg.Failover.OnUnknown != "hold" || cfg.Failover.HoldFor.D() != 90*time.Second {
		t.Errorf("failover: %+v", cfg.Failover)
	}
}

func TestPasswordSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("fromfile\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SPARELINE_TEST_PW", "fromenv")
	text := strings.Replace(minimal, "password: secret", "password_file: "+file, 1)
	text = strings.Replace(text, "password: pw", "password_env: SPARELINE_TEST_PW", 1)
	cfg, err := Parse([]byte(text), "pw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Accounts[0].Password != "fromfile" {
		t.Errorf("password_file resolved to %q", cfg.Accounts[0].Password)
	}
	if cfg.Carriers[0].Password != "fromenv" {
		t.Errorf("password_env resolved to %q", cfg.Carriers[0].Password)
	}
}

// No problem text ever carries a password, wherever it came from.
func TestPasswordsNeverInProblems(t *testing.T) {
	const secret = "Sup3rSecretPassw0rd"
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SPARELINE_TEST_LONG_PW", secret)
	text := minimal + `  - name: unicom
    address: "h:1"
    system_id: u
    password_env: SPARELINE_TEST_LONG_PW
  - name: telecom
    address: "h:2"
    system_id: t
    password_file: ` + file + `
  - name: other
    address: "h:3"
    system_id: o
    password: ` + secret + `
    password_env: SPARELINE_TEST_LONG_PW
`
	text = strings.Replace(text, "password: secret", "password: "+secret, 1)
	_, err := Parse([]byte(text), "s.yaml")
	if err == nil {
		t.Fatal("no problems")
	}
	if n := len(problems(t, err)); n < 4 {
		t.Errorf("only %d problems:\n%v", n, err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("a password leaked into the problems:\n%v", err)
	}
}

func TestRedacted(t *testing.T) {
	cfg, err := Parse([]byte(minimal+"store:\n  redis: \"redis://user:hunter2@127.0.0.1:6379/0\"\nmodems:\n  - device: /dev/ttyUSB0\n    pin: \"1234\"\n"), "r.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redacted()
	if r.Accounts[0].Password != "***" || r.Carriers[0].Password != "***" || r.Modems[0].PIN != "***" {
		t.Errorf("not redacted: %+v %+v %+v", r.Accounts[0], r.Carriers[0], r.Modems[0])
	}
	if strings.Contains(r.Store.Redis, "hunter2") || !strings.Contains(r.Store.Redis, "127.0.0.1:6379") {
		t.Errorf("redis URL redacted to %q", r.Store.Redis)
	}
	if cfg.Accounts[0].Password != "secret" || cfg.Carriers[0].Password != "pw" || cfg.Modems[0].PIN != "1234" {
		t.Error("Redacted changed the original")
	}
	s := cfg.String()
	for _, secret := range []string{"secret", "hunter2", "1234"} {
		if strings.Contains(s, "password: "+secret) || strings.Contains(s, secret+"@") || strings.Contains(s, "pin: \""+secret) {
			t.Errorf("String() shows %q:\n%s", secret, s)
		}
	}
	r.Accounts[0].Allow = append(r.Accounts[0].Allow, "x")
	if len(cfg.Accounts[0].Allow) != 0 {
		t.Error("Redacted shares slices with the original")
	}
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	text := strings.Replace(minimal, "smpp:\n", "smpp:\n  tls_listen: \":2776\"\n  tls_cert: "+certFile+"\n  tls_key: "+keyFile+"\n", 1)
	if _, err := Parse([]byte(text), "tls.yaml"); err != nil {
		t.Fatalf("valid cert and key: %v", err)
	}
	// The key of another certificate does not match.
	_, otherKey := writeSelfSigned(t, t.TempDir())
	text = strings.Replace(text, keyFile, otherKey, 1)
	_, err := Parse([]byte(text), "tls.yaml")
	if ps := problems(t, err); len(ps) != 1 || ps[0].Key != "smpp.tls_cert" || ps[0].Line != 3 {
		t.Errorf("mismatched key: %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY-----\n") {
		t.Errorf("key material in the problem: %v", err)
	}
}

// carriers[].tls_ca: a CA bundle is read and checked at load, kept for the
// carrier's trust pool; a key file, a corrupt certificate or tls_insecure
// beside it are problems naming the key and its line.
func TestCarrierTLSCA(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	text := minimal + "    tls: true\n    tls_ca: " + certFile + "\n    tls_server_name: smsc.example\n"
	cfg, err := Parse([]byte(text), "ca.yaml")
	if err != nil {
		t.Fatalf("valid CA: %v", err)
	}
	c := cfg.Carriers[0]
	if string(c.TLSCAPEM) != string(certPEM) || c.TLSCA != certFile || c.TLSServerName != "smsc.example" {
		t.Errorf("carrier TLS settings: ca %q, server name %q, %d PEM bytes", c.TLSCA, c.TLSServerName, len(c.TLSCAPEM))
	}
	if strings.Contains(cfg.String(), "BEGIN CERTIFICATE") {
		t.Error("the CA content is rendered in the logged config")
	}

	corrupt := filepath.Join(dir, "corrupt.pem")
	if err := os.WriteFile(corrupt, append(append([]byte(nil), certPEM...),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, yaml, msg string }{
		{"a key, not a certificate", minimal + "    tls: true\n    tls_ca: " + keyFile + " #<\n", `"EC PRIVATE KEY", want CERTIFICATE`},
		{"second certificate corrupt", minimal + "    tls: true\n    tls_ca: " + corrupt + " #<\n", "certificate 2 does not parse"},
		{"with tls_insecure", minimal + "    tls: true\n    tls_insecure: true\n    tls_ca: " + certFile + " #<\n", "skips verification"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text, line := marked(t, tt.yaml)
			_, err := Parse([]byte(text), "ca.yaml")
			if err == nil {
				t.Fatal("no problem reported")
			}
			ps := problems(t, err)
			if len(ps) != 1 || ps[0].Key != "carriers[0].tls_ca" || ps[0].Line != line || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Errorf("want carriers[0].tls_ca at line %d: %s; got %v", line, tt.msg, err)
			}
			if strings.Contains(err.Error(), "-----") {
				t.Errorf("file content in the problem: %v", err)
			}
		})
	}
}

// modems[].send_timeout: explicit values inside the bounds are kept.
func TestModemSendTimeout(t *testing.T) {
	cfg, err := Parse([]byte(minimal+"modems:\n  - device: /dev/ttyUSB0\n    send_timeout: 90s\n  - device: /dev/ttyUSB1\n    send_timeout: 5m\n"), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := cfg.Modems[0].SendTimeout.D(), cfg.Modems[1].SendTimeout.D(); a != 90*time.Second || b != MaxModemSendTimeout {
		t.Errorf("send_timeout = %s, %s", a, b)
	}
}

func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "spareline test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestExampleLoads(t *testing.T) {
	cfg, err := Load("../examples/spareline.yaml")
	if err != nil {
		t.Fatalf("examples/spareline.yaml:\n%v", err)
	}
	if len(cfg.Carriers) != 3 || len(cfg.Accounts) != 1 || len(cfg.Modems) != 2 {
		t.Errorf("example has %d carriers, %d accounts, %d modems", len(cfg.Carriers), len(cfg.Accounts), len(cfg.Modems))
	}
	for i, want := range []struct{ name, addr string }{
		{"mobile", "127.0.0.1:7801"}, {"unicom", "127.0.0.1:7802"}, {"telecom", "127.0.0.1:7803"},
	} {
		if c := cfg.Carriers[i]; c.Name != want.name || c.Address != want.addr {
			t.Errorf("carrier %d = %s %s, want %s %s", i, c.Name, c.Address, want.name, want.addr)
		}
	}
	if a := cfg.Accounts[0]; a.SystemID != "platform" || a.Password != "secret" {
		t.Errorf("account %+v", a)
	}
	if cfg.Modems[0].Device != "/dev/ttyUSB0" || cfg.Modems[1].Device != "/dev/ttyUSB1" {
		t.Errorf("modems %+v", cfg.Modems)
	}
	if cfg.Store.Path != "./spareline-data" {
		t.Errorf("store.path %q", cfg.Store.Path)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../examples/spareline.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		minimal,
		"",
		"~",
		"smpp: &a {listen: ':1'}\nhttp: *a\n",
		"a: &a [*a]\n",
		"carriers: [{name: x, binds: 0x10, window: 1_000}]\n",
		"smpp:\n  listen: \":1\"\n  listen: \":2\"\n",
		"routing: {prefixes: {\"1\": a, \"1\": b}}\n",
		"- a\n- b\n",
		"--- \n---\n",
		"failover: {<<: {up_after: 1s}}\n",
		"accounts: [{system_id: a, password: b, allow: [1.2.3.4/40]}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml")
		if (cfg == nil) == (err == nil) {
			t.Fatalf("want exactly one of config and error; got %v, %v", cfg != nil, err)
		}
		if err != nil {
			var e *Errors
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			_ = err.Error()
			return
		}
		_ = cfg.Redacted()
		_ = cfg.String()
	})
}

// instance names the gateway in shared account leases: default empty (the
// gateway uses host name and listen addresses), else kept as given.
func TestInstance(t *testing.T) {
	cfg, err := Parse([]byte(minimal), "i.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Instance != "" {
		t.Errorf("default instance %q, want empty", cfg.Instance)
	}
	for _, name := range []string{"spareline-1", "网关 北京 01", strings.Repeat("é", MaxInstanceLen)} {
		cfg, err := Parse([]byte(minimal+"instance: \""+name+"\"\n"), "i.yaml")
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if cfg.Instance != name {
			t.Errorf("instance %q, want %q", cfg.Instance, name)
		}
	}
}

// log.messages: off by default; a file in an existing directory is taken
// (and not created by loading); a directory that does not exist, a
// directory as the file, a file as the directory and a FIFO are problems
// naming the key, at its line.
func TestMessageLogPath(t *testing.T) {
	cfg, err := Parse([]byte(minimal), "l.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Messages != "" {
		t.Errorf("default log.messages %q, want empty (off)", cfg.Log.Messages)
	}
	dir := t.TempDir()
	fresh := filepath.Join(dir, "messages.log")
	existing := filepath.Join(dir, "old.log")
	if err := os.WriteFile(existing, []byte("{}\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fresh, existing} {
		cfg, err := Parse([]byte(minimal+"log:\n  messages: "+path+"\n"), "l.yaml")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if cfg.Log.Messages != path {
			t.Errorf("log.messages %q, want %q", cfg.Log.Messages, path)
		}
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("loading the config touched %s (stat: %v); only the gateway creates it", fresh, err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Logf("no FIFO case: %v", err)
		fifo = ""
	}
	readOnly := ""
	if os.Geteuid() != 0 { // root may write anywhere
		readOnly = filepath.Join(dir, "ro")
		if err := os.Mkdir(readOnly, 0o500); err != nil {
			t.Fatal(err)
		}
		readOnly = filepath.Join(readOnly, "messages.log")
	}
	for _, tt := range []struct{ path, msg string }{
		{readOnly, "cannot create"},
		{filepath.Join(dir, "no-such-dir", "messages.log"), "does not exist"},
		{dir, "is a directory"},
		{filepath.Join(existing, "messages.log"), "is not a directory"},
		{fifo, "not a regular file"},
		{"/dev/null", "not a regular file"}, // a device: a typo naming a modem's port would write to it
	} {
		if tt.path == "" {
			continue
		}
		text := minimal + "log:\n  messages: " + tt.path + "\n"
		_, err := Parse([]byte(text), "l.yaml")
		if err == nil {
			t.Errorf("%s: no problem, want %q", tt.path, tt.msg)
			continue
		}
		ps := problems(t, err)
		if len(ps) != 1 || ps[0].Key != "log.messages" || !strings.Contains(ps[0].Msg, tt.msg) || ps[0].Line != 12 {
			t.Errorf("%s: problems %v, want one at l.yaml:12 on log.messages saying %q", tt.path, ps, tt.msg)
		}
	}
}

// A carrier that a prefix or the default names is reachable whatever its
// name; so is a preset's carrier.
func TestCarrierReachable(t *testing.T) {
	cmcc := strings.Replace(minimal, "  - name: mobile\n", "  - name: cmcc\n", 1)
	for name, text := range map[string]string{
		"preset name":       minimal,
		"prefix names it":   cmcc + "routing:\n  prefixes: { \"138\": cmcc }\n",
		"default names it":  cmcc + "routing:\n  default: cmcc\n",
		"no preset, prefix": strings.Replace(minimal, "mobile", "x", 1) + "routing:\n  preset: \"\"\n  prefixes: { \"1\": x }\n",
		"receive only":      cmcc + "    receive_only: true\n",
		"redirect target":   minimal + "  - name: spare\n    address: \"h:1\"\n    system_id: x\nrouting:\n  redirect: { mobile: spare }\n",
	} {
		if _, err := Parse([]byte(text), "ok.yaml"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A long response_timeout alone is no error: unmatched_receipts_after,
// unset, follows it (response_timeout + 5s when that is above its 1m).
func TestUnmatchedAfterFollowsALongResponseTimeout(t *testing.T) {
	c, err := Parse([]byte(minimal+"    response_timeout: 90s\n"), "ok.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Carriers[0].UnmatchedReceiptsAfter.D(); got != 95*time.Second {
		t.Fatalf("unmatched_receipts_after %s, want 1m35s", got)
	}
}

// config keeps its own copy of the presets' carrier names (it does not
// import routing); it must be routing's.
func TestPresetCarriersMatchRouting(t *testing.T) {
	for preset, names := range knownPresets {
		if got := routing.PresetCarriers(preset); !slices.Equal(got, names) {
			t.Errorf("preset %q: config knows %v, routing routes to %v", preset, names, got)
		}
	}
}

// Every Redis URL form has its addresses checked, and no message shows the
// URL's password.
func TestRedisURLProblems(t *testing.T) {
	for _, tt := range []struct{ url, msg string }{
		{"redis://:hunter2@localhost:637990/0", `address "localhost:637990": port 637990 is out of range`},
		{"rediss://u:hunter2@localhost:0", `address "localhost:0": port 0 is out of range`},
		{"redis-sentinel://:hunter2@s1:26379,s2:263790/mymaster", `address "s2:263790": port 263790 is out of range`},
		{"redis-cluster://:hunter2@n1:7000,n2:99999999999999999999", `address "n2:99999999999999999999": port 99999999999999999999 is out of range`},
		{"redis-cluster://:hunter2@n1:7000,n2", `address "n2": want host:port`},
		{"redis-sentinel://:hunter2@s1:x/m", `address "s1:x": port "x" is not a number`},
	} {
		text := "store:\n  redis: \"" + tt.url + "\"\n" + minimal
		_, err := Parse([]byte(text), "r.yaml")
		if err == nil {
			t.Errorf("%s: no problem", tt.url)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the message shows the password: %v", tt.url, err)
		}
		if want := "r.yaml:2: store.redis: " + tt.msg; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %s...", tt.url, err, want)
		}
	}
}
