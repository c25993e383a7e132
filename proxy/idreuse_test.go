package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
)

// The decision: a final receipt through m's link is held only while a
// submit that started after m is in flight, and m is old (more than twice
// the response_timeout) or asked for no receipt.
func TestReceiptAmbiguous(t *testing.T) {
	now := time.Now()
	rt := 2 * time.Second
	old, recent := now.Add(-2*rt-time.Millisecond), now.Add(-rt)
	for _, tc := range []struct {
		name     string
		created  time.Time
		regDeliv byte
		started  time.Time // of the submit in flight; zero: none
		rt       time.Duration
		want     bool
	}{
		{"nothing in flight", old, 1, time.Time{}, rt, false},
		{"old, newer submit in flight", old, 1, now, rt, true},
		{"old, failure-only receipt asked", old, 2, now, rt, true},
		{"recent, receipt asked", recent, 1, now, rt, false},
		{"recent, no receipt asked", recent, 0, now, rt, true},
		{"no receipt asked, nothing in flight", recent, 0, time.Time{}, rt, false},
		{"in flight since before the message", old, 1, old.Add(-time.Second), rt, false},
		{"in flight since before, no receipt asked", recent, 0, recent.Add(-time.Millisecond), rt, false},
		{"response_timeout unset: its default (5 s)", now.Add(-9 * time.Second), 1, now, 0, false},
		{"response_timeout unset, older than twice the default", now.Add(-11 * time.Second), 1, now, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCarrier(config.Carrier{Name: "cm", ResponseTimeout: config.Duration(tc.rt)}, nil, zap.NewNop())
			if !tc.started.IsZero() {
				c.submitStarted(tc.started)
			}
			m := &store.Message{ID: "m", Carrier: "cm", Created: tc.created, RegDeliv: tc.regDeliv, State: store.StateSent}
			if got := receiptAmbiguous(c, m, now); got != tc.want {
				t.Fatalf("receiptAmbiguous = %v, want %v", got, tc.want)
			}
			if !tc.started.IsZero() {
				c.submitSettled()
				if receiptAmbiguous(c, m, now) {
					t.Fatal("still ambiguous once the submit settled")
				}
			}
		})
	}
}

// reuseSetup is a dispatcher on st with carrier "cm" (response_timeout
// 50 ms: holds of about 1 s), an old open message A linked to carrier id
// "R1", and a submit to cm in flight (not settled: the test settles it).
func reuseSetup(t *testing.T, st store.Store, regDeliv byte) (*Dispatcher, *Carrier, *store.Message) {
	t.Helper()
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm", ResponseTimeout: config.Duration(50 * time.Millisecond)}, nil, zap.NewNop())
	d.SetCarriers([]*Carrier{c})
	a := sentMessage(t, st, d, "R1", regDeliv)
	a.Created = time.Now().Add(-time.Minute)
	if err := st.PutMessage(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	c.submitStarted(time.Now())
	return d, c, a
}

// A receipt through an old message's link while a newer submit is in
// flight is kept for the link of that submit, which takes it in its own
// store write: the new message gets it, the old one nothing, once.
func TestHeldReceiptTakenByTheNewLink(t *testing.T) {
	st := openTestBolt(t)
	d, c, a := reuseSetup(t, st, 1)
	sm, body := carrierReceipt(t, "R1", "UNDELIV")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	if stats, _ := heldReceipts(t, st, "acct"); len(stats) != 0 {
		t.Fatalf("platform receipts %v at once, want none (held)", stats)
	}
	b := putTestMessage(t, st, d, "acct", func(m *store.Message) { m.Carrier, m.CarrierID, m.RegDeliv = "cm", "R1", 1 })
	orphan, err := st.LinkCarrier(context.Background(), b)
	if err != nil || orphan == nil {
		t.Fatalf("the new message's link took %q (%v), want the held receipt", orphan, err)
	}
	c.submitSettled()
	d.deliverOrphan(context.Background(), c, b, orphan)
	waitCond(t, "the hold's end", func() bool { return d.holdsPending() == 0 })
	stats, ids := heldReceipts(t, st, "acct")
	if len(stats) != 1 || ids[0] != b.ID || stats[0] != "UNDELIV" {
		t.Fatalf("platform receipts %v for %v, want one UNDELIV for the new message %s", stats, ids, b.ID)
	}
	if got, err := st.GetMessage(context.Background(), a.ID); err != nil || got.State != store.StateSent {
		t.Fatalf("the old message: %+v %v, want still sent", got, err)
	}
}

// holdsPending is how many holds have not ended.
func (d *Dispatcher) holdsPending() int {
	d.unmatchedMu.Lock()
	defer d.unmatchedMu.Unlock()
	return len(d.reuseHolds)
}

// No new message takes the id: at the hold's end the receipt goes to the
// message its link names, once, as it would have at once.
func TestHeldReceiptGoesBackToItsMessage(t *testing.T) {
	for _, rd := range []byte{1, 0} {
		st := openTestBolt(t)
		d, c, a := reuseSetup(t, st, rd)
		sm, body := carrierReceipt(t, "R1", "DELIVRD")
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
		}
		c.submitSettled() // failed, say: no link
		waitCond(t, "the old message finished", func() bool {
			got, err := st.GetMessage(context.Background(), a.ID)
			return err == nil && got.State == store.StateDone
		})
		stats, ids := heldReceipts(t, st, "acct")
		want := 1
		if rd == 0 {
			want = 0 // finished, no receipt asked
		}
		if len(stats) != want || (want == 1 && ids[0] != a.ID) {
			t.Fatalf("registered_delivery %d: platform receipts %v for %v, want %d for %s", rd, stats, ids, want, a.ID)
		}
		if _, err := st.TakeOrphan(context.Background(), "cm", "R1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the receipt is still kept (%v)", err)
		}
	}
}

