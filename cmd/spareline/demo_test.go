package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// `spareline demo --exit` runs the whole system headless: the bulk
// completes, the failed operator's traffic goes to the modems, and the
// status page it announces is served while it runs. It cleans up after
// itself: a second run in the same process binds the same HTTP address and
// leaves no goroutine behind.
func TestDemoHeadless(t *testing.T) {
	first := runDemo(t, "127.0.0.1:0")
	assertNoLeak(t)
	second := runDemo(t, first) // the first run's port must be free again
	if second != first {
		t.Fatalf("second run served on %s, asked for %s", second, first)
	}
	assertNoLeak(t)
}

var (
	statusLine  = regexp.MustCompile(`status page:\s+http://(\S+)/status`)
	doneLine    = regexp.MustCompile(`done: (\d+) acknowledged, (\d+) refused, (\d+) receipts`)
	modemsCol   = regexp.MustCompile(`\| modems\s+(\d+) \|`)
	failedCol   = regexp.MustCompile(`unicom\s+(\d+)`)
	summaryDown = regexp.MustCompile(`carrier unicom\s+down`)
)

// runDemo runs the demo with its status page on httpAddr and returns the
// address it served on.
func runDemo(t *testing.T, httpAddr string) string {
	t.Helper()
	const n = 60
	out := &demoOutput{t: t}
	errb := &bytes.Buffer{}
	rc := make(chan int, 1)
	go func() {
		rc <- run([]string{"demo", "--exit", "--http", httpAddr, "--messages", strconv.Itoa(n), "--modem-delay", "20ms",
			"--fail", "unicom"}, out, errb)
	}()
	select {
	case code := <-rc:
		if code != 0 {
			t.Fatalf("demo exited %d: %s\n%s", code, errb.String(), out.String())
		}
	case <-time.After(3 * time.Minute): // a hang detector, never waited out on success
		buf := make([]byte, 1<<20)
		t.Fatalf("demo still running after 3 minutes:\n%s\n%s", out.String(), buf[:runtime.Stack(buf, true)])
	}
	text := out.String()
	t.Logf("demo output:\n%s", strings.ReplaceAll(text, "\r", "\n"))

	// The status page was announced and served while the demo ran.
	out.mu.Lock()
	addr, page, pageErr := out.addr, out.page, out.pageErr
	out.mu.Unlock()
	if addr == "" {
		t.Fatal("the demo never printed its status page address")
	}
	if page == "" && pageErr == nil {
		t.Fatal("the status page was never fetched while the demo ran")
	}
	if pageErr != nil {
		t.Fatalf("the status page at %s was not served while the demo ran: %v", addr, pageErr)
	}
	// The carriers by their rows (data-carrier), not by name alone: the
	// page's "Find a message" form lists the carrier names too.
	for _, want := range []string{"spareline status", "spareline dev", `data-carrier="mobile"`, `data-carrier="unicom"`,
		`data-carrier="telecom"`, "gsm0", "gsm1", "platform"} {
		if !strings.Contains(page, want) {
			t.Errorf("the status page served during the demo lacks %q", want)
		}
	}
	// The bulk completed: every message acknowledged, every receipt back.
	m := doneLine.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no summary line in the output")
	}
	if m[1] != strconv.Itoa(n) || m[2] != "0" {
		t.Errorf("summary %q: want all %d acknowledged, 0 refused", m[0], n)
	}
	if r, _ := strconv.Atoi(m[3]); r < n {
		t.Errorf("summary %q: %d receipts for %d messages", m[0], r, n)
	}
	// The operator failed and its traffic went to the modems.
	if !strings.Contains(text, ">>> operator unicom is DOWN") || !strings.Contains(text, ">>> operator unicom is back") {
		t.Error("the output does not tell that unicom failed and came back")
	}
	// ... and the summary agrees: spareline bound to it again.
	if !strings.Contains(text, ">>> spareline is bound to unicom again") || summaryDown.MatchString(text) {
		t.Error("unicom is announced back but the summary does not show spareline bound to it again")
	}
	progress := modemsCol.FindAllStringSubmatch(text, -1)
	if len(progress) == 0 {
		t.Fatal("no progress line in the output")
	}
	if sent, _ := strconv.Atoi(progress[len(progress)-1][1]); sent == 0 {
		t.Error("the modems sent nothing after unicom failed")
	}
	// unicom took every third message until it failed at a third of the job.
	// The last progress line (rewritten in place on a terminal, one per line
	// into a pipe as here).
	cols := failedCol.FindAllStringSubmatch(text, -1)
	if len(cols) == 0 {
		t.Fatal("no progress line with unicom's count")
	}
	if c := cols[len(cols)-1]; c != nil {
		if got, _ := strconv.Atoi(c[1]); got >= n/3 {
			t.Errorf("unicom received %d of its %d messages although it failed midway", got, n/3)
		}
	}
	return addr
}

