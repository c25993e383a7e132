package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// directRelay runs the same load twice in env e: n clients with window each,
// bound straight to the simulators, then bound to the gateway.
func (r *runner) directRelay(ctx context.Context, e *env, n, window int, rate float64, receipts bool, label string) (dir, rel loadResult, err error) {
	bt := platform.BindTX
	if receipts {
		bt = platform.BindTRX
	}
	dcs, ddests, err := e.dialDirect(ctx, n, window, bt)
	if err != nil {
		return dir, rel, fmt.Errorf("direct bind: %w", err)
	}
	dir = r.runLoad(ctx, loadSpec{clients: dcs, dests: ddests, window: window, rate: rate, max: r.opts.Messages, dur: r.opts.Duration,
		receipt: receipts, label: "direct " + label})
	if receipts { // let the receipts arrive before unbinding
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		for _, s := range e.smscs {
			_ = s.WaitUntil(wctx, func(st smscsim.Stats) bool {
				return st.ReceiptsHeld == 0 && st.ReceiptsAcked+st.ReceiptsNack >= st.ReceiptsSent
			})
		}
		cancel()
	}
	closeAll(dcs)
	r.phase("direct "+label, dir)

	rcs, rdests, err := e.dialRelay(ctx, n, window, bt)
	if err != nil {
		return dir, rel, fmt.Errorf("platform bind to spareline: %w", err)
	}
	rel = r.runLoad(ctx, loadSpec{clients: rcs, dests: rdests, window: window, rate: rate, max: r.opts.Messages, dur: r.opts.Duration,
		receipt: receipts, label: "relayed " + label})
	closeAll(rcs)
	r.phase("relayed "+label, rel)
	if dir.OK == 0 || rel.OK == 0 {
		return dir, rel, fmt.Errorf("%s: no message accepted (direct %d, relayed %d of %d/%d)", label, dir.OK, rel.OK, dir.Sent, rel.Sent)
	}
	return dir, rel, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// realistic: 3 carriers x 2 binds x window 10, simulators holding answers
// to SMSCRate per bind, receipts on, open-loop offered rates.
func (r *runner) realistic(ctx context.Context) error {
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 3, binds: 2, window: 10,
		smsc: smscsim.Options{MaxTPSPerBind: r.opts.SMSCRate, Throttle: smscsim.ThrottleDelay}})
	if err != nil {
		return err
	}
	defer e.close()
	for _, rate := range r.opts.RealisticRates {
		dir, rel, err := r.directRelay(ctx, e, 6, 10, rate, true, fmt.Sprintf("%.0f msg/s offered", rate))
		if err != nil {
			return err
		}
		r.add(Result{Metric: fmt.Sprintf("relayed/direct delivered rate, %.0f msg/s offered", rate), Value: ratio(rel.Rate(), dir.Rate()),
			Unit: "ratio", Floor: ptr(0.99), Higher: true,
			Note: fmt.Sprintf("direct %.0f msg/s, relayed %.0f msg/s; cap %d binds x %d msg/s", dir.Rate(), rel.Rate(), 6, r.opts.SMSCRate)})
	}
	return nil
}

