package proxy

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
)

// unmatchedSetup is a dispatcher on st whose MO account is "acct", with
// carrier "cm" passing unmatched receipts after after.
func unmatchedSetup(t *testing.T, st store.Store, after time.Duration) (*Dispatcher, *Carrier) {
	t.Helper()
	d := newTestDispatcher(t, st)
	d.SetMOAccount("acct")
	c := NewCarrier(config.Carrier{Name: "cm", UnmatchedReceiptsAfter: config.Duration(after)}, nil, zap.NewNop())
	d.SetCarriers([]*Carrier{c})
	return d, c
}

// held is the bodies of the deliveries held for account, oldest first.
func held(t *testing.T, st store.Store, account string) [][]byte {
	t.Helper()
	list, err := st.PendingDeliveries(context.Background(), account, 100)
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for _, del := range list {
		bodies = append(bodies, del.Body)
	}
	return bodies
}

// A receipt no message matches (one of a message the platform sent the
// carrier directly before it was repointed) reaches the platform's MO
// account byte for byte as the carrier sent it, once the carrier's
// unmatched_receipts_after has passed, through the store timers' loop.
func TestUnmatchedReceiptPassedAsSent(t *testing.T) {
	st := openTestBolt(t)
	d, c := unmatchedSetup(t, st, 50*time.Millisecond)
	path, _ := attachMessageLog(t, d)
	sm, body := carrierReceipt(t, "PRE-7781", "DELIVRD")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	if got := held(t, st, "acct"); len(got) != 0 {
		t.Fatalf("%d deliveries held at once, want none before unmatched_receipts_after", len(got))
	}
	d.StartTimers()
	waitCond(t, "the unmatched receipt held for the platform", func() bool { return len(held(t, st, "acct")) == 1 })
	if got := held(t, st, "acct")[0]; !bytes.Equal(got, body) {
		t.Fatalf("body held for the platform\n%x\nwant the carrier's\n%x", got, body)
	}
	if _, err := st.TakeOrphan(context.Background(), "cm", "PRE-7781"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the receipt is still kept after it was passed on: %v", err)
	}
	ev := waitEvent(t, d, path, "unmatched_receipt")
	wantFields(t, ev, "account", "acct", "carrier", "cm", "carrier_id", "PRE-7781", "id", "", "stat", "DELIVRD")
}

// A receipt that overtook its link is the link's: its timer, firing after
// the link took it, gives the platform no raw copy.
func TestUnmatchedReceiptLinkedMeanwhileNotPassed(t *testing.T) {
	st := openTestBolt(t)
	d, c := unmatchedSetup(t, st, time.Hour)
	sm, body := carrierReceipt(t, "K55", "DELIVRD")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	m := &store.Message{ID: d.ids.Next(), Account: "acct", Carrier: "cm", CarrierID: "K55", State: store.StateSent, Created: time.Now()}
	orphan, err := st.LinkCarrier(context.Background(), m)
	if err != nil || !bytes.Equal(orphan, body) {
		t.Fatalf("the link took %x, %v; want the receipt", orphan, err)
	}
	d.fireUnmatched(context.Background(), unmatchedTimerID("cm", "K55"))
	if got := held(t, st, "acct"); len(got) != 0 {
		t.Fatalf("%d deliveries held, want none: the link took the receipt", len(got))
	}
}

// With unmatched_receipts_after 0 (or after a reload set it so) a
// receipt is kept for a late link, never passed on.
func TestUnmatchedReceiptKeptWhenOff(t *testing.T) {
	st := openTestBolt(t)
	d, c := unmatchedSetup(t, st, time.Hour)
	sm, body := carrierReceipt(t, "K56", "UNDELIV")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	c.cfg.Store(&config.Carrier{Name: "cm"}) // a reload: unmatched_receipts_after 0
	d.fireUnmatched(context.Background(), unmatchedTimerID("cm", "K56"))
	if got := held(t, st, "acct"); len(got) != 0 {
		t.Fatalf("%d deliveries held, want none with unmatched_receipts_after 0", len(got))
	}
	if got, err := st.TakeOrphan(context.Background(), "cm", "K56"); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("kept receipt %x, %v; want it still kept", got, err)
	}
}

