package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/faultnet"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// The soak scenario (issue 6: "no false downs in a 1-hour soak with latency
// spikes"). Three carriers, each behind a faultnet relay, 2 binds x window
// 64, response_timeout 1s, down_after_timeouts 3, two emulated modems; a
// steady open-loop load (Options.SoakRate, spread evenly over the three
// carriers) for Options.Soak. On each carrier's relay, latency spikes at
// random (seeded by Options.Seed, printed): 50 ms to Options.SoakSpikeMax
// (default 800 ms) on the answers
// (faultnet SetLatency downstream, below response_timeout), lasting 1-5 s,
// 3-15 s apart (about five a minute per carrier): an SMSC that is slow but
// alive. At a known moment (Soak x (i+1)/4 for carrier i) one real outage
// per carrier: its SMSC stops answering submits for soakOutage. Spikes keep
// clear of the outages, so that every down is either true or false.
//
// Every message carries its sequence number ("soak N"); the simulators and
// the modems record the numbers they took, so that lost messages (answered
// OK to the platform, taken by neither) and possible duplicates (taken more
// than once) are counted per message. Carrier state changes come from the
// gateway's Health.OnChange.

const (
	soakResponseTimeout = time.Second
	soakUpAfter         = 5 * time.Second
	soakYAML            = "failover: { down_after_timeouts: 3, up_after: 5s, on_unknown: resend }\n"
)

// soakSpike is one injected latency spike.
type soakSpike struct {
	Carrier    string
	Start, End time.Duration // since the load started
	Latency    time.Duration
}

// soakOutage is one injected outage and what the gateway made of it.
type soakOutage struct {
	Carrier    string
	Start, End time.Duration
}

// soakPlan is the schedule of one soak: spikes and outages per carrier.
type soakPlan struct {
	spikes  []soakSpike
	outages []soakOutage
}

// soakOutageLen is how long each carrier stays silent: long enough for the
// detection (response_timeout and three timeouts), short for a short soak.
func soakOutageLen(d time.Duration) time.Duration {
	return min(5*time.Second, max(2*time.Second, d/8))
}

// planSoak draws the schedule for a soak of length d from seed.
func planSoak(d time.Duration, seed int64, spikeMax time.Duration, carriers []string) soakPlan {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5EED))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	var p soakPlan
	olen := soakOutageLen(d)
	for i, name := range carriers {
		o := soakOutage{Carrier: name, Start: d * time.Duration(i+1) / 4}
		o.End = o.Start + olen
		p.outages = append(p.outages, o)
		// Keep spikes out of [outage - 1s, outage end + probation + 2s).
		quietFrom, quietTo := o.Start-time.Second, o.End+soakUpAfter+2*time.Second
		t := between(0, 5*time.Second)
		for t < d {
			s := soakSpike{Carrier: name, Start: t, Latency: between(50*time.Millisecond, max(spikeMax, 50*time.Millisecond))}
			s.End = t + between(time.Second, 5*time.Second)
			if s.End > quietFrom && s.Start < quietTo {
				t = quietTo + between(0, 3*time.Second)
				continue
			}
			p.spikes = append(p.spikes, s)
			t = s.End + between(3*time.Second, 15*time.Second)
		}
	}
	return p
}

// SoakLog is the soak scenario's detail in the JSON report: the seed, the
// injected faults and every carrier state change, times in seconds since
// the load started.
type SoakLog struct {
	Seed    int64           `json:"seed"`
	Spikes  []SoakLogSpike  `json:"spikes"`
	Outages []SoakLogSpike  `json:"outages"`
	Changes []SoakLogChange `json:"state_changes"`
}

// SoakLogSpike is one injected spike (latency on the answers) or outage
// (no answer; LatencyMs 0).
type SoakLogSpike struct {
	Carrier   string  `json:"carrier"`
	Start     float64 `json:"start_s"`
	End       float64 `json:"end_s"`
	LatencyMs float64 `json:"latency_ms,omitempty"`
}

// SoakLogChange is one carrier state change seen by the gateway.
type SoakLogChange struct {
	Carrier string  `json:"carrier"`
	At      float64 `json:"at_s"`
	From    string  `json:"from"`
	To      string  `json:"to"`
	Reason  string  `json:"reason"`
	False   bool    `json:"false_down,omitempty"`
}

