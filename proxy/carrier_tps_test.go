package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/spareline/spareline/config"
)

// max_tps is the contract's rate: a carrier counts it per second (a
// calendar second, or the last second) and throttles what goes beyond. No
// one-second window may see more than max_tps submits, also after a quiet
// spell. Before, a token bucket holding a second's worth let max_tps go at
// once and max_tps more within the same second as it refilled: twice the
// contract.
func TestCarrierMaxTPSHoldsInEverySecond(t *testing.T) {
	const tps, n = 4, 9
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, Binds: 1, MaxTPS: tps, Window: 16})
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)
	body := goldenSubmit(t, "02 4F60", "")
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Submit(context.Background(), body)
			errs <- err
		}()
	}
	var at []time.Time
	for range n {
		f := p.read()
		at = append(at, time.Now())
		p.write(cmdSubmitSMResp, statusOK, f.Seq, cstring(nil, "C"))
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("submit: %v", err)
		}
	}
	// The SMSC's read times lag the sends by scheduling noise; 200 ms of
	// slack still tells one second from a quarter of one.
	for i := tps; i < n; i++ {
		if d := at[i].Sub(at[i-tps]); d < time.Second-200*time.Millisecond {
			t.Fatalf("submits %d and %d reached the SMSC %s apart: %d submits within a second, max_tps %d",
				i-tps+1, i+1, d, tps+1, tps)
		}
	}
}

// A carrier's max_tps paces the sends a second / max_tps apart, and still
// lets no more than max_tps go in any one second: a burst waiting to go
// leaves one by one, not all at once when a second has passed (an SMSC
// counting by its receive times would see two bursts within one of its
// seconds when jitter moves them closer).
func TestTPSWindowPaces(t *testing.T) {
	w := newTPSWindow(4)
	var clock time.Duration = 10 * time.Second
	w.now = func() time.Duration { return clock }
	for i := range w.sent {
		w.sent[i] = clock - time.Second
	}
	var sent []time.Duration
	for len(sent) < 9 {
		wait, ok := w.take()
		if ok {
			sent = append(sent, clock)
			continue
		}
		if wait <= 0 {
			t.Fatalf("refused with a wait of %s", wait)
		}
		clock += wait
	}
	for i := 1; i < len(sent); i++ {
		if d := sent[i] - sent[i-1]; d < 250*time.Millisecond {
			t.Errorf("sends %d and %d %s apart, want 250ms at least (max_tps 4)", i, i+1, d)
		}
	}
	for i := 4; i < len(sent); i++ {
		if d := sent[i] - sent[i-4]; d < time.Second {
			t.Errorf("sends %d to %d within %s: 5 in one second", i-3, i+1, d)
		}
	}
	if got := sent[len(sent)-1] - sent[0]; got != 2*time.Second {
		t.Errorf("9 sends took %s, want 2s (4 a second, paced, from the first)", got)
	}
}

// A sender woken late by its timer (Go's timers overshoot by up to about a
// millisecond) still sends max_tps a second: the overshoot does not add up
// from send to send (it did: max_tps 2,000 gave 929 a second). Never more
// than max_tps in any one second either. The clock is simulated: every
// wait ends 900 µs late.
func TestTPSWindowKeepsItsRateWhenWokenLate(t *testing.T) {
	for _, n := range []int{10, 1000, 2000, 5000} {
		w := newTPSWindow(n)
		var clock time.Duration = 10 * time.Second
		w.now = func() time.Duration { return clock }
		for i := range w.sent {
			w.sent[i] = clock - time.Second
		}
		w.due = clock - time.Second
		start := clock
		var sent []time.Duration
		for clock < start+5*time.Second {
			wait, ok := w.take()
			if ok {
				sent = append(sent, clock)
				continue
			}
			clock += wait + 900*time.Microsecond
		}
		if min := 5 * n * 98 / 100; len(sent) < min {
			t.Errorf("max_tps %d, woken 900µs late: %d sent in 5s, want %d at least", n, len(sent), min)
		}
		for i := n; i < len(sent); i++ {
			if d := sent[i] - sent[i-n]; d < time.Second {
				t.Fatalf("max_tps %d: sends %d to %d within %s: %d in one second", n, i-n+1, i+1, d, n+1)
			}
		}
	}
}