// An intermediate receipt is not held (it must not replace a final one
// kept for the id); a receipt with no newer submit in flight is not held.
func TestReceiptsNotHeld(t *testing.T) {
	st := openTestBolt(t)
	d, c, a := reuseSetup(t, st, 0x11)
	sm, body := carrierReceipt(t, "R1", "ENROUTE")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	if stats, _ := heldReceipts(t, st, "acct"); len(stats) != 1 || stats[0] != "ENROUTE" {
		t.Fatalf("platform receipts %v, want the ENROUTE at once", stats)
	}
	c.submitSettled()
	sm, body = carrierReceipt(t, "R1", "DELIVRD")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	if got, err := st.GetMessage(context.Background(), a.ID); err != nil || got.State != store.StateDone {
		t.Fatalf("the message: %+v %v, want done at once (no submit in flight)", got, err)
	}
}

// A receipt still held at shutdown is resolved then (FlushUnmatched), not
// left kept in the store.
func TestHeldReceiptResolvedAtShutdown(t *testing.T) {
	st := openTestBolt(t)
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st})
	c := NewCarrier(config.Carrier{Name: "cm", ResponseTimeout: config.Duration(time.Hour)}, nil, zap.NewNop())
	d.SetCarriers([]*Carrier{c})
	a := sentMessage(t, st, d, "R1", 1)
	c.submitStarted(time.Now())
	sm, body := carrierReceipt(t, "R1", "UNDELIV")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	// a is recent: not held (registered_delivery 1).
	if got, _ := st.GetMessage(context.Background(), a.ID); got.State != store.StateDone {
		t.Fatalf("a recent message's receipt was held: %+v", got)
	}
	b := sentMessage(t, st, d, "R2", 0) // no receipt asked: held
	sm, body = carrierReceipt(t, "R2", "UNDELIV")
	c.submitStarted(b.Created.Add(time.Millisecond)) // after b
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	if got, _ := st.GetMessage(context.Background(), b.ID); got.State != store.StateSent {
		t.Fatalf("the receipt was not held: %+v", got)
	}
	cancel()
	d.Wait()
	d.FlushUnmatched(context.Background())
	if got, err := st.GetMessage(context.Background(), b.ID); err != nil || got.State != store.StateDone || got.FinalStat != "UNDELIV" {
		t.Fatalf("after shutdown: %+v %v, want done UNDELIV", got, err)
	}
}