// soakEvent is one timed action of the fault driver.
type soakEvent struct {
	at time.Duration
	do func()
}

// stateChange is one carrier state change seen by the gateway's Health.
type stateChange struct {
	Carrier  string
	At       time.Time
	From, To proxy.CarrierState
	Reason   string
}

func (r *runner) soak(ctx context.Context) error {
	o := r.opts
	seed := o.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	plan := planSoak(o.Soak, seed, o.SoakSpikeMax, carrierNames)
	var maxLat time.Duration
	for _, s := range plan.spikes {
		maxLat = max(maxLat, s.Latency)
	}
	r.logf("seed %d (--seed %d repeats it): %d latency spikes (max %v), outages at %v for %v each", seed, seed,
		len(plan.spikes), maxLat, []time.Duration{plan.outages[0].Start, plan.outages[1].Start, plan.outages[2].Start},
		soakOutageLen(o.Soak))

	var chMu sync.Mutex
	var changes []stateChange
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 3, binds: 2, window: 64, responseTimeout: soakResponseTimeout,
		modems: 2, modemSend: 20 * time.Millisecond, failoverYAML: soakYAML, relays: true,
		onHealth: func(carrier string, from, to proxy.CarrierState, reason string) {
			chMu.Lock()
			changes = append(changes, stateChange{Carrier: carrier, At: time.Now(), From: from, To: to, Reason: reason})
			chMu.Unlock()
		}})
	if err != nil {
		return err
	}
	defer e.close()

	// What each simulator took, by message number; silent[i] is carrier
	// i's outage (its SMSC answers no submit_sm).
	capacity := int(o.SoakRate*o.Soak.Seconds()*1.1) + 1000
	taken := make([]atomic.Uint32, capacity)
	silent := make([]atomic.Bool, len(carrierNames))
	for i, name := range carrierNames {
		e.smscs[name].SetBehaviour(func(m smscsim.Message, _ int) smscsim.Reply {
			if silent[i].Load() {
				return smscsim.Reply{Silent: true, NoReceipt: true}
			}
			if n, ok := soakSeq(string(m.ShortMessage)); ok && n < len(taken) {
				taken[n].Add(1)
			}
			return smscsim.Reply{NoReceipt: true}
		})
	}
	fo0 := failoversBy()

	cs, _, err := e.dialRelay(ctx, 3, 128, platform.BindTX)
	if err != nil {
		return err
	}
	defer closeAll(cs)

	// The fault driver: spikes and outages at their planned times.
	var events []soakEvent
	for _, s := range plan.spikes {
		rl := e.relays[s.Carrier]
		events = append(events, soakEvent{s.Start, func() { rl.SetLatency(faultnet.Downstream, s.Latency) }},
			soakEvent{s.End, func() { rl.SetLatency(faultnet.Downstream, 0) }})
	}
	for i, out := range plan.outages {
		events = append(events, soakEvent{out.Start, func() { silent[i].Store(true) }},
			soakEvent{out.End, func() { silent[i].Store(false) }})
	}
	slices.SortStableFunc(events, func(a, b soakEvent) int { return int(a.at - b.at) })

	start := time.Now()
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var driver sync.WaitGroup
	driver.Add(1)
	go func() {
		defer driver.Done()
		for _, ev := range events {
			if ev.at >= o.Soak {
				break
			}
			t := time.NewTimer(time.Until(start.Add(ev.at)))
			select {
			case <-t.C:
				ev.do()
			case <-lctx.Done():
				t.Stop()
				return
			}
		}
	}()
	ld := r.soakLoad(lctx, cs, start, capacity)
	stopLoad()
	driver.Wait()
	for _, rl := range e.relays { // no spike outlives the load
		rl.SetLatency(faultnet.Downstream, 0)
	}
	for i := range silent {
		silent[i].Store(false)
	}
	r.phase("soak load", ld.loadResult)

	// Drain: wait until every message answered OK was taken by an SMSC or a
	// modem (the modem queue empties, or its messages go back to their
	// recovered carrier), at most a minute; what is still missing is lost.
	modemTaken := func() map[int]int {
		got := map[int]int{}
		for _, s := range e.sims {
			for _, m := range s.Sent() {
				if n, ok := soakSeq(m.Text); ok {
					got[n]++
				}
			}
		}
		return got
	}
	unaccounted := func(mt map[int]int) int {
		n := 0
		for i, st := range ld.status {
			if st == soakOK && taken[i].Load() == 0 && mt[i] == 0 {
				n++
			}
		}
		return n
	}
	r.logf("waiting for every accepted message to reach an SMSC or a modem")
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var mt map[int]int
	lost := 0
	for waiting := true; waiting; {
		mt = modemTaken()
		if lost = unaccounted(mt); lost == 0 {
			break
		}
		select {
		case <-wctx.Done():
			waiting = false // what is still unaccounted for is lost
		case <-tick.C:
		}
	}

	// Figures.
	chMu.Lock()
	seen := slices.Clone(changes)
	chMu.Unlock()
	slices.SortFunc(seen, func(a, b stateChange) int { return a.At.Compare(b.At) })
	at := func(t time.Time) time.Duration { return t.Sub(start) }
	// An outage's window: from its start until the carrier is up again
	// (probation passed), or its end plus probation and a margin.
	type window struct{ from, to time.Duration }
	outageWin := map[string]window{}
	for _, out := range plan.outages {
		w := window{out.Start, out.End + soakUpAfter + 2*time.Second}
		for _, c := range seen {
			if c.Carrier == out.Carrier && c.To == proxy.StateUp && at(c.At) > out.End {
				w.to = max(at(c.At), out.End)
				break
			}
		}
		outageWin[out.Carrier] = w
	}
	detail := &SoakLog{Seed: seed}
	for _, s := range plan.spikes {
		detail.Spikes = append(detail.Spikes, SoakLogSpike{Carrier: s.Carrier, Start: s.Start.Seconds(), End: s.End.Seconds(), LatencyMs: ms(s.Latency)})
	}
	for _, o := range plan.outages {
		detail.Outages = append(detail.Outages, SoakLogSpike{Carrier: o.Carrier, Start: o.Start.Seconds(), End: o.End.Seconds()})
	}
	r.mu.Lock()
	r.report.Soak = detail
	r.mu.Unlock()
	falseDowns := 0
	var falseNotes []string
	for _, c := range seen {
		if c.At.Before(start) {
			continue
		}
		detail.Changes = append(detail.Changes, SoakLogChange{Carrier: c.Carrier, At: at(c.At).Seconds(), From: c.From.String(),
			To: c.To.String(), Reason: c.Reason})
		if c.To != proxy.StateDown {
			continue
		}
		if w := outageWin[c.Carrier]; at(c.At) >= w.from && at(c.At) <= w.to {
			continue
		}
		falseDowns++
		detail.Changes[len(detail.Changes)-1].False = true
		if len(falseNotes) < 5 {
			falseNotes = append(falseNotes, fmt.Sprintf("%s at %.1fs (%s)", c.Carrier, at(c.At).Seconds(), c.Reason))
		}
	}
	spikeOf := func(carrier string, t time.Duration) bool {
		for _, s := range plan.spikes {
			// Answers late by the spike's latency still arrive after it.
			if s.Carrier == carrier && t >= s.Start-soakResponseTimeout && t <= s.End+soakResponseTimeout {
				return true
			}
		}
		return false
	}
	var duringSpikes, calm, inOutage, dups, dupsOutside int
	var latOutside, latSpikes []time.Duration // answered OK, submitted outside the outages
	for n, st := range ld.status {
		if st == 0 {
			continue
		}
		carrier := carrierNames[n%len(carrierNames)]
		t := time.Duration(ld.sub[n])
		w := outageWin[carrier]
		inOut := t >= w.from-soakResponseTimeout && t <= w.to
		if st == soakOK && !inOut {
			latOutside = append(latOutside, ld.lat[n])
			if spikeOf(carrier, t) {
				latSpikes = append(latSpikes, ld.lat[n])
			}
		}
		if mt[n] > 0 {
			switch {
			case inOut:
				inOutage++
			case spikeOf(carrier, t):
				duringSpikes++
			default:
				calm++
			}
		}
		if int(taken[n].Load())+mt[n] > 1 {
			dups++
			if !inOut {
				dupsOutside++
			}
		}
	}
	note := fmt.Sprintf("seed %d; %d spikes of 50ms-%v (max %v) on the answers; %d state changes in all", seed, len(plan.spikes),
		o.SoakSpikeMax, maxLat.Round(time.Millisecond), len(seen))
	if len(falseNotes) > 0 {
		note += "; first: " + fmt.Sprint(falseNotes)
	}
	r.add(Result{Metric: "false downs (carrier marked down while only slow)", Value: float64(falseDowns), Unit: "count",
		Target: ptr(0), Note: note})
	floor := (soakResponseTimeout + time.Second).Seconds()
	detected, outages := 0, 0
	for _, out := range plan.outages {
		if out.Start >= o.Soak {
			continue
		}
		outages++
		var down time.Duration = -1
		for _, c := range seen {
			if c.Carrier == out.Carrier && c.To == proxy.StateDown && at(c.At) >= out.Start && at(c.At) <= outageWin[out.Carrier].to {
				down = at(c.At) - out.Start
				break
			}
		}
		var modem time.Duration = -1
		for _, s := range e.sims {
			for _, m := range s.Sent() {
				if n, ok := soakSeq(m.Text); ok && carrierNames[n%len(carrierNames)] == out.Carrier && at(m.At) >= out.Start {
					if d := at(m.At) - out.Start; modem < 0 || d < modem {
						modem = d
					}
				}
			}
		}
		if down < 0 {
			// Not detected: the value is a lower bound (until now).
			r.add(Result{Metric: fmt.Sprintf("outage of %s at %.0fs: never marked down", out.Carrier, out.Start.Seconds()),
				Value: (time.Since(start) - out.Start).Seconds(), Unit: "s", Floor: ptr(floor), Target: ptr(2),
				Note: fmt.Sprintf("silent for %v and never marked down", out.End-out.Start)})
		} else {
			detected++
			r.add(Result{Metric: fmt.Sprintf("outage of %s at %.0fs: to marked down", out.Carrier, out.Start.Seconds()),
				Value: down.Seconds(), Unit: "s", Floor: ptr(floor), Target: ptr(2),
				Note: fmt.Sprintf("silent for %v, up again after %.1fs", out.End-out.Start, (outageWin[out.Carrier].to - out.Start).Seconds())})
		}
		if modem >= 0 {
			r.add(Result{Metric: fmt.Sprintf("outage of %s at %.0fs: to first modem send", out.Carrier, out.Start.Seconds()),
				Value: modem.Seconds(), Unit: "s", Floor: ptr(floor), Target: ptr(2), Note: "modem send time 20ms"})
		}
	}
	r.add(Result{Metric: "true outages detected (marked down)", Value: float64(detected), Unit: "count", Floor: ptr(float64(outages)),
		Higher: true, Note: fmt.Sprintf("of %d outages", outages)})
	r.add(Result{Metric: "messages sent by modem that were submitted during a spike (outside outages)", Value: float64(duringSpikes),
		Unit: "count", Target: ptr(0), Note: fmt.Sprintf("%d more outside spikes and outages, %d during the outages and their probation; failovers by reason %s",
			calm, inOutage, failoverDelta(fo0, failoversBy()))})
	lat := latOf(ld.Lat)
	slices.Sort(latOutside)
	slices.Sort(latSpikes)
	lo, ls := latOf(latOutside), latOf(latSpikes)
	r.add(Result{Metric: "platform latency p50", Value: ms(lat.P50), Unit: "ms",
		Note: fmt.Sprintf("outside the outages %.2f ms; during spikes %.2f ms", ms(lo.P50), ms(ls.P50))})
	r.add(Result{Metric: "platform latency p99", Value: ms(lat.P99), Unit: "ms",
		Note: fmt.Sprintf("outside the outages %.2f ms; during spikes %.2f ms", ms(lo.P99), ms(ls.P99))})
	r.add(Result{Metric: "platform latency max", Value: ms(lat.Max), Unit: "ms",
		Note: fmt.Sprintf("outside the outages %.2f ms; during spikes %.2f ms (%d answers)", ms(lo.Max), ms(ls.Max), len(latSpikes))})
	r.add(Result{Metric: "messages lost (answered OK, reached no SMSC and no modem)", Value: float64(lost), Unit: "count",
		Floor: ptr(0), Note: fmt.Sprintf("%d answered OK, %d refused, %d unanswered", ld.OK, ld.Refused, ld.NoAnswer)})
	r.add(Result{Metric: "possible duplicates (taken more than once)", Value: float64(dups), Unit: "count",
		Note: fmt.Sprintf("%d outside the outages; on_unknown: resend sends a timed-out submit again by modem", dupsOutside)})
	return nil
}

