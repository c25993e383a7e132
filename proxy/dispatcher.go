package proxy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/routing"
	"github.com/spareline/spareline/store"
)

// The dispatcher is the one place that decides where a platform's message
// goes and what the platform is answered (DESIGN.md, the path of one
// message):
//
//  1. route the destination to a carrier (routing.Table);
//  2. write the message to the store: nothing is answered before it is
//     durable;
//  3. re-originate the platform's submit_sm body, byte for byte, on the
//     carrier, and answer by the carrier's command_status class:
//     OK -> OK with our id (the carrier id is linked to ours first, so a
//     receipt can always be rewritten); number error -> the same status;
//     throttle -> wait and retry on the carrier; transient error, timeout,
//     lost connection or carrier down -> the failover path.
//
// Without a modem pool, the failover path answers the platform with a
// status it retries (ESME_RMSGQFUL when nothing was sent, ESME_RSYSERR when
// the carrier may have the message). With a modem pool, spareline answers
// OK itself and queues the message for the modems (see failover.go).
//
// # Store round trips
//
// A message relayed by its carrier costs one store step: after the
// carrier's OK, LinkCarrier writes the record and the carrier id link and
// takes a receipt that overtook the link, atomically. Nothing is written
// before sending: the platform is answered OK only after that step, so a
// crash before it leaves a message the platform was never answered for
// and sends again (a possible duplicate, never a loss). The modem path
// writes its own record when it queues (failover.go).
//
// # Store outage
//
// A failed store write marks the store down; while it is down every new
// submit is refused with ESME_RMSGQFUL before it reaches a carrier (a
// status platforms retry), and a probe writes to the store
// (store.ProbeWrite) every storeProbeEvery until a write succeeds (any
// successful write also clears the mark). The probe writes rather than
// pings: a Redis refusing writes while it answers PING (MISCONF on a full
// disk, READONLY after a failover) or a bbolt file whose commits fail must
// keep the mark, or every submit would reach the carrier and then fail its
// link write (ESME_RSYSERR, a duplicate at the handset). Ping stays for
// /readyz. A link write that fails after the carrier accepted is retried
// for up to linkRetryFor; if the store is still failing the platform gets
// ESME_RSYSERR, never an OK that is not durable (see linkCarrier). A
// carrier's deliver_sm waits for the store at most receiptStoreWait, then
// is answered ESME_RX_T_APPN (receipts.go). What operators see of all this
// (the status page, spareline_store_up, the data loss check) is in
// storestate.go.

// Path labels for submit_latency_seconds.
const (
	pathCarrier = "carrier"
	pathModem   = "modem"
	pathError   = "error"
)

// SubmitOutcome is what the platform is answered.
type SubmitOutcome struct {
	ID     string // our message id when Status is OK
	Status uint32
	Path   string // carrier, modem or error
	// msg is the message, when one was made (routed), for the message
	// log: read once the outcome is given, never changed there.
	msg *store.Message
}

