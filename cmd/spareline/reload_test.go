package main

// The operator's view of `spareline run`: the real binary as a child process,
// a real SMSC simulator as the carrier, the embedded store, and our own SMPP
// client as the platform, all over loopback TCP. SIGHUP must change accounts
// without dropping sessions and refuse a broken file; SIGTERM must drain what
// is in flight, exit 0, and leave nothing acknowledged behind.
//
// Synchronisation is on events only: log lines read from the child's stderr
// (the JSON lines an operator sees), the simulator's counters, bind results.
// The child's listeners are configured on port 0; the addresses come from the
// "spareline running" log line, so no port is ever guessed.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// hangTimeout bounds each test; it is a hang detector, never waited out on
// success.
const hangTimeout = 2 * time.Minute

// ESME_RINVSYSID, SMPP 3.4 §5.1.3: the answer to a bind with an unknown
// system_id.
const statusInvSysID = 0x0000000F

// ESME_RMSGQFUL, SMPP 3.4 §5.1.3: what a draining gateway answers new submits.
const statusMsgQFul = 0x00000014

// raceEnabled reports whether this test binary runs under the race detector;
// the child is then built with -race too, so a race in the reload or drain
// paths fails the test (the child exits 66).
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// buildSpareline builds this package's binary into a temporary directory.
// Packages come from the build cache, so only the first build compiles.
func buildSpareline(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "spareline")
	args := []string{"build", "-o", bin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, ".")
	out, err := exec.Command(goBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// child is a running `spareline run` whose stderr log is parsed as it comes.
type child struct {
	t   *testing.T
	cmd *exec.Cmd

	mu      sync.Mutex       // guards the fields below
	lines   []map[string]any // every log line; non-JSON lines as {"raw": line}
	changed chan struct{}    // closed and replaced on each new line and on exit
	exited  bool
	waitErr error
}

// startChild runs `spareline run --config cfg` with extra flags. The child
// is killed at the end of the test if it is still running, and its log is
// printed when the test failed.
func startChild(t *testing.T, bin, cfg string, extra ...string) *child {
	t.Helper()
	args := append([]string{"run", "--config", cfg}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Dir(cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, changed: make(chan struct{})}
	go c.read(stderr)
	t.Cleanup(func() {
		c.mu.Lock()
		exited := c.exited
		c.mu.Unlock()
		if !exited {
			_ = cmd.Process.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
			defer cancel()
			_, _ = c.wait(ctx)
		}
		if t.Failed() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, l := range c.lines {
				b, _ := json.Marshal(l)
				t.Logf("child: %s", b)
			}
		}
	})
	return c
}

// read collects log lines until EOF, then reaps the process (Wait must come
// after the pipe is drained).
func (c *child) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			m = map[string]any{"raw": sc.Text()}
		}
		c.mu.Lock()
		c.lines = append(c.lines, m)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
	err := c.cmd.Wait()
	c.mu.Lock()
	c.exited = true
	c.waitErr = err
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// mark is the number of log lines seen so far: waitLog(mark, ...) looks only
// at lines logged after it.
func (c *child) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// waitLog waits for a line at index >= from that pred accepts.
func (c *child) waitLog(ctx context.Context, from int, what string, pred func(map[string]any) bool) (map[string]any, error) {
	for i := from; ; {
		c.mu.Lock()
		for ; i < len(c.lines); i++ {
			if pred(c.lines[i]) {
				l := c.lines[i]
				c.mu.Unlock()
				return l, nil
			}
		}
		ch, exited := c.changed, c.exited
		c.mu.Unlock()
		if exited {
			return nil, fmt.Errorf("waiting for log line %s: the process exited", what)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for log line %s: %w", what, ctx.Err())
		}
	}
}

// msgIs matches a log line by its message, as a prefix.
func msgIs(prefix string) func(map[string]any) bool {
	return func(l map[string]any) bool {
		m, _ := l["msg"].(string)
		return strings.HasPrefix(m, prefix)
	}
}

// addrs waits for the "spareline running" line and returns the SMPP and HTTP
// addresses the child bound.
func (c *child) addrs(ctx context.Context) (smpp, http string) {
	c.t.Helper()
	l, err := c.waitLog(ctx, 0, `"spareline running"`, msgIs("spareline running"))
	if err != nil {
		c.t.Fatal(err)
	}
	smpp, _ = l["smpp"].(string)
	http, _ = l["http"].(string)
	if _, _, err := net.SplitHostPort(smpp); err != nil {
		c.t.Fatalf("the running line has no usable smpp address: %v", l)
	}
	return smpp, http
}

