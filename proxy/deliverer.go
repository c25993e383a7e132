package proxy

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Deliverers: one goroutine per account sends the account's stored
// deliver_sm (receipts and MO) to its bound receiver and transceiver
// sessions, oldest first, and removes each only when the platform answered
// it with deliver_sm_resp OK.
//
// Pipelined: a delivery goes out as soon as a session of the account has
// room in its window (at most deliverBatch of the account in flight), and
// waits for nothing but the deliveries it must follow (below). One the
// platform leaves unanswered holds back nothing else: it ends by its
// response timeout and is sent again, while the others keep flowing. The
// deliveries in flight are tracked by id, so that a claim of the store
// (which returns the oldest not acknowledged, those in flight among them)
// never sends one a second time while it is in flight.
//
// Order: the receipts of one message (by MsgID), and the MO messages of one
// source address (keyword flows such as STOP then START, the parts of a
// long message), reach the platform in the order they were stored: each
// waits until the one before it was answered OK (or dropped). Deliveries of
// different messages and handsets have no order among them.
//
// Answers. A timeout, or a status that says "later" (ESME_RX_T_APPN,
// ESME_RSYSERR, in a deliver_sm_resp or a generic_nack), sends the delivery
// again after deliveryRetryPause, without limit. ESME_RTHROTTLED and
// ESME_RMSGQFUL (in either) say "slow down": the account's sending pauses
// (throttlePauseFirst, doubled while the platform keeps saying so after each
// pause, at most throttlePauseMax; an answer OK to a delivery sent after the
// pause ends the back-off), as Kannel pauses its connection, and the refused
// delivery goes again after the pause, first and alone: the others follow
// once the platform took one. ESME_RX_P_APPN /
// ESME_RX_R_APPN mean the platform will never take it: it is dropped and
// logged. Any other refusal (a deliver_sm_resp with another status, such as
// ESME_RINVSRCADR, or a generic_nack with one) is retried too, after
// deliveryRetryPause, but at most maxRefusals times in all, then dropped and
// logged: sent again without end, a delivery the platform cannot take would
// come back for ever and hold back the later receipts of its message.
// Deliveries wait in the store, without limit of time, while no receiver is
// bound.
//
// Several gateways on one store: a deliverer sends only while it holds the
// account's delivery lease (store.ClaimDeliveries, claims.go), so one
// gateway at a time delivers an account's held deliveries, in order, over
// its own bound receivers; each delivery reaches the platform once. The
// lease is taken when this gateway has a receiver of the account and there
// is something to send, renewed (a claim) at least every deliveryLease/4
// while anything is pending, and handed back (ReleaseDeliveries) when the
// account has nothing more to send now, when no receiver is left, or at
// shutdown. A gateway killed while holding it blocks the account for at most
// deliveryLease; then another gateway's deliverer (polling every
// deliverPoll) sends what the dead one never saw acknowledged: at least
// once, never lost. Trade-off: while one gateway holds an account, the
// receivers bound to the other gateways stay idle.

// deliverBatch is the most deliveries of an account in flight at once; a
// claim reads the ones in flight or waiting, and deliverBatch more.
const deliverBatch = 128

// maxClaimed is the most a claim of the store returns (store.maxClaim).
const maxClaimed = 1000

// maxRefusals is how many times a delivery is sent to a platform that
// refuses it neither for now nor for good (see above) before it is dropped;
// a refusal counts only refusalSpacing after the one counted before, so
// that a platform refusing everything for a moment loses nothing: dropping
// takes (maxRefusals-1) x refusalSpacing of refusals at least. Counted in
// memory: a restart starts the count again.
const maxRefusals = 5

var refusalSpacing = 5 * time.Second // a variable for tests

// deliveryRetryPause is how long a delivery that was refused (for now or
// not), or not answered, waits before it is sent again. A variable for
// tests.
var deliveryRetryPause = time.Second

// throttlePauseFirst and throttlePauseMax bound the pause of an account's
// sending after ESME_RTHROTTLED or ESME_RMSGQFUL (see above).
const (
	throttlePauseFirst = time.Second
	throttlePauseMax   = 5 * time.Second
)

// deliveryLease is how long a claim on an account's deliveries lasts
// without renewal: the longest a killed gateway holds up the account.
// A deliverer renews it every deliveryLease/4 while anything is pending.
const deliveryLease = 15 * time.Second

