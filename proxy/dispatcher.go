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
	throttleMax int
	wg          sync.WaitGroup
}

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
	carrierName, dest := d.router.Load().Route(sm.Dest)
	carriers := *d.carriers.Load()
	c := carriers[carrierName]
	now := time.Now()
	m := &store.Message{
		ID: d.ids.Next(), Account: account, Carrier: carrierName, Source: sm.Source, Dest: dest,
		Body: body, RegDeliv: sm.RegisteredDelivery, Priority: sm.Priority, Created: now,
		Expires: validityEnd(sm.Validity, now),
	}
	fo := d.failover.Load()
	log := d.log.With(zap.String("msg", m.ID), zap.String("account", account), zap.String("carrier", carrierName))

	if c == nil {
		// No carrier for this number (routing.default is ""): the modem pool.
		if fo == nil {
			log.Info("no route for destination and no modem pool")
			return SubmitOutcome{Status: statusInvDstAdr, Path: pathError}
		}
		return fo.queue(ctx, m, "route", log)
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
		return fo.queue(ctx, m, "down", log)
	}
	if probe {
		defer d.health.EndProbe(c.Name)
	}
	m.State = store.StateCarrier
	m.Attempts = 1
	if err := d.store.PutMessage(ctx, m); err != nil {
		log.Error("store write failed; refusing the submit", zap.Error(err))
		return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
	}
	return d.toCarrier(ctx, c, m, fo, log)
}

// toCarrier sends a durable message to its carrier and decides the answer.
func (d *Dispatcher) toCarrier(ctx context.Context, c *Carrier, m *store.Message, fo *Failover, log *zap.Logger) SubmitOutcome {
	var res SubmitResult
	var err error
	for attempt := 0; ; attempt++ {
		res, err = c.Submit(ctx, m.Body)
		if err != nil || Classify(res.Status) != ClassThrottle || attempt >= d.throttleMax {
			break
		}
		metricSubmitStatus.WithLabelValues(c.Name, statusName(res.Status)).Inc()
		metricSubmits.WithLabelValues(c.Name, "throttled").Inc()
		d.health.Note(c.Name, OutcomeAnswered)
		// Throttling is not a failure: slow down and retry on the carrier.
		wait := time.Duration(50<<min(attempt, 5)) * time.Millisecond
		log.Debug("carrier throttled; retrying", zap.Duration("in", wait))
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
		log.Info("carrier did not take the message", zap.String("reason", reason), zap.Error(err))
		if fo == nil {
			m.State, m.Note = store.StateFailed, err.Error()
			_ = d.store.PutMessage(ctx, m)
			if mayHave {
				return SubmitOutcome{Status: statusSysErr, Path: pathError}
			}
			return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
		}
		metricFailovers.WithLabelValues(c.Name, reason).Inc()
		return fo.afterCarrierFailure(ctx, m, reason, mayHave, log)
	}
	metricSubmitStatus.WithLabelValues(c.Name, statusName(res.Status)).Inc()
	class := Classify(res.Status)
	switch class {
	case ClassOK:
		d.health.Note(c.Name, OutcomeAnswered)
		metricSubmits.WithLabelValues(c.Name, "ok").Inc()
		m.CarrierID = canonicalCarrierID(c.Config().ReceiptID, res.MessageID, false)
		m.State = store.StateSent
		if err := d.store.PutMessage(ctx, m); err != nil {
			// The carrier has the message: answering an error would make the
			// platform send it twice. Its receipt cannot be rewritten though.
			log.Error("store write of the carrier id failed; its receipt will be lost", zap.Error(err))
		} else {
			d.adoptOrphan(ctx, c, m)
		}
		log.Debug("relayed", zap.String("carrier_id", res.MessageID))
		return SubmitOutcome{ID: m.ID, Status: statusOK, Path: pathCarrier}
	case ClassNumber, ClassThrottle:
		d.health.Note(c.Name, OutcomeAnswered)
	default:
		d.health.Note(c.Name, OutcomeTransient)
	}
	metricSubmits.WithLabelValues(c.Name, "error").Inc()
	if class == ClassTransient && fo != nil {
		metricFailovers.WithLabelValues(c.Name, "transient").Inc()
		log.Info("carrier error; failing over", zap.String("status", StatusString(res.Status)))
		return fo.afterCarrierFailure(ctx, m, "transient", false, log)
	}
	m.State, m.Note = store.StateFailed, "carrier answered "+StatusString(res.Status)
	if err := d.store.PutMessage(ctx, m); err != nil {
		log.Warn("store write failed", zap.Error(err))
	}
	log.Info("carrier refused the message", zap.String("status", StatusString(res.Status)))
	return SubmitOutcome{Status: res.Status, Path: pathError}
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
