package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
)

// A part reported delivered twice counts once: a message of two parts
// whose first part's report came twice is not DELIVRD until its second
// part's report comes, on time and after the receipt timer alike.
func TestRepeatedPartReportDoesNotCompleteTheMessage(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	ctx := context.Background()
	report := func(m *store.Message, part int) {
		fo.handleReport(ctx, modem.Report{ID: m.ID, Part: part, Parts: 2, Modem: "m0",
			Status: &sms.StatusReport{MR: m.ModemRefs[part-1], Status: 0}})
	}
	two := func(m *store.Message) {
		m.State, m.RegDeliv, m.Modem, m.ModemRefs = store.StateModemSent, 0x01, "m0", []int{10, 11}
	}

	m := putTestMessage(t, st, d, "acct", two)
	report(m, 1)
	report(m, 1)
	if got, err := st.GetMessage(ctx, m.ID); err != nil || got.State != store.StateModemSent {
		t.Fatalf("after part 1 reported twice the message is %+v, %v; want still modemsent (part 2 not reported)", got, err)
	}
	if stats, _ := heldReceipts(t, st, "acct"); len(stats) != 0 {
		t.Fatalf("receipts %v after part 1 only, want none", stats)
	}
	report(m, 2)
	if stats, _ := heldReceipts(t, st, "acct"); strings.Join(stats, " ") != "DELIVRD" {
		t.Fatalf("receipts %v after both parts, want DELIVRD", stats)
	}

	// The same after the timer gave ACCEPTD: recorded DELIVRD only once
	// both parts said so.
	late := putTestMessage(t, st, d, "late", two)
	fo.fireTimer(ctx, late.ID)
	report(late, 1)
	report(late, 1)
	if got, err := st.GetMessage(ctx, late.ID); err != nil || got.FinalStat != "ACCEPTD" {
		t.Fatalf("after part 1 reported twice late the message is %+v, %v; want still ACCEPTD", got, err)
	}
	report(late, 2)
	if got, err := st.GetMessage(ctx, late.ID); err != nil || got.FinalStat != "DELIVRD" {
		t.Fatalf("after both parts reported late the message is %+v, %v; want DELIVRD recorded", got, err)
	}
}

// readCountingStore counts PendingTimers calls and fails them while fail
// is set.
type readCountingStore struct {
	store.Store
	reads atomic.Int32
	fail  atomic.Bool
}

func (s *readCountingStore) PendingTimers(ctx context.Context, limit int) ([]string, error) {
	s.reads.Add(1)
	if s.fail.Load() {
		return nil, errors.New("store down (test)")
	}
	return s.Store.PendingTimers(ctx, limit)
}

// reportPool is a modem pool whose status reports the test writes.
type reportPool struct {
	fakePool
	ch chan modem.Report
}

func (p *reportPool) Reports() <-chan modem.Report { return p.ch }

// putModemSent stores a message modem name sent as parts with TP-MRs refs,
// to dest, with its receipt timer due at due.
func putModemSent(t *testing.T, st store.Store, d *Dispatcher, account, name, dest string, refs []int, due time.Time) *store.Message {
	t.Helper()
	m := putTestMessage(t, st, d, account, func(m *store.Message) {
		m.State, m.RegDeliv, m.Modem, m.ModemRefs, m.Dest = store.StateModemSent, 0x01, name, refs, dest
	})
	if err := st.SetTimer(context.Background(), m.ID, due); err != nil {
		t.Fatal(err)
	}
	return m
}

