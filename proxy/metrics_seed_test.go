package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spareline/spareline/config"
)

// seriesScraped reads /metrics over HTTP: each series, as
// name{label="value",...} (labels sorted by name), and its value.
func seriesScraped(t *testing.T, g *Gateway) map[string]float64 {
	t.Helper()
	code, _, body := httpGet(t, g, "GET", "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
			}
			key += "}"
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out[key] = v
		}
	}
	return out
}

// The series whose label values the config gives are on /metrics at 0
// before their first event, on a fresh gateway and for a carrier, modem
// and account a reload adds: an alert on increase() fires at the first
// event, and one comparing two series finds both. (The collectors are
// process-wide: the names here are this test's own.)
func TestMetricsSeriesExistAtZeroBeforeTheirFirstEvent(t *testing.T) {
	dir := t.TempDir()
	yaml := func(n int) *config.Config {
		y := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: seedacct1, password: secret } ]
carriers:
  - { name: seedco1, address: "127.0.0.1:1", system_id: ent01, password: pw, binds: 1 }
modems:
  - { name: seedm1, device: /dev/spareline-test-seedm1 }
routing: { country_code: "86", preset: cn, prefixes: { "1990": seedco1 } }
`, dir)
		c, err := config.Parse([]byte(y), "seed.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			add := c.Carriers[0]
			add.Name = "seedco2"
			c.Carriers = append(c.Carriers, add)
			c.Routing.Prefixes["1991"] = "seedco2"
			m := c.Modems[0]
			m.Name, m.Device = "seedm2", "/dev/spareline-test-seedm2"
			c.Modems = append(c.Modems, m)
			a := c.Accounts[0]
			a.SystemID = "seedacct2"
			c.Accounts = append(c.Accounts, a)
		}
		return c
	}
	g := startTestGateway(t, yaml(1), GatewayOptions{})
	want := func(carrier, modem, account string) []string {
		w := []string{
			fmt.Sprintf(`spareline_possible_duplicates_total{carrier=%q}`, carrier),
			fmt.Sprintf(`spareline_receipts_requested_total{carrier=%q}`, carrier),
			fmt.Sprintf(`spareline_carrier_bind_recycled_total{carrier=%q}`, carrier),
			fmt.Sprintf(`spareline_carrier_reload_refused{carrier=%q}`, carrier),
			fmt.Sprintf(`spareline_modem_up{modem=%q}`, modem),
			fmt.Sprintf(`spareline_northbound_queries_total{account=%q,command="query_sm",status="ESME_ROK"}`, account),
			fmt.Sprintf(`spareline_northbound_queries_total{account=%q,command="cancel_sm",status="ESME_RCANCELFAIL"}`, account),
		}
		for _, r := range []string{"down", "transient", "timeout", "lost", "receipt"} {
			w = append(w, fmt.Sprintf(`spareline_failovers_total{carrier=%q,reason=%q}`, carrier, r))
		}
		for _, st := range []string{"DELIVRD", "UNDELIV", "EXPIRED", "ENROUTE"} {
			w = append(w, fmt.Sprintf(`spareline_receipts_total{source=%q,stat=%q}`, carrier, st))
		}
		for _, r := range []string{"ok", "error", "timeout", "lost", "down", "throttled"} {
			w = append(w, fmt.Sprintf(`spareline_submits_total{carrier=%q,result=%q}`, carrier, r))
		}
		for _, o := range []string{"held", "passed"} {
			w = append(w, fmt.Sprintf(`spareline_receipts_unmatched_total{carrier=%q,outcome=%q}`, carrier, o))
		}
		for _, b := range []string{"transmitter", "receiver", "transceiver"} {
			w = append(w, fmt.Sprintf(`spareline_northbound_sessions{account=%q,bind=%q}`, account, b))
		}
		for _, r := range []string{"ok", "error", "permanent"} {
			w = append(w, fmt.Sprintf(`spareline_modem_sends_total{modem=%q,result=%q}`, modem, r))
		}
		return w
	}
	check := func(when string, names []string) {
		t.Helper()
		have := seriesScraped(t, g)
		for _, n := range names {
			if v, ok := have[n]; !ok {
				t.Errorf("%s: /metrics lacks %s", when, n)
			} else if v != 0 {
				t.Errorf("%s: %s = %v, want 0", when, n, v)
			}
		}
	}
	check("at start", want("seedco1", "seedm1", "seedacct1"))
	have := seriesScraped(t, g)
	// Without a label of this test's own: other tests in this process may
	// have counted on them already.
	for _, n := range []string{`spareline_config_reloads_total{result="applied"}`, `spareline_config_reloads_total{result="refused"}`,
		`spareline_northbound_binds_total{result="ok"}`, `spareline_northbound_binds_total{result="password"}`,
		`spareline_northbound_binds_total{result="system_id"}`, `spareline_northbound_binds_total{result="address"}`,
		`spareline_northbound_binds_total{result="system_type"}`, `spareline_northbound_binds_total{result="address_range"}`,
		`spareline_modem_path_total{result="sent"}`, `spareline_modem_path_total{result="expired"}`,
		`spareline_modem_path_total{result="returned"}`, `spareline_modem_path_total{result="failed"}`,
		`spareline_modem_path_total{result="permanent"}`} {
		if _, ok := have[n]; !ok {
			t.Errorf("at start: /metrics lacks %s", n)
		}
	}
	if err := g.Reload(yaml(2)); err != nil {
		t.Fatal(err)
	}
	check("after a reload added them", want("seedco2", "seedm2", "seedacct2"))
}
