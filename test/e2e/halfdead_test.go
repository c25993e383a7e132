package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// One of a carrier's two binds goes half-dead: its SMSC node answers
// enquire_link but no submit_sm, while the other bind answers everything
// (window 8, response_timeout 2 s, no modems). Promise: after
// failover.down_after_timeouts (3) timeouts in a row on that bind it is
// recycled (unbound, closed, dialled again), logged and counted
// (spareline_carrier_bind_recycled_total); no submit reaches the dead
// session after that, every later submit is accepted by the healthy bind or
// the new one, each platform submit is answered exactly once, and the
// carrier never goes down (its other bind answered throughout).
func TestHalfDeadCarrierBindIsRecycled(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	e := startEnv(t, "bolt", withHTTP(), withLogTee(core), withCarrierBinds(2, 8))
	smsc := e.smscs["mobile"]
	conns := smsc.BoundConns()
	if len(conns) != 2 {
		t.Fatalf("mobile's SMSC has %d bound connections, want 2", len(conns))
	}
	dead := conns[0]
	bindsBefore := smsc.Stats().Binds
	since := e.gw.Health.Info("mobile").Since
	before := scrape(t, e)
	c := e.dial("platform", "secret", platform.BindTRX)
	smsc.MuteSubmits(dead, true)

	// Load: 20 submits a second until the dead bind is dialled again (the
	// SMSC's count of binds), each answered on a goroutine of its own.
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]uint32{}
	errs := 0
	submit := func(txt string) {
		defer wg.Done()
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: txt})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs++
			return
		}
		if _, dup := statuses[txt]; dup {
			t.Errorf("%s answered twice", txt)
		}
		statuses[txt] = r.Status
	}
	redialled := make(chan error, 1)
	wctx, cancel := context.WithTimeout(e.ctx, 40*time.Second)
	defer cancel()
	go func() {
		redialled <- smsc.WaitUntil(wctx, func(st smscsim.Stats) bool { return st.Binds > bindsBefore })
	}()
	pace := time.NewTicker(50 * time.Millisecond) // the load's rate, not a synchronisation
	defer pace.Stop()
	sent := 0
load:
	for {
		select {
		case err := <-redialled:
			if err != nil {
				deadSubmits := 0
				for _, m := range smsc.Received() {
					if m.Conn == dead {
						deadSubmits++
					}
				}
				t.Fatalf("the half-dead bind was never recycled (%v): %d of %d submits went to it", err, deadSubmits, sent)
			}
			break load
		case <-pace.C:
			wg.Add(1)
			go submit(fmt.Sprintf("load-%d", sent))
			sent++
		}
	}
	wg.Wait()
	if slices.Contains(smsc.BoundConns(), dead) {
		t.Fatal("the half-dead connection is still bound after its bind dialled again")
	}
	onDead := func() (n int) {
		for _, m := range smsc.Received() {
			if m.Conn == dead {
				n++
			}
		}
		return n
	}
	deadSubmits := onDead()
	refused := 0
	for _, st := range statuses {
		if st != 0 {
			refused++
			if st != stSysErr {
				t.Errorf("a submit refused 0x%X, want ESME_RSYSERR (unanswered, no modems)", st)
			}
		}
	}
	if errs != 0 || len(statuses) != sent {
		t.Fatalf("%d submits, %d answered, %d without an answer", sent, len(statuses), errs)
	}
	if refused > deadSubmits || deadSubmits < 3 {
		t.Fatalf("%d submits refused, %d went to the half-dead bind (recycled after 3 timeouts)", refused, deadSubmits)
	}

	// After the recycle: every submit accepted, none on the dead session.
	for i := range 30 {
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprintf("after-%d", i)})
		if err != nil || r.Status != 0 {
			t.Fatalf("submit %d after the recycle: %v 0x%X, want OK", i, err, r.Status)
		}
	}
	if n := onDead(); n != deadSubmits {
		t.Fatalf("%d more submits reached the half-dead session after its recycle", n-deadSubmits)
	}
	if info := e.gw.Health.Info("mobile"); info.State != "up" || !info.Since.Equal(since) {
		t.Fatalf("mobile is %s since %v (was up since %v): the carrier changed state", info.State, info.Since, since)
	}
	if downs := logs.FilterMessage("carrier state changed").FilterField(zap.String("carrier", "mobile")); downs.Len() != 0 {
		t.Fatalf("mobile changed state: %v", downs.All())
	}
	warned := logs.FilterMessageSnippet("answers no submits").FilterField(zap.String("carrier", "mobile")).All()
	if len(warned) != 1 {
		t.Fatalf("%d warnings of the recycle, want 1: %v", len(warned), logs.All())
	}
	if n, _ := warned[0].ContextMap()["timeouts_in_a_row"].(int64); n < 3 {
		t.Fatalf("recycle warning %v: timeouts_in_a_row %d, want at least 3", warned[0].ContextMap(), n)
	}
	if _, ok := warned[0].ContextMap()["bind"]; !ok {
		t.Fatalf("recycle warning %v names no bind", warned[0].ContextMap())
	}
	if d := scrape(t, e).delta(before, "spareline_carrier_bind_recycled_total", "carrier", "mobile"); d != 1 {
		t.Fatalf("spareline_carrier_bind_recycled_total{carrier=mobile} rose by %v, want 1", d)
	}
	if st := e.gw.Health.State("mobile"); st != proxy.StateUp {
		t.Fatalf("mobile is %v", st)
	}
	t.Logf("%d submits under load: %d to the half-dead bind, %d refused (ESME_RSYSERR); 30 after the recycle, all OK", sent, deadSubmits, refused)
}

