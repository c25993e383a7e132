package proxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/smscsim"
)

// failingPool is a modem pool whose one modem is up but cannot send: every
// send fails with a temporary error (+CMS ERROR: 331, no network service).
type failingPool struct {
	fakePool
	sends atomic.Int32
}

func (p *failingPool) SendUnless(context.Context, <-chan struct{}, string, sms.Submit) (*modem.Sent, error) {
	p.sends.Add(1)
	return nil, &modem.SendError{Code: 331, Err: errors.New("at: +CMS ERROR: 331 (no network service)")}
}

// takebackCarrier is a carrier "cm" on a simulator, not started (down), on a
// dispatcher over a bolt store.
type takebackCarrier struct {
	smsc *smscsim.SMSC
	st   store.Store
	c    *Carrier
	d    *Dispatcher
	ctx  context.Context
	up   chan struct{} // closed when cm leaves state down
	t    *testing.T
}

func newTakebackCarrier(t *testing.T) *takebackCarrier {
	t.Helper()
	smsc, err := smscsim.Start(smscsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	tc := &takebackCarrier{smsc: smsc, st: openTestBolt(t), up: make(chan struct{})}
	health := NewHealth(3, time.Hour, zap.NewNop())
	health.OnChange = func(carrier string, _, to CarrierState, _ string) {
		if carrier == "cm" && to != StateDown {
			close(tc.up) // once: the carrier is started once and never goes down here
		}
	}
	tc.c = NewCarrier(config.Carrier{Name: "cm", Address: smsc.Addr(), Binds: 1, Window: 8,
		EnquireLink:     config.Duration(10 * time.Second),
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		health, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	tc.ctx = ctx
	tc.d = NewDispatcher(ctx, DispatcherConfig{Store: tc.st, Carriers: []*Carrier{tc.c}, Health: health})
	t.Cleanup(func() { cancel(); tc.c.Stop(); tc.d.Wait() })
	tc.t = t
	return tc
}

// start brings the carrier up and waits until its health says so.
func (tc *takebackCarrier) start() {
	tc.t.Helper()
	tc.c.Start(tc.ctx)
	select {
	case <-tc.up:
	case <-time.After(20 * time.Second):
		tc.t.Fatal("carrier never bound")
	}
}

// A message queued because its carrier was down, whose modem send then
// failed with a temporary error, goes back to its carrier at the next
// attempt once the carrier is up again: it is not retried on the modem
// until the modem can send. The failed send must not erase why it was
// queued.
func TestModemFailedMessageReturnsToRecoveredCarrier(t *testing.T) {
	tc := newTakebackCarrier(t)
	st, d, ctx := tc.st, tc.d, tc.ctx
	pool := &failingPool{}
	fo := NewFailover(d, pool, FailoverConfig{}, zap.NewNop())

	// The carrier is down (not started): the worker tries the modem, which fails.
	m, id := queuedForModem(t, st, d, fo)
	fo.process(ctx, id)
	if n := pool.sends.Load(); n != 1 {
		t.Fatalf("modem sends %d, want 1 while the carrier is down", n)
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateQueued {
		t.Fatalf("record after the failed send: %+v, %v; want queued", got, err)
	}
	if !strings.Contains(got.Note, "331") {
		t.Errorf("note %q: want the modem's error kept for people", got.Note)
	}

	// The carrier comes back; the entry comes due again.
	tc.start()
	if err := st.ReleaseModem(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	again, err := st.ClaimModem(ctx, fo.config().Worker, time.Minute)
	if err != nil || again != id {
		t.Fatalf("ClaimModem = %q, %v; want %s", again, err, id)
	}
	okBefore := testutil.ToFloat64(metricSubmits.WithLabelValues("cm", "ok"))
	statusBefore := testutil.ToFloat64(metricSubmitStatus.WithLabelValues("cm", "ESME_ROK"))
	fo.process(ctx, again)

	if n := tc.smsc.Stats().Submits; n != 1 {
		t.Fatalf("carrier got %d submits, want 1: the message goes back to its recovered carrier", n)
	}
	// The carrier's metrics see the backlog it is given, as /status.json
	// does (found by an independent operator's test: they did not).
	if n := testutil.ToFloat64(metricSubmits.WithLabelValues("cm", "ok")) - okBefore; n != 1 {
		t.Errorf("spareline_submits_total{carrier=cm,result=ok} rose by %v for the returned message, want 1", n)
	}
	if n := testutil.ToFloat64(metricSubmitStatus.WithLabelValues("cm", "ESME_ROK")) - statusBefore; n != 1 {
		t.Errorf("spareline_submit_resp_status_total{carrier=cm,status=ESME_ROK} rose by %v, want 1", n)
	}
	if n := pool.sends.Load(); n != 1 {
		t.Fatalf("modem sends %d, want still 1: a message its carrier took is not sent by modem", n)
	}
	got, err = st.GetMessage(ctx, m.ID)
	// sent, or done already if the simulator's receipt came first.
	if err != nil || (got.State != store.StateSent && got.State != store.StateDone) || got.CarrierID == "" {
		t.Fatalf("record %+v, %v; want sent with the carrier's id (or done by its receipt)", got, err)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 0 {
		t.Fatalf("modem queue depth %d, %v; want 0 (acked)", depth, err)
	}
}

// The queue reason survives any number of failed modem sends, and only
// "down" and "route" send a message back to its carrier.
func TestQueueReasonSurvivesModemErrors(t *testing.T) {
	for _, tc := range []struct {
		reason string
		back   bool
	}{
		{"down", true},
		{"route", true},
		{"timeout, possible duplicate", false},
		{"timeout, held", false},
		{"lost, possible duplicate", false},
		{"carrier receipt UNDELIV", false},
	} {
		note := tc.reason
		for i := range 3 {
			if got := returnsToCarrier(note); got != tc.back {
				t.Errorf("reason %q after %d modem errors (note %q): returnsToCarrier = %v, want %v",
					tc.reason, i, note, got, tc.back)
			}
			note = modemFailedNote(note, errors.New("modem pool: temporary send failure: +CMS ERROR: 331"))
		}
		if queueReason(note) != tc.reason || strings.Count(note, lastModemError) != 1 {
			t.Errorf("note %q: want reason %q and one last modem error", note, tc.reason)
		}
	}
}

// waitingPool is a modem pool whose modems are all out: a send waits for
// one until it is given up (modem.ErrWithdrawn) or its ctx ends.
type waitingPool struct {
	fakePool
	waiting chan struct{} // closed when a send starts waiting
}

func (p *waitingPool) SendUnless(ctx context.Context, giveUp <-chan struct{}, _ string, _ sms.Submit) (*modem.Sent, error) {
	close(p.waiting)
	select {
	case <-giveUp:
		return nil, modem.ErrWithdrawn
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// A message queued because its carrier was down, waiting inside the modem
// pool for a modem (the one it had went out after failed sends), is given up
// by the pool as soon as its carrier is up again, and goes to the carrier at
// once: the worker does not hold it in the pool until a modem comes back.
func TestMessageWaitingForAModemReturnsToRecoveredCarrier(t *testing.T) {
	tc := newTakebackCarrier(t)
	st, ctx := tc.st, tc.ctx
	pool := &waitingPool{waiting: make(chan struct{})}
	fo := NewFailover(tc.d, pool, FailoverConfig{}, zap.NewNop())
	m, id := queuedForModem(t, st, tc.d, fo)

	done := make(chan struct{})
	go func() {
		defer close(done)
		fo.process(ctx, id) // the carrier is down: to the modem pool, which waits
	}()
	<-pool.waiting
	tc.start()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker still holds the message in the modem pool after its carrier came back")
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateQueued || !returnsToCarrier(got.Note) {
		t.Fatalf("record after the withdrawal: %+v, %v; want queued, still for its carrier", got, err)
	}
	again, err := st.ClaimModem(ctx, fo.config().Worker, time.Minute) // due now: no pause
	if err != nil || again != id {
		t.Fatalf("ClaimModem = %q, %v; want %s due at once", again, err, id)
	}
	fo.process(ctx, again)
	if n := tc.smsc.Stats().Submits; n != 1 {
		t.Fatalf("carrier got %d submits, want 1", n)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 0 {
		t.Fatalf("modem queue depth %d, %v; want 0 (acked)", depth, err)
	}
}

// trialPool is a modem pool whose one modem is on trial (held out after
// send errors, its hold over) until a message is handed over: the trial
// fails, the modem is held out again, and the message waits in the pool
// for the next trial, until it is given up (modem.ErrWithdrawn) or its ctx
// ends.
type trialPool struct {
	fakePool
	held    atomic.Bool
	waiting chan struct{} // closed when a send starts waiting
}

func (p *trialPool) Status() []modem.ModemStatus {
	if p.held.Load() {
		return []modem.ModemStatus{{Name: "fake", State: modem.StateDown, LastError: "+CMS ERROR: 50"}}
	}
	return []modem.ModemStatus{{Name: "fake", State: modem.StateDown, Trial: true}}
}

func (p *trialPool) SendUnless(ctx context.Context, giveUp <-chan struct{}, _ string, _ sms.Submit) (*modem.Sent, error) {
	p.held.Store(true) // its trial failed: held out again, for longer
	close(p.waiting)
	select {
	case <-giveUp:
		return nil, modem.ErrWithdrawn
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// A message waiting in the modem pool after the modem it was given to as
// its trial failed it (held out again, its next trial up to 30 minutes
// away) is given up once no modem can take it: the worker does not hold it
// (nor stay blocked itself) while nothing can send it; the message is
// queued again, looked at as the workers look at every queued message
// while no modem can send (its carrier may come back, or probe with it).
func TestMessageLeavesThePoolWhenNoModemCanTakeIt(t *testing.T) {
	tc := newTakebackCarrier(t) // cm not started: down, no bind, no probe
	st := tc.st
	pool := &trialPool{waiting: make(chan struct{})}
	fo := NewFailover(tc.d, pool, FailoverConfig{}, zap.NewNop())
	m, id := queuedForModem(t, st, tc.d, fo)
	ctx, cancel := context.WithTimeout(tc.ctx, 20*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fo.process(ctx, id)
	}()
	<-pool.waiting
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the worker still holds the message in the modem pool, no modem being able to take it")
	}
	if ctx.Err() != nil {
		t.Fatal("the worker returned only when its context ended")
	}
	got, err := st.GetMessage(tc.ctx, m.ID)
	if err != nil || got.State != store.StateQueued || !returnsToCarrier(got.Note) {
		t.Fatalf("record after the withdrawal: %+v, %v; want queued, still for its carrier", got, err)
	}
	if depth, _, err := st.ModemQueue(tc.ctx); err != nil || depth != 1 {
		t.Fatalf("modem queue depth %d, %v; want 1 (released, not acked)", depth, err)
	}
}

// A message queued because its carrier left it unanswered (the carrier may
// have it) goes by modem; but when no modem can take it (all down or held
// out) and its carrier is up again, the carrier sends it rather than no
// one: an independent operator's test left five such messages queued for
// good behind a SIM without credit while their carrier was up. While a
// modem can take it, it still goes by modem.
func TestUnansweredMessageGoesBackWhenNoModemCanTakeIt(t *testing.T) {
	for _, modemUp := range []bool{false, true} {
		t.Run(fmt.Sprintf("modem up %v", modemUp), func(t *testing.T) {
			tc := newTakebackCarrier(t)
			st := tc.st
			var pool ModemSender
			fp := &fakePool{}
			pool = &trialPool{waiting: make(chan struct{})}
			if modemUp {
				pool = fp
			} else {
				pool.(*trialPool).held.Store(true) // held out: not even on trial
			}
			fo := NewFailover(tc.d, pool, FailoverConfig{}, zap.NewNop())
			m := putTestMessage(t, st, tc.d, "acct", func(m *store.Message) { m.Carrier, m.RegDeliv = "cm", 1 })
			if err := fo.enqueue(tc.ctx, m, "timeout, possible duplicate", time.Now()); err != nil {
				t.Fatal(err)
			}
			tc.start()
			id, err := st.ClaimModem(tc.ctx, fo.config().Worker, time.Minute)
			if err != nil || id != m.ID {
				t.Fatalf("ClaimModem = %q, %v; want %s", id, err, m.ID)
			}
			fo.process(tc.ctx, id)
			submits := tc.smsc.Stats().Submits
			if modemUp {
				if submits != 0 || len(fp.sentIDs()) != 1 {
					t.Fatalf("carrier got %d submits, the modem %d; want the modem to send it, a modem being up", submits, len(fp.sentIDs()))
				}
				return
			}
			if submits != 1 {
				t.Fatalf("carrier got %d submits, want 1: no modem can take it and its carrier is up", submits)
			}
			got, err := st.GetMessage(tc.ctx, m.ID)
			if err != nil || (got.State != store.StateSent && got.State != store.StateDone) || got.CarrierID == "" {
				t.Fatalf("record %+v, %v; want sent with the carrier's id (or done by its receipt)", got, err)
			}
		})
	}
}