func (c *child) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (c *child) wait(ctx context.Context) (int, error) {
	for {
		c.mu.Lock()
		exited, err, ch := c.exited, c.waitErr, c.changed
		c.mu.Unlock()
		if exited {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), nil
			}
			return 0, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return -1, fmt.Errorf("waiting for the process to exit: %w", ctx.Err())
		}
	}
}

// dumpAndFail asks a hung child for its goroutines (SIGQUIT makes the Go
// runtime print them to stderr, which the test log shows) and fails.
func (c *child) dumpAndFail(err error) {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = c.wait(ctx)
	c.t.Fatal(err)
}

// stop sends SIGTERM and requires a clean exit.
func (c *child) stop(ctx context.Context) {
	c.t.Helper()
	c.signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	code, err := c.wait(ctx)
	if err != nil {
		c.dumpAndFail(err)
	}
	if code != 0 {
		c.t.Fatalf("exit code %d after SIGTERM, want 0 (66 is a data race in the child)", code)
	}
}

// account is one accounts[] entry of a test config.
type account struct{ id, pw string }

// testConfig is a config with one carrier (mobile, so the cn preset routes
// China Mobile numbers to it and every other number to the modem pool) and
// listeners on port 0. extra is appended as is.
func testConfig(dir, smsc string, accts []account, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "smpp:\n  listen: \"127.0.0.1:0\"\nhttp:\n  listen: \"127.0.0.1:0\"\nstore:\n  path: %q\naccounts:\n", filepath.Join(dir, "data"))
	for _, a := range accts {
		fmt.Fprintf(&b, "  - system_id: %s\n    password: %s\n", a.id, a.pw)
	}
	fmt.Fprintf(&b, "carriers:\n  - name: mobile\n    address: %q\n    system_id: ent01\n    password: pw\n    response_timeout: 10s\n", smsc)
	b.WriteString("routing:\n  preset: cn\n")
	b.WriteString(extra)
	return b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dial binds a transceiver of the account.
func dial(ctx context.Context, addr string, a account) (*platform.Client, error) {
	return platform.Dial(ctx, addr, a.id, a.pw, platform.Options{ResponseTimeout: time.Minute})
}