// A carrier with a single bind goes half-dead: its SMSC node keeps the
// connection and answers enquire_link but no submit_sm (a stuck node behind
// the carrier's balancer; a new connection lands on a healthy one). With
// modems (down_after_timeouts 3, up_after 2 s, response_timeout 2 s).
// Promise: the carrier goes down by timeouts, its traffic goes to the
// modems, and after two probes in a row go unanswered the bind is recycled
// (unbound, dialled again: logged, counted once). Through the recycle the
// carrier stays down (no probation for the bind's return: no flap, nothing
// queued bounces back); the next probe, on the new connection, is answered
// and only that starts the probation, then up. Every platform submit is
// answered OK and reaches exactly one handset (a modem, or the carrier).
func TestHalfDeadOnlyCarrierBindIsRecycledByItsProbes(t *testing.T) {
	sims, my := startModems(t, 1)
	core, logs := observer.New(zap.InfoLevel)
	e := startEnv(t, "bolt", withHTTP(), withLogTee(core), withCarrierBinds(1, 8), withYAML(my), withYAML(failoverYAML))
	smsc := e.smscs["mobile"]
	conns := smsc.BoundConns()
	if len(conns) != 1 {
		t.Fatalf("mobile's SMSC has %d bound connections, want 1", len(conns))
	}
	dead := conns[0]
	bindsBefore := smsc.Stats().Binds
	before := scrape(t, e)
	c := e.dial("platform", "secret", platform.BindTRX)
	logs.TakeAll() // the start's lines
	smsc.MuteSubmits(dead, true)

	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]uint32{}
	errs := 0
	submit := func(txt string) {
		defer wg.Done()
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: txt})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs++
			return
		}
		statuses[txt] = r.Status
	}
	var texts []string
	send := func(txt string) {
		wg.Add(1)
		texts = append(texts, txt)
		go submit(txt)
	}
	// Three submits time out together: mobile is down by timeouts.
	for i := range 3 {
		send(fmt.Sprintf("down-%d", i))
	}
	wg.Wait()
	if info := e.gw.Health.Info("mobile"); info.State != "down" || info.Reason != "submits unanswered within response_timeout" {
		t.Fatalf("mobile after 3 timeouts: %+v, want down by timeouts", info)
	}
	// Load (5 a second, each answered on a goroutine of its own) until
	// the bind dials again (the SMSC's count of binds): the probes among
	// it go to the stuck node, the rest to the modems.
	wctx, cancel := context.WithTimeout(e.ctx, 40*time.Second)
	defer cancel()
	redialled := make(chan error, 1)
	go func() {
		redialled <- smsc.WaitUntil(wctx, func(st smscsim.Stats) bool { return st.Binds > bindsBefore })
	}()
	onDead := func() (n int) {
		for _, m := range smsc.Received() {
			if m.Conn == dead {
				n++
			}
		}
		return n
	}
	pace := time.NewTicker(200 * time.Millisecond) // the load's rate, not a synchronisation
	defer pace.Stop()
	n := 0