// Dispatcher routes and records messages.
type Dispatcher struct {
	store    store.Store
	ids      *IDGen
	log      *zap.Logger
	health   *Health
	router   atomic.Pointer[routing.Table]
	carriers atomic.Pointer[map[string]*Carrier]

	// failover, when set, takes messages the carriers could not (modem pool).
	failover atomic.Pointer[Failover]

	recv        receiverSource
	deliverMu   sync.Mutex
	deliverers  map[string]*deliverer
	deliverCtx  context.Context
	moAccount   atomic.Value // string
	instance    atomic.Value // string: this gateway's name among those sharing the store (SetInstance)
	throttleMax int
	// deliverClock is the deliverers' time; nil is the real one (tests set
	// theirs before the first delivery).
	deliverClock clock

	// moTails: per source address, the last carrier MO message still being
	// stored (closed once stored or refused), which the next one from that
	// address waits for (handleCarrierDeliver).
	moMu    sync.Mutex
	moTails map[string]chan struct{}
	// moDoubt: the MO messages whose store write is in doubt (modoubt.go).
	moDoubt moDoubt

	// wg counts the background goroutines (deliverers, receipt handlers,
	// the store probe, early-receipt retries). They are started only by
	// spawn, which adds to wg under spawnMu and refuses once the
	// dispatcher's context ended or Wait began (WaitGroup: no Add from zero
	// after Wait started).
	wg       sync.WaitGroup
	spawnMu  sync.Mutex
	stopping bool // Wait began; guarded by spawnMu

	// storeDown is set by a failed store write and cleared by a successful
	// one or by the probe (noteStore); storeProbing while a probe runs.
	storeDown    atomic.Bool
	storeProbing atomic.Bool
	// sh is the store's health for the status page (storestate.go);
	// storeDown changes under its lock.
	sh storeHealth

	// linkCtx is the current shared context of linkCarrier (see there).
	linkCtx atomic.Pointer[sharedDeadline]

	// msgLog is the message log (log.messages), off when nil (msglog.go).
	msgLog msgLogCtl

	// unmatchedLooks are the kept receipts whose look (holdUnmatched) has
	// not run yet: timer id -> due.
	unmatchedMu    sync.Mutex
	unmatchedLooks map[string]time.Time
	// reuseHolds are the receipts held for a newer message that may
	// take their carrier id, not resolved yet (idreuse.go): timer id (as
	// unmatchedTimerID) -> receipt. Guarded by unmatchedMu.
	reuseHolds map[string]*reuseHold

	// noRouteAt is when (UnixNano) the last "no route" warning was logged;
	// noRouteSkipped counts the refusals not logged since.
	noRouteAt      atomic.Int64
	noRouteSkipped atomic.Int64
}

// Store outage handling (see the type's doc).
const (
	storeProbeEvery = 500 * time.Millisecond
	linkRetryFor    = 3 * time.Second
)

// receiverSource gives the bound receivers of an account (the Server).
type receiverSource interface {
	receiversOf(account string) []*Session
}

// DispatcherConfig wires a Dispatcher.
type DispatcherConfig struct {
	Store     store.Store
	Router    *routing.Table
	Carriers  []*Carrier
	Health    *Health
	MOAccount string
	Log       *zap.Logger
}

// NewDispatcher makes a dispatcher. Its deliverers run until ctx ends.
func NewDispatcher(ctx context.Context, c DispatcherConfig) *Dispatcher {
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	d := &Dispatcher{store: c.Store, ids: NewIDGen(), log: c.Log, health: c.Health,
		deliverers: map[string]*deliverer{}, deliverCtx: ctx, throttleMax: 8}
	d.router.Store(c.Router)
	d.SetCarriers(c.Carriers)
	d.moAccount.Store(c.MOAccount)
	return d
}

// SetCarriers replaces the carrier set (reload) and wires their receipts.
func (d *Dispatcher) SetCarriers(list []*Carrier) {
	m := make(map[string]*Carrier, len(list))
	for _, c := range list {
		c.onDeliver = d.handleCarrierDeliver
		c.onLateAccept = d.lateAccepted
		m[c.Name] = c
	}
	d.carriers.Store(&m)
}

// SetRouter replaces the routing table (reload).
func (d *Dispatcher) SetRouter(t *routing.Table) { d.router.Store(t) }

// SetMOAccount names the account that receives MO messages (reload).
func (d *Dispatcher) SetMOAccount(a string) { d.moAccount.Store(a) }

// SetFailover installs the modem path.
func (d *Dispatcher) SetFailover(f *Failover) { d.failover.Store(f) }

// IDs is the id generator (shared with the failover path).
func (d *Dispatcher) IDs() *IDGen { return d.ids }

func (d *Dispatcher) setReceivers(r receiverSource) { d.recv = r }

// Submit handles one platform submit_sm whose body has been validated.
func (d *Dispatcher) Submit(ctx context.Context, account string, sm *ShortMessage, body []byte) SubmitOutcome {
	return d.SubmitAs(ctx, d.ids.Next(), account, sm, body)
}

