package proxy

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// A reload whose new password the carrier took (its trial bind got in)
// moves the binds to it one at a time: a bind unbinds only once the one
// before is bound again, so a carrier with two binds always has one, never
// counts as down, and its new traffic does not go to the modems for
// failover.up_after of probation. Before, every bind unbound at once.
func TestReloadReconnectsBindsOneAtATime(t *testing.T) {
	addr, conns := fakeSMSC(t)
	h := NewHealth(3, time.Hour, zap.NewNop())
	downs := recordDowns(h)
	cfg := config.Carrier{Name: "cm", Address: addr, Binds: 2, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)}
	c := NewCarrier(cfg, h, zap.NewNop())
	h.Attach(c)
	runCarrier(t, c)
	a := nextConn(t, conns) // the other binds wait for the first one's answer
	bindOK(t, a, cmdBindTransceiver)
	b := nextConn(t, conns)
	bindOK(t, b, cmdBindTransceiver)
	waitBound(t, c, 2)

	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	bindOK(t, trial, cmdBindTransceiver)
	expectUnbind(t, trial)

	// The first bind to leave: whichever of a and b gets the unbind.
	type got struct {
		p   *peer
		f   Frame
		err error
	}
	unbinds := make(chan got, 2)
	for _, p := range []*peer{a, b} {
		go func() {
			f, err := p.tryRead()
			unbinds <- got{p, f, err}
		}()
	}
	first := <-unbinds
	if first.err != nil || first.f.ID != cmdUnbind {
		t.Fatalf("first PDU after the trial: %+v, %v; want unbind", first.f.Header, first.err)
	}
	first.p.write(cmdUnbindResp, statusOK, first.f.Seq, nil)
	replacement := nextConn(t, conns)
	f := replacement.read()
	if f.ID != cmdBindTransceiver || bindPassword(t, f) != "rotated" {
		t.Fatalf("replacement sent %+v with password %q", f.Header, bindPassword(t, f))
	}
	// While the replacement waits for its bind_resp, the other bind stays.
	select {
	case second := <-unbinds:
		t.Fatalf("the other bind got %+v (%v) before the first was bound again", second.f.Header, second.err)
	case <-time.After(300 * time.Millisecond):
	}
	replacement.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	second := <-unbinds
	if second.err != nil || second.f.ID != cmdUnbind {
		t.Fatalf("second bind got %+v, %v; want unbind", second.f.Header, second.err)
	}
	second.p.write(cmdUnbindResp, statusOK, second.f.Seq, nil)
	again := nextConn(t, conns)
	if f := again.read(); bindPassword(t, f) != "rotated" {
		t.Fatalf("second replacement with password %q", bindPassword(t, f))
	} else {
		again.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	}
	waitBound(t, c, 2)
	if downs := downs(); len(downs) != 0 {
		t.Errorf("carrier went down during the reload: %q", downs)
	}
}

// A carrier with one bind, reloaded with a password it takes: the trial
// bind's session stays and carries the submits while the bind lets its old
// session go, then becomes the bind's own session: no second bind with the
// new login (an SMSC that allows one per system_id answers it
// ESME_RALYBND). The carrier never has no bind: no state change at all
// (before the bridge, the bind's unbind made it down, "all_carriers_down"
// when it was the only one, then probation for failover.up_after, its
// traffic on the modems meanwhile).
func TestReloadHandsTheOnlyBindOverWithoutGoingDown(t *testing.T) {
	addr, conns := fakeSMSC(t)
	h := NewHealth(3, time.Hour, zap.NewNop())
	var mu sync.Mutex
	var changes []string
	h.OnChange = func(_ string, from, to CarrierState, reason string) {
		mu.Lock()
		changes = append(changes, from.String()+"->"+to.String()+": "+reason)
		mu.Unlock()
	}
	const name = "handover-one"
	cfg := config.Carrier{Name: name, Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)}
	c := NewCarrier(cfg, h, zap.NewNop())
	h.Attach(c)
	runCarrier(t, c)
	working := nextConn(t, conns)
	bindOK(t, working, cmdBindTransceiver)
	waitBound(t, c, 1)
	mu.Lock()
	changes = nil // the first bind: up
	mu.Unlock()

	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	bindOK(t, trial, cmdBindTransceiver)
	// While the bind's old session leaves (its unbind not answered yet), a
	// submit goes out on the trial's session: the carrier is not down.
	f := working.read()
	if f.ID != cmdUnbind {
		t.Fatalf("the bind's old session sent %+v, want unbind", f.Header)
	}
	if st := h.State(name); st != StateUp {
		t.Fatalf("state %v while the bind moves, want up", st)
	}
	submitOnKeptBind(t, c, trial, "the old session left")
	working.write(cmdUnbindResp, statusOK, f.Seq, nil)
	working.expectClosed()
	waitTakenOver(t, c)
	// The bind dialled nothing: the trial's session is its own now, and
	// takes the next submit.
	select {
	case nc := <-conns:
		_ = nc.Close()
		t.Fatal("the bind dialled a second session with the new login")
	default:
	}
	submitOnKeptBind(t, c, trial, "the bind took the trial's session over")
	waitBound(t, c, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 0 {
		t.Errorf("state changes during the reload: %q, want none", changes)
	}
	if st := stateMetric(name); st != 2 {
		t.Errorf("carrier_state %v after the reload, want 2", st)
	}
}

// waitTakenOver waits until the carrier's first bind has taken the reload's
// bridge over (takeBridge): no bridge left, and the bind bound with the
// carrier's login.
func waitTakenOver(t *testing.T, c *Carrier) {
	t.Helper()
	// Polled: nothing signals the take-over.
	waitCond(t, "the bind taking the bridge's session over", func() bool {
		b := c.bindList()[0]
		l := b.login.Load()
		return c.bridge.Load() == nil && b.sess.Load() != nil && l != nil && *l == *loginOf(c.cfg.Load())
	})
}