// Per message outcome of the soak load.
const (
	soakNone uint8 = iota
	soakOK
	soakRefused
	soakNoAnswer
)

// soakRun is the soak load's record: per message number its submit time
// (since start) and outcome.
type soakRun struct {
	loadResult
	sub    []int64
	lat    []time.Duration // submit to answer, for answers with status 0
	status []uint8
}

// soakLoad offers Options.SoakRate msg/s open loop for Options.Soak, message
// n to carrier n mod 3 with the text "soak n", over every client's window.
func (r *runner) soakLoad(ctx context.Context, cs []*platform.Client, start time.Time, capacity int) soakRun {
	o := r.opts
	run := soakRun{sub: make([]int64, capacity), lat: make([]time.Duration, capacity), status: make([]uint8, capacity)}
	cpu0, rcpu0 := ProcessCPU(), PidCPU(r.redisPid())
	var sent, ok, refused, noAnswer atomic.Int64
	var lastAnswer atomic.Int64
	var wg sync.WaitGroup
	jobs := make(chan int)
	for _, c := range cs {
		for range 128 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range jobs {
					sm := platform.Submit{Src: "10690001", Dest: samples[carrierNames[n%len(carrierNames)]], Text: "soak " + strconv.Itoa(n)}
					sent.Add(1)
					run.sub[n] = int64(time.Since(start))
					res, err := c.Submit(ctx, sm)
					switch {
					case err != nil:
						noAnswer.Add(1)
						run.status[n] = soakNoAnswer
					case res.Status != 0:
						refused.Add(1)
						run.status[n] = soakRefused
					default:
						ok.Add(1)
						run.status[n] = soakOK
						run.lat[n] = res.Answered.Sub(res.Sent)
						lastAnswer.Store(res.Answered.UnixNano())
					}
				}
			}()
		}
	}
	stop := r.progress("soak", func() (int64, int64) { return sent.Load(), ok.Load() })
	deadline := start.Add(o.Soak)
	var late time.Duration
	for n := 0; n < capacity; n++ {
		now := time.Now()
		if !now.Before(deadline) || ctx.Err() != nil {
			break
		}
		due := start.Add(time.Duration(float64(n) / o.SoakRate * float64(time.Second)))
		if d := due.Sub(now); d > 0 {
			time.Sleep(d)
		} else if -d > late {
			late = -d
		}
		select {
		case jobs <- n:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	stop()
	run.Sent, run.OK, run.Refused, run.NoAnswer, run.Late = int(sent.Load()), int(ok.Load()), int(refused.Load()), int(noAnswer.Load()), late
	run.CPU = ProcessCPU() - cpu0
	if rcpu0 > 0 {
		run.RedisCPU = PidCPU(r.redisPid()) - rcpu0
	}
	if la := lastAnswer.Load(); la > 0 {
		run.Elapsed = time.Unix(0, la).Sub(start)
	}
	for n, st := range run.status {
		if st == soakOK {
			run.Lat = append(run.Lat, run.lat[n])
		}
	}
	slices.Sort(run.Lat)
	return run
}

// soakSeq reads the message number from a soak text ("soak 123").
func soakSeq(text string) (int, bool) {
	const prefix = "soak "
	if len(text) <= len(prefix) || text[:len(prefix)] != prefix {
		return 0, false
	}
	n, err := strconv.Atoi(text[len(prefix):])
	return n, err == nil && n >= 0
}

// failoversBy reads spareline_failovers_total by carrier/reason.
func failoversBy() map[string]float64 {
	out := map[string]float64{}
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "spareline_failovers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, lp := range m.GetLabel() {
				if key != "" {
					key += "/"
				}
				key += lp.GetValue()
			}
			out[key] += m.GetCounter().GetValue()
		}
	}
	return out
}

// failoverDelta prints the counters that grew between a and b.
func failoverDelta(a, b map[string]float64) string {
	keys := make([]string, 0, len(b))
	for k := range b {
		if b[k] > a[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	s := "{"
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s: %.0f", k, b[k]-a[k])
	}
	return s + "}"
}
