package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spareline/spareline/test/smscsim"
)

// A platform written by others: Kannel (Debian's package, bearerbox and
// smsbox), its SMPP client bound to spareline as a transceiver. Messages
// go in by Kannel's sendsms HTTP interface; Kannel submits them to
// spareline, keeps the message ids spareline answers, and must match
// spareline's receipts to them (its delivery reports, called back on a
// URL of the test); an MO message from the carrier reaches Kannel's
// sms-service. This is the client that Kannel users repoint at spareline.
//
// scripts/deps.sh installs kannel; without it the test is skipped, unless
// SPARELINE_REQUIRE_THIRDPARTY is set (scripts/test.sh sets it).
func TestThirdPartyClientKannel(t *testing.T) {
	bearerbox, smsbox := kannelBinaries(t)
	e := startEnv(t, "bolt")

	type callback struct{ kind, typ, id, from, text, coding string }
	calls := make(chan callback, 16)
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		calls <- callback{kind: strings.TrimPrefix(r.URL.Path, "/"), typ: q.Get("type"), id: q.Get("id"),
			from: q.Get("from"), text: q.Get("text"), coding: q.Get("coding")}
		_, _ = io.WriteString(w, "") // an empty reply: Kannel sends nothing back to the handset
	}))
	defer hooks.Close()

	dir := t.TempDir()
	ports := freePorts(t, 3) // admin, smsbox link, sendsms
	conf := fmt.Sprintf(`group = core
admin-port = %[1]d
admin-interface = 127.0.0.1
admin-password = adm
smsbox-port = %[2]d
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "%[4]s/bearerbox.log"
log-level = 0
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = spareline
host = 127.0.0.1
port = %[5]s
transceiver-mode = true
smsc-username = platform
smsc-password = secret
system-type = ""
enquire-link-interval = 2
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = %[2]d
sendsms-port = %[3]d
sendsms-interface = 127.0.0.1
log-file = "%[4]s/smsbox.log"
log-level = 0

group = sendsms-user
username = ops
password = pw
max-messages = 3
concatenation = true

group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "%[6]s/mo?from=%%p&text=%%b&coding=%%c"
`, ports[0], ports[1], ports[2], dir, portOf(t, e.gw.SMPPAddr().String()), hooks.URL)
	confPath := filepath.Join(dir, "kannel.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bbExited := runBox(t, bearerbox, confPath, dir, "bearerbox")
	// smsbox gives up at once if bearerbox does not take its connection.
	if err := waitListening(e.ctx, fmt.Sprintf("127.0.0.1:%d", ports[1]), bbExited); err != nil {
		t.Fatalf("bearerbox: %v; logs:\n%s", err, kannelLogs(dir))
	}
	runBox(t, smsbox, confPath, dir, "smsbox")

	texts := []string{"Transformer T3 temperature high", "紧急通知：变电站故障，请立即处理。"}
	for i, txt := range texts {
		q := url.Values{
			"username": {"ops"}, "password": {"pw"}, "to": {"13800138000"}, "from": {"10690001"},
			"text": {txt}, "charset": {"UTF-8"}, "coding": {"0"},
			"dlr-mask": {"3"}, // delivered or failed
			"dlr-url":  {fmt.Sprintf("%s/dlr?type=%%d&id=%d", hooks.URL, i)},
		}
		if strings.ContainsFunc(txt, func(r rune) bool { return r > 0x7f }) {
			q.Set("coding", "2") // UCS2
		}
		if err := sendsms(e.ctx, fmt.Sprintf("http://127.0.0.1:%d/cgi-bin/sendsms?%s", ports[2], q.Encode())); err != nil {
			t.Fatalf("%v; logs:\n%s", err, kannelLogs(dir))
		}
	}

	// Kannel's delivery reports: type 1 (delivered) for each message, which
	// Kannel can only give if spareline's receipts carried the ids it was
	// given in the submit_sm_resp.
	delivered := map[string]bool{}
	for len(delivered) < len(texts) {
		select {
		case c := <-calls:
			switch {
			case c.kind == "dlr" && c.typ == "1":
				delivered[c.id] = true
			case c.kind == "dlr" && c.typ == "8": // SMSC accepted (an intermediate report)
			default:
				t.Fatalf("unexpected callback from Kannel: %+v", c)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Kannel reported %d of %d messages delivered; logs:\n%s", len(delivered), len(texts), kannelLogs(dir))
		}
	}
	got := e.smscs["mobile"].Received()
	if len(got) != len(texts) {
		t.Fatalf("the carrier got %d messages, want %d", len(got), len(texts))
	}
	for _, want := range texts {
		found := false
		for _, m := range got {
			if txt, _ := m.Text(); txt == want {
				found = true
			}
		}
		if !found {
			t.Errorf("the carrier never got %q", want)
		}
	}

	// An MO message from the carrier reaches Kannel's sms-service.
	if err := e.smscs["mobile"].SendMO(e.ctx, "13800138000", "10690001", "收到，马上处理"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case c := <-calls:
			if c.kind != "mo" {
				continue // a late delivery report
			}
			text := c.text
			if c.coding == "2" { // %b: the message as received, UCS2 as its UTF-16BE octets
				text, _ = smscsim.DecodeText(8, []byte(c.text))
			}
			if !strings.HasSuffix(c.from, "13800138000") || text != "收到，马上处理" {
				t.Fatalf("MO at Kannel: from %q text %q (coding %s)", c.from, text, c.coding)
			}
			return
		case <-time.After(30 * time.Second):
			t.Fatalf("the MO message never reached Kannel; logs:\n%s", kannelLogs(dir))
		}
	}
}