func mustDial(ctx context.Context, t *testing.T, addr string, a account) *platform.Client {
	t.Helper()
	c, err := dial(ctx, addr, a)
	if err != nil {
		t.Fatalf("bind as %s: %v", a.id, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refusedAsUnknown requires the bind to be refused with ESME_RINVSYSID.
func refusedAsUnknown(ctx context.Context, t *testing.T, addr string, a account) {
	t.Helper()
	c, err := dial(ctx, addr, a)
	if err == nil {
		_ = c.Close()
		t.Fatalf("bind as %s succeeded; want ESME_RINVSYSID", a.id)
	}
	var be *platform.BindError
	if !errors.As(err, &be) || be.Status != statusInvSysID {
		t.Fatalf("bind as %s: %v; want ESME_RINVSYSID", a.id, err)
	}
}

// relay submits one message to a China Mobile number and requires OK.
func relay(ctx context.Context, t *testing.T, c *platform.Client, text string) {
	t.Helper()
	res, err := c.Submit(ctx, platform.Submit{Src: "10690000", Dest: "13800138000", Text: text})
	if err != nil {
		t.Fatalf("submit %q: %v", text, err)
	}
	if res.Status != 0 || res.MessageID == "" {
		t.Fatalf("submit %q: status 0x%08X id %q, want OK with an id", text, res.Status, res.MessageID)
	}
}

// atSMSC requires every text to have reached the simulator.
func atSMSC(t *testing.T, smsc *smscsim.SMSC, texts ...string) {
	t.Helper()
	got := map[string]bool{}
	for _, m := range smsc.Received() {
		s, err := m.Text()
		if err == nil {
			got[s] = true
		}
	}
	for _, s := range texts {
		if !got[s] {
			t.Errorf("%q did not reach the SMSC", s)
		}
	}
}

// startSMSC starts a simulated China Mobile SMSC.
func startSMSC(t *testing.T, opts smscsim.Options) *smscsim.SMSC {
	t.Helper()
	opts.Name = "mobile"
	s, err := smscsim.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func carrierBound(ctx context.Context, t *testing.T, p *child) {
	t.Helper()
	// The SMSC counts the bind when it reads bind_transceiver, before
	// spareline has read the response: spareline's own word is awaited.
	up := func(l map[string]any) bool {
		return msgIs("carrier state changed")(l) && l["to"] == "up"
	}
	if _, err := p.waitLog(ctx, 0, `"carrier state changed" to up`, up); err != nil {
		t.Fatalf("spareline never had the carrier up: %v", err)
	}
}

var (
	alpha = account{"alpha", "pw-alpha"}
	beta  = account{"beta", "pw-beta"}
)

// SIGHUP after adding an account: the new account binds without a restart,
// and a session of the old account bound before the reload stays up and
// keeps relaying.
func TestSIGHUPReloadAddsAccount(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	bin := buildSpareline(t)
	smsc := startSMSC(t, smscsim.Options{})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spareline.yaml")
	writeFile(t, cfg, testConfig(dir, smsc.Addr(), []account{alpha}, ""))

	p := startChild(t, bin, cfg)
	addr, _ := p.addrs(ctx)
	carrierBound(ctx, t, p)
	a := mustDial(ctx, t, addr, alpha)
	relay(ctx, t, a, "before reload")
	refusedAsUnknown(ctx, t, addr, beta)

	writeFile(t, cfg, testConfig(dir, smsc.Addr(), []account{alpha, beta}, ""))
	from := p.mark()
	p.signal(syscall.SIGHUP)
	l, err := p.waitLog(ctx, from, `"config reloaded"`, msgIs("config reloaded"))
	if err != nil {
		t.Fatal(err)
	}
	// The log line says what the reload changed, by name only.
	if applied := fmt.Sprint(l["applied"]); applied != "[account "+beta.id+" added]" {
		t.Errorf("reload logged applied = %s, want [account %s added]", applied, beta.id)
	}

	b := mustDial(ctx, t, addr, beta)
	relay(ctx, t, b, "from the new account")
	select {
	case <-a.Done():
		t.Fatalf("the session bound before the reload was dropped: %v", a.Err())
	default:
	}
	relay(ctx, t, a, "after reload, same session")
	atSMSC(t, smsc, "before reload", "from the new account", "after reload, same session")
	p.stop(ctx)
}

// SIGHUP with a broken file, first a YAML syntax error and then a value that
// does not validate: the running config stays (old accounts bind, the new one
// does not, bound sessions keep relaying), the process lives, and the log
// names the file, the line and the key. A good file afterwards is taken.
func TestSIGHUPReloadRefusesBrokenConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	bin := buildSpareline(t)
	smsc := startSMSC(t, smscsim.Options{})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spareline.yaml")
	writeFile(t, cfg, testConfig(dir, smsc.Addr(), []account{alpha}, ""))

	p := startChild(t, bin, cfg)
	addr, _ := p.addrs(ctx)
	carrierBound(ctx, t, p)
	a := mustDial(ctx, t, addr, alpha)
	relay(ctx, t, a, "before the broken reloads")

	good := testConfig(dir, smsc.Addr(), []account{alpha, beta}, "")
	broken := []struct {
		name, content string
		want          []string // substrings of the logged error
	}{{
		// An unquoted colon in a value on the last line of the file.
		name:    "syntax",
		content: good + "  default: mobile: unicom\n",
		want:    []string{cfg + ":" + fmt.Sprint(strings.Count(good, "\n")+1) + ":"},
	}, {
		// A duration without a unit (docs/config.md: an error).
		name:    "invalid value",
		content: strings.Replace(good, "response_timeout: 10s", "response_timeout: 10", 1),
		want:    []string{cfg + ":" + fmt.Sprint(lineOf(good, "response_timeout")) + ": carriers[0].response_timeout:"},
	}}
	for _, bc := range broken {
		writeFile(t, cfg, bc.content)
		from := p.mark()
		p.signal(syscall.SIGHUP)
		l, err := p.waitLog(ctx, from, `"reload refused"`, msgIs("reload refused"))
		if err != nil {
			t.Fatalf("%s: %v", bc.name, err)
		}
		logged, _ := l["error"].(string)
		for _, w := range bc.want {
			if !strings.Contains(logged, w) {
				t.Errorf("%s: the refusal does not name %q: %q", bc.name, w, logged)
			}
		}
		if strings.Contains(logged, beta.pw) {
			t.Errorf("%s: the refusal logs a password: %q", bc.name, logged)
		}
		refusedAsUnknown(ctx, t, addr, beta)
		fresh := mustDial(ctx, t, addr, alpha)
		relay(ctx, t, fresh, "new session after "+bc.name)
		_ = fresh.Close()
		relay(ctx, t, a, "old session after "+bc.name)
	}

	writeFile(t, cfg, good)
	from := p.mark()
	p.signal(syscall.SIGHUP)
	if _, err := p.waitLog(ctx, from, `"config reloaded"`, msgIs("config reloaded")); err != nil {
		t.Fatal(err)
	}
	b := mustDial(ctx, t, addr, beta)
	relay(ctx, t, b, "beta after the good reload")
	atSMSC(t, smsc, "old session after syntax", "old session after invalid value", "beta after the good reload")
	p.stop(ctx)
}

// lineOf is the 1-based line of the first occurrence of s in text.
func lineOf(text, s string) int {
	i := strings.Index(text, s)
	if i < 0 {
		return 0
	}
	return strings.Count(text[:i], "\n") + 1
}

// SIGTERM with submits in flight on the carrier: spareline stops taking new
// work (new submits are refused with ESME_RMSGQFUL, new connections are not
// accepted), answers what it already took, exits 0, and every message the
// platform got OK for is at the SMSC.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	bin := buildSpareline(t)
	release := make(chan struct{})
	smsc := startSMSC(t, smscsim.Options{})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spareline.yaml")
	writeFile(t, cfg, testConfig(dir, smsc.Addr(), []account{alpha}, ""))

	p := startChild(t, bin, cfg, "--drain", "90s")
	addr, _ := p.addrs(ctx)
	carrierBound(ctx, t, p)
	a := mustDial(ctx, t, addr, alpha)

	// Submits that arrive before release are answered after a delay long
	// enough to be in flight at SIGTERM; later ones at once.
	smsc.SetBehaviour(func(m smscsim.Message, attempt int) smscsim.Reply {
		select {
		case <-release:
			return smscsim.Reply{}
		default:
			return smscsim.Reply{Delay: 3 * time.Second}
		}
	})
	const n = 8
	type result struct {
		text string
		res  platform.SubmitResult
		err  error
	}
	results := make(chan result, n)
	for i := range n {
		text := fmt.Sprintf("in flight %d", i)
		go func() {
			res, err := a.Submit(ctx, platform.Submit{Src: "10690000", Dest: "13800138000", Text: text})
			results <- result{text, res, err}
		}()
	}
	if err := smsc.WaitFor(ctx, n); err != nil {
		t.Fatal(err)
	}
	from := p.mark()
	p.signal(syscall.SIGTERM)
	if _, err := p.waitLog(ctx, from, `"stopping"`, msgIs("stopping")); err != nil {
		t.Fatal(err)
	}
	if k := len(results); k > 0 {
		// Not a failure (no timed assertions), but then fewer submits were
		// in flight at SIGTERM than intended.
		t.Logf("%d of %d submits were answered before SIGTERM took effect (a slow machine)", k, n)
	}
	close(release)

	// New work is refused while draining: a submit on the bound session gets
	// ESME_RMSGQFUL (the listener closes and draining starts right after the
	// log line, so a submit that slipped in before is answered normally and
	// must then reach the SMSC like the others).
	var late []string
	for i := 0; ; i++ {
		text := fmt.Sprintf("late %d", i)
		res, err := a.Submit(ctx, platform.Submit{Src: "10690000", Dest: "13800138000", Text: text})
		if err != nil {
			t.Fatalf("late submit: %v", err)
		}
		if res.Status == statusMsgQFul {
			break
		}
		if res.Status != 0 {
			t.Fatalf("late submit: status 0x%08X, want ESME_RMSGQFUL", res.Status)
		}
		late = append(late, text)
	}
	// The SMPP listener is closed: a new connection is refused.
	if c, err := net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection to %s was accepted while draining", addr)
	}

	var ok []string
	for range n {
		r := <-results
		if r.err != nil {
			t.Errorf("%q: no answer before the drain ended: %v", r.text, r.err)
			continue
		}
		if r.res.Status != 0 {
			t.Errorf("%q: status 0x%08X, want OK (it was in flight before SIGTERM)", r.text, r.res.Status)
			continue
		}
		ok = append(ok, r.text)
	}
	code, err := p.wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("exit code %d, want 0 (66 is a data race in the child)", code)
	}
	if _, err := p.waitLog(ctx, from, `"stopped"`, msgIs("stopped")); err != nil {
		t.Fatal(err)
	}
	atSMSC(t, smsc, append(ok, late...)...)
}