outage:
	for {
		select {
		case err := <-redialled:
			if err != nil {
				t.Fatalf("the half-dead only bind was never recycled (%v): %d submits went to it; mobile %+v",
					err, onDead(), e.gw.Health.Info("mobile"))
			}
			break outage
		case <-pace.C:
			send(fmt.Sprintf("outage-%d", n))
			n++
		}
	}
	// The gateway notes the new bind (Info's bound count, under the
	// lock of the state): the carrier is still down, by timeouts.
	pollUntil(t, e, "the gateway has the new bind", func() bool { return e.gw.Health.Info("mobile").BoundBind == 1 })
	if info := e.gw.Health.Info("mobile"); info.State != "down" || info.Reason != "submits unanswered within response_timeout" {
		t.Fatalf("mobile once its recycled bind is back: %+v, want still down by timeouts (no probation before a probe is answered)", info)
	}
	if slices.Contains(smsc.BoundConns(), dead) {
		t.Fatal("the stuck connection is still bound after its bind dialled again")
	}
	// Load until the next probe is answered on the new connection and
	// the probation (up_after) has passed.
	for e.gw.Health.State("mobile") != proxy.StateUp {
		changed := e.gw.Health.Changed()
		if e.gw.Health.State("mobile") == proxy.StateUp {
			break
		}
		select {
		case <-changed:
		case <-pace.C:
			send(fmt.Sprintf("outage-%d", n))
			n++
		case <-wctx.Done():
			t.Fatalf("mobile never came back up: %+v", e.gw.Health.Info("mobile"))
		}
	}
	wg.Wait()
	if errs != 0 || len(statuses) != len(texts) {
		t.Fatalf("%d submits, %d answered, %d without an answer", len(texts), len(statuses), errs)
	}
	for txt, st := range statuses {
		if st != 0 {
			t.Errorf("%s answered 0x%X, want OK (the modems take what the carrier does not)", txt, st)
		}
	}
	if d := onDead(); d != 3+2 {
		t.Errorf("%d submits reached the stuck connection, want 5: the 3 that took the carrier down, 2 probes", d)
	}
	got := waitDelivered(t, e, sims, texts)
	for _, txt := range texts {
		if got[txt] != 1 {
			t.Errorf("%s reached %d handsets, want 1", txt, got[txt])
		}
	}
	// Back up: new traffic goes to the carrier, on the new connection.
	r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "back-up"})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit once mobile is up: %v 0x%X", err, r.Status)
	}
	if last := smsc.Received(); len(last) == 0 || last[len(last)-1].Conn == dead || last[len(last)-1].Silent {
		t.Fatal("the submit once mobile was up did not reach the carrier's new connection")
	}

	var changes []string
	for _, l := range logs.FilterMessage("carrier state changed").FilterField(zap.String("carrier", "mobile")).All() {
		m := l.ContextMap()
		changes = append(changes, fmt.Sprintf("%v: %v", m["to"], m["reason"]))
	}
	want := []string{"down: submits unanswered within response_timeout", "probation: carrier answered again", "up: probation passed"}
	if !slices.Equal(changes, want) {
		t.Fatalf("mobile's state changes %q, want %q (no flap: down until a probe was answered)", changes, want)
	}
	warned := logs.FilterMessageSnippet("answers no probe submits").FilterField(zap.String("carrier", "mobile")).All()
	if len(warned) != 1 {
		t.Fatalf("%d warnings of the recycle, want 1", len(warned))
	}
	if d := scrape(t, e).delta(before, "spareline_carrier_bind_recycled_total", "carrier", "mobile"); d != 1 {
		t.Fatalf("spareline_carrier_bind_recycled_total{carrier=mobile} rose by %v, want 1", d)
	}
	modemSent := 0
	for _, s := range sims {
		modemSent += len(s.Sent())
	}
	t.Logf("%d submits during the outage, %d by modem; the carrier back after one recycle", len(texts), modemSent)
}
