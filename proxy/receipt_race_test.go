package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
)

// Tests of the receipt, store-outage and modem-record paths against a real
// bbolt store, with faults injected by faultStore (a unit-test wrapper).

// faultStore wraps a real store; its hooks, when set, run before the real
// call and may fail it.
type faultStore struct {
	store.Store
	find   func(carrierID string)                           // before FindByCarrierID and FindOrStash
	finish func(from []store.State, m *store.Message) error // before FinishMessage
	put    func(m *store.Message) error                     // before PutMessage
	probe  func() error                                     // before ProbeWrite
	add    func() error                                     // before AddDelivery
}

func (s *faultStore) AddDelivery(ctx context.Context, d *store.Delivery, m *store.Message) error {
	if s.add != nil {
		if err := s.add(); err != nil {
			return err
		}
	}
	return s.Store.AddDelivery(ctx, d, m)
}

func (s *faultStore) FindByCarrierID(ctx context.Context, carrier, carrierID string) (*store.Message, error) {
	if s.find != nil {
		s.find(carrierID)
	}
	return s.Store.FindByCarrierID(ctx, carrier, carrierID)
}

// FindOrStash runs the find hook, then the store's own.
func (s *faultStore) FindOrStash(ctx context.Context, carrier, carrierID string, body []byte, final bool) (*store.Message, error) {
	if s.find != nil {
		s.find(carrierID)
	}
	return s.Store.FindOrStash(ctx, carrier, carrierID, body, final)
}

func (s *faultStore) FinishMessage(ctx context.Context, from []store.State, m *store.Message, d *store.Delivery) (bool, error) {
	if s.finish != nil {
		if err := s.finish(from, m); err != nil {
			return false, err
		}
	}
	return s.Store.FinishMessage(ctx, from, m, d)
}

func (s *faultStore) PutMessage(ctx context.Context, m *store.Message) error {
	if s.put != nil {
		if err := s.put(m); err != nil {
			return err
		}
	}
	return s.Store.PutMessage(ctx, m)
}

func (s *faultStore) ProbeWrite(ctx context.Context) error {
	if s.probe != nil {
		if err := s.probe(); err != nil {
			return err
		}
	}
	return s.Store.ProbeWrite(ctx)
}

// errInjected is a store failure made by a test.
var errInjected = errors.New("injected store write failure")

func openTestBolt(t *testing.T) store.Store {
	t.Helper()
	st, err := store.OpenBolt(t.TempDir(), 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// newTestDispatcher makes a dispatcher on st, stopped at the test's end.
func newTestDispatcher(t *testing.T, st store.Store) *Dispatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st})
	t.Cleanup(func() { cancel(); d.Wait() })
	return d
}

// waitCond polls cond (a state another goroutine changes) until it holds;
// the deadline only catches a hang.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sentMessage writes a message the carrier accepted (state sent, linked to
// carrierID) and returns it.
func sentMessage(t *testing.T, st store.Store, d *Dispatcher, carrierID string, regDeliv byte) *store.Message {
	t.Helper()
	m := putTestMessage(t, st, d, "acct", func(m *store.Message) {
		// Keyed as the carrier's submit_sm_resp would be (receipt_id
		// as_is; a decimal key of the other modes stays as it is).
		m.Carrier, m.CarrierID, m.RegDeliv = "cm", canonicalCarrierID("as_is", carrierID, false), regDeliv
	})
	return m
}

// carrierReceipt is a receipt deliver_sm body as carrier "cm" would send it
// for its message carrierID.
func carrierReceipt(t *testing.T, carrierID, stat string) (*ShortMessage, []byte) {
	t.Helper()
	sub, err := ParseShortMessage(goldenSubmit(t, "02 4F60", ""))
	if err != nil {
		t.Fatal(err)
	}
	body := buildReceipt(&store.Message{ID: carrierID, Created: time.Now()}, sub, stat, "000", time.Now())
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	return sm, body
}