// SIGTERM with messages acknowledged for the modem path and no modem able to
// send them: they stay in the store (read directly after the exit) and the
// next start sends them through the modem once it is back.
func TestSIGTERMKeepsModemQueueForNextStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	bin := buildSpareline(t)
	smsc := startSMSC(t, smscsim.Options{})
	sim, err := modemsim.Start(ctx, modemsim.Options{Name: "reload"})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	sim.Unplug() // the modem is gone: queued messages cannot leave
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spareline.yaml")
	modems := fmt.Sprintf("modems:\n  - device: %q\n    name: m0\n    max_per_minute: 600\n", sim.Path())
	writeFile(t, cfg, testConfig(dir, smsc.Addr(), []account{alpha}, modems))

	p := startChild(t, bin, cfg)
	addr, _ := p.addrs(ctx)
	a := mustDial(ctx, t, addr, alpha)
	// China Unicom numbers: no unicom carrier is configured, so the cn
	// preset's segment falls to routing.default, the modem pool.
	dests := []string{"13012345670", "13012345671", "13012345672"}
	for _, d := range dests {
		res, err := a.Submit(ctx, platform.Submit{Src: "10690000", Dest: d, Text: "queued for " + d})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit to %s: %v status 0x%08X, want OK (queued)", d, err, res.Status)
		}
	}
	_ = a.Close()
	p.stop(ctx)

	st, err := store.OpenBolt(filepath.Join(dir, "data"), time.Hour, nil)
	if err != nil {
		t.Fatalf("open the store after the exit: %v", err)
	}
	depth, _, err := st.ModemQueue(ctx)
	_ = st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if depth != len(dests) {
		t.Fatalf("modem queue after SIGTERM: %d messages, want %d", depth, len(dests))
	}

	if err := sim.Replug(); err != nil {
		t.Fatal(err)
	}
	p2 := startChild(t, bin, cfg)
	p2.addrs(ctx)
	sent, err := sim.WaitSent(ctx, len(dests))
	if err != nil {
		t.Fatalf("after the restart the modem sent %d of %d: %v", len(sim.Sent()), len(dests), err)
	}
	got := map[string]bool{}
	for _, m := range sent {
		got[m.Dest] = true
	}
	for _, d := range dests {
		if !got[d] && !got["+86"+d] && !got["86"+d] {
			t.Errorf("%s was not sent after the restart; sent: %v", d, sent)
		}
	}
	p2.stop(ctx)
}