// A store failure while the receipt is written for the platform puts it
// back: the timer fires again and then passes it, once.
func TestUnmatchedReceiptStoreFailureKeepsIt(t *testing.T) {
	st := openTestBolt(t)
	fail := true
	fs := &faultStore{Store: st, add: func() error {
		if fail {
			return errInjected
		}
		return nil
	}}
	d, c := unmatchedSetup(t, fs, time.Hour)
	sm, body := carrierReceipt(t, "K57", "DELIVRD")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	id := unmatchedTimerID("cm", "K57")
	if d.passUnmatched(context.Background(), "cm", "K57") {
		t.Fatal("passUnmatched reported done while the store failed")
	}
	fail = false
	d.fireUnmatched(context.Background(), id)
	d.fireUnmatched(context.Background(), id) // a second firing (a lease passed) passes nothing more
	if got := held(t, st, "acct"); len(got) != 1 || !bytes.Equal(got[0], body) {
		t.Fatalf("held %d deliveries, want the receipt once", len(got))
	}
}

func TestUnmatchedTimerID(t *testing.T) {
	for _, tc := range []struct{ carrier, key string }{
		{"cm", "K57"}, {"a:b", "1:2"}, {"", ""}, {"mobile", ""}, {"x", "unmatched:1:x:y"},
	} {
		id := unmatchedTimerID(tc.carrier, tc.key)
		c, k, ok := parseUnmatchedTimer(id)
		if !ok || c != tc.carrier || k != tc.key {
			t.Errorf("parse(%q) = %q, %q, %v; want %q, %q", id, c, k, ok, tc.carrier, tc.key)
		}
	}
	for _, id := range []string{"0322aabbcc", "unmatched:", "unmatched:x:cm:1", "unmatched:5:cm:1", "unmatched:-1:cm", "unmatched:2:cmX1", "unmatched:02:00:"} {
		if c, k, ok := parseUnmatchedTimer(id); ok {
			t.Errorf("parse(%q) = %q, %q, true; want not a receipt timer", id, c, k)
		}
	}
}

func FuzzUnmatchedTimerID(f *testing.F) {
	f.Add("cm", "K57", "unmatched:2:cm:C57")
	f.Add("a:b", "", "unmatched:9:")
	f.Fuzz(func(t *testing.T, carrier, key, id string) {
		c, k, ok := parseUnmatchedTimer(unmatchedTimerID(carrier, key))
		if !ok || c != carrier || k != key {
			t.Fatalf("round trip of %q, %q gave %q, %q, %v", carrier, key, c, k, ok)
		}
		if c, k, ok := parseUnmatchedTimer(id); ok && unmatchedTimerID(c, k) != id {
			t.Fatalf("parse(%q) = %q, %q: not its id", id, c, k)
		}
	})
}

// unmatched_receipts_to sends a carrier's unmatched receipts to the account
// named (the platform's connection for that carrier), not the MO account.
func TestUnmatchedReceiptToTheCarriersAccount(t *testing.T) {
	st := openTestBolt(t)
	d, c := unmatchedSetup(t, st, time.Hour)
	cfg := *c.cfg.Load()
	cfg.UnmatchedReceiptsTo = "cmcc-conn"
	c.cfg.Store(&cfg)
	sm, body := carrierReceipt(t, "K58", "DELIVRD")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	d.fireUnmatched(context.Background(), unmatchedTimerID("cm", "K58"))
	if got := held(t, st, "acct"); len(got) != 0 {
		t.Fatalf("%d deliveries for the MO account, want none", len(got))
	}
	if got := held(t, st, "cmcc-conn"); len(got) != 1 || !bytes.Equal(got[0], body) {
		t.Fatalf("%d deliveries for the carrier's account, want the receipt", len(got))
	}
}

// A kept receipt that its link takes within unmatchedLook (the usual race
// with a fast SMSC) costs no timer in the store; one still unmatched then
// gets its timer, due unmatched_receipts_after from its arrival.
func TestUnmatchedTimerOnlyForReceiptsStillUnmatched(t *testing.T) {
	old := unmatchedLook
	unmatchedLook = 20 * time.Millisecond
	t.Cleanup(func() { unmatchedLook = old })
	st := openTestBolt(t)
	d, c := unmatchedSetup(t, st, 30*time.Millisecond)
	for _, id := range []string{"RACE1", "ALONE1"} {
		sm, body := carrierReceipt(t, id, "DELIVRD")
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
		}
	}
	m := &store.Message{ID: d.ids.Next(), Account: "acct", Carrier: "cm", CarrierID: "RACE1", State: store.StateSent, Created: time.Now()}
	if _, err := st.LinkCarrier(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	var got []string
	waitCond(t, "the unmatched receipt's timer", func() bool {
		ids, err := st.ClaimTimers(context.Background(), time.Hour, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids...)
		return len(got) > 0
	})
	if len(got) != 1 || got[0] != unmatchedTimerID("cm", "ALONE1") {
		t.Fatalf("timers %q, want only the unmatched receipt's", got)
	}
}

