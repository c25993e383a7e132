package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// The store's health as operators see it: the status page's Store section
// (StoreStatus), spareline_store_up, spareline_store_errors_total,
// spareline_store_data_lost_total, and the SparelineStoreDown and
// SparelineStoreDataLost alerts (deploy/alerts.yml).
//
//   - State: "failing" from a failed store write until a write succeeds
//     again (the dispatcher refuses submits meanwhile: dispatcher.go, "Store
//     outage"), else "ok"; a page whose own store reads failed or did not
//     come within statusStoreWait says "not_answering" while the dispatcher
//     has not seen a write fail yet (a hung store and no traffic).
//     The health check (below) also marks it failing after
//     storeCheckFailsDown of its reads in a row failed, so that a dead
//     store is seen with no traffic; the outage probe marks it ok again.
//   - Data loss: a Redis that no longer holds what it held (restarted
//     without persistence, flushed, failed over to a replica that had not
//     synced) is noticed by its marker (store.Redis.CheckData), read every
//     storeCheckEvery and at once when the store answers again after an
//     outage: logged at error level, counted, shown on the page.
//   - Redis persistence (store.Redis.CheckPersistence): read at start (a
//     warning in the log), again after each outage and each data loss (the
//     Redis may be another one now, or restarted with other settings: a
//     warning again), and every storePersistEvery in between (a change is
//     logged); the page shows the current warning.

var (
	// store_up: 1 while the store takes writes; 0 from a failed write until
	// a write succeeds again, while every submit is refused.
	metricStoreUp = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_store_up", Help: "1 while the store takes writes; 0 while it fails and submits are refused (ESME_RMSGQFUL).",
	})
	// store_errors_total op: storeOps.
	metricStoreErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_store_errors_total", Help: "Failed store calls, by what spareline was doing.",
	}, []string{"op"})
	// store_data_lost_total: times the store was found to have lost its data.
	metricStoreDataLost = promauto.NewCounter(prometheus.CounterOpts{
		Name: "spareline_store_data_lost_total",
		Help: "Times the store (Redis) was found without the data it held: restarted without persistence, flushed, or failed over to a replica that had not synced.",
	})
)

// The op label values of spareline_store_errors_total.
const (
	storeOpSubmit  = "submit"  // a platform's submit: the carrier link, the record and queue entry of the modem path
	storeOpReceipt = "receipt" // a carrier's receipt or MO message, an unmatched receipt passed on
	storeOpQuery   = "query"   // query_sm, cancel_sm
	storeOpDeliver = "deliver" // reading the deliveries held for a platform's receivers
	storeOpModem   = "modem"   // the modem queue workers' claims
	storeOpProbe   = "probe"   // the outage probe's write (every storeProbeEvery while failing)
	storeOpCheck   = "check"   // the health check's read of the marker (storeCheckEvery)
)

var storeOps = []string{storeOpSubmit, storeOpReceipt, storeOpQuery, storeOpDeliver, storeOpModem, storeOpProbe, storeOpCheck}

// seedStoreMetrics creates the store's series: up, and each op's errors at 0.
func seedStoreMetrics() {
	metricStoreUp.Set(1)
	for _, op := range storeOps {
		metricStoreErrors.WithLabelValues(op)
	}
}

// storeCheckEvery is how often the health check reads the store's marker
// while nothing else makes it look (a variable for tests).
var storeCheckEvery = 5 * time.Second

const (
	// storeCheckFailsDown is how many health checks in a row must fail
	// for the store to be marked failing by them alone (with no traffic,
	// nothing else writes to it: a dead Redis at night).
	storeCheckFailsDown = 2
	// storePersistEvery is how often the Redis persistence settings are
	// read again between outages.
	storePersistEvery = time.Minute
	// storeCheckTimeout bounds one health check.
	storeCheckTimeout = 2 * time.Second
	// statusStoreWait bounds the store reads of one status page (the rest
	// of the page is in memory): the page answers within about this long,
	// whatever the store does.
	statusStoreWait = 800 * time.Millisecond
	// maxStoreCalls bounds the status reads and /readyz pings left running
	// on a store that does not answer after their callers gave up.
	maxStoreCalls = 4
)