// SIGTERM while the modem is in AT+CMGS: the send finishes within --drain
// and is recorded as sent by that modem (the emulator has it once, the
// modem queue is empty after the exit), and the next start does not send it
// again.
func TestSIGTERMLetsAModemSendInProgressFinish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	bin := buildSpareline(t)
	smsc := startSMSC(t, smscsim.Options{})
	sim, err := modemsim.Start(ctx, modemsim.Options{Name: "term"})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spareline.yaml")
	modems := fmt.Sprintf("modems:\n  - device: %q\n    name: m0\n    max_per_minute: 600\n", sim.Path())
	writeFile(t, cfg, testConfig(dir, smsc.Addr(), []account{alpha}, modems))

	p := startChild(t, bin, cfg, "--drain", "30s")
	addr, _ := p.addrs(ctx)
	a := mustDial(ctx, t, addr, alpha)
	sim.HoldSends(true) // the send stays in AT+CMGS until released
	// A China Unicom number: no unicom carrier, so the modem pool.
	res, err := a.Submit(ctx, platform.Submit{Src: "10690000", Dest: "13012345670", Text: "on the modem at SIGTERM", RegisteredDelivery: 1})
	if err != nil || res.Status != 0 {
		t.Fatalf("submit: %v status 0x%08X, want OK (queued)", err, res.Status)
	}
	if err := sim.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	from := p.mark()
	p.signal(syscall.SIGTERM)
	if _, err := p.waitLog(ctx, from, "waiting for the modem sends", msgIs("stopping: waiting for the modem sends in progress")); err != nil {
		t.Fatal(err) // without it the send was cut short
	}
	sim.HoldSends(false)
	code, err := p.wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("exit after SIGTERM: code %d, %v; want 0", code, err)
	}
	if n := len(sim.Sent()); n != 1 {
		t.Fatalf("the modem sent %d messages, want the one in progress at SIGTERM", n)
	}
	st, err := store.OpenBolt(filepath.Join(dir, "data"), time.Hour, nil)
	if err != nil {
		t.Fatalf("open the store after the exit: %v", err)
	}
	m, err := st.GetMessage(ctx, res.MessageID)
	depth, _, qerr := st.ModemQueue(ctx)
	_ = st.Close()
	if err != nil || qerr != nil {
		t.Fatal(err, qerr)
	}
	// Sent by m0 (its status report, if it came before the exit, handled:
	// DELIVRD).
	sentOn := m.State == store.StateModemSent || (m.State == store.StateDone && m.FinalStat == "DELIVRD")
	if !sentOn || m.Modem != "m0" || depth != 0 {
		t.Fatalf("after SIGTERM: state %q stat %q modem %q, modem queue %d; want sent on m0, queue empty", m.State, m.FinalStat, m.Modem, depth)
	}

	p2 := startChild(t, bin, cfg)
	addr, _ = p2.addrs(ctx)
	a2 := mustDial(ctx, t, addr, alpha)
	if r, err := a2.Submit(ctx, platform.Submit{Src: "10690000", Dest: "13012345671", Text: "after the restart"}); err != nil || r.Status != 0 {
		t.Fatalf("submit after the restart: %v status 0x%08X", err, r.Status)
	}
	sent, err := sim.WaitSent(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 || !strings.HasSuffix(sent[1].Dest, "13012345671") {
		t.Errorf("sent after the restart: %+v; want only the new message", sent)
	}
	_ = a2.Close()
	p2.stop(ctx)
}