// SubmitAs is Submit for a message whose id the caller chose (a
// destination of a submit_multi, multi.go).
func (d *Dispatcher) SubmitAs(ctx context.Context, id, account string, sm *ShortMessage, body []byte) (out SubmitOutcome) {
	if d.storeDown.Load() {
		// Nothing could be made durable: refuse before the carrier sees it.
		out = SubmitOutcome{Status: statusMsgQFul, Path: pathError}
		if d.mlog() != nil {
			out.msg = &store.Message{Account: account, Source: sm.Source, Dest: sm.Dest}
		}
		return out
	}
	carrierName, dest := d.router.Load().Route(sm.Dest)
	carriers := *d.carriers.Load()
	c := carriers[carrierName]
	now := time.Now()
	m := &store.Message{
		ID: id, Account: account, Carrier: carrierName, Source: sm.Source, Dest: dest,
		Body: body, RegDeliv: sm.RegisteredDelivery, Priority: sm.Priority, Created: now,
		Expires: validityEnd(sm.Validity, now),
	}
	defer func() { out.msg = m }() // for the message log
	fo := d.failover.Load()
	log := &msgLogger{d: d, m: m}

	if c == nil {
		// No carrier for this number (routing.default is ""): the modem pool.
		if fo == nil {
			// A warning (the route is a configuration gap), at most one a
			// second: a bulk job to such numbers would flood the log.
			if last, t := d.noRouteAt.Load(), now.UnixNano(); t-last >= int64(time.Second) && d.noRouteAt.CompareAndSwap(last, t) {
				log.get().Warn("no route for destination and no modem pool", zap.String("status", "ESME_RINVDSTADR"),
					zap.String("dest_prefix", dest[:min(len(dest), 3)]), zap.Int64("refused_since_last_line", d.noRouteSkipped.Swap(0)),
					zap.String("fix", "route these numbers with routing.prefixes or routing.default, or add modems"))
			} else {
				d.noRouteSkipped.Add(1)
			}
			return SubmitOutcome{Status: statusInvDstAdr, Path: pathError}
		}
		if status, err := fo.modemRefusal(sm, dest); err != nil {
			// Only a modem could send it, and none can: refused now rather
			// than accepted and failed UNDELIV later (modempayload.go).
			log.get().Info("refused: routed to the modems only, and no modem can send it",
				zap.String("status", statusName(status)), zap.Error(err))
			return SubmitOutcome{Status: status, Path: pathError}
		}
		return fo.queue(ctx, m, "route", log.get())
	}
	useCarrier := true
	probe := false
	if fo != nil {
		switch d.health.State(c.Name) {
		case StateUp:
		case StateProbation:
			// New traffic waits for probation to end (health.go).
			useCarrier = false
		case StateDown:
			useCarrier = d.health.Probe(c.Name, fo.probeEvery(c))
			probe = useCarrier
		}
	}
	if !useCarrier {
		metricFailovers.WithLabelValues(c.Name, "down").Inc()
		return fo.queue(ctx, m, "down", log.get())
	}
	if probe {
		defer d.health.EndProbe(c.Name)
		ctx = withProbe(ctx) // its timeout counts towards recycling its bind (recycle.go)
	}
	// Not written yet: the first store step is the carrier's answer (see
	// the type's doc).
	m.State = store.StateCarrier
	m.Attempts = 1
	c.submitStarted(now) // until its outcome is linked (idreuse.go)
	defer c.submitSettled()
	return d.toCarrier(ctx, c, m, fo, log)
}