// saturation: one carrier, 4 binds x window 64, unlimited simulator, closed loop.
func (r *runner) saturation(ctx context.Context) error {
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 1, binds: 4, window: 64})
	if err != nil {
		return err
	}
	defer e.close()
	dir, rel, err := r.directRelay(ctx, e, 4, 64, 0, false, "closed loop")
	if err != nil {
		return err
	}
	// The ceiling of any relay here: the same load through a relay that only
	// copies bytes (copyrelay.go).
	cp, err := startCopyRelay(e.smscs[e.names[0]].Addr())
	if err != nil {
		return err
	}
	defer cp.close()
	ccs, cdests, err := e.dialVia(ctx, cp.addr(), 4, 64, platform.BindTX)
	if err != nil {
		return fmt.Errorf("bind through the copy relay: %w", err)
	}
	cpy := r.runLoad(ctx, loadSpec{clients: ccs, dests: cdests, window: 64, max: r.opts.Messages, dur: r.opts.Duration,
		label: "byte-copy relay closed loop"})
	closeAll(ccs)
	r.phase("byte-copy relay closed loop", cpy)
	r.add(Result{Metric: "relayed/direct rate at saturation", Value: ratio(rel.Rate(), dir.Rate()), Unit: "ratio",
		Floor: ptr(0.6), Target: ptr(0.8), Higher: true,
		Note: fmt.Sprintf("direct %.0f msg/s; a byte-copy relay gets %.2f", dir.Rate(), ratio(cpy.Rate(), dir.Rate()))})
	r.add(Result{Metric: "byte-copy relay/direct rate at saturation (the ceiling of any relay here)",
		Value: ratio(cpy.Rate(), dir.Rate()), Unit: "ratio", Higher: true,
		Note: fmt.Sprintf("%.0f msg/s; parses nothing, stores nothing", cpy.Rate())})
	res := Result{Metric: "relayed rate at saturation", Value: rel.Rate(), Unit: "msg/s", Higher: true}
	if r.store == StoreRedis {
		res.Floor, res.Target = ptr(3000), ptr(15000)
	}
	r.add(res)
	return nil
}

// latency: one bind, window 10, LatencyRate offered open loop.
func (r *runner) latency(ctx context.Context) error {
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 1, binds: 1, window: 10})
	if err != nil {
		return err
	}
	defer e.close()
	dir, rel, err := r.directRelay(ctx, e, 1, 10, r.opts.LatencyRate, false, fmt.Sprintf("%.0f msg/s offered", r.opts.LatencyRate))
	if err != nil {
		return err
	}
	dl, rl := latOf(dir.Lat), latOf(rel.Lat)
	r.add(Result{Metric: "added latency p50", Value: ms(rl.P50 - dl.P50), Unit: "ms", Floor: ptr(1), Target: ptr(0.25),
		Note: fmt.Sprintf("direct %.3f ms, relayed %.3f ms", ms(dl.P50), ms(rl.P50))})
	r.add(Result{Metric: "added latency p99", Value: ms(rl.P99 - dl.P99), Unit: "ms", Floor: ptr(5), Target: ptr(1),
		Note: fmt.Sprintf("direct %.3f ms, relayed %.3f ms", ms(dl.P99), ms(rl.P99))})
	r.add(Result{Metric: "added latency max", Value: ms(rl.Max - dl.Max), Unit: "ms",
		Note: fmt.Sprintf("direct %.3f ms, relayed %.3f ms", ms(dl.Max), ms(rl.Max))})
	return nil
}

// failoverYAML: a silent carrier is judged after one response timeout.
const failoverYAML = "failover: { down_after_timeouts: 3, up_after: 60s, on_unknown: resend }\n"

// failover: the time from a carrier failing under load to the first message
// queued for the modems and to the first message sent by a modem; once with
// the connections closed (Stop), once with the carrier silent.
func (r *runner) failover(ctx context.Context) error {
	cases := []struct {
		name  string
		fault func(*smscsim.SMSC)
	}{
		{"connections closed", (*smscsim.SMSC).Stop},
		{"carrier silent", func(s *smscsim.SMSC) { s.SetSilent(true) }},
	}
	for _, c := range cases {
		if err := r.failoverCase(ctx, c.name, c.fault); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func (r *runner) failoverCase(ctx context.Context, name string, fault func(*smscsim.SMSC)) error {
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 3, binds: 1, window: 10, responseTimeout: time.Second,
		modems: 2, modemSend: 20 * time.Millisecond, failoverYAML: failoverYAML})
	if err != nil {
		return err
	}
	defer e.close()
	cs, _, err := e.dialRelay(ctx, 1, 10, platform.BindTX)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	mobile := e.smscs["mobile"]
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.runLoad(lctx, loadSpec{clients: cs, dests: []string{samples["mobile"]}, window: 10, rate: 200, dur: time.Minute,
			label: "load on mobile (" + name + ")"})
	}()
	defer func() { stopLoad(); wg.Wait() }()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := mobile.WaitUntil(wctx, func(st smscsim.Stats) bool { return st.Submits >= 100 }); err != nil {
		return fmt.Errorf("load did not reach the carrier: %w", err)
	}
	f0, m0 := failovers(), e.modemSent()
	t0 := time.Now()
	fault(mobile)
	var queued time.Time
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for queued.IsZero() || e.modemSent() == m0 {
		if queued.IsZero() && failovers() > f0 {
			queued = time.Now()
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("after %v: queued for the modems: %v, sent by modem: %d", time.Since(t0).Round(time.Millisecond),
				!queued.IsZero(), e.modemSent()-m0)
		case <-tick.C:
		}
	}
	var first time.Time
	for _, s := range e.sims {
		for _, m := range s.Sent() {
			if m.At.After(t0) && (first.IsZero() || m.At.Before(first)) {
				first = m.At
			}
		}
	}
	r.add(Result{Metric: name + ": to first message queued for the modems", Value: queued.Sub(t0).Seconds(), Unit: "s", Target: ptr(2)})
	r.add(Result{Metric: name + ": to first message sent by modem", Value: first.Sub(t0).Seconds(), Unit: "s", Target: ptr(2),
		Note: "modem send time 20ms"})
	return nil
}

