package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/test/smscsim"
)

// A reload that changes a part only a restart applies says so each time
// until the file matches what runs again: reverting the file says nothing
// is pending, changing it again says so again.
func TestReloadSaysWhatNeedsARestartUntilItIsUndone(t *testing.T) {
	dir := t.TempDir()
	cfgWith := func(httpListen string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: %q }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw } ]
routing: { country_code: "86", preset: cn }
`, httpListen, dir)), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	core, logs := observer.New(zap.InfoLevel)
	g, err := NewGateway(context.Background(), cfgWith(""), GatewayOptions{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	pending := func(c *config.Config) []string {
		t.Helper()
		logs.TakeAll()
		if err := g.Reload(c); err != nil {
			t.Fatal(err)
		}
		for _, e := range logs.TakeAll() {
			if e.Message == "config reloaded; some changes take effect only after a restart" {
				v, _ := e.ContextMap()["changes"].([]any)
				var out []string
				for _, x := range v {
					out = append(out, fmt.Sprint(x))
				}
				return out
			}
		}
		return nil
	}
	applied := testutil.ToFloat64(metricReloads.WithLabelValues("applied"))
	if got := pending(cfgWith("127.0.0.1:0")); !slices.Contains(got, "http.listen") {
		t.Fatalf("changed http.listen: pending %q", got)
	}
	if v := testutil.ToFloat64(metricRestartPending); v != 1 {
		t.Errorf("spareline_config_restart_pending %v with http.listen changed, want 1", v)
	}
	if got := pending(cfgWith("")); got != nil {
		t.Fatalf("file put back as it runs: pending %q, want nothing", got)
	}
	if v := testutil.ToFloat64(metricRestartPending); v != 0 {
		t.Errorf("spareline_config_restart_pending %v with the file put back, want 0", v)
	}
	if n := testutil.ToFloat64(metricReloads.WithLabelValues("applied")) - applied; n != 2 {
		t.Errorf("%v reloads counted applied, want 2", n)
	}
	if got := pending(cfgWith("127.0.0.1:0")); !slices.Contains(got, "http.listen") {
		t.Fatalf("changed again: pending %q", got)
	}
	if got := pending(cfgWith("127.0.0.1:0")); !slices.Contains(got, "http.listen") {
		t.Fatalf("the same change reloaded again: pending %q, want it still said", got)
	}
}

// Modems added, removed or changed are applied by a reload (named in the
// "applied" list); going from some modems to none, or from none to some,
// needs a restart and is said to until the file matches what runs again.
func TestReloadAppliesModemChangesButNotNoneToSome(t *testing.T) {
	dir := t.TempDir()
	cfgWith := func(modems ...string) *config.Config {
		t.Helper()
		y := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw } ]
routing: { country_code: "86", preset: cn }
`, dir)
		if len(modems) > 0 {
			y += "modems:\n"
			for _, m := range modems {
				y += fmt.Sprintf("  - { name: %s, device: /dev/spareline-test-%s }\n", m, m)
			}
		}
		c, err := config.Parse([]byte(y), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	noPort := func(ctx context.Context, c modem.Config) (io.ReadWriteCloser, error) {
		return nil, errors.New("no such port")
	}
	core, logs := observer.New(zap.InfoLevel)
	g, err := NewGateway(context.Background(), cfgWith("m1"), GatewayOptions{Log: zap.New(core), ModemOpener: noPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	// reload returns the applied and the restart-pending changes.
	reload := func(c *config.Config) (applied, pending []string) {
		t.Helper()
		logs.TakeAll()
		if err := g.Reload(c); err != nil {
			t.Fatal(err)
		}
		strs := func(v any) []string {
			var out []string
			for _, x := range v.([]any) {
				out = append(out, fmt.Sprint(x))
			}
			return out
		}
		for _, e := range logs.TakeAll() {
			if strings.HasPrefix(e.Message, "config reloaded") {
				m := e.ContextMap()
				if v, ok := m["applied"]; ok {
					applied = strs(v)
				}
				if v, ok := m["changes"]; ok {
					pending = strs(v)
				}
			}
		}
		return applied, pending
	}
	names := func() []string {
		var out []string
		for _, s := range g.Pool.Status() {
			out = append(out, s.Name)
		}
		return out
	}
	applied, pending := reload(cfgWith("m1", "m2"))
	if !slices.Equal(applied, []string{"modem m2 added"}) || pending != nil {
		t.Fatalf("m2 added: applied %q, pending %q", applied, pending)
	}
	if got := names(); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Fatalf("pool after m2 added: %q", got)
	}
	applied, pending = reload(cfgWith())
	if len(pending) != 1 || !strings.HasPrefix(pending[0], "modems") || slices.ContainsFunc(applied, func(s string) bool { return strings.HasPrefix(s, "modem ") }) {
		t.Fatalf("every modem removed: applied %q, pending %q; want a restart said", applied, pending)
	}
	if got := names(); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Fatalf("pool after a restart-only change: %q, want it as it ran", got)
	}
	if v := testutil.ToFloat64(metricRestartPending); v != 1 {
		t.Errorf("spareline_config_restart_pending %v, want 1", v)
	}
	// Back to what runs, less m1: applied, nothing pending.
	applied, pending = reload(cfgWith("m2"))
	if !slices.Equal(applied, []string{"modem m1 removed"}) || pending != nil {
		t.Fatalf("m1 removed: applied %q, pending %q", applied, pending)
	}
	if v := testutil.ToFloat64(metricRestartPending); v != 0 {
		t.Errorf("spareline_config_restart_pending %v, want 0", v)
	}
}

// A gateway started without modems has no modem path: modems added by a
// reload need a restart.
func TestReloadModemsIntoAGatewayWithoutNeedRestart(t *testing.T) {
	dir := t.TempDir()
	base := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw } ]