// SubmitAsync is Submit for a caller that must not wait (a platform
// session's reader goroutine). It runs the common case, a carrier that is
// up, with a free window slot on one of its binds, accepting the message,
// and a store that takes the write, without a goroutine waiting per
// message: the submit goes out from here, the carrier's answer is handled
// on the carrier session's reader goroutine, and the store calls back from
// a goroutine of its own once the write is durable (issue 6: each goroutine
// hand-off and parked waiter costs CPU at saturation). Every other case runs Submit's
// path on a goroutine that run gives it, at the point where it left the
// common case. w.submitted is called exactly once, and must not block.
// sm is not kept once SubmitAsync returns.
// now is the caller's clock reading (the message's time). body is relayed
// as is and must not change afterwards. a, when not nil, is a zero
// asyncSubmit that the caller allocated with its own state (one
// allocation for both); SubmitAsync makes one otherwise.
func (d *Dispatcher) SubmitAsync(account string, sm *ShortMessage, body []byte, now time.Time, run func(func()), w submitWaiter, a *asyncSubmit) {
	al, _ := d.store.(store.AsyncLinker)
	carrierName, dest := d.router.Load().Route(sm.Dest)
	c := (*d.carriers.Load())[carrierName]
	fo := d.failover.Load()
	if al == nil || d.storeDown.Load() || c == nil || (fo != nil && d.health.State(c.Name) != StateUp) {
		smc := *sm // sm is the caller's (on its stack): not kept
		run(func() { w.submitted(d.Submit(context.Background(), account, &smc, body)) })
		return
	}
	// One allocation holds the message, its logger and its carrier call.
	// Its fields are set one by one: it is zero, and a composite literal
	// would be built aside and copied in.
	if a == nil {
		a = new(asyncSubmit)
	}
	a.d, a.c, a.fo, a.al, a.run, a.w = d, c, fo, al, run, w
	m := &a.m
	m.ID, m.Account, m.Carrier, m.Source, m.Dest = d.ids.NextAt(now), account, carrierName, sm.Source, dest
	m.Body, m.RegDeliv, m.Priority, m.Created = body, sm.RegisteredDelivery, sm.Priority, now
	m.Expires, m.State, m.Attempts = validityEnd(sm.Validity, now), store.StateCarrier, 1
	a.log.d, a.log.m = d, m
	a.call.h = a
	c.submitStarted(now) // until a.submitted (idreuse.go)
	if !c.trySubmit(body, now, &a.call, &a.sess) {
		run(func() { a.submitted(d.toCarrier(context.Background(), c, &a.m, fo, &a.log)) })
	}
}

// submitWaiter receives the outcome of SubmitAsync.
type submitWaiter interface {
	submitted(SubmitOutcome)
}

// asyncSubmit is one message of SubmitAsync, from the submit to the
// carrier to the store write of its acceptance.
type asyncSubmit struct {
	d    *Dispatcher
	c    *Carrier
	fo   *Failover
	al   store.AsyncLinker
	run  func(func())
	w    submitWaiter
	m    store.Message
	log  msgLogger
	call call     // the carrier request; its asyncDone is the asyncSubmit
	sess *Session // the carrier session the request went out on
	res  SubmitResult
	ctx  context.Context // of the store write: linkCarrier's time limit, tries included
}

// requestDone takes the carrier's answer (on the carrier session's reader).
func (a *asyncSubmit) requestDone(f Frame, err error) {
	d, c, m := a.d, a.c, &a.m
	var res SubmitResult
	if err == nil {
		res = submitResult(f)
		c.noteAnswer(a.sess, res.Status)
	} else if errors.Is(err, ErrResponseTimeout) {
		c.noteSubmitTimeout(a.sess)
	}
	if err != nil || res.Status != statusOK {
		a.run(func() { a.submitted(d.carrierAnswered(context.Background(), c, m, a.fo, &a.log, res, err)) })
		return
	}
	d.accepted(c, m, res)
	a.res = res
	a.ctx = d.linkContext()
	if m.CarrierID == "" || !a.al.TryLinkCarrier(a.ctx, m, a.linkDone) {
		a.run(func() { // no carrier id, or the store's queue is full: wait for the write here
			orphan, err := d.linkCarrierWithin(a.ctx, m)
			a.submitted(d.linked(context.Background(), c, m, &a.log, a.res, orphan, err))
		})
	}
}

// submitted gives the outcome, with its message (for the message log), to
// the waiter.
func (a *asyncSubmit) submitted(out SubmitOutcome) {
	a.c.submitSettled()
	out.msg = &a.m
	a.w.submitted(out)
}

// linkDone takes the outcome of the store write (TryLinkCarrier's callback).
func (a *asyncSubmit) linkDone(orphan []byte, err error) {
	if err == nil && orphan == nil {
		a.d.noteStore(storeOpSubmit, nil)
		a.submitted(a.d.linked(context.Background(), a.c, &a.m, &a.log, a.res, nil, nil))
		return
	}
	a.linkFailed(orphan, err)
}