// storeHealth is what the dispatcher and the health check know of the
// store. The dispatcher's storeDown flag is changed under mu, so that the
// state and its since always agree.
type storeHealth struct {
	mu        sync.Mutex
	since     time.Time // when the store last changed state (failing, ok again); zero: ok since start
	lastErr   error     // the last failed store call's error
	lastErrAt time.Time
	lost      int       // data losses found since start
	lostAt    time.Time // the last one
	persist   string    // the current persistence warning ("" when safe or not known)
	back      chan struct{}
	// readWarned: when each background read's failure (by its log
	// message) was last logged at warn (readLogDue).
	readWarned map[string]time.Time
}

// storeReadLogEvery bounds the warnings of one background store read that
// keeps failing (Dispatcher.storeReadFailed).
const storeReadLogEvery = 30 * time.Second

// readLogDue reports whether a failure of the background read that logs
// msg may be logged at warn now (none was within storeReadLogEvery), and
// notes it.
func (h *storeHealth) readLogDue(msg string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if last, ok := h.readWarned[msg]; ok && now.Sub(last) < storeReadLogEvery {
		return false
	}
	if h.readWarned == nil {
		h.readWarned = map[string]time.Time{}
	}
	h.readWarned[msg] = now
	return true
}

// storeReadFailed counts a failed background read of the store (op; ""
// counts nothing) and logs it (msg): at debug while the store is known to
// be failing (its own error line, the status page and spareline_store_up
// say so already, and the loops that read the store would repeat their
// warnings several times a second: 130 lines in 22 s of a Redis outage, an
// operator's test found), else at warn, at most once every
// storeReadLogEvery per msg.
func (d *Dispatcher) storeReadFailed(op string, log *zap.Logger, msg string, err error) {
	if op != "" {
		d.sh.failed(op, err)
	}
	if d.storeDown.Load() || !d.sh.readLogDue(msg) {
		log.Debug(msg, zap.Error(err))
		return
	}
	log.Warn(msg, zap.Error(err))
}

// backCh is kicked (capacity 1) each time the store answers again after
// an outage: the health check looks at once.
func (h *storeHealth) backCh() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.back == nil {
		h.back = make(chan struct{}, 1)
	}
	return h.back
}

// failed counts a failed store call of op and keeps its error for the
// page. A cancelled call (its caller gave up) and a closed store
// (shutdown) are not the store's failures.
func (h *storeHealth) failed(op string, err error) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, store.ErrClosed) {
		return
	}
	metricStoreErrors.WithLabelValues(op).Inc()
	h.mu.Lock()
	h.lastErr, h.lastErrAt = err, time.Now()
	h.mu.Unlock()
}

// setDown sets the dispatcher's down flag to down under h.mu and reports
// whether it changed; a change is timed and sets spareline_store_up.
func (h *storeHealth) setDown(flag *atomic.Bool, down bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !flag.CompareAndSwap(!down, down) {
		return false
	}
	h.since = time.Now()
	if down {
		metricStoreUp.Set(0)
		return true
	}
	metricStoreUp.Set(1)
	if h.back == nil {
		h.back = make(chan struct{}, 1)
	}
	select {
	case h.back <- struct{}{}:
	default:
	}
	return true
}