// modems: a backlog for N modems (carrier down from the start); the share
// of the nominal capacity N x min(per-minute/60, 1/send) used during
// ModemWindow after the first send, and the idle gap between sends that
// neither the send time nor the per-minute budget explains.
func (r *runner) modems(ctx context.Context) error {
	o := r.opts
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 1, downAtStart: true, modems: o.Modems, modemSend: o.ModemSend,
		modemPerMinute: o.ModemPerMinute})
	if err != nil {
		return err
	}
	defer e.close()
	perModem := min(float64(o.ModemPerMinute)/60, 1/o.ModemSend.Seconds())
	nominal := float64(o.Modems) * perModem
	backlog := int(nominal*o.ModemWindow.Seconds()*1.2) + 2*o.Modems
	cs, dests, err := e.dialRelay(ctx, 1, 64, platform.BindTX)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	l := r.runLoad(ctx, loadSpec{clients: cs, dests: dests, window: 64, max: backlog, dur: 5 * time.Minute, label: "backlog"})
	r.phase("backlog for the modems", l)
	if l.OK == 0 {
		return fmt.Errorf("no message of the backlog accepted (%d sent)", l.Sent)
	}
	wctx, cancel := context.WithTimeout(ctx, o.ModemWindow+time.Minute)
	defer cancel()
	var firsts []time.Time
	for _, s := range e.sims {
		sent, err := s.WaitSent(wctx, 1)
		if err != nil {
			return fmt.Errorf("a modem sent nothing: %w", err)
		}
		firsts = append(firsts, sent[0].At)
	}
	first := slices.MinFunc(firsts, func(a, b time.Time) int { return a.Compare(b) })
	end := first.Add(o.ModemWindow)
	r.logf("measuring the modems for %v", o.ModemWindow)
	stop := r.progress("modems", func() (int64, int64) { n := int64(e.modemSent()); return n, n })
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
	stop()
	depth, _, _ := e.gw.Store.ModemQueue(ctx)
	count := 0
	var gaps []time.Duration
	for _, s := range e.sims {
		var at []time.Time
		for _, m := range s.Sent() {
			if !m.At.Before(first) && m.At.Before(end) {
				at = append(at, m.At)
			}
		}
		count += len(at)
		for k := 1; k < len(at); k++ {
			allowed := at[k-1]
			if b := k - o.ModemPerMinute; b >= 0 && at[b].Add(time.Minute).After(allowed) {
				allowed = at[b].Add(time.Minute)
			}
			gaps = append(gaps, max(0, at[k].Add(-o.ModemSend).Sub(allowed)))
		}
	}
	slices.Sort(gaps)
	note := fmt.Sprintf("%d modems, send %v, %d/min each: nominal %.2f msg/s; %d sent in %v; queue left %d", o.Modems, o.ModemSend,
		o.ModemPerMinute, nominal, count, o.ModemWindow, depth)
	if depth == 0 {
		note += " (the backlog ran out: the figure is a lower bound)"
	}
	r.add(Result{Metric: "modem pool rate / nominal under a backlog", Value: float64(count) / (nominal * o.ModemWindow.Seconds()),
		Unit: "ratio", Floor: ptr(0.9), Target: ptr(0.98), Higher: true, Note: note})
	r.add(Result{Metric: "idle gap p99 between a modem's sends (beyond send time and budget)", Value: ms(percentile(gaps, 0.99)),
		Unit: "ms", Note: fmt.Sprintf("%d gaps, max %.1f ms", len(gaps), ms(percentile(gaps, 1)))})
	return nil
}

