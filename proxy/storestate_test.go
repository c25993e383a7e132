package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
)

// hangStore is a store whose reads for the status page and /readyz hang
// until released, ignoring their context, as bbolt's reads would on a
// stalled disk.
type hangStore struct {
	store.Store
	release chan struct{}
}

func (s *hangStore) ModemQueue(ctx context.Context) (int, time.Time, error) {
	<-s.release
	return s.Store.ModemQueue(ctx)
}

func (s *hangStore) Ping(ctx context.Context) error {
	<-s.release
	return s.Store.Ping(ctx)
}

// The status page, /status.json and /readyz answer in bounded time
// whatever the store does, even a store that ignores contexts: the page
// within about statusStoreWait, showing the store "not answering" and the
// parts it could not read as unknown (null); /readyz within its 2 s. Calls
// left hanging are bounded too: once maxStoreCalls wait, the next page says
// so at once instead of starting one more.
func TestStatusAnswersWhileTheStoreHangs(t *testing.T) {
	bolt := openTestBolt(t)
	hs := &hangStore{Store: bolt, release: make(chan struct{})}
	cfg, err := config.Parse([]byte(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw, binds: 1 } ]
routing: { country_code: "86", preset: cn }
`), "hang.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg, GatewayOptions{Store: hs})
	t.Cleanup(func() { close(hs.release) }) // before the gateway's shutdown (cleanups run last first)

	for i := range maxStoreCalls + 1 {
		start := time.Now()
		code, _, body := httpGet(t, g, "GET", "/status.json")
		took := time.Since(start)
		if code != http.StatusOK || took > statusStoreWait+700*time.Millisecond {
			t.Fatalf("/status.json #%d with the store hanging: %d after %v; want 200 within about %v", i, code, took, statusStoreWait)
		}
		var st struct {
			Store        StoreStatus     `json:"store"`
			ReceiptsHeld json.RawMessage `json:"receipts_held"`
			Queue        struct {
				Depth json.RawMessage `json:"depth"`
			} `json:"modem_queue"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		if st.Store.State != "not_answering" || string(st.ReceiptsHeld) != "null" || string(st.Queue.Depth) != "null" {
			t.Fatalf("/status.json #%d with the store hanging: store %+v, receipts_held %s, depth %s", i, st.Store, st.ReceiptsHeld, st.Queue.Depth)
		}
		if i == maxStoreCalls && !strings.Contains(st.Store.ReadError, errStoreCallsBusy.Error()) {
			t.Errorf("/status.json with %d reads hanging: read_error %q, want %q", maxStoreCalls, st.Store.ReadError, errStoreCallsBusy)
		}
	}
	start := time.Now()
	code, _, page := httpGet(t, g, "GET", "/status")
	if took := time.Since(start); code != http.StatusOK || took > statusStoreWait+700*time.Millisecond ||
		!strings.Contains(string(page), "not answering") {
		t.Errorf("/status with the store hanging: %d after %v; want 200 within about %v, saying the store is not answering", code, took, statusStoreWait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := g.Ready(ctx); err == nil || time.Since(start) > time.Second {
		t.Errorf("Ready with the store hanging: %v after %v; want an error when its context ends", err, time.Since(start))
	}
}

// A store that fails marks the store down for the page (failing, since,
// the last error, submits refused), sets spareline_store_up to 0 and
// counts the error by op; the probe's successful write marks it ok again.
func TestStoreFailureShowsAndRecovers(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	before := testutil.ToFloat64(metricStoreErrors.WithLabelValues(storeOpReceipt))
	d.noteStore(storeOpReceipt, errInjected)
	if v := testutil.ToFloat64(metricStoreUp); v != 0 {
		t.Errorf("spareline_store_up = %v with the store failing, want 0", v)
	}
	if d := testutil.ToFloat64(metricStoreErrors.WithLabelValues(storeOpReceipt)) - before; d != 1 {
		t.Errorf("spareline_store_errors_total{op=receipt} rose by %v, want 1", d)
	}
	g := &Gateway{Disp: d, Store: st, cfg: &config.Config{}}
	ss := g.storeStatus(statusReads{queueOK: true, heldOK: true})
	if ss.State != "failing" || !ss.RefusingSubmits || ss.Since == nil || !strings.Contains(ss.LastError, errInjected.Error()) ||
		ss.Kind != "embedded" {
		t.Errorf("store section with the store failing: %+v", ss)
	}
	// The probe (every storeProbeEvery) writes through the bolt store and
	// marks the store up: the status is the event to wait for.
	deadline := time.After(hangGuard)
	for d.storeDown.Load() {
		select {
		case <-deadline:
			t.Fatal("the store probe never marked the store up")
		case <-d.sh.backCh():
		}
	}
	if v := testutil.ToFloat64(metricStoreUp); v != 1 {
		t.Errorf("spareline_store_up = %v once a write succeeded, want 1", v)
	}
	if ss := g.storeStatus(statusReads{queueOK: true, heldOK: true}); ss.State != "ok" || ss.RefusingSubmits || ss.LastError == "" {
		t.Errorf("store section once ok again: %+v; want ok, keeping the last error", ss)
	}
}

// lossStore is a store that reports data losses on demand (as a Redis
// restarted without persistence would).
type lossStore struct {
	store.Store
	checks chan store.DataState // the outcome of each CheckData
}

func (s *lossStore) CheckData(ctx context.Context) (store.DataState, error) {
	select {
	case st := <-s.checks:
		return st, nil
	case <-ctx.Done():
		return store.DataKept, ctx.Err()
	}
}

func (s *lossStore) CheckPersistence(context.Context) string {
	return "redis has appendonly=no: test"
}

// A data loss found by the health check is logged as an error with the
// persistence advice, counted and shown; the persistence warning is
// logged again after it.
func TestStoreDataLossIsLoggedAndCounted(t *testing.T) {
	ls := &lossStore{Store: openTestBolt(t), checks: make(chan store.DataState)}
	core, logs := observer.New(zap.InfoLevel)
	cfg, err := config.Parse([]byte(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw, binds: 1 } ]
routing: { country_code: "86", preset: cn }
`), "loss.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg, GatewayOptions{Store: ls, Log: zap.New(core)})
	before := testutil.ToFloat64(metricStoreDataLost)
	// An outage: a failed write marks the store down, the probe's write
	// marks it up again, and the health check looks at once (without
	// waiting for storeCheckEvery).
	outage := func(found store.DataState) {
		t.Helper()
		g.Disp.noteStore(storeOpSubmit, errInjected)
		select {
		case ls.checks <- found:
		case <-time.After(hangGuard):
			t.Fatal("no health check after the store answered again")
		}
	}
	outage(store.DataLost)
	outage(store.DataKept) // taken once the loss was handled
	if d := testutil.ToFloat64(metricStoreDataLost) - before; d != 1 {
		t.Errorf("spareline_store_data_lost_total rose by %v, want 1", d)
	}
	lost := logs.FilterMessageSnippet("the store lost its data").All()
	if len(lost) != 1 || lost[0].Level != zap.ErrorLevel || lost[0].ContextMap()["advice"] != "redis has appendonly=no: test" {
		t.Errorf("log lines about the loss: %+v; want one error with the persistence advice", lost)
	}
	// The persistence warning again after each outage (the Redis may have
	// restarted with other settings), the loss's included. The second
	// check logs after it took its answer from ls.checks: awaited.
	warnings := func() int {
		return logs.FilterMessage("redis has appendonly=no: test").FilterLevelExact(zap.WarnLevel).Len()
	}
	waitCond(t, "the persistence warning after the second outage", func() bool { return warnings() >= 2 })
	if n := warnings(); n != 2 {
		t.Errorf("%d persistence warnings after two outages, want 2", n)
	}
	if ss := g.storeStatus(statusReads{queueOK: true, heldOK: true}); ss.DataLost != 1 || ss.DataLostAt == nil ||
		ss.PersistenceWarning == "" {
		t.Errorf("store section after a data loss: %+v", ss)
	}
}

// A queued message whose record says "modem" (a worker took it for a
// modem send and died, or lost its lease, before recording how it went)
// may have gone out already: its next send is logged as a warning with
// the message id and counted in spareline_modem_possible_duplicates_total.
// A message queued in the ordinary way is not.
func TestModemResendAfterASendInDoubtIsCounted(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	pool := &fakePool{}
	core, logs := observer.New(zap.WarnLevel)
	fo := NewFailover(d, pool, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.New(core))
	ctx := context.Background()
	before := testutil.ToFloat64(metricModemResendsInDoubt)

	plain, plainID := queuedForModem(t, st, d, fo)
	fo.process(ctx, plainID)
	if d := testutil.ToFloat64(metricModemResendsInDoubt) - before; d != 0 || logs.Len() != 0 {
		t.Fatalf("an ordinary modem send: counted %v, logged %v; want neither", d, logs.All())
	}

	m, id := queuedForModem(t, st, d, fo)
	dead := *m
	dead.State, dead.Attempts = store.StateModem, 1 // the dead worker's record of its attempt
	if err := st.PutMessage(ctx, &dead); err != nil {
		t.Fatal(err)
	}
	fo.process(ctx, id)
	if sent := pool.sentIDs(); len(sent) != 2 || sent[0] != plain.ID || sent[1] != m.ID {
		t.Fatalf("modem sends %v, want %s then %s", sent, plain.ID, m.ID)
	}
	if d := testutil.ToFloat64(metricModemResendsInDoubt) - before; d != 1 {
		t.Errorf("spareline_modem_possible_duplicates_total rose by %v, want 1", d)
	}
	warned := logs.FilterField(zap.String("id", m.ID)).FilterLevelExact(zap.WarnLevel).All()
	if len(warned) != 1 || !strings.Contains(warned[0].Message, "may have gone out") {
		t.Errorf("warnings for %s: %+v; want one saying the last send may have gone out", m.ID, warned)
	}
	if got, err := st.GetMessage(ctx, m.ID); err != nil || got.Attempts != 2 {
		t.Errorf("record after the resend: %+v, %v; want attempt 2", got, err)
	}
}

// spareline_deliveries_pending follows a burst of held receipts within
// about a second of its last one, without waiting for a further event or
// the deliverer's poll (deliverPoll, which the count's one-a-second limit
// could also skip).
func TestDeliveriesPendingCountsTheEndOfABurst(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	const acct = "pending-burst"
	gauge := metricDeliveriesPending.WithLabelValues(acct)
	add := func() {
		t.Helper()
		if err := st.AddDelivery(context.Background(), &store.Delivery{Account: acct, Body: []byte{0}, Created: time.Now()}, nil); err != nil {
			t.Fatal(err)
		}
		d.kickDeliveries(acct)
	}
	add()
	waitCond(t, "the first count", func() bool { return testutil.ToFloat64(gauge) == 1 })
	first := time.Now()
	for range 4 { // within the second after that count: not counted now
		add()
	}
	waitCond(t, "the burst counted", func() bool { return testutil.ToFloat64(gauge) == 5 })
	if took := time.Since(first); took > 1700*time.Millisecond {
		t.Errorf("spareline_deliveries_pending caught up %v after the first count; want about a second", took)
	}
}

// The loops that read the store in the background (the modem queue's
// workers, the deliverers, the timers) warn once per storeReadLogEvery for
// a read that keeps failing, and not at all while the store is known to be
// failing (its error line, the page and spareline_store_up say so): an
// operator's test counted 130 warnings in 22 s of a Redis outage. Every
// failure still counts in spareline_store_errors_total.
func TestBackgroundStoreReadFailuresDoNotFloodTheLog(t *testing.T) {
	d := newTestDispatcher(t, openTestBolt(t))
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	errs := func() float64 { return testutil.ToFloat64(metricStoreErrors.WithLabelValues(storeOpModem)) }
	before := errs()
	boom := errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
	for range 5 {
		d.storeReadFailed(storeOpModem, log, "modem queue unreadable", boom)
	}
	d.storeReadFailed(storeOpModem, log, "reading held deliveries failed", boom)
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 2 {
		t.Fatalf("%d warnings for 5 failures of one read and 1 of another, want 2 (one each): %v", n, logs.All())
	}
	if n := errs() - before; n != 6 {
		t.Fatalf("spareline_store_errors_total{op=modem} rose by %v, want 6", n)
	}
	d.sh.setDown(&d.storeDown, true) // a write failed: the store is failing
	d.storeReadFailed(storeOpModem, log, "store timers unreadable", boom)
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 2 {
		t.Fatalf("a read failure while the store is failing was logged at warn: %v", logs.All())
	}
	if n := logs.FilterMessage("store timers unreadable").FilterLevelExact(zap.DebugLevel).Len(); n != 1 {
		t.Fatalf("the read failure while failing is not at debug: %v", logs.All())
	}
}
