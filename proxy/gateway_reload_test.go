package proxy

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
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