// linkFailed is linkDone for a write that failed or took an orphan: the
// rest runs on a goroutine of run (linkCarrier's further tries, the
// orphan's delivery).
func (a *asyncSubmit) linkFailed(orphan []byte, err error) {
	a.run(func() {
		a.d.noteStore(storeOpSubmit, err)
		if err != nil && a.ctx.Err() == nil {
			orphan, err = a.d.linkCarrierWithin(a.ctx, &a.m) // linkCarrier's further tries
		}
		a.submitted(a.d.linked(context.Background(), a.c, &a.m, &a.log, a.res, orphan, err))
	})
}

// toCarrier sends a message to its carrier and decides the answer.
func (d *Dispatcher) toCarrier(ctx context.Context, c *Carrier, m *store.Message, fo *Failover, log *msgLogger) SubmitOutcome {
	res, err := c.SubmitFor(ctx, m.ID, m.Body)
	if errors.Is(err, errTooLongFor33) {
		return d.cannotCarry(ctx, c, m, fo, log)
	}
	return d.carrierAnswered(ctx, c, m, fo, log, res, err)
}

// cannotCarry decides the answer to a submit its carrier cannot take as one
// submit_sm (errTooLongFor33 from SubmitFor: content longer than the 254 octets of an SMPP
// 3.3 carrier's short_message): the modem pool, which splits it into a
// concatenated SMS, sends it; without modems the platform is told
// ESME_RINVMSGLEN, nothing having been sent. The carrier's health is not
// touched: it refused nothing.
func (d *Dispatcher) cannotCarry(ctx context.Context, c *Carrier, m *store.Message, fo *Failover, log *msgLogger) SubmitOutcome {
	if fo != nil {
		metricFailovers.WithLabelValues(c.Name, "unsupported").Inc()
		log.get().Info("carrier cannot take the message (SMPP 3.3, content over 254 octets); sending it by modem")
		return fo.queue(ctx, m, "unsupported", log.get())
	}
	metricSubmits.WithLabelValues(c.Name, "error").Inc()
	m.State, m.Note = store.StateFailed, "not sent: "+errTooLongFor33.Error()
	if err := d.store.PutMessage(ctx, m); err != nil {
		log.get().Warn("store write failed", zap.Error(err))
	}
	log.get().Info("carrier cannot take the message (SMPP 3.3, content over 254 octets) and there are no modems",
		zap.String("status", StatusString(statusInvMsgLen)))
	return SubmitOutcome{Status: statusInvMsgLen, Path: pathError}
}