// A status report the pool matched to no send of this process (ID "":
// the send was made before a restart) is matched against the stored
// messages waiting for their reports: by modem, TP-MR among the parts'
// and recipient, the newest first, and gives the message its receipt; a
// burst of them reads the store once.
func TestStatusReportMatchedFromTheStore(t *testing.T) {
	bolt := openTestBolt(t)
	st := &readCountingStore{Store: bolt}
	d := newTestDispatcher(t, st)
	core, logs := observer.New(zap.InfoLevel)
	pool := &reportPool{ch: make(chan modem.Report)}
	fo := NewFailover(d, pool, FailoverConfig{ModemReceiptTimeout: time.Hour, CountryCode: "86"}, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fo.reports(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	now := time.Now()
	older := putModemSent(t, bolt, d, "older", "m0", "13800138000", []int{7}, now.Add(50*time.Minute))
	newer := putModemSent(t, bolt, d, "newer", "m0", "13800138000", []int{7}, now.Add(time.Hour))
	long := putModemSent(t, bolt, d, "long", "m0", "13900139000", []int{20, 21}, now.Add(55*time.Minute))
	other := putModemSent(t, bolt, d, "other", "m1", "13800138000", []int{7}, now.Add(58*time.Minute))
	elsewhere := putModemSent(t, bolt, d, "elsewhere", "m0", "13700137000", []int{30}, now.Add(57*time.Minute))

	send := func(r modem.Report) {
		t.Helper()
		select {
		case pool.ch <- r:
		case <-time.After(10 * time.Second):
			t.Fatal("the reports loop does not read")
		}
	}
	rep := func(name string, mr int, ra string, tpst byte) modem.Report {
		return modem.Report{Modem: name, Status: &sms.StatusReport{MR: mr, Recipient: ra, Status: tpst}}
	}
	send(rep("m0", 7, "+8613800138000", 0))     // the newer of the two under MR 7
	send(rep("m0", 7, "13800138000", 0))        // then the older one (the newer's final report forgot it)
	send(rep("m0", 21, "+8613900139000", 0x41)) // part 2 of 2, failed
	send(rep("m0", 30, "+8613600136000", 0))    // MR 30, but another recipient
	send(rep("m0", 99, "+8613800138000", 0))    // no such send
	send(modem.Report{})                        // read only once the reports before it were handled

	for _, c := range []struct {
		m    *store.Message
		want string
	}{{newer, "DELIVRD"}, {older, "DELIVRD"}, {long, "UNDELIV"}, {other, ""}, {elsewhere, ""}} {
		stats, ids := heldReceipts(t, bolt, c.m.Account)
		if strings.Join(stats, " ") != c.want {
			t.Errorf("%s: receipts %v, want %q", c.m.Account, stats, c.want)
		}
		if len(ids) == 1 && ids[0] != platformID(c.m.ID) {
			t.Errorf("%s: receipt for %s, want %s", c.m.Account, ids[0], platformID(c.m.ID))
		}
	}
	if n := st.reads.Load(); n > 2 {
		t.Errorf("the store was read %d times for 5 reports, want the index read once (twice at most: a miss after %v)",
			n, storedIndexFresh)
	}
	matched := logs.FilterMessage("status report matched from the store after a restart").All()
	if len(matched) != 3 {
		t.Fatalf("%d info lines of a report matched from the store, want 3", len(matched))
	}
	if f := matched[2].ContextMap(); f["id"] != long.ID || f["part"] != int64(2) || f["parts"] != int64(2) {
		t.Errorf("log of the part report: %v, want id %s part 2 of 2", f, long.ID)
	}
}

// A report that came while the store could not be read is not lost: it is
// logged at warn, kept, and matched once the store answers again.
func TestStatusReportKeptWhileTheStoreFails(t *testing.T) {
	bolt := openTestBolt(t)
	st := &readCountingStore{Store: bolt}
	d := newTestDispatcher(t, st)
	core, logs := observer.New(zap.InfoLevel)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour, CountryCode: "86"}, zap.New(core))
	ctx := context.Background()
	m := putModemSent(t, bolt, d, "acct", "m0", "13800138000", []int{5}, time.Now().Add(time.Hour))

	st.fail.Store(true)
	r := modem.Report{Modem: "m0", Status: &sms.StatusReport{MR: 5, Recipient: "+8613800138000", Status: 0}}
	if _, ok := fo.matchStored(ctx, r); ok {
		t.Fatal("matched with the store failing")
	}
	if n := logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("store unreadable").Len(); n != 1 {
		t.Fatalf("%d warn lines of the failed read, want 1", n)
	}
	if got := fo.retryStored(ctx); len(got) != 0 {
		t.Fatalf("retry with the store still failing matched %v", got)
	}
	st.fail.Store(false)
	got := fo.retryStored(ctx)
	if len(got) != 1 || got[0].ID != m.ID || got[0].Part != 1 || got[0].Parts != 1 {
		t.Fatalf("retry after the store came back = %+v, want the report of %s, part 1 of 1", got, m.ID)
	}
	if again := fo.retryStored(ctx); len(again) != 0 {
		t.Fatalf("a second retry gave %v again", again)
	}
}

// getFailingStore fails GetMessage while fail is set (a store outage).
type getFailingStore struct {
	store.Store
	fail atomic.Bool
}

func (s *getFailingStore) GetMessage(ctx context.Context, id string) (*store.Message, error) {
	if s.fail.Load() {
		return nil, errors.New("store down (test)")
	}
	return s.Store.GetMessage(ctx, id)
}

// A status report of this process's send that comes while the store
// cannot be read is kept and handled again once it can: the platform gets
// the report's outcome, not ACCEPTD from the receipt timer (an independent
// tester's Redis restarts turned 8 of 60 DELIVRD into ACCEPTD).
func TestStatusReportWithItsIDKeptWhileTheStoreFails(t *testing.T) {
	bolt := openTestBolt(t)
	st := &getFailingStore{Store: bolt}
	d := newTestDispatcher(t, st)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour, CountryCode: "86"}, zap.NewNop())
	ctx := context.Background()
	m := putModemSent(t, bolt, d, "acct", "m0", "13800138000", []int{5}, time.Now().Add(time.Hour))
	r := modem.Report{ID: m.ID, Part: 1, Parts: 1, Modem: "m0", Status: &sms.StatusReport{MR: 5, Recipient: "+8613800138000", Status: 0}}

	st.fail.Store(true)
	fo.handleReport(ctx, r)
	st.fail.Store(false)
	if got, _ := bolt.GetMessage(ctx, m.ID); got.State != store.StateModemSent {
		t.Fatalf("state %s with the store failing, want still modemsent", got.State)
	}
	kept := fo.retryStored(ctx)
	if len(kept) != 1 || kept[0].ID != m.ID {
		t.Fatalf("kept %+v, want the report of %s", kept, m.ID)
	}
	fo.handleReport(ctx, kept[0])
	got, err := bolt.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "DELIVRD" {
		t.Fatalf("after the store came back: %+v, %v; want done, DELIVRD", got, err)
	}
}