// StoreStatus is the store's section of the status page and /status.json.
type StoreStatus struct {
	// Kind is "redis" or "embedded" (bbolt at store.path).
	Kind string `json:"kind"`
	// State is "ok"; "failing" (a store write failed: submits are refused
	// with ESME_RMSGQFUL until a write succeeds again, probed every 500 ms);
	// or "not_answering" (this page's own store reads failed or did not
	// come within statusStoreWait, while no write has failed yet).
	State string `json:"state"`
	// Since is when the store entered its state (failing, or ok again after
	// an outage); null when it has been ok since the gateway started.
	Since *time.Time `json:"since"`
	// RefusingSubmits is true while submits are refused (State "failing").
	RefusingSubmits bool `json:"refusing_submits"`
	// LastError is the last failed store call's error and LastErrorAt when
	// it came; "" and null when none failed since the gateway started.
	LastError   string     `json:"last_error"`
	LastErrorAt *time.Time `json:"last_error_at"`
	// DataLost counts the times since start the store was found to have
	// lost its data (Redis restarted without persistence, flushed, failed
	// over to a replica that had not synced); DataLostAt is the last.
	DataLost   int        `json:"data_lost"`
	DataLostAt *time.Time `json:"data_lost_at"`
	// PersistenceWarning says how Redis's persistence settings can lose
	// acknowledged messages ("" when they are safe, or cannot be read).
	PersistenceWarning string `json:"persistence_warning"`
	// Unread lists the parts of this page the store did not give
	// ("modem_queue", "receipts_held"): shown as unknown (null), not as 0;
	// ReadError says why.
	Unread    []string `json:"unread"`
	ReadError string   `json:"read_error"`
}

// storeStatus is the store's section from what the dispatcher and the
// health check know, and how the page's own reads went (read).
func (g *Gateway) storeStatus(read statusReads) StoreStatus {
	ss := StoreStatus{Kind: "embedded", State: "ok", Unread: []string{}}
	g.mu.Lock()
	if g.cfg.Store.Redis != "" {
		ss.Kind = "redis"
	}
	g.mu.Unlock()
	d := g.Disp
	h := &d.sh
	h.mu.Lock()
	down := d.storeDown.Load()
	since, lastErr, lastErrAt, lost, lostAt := h.since, h.lastErr, h.lastErrAt, h.lost, h.lostAt
	ss.PersistenceWarning = h.persist
	h.mu.Unlock()
	tptr := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	ss.Since, ss.LastErrorAt, ss.DataLost, ss.DataLostAt = tptr(since), tptr(lastErrAt), lost, tptr(lostAt)
	if lastErr != nil {
		ss.LastError = g.storeErrorText(lastErr)
	}
	if !read.queueOK {
		ss.Unread = append(ss.Unread, "modem_queue")
	}
	if !read.heldOK {
		ss.Unread = append(ss.Unread, "receipts_held")
	}
	if read.err != nil {
		ss.ReadError = g.storeErrorText(read.err)
	}
	switch {
	case down:
		ss.State, ss.RefusingSubmits = "failing", true
	case len(ss.Unread) > 0:
		ss.State = "not_answering"
	}
	return ss
}

// statusReads is what the status page reads from the store.
type statusReads struct {
	queueOK bool // depth, oldest and head were read
	depth   int
	oldest  time.Time
	head    []QueuedMessage
	heldOK  bool // held was read
	held    map[string]int
	err     error // the first failed read, or why none came in time
}

// errStoreCallsBusy: earlier calls still wait for the store.
var errStoreCallsBusy = errors.New("earlier status reads are still waiting for the store")

// boundedStoreCall runs fn on a goroutine of its own and waits for it until
// ctx ends (then ok is false): a store that ignores contexts (bbolt's reads
// on a stalled disk) or hangs cannot hold the caller. At most
// maxStoreCalls run at once (g.storeCalls): beyond, ok is false at once
// (errStoreCallsBusy).
func boundedStoreCall[T any](ctx context.Context, slots chan struct{}, fn func(context.Context) T) (out T, err error) {
	select {
	case slots <- struct{}{}:
	default:
		return out, errStoreCallsBusy
	}
	done := make(chan T, 1)
	go func() {
		defer func() { <-slots }()
		done <- fn(ctx)
	}()
	select {
	case out = <-done:
		return out, nil
	case <-ctx.Done():
		return out, ctx.Err()
	}
}

