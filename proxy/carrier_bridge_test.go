package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/test/smscsim"
)

// An SMSC that allows one bind per system_id (ESME_RALYBND beyond it), and
// a reload that changes a one-bind carrier's system_id: the trial with the
// new id gets in, and the bind takes its session over instead of binding
// the new id a second time. Before, the bind redialled, was refused
// ESME_RALYBND (counted as a refusal: state "refused", a hold of ~10 s, a
// failed login the SMSC may count towards locking the account), and once
// the bridge left the carrier was down, then on probation.
func TestReloadSystemIDOnAnSMSCOfOneBindPerSystemID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim, c, h, log := limitedSMSC(t, 1, config.Carrier{Name: "onebind", SystemID: "old", Password: "pw", Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(2 * time.Second), ConnectTimeout: config.Duration(2 * time.Second)})
	cfg := c.Config()

	cfg.SystemID = "new"
	c.Reconfigure(cfg)
	waitTakenOver(t, c)
	if err := sim.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Conns == 1 }); err != nil {
		t.Fatalf("the old session never left: %v (%+v)", err, sim.Stats())
	}
	if st := sim.Stats(); st.BindsRefused != 0 || st.Binds != 2 || st.Bound != 1 {
		t.Errorf("SMSC saw %d binds, %d refused, %d bound; want 2 (the start's and the trial's), none refused, 1 bound",
			st.Binds, st.BindsRefused, st.Bound)
	}
	// The session is the bind's: it carries a submit, and the receipt
	// that comes back on it is taken (not ESME_RX_T_APPN).
	res, err := c.Submit(ctx, goldenSubmit(t, "02 4F60", ""))
	if err != nil || res.Status != statusOK {
		t.Fatalf("submit after the reload: %v, status 0x%X", err, res.Status)
	}
	if err := sim.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.ReceiptsAcked+s.ReceiptsNack > 0 }); err != nil {
		t.Fatal(err)
	}
	if st := sim.Stats(); st.ReceiptsAcked != 1 || st.ReceiptsNack != 0 {
		t.Errorf("receipt answered: %d acked, %d refused; want it taken", st.ReceiptsAcked, st.ReceiptsNack)
	}
	if changes := log.get(); len(changes) != 0 || c.Bound() != 1 || h.State("onebind") != StateUp {
		t.Errorf("after the reload: state changes %q, bound %d, health %v, binds %v; want none, 1, up, [bound]",
			changes, c.Bound(), h.State("onebind"), c.BindStates())
	}
}

// The bridge takes receipts and MO as a bind does: it carries the
// carrier's submits, and their receipts come back on it. Before, it kept
// the trial's handler and refused every one ESME_RX_T_APPN.
func TestReloadBridgeTakesDeliveries(t *testing.T) {
	c, working, conns := boundTestCarrier(t)
	got := make(chan Frame, 1)
	c.onDeliver = func(_ *Carrier, s *Session, f Frame) {
		respondDeliver(s, f, statusOK)
		got <- f
	}
	cfg := c.Config()
	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	bindOK(t, trial, cmdBindTransceiver)
	u := working.read() // the bind's old session leaves; unanswered, the bridge alone carries the carrier
	if u.ID != cmdUnbind {
		t.Fatalf("the bind's old session sent %+v, want unbind", u.Header)
	}
	trial.write(cmdDeliverSM, 0, 77, goldenSubmit(t, "02 4F60", ""))
	if r := trial.read(); r.ID != cmdDeliverSMResp || r.Seq != 77 || r.Status != statusOK {
		t.Fatalf("deliver_sm on the bridge answered %+v, want ESME_ROK", r.Header)
	}
	<-got
	working.write(cmdUnbindResp, statusOK, u.Seq, nil)
	working.expectClosed()
	waitTakenOver(t, c)
}

// A bridge the SMSC drops counts as a bound bind no more, at once (before,
// it stayed in bound and in health until the bind was back, or
// connect_timeout had passed).
func TestReloadBridgeDroppedStopsCounting(t *testing.T) {
	c, working, conns := boundTestCarrier(t)
	cfg := c.Config()
	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	bindOK(t, trial, cmdBindTransceiver)
	u := working.read() // unanswered: the old session still counts
	if u.ID != cmdUnbind {
		t.Fatalf("the bind's old session sent %+v, want unbind", u.Header)
	}
	_ = trial.conn.Close()
	waitBound(t, c, 1) // the old session alone
	if c.bridge.Load() != nil {
		t.Fatal("the dropped bridge is still the carrier's bridge")
	}
	working.write(cmdUnbindResp, statusOK, u.Seq, nil)
	working.expectClosed()
	again := nextConn(t, conns) // no bridge to take over: the bind dials
	f := again.read()
	if f.ID != cmdBindTransceiver || bindPassword(t, f) != "rotated" {
		t.Fatalf("the bind came back with %+v and password %q", f.Header, bindPassword(t, f))
	}
	again.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	waitBound(t, c, 1)
}

