package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// tiny is a run small enough for a test: every scenario, both stores, a few
// hundred messages, a one-second modem window.
func tiny(scenario string) Options {
	return Options{
		Scenarios: []string{scenario}, Stores: []string{StoreRedis, StoreBolt},
		Messages: 200, Duration: 20 * time.Second, RealisticRates: []float64{300}, SMSCRate: 100, LatencyRate: 200,
		Modems: 2, ModemSend: 5 * time.Millisecond, ModemPerMinute: 100000, ModemWindow: time.Second,
		Backlog: 300, Sessions: 20,
	}
}

// wantMetrics are the headline figures each scenario must produce per store
// (modems: one store; memory: the sessions figure only on the first store).
var wantMetrics = map[string][]string{
	"realistic":  {"relayed/direct delivered rate, 300 msg/s offered"},
	"saturation": {"relayed/direct rate at saturation", "relayed rate at saturation"},
	"latency":    {"added latency p50", "added latency p99", "added latency max"},
	"failover": {"connections closed: to first message queued for the modems", "connections closed: to first message sent by modem",
		"carrier silent: to first message queued for the modems", "carrier silent: to first message sent by modem"},
	"modems": {"modem pool rate / nominal under a backlog", "idle gap p99 between a modem's sends (beyond send time and budget)"},
	"memory": {"Go heap per message in flight"},
	"drain":  {"held receipts delivered per second once the receiver binds"},
}

// TestBenchSmoke runs every scenario tiny and checks that the tool works and
// its figures are sane: every message accounted for, percentiles ordered,
// every expected figure present and finite. No figure is judged against a
// speed: speed belongs to the real run (BENCHMARKS.md).
func TestBenchSmoke(t *testing.T) {
	for _, scen := range Scenarios {
		t.Run(scen, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var progress bytes.Buffer
			opts := tiny(scen)
			opts.Dir = t.TempDir()
			opts.Progress = &progress
			rep, err := Run(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Failures) > 0 {
				t.Fatalf("failures: %v\nprogress:\n%s", rep.Failures, progress.String())
			}
			checkPhases(t, rep)
			stores := opts.Stores
			if scen == "modems" {
				stores = stores[:1]
			}
			for _, st := range stores {
				want := wantMetrics[scen]
				if scen == "memory" {
					if st == StoreRedis {
						want = append(want, "Redis used_memory per message in flight")
					}
					if st == stores[0] {
						want = append(want, "resident memory per 1,000 platform sessions")
					}
				}
				for _, m := range want {
					res, ok := find(rep, st, m)
					if !ok {
						t.Errorf("%s: no figure %q", st, m)
						continue
					}
					if math.IsNaN(res.Value) || math.IsInf(res.Value, 0) {
						t.Errorf("%s: %s = %v", st, m, res.Value)
					}
				}
			}
			checkFigures(t, scen, rep)
			if !strings.Contains(progress.String(), "scenario "+scen) {
				t.Errorf("no progress shown:\n%s", progress.String())
			}
			var table, js bytes.Buffer
			if err := rep.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != len(rep.Results) {
				t.Fatalf("JSON does not round-trip: %v", err)
			}
			t.Logf("\n%s", table.String())
		})
	}
}

// checkPhases: every submit is answered or counted unanswered, and the
// throughput and latency phases lose nothing.
func checkPhases(t *testing.T, rep *Report) {
	t.Helper()
	for _, p := range rep.Phases {
		if p.Sent != p.OK+p.Refused+p.NoAnswer {
			t.Errorf("%s/%s %s: %d sent but %d ok + %d refused + %d unanswered", p.Scenario, p.Store, p.Name, p.Sent, p.OK, p.Refused, p.NoAnswer)
		}
		if p.OK == 0 || p.Refused != 0 || p.NoAnswer != 0 {
			t.Errorf("%s/%s %s: %d of %d accepted, %d refused, %d unanswered; want all accepted", p.Scenario, p.Store, p.Name, p.OK, p.Sent,
				p.Refused, p.NoAnswer)
		}
		if !(0 < p.P50ms && p.P50ms <= p.P99ms && p.P99ms <= p.MaxMs) {
			t.Errorf("%s/%s %s: percentiles out of order: p50 %v p99 %v max %v", p.Scenario, p.Store, p.Name, p.P50ms, p.P99ms, p.MaxMs)
		}
	}
}

// checkFigures: values that must hold whatever the machine's speed.
func checkFigures(t *testing.T, scen string, rep *Report) {
	t.Helper()
	for _, r := range rep.Results {
		switch {
		case r.Unit == "ratio" && (r.Value <= 0 || r.Value > 2 && !strings.HasPrefix(r.Metric, "byte-copy")):
			// (The byte-copy relay runs after the direct phase has warmed
			// everything up: on a tiny run it can beat it by far.)
			t.Errorf("%s/%s %s = %v: a ratio of rates between 0 and 2 expected", r.Store, r.Scenario, r.Metric, r.Value)
		case scen == "failover" && r.Value <= 0:
			t.Errorf("%s %s = %v s: the failover cannot precede the fault", r.Store, r.Metric, r.Value)
		case strings.HasPrefix(r.Metric, "Redis used_memory") && r.Value <= 0:
			t.Errorf("%s = %v: the held messages take no Redis memory?", r.Metric, r.Value)
		}
		if (r.Floor != nil || r.Target != nil) && r.Verdict == "" {
			t.Errorf("%s: has a floor or target but no verdict", r.Metric)
		}
	}
	for _, p := range rep.Phases {
		// Every load phase says what it cost; a phase that answered
		// messages cannot have taken no CPU.
		if p.OK > 0 && p.CPUus <= 0 {
			t.Errorf("%s/%s %s: %d answered with %v µs of CPU per message", p.Store, p.Scenario, p.Name, p.OK, p.CPUus)
		}
		if p.Store != StoreRedis && p.RedisCPUus != 0 {
			t.Errorf("%s/%s %s: redis-server CPU %v µs/msg without a redis-server", p.Store, p.Scenario, p.Name, p.RedisCPUus)
		}
	}
	phases := map[string]int{"realistic": 2 * len(rep.Options.RealisticRates), "saturation": 3, "latency": 2}[scen]
	if n := len(rep.Phases); phases > 0 && n != phases*len(rep.Options.Stores) {
		t.Errorf("%d load phases, want %d", n, phases*len(rep.Options.Stores))
	}
}

func find(rep *Report, store, metric string) (Result, bool) {
	for _, r := range rep.Results {
		if r.Store == store && r.Metric == metric {
			return r, true
		}
	}
	return Result{}, false
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{Scenarios: []string{"nope"}}, {Stores: []string{"mysql"}}, {Messages: -1}} {
		if _, err := Run(context.Background(), o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
	if v := verdict(Result{Value: 0.5, Floor: ptr(1), Target: ptr(0.25)}); v != "floor met" {
		t.Errorf("0.5 against floor 1 target 0.25 (lower is better): %q", v)
	}
	if v := verdict(Result{Value: 0.7, Higher: true, Floor: ptr(0.6), Target: ptr(0.8)}); v != "floor met" {
		t.Errorf("0.7 against floor 0.6 target 0.8: %q", v)
	}
	if v := verdict(Result{Value: 2.5, Target: ptr(2)}); v != "target missed" {
		t.Errorf("2.5 s against target 2 s: %q", v)
	}
}
