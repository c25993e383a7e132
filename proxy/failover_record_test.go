package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// linkFaultStore fails LinkCarrier (and a PutMessage of a carrier-accepted
// record) while failing is set.
type linkFaultStore struct {
	*faultStore
	failing atomic.Bool
}

func (s *linkFaultStore) LinkCarrier(ctx context.Context, m *store.Message) ([]byte, error) {
	if s.failing.Load() {
		return nil, errInjected
	}
	return s.faultStore.LinkCarrier(ctx, m)
}

// queuedForModem writes a message queued for the modem pool (carrier cm,
// queued because cm was down) and claims its queue entry for fo's worker.
func queuedForModem(t *testing.T, st store.Store, d *Dispatcher, fo *Failover) (*store.Message, string) {
	t.Helper()
	ctx := context.Background()
	m := putTestMessage(t, st, d, "acct", func(m *store.Message) { m.Carrier, m.RegDeliv = "cm", 1 })
	if err := fo.enqueue(ctx, m, "down", time.Now()); err != nil {
		t.Fatal(err)
	}
	id, err := st.ClaimModem(ctx, fo.config().Worker, time.Minute)
	if err != nil || id != m.ID {
		t.Fatalf("ClaimModem = %q, %v; want %s", id, err, m.ID)
	}
	return m, id
}