// ESME_RINVBNDSTS on the bridge takes it out of service as on a bind
// (checkBound): it unbinds at once, not once the bind is back or
// connect_timeout has passed, the SMSC refusing every submit on it
// meanwhile.
func TestReloadBridgeInvBndSts(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, Binds: 1,
		ConnectTimeout: config.Duration(30 * time.Second)})
	working := nextConn(t, conns)
	bindOK(t, working, cmdBindTransceiver)
	waitBound(t, c, 1)
	cfg := c.Config()
	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	bindOK(t, trial, cmdBindTransceiver)
	u := working.read() // unanswered: the bridge alone takes submits
	if u.ID != cmdUnbind {
		t.Fatalf("the bind's old session sent %+v, want unbind", u.Header)
	}
	res := make(chan error, 1)
	go func() {
		_, err := c.Submit(context.Background(), goldenSubmit(t, "02 4F60", ""))
		res <- err
	}()
	sub := trial.read()
	if sub.ID != cmdSubmitSM {
		t.Fatalf("the bridge got %+v, want the submit", sub.Header)
	}
	trial.write(cmdSubmitSMResp, statusInvBndSts, sub.Seq, nil)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	expectUnbind(t, trial)
	working.write(cmdUnbindResp, statusOK, u.Seq, nil)
	working.expectClosed()
	again := nextConn(t, conns)
	bindOK(t, again, cmdBindTransceiver)
	waitBound(t, c, 1)
}

// An SMSC whose account allows exactly the carrier's binds (two): a reload
// that changes the password gets ESME_RALYBND for its trial bind, one bind
// too many, which says nothing of the new password. The binds move to it
// one at a time, so the carrier always has one. Before, they all
// reconnected at once: the carrier went down, then on probation, with its
// traffic on the modems meanwhile.
func TestReloadAtTheBindLimitMovesTheBindsOneAtATime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim, c, h, log := limitedSMSC(t, 2, config.Carrier{Name: "twobind", SystemID: "ent", Password: "old", Binds: 2, Window: 8,
		ResponseTimeout: config.Duration(2 * time.Second), ConnectTimeout: config.Duration(2 * time.Second)})
	cfg := c.Config()

	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	waitCond(t, "both binds on the new password", func() bool {
		for _, b := range c.bindList() {
			l := b.login.Load()
			if b.sess.Load() == nil || l == nil || *l != *loginOf(c.cfg.Load()) {
				return false
			}
		}
		return true
	})
	if err := sim.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound == 2 && s.Conns == 2 }); err != nil {
		t.Fatalf("SMSC: %v (%+v)", err, sim.Stats())
	}
	if st := sim.Stats(); st.BindsRefused != 1 {
		t.Errorf("SMSC refused %d binds, want 1 (the trial, one too many)", st.BindsRefused)
	}
	if changes := log.get(); len(changes) != 0 || h.State("twobind") != StateUp || c.ReloadRefused() != "" {
		t.Errorf("after the reload: state changes %q, health %v, reload_refused %q; want none, up, none",
			changes, h.State("twobind"), c.ReloadRefused())
	}
}

// changeLog records a Health's state changes ("from->to: reason").
type changeLog struct {
	mu      sync.Mutex
	changes []string
}

func (l *changeLog) record(_ string, from, to CarrierState, reason string) {
	l.mu.Lock()
	l.changes = append(l.changes, from.String()+"->"+to.String()+": "+reason)
	l.mu.Unlock()
}

// reset forgets what was recorded (the start's changes).
func (l *changeLog) reset() {
	l.mu.Lock()
	l.changes = nil
	l.mu.Unlock()
}

func (l *changeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.changes...)
}

// limitedSMSC starts a simulator that allows maxBinds binds per system_id
// and carrier cfg (its Address set to it) bound to it with all its binds,
// its health changes recorded from then on.
func limitedSMSC(t *testing.T, maxBinds int, cfg config.Carrier) (*smscsim.SMSC, *Carrier, *Health, *changeLog) {
	t.Helper()
	sim, err := smscsim.Start(smscsim.Options{Name: cfg.Name, MaxBindsPerSystemID: maxBinds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg.Address = sim.Addr()
	h := NewHealth(3, time.Hour, zap.NewNop())
	log := &changeLog{}
	h.OnChange = log.record
	c := NewCarrier(cfg, h, zap.NewNop())
	c.onDeliver = func(_ *Carrier, s *Session, f Frame) { respondDeliver(s, f, statusOK) }
	h.Attach(c)
	runCarrier(t, c)
	waitBound(t, c, cfg.Binds)
	log.reset() // the first binds: up
	return sim, c, h, log
}