// heldReceipts lists the stat of each receipt held for the account, oldest
// first, with the id each names.
func heldReceipts(t *testing.T, st store.Store, account string) (stats, ids []string) {
	t.Helper()
	list, err := st.PendingDeliveries(context.Background(), account, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, del := range list {
		sm, err := ParseShortMessage(del.Body)
		if err != nil {
			t.Fatal(err)
		}
		id, stat, _ := receiptFields(sm.Payload())
		stats, ids = append(stats, stat), append(ids, id)
	}
	return stats, ids
}

// A carrier that resends a receipt while the first copy is still being
// handled (its deliver_sm_resp timer ran out on a slow store) gets OK for
// both, and the platform gets one receipt. Both copies are held at the
// store read until both have read the message in state sent: the race the
// reviewer found, made certain.
func TestDuplicateCarrierReceiptDeliveredOnce(t *testing.T) {
	st := openTestBolt(t)
	var arrived sync.WaitGroup
	arrived.Add(2)
	fs := &faultStore{Store: st, find: func(string) { arrived.Done(); arrived.Wait() }}
	d := newTestDispatcher(t, fs)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C1", 1)
	sm, body := carrierReceipt(t, "C1", "DELIVRD")

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
				t.Errorf("deliver_sm answered %s, want OK (a duplicate is answered OK)", StatusString(s))
			}
		})
	}
	wg.Wait()
	stats, ids := heldReceipts(t, st, "acct")
	if len(stats) != 1 || ids[0] != m.ID {
		t.Fatalf("platform receipts %v for %v, want one DELIVRD for %s", stats, ids, m.ID)
	}
	got, err := st.GetMessage(context.Background(), m.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "DELIVRD" {
		t.Fatalf("message after the receipt: %+v, %v; want done, DELIVRD", got, err)
	}
}

// Intermediate receipts (ENROUTE, ACCEPTD: registered_delivery bit 4) reach
// the platform without finishing the message; the final receipt that
// follows reaches it too and finishes it; a resent final receipt and a late
// intermediate one do not reach it again.
func TestIntermediateReceiptsDoNotSwallowFinal(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C2", 0x11) // receipt on success or failure, and intermediate notifications
	for _, stat := range []string{"ENROUTE", "ACCEPTD", "DELIVRD", "DELIVRD", "ENROUTE"} {
		sm, body := carrierReceipt(t, "C2", stat)
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("%s receipt answered %s", stat, StatusString(s))
		}
		if stat == "ACCEPTD" {
			got, err := st.GetMessage(context.Background(), m.ID)
			if err != nil || got.State != store.StateSent || got.FinalStat != "" {
				t.Fatalf("after intermediate receipts the message is %+v, %v; want still sent, not final", got, err)
			}
		}
	}
	stats, _ := heldReceipts(t, st, "acct")
	if want := []string{"ENROUTE", "ACCEPTD", "DELIVRD"}; len(stats) != len(want) ||
		stats[0] != want[0] || stats[1] != want[1] || stats[2] != want[2] {
		t.Fatalf("platform receipts %v, want %v", stats, want)
	}
	got, err := st.GetMessage(context.Background(), m.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "DELIVRD" {
		t.Fatalf("message after its final receipt: %+v, %v; want done, DELIVRD", got, err)
	}
}

// Upstreams built on Kannel report "delivered to the SMSC" as BUFFRED (and
// take ACKED and BUFFERD alike): intermediate, not an outcome. Taken as final,
// the DELIVRD that follows was dropped as a duplicate, and the platform kept
// BUFFRED as the message's outcome.
func TestKannelBufferedReceiptsAreIntermediate(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C3", 0x11)
	for _, stat := range []string{"BUFFRED", "ACKED", "BUFFERD", "DELIVRD"} {
		sm, body := carrierReceipt(t, "C3", stat)
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("%s receipt answered %s", stat, StatusString(s))
		}
		if stat != "DELIVRD" {
			got, err := st.GetMessage(context.Background(), m.ID)
			if err != nil || got.State != store.StateSent || got.FinalStat != "" {
				t.Fatalf("after %s the message is %+v, %v; want still sent, not final", stat, got, err)
			}
		}
	}
	stats, _ := heldReceipts(t, st, "acct")
	if want := []string{"BUFFRED", "ACKED", "BUFFERD", "DELIVRD"}; !slices.Equal(stats, want) {
		t.Fatalf("platform receipts %v, want %v", stats, want)
	}
	got, err := st.GetMessage(context.Background(), m.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "DELIVRD" {
		t.Fatalf("message after its final receipt: %+v, %v; want done, DELIVRD", got, err)
	}
}