// kannelBinaries finds bearerbox and smsbox (Debian puts them in
// /usr/sbin, which a user's PATH may lack).
func kannelBinaries(t *testing.T) (string, string) {
	t.Helper()
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if p := "/usr/sbin/" + name; fileExists(p) {
			return p
		}
		return ""
	}
	bb, sb := find("bearerbox"), find("smsbox")
	if bb == "" || sb == "" {
		if os.Getenv("SPARELINE_REQUIRE_THIRDPARTY") != "" {
			t.Fatal("kannel's bearerbox/smsbox not found (scripts/deps.sh installs kannel)")
		}
		t.Skip("kannel not installed: run scripts/deps.sh")
	}
	return bb, sb
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// runBox runs a Kannel box until the test ends, its output in
// dir/name.out; the channel is closed if it exits.
func runBox(t *testing.T, bin, conf, dir, name string) <-chan struct{} {
	t.Helper()
	out, err := os.Create(filepath.Join(dir, name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = out.Close() }) // after runProcess's cleanup: cleanups run last first
	return runProcess(t, out, bin, conf)
}

// runProcess runs bin with args, its output to out, until the test ends
// (then it is killed and waited for); the channel is closed when it exits.
func runProcess(t *testing.T, out io.Writer, bin string, args ...string) <-chan struct{} {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return exited
}

// sendsms asks smsbox to send, retrying while smsbox is not yet listening
// or not yet connected to bearerbox.
func sendsms(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("smsbox never took the message: %s", last)
		case <-time.After(100 * time.Millisecond): // a box starting: no event to wait on
		}
	}
}

// kannelLogs is the tail of both boxes' logs, for a failure.
func kannelLogs(dir string) string {
	var b strings.Builder
	for _, f := range []string{"bearerbox.log", "smsbox.log", "bearerbox.out", "smsbox.out"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		fmt.Fprintf(&b, "== %s\n%s\n", f, tail(string(data), 4000))
	}
	return b.String()
}

var freePortsMu sync.Mutex

// freePorts finds n free loopback ports (a process started later listens
// on them; another could take one meanwhile, which fails the test loudly).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	freePortsMu.Lock()
	defer freePortsMu.Unlock()
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