// A store failure while an intermediate receipt is passed on puts it back
// as the receipt side keeps one: a final receipt that came meanwhile is not
// replaced by it.
func TestUnmatchedPutBackKeepsAFinalReceipt(t *testing.T) {
	st := openTestBolt(t)
	var d *Dispatcher
	var c *Carrier
	_, final := carrierReceipt(t, "K59", "DELIVRD")
	fs := &faultStore{Store: st}
	fs.add = func() error {
		fs.add = nil
		smF, _ := ParseShortMessage(final)
		if s := d.carrierDeliver(context.Background(), c, smF, final); s != statusOK { // the final one comes meanwhile
			t.Errorf("final receipt answered %s", StatusString(s))
		}
		return errInjected
	}
	d, c = unmatchedSetup(t, fs, time.Hour)
	sm, body := carrierReceipt(t, "K59", "ENROUTE")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	if d.passUnmatched(context.Background(), "cm", "K59") {
		t.Fatal("passUnmatched reported done while the store failed")
	}
	if got, err := st.TakeOrphan(context.Background(), "cm", "K59"); err != nil || !bytes.Equal(got, final) {
		t.Fatalf("kept receipt %q, %v; want the final one", got, err)
	}
}

// A shutdown within unmatchedLook of a kept receipt writes its timer, so
// that the next start (or a sibling gateway) passes it on.
func TestUnmatchedTimerWrittenAtShutdown(t *testing.T) {
	old := unmatchedLook
	unmatchedLook = time.Hour
	t.Cleanup(func() { unmatchedLook = old })
	st := openTestBolt(t)
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st})
	d.SetMOAccount("acct")
	c := NewCarrier(config.Carrier{Name: "cm", UnmatchedReceiptsAfter: config.Duration(time.Millisecond)}, nil, zap.NewNop())
	d.SetCarriers([]*Carrier{c})
	sm, body := carrierReceipt(t, "K60", "DELIVRD")
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	cancel()
	d.Wait()
	d.FlushUnmatched(context.Background())
	var got []string
	waitCond(t, "the receipt's timer due", func() bool {
		ids, err := st.ClaimTimers(context.Background(), time.Hour, 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ids...)
		return len(got) > 0
	})
	if got[0] != unmatchedTimerID("cm", "K60") {
		t.Fatalf("timers %q, want the kept receipt's", got)
	}
}

// A receipt whose receipted_message_id and text id differ is kept under
// the TLV's; its message, linked after the receipt came, is linked under
// the text's id (the id its submit_sm_resp gave). When the unmatched
// timer fires, the receipt is the message's: the platform gets it with
// our id and the message is done, not a raw copy for the MO account.
func TestUnmatchedReceiptFindsALinkUnderItsOtherID(t *testing.T) {
	st := openTestBolt(t)
	d, c := unmatchedSetup(t, st, time.Hour)
	deliverReceiptIDs(t, d, c, "msg-7x", "internal-99")
	if got := held(t, st, "acct"); len(got) != 0 {
		t.Fatalf("%d deliveries held at once, want the receipt kept for its link", len(got))
	}
	m := &store.Message{ID: d.ids.Next(), Account: "acct", Carrier: "cm", CarrierID: "msg-7x", RegDeliv: 1,
		State: store.StateSent, Created: time.Now()}
	if orphan, err := st.LinkCarrier(context.Background(), m); err != nil || orphan != nil {
		t.Fatalf("the link under the text's id took %x, %v; want nothing (the receipt is kept under the TLV's)", orphan, err)
	}
	d.fireUnmatched(context.Background(), unmatchedTimerID("cm", "internal-99"))
	waitCond(t, "the receipt delivered through the link", func() bool {
		rec, err := st.GetMessage(context.Background(), m.ID)
		return err == nil && rec.State == store.StateDone
	})
	rec, _ := st.GetMessage(context.Background(), m.ID)
	if rec.FinalStat != "DELIVRD" {
		t.Fatalf("message after the timer: %s %s, want done DELIVRD", rec.State, rec.FinalStat)
	}
	stats, ids := heldReceipts(t, st, "acct")
	if len(stats) != 1 || ids[0] != platformID(m.ID) || stats[0] != "DELIVRD" {
		t.Fatalf("platform receipts %v for %v, want one DELIVRD for %s", stats, ids, platformID(m.ID))
	}
}
