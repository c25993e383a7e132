package bench

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchSoak runs the soak scenario tiny (10 s) and checks that it runs
// and reports sanely: every figure present, every submit accounted for and
// no message lost. Whether a carrier was marked down falsely depends on the
// machine's load: the real run judges it (BENCHMARKS.md).
func TestBenchSoak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // hang detector
	defer cancel()
	var progress bytes.Buffer
	opts := Options{Scenarios: []string{"soak"}, Stores: []string{StoreRedis}, Soak: 10 * time.Second, SoakRate: 60, Seed: 42,
		Dir: t.TempDir(), Progress: &progress}
	rep, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) > 0 {
		t.Fatalf("failures: %v\nprogress:\n%s", rep.Failures, progress.String())
	}
	if !strings.Contains(progress.String(), "seed 42") {
		t.Errorf("the seed is not shown:\n%s", progress.String())
	}
	if len(rep.Phases) != 1 {
		t.Fatalf("%d load phases, want 1", len(rep.Phases))
	}
	p := rep.Phases[0]
	if p.Sent == 0 || p.Sent != p.OK+p.Refused+p.NoAnswer {
		t.Errorf("%d sent but %d ok + %d refused + %d unanswered", p.Sent, p.OK, p.Refused, p.NoAnswer)
	}
	if p.OK > 0 && p.CPUus <= 0 {
		t.Errorf("the soak's load phase reports %v µs of CPU per message", p.CPUus)
	}
	for _, m := range []string{"false downs (carrier marked down while only slow)",
		"messages sent by modem that were submitted during a spike (outside outages)", "platform latency p50",
		"platform latency p99", "platform latency max", "messages lost (answered OK, reached no SMSC and no modem)",
		"possible duplicates (taken more than once)", "true outages detected (marked down)"} {
		res, ok := find(rep, StoreRedis, m)
		if !ok {
			t.Errorf("no figure %q", m)
			continue
		}
		if res.Value < 0 {
			t.Errorf("%s = %v", m, res.Value)
		}
		if strings.HasPrefix(m, "messages lost") && res.Value != 0 {
			t.Errorf("%s = %v: every message answered OK must reach an SMSC or a modem (%s)", m, res.Value, res.Note)
		}
	}
	l50, _ := find(rep, StoreRedis, "platform latency p50")
	l99, _ := find(rep, StoreRedis, "platform latency p99")
	lmax, _ := find(rep, StoreRedis, "platform latency max")
	if !(0 < l50.Value && l50.Value <= l99.Value && l99.Value <= lmax.Value) {
		t.Errorf("latency percentiles out of order: %v %v %v", l50.Value, l99.Value, lmax.Value)
	}
	// One outage per carrier, each either detected or reported as missed.
	for _, c := range carrierNames {
		n := 0
		for _, r := range rep.Results {
			if strings.HasPrefix(r.Metric, "outage of "+c+" ") && (strings.HasSuffix(r.Metric, "to marked down") ||
				strings.HasSuffix(r.Metric, "never marked down")) {
				n++
				if r.Verdict == "" {
					t.Errorf("%s: no verdict", r.Metric)
				}
			}
		}
		if n != 1 {
			t.Errorf("carrier %s: %d outage figures, want 1", c, n)
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
}

// TestSoakPlan: the schedule is the seed's, spikes stay within the bounds
// the scenario promises and clear of the outages.
func TestSoakPlan(t *testing.T) {
	const d = time.Hour
	p := planSoak(d, 7, 800*time.Millisecond, carrierNames)
	if q := planSoak(d, 7, 800*time.Millisecond, carrierNames); !slices.Equal(p.spikes, q.spikes) || !slices.Equal(p.outages, q.outages) {
		t.Fatal("the same seed gave another schedule")
	}
	if q := planSoak(d, 8, 800*time.Millisecond, carrierNames); slices.Equal(p.spikes, q.spikes) {
		t.Fatal("another seed gave the same schedule")
	}
	if len(p.outages) != len(carrierNames) {
		t.Fatalf("%d outages, want one per carrier", len(p.outages))
	}
	perCarrier := map[string]int{}
	for _, s := range p.spikes {
		perCarrier[s.Carrier]++
		if s.Latency < 50*time.Millisecond || s.Latency > 800*time.Millisecond || s.Latency >= soakResponseTimeout {
			t.Errorf("spike %+v: latency outside 50-800 ms", s)
		}
		if l := s.End - s.Start; l < time.Second || l > 5*time.Second {
			t.Errorf("spike %+v: lasts %v, want 1-5 s", s, l)
		}
		for _, o := range p.outages {
			if o.Carrier == s.Carrier && s.End > o.Start-time.Second && s.Start < o.End+soakUpAfter {
				t.Errorf("spike %+v overlaps outage %+v", s, o)
			}
		}
	}
	for _, c := range carrierNames {
		// "Several per minute per carrier".
		if perMin := float64(perCarrier[c]) / d.Minutes(); perMin < 2 || perMin > 10 {
			t.Errorf("carrier %s: %.1f spikes a minute", c, perMin)
		}
	}
}