routing: { country_code: "86", preset: cn }
`, dir)
	parse := func(y string) *config.Config { return parseTestConfig(t, y) }
	core, logs := observer.New(zap.InfoLevel)
	g, err := NewGateway(context.Background(), parse(base), GatewayOptions{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	if err := g.Reload(parse(base + "modems: [ { name: m1, device: /dev/spareline-test-m1 } ]\n")); err != nil {
		t.Fatal(err)
	}
	said := false
	for _, e := range logs.TakeAll() {
		if e.Message == "config reloaded; some changes take effect only after a restart" {
			for _, x := range e.ContextMap()["changes"].([]any) {
				said = said || strings.HasPrefix(fmt.Sprint(x), "modems")
			}
		}
	}
	if !said || g.Pool != nil {
		t.Fatalf("modems added to a gateway without: restart said %v, pool %v", said, g.Pool)
	}
}

// A receive_only carrier (kept for what it sends) is no path for
// messages: with it bound and no other carrier or modem up, /readyz says
// not ready.
func TestReceiveOnlyCarrierIsNoPathForReady(t *testing.T) {
	sim, err := smscsim.Start(smscsim.Options{Name: "shortcode"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg, err := config.Parse([]byte(fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers:
  - { name: shortcode, address: %q, system_id: ent01, password: pw, binds: 1, receive_only: true }
routing: { country_code: "86", preset: "" }
`, t.TempDir(), sim.Addr())), "ro.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg, GatewayOptions{}, "shortcode")
	if err := g.Ready(context.Background()); err == nil {
		t.Fatal("ready with only a receive_only carrier up, which sends nothing")
	}
}

// A reload that adds modems to a gateway started without them and
// redirects a carrier to the modem pool is refused, naming the key: the
// pool comes into service at a restart only, and until then the carrier's
// numbers would be refused. The running config stays as it was.
func TestReloadRedirectToModemsWithoutPoolRefused(t *testing.T) {
	dir := t.TempDir()
	base := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw } ]
routing: { country_code: "86", preset: cn }
`, dir)
	parse := func(y string) *config.Config { return parseTestConfig(t, y) }
	g, err := NewGateway(context.Background(), parse(base), GatewayOptions{Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	withRedirect := strings.Replace(base, "preset: cn }", "preset: cn, redirect: { mobile: \"\" } }", 1) +
		"modems: [ { name: m1, device: /dev/spareline-test-m1 } ]\n"
	err = g.Reload(parse(withRedirect))
	if err == nil || !strings.Contains(err.Error(), "routing.redirect.mobile") {
		t.Fatalf("reload redirecting to modems the process runs without: %v, want refused naming routing.redirect.mobile", err)
	}
	g.mu.Lock()
	to, ok := g.cfg.Routing.Redirect["mobile"]
	g.mu.Unlock()
	if ok {
		t.Fatalf("the refused reload's redirect to %q runs", to)
	}
}

// A refused reload stays shown (the status page, /status.json and
// spareline_config_last_reload_successful 0) until a reload is applied,
// so that the operator sees the fix take and the alert on it ends (an
// independent operator's test: the alert went on for 15 minutes after the
// fixed file was reloaded).
func TestRefusedReloadShownUntilOneIsApplied(t *testing.T) {
	dir := t.TempDir()
	base := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw } ]
routing: { country_code: "86", preset: cn }
`, dir)
	g, err := NewGateway(context.Background(), parseTestConfig(t, base), GatewayOptions{Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(context.Background())
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	shown := func() (ConfigStatus, string, float64) {
		t.Helper()
		_, _, b := httpGet(t, g, "GET", "/status.json")
		var st Status
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		_, _, page := httpGet(t, g, "GET", "/status")
		return st.Config, html.UnescapeString(string(page)), testutil.ToFloat64(metricLastReloadOK)
	}
	if c, page, ok := shown(); !c.LastReloadOK || c.LastReload != nil || strings.Contains(page, `id="reload-alert"`) || ok != 1 {
		t.Fatalf("before any reload: %+v, gauge %v, alert on page %v; want ok, none, 1", c, ok, strings.Contains(page, `id="reload-alert"`))
	}

	g.NoteReloadRefused(errors.New("t.yaml:7: carriers[0].window: must be 1 or more"))
	c, page, ok := shown()
	if c.LastReloadOK || c.LastReload == nil || !strings.Contains(c.LastReloadError, "carriers[0].window") || ok != 0 {
		t.Fatalf("after a refused reload: %+v, gauge %v; want refused, with its error, and 0", c, ok)
	}
	if !strings.Contains(page, `id="reload-alert"`) || !strings.Contains(page, "carriers[0].window: must be 1 or more") {
		t.Fatalf("the status page does not show the refused reload and why:\n%s", page)
	}

	withRestart := strings.Replace(base, `listen: "127.0.0.1:0" }
http`, `listen: "127.0.0.1:1" }
http`, 1) // smpp.listen changed: applied, waiting for a restart
	if err := g.Reload(parseTestConfig(t, withRestart)); err != nil {
		t.Fatal(err)
	}
	c, page, ok = shown()
	if !c.LastReloadOK || c.LastReloadError != "" || ok != 1 || strings.Contains(page, `id="reload-alert"`) {
		t.Fatalf("after an applied reload: %+v, gauge %v; want ok, 1, no alert on the page", c, ok)
	}
	if len(c.RestartPending) != 1 || !strings.Contains(page, `id="restart-pending"`) {
		t.Fatalf("restart pending %v, on the page %v; want the listeners named", c.RestartPending, strings.Contains(page, `id="restart-pending"`))
	}
}

// parseTestConfig parses a test's config text.
func parseTestConfig(t *testing.T, y string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(y), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return c
}