// memory: Redis bytes and Go heap per message held in flight, and resident
// memory per 1,000 bound platform sessions (first store only: the sessions
// do not touch the store).
func (r *runner) memory(ctx context.Context) error {
	o := r.opts
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 1, binds: 2, window: 64})
	if err != nil {
		return err
	}
	defer e.close()
	// The carrier accepts and never sends the receipt: each message keeps
	// its record and carrier id index entry until the store's TTL.
	e.smscs["mobile"].SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{NoReceipt: true} })
	cs, _, err := e.dialRelay(ctx, 2, 64, platform.BindTX)
	if err != nil {
		return err
	}
	defer closeAll(cs)
	dests := []string{samples["mobile"], samples["mobile"]}
	// A few messages first, so that one-time allocations are not counted.
	r.runLoad(ctx, loadSpec{clients: cs, dests: dests, window: 64, max: 200, receipt: true, label: "warm-up"})
	heap0 := heapAfterGC()
	var used0 int64
	if e.redis != nil {
		if used0, err = e.redisUsedMemory(ctx); err != nil {
			return err
		}
	}
	l := r.runLoad(ctx, loadSpec{clients: cs, dests: dests, window: 64, max: o.Backlog, dur: 5 * time.Minute, receipt: true,
		label: "backlog"})
	r.phase("backlog held in flight", l)
	if l.OK == 0 {
		return errors.New("no message of the backlog accepted")
	}
	heap1 := heapAfterGC()
	if e.redis != nil {
		used1, err := e.redisUsedMemory(ctx)
		if err != nil {
			return err
		}
		r.add(Result{Metric: "Redis used_memory per message in flight", Value: float64(used1-used0) / float64(l.OK), Unit: "bytes",
			Note: fmt.Sprintf("%d messages", l.OK)})
	}
	r.add(Result{Metric: "Go heap per message in flight", Value: float64(heap1-heap0) / float64(l.OK), Unit: "bytes",
		Note: fmt.Sprintf("HeapAlloc after GC, %d messages", l.OK)})
	if r.store != o.Stores[0] {
		return nil
	}
	return r.sessions(ctx, e)
}

