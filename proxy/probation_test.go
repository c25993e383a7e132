package proxy

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
)

// probTimer is a probation timer the test fires (Health.afterFunc).
type probTimer struct {
	d       time.Duration
	f       func()
	mu      sync.Mutex
	stopped bool
}

func (ft *probTimer) Stop() bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	was := !ft.stopped
	ft.stopped = true
	return was
}

// stateMetric is spareline_carrier_state of carrier, read without asking
// Health (State and Info end a probation that has lasted up_after).
func stateMetric(carrier string) float64 {
	return testutil.ToFloat64(metricCarrierState.WithLabelValues(carrier))
}

// A probation ends when failover.up_after has passed, by a timer, with no
// submit and nobody reading the status: carrier_state goes to 2 and
// "probation passed" is logged then. Before, it ended only when a submit
// came or /status.json was read, so the metric said probation for as long
// as the carrier had no traffic.
func TestProbationEndsByItselfWhenUpAfterHasPassed(t *testing.T) {
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	core, logs := observer.New(zap.InfoLevel)
	h := NewHealth(3, 10*time.Second, zap.New(core))
	h.now = func() time.Time { return clock } // read under h.mu only
	timers := make(chan *probTimer, 8)
	h.afterFunc = func(d time.Duration, f func()) stopper {
		ft := &probTimer{d: d, f: f}
		timers <- ft
		return ft
	}
	const name = "probation-timer"
	c := NewCarrier(config.Carrier{Name: name, Binds: 1}, h, zap.NewNop())
	h.Attach(c)
	c.bound.Store(1)
	h.noteBindUp(c) // the first bind: up at once
	c.bound.Store(0)
	h.noteBindDown(c, errors.New("EOF"))
	c.bound.Store(1)
	h.noteBindUp(c) // back: probation for up_after
	if st := stateMetric(name); st != 1 {
		t.Fatalf("carrier_state %v after the bind came back, want 1 (probation)", st)
	}
	var ft *probTimer
	select {
	case ft = <-timers:
	case <-time.After(hangGuard):
		t.Fatal("no timer armed to end the probation")
	}
	if ft.d != 10*time.Second {
		t.Errorf("probation timer armed for %s, want up_after (10s)", ft.d)
	}
	h.mu.Lock()
	clock = clock.Add(10 * time.Second)
	h.mu.Unlock()
	ft.f() // up_after has passed: the timer fires
	if st := stateMetric(name); st != 2 {
		t.Fatalf("carrier_state %v once up_after passed, want 2 (up) with no submit and no status read", st)
	}
	if n := logs.FilterMessage("carrier state changed").FilterField(zap.String("reason", "probation passed")).Len(); n != 1 {
		t.Errorf("%d lines \"probation passed\", want 1", n)
	}

	// A probation cut short (a timeout sends the carrier down) disarms its
	// timer; the next probation arms its own.
	c.bound.Store(0)
	h.noteBindDown(c, errors.New("EOF"))
	c.bound.Store(1)
	h.noteBindUp(c)
	second := <-timers
	h.Note(name, OutcomeTimeout) // a timeout during probation: down
	if second.Stop() {
		t.Error("the timer of a probation that ended by a timeout is still armed")
	}
	if st := stateMetric(name); st != 0 {
		t.Fatalf("carrier_state %v after a timeout on probation, want 0", st)
	}

	// A reload shortening up_after ends a probation by the new one.
	c.bound.Store(0)
	h.noteBindDown(c, errors.New("EOF"))
	c.bound.Store(1)
	h.noteBindUp(c)
	<-timers
	h.mu.Lock()
	clock = clock.Add(3 * time.Second)
	h.mu.Unlock()
	h.SetPolicy(3, 5*time.Second)
	if re := <-timers; re.d != 2*time.Second {
		t.Errorf("after up_after went to 5s, 3s into the probation: timer armed for %s, want 2s", re.d)
	}

	// Close (shutdown) disarms every timer.
	h.Close()
	h.mu.Lock()
	armed := h.carriers[name].settleTimer != nil
	h.mu.Unlock()
	if armed {
		t.Error("a probation timer is armed after Close")
	}
}

// End to end over TCP with the real timer: a carrier whose connection
// dropped binds again, is on probation, and is up when up_after has passed
// though no submit came and nothing read its state.
func TestProbationEndsByItselfOverTCP(t *testing.T) {
	addr, conns := fakeSMSC(t)
	const name = "probation-tcp"
	h := NewHealth(3, 300*time.Millisecond, zap.NewNop())
	c := NewCarrier(config.Carrier{Name: name, Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)}, h, zap.NewNop())
	h.Attach(c)
	runCarrier(t, c)
	first := nextConn(t, conns)
	bindOK(t, first, cmdBindTransceiver)
	waitBound(t, c, 1)
	changed := h.Changed()
	_ = first.conn.Close() // the carrier's side drops the connection
	again := nextConn(t, conns)
	bindOK(t, again, cmdBindTransceiver)
	deadline := time.After(hangGuard)
	var seen []float64
	for _, want := range []float64{1, 2} { // probation, then up
		for stateMetric(name) != want {
			select {
			case <-changed:
				changed = h.Changed()
				seen = append(seen, stateMetric(name))
			case <-deadline:
				t.Fatalf("carrier_state %v (seen %v), want %v; up once up_after (300ms) passed with no traffic",
					stateMetric(name), seen, want)
			}
		}
	}
}