// deliverPoll is how often a deliverer looks for deliveries written, or
// released, by other gateway instances (and renews its lease).
const deliverPoll = 2 * time.Second

// roomWait is how soon a deliverer looks again when no session had room
// for a delivery and none of its own was in flight (the window held by
// other requests, whose answers do not wake it).
const roomWait = 50 * time.Millisecond

// clock is a deliverer's time: the real one, or a test's.
type clock interface {
	Now() time.Time
	// Timer fires once after d; stop stops it.
	Timer(d time.Duration) (c <-chan time.Time, stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

type deliverer struct {
	d       *Dispatcher
	account string
	worker  string // this deliverer's name in the account lease: the instance's (SetInstance), so a restart takes its leases back
	kick    chan struct{}
	clk     clock
	counted time.Time // when spareline_deliveries_pending was last set from the store
	// recount: a kick is armed for when count may read again (loop
	// goroutine): the last change of a burst is counted within a second.
	recount bool

	refusedMu sync.Mutex
	refused   map[string]refusals // by delivery id (maxRefusals)

	// Outcomes of requests and acknowledgements, posted by the sessions'
	// goroutines and the acknowledging ones (post), taken by the loop.
	outMu sync.Mutex
	outs  []outcome
	wake  chan struct{} // capacity 1
	acks  sync.WaitGroup

	syncReq chan func() // tests: run a function after a pump (deliverSync)

	// The loop's own state.
	flights map[string]*flight   // by delivery id: sent and not settled
	retryAt map[string]time.Time // by delivery id: not sent again before
	keys    map[string]string    // by delivery id: its orderKey
	// unremoved: deliveries the platform has (it answered, or was given up
	// on) whose removal from the store failed: at their retryAt the
	// removal is tried again, never the deliver_sm (a store refusing
	// writes, e.g. Redis at its maxmemory, sent one receipt 21 times).
	unremoved map[string]bool
	// throttle: the sessions that asked to slow down (ESME_RTHROTTLED,
	// ESME_RMSGQFUL) and their pauses. One session of a platform (a node of
	// its cluster) being overloaded says nothing of the others: they go on.
	throttle  map[*Session]*sessionPause
	held      bool      // the account lease may be ours
	claimedAt time.Time // the last claim that returned deliveries (real time)
}

// sessionPause is a session's throttle state: its current pause (0: not
// throttled), when it began and ends, and, after it, the one delivery
// (probe) it is sent alone until it takes one.
type sessionPause struct {
	pause     time.Duration
	at, until time.Time
	probing   bool
	probe     string
}

// flight is a delivery sent to a session and not settled yet: its parts
// (one, but for a long MO message to an SMPP 3.3 platform, legacyParts) go
// one after the other, each once the one before was answered OK.
type flight struct {
	del     *store.Delivery
	s       *Session
	parts   [][]byte
	next    int       // the part in flight (or waiting for room, when waiting)
	sent    time.Time // when that part was sent (deliverer clock)
	waiting bool      // the next part found no room: sent by the next pump
	acking  bool      // answered; being removed from the store
}

// outcome is what ended a request (a response, or err) or an
// acknowledgement in the store (ack, with err).
type outcome struct {
	fl         *flight
	id, status uint32
	err        error
	ack        bool
}

// refusals are a delivery's counted refusals, the last counted at last.
type refusals struct {
	n    int
	last time.Time
}

// refusal counts one refusal of a delivery and reports whether it was the
// last one allowed (the delivery is to be dropped).
func (dl *deliverer) refusal(id string) bool {
	dl.refusedMu.Lock()
	defer dl.refusedMu.Unlock()
	if dl.refused == nil || len(dl.refused) > 4*deliverBatch {
		// Entries of deliveries that another gateway sent, or that were
		// taken later, are forgotten with the rest: at worst a delivery
		// gets maxRefusals more tries.
		dl.refused = map[string]refusals{}
	}
	r, now := dl.refused[id], time.Now()
	if r.n > 0 && now.Sub(r.last) < refusalSpacing {
		return false // too soon after the last counted one
	}
	r.n, r.last = r.n+1, now
	if r.n >= maxRefusals {
		delete(dl.refused, id)
		return true
	}
	dl.refused[id] = r
	return false
}

// settled forgets a delivery's refusals once it left the store.
func (dl *deliverer) settled(id string) {
	dl.refusedMu.Lock()
	delete(dl.refused, id)
	dl.refusedMu.Unlock()
}

// laterStatus reports the deliver_sm_resp statuses by which a platform
// asks for the delivery again later: they are retried without limit.
func laterStatus(status uint32) bool {
	switch status {
	case statusRXTAppn, statusThrottled, statusMsgQFul, statusSysErr:
		return true
	}
	return false
}

// count sets spareline_deliveries_pending from the store, at most once a
// second: every held receipt of the account, whether or not a receiver is
// bound (SparelineReceiptsHeld fires when none is, for long). A call within
// the second arms a kick for its end, so that the last of a burst of
// changes is counted then, not at the next poll (up to deliverPoll later,
// or one more if that poll too fell within a second of a count: the gauge
// read 21 of 30 held receipts 3 s after they came).
func (dl *deliverer) count(ctx context.Context) {
	if since := time.Since(dl.counted); since < time.Second {
		if !dl.recount {
			dl.recount = true
			time.AfterFunc(time.Second-since, func() {
				select {
				case dl.kick <- struct{}{}:
				default:
				}
			})
		}
		return
	}
	dl.recount = false
	dl.counted = time.Now()
	if n, err := dl.d.store.CountDeliveries(ctx, dl.account); err == nil {
		metricDeliveriesPending.WithLabelValues(dl.account).Set(float64(n))
	}
}

// kickDeliveries wakes the account's deliverer (starting it if needed).
func (d *Dispatcher) kickDeliveries(account string) {
	d.deliverMu.Lock()
	dl := d.deliverers[account]
	if dl == nil {
		worker := "deliver-" + d.ids.Next()
		if inst, _ := d.instance.Load().(string); inst != "" {
			worker = "deliver/" + inst
		}
		clk := d.deliverClock
		if clk == nil {
			clk = realClock{}
		}
		dl = &deliverer{d: d, account: account, worker: worker, kick: make(chan struct{}, 1), clk: clk,
			wake: make(chan struct{}, 1), syncReq: make(chan func()),
			flights: map[string]*flight{}, retryAt: map[string]time.Time{}, keys: map[string]string{}, unremoved: map[string]bool{},
			held: true} // a lease of this instance's from before a restart is released when there is nothing to do
		d.deliverers[account] = dl
		d.spawn(func() { dl.run(d.deliverCtx) }) // not after shutdown began (dispatcher.go)
	}
	d.deliverMu.Unlock()
	select {
	case dl.kick <- struct{}{}:
	default:
	}
}

// SetInstance names this gateway among those sharing the store (see
// instanceName); deliverers started after it hold account leases under it.
func (d *Dispatcher) SetInstance(name string) { d.instance.Store(name) }

// StartDeliverers starts a deliverer for each account so that deliveries
// held from before a restart go out as soon as a receiver binds.
func (d *Dispatcher) StartDeliverers(accounts []string) {
	for _, a := range accounts {
		d.kickDeliveries(a)
	}
}

// post hands an outcome to the loop; it never blocks (it runs on a
// session's goroutines).
func (dl *deliverer) post(o outcome) {
	dl.outMu.Lock()
	dl.outs = append(dl.outs, o)
	dl.outMu.Unlock()
	select {
	case dl.wake <- struct{}{}:
	default:
	}
}

func (dl *deliverer) run(ctx context.Context) {
	log := dl.d.log.With(zap.String("account", dl.account))
	// A slow poll covers deliveries written, or released, by other gateway
	// instances, and renews the lease while requests wait for answers.
	poll := time.NewTicker(deliverPoll)
	defer poll.Stop()
	defer dl.release(ctx, log) // at shutdown, hand the account to the other instances now
	defer dl.acks.Wait()       // ... once the answered ones left the store
	stop := func() bool { return false }
	defer func() { stop() }()
	for {
		next := dl.pump(ctx, log)
		stop()
		var timer <-chan time.Time
		if !next.IsZero() {
			timer, stop = dl.clk.Timer(next.Sub(dl.clk.Now()))
		} else {
			stop = func() bool { return false }
		}
		select {
		case <-ctx.Done():
			return
		case <-dl.kick:
		case <-dl.wake:
		case <-poll.C:
		case <-timer:
		case f := <-dl.syncReq:
			dl.pump(ctx, log)
			f()
		}
	}
}

// pump takes the outcomes that came, then sends what may go now. It
// returns when it wants to run again at the latest (zero: when woken).
func (dl *deliverer) pump(ctx context.Context, log *zap.Logger) time.Time {
	d := dl.d
	now := dl.clk.Now()
	dl.settle(ctx, log, now)
	if ctx.Err() != nil {
		return time.Time{}
	}
	dl.count(ctx)
	var recv []*Session
	if d.recv != nil {
		recv = d.recv.receiversOf(dl.account)
	}
	if len(recv) == 0 {
		// The flights end with their sessions (ErrConnLost, ErrNotSent).
		if dl.held {
			dl.release(ctx, log)
			dl.held = false
		}
		return time.Time{}
	}
	for s := range dl.throttle {
		if !slices.Contains(recv, s) {
			delete(dl.throttle, s) // gone: a new session starts afresh
		}
	}
	paused, resume := dl.allPaused(recv, now)
	noRoom := false
	for {
		want := min(len(dl.flights)+len(dl.retryAt)+deliverBatch, maxClaimed)
		list, err := dl.list(ctx, want)
		if errors.Is(err, store.ErrLeased) {
			return time.Time{} // another gateway is delivering this account; the poll looks again
		}
		if err != nil {
			d.storeReadFailed(storeOpDeliver, log, "reading held deliveries failed", err)
			return now.Add(time.Second)
		}
		if len(list) == 0 {
			metricDeliveriesPending.WithLabelValues(dl.account).Set(0)
			clear(dl.retryAt)
			clear(dl.keys)
			clear(dl.unremoved)
			return time.Time{}
		}
		if len(list) < want || len(dl.keys) > 4*maxClaimed {
			dl.forgetBut(list)
		}
		var started int
		started, noRoom = dl.start(ctx, list, recv, now, paused, log)
		if started == 0 || len(list) < want || len(dl.flights) >= deliverBatch {
			break
		}
	}
	return dl.nextWake(now, paused, resume, noRoom)
}

// allPaused reports whether every session of recv is in a throttle pause,
// and when the first of them ends.
func (dl *deliverer) allPaused(recv []*Session, now time.Time) (bool, time.Time) {
	var first time.Time
	for _, s := range recv {
		sp := dl.throttle[s]
		if sp == nil || !now.Before(sp.until) {
			return false, time.Time{}
		}
		if first.IsZero() || sp.until.Before(first) {
			first = sp.until
		}
	}
	return true, first
}

// nextWake is when the loop must look again without being woken: the end
// of a pause, the earliest retry, or soon when no session had room.
func (dl *deliverer) nextWake(now time.Time, paused bool, resume time.Time, noRoom bool) time.Time {
	var next time.Time
	for _, sp := range dl.throttle {
		if sp.until.After(now) && (next.IsZero() || sp.until.Before(next)) {
			next = sp.until
		}
	}
	if paused {
		return resume
	}
	for _, t := range dl.retryAt {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if noRoom && len(dl.flights) == 0 {
		if w := now.Add(roomWait); next.IsZero() || w.Before(next) {
			next = w
		}
	}
	return next
}

// list reads up to max of the account's oldest deliveries. It claims them
// (taking or renewing the lease) unless this deliverer claimed less than
// deliveryLease/4 ago: then the lease is its own still, and a plain read
// does.
func (dl *deliverer) list(ctx context.Context, max int) ([]*store.Delivery, error) {
	st := dl.d.store
	if dl.held && !dl.claimedAt.IsZero() && time.Since(dl.claimedAt) < deliveryLease/4 {
		list, err := st.PendingDeliveries(ctx, dl.account, max)
		if err == nil && len(list) == 0 {
			dl.release(ctx, dl.d.log)
			dl.held = false
		}
		return list, err
	}
	list, err := st.ClaimDeliveries(ctx, dl.account, dl.worker, max, deliveryLease)
	switch {
	case errors.Is(err, store.ErrLeased):
		dl.held = false
	case err == nil:
		// With nothing pending the store dropped the lease.
		dl.held = len(list) > 0
		if dl.held {
			dl.claimedAt = time.Now()
		}
	}
	return list, err
}

// forgetBut drops the retry times and order keys of deliveries that are not
// in list (taken by another gateway, or long gone).
func (dl *deliverer) forgetBut(list []*store.Delivery) {
	in := make(map[string]bool, len(list))
	for _, del := range list {
		in[del.ID] = true
	}
	for id := range dl.retryAt {
		if !in[id] && dl.flights[id] == nil {
			delete(dl.retryAt, id)
		}
	}
	for id := range dl.keys {
		if !in[id] && dl.flights[id] == nil {
			delete(dl.keys, id)
		}
	}
	for id := range dl.unremoved {
		if !in[id] && dl.flights[id] == nil {
			delete(dl.unremoved, id)
		}
	}
}

// orderKey is what orders a delivery among the others: the message a
// receipt is about, the source address of an MO message; "" for none.
func (dl *deliverer) orderKey(del *store.Delivery) string {
	if del.MsgID != "" {
		return "m" + del.MsgID
	}
	if k, ok := dl.keys[del.ID]; ok {
		return k
	}
	k := ""
	if m, err := ParseShortMessage(del.Body); err == nil {
		k = "s" + m.Source
	}
	dl.keys[del.ID] = k
	return k
}

// start sends the deliveries of list (oldest first) that may go now: not in
// flight, not waiting for a retry, not behind an unsettled one of the same
// message or handset; while the account is not paused and a session has
// room. noRoom reports that one that could go found no room.
func (dl *deliverer) start(ctx context.Context, list []*store.Delivery, recv []*Session, now time.Time, paused bool, log *zap.Logger) (started int, noRoom bool) {
	// Deliveries the platform has, whose removal failed: removed again
	// (also while the sessions pause), not sent again.
	for _, del := range list {
		if !dl.unremoved[del.ID] || dl.flights[del.ID] != nil {
			continue
		}
		if t, ok := dl.retryAt[del.ID]; ok && now.Before(t) {
			continue
		}
		fl := &flight{del: del}
		dl.flights[del.ID] = fl
		dl.ack(ctx, fl)
	}
	if paused {
		return 0, false
	}
	// Parts of long messages waiting for room go first.
	for id, fl := range dl.flights {
		if !fl.waiting {
			continue
		}
		if fl.s.Ending() || sessionDone(fl.s) {
			delete(dl.flights, id) // sent again whole
			continue
		}
		if !dl.request(fl) {
			noRoom = true
		}
	}
	sessions := slices.Clone(recv)
	blocked := map[string]bool{}
	// What is in flight holds back the later ones of its message or
	// handset, also when it is no longer in the store (an answer after
	// smpp.response_timeout took it while its resend was in flight).
	for _, fl := range dl.flights {
		if k := dl.orderKey(fl.del); k != "" {
			blocked[k] = true
		}
	}
	for _, del := range list {
		k := dl.orderKey(del)
		if k != "" {
			if blocked[k] {
				continue
			}
			blocked[k] = true // the ones after it wait for it
		}
		if dl.flights[del.ID] != nil {
			continue
		}
		if t, ok := dl.retryAt[del.ID]; ok && now.Before(t) {
			continue
		}
		if noRoom || len(dl.flights) >= deliverBatch {
			break
		}
		// The session with the most room first, among those not asking
		// to slow down.
		slices.SortStableFunc(sessions, func(a, b *Session) int { return b.Free() - a.Free() })
		sent := false
		for _, s := range sessions {
			if s.Free() == 0 || s.Ending() || !dl.mayTake(s, now) {
				continue
			}
			fl := &flight{del: del, s: s, parts: deliverParts(del, s)}
			if dl.request(fl) {
				dl.flights[del.ID] = fl
				delete(dl.retryAt, del.ID)
				if sp := dl.throttle[s]; sp != nil && sp.probing {
					sp.probe = del.ID // alone on it until it is taken
				}
				sent = true
				break
			}
		}
		if !sent {
			noRoom = true
			break
		}
		started++
	}
	return started, noRoom
}

// mayTake reports whether session s may be sent a delivery now: not in a
// throttle pause, and, after one, not while its probe awaits an answer.
func (dl *deliverer) mayTake(s *Session, now time.Time) bool {
	sp := dl.throttle[s]
	switch {
	case sp == nil:
		return true
	case now.Before(sp.until):
		return false
	case sp.probing && sp.probe != "" && dl.flights[sp.probe] != nil:
		return false
	}
	return true
}

// sessionDone reports whether s has ended.
func sessionDone(s *Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

// deliverParts are the deliver_sm bodies that carry del to session s: one
// (platformBody), or for an SMPP 3.3 platform legacyParts.
func deliverParts(del *store.Delivery, s *Session) [][]byte {
	if n, ok := s.Value.(*northSession); ok && n.legacy.Load() {
		h := fnv.New32a()
		_, _ = h.Write([]byte(del.ID))
		return legacyParts(del.Body, byte(h.Sum32()))
	}
	return [][]byte{platformBody(del.Body)}
}

// request sends fl's next part without waiting; false when its session had
// no room (or ended).
func (dl *deliverer) request(fl *flight) bool {
	fl.sent = dl.clk.Now()
	// The delivery is the tag: an OK after response_timeout removes it
	// (northSession.late). Only a single-part one: an answer to one part
	// of a series says nothing of the others.
	var tag any
	if len(fl.parts) == 1 {
		tag = fl.del
	}
	ok := fl.s.RequestAsyncTagged(cmdDeliverSM, fl.parts[fl.next], fl.s.cfg.ResponseTimeout, tag, func(f Frame, err error) {
		dl.post(outcome{fl: fl, id: f.ID, status: f.Status, err: err})
	})
	fl.waiting = !ok
	return ok
}

// settle takes the outcomes posted since the last pump.
func (dl *deliverer) settle(ctx context.Context, log *zap.Logger, now time.Time) {
	dl.outMu.Lock()
	outs := dl.outs
	dl.outs = nil
	dl.outMu.Unlock()
	for _, o := range outs {
		id := o.fl.del.ID
		if dl.flights[id] != o.fl {
			continue
		}
		if !o.ack {
			dl.answered(ctx, log, o, now)
			continue
		}
		delete(dl.flights, id)
		if o.err != nil {
			if !dl.unremoved[id] {
				log.Warn("removing a delivered deliver_sm failed; the removal is tried again (the deliver_sm is not sent again unless this gateway stops first)",
					zap.String("delivery", id), zap.Error(o.err))
			}
			dl.unremoved[id] = true
			dl.retryAt[id] = now.Add(deliveryRetryPause)
			continue
		}
		delete(dl.retryAt, id)
		delete(dl.keys, id)
		delete(dl.unremoved, id)
		dl.settled(id)
	}
}

// answered handles the platform's answer to a flight's part (or the
// request's failure).
func (dl *deliverer) answered(ctx context.Context, log *zap.Logger, o outcome, now time.Time) {
	fl := o.fl
	del := fl.del
	if o.err != nil {
		delete(dl.flights, del.ID)
		if !errors.Is(o.err, ErrNotSent) {
			log.Info("deliver_sm unanswered; will retry", zap.String("delivery", del.ID), zap.Error(o.err))
			dl.retryAt[del.ID] = now.Add(deliveryRetryPause)
		}
		return
	}
	if o.id == cmdDeliverSMResp && o.status == statusOK && fl.next+1 < len(fl.parts) {
		// The next part of a long message, on the same session.
		dl.endThrottle(fl)
		fl.next++
		if !dl.request(fl) && (fl.s.Ending() || sessionDone(fl.s)) {
			delete(dl.flights, del.ID) // sent again whole, at once
		}
		return
	}
	if ml := dl.d.mlog(); ml != nil {
		ml.delivered(del, o.status, o.id != cmdDeliverSMResp)
	}
	switch {
	case o.id == cmdDeliverSMResp && o.status == statusOK:
		dl.endThrottle(fl)
	case o.id == cmdDeliverSMResp && (o.status == statusRXPAppn || o.status == statusRXRAppn):
		log.Warn("platform rejected a deliver_sm permanently; dropped", zap.String("delivery", del.ID),
			zap.String("id", del.MsgID), zap.String("status", StatusString(o.status)))
	case o.status == statusThrottled || o.status == statusMsgQFul:
		// In a deliver_sm_resp or a generic_nack alike (some platforms
		// throttle with a generic_nack): the account pauses, and this one
		// goes again after the pause.
		delete(dl.flights, del.ID)
		dl.throttled(log, fl.s, now, fl.sent, o.status)
		// Sent again at once on a session that is not throttled; when
		// none is, after the pause (start picks the sessions).
		return
	case laterStatus(o.status):
		log.Info("platform refused a deliver_sm for now; will retry", zap.String("delivery", del.ID),
			zap.String("command_id", fmt.Sprintf("0x%08X", o.id)), zap.String("status", StatusString(o.status)))
		delete(dl.flights, del.ID)
		dl.retryAt[del.ID] = now.Add(deliveryRetryPause)
		return
	default:
		// A generic_nack (SMPP 3.4 §4.3: the platform could not process
		// the PDU; whatever its status, some send ESME_ROK, it is no
		// acknowledgement), or a refusal that says neither "later" nor
		// "never": retried, at most maxRefusals times.
		what := "deliver_sm_resp"
		if o.id != cmdDeliverSMResp {
			what = fmt.Sprintf("command_id 0x%08X", o.id)
		}
		if !dl.refusal(del.ID) {
			log.Info("platform refused a deliver_sm; will retry", zap.String("delivery", del.ID),
				zap.String("answer", what), zap.String("status", StatusString(o.status)))
			delete(dl.flights, del.ID)
			dl.retryAt[del.ID] = now.Add(deliveryRetryPause)
			return
		}
		log.Warn("platform refused a deliver_sm every time; dropped", zap.String("delivery", del.ID),
			zap.String("id", del.MsgID), zap.String("answer", what), zap.String("status", StatusString(o.status)),
			zap.Int("refusals_counted", maxRefusals), zap.Duration("counted_apart", refusalSpacing))
	}
	dl.ack(ctx, fl)
}

// ack removes an answered (or dropped) delivery from the store, in the
// background; its outcome comes back to the loop. It is finished even when
// the gateway is shutting down: the platform has it.
func (dl *deliverer) ack(ctx context.Context, fl *flight) {
	fl.acking = true
	dl.acks.Add(1)
	go func() {
		defer dl.acks.Done()
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := dl.d.store.AckDelivery(actx, dl.account, fl.del.ID)
		cancel()
		dl.post(outcome{fl: fl, ack: true, err: err})
	}()
}

// throttled pauses the account after ESME_RTHROTTLED or ESME_RMSGQFUL to a
// request sent at sent: a pause of throttlePauseFirst, or twice the last one
// (at most throttlePauseMax) when the platform says it again after a pause.
// The answers to requests sent before the current pause began are of the
// same burst: they keep the pause as it is.
func (dl *deliverer) throttled(log *zap.Logger, s *Session, now, sent time.Time, status uint32) {
	if dl.throttle == nil {
		dl.throttle = map[*Session]*sessionPause{}
	}
	sp := dl.throttle[s]
	if sp == nil {
		sp = &sessionPause{}
		dl.throttle[s] = sp
	}
	if !sp.at.IsZero() && !sent.After(sp.at) {
		return
	}
	if sp.pause == 0 {
		sp.pause = throttlePauseFirst
	} else {
		sp.pause = min(2*sp.pause, throttlePauseMax)
	}
	sp.at, sp.until = now, now.Add(sp.pause)
	sp.probing, sp.probe = true, ""
	log.Info("platform session asks to slow down; deliveries to it paused", zap.String("session", s.ID),
		zap.String("status", StatusString(status)), zap.Duration("pause", sp.pause))
}

// endThrottle ends a session's back-off (and the probing after its pause)
// when it took a delivery sent after its last pause began.
func (dl *deliverer) endThrottle(fl *flight) {
	if sp := dl.throttle[fl.s]; sp != nil && sp.pause != 0 && fl.sent.After(sp.at) {
		delete(dl.throttle, fl.s)
	}
}

// release hands the account's delivery lease back, if this deliverer holds
// it, so that another gateway need not wait for it to pass.
func (dl *deliverer) release(ctx context.Context, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := dl.d.store.ReleaseDeliveries(ctx, dl.account, dl.worker); err != nil {
		log.Debug("releasing the delivery lease failed; it passes by itself", zap.Error(err))
	}
}

// every runs renew every period until the returned stop is called (stop
// waits for a renewal in progress). Leases held while work runs use it.
func every(ctx context.Context, period time.Duration, renew func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				renew(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// deliverSMTags are the optional parameters SMPP 3.4 §4.6.1 defines for
// deliver_sm, and ussd_service_op (§5.3.2.44), which USSD gateways send in
// deliver_sm and USSD platforms need.
var deliverSMTags = map[uint16]bool{
	0x0204: true, // user_message_reference
	0x020A: true, // source_port
	0x020B: true, // destination_port
	0x020C: true, // sar_msg_ref_num
	0x020E: true, // sar_total_segments
	0x020F: true, // sar_segment_seqnum
	0x0205: true, // user_response_code
	0x0201: true, // privacy_indicator
	0x0019: true, // payload_type
	0x0424: true, // message_payload
	0x0381: true, // callback_num
	0x0202: true, // source_subaddress
	0x0203: true, // dest_subaddress
	0x020D: true, // language_indicator
	0x1383: true, // its_session_info
	0x0423: true, // network_error_code
	0x0427: true, // message_state
	0x001E: true, // receipted_message_id
	0x0501: true, // ussd_service_op
}

// platformBody is the deliver_sm body an SMPP 3.4 platform gets for a held
// delivery (a 3.3 one gets legacyBody):
//
//   - only the optional parameters §4.6.1 defines for deliver_sm. A
//     carrier's own (vendor-specific tags, 0x1400-0x3FFF) mean something on
//     that carrier's interface only, and those of its data_sm that
//     deliver_sm has not (source_network_type, qos_time_to_live...) have no
//     place there; relayed, they made platforms whose decoder checks the
//     tags (Jasmin's) refuse the whole PDU, so the receipt never arrived.
//   - for a receipt, the receipted_message_id and message_state (SMPP 3.4
//     §5.3.2.12, §5.3.2.35) that its text says, when the carrier sent only
//     the text (Appendix B): platforms that match receipts by the optional
//     parameters alone would not find the id. The text's id is spareline's
//     already (rewriteReceipt).
//   - schedule_delivery_time and validity_period NULL (§4.6.1), whatever
//     the carrier wrote.
//
// A body that does not parse is returned as it is.
func platformBody(body []byte) []byte {
	m, err := ParseShortMessage(body)
	if err != nil {
		return body
	}
	tlvs := make([]TLV, 0, len(m.TLVs)+2)
	for _, t := range m.TLVs {
		if deliverSMTags[t.Tag] {
			tlvs = append(tlvs, t)
		}
	}
	// schedule_delivery_time and validity_period are NULL in a deliver_sm
	// (§4.6.1): a carrier's are not passed on.
	changed := len(tlvs) != len(m.TLVs) || m.ScheduleDelivery != "" || m.Validity != ""
	if m.IsReceipt() {
		n := len(tlvs)
		tlvs = appendReceiptTLVs(m, tlvs)
		changed = changed || len(tlvs) != n
	}
	msg := m.Message
	if _, ok := m.TLV(tagMessagePayload); ok && len(msg) > 0 {
		// Both (§5.3.2.32: short_message is empty when message_payload
		// is used): what a platform shows would depend on its library.
		// The payload is the content; short_message, often its first
		// octets, is left out.
		msg, changed = nil, true
	}
	if !changed {
		return body
	}
	return m.rebuildDeliver(body, m.ESMClass, msg, tlvs)
}

// appendReceiptTLVs appends to tlvs the receipted_message_id and
// message_state of receipt m that it lacks, from its text.
func appendReceiptTLVs(m *ShortMessage, tlvs []TLV) []TLV {
	_, hasID := m.TLV(tagReceiptedMessageID)
	_, hasState := m.TLV(tagMessageState)
	if hasID && hasState {
		return tlvs
	}
	id, stat, _ := receiptFields(m.Payload())
	if id == "" {
		return tlvs
	}
	if !hasID {
		tlvs = append(tlvs, TLV{Tag: tagReceiptedMessageID, Value: append([]byte(id), 0)})
	}
	if !hasState {
		state, ok := messageStates[stat]
		if !ok && intermediateStats[stat] {
			state, ok = messageStates["ENROUTE"], true
		}
		if ok {
			tlvs = append(tlvs, TLV{Tag: tagMessageState, Value: []byte{state}})
		}
	}
	return tlvs
}