// carrierAnswered decides the answer to a submit once the carrier gave its
// first answer (res, or err when it gave none): throttling is retried on
// the carrier here, an acceptance is made durable, a failure goes to the
// modems or back to the platform.
func (d *Dispatcher) carrierAnswered(ctx context.Context, c *Carrier, m *store.Message, fo *Failover, log *msgLogger, res SubmitResult, err error) SubmitOutcome {
	for attempt := 0; err == nil && Classify(res.Status) == ClassThrottle && attempt < d.throttleMax; attempt++ {
		metricSubmitStatus.WithLabelValues(c.Name, statusName(res.Status)).Inc()
		metricSubmits.WithLabelValues(c.Name, "throttled").Inc()
		d.health.Note(c.Name, OutcomeThrottled)
		// Throttling is not a failure: slow down and retry on the carrier.
		wait := time.Duration(50<<min(attempt, 5)) * time.Millisecond
		log.get().Debug("carrier throttled; retrying", zap.Duration("in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			err = ctx.Err()
		case <-t.C:
		}
		if err != nil {
			break
		}
		res, err = c.SubmitFor(ctx, m.ID, m.Body)
	}
	if err != nil {
		reason, outcome, mayHave := "down", OutcomeLost, false
		switch {
		case errors.Is(err, ErrCarrierDown):
		case errors.Is(err, ErrResponseTimeout):
			reason, outcome, mayHave = "timeout", OutcomeTimeout, true
			metricSubmits.WithLabelValues(c.Name, "timeout").Inc()
		case errors.Is(err, ErrConnLost):
			reason, outcome, mayHave = "lost", OutcomeLost, true
			metricSubmits.WithLabelValues(c.Name, "lost").Inc()
		default: // ErrNotSent, a closed session
			metricSubmits.WithLabelValues(c.Name, "down").Inc()
		}
		if !errors.Is(err, ErrCarrierDown) { // no bind: health already knows
			d.health.Note(c.Name, outcome)
		}
		log.get().Info("carrier did not take the message", zap.String("reason", reason), zap.Error(err))
		if fo == nil {
			m.State, m.Note = store.StateFailed, err.Error()
			_ = d.store.PutMessage(ctx, m)
			if mayHave {
				return SubmitOutcome{Status: statusSysErr, Path: pathError}
			}
			return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
		}
		metricFailovers.WithLabelValues(c.Name, reason).Inc()
		return fo.afterCarrierFailure(ctx, m, reason, mayHave, log.get())
	}
	if res.Status == statusOK {
		d.accepted(c, m, res)
		orphan, err := d.linkCarrier(m)
		return d.linked(ctx, c, m, log, res, orphan, err)
	}
	metricSubmitStatus.WithLabelValues(c.Name, statusName(res.Status)).Inc()
	c.noteOptionalRefused(res.Status, m.Body)
	class := Classify(res.Status)
	switch class {
	case ClassNumber, ClassThrottle:
		// The carrier is alive, and refused the message: failed on the
		// status page, as in submits_total (result error).
		d.health.Note(c.Name, OutcomeRefused)
	default:
		d.health.Note(c.Name, OutcomeTransient)
	}
	metricSubmits.WithLabelValues(c.Name, "error").Inc()
	if class == ClassTransient && fo != nil {
		metricFailovers.WithLabelValues(c.Name, "transient").Inc()
		log.get().Info("carrier error; failing over", zap.String("status", StatusString(res.Status)))
		return fo.afterCarrierFailure(ctx, m, "transient", false, log.get())
	}
	m.State, m.Note = store.StateFailed, "carrier answered "+StatusString(res.Status)
	if err := d.store.PutMessage(ctx, m); err != nil {
		log.get().Warn("store write failed", zap.Error(err))
	}
	log.get().Info("carrier refused the message", zap.String("status", StatusString(res.Status)))
	return SubmitOutcome{Status: platformStatus(res.Status), Path: pathError}
}

// accepted notes that m's carrier accepted it (health, metrics) and sets
// the carrier's id and the state on m, before the store write.
func (d *Dispatcher) accepted(c *Carrier, m *store.Message, res SubmitResult) {
	c.mStatusOK.get(metricSubmitStatus, c.Name, statusNameOK).Inc()
	d.health.Note(c.Name, OutcomeAnswered)
	c.mSubmitsOK.get(metricSubmits, c.Name, "ok").Inc()
	c.noteAccepted(m.RegDeliv)
	setCarrierID(m, c.cfg.Load().ReceiptID, res.MessageID)
	if m.CarrierID == "" {
		c.acceptedWithoutID(m.ID) // noid.go
	}
	m.State = store.StateSent
}

// setCarrierID sets m's carrier id from the carrier's submit_sm_resp: the
// form receipts are matched by, and the id as written when that differs.
func setCarrierID(m *store.Message, mode, raw string) {
	m.CarrierID, m.CarrierMsgID = canonicalCarrierID(mode, raw, false), ""
	if m.CarrierID != raw {
		m.CarrierMsgID = raw
	}
}

// linked is the answer to an accepted message once the store write of its
// acceptance (linkCarrier) is done: err when it failed for good, orphan the
// receipt that overtook it. ctx is needed (for the orphan's delivery) only
// when orphan is not nil.
func (d *Dispatcher) linked(ctx context.Context, c *Carrier, m *store.Message, log *msgLogger, res SubmitResult, orphan []byte, err error) SubmitOutcome {
	if err != nil {
		// The carrier has the message but we could not make it durable.
		// OK would break the promise (nothing is answered OK before it is
		// durable): after a restart we could neither find the message nor
		// rewrite its receipt. So the platform gets ESME_RSYSERR and will
		// most likely send it again: a possible duplicate at the handset,
		// limited to the submits already in flight when the store failed
		// (later ones are refused before the carrier, see Submit).
		log.get().Error("store write of the carrier id failed; answering ESME_RSYSERR (the carrier has the message)",
			zap.String("carrier_id", res.MessageID), zap.Error(err))
		return SubmitOutcome{Status: statusSysErr, Path: pathError}
	}
	if orphan != nil {
		d.deliverOrphan(ctx, c, m, orphan)
	}
	if d.log.Core().Enabled(zap.DebugLevel) {
		log.get().Debug("carrier accepted the message", zap.String("carrier_id", m.CarrierID))
	}
	return SubmitOutcome{ID: m.ID, Status: statusOK, Path: pathCarrier}
}

// msgLogger gives a message's logger, built on first use: most messages
// log nothing, and zap's With costs an encoder clone.
type msgLogger struct {
	d *Dispatcher
	m *store.Message
	l *zap.Logger
}

func (ml *msgLogger) get() *zap.Logger {
	if ml.l == nil {
		ml.l = ml.d.log.With(zap.String("id", ml.m.ID), zap.String("account", ml.m.Account),
			zap.String("carrier", ml.m.Carrier))
	}
	return ml.l
}

// linkCarrier writes the carrier's acceptance of m (record, carrier id
// link, orphan taken) and returns the orphan receipt, if any. It retries a
// failing store for up to linkRetryFor (a little more: see linkContext).
// Its context is its own, not the caller's: a LinkCarrier that took an
// orphan must not be abandoned.
func (d *Dispatcher) linkCarrier(m *store.Message) ([]byte, error) {
	return d.linkCarrierWithin(d.linkContext(), m)
}

// linkCarrierWithin is linkCarrier within ctx, a linkContext.
func (d *Dispatcher) linkCarrierWithin(ctx context.Context, m *store.Message) ([]byte, error) {
	wait := 20 * time.Millisecond
	link := d.store.LinkCarrier
	if m.CarrierID == "" {
		// The carrier accepted it but gave no message_id (some do when they
		// issue no receipts): nothing to link a receipt to, the record is
		// written alone.
		link = func(ctx context.Context, m *store.Message) ([]byte, error) { return nil, d.store.PutMessage(ctx, m) }
	}
	for {
		orphan, err := link(ctx, m)
		d.noteStore(storeOpSubmit, err)
		if err == nil || ctx.Err() != nil {
			return orphan, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// sharedDeadline is a context that ends at a fixed time, shared by the
// linkCarrier calls that start within linkCtxEvery of its making.
type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc // never called early: the context ends at its deadline
	until  time.Duration      // calls starting from here on (monoClock) make a new one
}

// monoEpoch is the base of monoClock.
var monoEpoch = time.Now()

// monoClock is the monotonic time since monoEpoch: half the cost of
// time.Now (no wall clock reading), for comparisons only.
func monoClock() time.Duration { return time.Since(monoEpoch) }

// linkCtxEvery is how often linkContext makes a new context.
const linkCtxEvery = 100 * time.Millisecond

// linkContext returns a context that ends between linkRetryFor and
// linkRetryFor+linkCtxEvery from now. One context serves all the calls of
// a linkCtxEvery interval, instead of a context and a timer made and
// stopped per message (issue 6).
func (d *Dispatcher) linkContext() context.Context {
	now := monoClock()
	if sd := d.linkCtx.Load(); sd != nil && now < sd.until {
		return sd.ctx
	}
	ctx, cancel := context.WithTimeout(context.Background(), linkRetryFor+linkCtxEvery)
	sd := &sharedDeadline{ctx: ctx, cancel: cancel, until: now + linkCtxEvery}
	d.linkCtx.Store(sd) // two makers racing: the one stored last serves later calls; both end on time
	return ctx
}

// noteStore records the outcome of a store call: an error marks the
// store down and starts the probe; a success marks it up. It reports
// whether an error was news (the store was not marked down yet), so that
// callers log each failure at error level once per outage, not per call.
//
// op says what the call was for (spareline_store_errors_total's label,
// storeOps).
func (d *Dispatcher) noteStore(op string, err error) (news bool) {
	if err == nil {
		if d.storeDown.Load() && d.sh.setDown(&d.storeDown, false) {
			d.log.Warn("store answers again; accepting submits")
		}
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, store.ErrNoCarrierID) {
		return true // the caller gave up, or a bug of ours: not the store's health
	}
	d.sh.failed(op, err)
	news = d.sh.setDown(&d.storeDown, true)
	if news {
		d.log.Error("store failed; refusing submits until the store takes writes again", zap.Error(err))
	}
	if d.storeProbing.CompareAndSwap(false, true) && !d.spawn(d.probeStore) {
		d.storeProbing.Store(false) // shutting down: no probe
	}
	return news
}

// spawn runs fn in a goroutine counted by d.wg, unless the dispatcher is
// stopping (its context ended, or Wait began); it reports whether fn runs.
func (d *Dispatcher) spawn(fn func()) bool {
	d.spawnMu.Lock()
	defer d.spawnMu.Unlock()
	if d.stopping || d.deliverCtx.Err() != nil {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn()
	}()
	return true
}

// Wait waits for background work (deliverers, receipt handlers, the store
// probe) after the dispatcher's context ended. No new background work
// starts once it is called.
func (d *Dispatcher) Wait() {
	d.spawnMu.Lock()
	d.stopping = true
	d.spawnMu.Unlock()
	d.wg.Wait()
}

// storeError notes a failed store call and logs it: at error level when
// it is news, at debug level while the store is known to be down.
func (d *Dispatcher) storeError(op string, log *zap.Logger, msg string, err error) {
	if d.noteStore(op, err) {
		log.Error(msg, zap.Error(err))
	} else {
		log.Debug(msg, zap.Error(err))
	}
}

// probeStore writes to the store (ProbeWrite) every storeProbeEvery while
// it is marked down, and marks it up when a write succeeds. It ends with
// the dispatcher's context.
func (d *Dispatcher) probeStore() {
	t := time.NewTicker(storeProbeEvery)
	defer t.Stop()
	for {
		for d.storeDown.Load() {
			select {
			case <-d.deliverCtx.Done():
				d.storeProbing.Store(false)
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(d.deliverCtx, storeProbeEvery)
			err := d.store.ProbeWrite(ctx)
			cancel()
			if err == nil {
				d.noteStore(storeOpProbe, nil)
			} else {
				d.sh.failed(storeOpProbe, err)
			}
		}
		d.storeProbing.Store(false)
		// A failure noted between the loop's check and now found the probe
		// still running and started none: take the job back.
		if !d.storeDown.Load() || !d.storeProbing.CompareAndSwap(false, true) {
			return
		}
	}
}

// validityEnd reads an SMPP time (SMPP 3.4 §7.1.1), absolute or relative.
// Unparseable values give no expiry (the carrier will judge them).
func validityEnd(v string, now time.Time) time.Time {
	if len(v) != 16 {
		return time.Time{}
	}
	num := func(s string) (int, bool) {
		n := 0
		for _, ch := range s {
			if ch < '0' || ch > '9' {
				return 0, false
			}
			n = n*10 + int(ch-'0')
		}
		return n, true
	}
	yy, ok1 := num(v[0:2])
	mo, ok2 := num(v[2:4])
	dd, ok3 := num(v[4:6])
	hh, ok4 := num(v[6:8])
	mi, ok5 := num(v[8:10])
	ss, ok6 := num(v[10:12])
	t, ok7 := num(v[12:13])
	nn, ok8 := num(v[13:15])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 && ok8) {
		return time.Time{}
	}
	switch v[15] {
	case 'R':
		return now.Add(time.Duration(yy)*365*24*time.Hour + time.Duration(mo)*30*24*time.Hour +
			time.Duration(dd)*24*time.Hour + time.Duration(hh)*time.Hour + time.Duration(mi)*time.Minute +
			time.Duration(ss)*time.Second)
	case '+', '-':
		off := time.Duration(nn) * 15 * time.Minute
		if v[15] == '-' {
			off = -off
		}
		loc := time.FixedZone("", int(off/time.Second))
		return time.Date(2000+yy, time.Month(mo), dd, hh, mi, ss, t*100_000_000, loc)
	}
	return time.Time{}
}
