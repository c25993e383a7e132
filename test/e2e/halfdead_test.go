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