// A modem send whose "modemsent" record fails to write at first is
// recorded once the store takes it, and only then is its queue entry
// acked: the status report that follows gives the platform its receipt.
func TestModemSentRecordRetriedUntilDurable(t *testing.T) {
	st := openTestBolt(t)
	var fails atomic.Int32
	fails.Store(3)
	failSent := func(m *store.Message) error {
		if m.State == store.StateModemSent && fails.Add(-1) >= 0 {
			return errInjected
		}
		return nil
	}
	fs := &faultStore{Store: st, put: failSent, finish: func(_ []store.State, m *store.Message) error { return failSent(m) }}
	d := newTestDispatcher(t, fs)
	pool := &fakePool{}
	fo := NewFailover(d, pool, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	ctx := context.Background()
	m, id := queuedForModem(t, st, d, fo)
	fo.process(ctx, id)

	if sent := pool.sentIDs(); len(sent) != 1 || sent[0] != m.ID {
		t.Fatalf("modem sends %v, want one of %s", sent, m.ID)
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateModemSent {
		t.Fatalf("record after the send: %+v, %v; want modemsent", got, err)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 0 {
		t.Fatalf("modem queue depth %d, %v; want 0 (acked once durable)", depth, err)
	}
	fo.handleReport(ctx, modem.Report{ID: m.ID, Part: 1, Parts: 1, Modem: "fake", Status: &sms.StatusReport{MR: 1}})
	if stats, ids := heldReceipts(t, st, "acct"); len(stats) != 1 || stats[0] != "DELIVRD" || ids[0] != m.ID {
		t.Fatalf("platform receipts %v for %v, want one DELIVRD for %s", stats, ids, m.ID)
	}
}

// A receipt timer that finds its message still at "modem" (the send
// succeeded, its record did not reach the store) gives the ACCEPTD receipt
// rather than clearing itself without one.
func TestReceiptTimerFiresForUnrecordedSend(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	ctx := context.Background()
	m := putTestMessage(t, st, d, "acct", func(m *store.Message) { m.State, m.RegDeliv = store.StateModem, 1 })
	if err := st.SetTimer(ctx, m.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	fo.fireTimer(ctx, m.ID)
	if stats, ids := heldReceipts(t, st, "acct"); len(stats) != 1 || stats[0] != "ACCEPTD" || ids[0] != m.ID {
		t.Fatalf("platform receipts %v for %v, want one ACCEPTD for %s", stats, ids, m.ID)
	}
	if ids, err := st.ClaimTimers(ctx, time.Hour, 10); err != nil || len(ids) != 0 {
		t.Fatalf("timers left: %v, %v; want none", ids, err)
	}
}

// A queued message that goes back to its recovered carrier, whose link the
// store does not take, is not acked (its receipt would find no record): the
// entry is released for a later try, and the modem does not send it.
func TestReturnedToCarrierUnrecordedIsReleased(t *testing.T) {
	smsc, err := smscsim.Start(smscsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	st := openTestBolt(t)
	ls := &linkFaultStore{faultStore: &faultStore{Store: st}}
	ls.put = func(m *store.Message) error {
		if ls.failing.Load() && m.State == store.StateSent {
			return errInjected
		}
		return nil
	}
	ctx := context.Background()
	d, pool, fo := boundCarrierFailover(t, smsc, ls, FailoverConfig{})
	m, id := queuedForModem(t, st, d, fo)

	ls.failing.Store(true)
	fo.process(ctx, id)
	if n := smsc.Stats().Submits; n != 1 {
		t.Fatalf("carrier got %d submits, want 1", n)
	}
	if sent := pool.sentIDs(); len(sent) != 0 {
		t.Fatalf("modem sent %v: a message the carrier took", sent)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 1 {
		t.Fatalf("modem queue depth %d, %v; want 1 (released, not acked)", depth, err)
	}
	if got, err := st.GetMessage(ctx, m.ID); err != nil || got.State == store.StateSent {
		t.Fatalf("record %+v, %v: not expected to say sent (the link failed)", got, err)
	}
}

// hookPool runs during each send a hook that plays what another worker did
// meanwhile, then answers with err (nil: sent).
type hookPool struct {
	fakePool
	during func()
	err    error
}

func (p *hookPool) SendUnless(ctx context.Context, giveUp <-chan struct{}, id string, s sms.Submit) (*modem.Sent, error) {
	p.during()
	if p.err != nil {
		return nil, p.err
	}
	return p.fakePool.SendUnless(ctx, giveUp, id, s)
}

// A worker whose entry was taken over while it sent (its lease passed; the
// other worker's send failed: record back to queued, entry released for a
// retry) must not ack the entry when its own record write loses: the
// message would stay queued with no entry, never sent again, no receipt.
func TestModemWorkerLosingItsRecordLeavesTheEntry(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	pool := &hookPool{}
	fo := NewFailover(d, pool, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	ctx := context.Background()
	m, id := queuedForModem(t, st, d, fo)
	pool.during = func() {
		other := *m
		other.State, other.Note = store.StateQueued, "the other worker's send failed"
		if err := st.PutMessage(ctx, &other); err != nil {
			t.Error(err)
		}
		if err := st.ReleaseModem(ctx, id, time.Now()); err != nil {
			t.Error(err)
		}
	}
	fo.process(ctx, id)
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 1 {
		t.Fatalf("queue depth %d, %v after the worker lost its record: want the entry kept (1)", depth, err)
	}
	again, err := st.ClaimModem(ctx, fo.config().Worker, time.Minute)
	if err != nil || again != id {
		t.Fatalf("ClaimModem = %q, %v; want %s claimable again", again, err, id)
	}
}

// A worker whose send fails after the message was finished meanwhile (the
// receipt timer of an earlier send gave its ACCEPTD receipt) must not write
// it back to queued: that would send it again and give a second receipt.
func TestModemWorkerFailingAfterFinishKeepsTheFinish(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	pool := &hookPool{err: errInjected}
	fo := NewFailover(d, pool, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	ctx := context.Background()
	m, id := queuedForModem(t, st, d, fo)
	pool.during = func() {
		done := *m
		done.State, done.FinalStat = store.StateDone, "ACCEPTD"
		if err := st.PutMessage(ctx, &done); err != nil {
			t.Error(err)
		}
	}
	fo.process(ctx, id)
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateDone {
		t.Fatalf("record %+v, %v: want it left done", got, err)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 0 {
		t.Fatalf("queue depth %d, %v: want the finished message's entry acked", depth, err)
	}
}

// A message the platform scheduled for later (schedule_delivery_time) that
// meets a carrier outage waits in the modem queue until its time, as the
// carrier would have held it: not claimable now, claimable once due.
func TestModemQueueKeepsTheSchedule(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{}, zap.NewNop())
	ctx := context.Background()
	for _, tc := range []struct {
		schedule string
		later    bool
	}{
		{"000000000200000R", true},  // relative: in two seconds
		{"991231235959000+", true},  // absolute, far ahead
		{"000000000000000R", false}, // relative zero: now
		{"", false},                 // none
	} {
		m := putTestMessage(t, st, d, "acct", func(m *store.Message) {
			m.Body = bytes.Replace(m.Body, []byte{0x02, 0x00}, append(append([]byte{0x02}, tc.schedule...), 0), 1)
		})
		if sm, err := ParseShortMessage(m.Body); err != nil || sm.ScheduleDelivery != tc.schedule {
			t.Fatalf("test body: schedule %q, %v", sm.ScheduleDelivery, err)
		}
		if err := fo.enqueue(ctx, m, "down", time.Now()); err != nil {
			t.Fatal(err)
		}
		id, err := st.ClaimModem(ctx, "w", time.Minute)
		if tc.later {
			if !errors.Is(err, store.ErrEmpty) {
				t.Fatalf("schedule %q: claimed %q, %v at once; want it held until its time", tc.schedule, id, err)
			}
			_ = st.AckModem(ctx, m.ID)
			continue
		}
		if err != nil || id != m.ID {
			t.Fatalf("schedule %q: ClaimModem = %q, %v; want %s now", tc.schedule, id, err, m.ID)
		}
		_ = st.AckModem(ctx, id)
	}
}

// A status report's TP-Status becomes the receipt word the platform reads:
// validity expired at the SC is EXPIRED, deleted is DELETED, any other
// failure UNDELIV, with err: the TP-Status in decimal (before, every
// failure was UNDELIV).
func TestStatusReportWords(t *testing.T) {
	for _, tc := range []struct {
		st   byte
		stat string
	}{{0x00, "DELIVRD"}, {0x02, "DELIVRD"}, {0x46, "EXPIRED"}, {0x47, "DELETED"}, {0x48, "DELETED"},
		{0x41, "UNDELIV"}, {0x62, "UNDELIV"}} {
		st := openTestBolt(t)
		d := newTestDispatcher(t, st)
		fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
		ctx := context.Background()
		m := putTestMessage(t, st, d, "acct", func(m *store.Message) { m.State, m.RegDeliv = store.StateModemSent, 1 })
		fo.handleReport(ctx, modem.Report{ID: m.ID, Part: 1, Parts: 1, Modem: "fake", Status: &sms.StatusReport{MR: 1, Status: tc.st}})
		stats, _ := heldReceipts(t, st, "acct")
		got, err := st.GetMessage(ctx, m.ID)
		if len(stats) != 1 || stats[0] != tc.stat || err != nil || got.FinalErr != fmt.Sprintf("%03d", tc.st) {
			t.Errorf("TP-Status 0x%02X: receipts %v, final err %q; want one %s, err %03d", tc.st, stats, got.FinalErr, tc.stat, tc.st)
		}
	}
}

// A binary message arriving on a modem reaches the platform as 8-bit data
// (data_coding 4) with its octets, not as an empty text.
func TestModemBinaryMOReachesThePlatformAsData(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	d.SetMOAccount("acct")
	fo := NewFailover(d, &fakePool{}, FailoverConfig{CountryCode: "86", ModemNumbers: map[string]string{"m0": "+8613900000009"}}, zap.NewNop())
	data := []byte{0xDE, 0xAD, 0x00, 0xEF}
	fo.incoming(context.Background(), modem.Incoming{Modem: "m0", From: "+8613900000000", Data: data})
	list, err := st.PendingDeliveries(context.Background(), "acct", 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("%d deliveries, %v; want the MO message", len(list), err)
	}
	sm, err := ParseShortMessage(list[0].Body)
	if err != nil || sm.DataCoding != 4 || !bytes.Equal(sm.Message, data) || sm.Source != "13900000000" || sm.Dest != "13900000009" {
		t.Fatalf("MO %+v, %v; want data_coding 4 with the octets, from 13900000000 to 13900000009", sm, err)
	}
	// A one-part binary message with application ports keeps its header.
	ports := []byte{0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0} // IEI 05: destination port 2948, source 9200
	fo.incoming(context.Background(), modem.Incoming{Modem: "m0", From: "+8613900000000", Data: data, UDH: ports})
	list, err = st.PendingDeliveries(context.Background(), "acct", 10)
	if err != nil || len(list) != 2 {
		t.Fatalf("%d deliveries, %v; want the second MO message", len(list), err)
	}
	sm, err = ParseShortMessage(list[1].Body)
	want := append(append([]byte{byte(len(ports))}, ports...), data...)
	if err != nil || sm.ESMClass&0x40 == 0 || !bytes.Equal(sm.Message, want) {
		t.Fatalf("MO %+v, %v; want UDHI and the header before the octets", sm, err)
	}
}

// statusPool is a fakePool whose modems are those of status.
type statusPool struct {
	fakePool
	status []modem.ModemStatus
}

func (p *statusPool) Status() []modem.ModemStatus { return p.status }

// The only modem, held out after send errors (a SIM without credit) and on
// trial (its hold over), is given a queued message: only a send tells
// whether it can send again. Taken as "no modem up", the message was put
// back for ever, and the modem never got the send that would bring it back.
func TestModemOnTrialIsGivenAQueuedMessage(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	pool := &statusPool{status: []modem.ModemStatus{{Name: "held", State: modem.StateDown, Trial: true,
		LastError: "send errors 3 times in a row: at: +CMS ERROR: 50"}}}
	fo := NewFailover(d, pool, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	m, id := queuedForModem(t, st, d, fo)
	fo.process(context.Background(), id)
	if sent := pool.sentIDs(); len(sent) != 1 || sent[0] != m.ID {
		t.Fatalf("modem sends %v, want one of %s (the modem on trial takes it)", sent, m.ID)
	}
	// Down and not on trial: nothing is given to the pool.
	pool.status[0].Trial = false
	_, id = queuedForModem(t, st, d, fo)
	fo.process(context.Background(), id)
	if sent := pool.sentIDs(); len(sent) != 1 {
		t.Fatalf("modem sends %v while no modem is up nor on trial", sent)
	}
}

// A queued message that goes back to its recovered carrier, whose failed
// receipt came before the link (stashed as an orphan): the receipt queues
// the message for the modems again only after the worker acked the entry
// it held. Delivered before the ack, the re-queued entry was the one the
// ack took: the message stayed queued with nothing to send it, and no
// receipt ever reached the platform.
func TestReturnedToCarrierEarlyFailedReceiptKeepsItsQueueEntry(t *testing.T) {
	smsc, err := smscsim.Start(smscsim.Options{IDFormat: smscsim.IDDecimal, FirstID: 777, ReceiptDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	st := openTestBolt(t)
	ctx := context.Background()
	d, _, fo := boundCarrierFailover(t, smsc, st, FailoverConfig{ResendFailedReceipts: true})
	m, id := queuedForModem(t, st, d, fo)
	text := "id:777 sub:001 dlvrd:000 submit date:2611261800 done date:2611261801 stat:REJECTD err:000 text:"
	if err := st.StashOrphan(ctx, "cm", "777", receiptBody(t, fmt.Sprintf("%02x", len(text))+hexs(text), "")); err != nil {
		t.Fatal(err)
	}
	fo.process(ctx, id)
	if n := smsc.Stats().Submits; n != 1 {
		t.Fatalf("carrier got %d submits, want 1", n)
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateQueued {
		t.Fatalf("record %+v, %v; want queued again by its failed receipt", got, err)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 1 {
		t.Fatalf("modem queue depth %d, %v; want 1: a queued message with no entry is never sent", depth, err)
	}
}

// boundCarrierFailover is a dispatcher on st with one carrier "cm" bound to
// smsc, and a failover on a fakePool with cfg.
func boundCarrierFailover(t *testing.T, smsc *smscsim.SMSC, st store.Store, cfg FailoverConfig) (*Dispatcher, *fakePool, *Failover) {
	t.Helper()
	health := NewHealth(3, 0, zap.NewNop())
	c := NewCarrier(config.Carrier{Name: "cm", Address: smsc.Addr(), Binds: 1, Window: 8,
		EnquireLink:     config.Duration(10 * time.Second),
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		health, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st, Carriers: []*Carrier{c}, Health: health})
	t.Cleanup(func() { cancel(); c.Stop(); d.Wait() })
	c.Start(ctx)
	waitCond(t, "the carrier bound and up", func() bool { return c.Bound() == 1 && health.State("cm") != StateDown })
	pool := &fakePool{}
	return d, pool, NewFailover(d, pool, cfg, zap.NewNop())
}