// demoOutput collects the demo's output (written from several goroutines)
// and, when the status page address appears, fetches the page while the
// demo is still running.
type demoOutput struct {
	t       *testing.T
	mu      sync.Mutex
	buf     bytes.Buffer
	addr    string // guarded by mu
	fetched bool   // guarded by mu
	page    string // guarded by mu
	pageErr error  // guarded by mu
}

func (o *demoOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.buf.Write(p)
	if o.addr == "" {
		if m := statusLine.FindSubmatch(o.buf.Bytes()); m != nil {
			o.addr = string(m[1])
		}
	}
	// Midway, with the platform bound and the operator just failed.
	var addr string
	if o.addr != "" && !o.fetched && bytes.Contains(o.buf.Bytes(), []byte(">>> operator")) {
		o.fetched, addr = true, o.addr
	}
	o.mu.Unlock()
	if addr != "" {
		page, err := fetchPage("http://" + addr + "/status")
		o.mu.Lock()
		o.page, o.pageErr = page, err
		o.mu.Unlock()
	}
	return len(p), nil
}

func (o *demoOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func fetchPage(u string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), nil
}

// assertNoLeak waits (bounded) until no goroutine of spareline, its
// simulators or an HTTP server is left.
func assertNoLeak(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leaks := leakedGoroutines()
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after the demo ended:\n%s", len(leaks), strings.Join(leaks, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond) // polling the runtime: there is no event to await
	}
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "spareline.TestDemo") || strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "spareline/") {
			continue
		}
		if strings.Contains(g, "github.com/spareline/spareline/") || strings.Contains(g, "net/http.(*") ||
			strings.Contains(g, "go.bug.st/serial") || strings.Contains(g, "creack/pty") {
			out = append(out, g)
		}
	}
	return out
}

// With the status page's port taken, the demo says which flag moves it.
func TestDemoHTTPPortBusySuggestsFlag(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out, errb bytes.Buffer
	if rc := run([]string{"demo", "--exit", "--http", ln.Addr().String(), "--messages", "1"}, &out, &errb); rc != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", rc, out.String(), errb.String())
	}
	for _, want := range []string{"address already in use", "the status page address " + ln.Addr().String() + " is taken",
		"spareline demo --http 127.0.0.1:9091", "--http 127.0.0.1:0"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	assertNoLeak(t)
}

// After the failed operator is back, the demo's summary waits for
// spareline to bind to it again (its redial backoff may outlast the last
// receipt), so that it does not sum the operator up as down.
func TestDemoSettleWaitsForRebind(t *testing.T) {
	tick := make(chan time.Time)
	var bound atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		settle(context.Background(), tick, make(chan time.Time), make(chan time.Time),
			func() bool { return true }, bound.Load, func() {})
	}()
	for range 3 {
		select {
		case tick <- time.Time{}: // settle is still waiting: every receipt is in, the carrier is not bound
		case <-done:
			t.Fatal("settle returned with every receipt in but the operator's carrier still down")
		}
	}
	bound.Store(true)
	select {
	case tick <- time.Time{}:
	case <-done:
	}
	<-done
	// Bounded: a carrier that never binds again does not hold the summary.
	by := make(chan time.Time, 1)
	by <- time.Time{}
	settle(context.Background(), tick, make(chan time.Time), by, func() bool { return true }, func() bool { return false }, func() {})
}