// A store that answers reads but refuses writes keeps submits refused: the
// outage probe writes (ProbeWrite), it does not ping. Once writes succeed
// again, submits are accepted again.
func TestStoreOutageProbeNeedsAWrite(t *testing.T) {
	st := openTestBolt(t)
	var refuse atomic.Bool
	refuse.Store(true)
	probes := make(chan bool, 100)
	fs := &faultStore{Store: st, probe: func() error {
		r := refuse.Load()
		select {
		case probes <- r:
		default:
		}
		if r {
			return errInjected
		}
		return nil
	}}
	d := newTestDispatcher(t, fs)
	subBody := goldenSubmit(t, "02 4F60", "")
	sm, err := ParseShortMessage(subBody)
	if err != nil {
		t.Fatal(err)
	}
	d.noteStore(storeOpSubmit, errInjected) // a failed write, as a submit's link write would see
	for range 3 {                           // three refused probe writes (Ping answers all along)
		select {
		case <-probes:
		case <-time.After(20 * time.Second):
			t.Fatal("the outage probe never tried a write")
		}
	}
	if out := d.Submit(context.Background(), "acct", sm, subBody); out.Status != statusMsgQFul {
		t.Fatalf("submit while the store refuses writes answered %s, want ESME_RMSGQFUL", StatusString(out.Status))
	}
	refuse.Store(false)
	waitCond(t, "the store marked up after a successful probe write", func() bool { return !d.storeDown.Load() })
}

// After Wait began, no background work starts (a probe, a receipt handler):
// the WaitGroup is never added to while it is waited on.
func TestNoBackgroundWorkAfterWait(t *testing.T) {
	st := openTestBolt(t)
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st})
	cancel()
	d.Wait()
	d.noteStore(storeOpSubmit, errInjected)
	if d.storeProbing.Load() {
		t.Error("a store probe started after Wait")
	}
	if d.spawn(func() {}) {
		t.Error("spawn ran work after Wait")
	}
}

// An early receipt taken by the link write (LinkCarrier) is delivered even
// when the store fails for longer than the link's retry window: it is
// retried in the background until the store takes it.
func TestEarlyReceiptSurvivesSlowStore(t *testing.T) {
	st := openTestBolt(t)
	var failing atomic.Bool
	failing.Store(true)
	fail := func() error {
		if failing.Load() {
			return errInjected
		}
		return nil
	}
	fs := &faultStore{Store: st, add: fail, finish: func([]store.State, *store.Message) error { return fail() }}
	d := newTestDispatcher(t, fs)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C3", 1)
	_, body := carrierReceipt(t, "C3", "DELIVRD")
	d.deliverOrphan(context.Background(), c, m, body) // gives up waiting after linkRetryFor
	if stats, _ := heldReceipts(t, st, "acct"); len(stats) != 0 {
		t.Fatalf("receipts %v written while the store failed", stats)
	}
	failing.Store(false)
	waitCond(t, "the early receipt delivered once the store works", func() bool {
		stats, _ := heldReceipts(t, st, "acct")
		return len(stats) == 1
	})
}

// registered_delivery 2 (SMPP 3.4 §5.2.17) asks for a receipt only when the
// final outcome is a failure. A carrier that sends its DELIVRD receipt anyway
// (many treat 2 as 1) finishes the message, but the platform gets no
// receipt, as from the modem path (Failover.finish); a failure still gets one.
func TestFailureOnlyReceiptsOnCarrierPath(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	ok := sentMessage(t, st, d, "C3", 2)
	failed := sentMessage(t, st, d, "C4", 2)
	for id, stat := range map[string]string{"C3": "DELIVRD", "C4": "UNDELIV"} {
		sm, body := carrierReceipt(t, id, stat)
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("%s receipt answered %s", stat, StatusString(s))
		}
	}
	stats, ids := heldReceipts(t, st, "acct")
	if len(stats) != 1 || stats[0] != "UNDELIV" || ids[0] != failed.ID {
		t.Fatalf("platform receipts %v for %v, want only UNDELIV for %s", stats, ids, failed.ID)
	}
	got, err := st.GetMessage(context.Background(), ok.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "DELIVRD" {
		t.Fatalf("delivered message: %+v, %v; want done, DELIVRD (query_sm still knows)", got, err)
	}
}

// Intermediate receipts (ENROUTE and its kin) reach the platform only when
// the submit asked for intermediate notifications (registered_delivery bit
// 4, 0x10, SMPP 3.4 §5.2.17): a submit that asked for the final receipt
// alone gets that one only.
func TestIntermediateReceiptsOnlyWhenAsked(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	sentMessage(t, st, d, "C9", 0x01) // the final receipt only
	for _, stat := range []string{"ENROUTE", "ACCEPTD", "BUFFRED", "DELIVRD"} {
		sm, body := carrierReceipt(t, "C9", stat)
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("%s receipt answered %s", stat, StatusString(s))
		}
	}
	stats, _ := heldReceipts(t, st, "acct")
	if want := []string{"DELIVRD"}; !slices.Equal(stats, want) {
		t.Fatalf("platform receipts %v, want %v", stats, want)
	}
}
