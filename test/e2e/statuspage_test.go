package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
)

// The status page as a person sees it, in a real headless Chromium driven
// through chromedriver's W3C WebDriver HTTP API (https://www.w3.org/TR/webdriver2/):
// a carrier that is down is shown as down, the others up, the modems with
// their signal, the modem queue and the bound platform; on a phone nothing
// overflows sideways; the page loads nothing from outside this machine; and
// it refreshes itself, so the carrier coming back shows without a reload.
func TestStatusPageInBrowser(t *testing.T) {
	wd := startBrowser(t)
	sims, my := startModems(t, 2)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML), withHTTP())
	c := e.dial("platform", "secret", platform.BindTRX)

	unicom := e.smscs["unicom"]
	unicom.Stop()
	waitCarrierState(t, e, "unicom", proxy.StateDown)
	// Traffic for the down carrier goes by modem; the queue empties.
	for i := range 3 {
		if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: fmt.Sprintf("page-%d", i)}); err != nil || r.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, r.Status)
		}
	}
	waitDelivered(t, e, sims, []string{"page-0", "page-1", "page-2"})
	waitQueueEmpty(t, e)

	statusURL := fmt.Sprintf("http://%s/status", e.gw.HTTPAddr())
	wd.navigate(e.ctx, statusURL)
	p := wd.page(e.ctx)
	t.Logf("the page reads:\n%s", p.Text)

	// What a person reads.
	for _, want := range []struct{ carrier, state string }{{"mobile", "up"}, {"unicom", "down"}, {"telecom", "up"}} {
		row := p.row(want.carrier)
		if !strings.Contains(row, "\t"+want.state+"\t") {
			t.Errorf("carrier row %q does not read %s", row, want.state)
		}
		if cls := p.Carriers[want.carrier].Class; cls != want.state {
			t.Errorf("carrier %s state cell has class %q, want %q (its colour)", want.carrier, cls, want.state)
		}
		if col := p.Carriers[want.carrier].Color; col != stateColours[want.state] {
			t.Errorf("carrier %s state shown in %s, want %s", want.carrier, col, stateColours[want.state])
		}
	}
	if row := p.row("unicom"); !strings.Contains(row, "0 bound") {
		t.Errorf("down carrier row %q: want 0 binds bound", row)
	}
	if row := p.row("mobile"); !strings.Contains(row, "2 bound") {
		t.Errorf("carrier row %q: want 2 binds bound", row)
	}
	// Each carrier shows its recent traffic: submits per second and the
	// failed share of the last minute.
	if row := p.row("telecom"); !strings.Contains(row, "/s, ") || !strings.Contains(row, "% failed") {
		t.Errorf("carrier row %q: want its submits per second and failed share", row)
	}
	for _, name := range []string{"gsm0", "gsm1"} {
		row := p.row(name)
		// The emulator answers AT+CSQ with rssi 20: -113 + 2*20 dBm.
		if !strings.Contains(row, "\tup\t") || !strings.Contains(row, "-73 dBm") {
			t.Errorf("modem row %q: want up with -73 dBm", row)
		}
	}
	if !containsLine(p.Text, "0 waiting") {
		t.Errorf("modem queue line missing; page reads:\n%s", p.Text)
	}
	if row := p.row("platform"); !strings.Contains(row, "\ttransceiver\t127.0.0.1:") {
		t.Errorf("platform session row %q: want a transceiver from 127.0.0.1", row)
	}

	// A phone: the viewport is 390 px wide and nothing scrolls sideways.
	if p.InnerWidth != 390 {
		t.Errorf("viewport %d px wide, want the phone's 390", p.InnerWidth)
	}
	if p.ScrollWidth > p.InnerWidth {
		t.Errorf("page is %d px wide on a %d px phone: it overflows horizontally", p.ScrollWidth, p.InnerWidth)
	}
	if len(p.Overflowing) > 0 {
		t.Errorf("on a %d px phone these must be scrolled sideways: %v", p.InnerWidth, p.Overflowing)
	}
	// Nothing from outside this machine: every resource and link is local.
	for _, u := range append(p.Resources, p.Links...) {
		pu, err := url.Parse(u)
		if err != nil || (pu.Host != "" && pu.Hostname() != "127.0.0.1") {
			t.Errorf("the page refers to %q, outside 127.0.0.1", u)
		}
	}

	// The carrier comes back; the same page, never reloaded by the test,
	// shows it taking traffic again (probation, then up).
	firstLoad := p.TimeOrigin
	if err := unicom.Restart(); err != nil {
		t.Fatal(err)
	}
	for {
		p = wd.page(e.ctx)
		if st := p.Carriers["unicom"].Class; st == "probation" || st == "up" {
			if row := p.row("unicom"); !strings.Contains(row, "\t"+st+"\t") {
				t.Fatalf("unicom's class is %s but its row reads %q", st, row)
			}
			break
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("the page never showed unicom back; it reads:\n%s", p.Text)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if p.TimeOrigin == firstLoad {
		t.Fatal("the page changed without being reloaded?")
	}
	if p.URL != statusURL {
		t.Fatalf("the page moved to %s", p.URL)
	}
}

// The colours of the state classes in status.html, as computed by the browser.
var stateColours = map[string]string{
	"up":        "rgb(10, 122, 47)",
	"probation": "rgb(165, 106, 0)",
	"down":      "rgb(192, 24, 24)",
}

func waitCarrierState(t *testing.T, e *env, name string, want proxy.CarrierState) {
	t.Helper()
	for e.gw.Health.State(name) != want {
		select {
		case <-e.ctx.Done():
			t.Fatalf("%s never became %v", name, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func waitQueueEmpty(t *testing.T, e *env) {
	t.Helper()
	for {
		depth, _, err := e.store.ModemQueue(e.ctx)
		if err == nil && depth == 0 {
			return
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("the modem queue never emptied (depth %d, %v)", depth, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

// statusPage is what the browser shows.
type statusPage struct {
	URL         string  `json:"url"`
	Text        string  `json:"text"` // document.body.innerText: cells tab-separated, rows on lines
	ScrollWidth int     `json:"scrollWidth"`
	InnerWidth  int     `json:"innerWidth"`
	TimeOrigin  float64 `json:"timeOrigin"` // changes on every (re)load
	// Overflowing lists the elements that scroll sideways inside the page.
	Overflowing []string `json:"overflowing"`
	Resources   []string
	Links       []string
	Carriers    map[string]struct {
		Class string `json:"class"`
		Color string `json:"color"`
	} `json:"carriers"`
}

// row is the table row whose first cell is name ("" if none).
func (p statusPage) row(name string) string {
	for _, l := range strings.Split(p.Text, "\n") {
		if strings.HasPrefix(l, name+"\t") {
			return l
		}
	}
	return ""
}

const pageScript = `
const carriers = {};
for (const td of document.querySelectorAll('[data-carrier]')) {
  carriers[td.dataset.carrier] = {class: td.className, color: getComputedStyle(td).color};
}
const overflowing = [];
for (const el of document.querySelectorAll('body *')) {
  if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible') overflowing.push(el.tagName + '.' + el.className + ' ' + el.scrollWidth + '>' + el.clientWidth);
}
const links = [];
for (const el of document.querySelectorAll('[src],[href]')) links.push(el.getAttribute('src') || el.getAttribute('href'));
return {url: location.href, text: document.body.innerText,
  scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  timeOrigin: performance.timeOrigin, carriers: carriers, links: links, overflowing: overflowing,
  resources: performance.getEntriesByType('resource').map(e => e.name)};`

// page reads the page as it is now. While the page is refreshing, a
// script may fail; page retries until the context ends.
func (wd *webDriver) page(ctx context.Context) statusPage {
	wd.t.Helper()
	for {
		var p statusPage
		raw, err := wd.cmd(ctx, "POST", "/execute/sync", map[string]any{"script": pageScript, "args": []any{}})
		if err == nil {
			var v struct {
				statusPage
				Resources []string `json:"resources"`
				Links     []string `json:"links"`
			}
			if err = json.Unmarshal(raw, &v); err == nil && v.Text != "" {
				p = v.statusPage
				p.Resources, p.Links = v.Resources, v.Links
				return p
			}
		}
		select {
		case <-ctx.Done():
			wd.t.Fatalf("reading the page: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// webDriver is a chromedriver session.
type webDriver struct {
	t       *testing.T
	base    string // http://127.0.0.1:port
	session string
	client  *http.Client
}

// startBrowser starts chromedriver and a headless Chromium with a phone's
// viewport. Without Chromium the test is skipped, unless
// SPARELINE_REQUIRE_BROWSER is set (scripts/test.sh sets it; scripts/deps.sh
// installs chromium and chromium-driver).
func startBrowser(t *testing.T) *webDriver {
	t.Helper()
	browser, errB := exec.LookPath("chromium")
	driver, errD := exec.LookPath("chromedriver")
	if errB != nil || errD != nil {
		if os.Getenv("SPARELINE_REQUIRE_BROWSER") == "" {
			t.Skip("chromium or chromedriver not installed (scripts/deps.sh installs them)")
		}
		t.Fatalf("SPARELINE_REQUIRE_BROWSER is set but chromium (%v) or chromedriver (%v) is missing", errB, errD)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	var logBuf syncBuffer
	cmd := exec.Command(driver, fmt.Sprintf("--port=%d", port), "--allowed-ips=127.0.0.1")
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	wd := &webDriver{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), client: &http.Client{Timeout: time.Minute}}
	t.Cleanup(func() {
		if wd.session != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = wd.cmd(ctx, "DELETE", "", nil) // closes the browser
			cancel()
		}
		_ = cmd.Process.Kill()
		<-exited
		wd.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("chromedriver output:\n%s", logBuf.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for { // chromedriver answers /status when it listens
		if resp, err := wd.client.Get(wd.base + "/status"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("chromedriver exited: %s", logBuf.String())
		case <-ctx.Done():
			t.Fatalf("chromedriver never answered: %s", logBuf.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": browser,
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--disable-background-networking", "--no-first-run", "--disable-extensions"},
			// A phone: 390x844 CSS pixels, mobile layout (the viewport meta tag applies).
			"mobileEmulation": map[string]any{"deviceMetrics": map[string]any{"width": 390, "height": 844, "pixelRatio": 3.0, "mobile": true}},
		},
	}}}
	raw, err := wd.post(ctx, wd.base+"/session", caps)
	if err != nil {
		t.Fatalf("new browser session: %v\n%s", err, logBuf.String())
	}
	var s struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(raw, &s); err != nil || s.SessionID == "" {
		t.Fatalf("new session answer %s: %v", raw, err)
	}
	wd.session = s.SessionID
	return wd
}

func (wd *webDriver) navigate(ctx context.Context, u string) {
	wd.t.Helper()
	if _, err := wd.cmd(ctx, "POST", "/url", map[string]any{"url": u}); err != nil {
		wd.t.Fatalf("open %s: %v", u, err)
	}
}

// cmd sends a command to the session (W3C WebDriver §6: endpoints under
// /session/{id}) and returns the answer's "value".
func (wd *webDriver) cmd(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	u := wd.base + "/session/" + wd.session + path
	if method == "POST" {
		return wd.post(ctx, u, body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	return wd.do(req)
}

func (wd *webDriver) post(ctx context.Context, u string, body any) (json.RawMessage, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return wd.do(req)
}

// webDriverError is an error answer (W3C WebDriver §6.6: "error", "message").
type webDriverError struct {
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *webDriverError) Error() string { return "webdriver: " + e.Code + ": " + e.Message }

func (wd *webDriver) do(req *http.Request) (json.RawMessage, error) {
	resp, err := wd.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var v struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("webdriver answer %d %q: %w", resp.StatusCode, b, err)
	}
	if resp.StatusCode != http.StatusOK {
		var we webDriverError
		if json.Unmarshal(v.Value, &we) == nil && we.Code != "" {
			return nil, &we
		}
		return nil, errors.New("webdriver: HTTP " + resp.Status)
	}
	return v.Value, nil
}

// syncBuffer is a bytes.Buffer safe for a child process's two pipes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