// logrotate's way with the message log: the file is moved, then SIGHUP.
// Each SIGHUP reopens log.messages at its path, even one whose config is
// refused, so that each file holds the submits of its own period; SIGTERM
// writes what is buffered.
func TestSIGHUPReopensMessageLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	bin := buildSpareline(t)
	smsc := startSMSC(t, smscsim.Options{})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spareline.yaml")
	logPath := filepath.Join(dir, "messages.log")
	good := testConfig(dir, smsc.Addr(), []account{alpha}, fmt.Sprintf("log:\n  messages: %q\n", logPath))
	writeFile(t, cfg, good)

	p := startChild(t, bin, cfg)
	addr, _ := p.addrs(ctx)
	carrierBound(ctx, t, p)
	a := mustDial(ctx, t, addr, alpha)
	rotate := func(to, logged string) {
		t.Helper()
		if err := os.Rename(logPath, to); err != nil {
			t.Fatal(err)
		}
		from := p.mark()
		p.signal(syscall.SIGHUP)
		if _, err := p.waitLog(ctx, from, logged, msgIs(logged)); err != nil {
			t.Fatal(err)
		}
	}

	relay(ctx, t, a, "first period")
	rotate(logPath+".1", "config reloaded")
	relay(ctx, t, a, "second period")
	writeFile(t, cfg, good+"failover:\n  on_unknown: maybe\n") // refused
	rotate(logPath+".2", "reload refused")
	relay(ctx, t, a, "third period")
	p.stop(ctx)

	for _, path := range []string{logPath + ".1", logPath + ".2", logPath} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		submits := 0
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("%s: line %q is not JSON: %v", path, line, err)
			}
			if e["event"] == "submit" && e["status"] == "ESME_ROK" && e["account"] == alpha.id {
				submits++
			}
		}
		if submits != 1 {
			t.Errorf("%s holds %d submit lines, want 1 (its period's):\n%s", filepath.Base(path), submits, b)
		}
	}
}