// readStatusFromStore reads the store's part of the status page (the modem
// queue, the receipts held per account) within statusStoreWait.
func (g *Gateway) readStatusFromStore(ctx context.Context, accounts []string) statusReads {
	ctx, cancel := context.WithTimeout(ctx, statusStoreWait)
	defer cancel()
	r, err := boundedStoreCall(ctx, g.storeCalls, func(ctx context.Context) statusReads {
		var r statusReads
		var err error
		if r.depth, r.oldest, err = g.Store.ModemQueue(ctx); err != nil {
			r.err = err
			return r
		}
		if r.head, err = g.queueHead(ctx); err != nil {
			r.err = err
			return r
		}
		r.queueOK = true
		r.held = map[string]int{}
		for _, a := range accounts {
			n, err := g.Store.CountDeliveries(ctx, a)
			if err != nil {
				r.err, r.held = err, nil
				return r
			}
			if n > 0 {
				r.held[a] = n
			}
		}
		r.heldOK = true
		return r
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("the store did not answer within %v", statusStoreWait)
		}
		return statusReads{err: err}
	}
	return r
}

// watchStore is the store's health check (see the top of this file). It
// runs until ctx ends, on stores that can lose their data (Redis).
func (g *Gateway) watchStore(ctx context.Context, dc store.DataChecker) {
	h := &g.Disp.sh
	back := h.backCh()
	persistAt := time.Now()
	{
		cctx, cancel := context.WithTimeout(ctx, storeCheckTimeout)
		w := dc.CheckPersistence(cctx) // OpenStore logged it
		cancel()
		h.mu.Lock()
		h.persist = w
		h.mu.Unlock()
	}
	t := time.NewTicker(storeCheckEvery)
	defer t.Stop()
	fails := 0 // health checks failed in a row
	for {
		again := false // the store answers again after an outage
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-back:
			again = true
		}
		cctx, cancel := context.WithTimeout(ctx, storeCheckTimeout)
		state, err := dc.CheckData(cctx)
		switch {
		case err == nil || ctx.Err() != nil:
			fails = 0 // shutting down: not the store's failure
		case fails+1 >= storeCheckFailsDown:
			// A dead or hung store with no traffic: marked failing as a
			// failed write marks it (store_up 0, the page, submits
			// refused); the outage probe's first successful write marks
			// it ok again.
			fails++
			g.Disp.noteStore(storeOpCheck, err)
		default:
			fails++
			h.failed(storeOpCheck, err)
		}
		lost := err == nil && state == store.DataLost
		if lost || again || time.Since(persistAt) >= storePersistEvery {
			persistAt = time.Now()
			g.checkPersistence(cctx, dc, lost || again)
		}
		cancel()
		if lost {
			g.dataLost()
		}
	}
}

// checkPersistence reads the Redis persistence settings again: the
// warning, if any, is logged when loud (after an outage or a data loss:
// the Redis may be another one, or restarted with other settings) or when
// it changed.
func (g *Gateway) checkPersistence(ctx context.Context, dc store.DataChecker, loud bool) {
	w := dc.CheckPersistence(ctx)
	h := &g.Disp.sh
	h.mu.Lock()
	prev := h.persist
	h.persist = w
	h.mu.Unlock()
	switch {
	case w != "" && (loud || w != prev):
		g.log.Warn(w)
	case w == "" && prev != "":
		g.log.Info("redis persistence settings are safe now (appendonly yes, appendfsync everysec or always)")
	}
}

// dataLost reports a store found without its data.
func (g *Gateway) dataLost() {
	h := &g.Disp.sh
	h.mu.Lock()
	h.lost++
	h.lostAt = time.Now()
	w := h.persist
	h.mu.Unlock()
	metricStoreDataLost.Inc()
	advice := "run redis with appendonly yes and appendfsync everysec (or always), and never restart or fail it over without its data"
	if w != "" {
		advice = w
	}
	g.log.Error("the store lost its data: redis no longer holds what spareline wrote (restarted without persistence, flushed, or failed over to a replica that had not synced); "+
		"messages acknowledged before are gone: their receipts reach the platform unmatched, under the carriers' ids, query_sm and /message do not find them, and queued messages and held receipts are lost",
		zap.String("advice", advice))
}
