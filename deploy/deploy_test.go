package deploy

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// metricOpts finds every metric the code defines: the Name of a
// prometheus.{Counter,Gauge,Histogram,Summary}Opts literal.
var metricOpts = regexp.MustCompile(`prometheus\.(Counter|Gauge|Histogram|Summary)Opts\{\s*Name:\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"`)

// sparelineName is a spareline metric (or series) name in a PromQL expression.
var sparelineName = regexp.MustCompile(`\bspareline_[a-zA-Z0-9_:]+`)

// registeredSeries returns every series name the code can expose: metric
// names, plus _bucket, _sum and _count of histograms (and _sum, _count of
// summaries), from the non-test Go files of the module.
func registeredSeries(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == ".git" || n == "testdata" || n == "deploy" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricOpts.FindAllSubmatch(src, -1) {
			kind, name := string(m[1]), string(m[2])
			names[name] = true
			switch kind {
			case "Histogram":
				names[name+"_bucket"] = true
				fallthrough
			case "Summary":
				names[name+"_sum"] = true
				names[name+"_count"] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The scan must see the contract (DESIGN.md), or it is the scan that rotted.
	for _, n := range contract {
		if !names[n] {
			t.Fatalf("the source scan did not find %s; metrics found: %v", n, sorted(names))
		}
	}
	return names
}

// contract is the metrics DESIGN.md promises; the dashboard shows each.
var contract = []string{
	"spareline_carrier_up", "spareline_carrier_binds", "spareline_submits_total",
	"spareline_submit_resp_status_total", "spareline_failovers_total", "spareline_modem_up",
	"spareline_modem_signal_dbm", "spareline_modem_sends_total", "spareline_modem_queue_depth",
	"spareline_receipts_total", "spareline_northbound_sessions", "spareline_submit_latency_seconds",
}

func sorted(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// checkExpr requires every spareline series in expr to be registered, and
// the expression to use at least one metric (a spareline one, or one of
// allowed, which Prometheus itself makes).
func checkExpr(t *testing.T, where, expr string, known map[string]bool, allowed ...string) []string {
	t.Helper()
	used := sparelineName.FindAllString(expr, -1)
	for _, n := range used {
		if !known[n] {
			t.Errorf("%s: %s is not a metric spareline registers (expr %q)", where, n, expr)
		}
	}
	if len(used) == 0 {
		ok := false
		for _, a := range allowed {
			if regexp.MustCompile(`\b` + a + `\b`).MatchString(expr) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s: the expression uses no spareline metric: %q", where, expr)
		}
	}
	return used
}

// The Grafana dashboard is valid JSON of the expected shape and every query
// it makes is on a metric the code registers.
func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	known := registeredSeries(t)
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title         string            `json:"title"`
		UID           string            `json:"uid"`
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || dash.SchemaVersion < 36 {
		t.Errorf("dashboard title %q uid %q schemaVersion %d: want a title, a uid and schemaVersion >= 36", dash.Title, dash.UID, dash.SchemaVersion)
	}
	hasDS := false
	for _, v := range dash.Templating.List {
		if v.Name == "DS_PROMETHEUS" && v.Type == "datasource" {
			hasDS = true
		}
		if v.Definition != "" {
			checkExpr(t, "variable "+v.Name, v.Definition, known)
		}
	}
	if !hasDS {
		t.Error("no datasource variable DS_PROMETHEUS")
	}

	type target struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	}
	type panel struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []target                 `json:"targets"`
		Panels  []json.RawMessage        `json:"panels"` // a collapsed row's
	}
	ids := map[int]string{}
	shown := map[string]bool{}
	var walk func([]json.RawMessage)
	walk = func(list []json.RawMessage) {
		for _, r := range list {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("panel: %v", err)
			}
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
			}
			ids[p.ID] = p.Title
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource is not ${DS_PROMETHEUS}", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				for _, n := range checkExpr(t, "panel "+p.Title+" "+tg.RefID, tg.Expr, known) {
					shown[n] = true
				}
			}
		}
	}
	walk(dash.Panels)
	for _, n := range contract {
		if !shown[n] && !shown[n+"_bucket"] {
			t.Errorf("the dashboard does not show %s (a DESIGN.md contract metric)", n)
		}
	}
	// Beyond the contract, every metric spareline registers has a panel:
	// the docs tell operators to watch them (receipts_unmatched_total at a
	// cut-over, config_reloads_total after a SIGHUP, ...).
	for n := range known {
		if notOnDashboard[n] || strings.HasSuffix(n, "_sum") || strings.HasSuffix(n, "_count") {
			continue
		}
		base := strings.TrimSuffix(n, "_bucket")
		if !shown[n] && !shown[base+"_bucket"] {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
	checkLayout(t, raw)
}

// notOnDashboard are the metrics the dashboard need not show.
var notOnDashboard = map[string]bool{
	"spareline_build_info": true, // a version label, not a measurement
}

// checkLayout requires the top-level panels (rows included) not to overlap
// on Grafana's 24-column grid, so that an added panel does not hide another.
func checkLayout(t *testing.T, raw []byte) {
	t.Helper()
	var dash struct {
		Panels []struct {
			ID      int                      `json:"id"`
			Title   string                   `json:"title"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	for i, a := range dash.Panels {
		for _, b := range dash.Panels[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q %+v and %q %+v overlap", a.Title, ga, b.Title, gb)
			}
		}
	}
}

// The alert rules parse, each is complete (severity, summary, a valid for),
// uses only registered metrics, and is explained in the operator's guide.
func TestDashboardAlertRulesUseRegisteredMetrics(t *testing.T) {
	known := registeredSeries(t)
	raw, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	guide, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("alert name %q empty or repeated", r.Alert)
			}
			seen[r.Alert] = true
			checkExpr(t, "alert "+r.Alert, r.Expr, known, "up")
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			switch r.Labels["severity"] {
			case "critical", "warning":
			default:
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no summary", r.Alert)
			}
			if !bytes.Contains(guide, []byte(r.Alert)) {
				t.Errorf("alert %s is not explained in docs/operations.md", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Error("alerts.yml has no rules")
	}
}

// The alert rules fire in the situations they are meant for, and only
// then: testdata/alerts_test.yml plays series as spareline exposes them
// (counters at 0 from the start) through promtool's rule unit tests. A
// first refused reload alerts, a site without modems has no path to send
// when its carriers are down, and a carrier whose receipts never matched
// (no spareline_receipts_total of its own) alerts on its unmatched ones.
func TestAlertRulesFireWhenMeant(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SPARELINE_REQUIRE_THIRDPARTY") != "" {
			t.Fatal("promtool (Debian package prometheus) is not installed: scripts/deps.sh installs it")
		}
		t.Skip("promtool not installed (scripts/deps.sh installs it)")
	}
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "testdata/alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