// drain: the platform's receiver is away while Backlog messages get their
// receipts, which the gateway holds; then it binds, and the figure is how
// fast the held receipts reach it (the catching up after a platform
// outage at 3 a.m.).
func (r *runner) drain(ctx context.Context) error {
	o := r.opts
	e, err := r.startEnv(ctx, envSpec{store: r.store, carriers: 1, binds: 2, window: 64})
	if err != nil {
		return err
	}
	defer e.close()
	cs, _, err := e.dialRelay(ctx, 2, 64, platform.BindTX) // no receiver bound: the receipts are held
	if err != nil {
		return err
	}
	defer closeAll(cs)
	dests := []string{samples["mobile"], samples["mobile"]}
	l := r.runLoad(ctx, loadSpec{clients: cs, dests: dests, window: 64, max: o.Backlog, dur: 5 * time.Minute, receipt: true,
		label: "backlog"})
	r.phase("submits, receipts held", l)
	if l.OK == 0 {
		return errors.New("no message of the backlog accepted")
	}
	held := 0
	stop := r.progress("receipts held", func() (int64, int64) { return int64(l.OK), int64(held) })
	tick := time.NewTicker(20 * time.Millisecond) // the store's count: there is no event to await
	for held < l.OK {
		n, err := e.gw.Store.CountDeliveries(ctx, "platform")
		if err != nil {
			stop()
			tick.Stop()
			return err
		}
		held = n
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	stop()
	tick.Stop()
	if held < l.OK {
		return fmt.Errorf("%d of %d receipts held", held, l.OK)
	}

	cpu0, rcpu0 := ProcessCPU(), PidCPU(r.redisPid())
	start := time.Now()
	rx, _, err := e.dialRelay(ctx, 1, 64, platform.BindRX)
	if err != nil {
		return err
	}
	defer closeAll(rx)
	got := 0
	// Each receipt's "latency" is its arrival since the bind: p50 is when
	// half the backlog was in, max when all of it was.
	since := make([]time.Duration, 0, held)
	stop = r.progress("held receipts delivered", func() (int64, int64) { return int64(held), int64(got) })
	limit := time.NewTimer(5 * time.Minute)
	defer limit.Stop()
wait:
	for got < held {
		select {
		case _, ok := <-rx[0].Receipts():
			if !ok {
				break wait
			}
			got++
			since = append(since, time.Since(start))
		case <-limit.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	stop()
	el := time.Since(start)
	d := loadResult{Sent: held, OK: got, NoAnswer: held - got, Elapsed: el, Lat: since, CPU: ProcessCPU() - cpu0}
	if r.redisPid() != 0 {
		d.RedisCPU = PidCPU(r.redisPid()) - rcpu0
	}
	p := r.phase("held receipts delivered", d)
	if got < held {
		return fmt.Errorf("%d of %d held receipts delivered", got, held)
	}
	note := fmt.Sprintf("%d receipts held; %.0f µs CPU per receipt", held, p.CPUus)
	if p.RedisCPUus > 0 {
		note += fmt.Sprintf(" + redis-server %.0f", p.RedisCPUus)
	}
	r.add(Result{Metric: "held receipts delivered per second once the receiver binds", Value: float64(got) / el.Seconds(),
		Unit: "msg/s", Note: note})
	return nil
}

func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// sessions binds Options.Sessions platform sessions and reports the growth
// of resident memory and heap, both ends (gateway and clients) included.
func (r *runner) sessions(ctx context.Context, e *env) error {
	n := r.opts.Sessions
	if err := raiseNoFile(uint64(2*n + 256)); err != nil {
		return err
	}
	heap0 := heapAfterGC()
	rss0, err := vmRSS()
	if err != nil {
		return err
	}
	clients := make([]*platform.Client, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	stop := r.progress("sessions", func() (int64, int64) { return int64(n), int64(n - len(sem)) })
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := platform.Dial(ctx, e.gw.SMPPAddr().String(), "platform", "secret",
				platform.Options{BindType: platform.BindTRX, Window: 10, NoHistory: true})
			if err != nil {
				errs <- err
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	stop()
	defer func() {
		var cw sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				cw.Add(1)
				go func() { defer cw.Done(); _ = c.Close() }()
			}
		}
		cw.Wait()
	}()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("binding %d sessions: %w", n, err)
	}
	heap1 := heapAfterGC()
	rss1, err := vmRSS()
	if err != nil {
		return err
	}
	if f := r.opts.HeapProfile; f != "" {
		if err := writeHeapProfile(f); err != nil {
			return err
		}
	}
	r.add(Result{Metric: "resident memory per 1,000 platform sessions", Value: float64(rss1-rss0) / float64(n) * 1000 / (1 << 20),
		Unit: "MiB", Note: fmt.Sprintf("VmRSS delta for %d sessions, gateway and client ends together; heap %.1f KiB per session",
			n, float64(heap1-heap0)/float64(n)/1024)})
	return nil
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least want (up to the
// hard limit).
func raiseNoFile(want uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return nil
	}
	if lim.Max < want {
		return fmt.Errorf("open files limit %d (hard) is below the %d the sessions need: raise it (ulimit -Hn) or lower --sessions", lim.Max, want)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	return nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("heap profile: %w", err)
	}
	return f.Close()
}
