package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf16"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
)

// Failover: the backup path of the seed patent ([0020]-[0026]).
//
// When a carrier cannot take a message, spareline answers the platform
// itself (OK and our id, once the message is durable in the store's modem
// queue) and the modem pool sends it by AT+CMGS:
//
//   - carrier down (no bind, or marked down by timeouts): queued at once;
//   - carrier on probation: new traffic is queued, queued traffic goes back
//     to the carrier (health.go);
//   - a transient error status (anything but a number error or a
//     throttle, status.go): queued;
//   - no answer within response_timeout, or the connection lost with the
//     submit in flight: the outcome is unknown, the carrier may have sent it.
//     on_unknown "resend" queues it now (a possible duplicate, counted in
//     spareline_possible_duplicates_total); "hold" queues it due after
//     hold_for, giving the carrier's own delivery a head start;
//   - a failed carrier receipt (UNDELIV, EXPIRED, REJECTD, UNKNOWN; not DELETED)
//     with resend_failed_receipts: queued, and the platform gets only the
//     modem's outcome as its receipt.
//
// Queue workers take entries by priority_flag then age. Before sending by
// modem a worker checks: an expired validity_period gives an EXPIRED
// receipt; a carrier that is up (or on probation) again takes the message
// back; otherwise the attempt is recorded (state modem, attempts+1) and the
// pool sends it. A message queued because its carrier was down keeps that
// reason through failed modem sends (the note adds the last modem error),
// and one still waiting in the pool for a modem when its carrier comes back
// is given up by the pool (no modem is sending it) and goes to the carrier
// at once, so a modem that cannot send does not keep it. Entries are leased: a worker that dies leaves them to be
// claimed again when the lease passes (queueLease).
//
// Receipts: a modem's +CDS status report becomes a DELIVRD, EXPIRED,
// DELETED or UNDELIV receipt with our id (reportStat; one of a send made
// before a restart finds its message in the store, reportmatch.go); a temporary one
// (TP-ST 0x20-0x3F) an intermediate ENROUTE notification when the submit
// asked for them (intermediate); a final one after the ACCEPTD below is
// recorded on the message, not sent (lateReport). Where no report comes within modem_receipt_timeout,
// the platform gets a receipt with stat ACCEPTD ("the network accepted it;
// final outcome unknown"), err:000. That timer is durable (store.Timers): it
// is written before the send is recorded as done, cleared when the report
// produces the final receipt, and fired by whichever instance claims it when
// due, so a kill -9 between the send and its report (the pool's TP-MR map
// lives in memory, and a report arriving while no process reads the modem is
// lost) still ends in a receipt. A timer fires at least once; firing checks
// the message's state first: "modemsent", or "modem" (the send succeeded
// but its record is not written yet: a timer is set only after a successful
// send), gets the ACCEPTD receipt; any other state clears the timer.
//
// Several gateways on one store: every transition two of them could race
// for is a compare-and-set on the stored state (store.FinishMessage), so
// exactly one wins. A worker takes a message only by moving it from queued
// (or modem/carrier: a predecessor killed mid-send, whose lease passed) to
// modem, or to carrier when returning it to its carrier; cancel_sm only by
// moving it from queued to done (query.go); a final receipt (status report,
// receipt timer, permanent modem failure) only from modemsent (or modem).
// The loser leaves the message alone: a worker acks its queue entry unsent,
// a cancel answers ESME_RCANCELFAIL, a second receipt is never written.
// finMu still serialises this process's own finishers (a report and its
// timer), and no longer carries the cross-instance guarantee.
//
// Crash windows of the queue, and what closes them: an entry is leased for
// queueLease and the lease is renewed while the send runs, while a queued
// message goes back to its carrier and while the record of a send is
// retried, so the entries of a killed worker come back within queueLease; a
// worker killed after the modem sent but before the entry was acked finds
// the message in state "modemsent" and only acks the entry (its receipt is
// the timer's); a worker killed inside the send resends it (a possible
// duplicate, never a loss). A shutdown is not a kill: a send on a modem
// finishes and is recorded within the drain deadline (RunDraining), and one
// the deadline cuts short after its AT+CMGS began is left at "modem", so
// that its resend is counted as the killed worker's is. The entry is acked
// only once the outcome is durable: a "modemsent" record that the store will not take is retried
// until shutdown, then left to the lease; a message taken back by its
// carrier whose link the store will not take is released, not acked.

// ModemSender is the modem pool as the failover path uses it.
type ModemSender interface {
	// SendUnless sends s, or gives it up with modem.ErrWithdrawn when
	// giveUp is closed while it waits for a modem (modem.Pool.SendUnless).
	SendUnless(ctx context.Context, giveUp <-chan struct{}, id string, s sms.Submit) (*modem.Sent, error)
	Reports() <-chan modem.Report
	Incoming() <-chan modem.Incoming
	Status() []modem.ModemStatus
}

var (
	metricQueueDepth = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_modem_queue_depth", Help: "Messages waiting in the modem queue.",
	})
	metricQueueOldest = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_modem_queue_oldest_seconds", Help: "Age of the oldest message in the modem queue.",
	})
	// possible duplicates: messages resent by modem whose carrier outcome was unknown.
	metricPossibleDup = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_possible_duplicates_total", Help: "Messages sent by modem after an unknown carrier outcome.",
	}, []string{"carrier"})
	// modem_possible_duplicates_total: messages sent again (by modem or their
	// carrier) after a modem send of them that may have gone out: its
	// worker was killed, or lost its lease, while the send ran, or the send
	// was cut short after its AT+CMGS began (a shutdown's drain deadline).
	// Not per carrier: spareline_possible_duplicates_total's one label is
	// the carrier, whose unknown answer it counts.
	metricModemResendsInDoubt = promauto.NewCounter(prometheus.CounterOpts{
		Name: "spareline_modem_possible_duplicates_total",
		Help: "Messages sent again after a modem send of them that may have gone out (its worker died, lost its queue lease, or was cut short by a shutdown's deadline while sending): possible duplicates.",
	})
	// modem_path_total result: sent, expired, returned (back to carrier),
	// permanent: a queued message's end; failed: a temporary failure of a
	// send, after which the message stays queued (one message may count
	// failed several times, then one end).
	metricModemPath = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_modem_path_total",
		Help: "Queued messages by how they ended (sent, returned to their carrier, expired, permanent: a final failure), and failed: temporary send failures, after which the message stays queued and is tried again.",
	}, []string{"result"})
	// modem_late_reports_total stat: the receipt word of a final status
	// report that came after modem_receipt_timeout (recorded, not sent).
	metricModemLateReports = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_modem_late_reports_total",
		Help: "Final status reports from modems that came after modem_receipt_timeout (the platform had ACCEPTD): recorded on the message, not sent.",
	}, []string{"stat"})
)

// FailoverConfig is the failover policy.
type FailoverConfig struct {
	CountryCode          string
	OnUnknown            string // resend or hold
	HoldFor              time.Duration
	ModemReceiptTimeout  time.Duration
	ResendFailedReceipts bool
	Workers              int // concurrent queue workers; default modems+2
	Worker               string
	// ModemNumbers maps a modem's name to its SIM's number (config
	// modems[].number): the destination_addr of MO messages arriving on it.
	ModemNumbers map[string]string
}

// queueLease is how long a claimed queue entry stays with its worker
// without renewal: the time for a killed worker's entries to come back.
// A running send renews it every queueLease/4.
const queueLease = 20 * time.Second

// timerLease is how long a claimed receipt timer waits before another
// claimer may fire it (its claimer died before clearing it).
const timerLease = 15 * time.Second

type sendingState struct {
	early []modem.Report
}

// Failover is the modem path.
type Failover struct {
	d    *Dispatcher
	pool ModemSender
	log  *zap.Logger

	mu  sync.Mutex
	cfg FailoverConfig
	// sending: messages inside pool.Send or not yet recorded as sent; a
	// status report that overtakes the record waits here.
	sending map[string]*sendingState
	// delivered: parts reported delivered, per message.
	delivered map[string]*partsSeen
	// lateDelivered: parts reported delivered after the message's receipt
	// timer (lateReport).
	lateDelivered map[string]lateCount

	// finMu serialises the final receipt of a modem send (status report
	// or receipt timer) in this process: read state, finish, clear timer.
	// Across processes the compare-and-set in finish decides.
	finMu sync.Mutex

	// cancelMu guards claimed: queue entries this process's workers hold,
	// which cancel_sm must not take (query.go).
	cancelMu sync.Mutex
	claimed  map[string]int

	kick      chan struct{}
	timerKick chan struct{}
	// idleUntil (unix nanoseconds): when the last message put back while
	// no modem was up is due again (process).
	idleUntil atomic.Int64
	wg        sync.WaitGroup

	// stored: the reports no send of this process explains, matched
	// against the store (reportmatch.go); used by the reports goroutine.
	stored storedReports

	// Queue workers: running follows cfg.Workers (a reload that changes the
	// modems changes it). Guarded by mu; runCtx is nil before Run and
	// stopping set once Run's ctx ended (no worker is started then).
	runCtx   context.Context
	running  int
	stopping bool
	// sendCtx bounds the modem sends (RunDraining's sends): one already on
	// a modem when runCtx ends goes on until it ends. nil before Run (a
	// send then uses its worker's context).
	sendCtx context.Context
}

// NewFailover installs the modem path on the dispatcher.
func NewFailover(d *Dispatcher, pool ModemSender, cfg FailoverConfig, log *zap.Logger) *Failover {
	if cfg.Workers <= 0 {
		cfg.Workers = 3
	}
	if cfg.Worker == "" {
		cfg.Worker = "spareline-" + d.ids.Next()[16:]
	}
	f := &Failover{d: d, pool: pool, cfg: cfg, log: log,
		sending: map[string]*sendingState{}, delivered: map[string]*partsSeen{}, kick: make(chan struct{}, 1),
		timerKick: make(chan struct{}, 1)}
	d.SetFailover(f)
	return f
}

// SetConfig changes the policy (reload). A changed Workers (> 0) starts
// more queue workers at once, or ends the extra ones as each finishes the
// message it holds (an idle one at its next poll of the queue, within a
// second).
func (f *Failover) SetConfig(cfg FailoverConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cfg.Workers <= 0 {
		cfg.Workers = f.cfg.Workers
	}
	cfg.Worker = f.cfg.Worker
	f.cfg = cfg
	f.startWorkers()
	f.kickWorkers()
}

// startWorkers starts queue workers up to cfg.Workers; f.mu is held.
func (f *Failover) startWorkers() {
	if f.runCtx == nil || f.stopping {
		return
	}
	for ctx := f.runCtx; f.running < f.cfg.Workers; f.running++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.worker(ctx)
		}()
	}
}

// workerDone reports whether a worker should end (there are more than
// cfg.Workers) and counts it out if so.
func (f *Failover) workerDone() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running > f.cfg.Workers {
		f.running--
		return true
	}
	return false
}

// sendingNow is how many messages this process's workers are sending by
// modem (or recording).
func (f *Failover) sendingNow() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sending)
}

func (f *Failover) config() FailoverConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

// Run runs the queue workers and the report and MO readers until ctx ends.
func (f *Failover) Run(ctx context.Context) { f.RunDraining(ctx, ctx) }

// RunDraining is Run, with the modem sends bounded by sends instead: when
// ctx ends (shutdown) the workers take no new message and a message still
// waiting in the pool for a modem is given up (back to queued, for the next
// start), while a send already on a modem (its AT+CMGS written or about to
// be) goes on and its outcome is recorded as usual, unless sends ends
// first. A send cut short then, after its PDU may have gone out, is left
// in doubt (state "modem", as a killed worker's): its next send is counted
// in spareline_modem_possible_duplicates_total (resendInDoubt). Status
// reports and MO messages are read until the workers have ended (or sends
// ends); then it returns.
func (f *Failover) RunDraining(ctx, sends context.Context) {
	// The status reports and MO messages are read until the sends end: a
	// modem that takes one off the SIM meanwhile (deleted there, or
	// acknowledged) hands it over, and it is stored as usual.
	readCtx, stopReading := context.WithCancel(sends)
	defer stopReading()
	var aux sync.WaitGroup
	aux.Add(3)
	f.mu.Lock()
	f.runCtx, f.sendCtx = ctx, sends
	f.startWorkers()
	f.mu.Unlock()
	go func() {
		defer aux.Done()
		f.reports(readCtx)
	}()
	go func() {
		defer aux.Done()
		f.timers(ctx)
	}()
	go func() {
		defer aux.Done()
		f.gauges(ctx)
	}()
	<-ctx.Done()
	f.mu.Lock()
	f.stopping = true // no worker is added while wg.Wait runs
	f.mu.Unlock()
	f.wg.Wait() // the workers: their sends recorded, or cut short when sends ended
	stopReading()
	aux.Wait()
}

func (f *Failover) kickWorkers() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *Failover) probeEvery(c *Carrier) time.Duration {
	return max(2*c.Config().ResponseTimeout.D(), time.Second)
}

// idleLook is how long a message looked at while no modem is up is put
// back for.
const idleLook = time.Second

func (f *Failover) anyModemUp() bool {
	for _, s := range f.pool.Status() {
		if s.State == modem.StateUp {
			return true
		}
	}
	return false
}

// anyModemTakes reports whether a modem may take a message now: one up, or
// one on trial (held out after send errors, its hold over: only a message
// tells whether it can send again; the only modem of a site, held out, must
// still get one).
func (f *Failover) anyModemTakes() bool {
	for _, s := range f.pool.Status() {
		if s.State == modem.StateUp || s.Trial {
			return true
		}
	}
	return false
}

func (f *Failover) modemStatus() []modem.ModemStatus { return f.pool.Status() }

// queue makes a new message durable in the modem queue and answers OK.
func (f *Failover) queue(ctx context.Context, m *store.Message, reason string, log *zap.Logger) SubmitOutcome {
	if err := f.enqueue(ctx, m, reason, time.Now()); err != nil {
		f.d.storeError(storeOpSubmit, log, "store write failed; refusing the submit", err)
		return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
	}
	f.d.noteStore(storeOpSubmit, nil)
	log.Debug("queued for the modem pool", zap.String("reason", reason))
	if ml := f.d.mlog(); ml != nil {
		ml.failover(m, reason)
	}
	return SubmitOutcome{ID: m.ID, Status: statusOK, Path: pathModem}
}

// enqueue makes m durable in the modem queue, due at due or, when the
// platform scheduled it later (schedule_delivery_time, SMPP 3.4 §5.2.15),
// at its scheduled time: a message scheduled for 8:00 that meets a carrier
// outage at 3:00 goes by modem at 8:00, not at 3:00.
func (f *Failover) enqueue(ctx context.Context, m *store.Message, reason string, due time.Time) error {
	if at := scheduledAt(m); at.After(due) {
		due = at // the note stays: "down" and "route" decide the way back to the carrier
	}
	m.State = store.StateQueued
	m.Note = reason
	if err := f.d.store.PutMessage(ctx, m); err != nil {
		return err
	}
	if err := f.d.store.EnqueueModem(ctx, m.ID, m.Priority, due); err != nil {
		return err
	}
	f.kickWorkers()
	return nil
}

// scheduledAt is the message's schedule_delivery_time (absolute, or
// relative to its submission), zero when it has none.
func scheduledAt(m *store.Message) time.Time {
	sm, err := ParseShortMessage(m.Body)
	if err != nil || sm.ScheduleDelivery == "" {
		return time.Time{}
	}
	return validityEnd(sm.ScheduleDelivery, m.Created) // the same SMPP time format (§7.1.1)
}

// afterCarrierFailure queues a message its carrier did not take.
func (f *Failover) afterCarrierFailure(ctx context.Context, m *store.Message, reason string, mayHave bool, log *zap.Logger) SubmitOutcome {
	due := time.Now()
	cfg := f.config()
	label := reason // spareline_failovers_total's word, for the message log
	if mayHave {
		if cfg.OnUnknown == "hold" {
			due = due.Add(cfg.HoldFor)
			reason += ", held"
		} else {
			reason += ", possible duplicate"
			metricPossibleDup.WithLabelValues(m.Carrier).Inc()
		}
	}
	if err := f.enqueue(ctx, m, reason, due); err != nil {
		f.d.storeError(storeOpSubmit, log, "store write failed; refusing the submit", err)
		if mayHave {
			return SubmitOutcome{Status: statusSysErr, Path: pathError}
		}
		return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
	}
	if ml := f.d.mlog(); ml != nil {
		switch {
		case !mayHave:
			ml.failover(m, label)
		case cfg.OnUnknown == "hold":
			ml.failover(m, label, zap.Time("held_until", due))
		default:
			ml.failover(m, label, zap.Bool("possible_duplicate", true))
		}
	}
	return SubmitOutcome{ID: m.ID, Status: statusOK, Path: pathModem}
}

// failedStats are the carrier receipt words a modem resend may cure.
// DELETED is not one: the message was deleted on purpose (a cancel_sm the
// platform sent, whose DELETED receipt may come before the carrier's
// cancel_sm_resp; or the SMSC's administration), and a resend would
// deliver what someone meant to stop.
var failedStats = map[string]bool{"UNDELIV": true, "EXPIRED": true, "REJECTD": true, "UNKNOWN": true}

// onFailedReceipt resends by modem a message whose carrier receipt failed.
func (f *Failover) onFailedReceipt(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, stat string) (bool, error) {
	if !f.config().ResendFailedReceipts || !failedStats[stat] || m.State != store.StateSent {
		return false, nil
	}
	// sent -> queued by compare-and-set: of two copies of the receipt (a
	// carrier resending it, or two instances) only one queues the message.
	// The state change and the queue entry are one store step: a Redis
	// call cut short at its deadline (the deliver_sm's bounded store step)
	// may have been applied all the same, and the carrier's resent receipt
	// then loses the compare-and-set; as two steps, that left the record
	// queued with no entry (never sent, no receipt for the platform).
	m.State, m.Note = store.StateQueued, "carrier receipt "+stat
	won, err := f.d.store.QueueMessage(ctx, []store.State{store.StateSent}, m, time.Now())
	if errors.Is(err, store.ErrNotFound) || (err == nil && !won) {
		return true, nil // expired, or a duplicate: the first copy queued it
	}
	if err != nil {
		return true, err // not queued, or queued with its entry: the carrier's resent receipt tells
	}
	f.kickWorkers()
	metricFailovers.WithLabelValues(c.Name, "receipt").Inc()
	if ml := f.d.mlog(); ml != nil {
		ml.failover(m, "receipt", zap.String("stat", stat))
	}
	f.log.Info("carrier receipt failed; resending by modem", zap.String("id", m.ID), zap.String("carrier", c.Name),
		zap.String("stat", stat))
	return true, nil
}

func (f *Failover) worker(ctx context.Context) {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for ctx.Err() == nil && !f.workerDone() {
		id, err := f.d.store.ClaimModem(ctx, f.config().Worker, queueLease)
		if err != nil {
			if !errors.Is(err, store.ErrEmpty) && ctx.Err() == nil {
				f.d.storeReadFailed(storeOpModem, f.log, "modem queue unreadable", err)
			}
			select {
			case <-ctx.Done():
			case <-f.kick:
			case <-poll.C:
			}
			continue
		}
		f.processClaimed(ctx, id) // process, marked claimed for cancel_sm (query.go)
	}
}

// process handles one claimed queue entry.
func (f *Failover) process(ctx context.Context, id string) {
	_ = sleepCtx(ctx, f.processWait(ctx, id))
}

// processWait is process, but for its pause while no modem is up (the
// entry put back): it returns it for the caller to wait, once it no longer
// counts the entry as its own (processClaimed): a late acceptance by the
// carrier may take the message back meanwhile (late.go).
func (f *Failover) processWait(ctx context.Context, id string) (wait time.Duration) {
	st := f.d.store
	log := f.log.With(zap.String("id", id))
	m, err := st.GetMessage(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("queued message has no record (expired); dropped")
		_ = st.AckModem(ctx, id)
		return
	}
	if err != nil {
		log.Warn("store read failed; retrying later", zap.Error(err))
		_ = st.ReleaseModem(ctx, id, time.Now().Add(5*time.Second))
		return
	}
	if m.State == store.StateDone || m.State == store.StateFailed || m.State == store.StateModemSent {
		// Finished, or sent by a worker killed before its ack (its receipt
		// timer is durable): nothing to send again.
		_ = st.AckModem(ctx, id)
		return
	}
	// A record still at "modem": a worker (of this gateway or another, or
	// one killed) took it for a modem send and its lease passed before it
	// recorded how the send went. That send may have gone out: sending it
	// again (by modem, or by its carrier) may duplicate it at the handset.
	// Said once, when it is taken for the next send (resendInDoubt).
	inDoubt := m.State == store.StateModem
	sm, err := ParseShortMessage(m.Body)
	if err != nil { // cannot happen: it was parsed when submitted
		log.Error("stored body unparseable; dropped", zap.Error(err))
		_ = st.AckModem(ctx, id)
		return
	}
	now := time.Now()
	if !m.Expires.IsZero() && now.After(m.Expires) {
		if _, err := f.finish(ctx, m, sm, workerFrom, "EXPIRED", "000", "validity period passed in the modem queue"); err != nil {
			_ = st.ReleaseModem(context.WithoutCancel(ctx), id, time.Now().Add(5*time.Second))
			return
		}
		metricModemPath.WithLabelValues("expired").Inc()
		_ = st.AckModem(ctx, id) // finished here, or by whoever won
		return
	}
	// The original carrier is back: it is fast, the modem is not.
	// Only messages queued because their carrier was down go back, however
	// often a modem failed them meanwhile (returnsToCarrier): one that its
	// carrier just failed (an error, a timeout, a failed receipt) goes by
	// modem, not through the same carrier again.
	//
	// waitBack: the carrier is down now and would take the message back;
	// the modem send below is given up if the carrier comes back while the
	// message still waits for a modem (none up, or all busy or over budget):
	// a worker must not hold it in the pool while its carrier could send it.
	c := (*f.d.carriers.Load())[m.Carrier]
	waitBack := c != nil && returnsToCarrier(m.Note)
	backNow := waitBack && f.d.health.State(c.Name) != StateDown
	if !backNow && c != nil && unknownAtCarrier(m.Note) && f.d.health.State(c.Name) == StateUp && !f.anyModemTakes() {
		// Left unanswered by its carrier (a timeout, a lost connection:
		// the carrier may have it), it waits for a modem; but none can
		// take it (all down or held out) and its carrier is up again:
		// the carrier sends it rather than no one (a possible duplicate
		// either way). Left unanswered again, it waits unknownAgainWait
		// before the next try (carrierUnknown).
		log.Info("no modem can take a message its carrier left unanswered, and the carrier is up again: it goes back to the carrier, a possible duplicate",
			zap.String("carrier", c.Name), zap.String("queued_for", queueReason(m.Note)))
		backNow = true
	}
	if backNow {
		waitBack = false // tried now; if the carrier does not take it, the modems do
		// Taken (queued -> carrier) before the carrier sees it, so that a
		// cancel_sm or another instance cannot take it too.
		m.State = store.StateCarrier
		if !f.take(ctx, id, m, log) {
			return
		}
		inDoubt = f.resendInDoubt(inDoubt, m, "carrier", log)
		// The lease is renewed meanwhile: the response timeout and the
		// carrier's rate limit may outlast queueLease.
		stopRenew := f.renewLease(ctx, id)
		back, orphan := f.backToCarrier(ctx, c, m, sm, log)
		stopRenew()
		if f.afterBack(ctx, id, c, m, back, orphan, log) {
			return
		}
	}
	// While no modem is up (nor on trial) the workers look at each queued
	// message in turn (its carrier may come back), putting each back for
	// idleLook. When a modem comes up, the messages looked at last are not due again yet:
	// sent now, newer messages would overtake them (priority_flag, then
	// age, is the queue's order). So the first sends wait until every
	// message put back is due again (at most idleLook).
	idle := !f.anyModemTakes()
	// The carrier is down by timeouts (its binds connected) and no modem
	// can take the message now: it is the carrier's probe, when health
	// gives the probe slot (one at a time, at most every probeEvery, shared
	// with the dispatcher's new traffic). Without it, a carrier that
	// answers again with no new traffic would stay down for ever, its
	// queued messages waiting for modems that cannot send them.
	if idle && c != nil && returnsToCarrier(m.Note) && f.d.health.State(c.Name) == StateDown &&
		f.d.health.Probe(c.Name, f.probeEvery(c)) {
		done := f.probeWith(ctx, id, c, m, sm, inDoubt, log)
		f.d.health.EndProbe(c.Name)
		if done {
			return
		}
		inDoubt = false // said by probeWith
	}
	until := f.idleUntil.Load()
	if idle || time.Now().UnixNano() < until {
		if m.State == store.StateCarrier {
			// Back to queued, so that cancel_sm can take it while it waits.
			m.State = store.StateQueued
			if !f.take(context.WithoutCancel(ctx), id, m, log) {
				return
			}
		}
		// Nothing can send now: leave it queued (a carrier may come back first).
		// Released even when ctx ended (shutdown), or the next start waits
		// out queueLease for it.
		// The worker waits half as long as the message is put back for:
		// its next claim takes another queued message (the queue's order
		// is by age, not by due time), so that the workers look at more
		// of them than their own number (one queued for a carrier that
		// is back, or that can be its probe, is not stuck behind older
		// ones that can only go by modem).
		wait := idleLook / 2
		due := time.Now()
		if idle {
			due = due.Add(idleLook)
			f.idleUntil.Store(due.UnixNano())
		} else {
			wait = time.Duration(until - time.Now().UnixNano())
		}
		_ = st.ReleaseModem(context.WithoutCancel(ctx), id, due)
		return wait
	}
	m.State = store.StateModem
	m.Attempts++
	if !f.take(ctx, id, m, log) { // the attempt is recorded before it is made
		return
	}
	f.resendInDoubt(inDoubt, m, "modem", log)
	log.Debug("sending by modem", zap.Int("attempt", m.Attempts))
	sub := modemSubmit(sm, f.modemDest(m.Dest), m.RegDeliv&0x13 != 0) // modempayload.go
	if !m.Expires.IsZero() {
		sub.Validity = time.Until(m.Expires)
	}
	f.mu.Lock()
	f.sending[m.ID] = &sendingState{}
	sends := f.sendCtx
	if sends == nil {
		sends = ctx // not run by Run (tests)
	}
	f.mu.Unlock()
	defer f.recorded(ctx, m.ID)
	// The send runs on sends, not on ctx: a shutdown (ctx ends) does not
	// cut short an attempt on a modem (RunDraining); it only gives up the
	// message while it waits for one (giveUp), as its carrier coming back
	// does.
	sctx, cancel := context.WithTimeout(sends, 10*time.Minute)
	stopRenew := f.renewLease(sctx, id)
	var carrierBack <-chan struct{}
	if waitBack {
		carrierBack = f.carrierBack(sctx, c.Name)
	}
	// Given up while it waits for a modem: its carrier came back, no modem
	// can take it, or a shutdown (ctx ends: it stays queued for the next
	// start).
	giveUp, why := f.leavePool(sctx, carrierBack, ctx.Done())
	sctx = modem.WithQueueOrder(sctx, modem.QueueOrder{Priority: m.Priority, Queued: m.Created})
	sent, err := f.pool.SendUnless(sctx, giveUp, m.ID, sub)
	stopRenew()
	cancel()
	if errors.Is(err, modem.ErrWithdrawn) {
		// No modem sent it: back to queued (from modem, by compare-and-set,
		// as below), due now for its carrier or for the next start (a
		// shutdown), or after idleLook when no modem could take it
		// (looked at again as the workers look at every queued message
		// while no modem can: its carrier may come back, or take it as
		// its probe).
		due := time.Now()
		switch why() {
		case leftStopping:
			log.Info("stopping: the message waited for a modem; it stays queued for the next start")
		case leftNoModem:
			log.Info("no modem can take the message now (all down or held out); it goes back to the queue, and the worker to the other queued messages")
			due = due.Add(idleLook)
			f.idleUntil.Store(due.UnixNano())
		default:
			log.Info("carrier back while the message waited for a modem; it goes back to the carrier")
		}
		m.State = store.StateQueued
		won, werr := st.FinishMessage(context.WithoutCancel(ctx), []store.State{store.StateModem}, m, nil)
		if werr == nil && !won {
			f.leftUs(ctx, id, log)
			return
		}
		_ = st.ReleaseModem(context.WithoutCancel(ctx), id, due)
		f.kickWorkers()
		return
	}
	if err != nil {
		var se *modem.SendError
		failedOn := ""
		if errors.As(err, &se) {
			failedOn = se.Modem
		}
		if ml := f.d.mlog(); ml != nil {
			ml.modemFailed(m, failedOn, err, se != nil && se.Permanent)
		}
		if inDoubtErr(err) {
			// Cut short (the drain deadline of a shutdown passed, or its
			// send context ended) after its PDU may have gone out: the
			// record stays at "modem", as a killed worker's does, so that
			// its next send is counted and warned as a possible duplicate
			// (resendInDoubt); the note says where and why. Not a retry
			// after a plain failure: that would lose the doubt.
			metricModemPath.WithLabelValues("failed").Inc()
			log.Warn("modem send cut short after it may have gone out; its next send counts as a possible duplicate",
				zap.String("modem", failedOn), zap.Int("attempt", m.Attempts), zap.Error(err))
			m.Modem, m.Note = failedOn, modemFailedNote(m.Note, err)
			won, werr := st.FinishMessage(context.WithoutCancel(ctx), []store.State{store.StateModem}, m, nil)
			if werr == nil && !won {
				f.leftUs(ctx, id, log)
				return
			}
			_ = st.ReleaseModem(context.WithoutCancel(ctx), id, time.Now())
			return
		}
		if se != nil && se.Permanent {
			metricModemPath.WithLabelValues("permanent").Inc()
			log.Info("modem send failed permanently", zap.Error(err))
			stat := "UNDELIV"
			if se.NumberError {
				stat = "REJECTD"
			}
			m.Modem = failedOn // GET /message: the modem that refused it
			if _, err := f.finish(ctx, m, sm, []store.State{store.StateModem}, stat, fmt.Sprintf("%03d", se.Code%1000), err.Error()); err != nil {
				_ = st.ReleaseModem(context.WithoutCancel(ctx), id, time.Now().Add(5*time.Second))
				return
			}
			_ = st.AckModem(ctx, id)
			return
		}
		metricModemPath.WithLabelValues("failed").Inc()
		log.Warn("modem send failed; will retry", zap.Error(err))
		// Back to queued only from modem (compare-and-set): a record that
		// left state modem meanwhile (a receipt timer of an earlier send
		// finished it, another worker took it over) is not overwritten.
		// The note keeps why it was queued: a message queued because its
		// carrier was down still goes back to the carrier once it is up,
		// however often the modems failed it meanwhile.
		m.State, m.Note = store.StateQueued, modemFailedNote(m.Note, err)
		won, werr := st.FinishMessage(context.WithoutCancel(ctx), []store.State{store.StateModem}, m, nil)
		if werr == nil && !won {
			f.leftUs(ctx, id, log)
			return
		}
		due := time.Now().Add(2 * time.Second)
		if why() == leftCarrierBack || closed(carrierBack) {
			due = time.Now() // its carrier is back: no pause before it goes there
			defer f.kickWorkers()
		}
		_ = st.ReleaseModem(context.WithoutCancel(ctx), id, due)
		return
	}
	metricModemPath.WithLabelValues("sent").Inc()
	if ml := f.d.mlog(); ml != nil {
		ml.modemSent(m, sent.Modem, len(sent.Refs))
	}
	m.State, m.Modem, m.ModemRefs, m.Note = store.StateModemSent, sent.Modem, sent.Refs, "sent by modem"
	if m.RegDeliv&0x13 == 0 {
		// No receipt asked (nor intermediate notifications, 0x10, which
		// need the message open for the network's temporary reports): the
		// network took it, the outcome stays unknown.
		m.State, m.FinalStat, m.Done = store.StateDone, "ACCEPTD", time.Now()
	} else if timeout := f.config().ModemReceiptTimeout; timeout > 0 {
		// The timer before the record: a kill between them leaves a timer
		// that finds the message at "modem" and gives its ACCEPTD receipt.
		// Retried as the record is (renewing the lease meanwhile): a
		// record written without its timer would wait for ever for a
		// report lost in a store outage (an independent tester's Redis
		// restarts left such messages without any receipt).
		stopRenew = f.renewLease(context.WithoutCancel(ctx), id)
		err := f.retryStoreWrite(ctx, log, "store write of the receipt timer failed; retrying", func(wctx context.Context) error {
			return st.SetTimer(wctx, m.ID, time.Now().Add(timeout))
		})
		stopRenew()
		if err != nil {
			log.Error("store write of the receipt timer failed until shutdown; the entry is left to its lease",
				zap.Error(err))
			return
		}
	}
	// The record must say "modemsent" before the entry is acked: a record
	// left at "modem" would ignore the status report. The write is retried
	// (the lease renewed meanwhile) until it succeeds or the worker stops;
	// then the entry stays unacked and comes back when its lease passes (a
	// resend: a possible duplicate, never a message without a receipt).
	stopRenew = f.renewLease(context.WithoutCancel(ctx), id)
	won, err := f.recordSent(ctx, m, log)
	stopRenew()
	if err != nil {
		log.Error("store write after a modem send failed until shutdown; the entry is left to its lease",
			zap.Error(err))
		return
	}
	if !won {
		f.leftUs(ctx, id, log)
		f.kickTimers()
		return
	}
	_ = st.AckModem(context.WithoutCancel(ctx), id)
	log.Debug("sent by modem", zap.String("modem", sent.Modem), zap.Ints("refs", sent.Refs))
	f.kickTimers()
	return 0
}

// inDoubtErr reports whether a failed modem send may have gone out all the
// same: its attempt was cut short after its AT+CMGS began
// (modem.SendError.InDoubt).
func inDoubtErr(err error) bool {
	var se *modem.SendError
	return errors.As(err, &se) && se.InDoubt
}

// resendInDoubt logs and counts (spareline_modem_possible_duplicates_total) a
// send of m by path ("modem" or "carrier") whose previous modem send may
// have gone out (inDoubt: processWait found the record at "modem"), and
// returns false: what the caller keeps as inDoubt, so that a message is
// counted once per send in doubt.
func (f *Failover) resendInDoubt(inDoubt bool, m *store.Message, path string, log *zap.Logger) bool {
	if !inDoubt {
		return false
	}
	metricModemResendsInDoubt.Inc()
	log.Warn("sending again a message whose last modem send may have gone out (its worker died, lost its lease or was stopped while sending): a possible duplicate at the handset",
		zap.String("by", path), zap.Int("attempt", m.Attempts))
	return false
}

// lastModemError separates, in a queued message's note, the reason it was
// queued (enqueue's: "down" and "route" decide the way back to its carrier)
// from the last error of a modem send that will be retried.
const lastModemError = "; last modem error: "

// queueReason is the reason a queued message's note gives for its queueing,
// without the last modem error.
func queueReason(note string) string {
	reason, _, _ := strings.Cut(note, lastModemError)
	return reason
}

// returnsToCarrier reports whether a queued message with this note goes back
// to its carrier once the carrier is up again: only one queued because the
// carrier was down (or it had no route then). One that its carrier failed
// (an error, a timeout, a failed receipt) goes by modem, not through the
// same carrier again.
func returnsToCarrier(note string) bool {
	r := queueReason(note)
	return r == "down" || r == "route"
}

// unknownAgainWait is how long a message its carrier left unanswered again,
// after it was given back to it (no modem could take it), waits before it
// is tried again.
const unknownAgainWait = time.Minute

// unknownAtCarrier reports whether a queued message with this note was
// queued because its carrier left it unanswered (a timeout, or the
// connection lost with it in flight: "timeout, possible duplicate",
// "lost, held", ...): the carrier may have it. Such a message goes by modem;
// it goes back to its carrier only once the carrier is up again while no
// modem can take it (processWait).
func unknownAtCarrier(note string) bool {
	r := queueReason(note)
	return strings.HasPrefix(r, "timeout") || strings.HasPrefix(r, "lost")
}

// modemFailedNote is the note of a queued message whose modem send failed
// with err and will be retried: the queue reason, then the error.
func modemFailedNote(note string, err error) string {
	return queueReason(note) + lastModemError + err.Error()
}

// carrierBack returns a channel closed once carrier name is no longer down
// (up or on probation), or never if ctx ends first.
func (f *Failover) carrierBack(ctx context.Context, name string) <-chan struct{} {
	back := make(chan struct{})
	go func() {
		for {
			changed := f.d.health.Changed() // before the read: no change is missed
			if (*f.d.carriers.Load())[name] == nil {
				return // removed by a reload: it will not come back
			}
			if f.d.health.State(name) != StateDown {
				close(back)
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return back
}

// afterBack ends the handling of queued message m (entry id) that went
// back to its carrier c (state carrier) with outcome back, and reports
// whether the entry is dealt with; false: the carrier did not take it,
// the message is left to the modems.
func (f *Failover) afterBack(ctx context.Context, id string, c *Carrier, m *store.Message, back backResult, orphan []byte, log *zap.Logger) bool {
	st := f.d.store
	switch back {
	case backDone:
		_ = st.AckModem(context.WithoutCancel(ctx), id)
		// A receipt that came before the link, delivered only now
		// that the entry is acked: a failed one queues the message
		// again (QueueMessage), and the ack would have taken that new
		// entry, leaving the message queued with nothing to send it.
		if orphan != nil {
			f.d.deliverOrphan(ctx, c, m, orphan)
		}
		return true
	case backUnrecorded:
		// The carrier has it but the store did not take the link: the
		// entry comes back (state carrier) and is tried again.
		_ = st.ReleaseModem(context.WithoutCancel(ctx), id, time.Now().Add(5*time.Second))
		return true
	case backUnknown:
		f.carrierUnknown(ctx, id, c, m, log)
		return true
	}
	return false
}

// carrierUnknown queues again for the modems a queued message its carrier
// c did not answer (response_timeout) or lost the connection with: the
// carrier may have it, so it is handled as a new message whose submit timed
// out (afterCarrierFailure): its note says so (it no longer goes back to
// that carrier, returnsToCarrier), on_unknown "resend" makes it due now and
// counts it in spareline_possible_duplicates_total, "hold" makes it due
// after hold_for.
func (f *Failover) carrierUnknown(ctx context.Context, id string, c *Carrier, m *store.Message, log *zap.Logger) {
	cfg := f.config()
	due := time.Now()
	if unknownAtCarrier(m.Note) {
		// Left unanswered again after processWait gave it back to its
		// carrier (no modem could take it): not at once again, or a
		// message that makes its carrier drop the connection would go
		// round without end.
		due = due.Add(unknownAgainWait)
	}
	m.State, m.Note = store.StateQueued, "timeout"
	if cfg.OnUnknown == "hold" {
		due = due.Add(cfg.HoldFor)
		m.Note += ", held"
	} else {
		m.Note += ", possible duplicate"
	}
	won, err := f.d.store.FinishMessage(context.WithoutCancel(ctx), []store.State{store.StateCarrier}, m, nil)
	if err == nil && !won {
		f.leftUs(ctx, id, log)
		return
	}
	if err != nil {
		// Still "carrier" in the store: tried again when the entry
		// comes back.
		log.Warn("store write failed; retrying later", zap.Error(err))
		_ = f.d.store.ReleaseModem(context.WithoutCancel(ctx), id, time.Now().Add(5*time.Second))
		return
	}
	if cfg.OnUnknown == "hold" {
		log.Warn("queued message sent to its carrier got no answer; the carrier may have it: it goes by modem after hold_for",
			zap.String("carrier", c.Name), zap.Time("held_until", due))
	} else {
		metricPossibleDup.WithLabelValues(c.Name).Inc()
		log.Warn("queued message sent to its carrier got no answer; the carrier may have it: it goes by modem, a possible duplicate",
			zap.String("carrier", c.Name))
	}
	if ml := f.d.mlog(); ml != nil {
		if cfg.OnUnknown == "hold" {
			ml.failover(m, "timeout", zap.Time("held_until", due))
		} else {
			ml.failover(m, "timeout", zap.Bool("possible_duplicate", true))
		}
	}
	_ = f.d.store.ReleaseModem(context.WithoutCancel(ctx), id, due)
	f.kickWorkers()
}

// probeWith sends queued message m (entry id) to its carrier c, down by
// timeouts, as the carrier's probe (the caller holds the probe slot). It
// reports whether the entry is dealt with: taken (done, as any message
// going back to its carrier: health then starts the probation), not
// answered (queued again for the modems, a possible duplicate:
// carrierUnknown), or taken by someone else; false: the carrier refused it
// for now (an error status: the outage ends all the same, health.Note), the
// message is in state carrier and left to the caller, which puts it back.
func (f *Failover) probeWith(ctx context.Context, id string, c *Carrier, m *store.Message, sm *ShortMessage, inDoubt bool, log *zap.Logger) bool {
	m.State = store.StateCarrier
	if !f.take(ctx, id, m, log) {
		return true
	}
	f.resendInDoubt(inDoubt, m, "carrier", log)
	log.Info("carrier down by timeouts and no modem can take its queued messages: one is sent to it as its probe",
		zap.String("carrier", c.Name))
	stopRenew := f.renewLease(ctx, id)
	// A probe's timeout counts towards recycling its bind (recycle.go).
	back, orphan := f.backToCarrier(withProbe(ctx), c, m, sm, log)
	stopRenew()
	return f.afterBack(ctx, id, c, m, back, orphan, log)
}

// leftReason is why a message left the modem pool (leavePool).
type leftReason int32

const (
	leftNot         leftReason = iota // it did not (sent, failed, or still there)
	leftCarrierBack                   // its carrier is back (up or on probation)
	leftNoModem                       // no modem can take it now
	leftStopping                      // a shutdown: it stays queued for the next start
)

// leavePool returns the giveUp channel of a modem send (Pool.SendUnless):
// closed when back is closed (its carrier came back: nil, never), or when
// no modem can take a message (none up nor on trial), looked at every
// idleLook: a worker must not hold a message in the pool while nothing can
// send it. It would hold it until a modem comes back (a held-out modem's
// next trial, up to SendHoldMax), while its carrier may have come back or
// need a probe, and while the other queued messages wait for a worker.
// It is closed too when stop is (a shutdown). why tells which, once the
// channel is closed. It ends with ctx (the send's).
func (f *Failover) leavePool(ctx context.Context, back, stop <-chan struct{}) (giveUp <-chan struct{}, why func() leftReason) {
	out := make(chan struct{})
	var reason atomic.Int32
	go func() {
		t := time.NewTicker(idleLook)
		defer t.Stop()
		for {
			select {
			case <-back:
				reason.Store(int32(leftCarrierBack))
				close(out)
				return
			case <-stop:
				reason.Store(int32(leftStopping))
				close(out)
				return
			case <-t.C:
				if !f.anyModemTakes() {
					reason.Store(int32(leftNoModem))
					close(out)
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, func() leftReason { return leftReason(reason.Load()) }
}

// closed reports whether ch (nil: never) is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// leftUs handles a queue entry whose record left the state this worker had
// written (a compare-and-set lost): the entry is acked if the message is
// finished or sent, and otherwise left alone, to whoever wrote the record's
// new state (a worker that released it for a retry, or holds it): acking it
// then would take the message off the queue unsent. A store error leaves it
// to its lease too.
func (f *Failover) leftUs(ctx context.Context, id string, log *zap.Logger) {
	cur, err := f.d.store.GetMessage(context.WithoutCancel(ctx), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_ = f.d.store.AckModem(context.WithoutCancel(ctx), id)
	case err != nil:
	case cur.State == store.StateDone || cur.State == store.StateFailed || cur.State == store.StateModemSent ||
		cur.State == store.StateSent:
		_ = f.d.store.AckModem(context.WithoutCancel(ctx), id)
	default:
		log.Info("queued message taken over while this worker held it; its entry is left to the new holder",
			zap.String("state", string(cur.State)))
	}
}

// retryStoreWrite runs write until it succeeds, waiting longer between
// tries (up to 2 s), each try bounded to 10 s; it gives up (the last error)
// only when ctx ends (the worker stops).
func (f *Failover) retryStoreWrite(ctx context.Context, log *zap.Logger, msg string, write func(context.Context) error) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := write(wctx)
		cancel()
		if err == nil {
			return nil
		}
		log.Warn(msg, zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// recordSent writes a modem-sent message's record (from state modem, by
// compare-and-set), retrying a failing store with a growing pause until it
// succeeds or ctx ends (each try on its own context: a cancelled caller
// does not cut a write short). won is false when the record had left state
// modem meanwhile (its receipt timer fired, or another worker took it):
// nothing is left to write.
func (f *Failover) recordSent(ctx context.Context, m *store.Message, log *zap.Logger) (won bool, err error) {
	expired := false
	err = f.retryStoreWrite(ctx, log, "store write after a modem send failed; retrying", func(wctx context.Context) error {
		var err error
		won, err = f.d.store.FinishMessage(wctx, []store.State{store.StateModem}, m, nil)
		if errors.Is(err, store.ErrNotFound) {
			won, expired = false, true
			return nil
		}
		return err
	})
	if err != nil || expired {
		return false, err // expired: nothing to record
	}
	if !won {
		log.Info("message left state modem while its send was recorded; not overwritten")
	}
	return won, nil
}

// workerFrom are the states in which a queue worker may take a message:
// queued, or modem / carrier when a worker (of any instance) was killed
// while it held the entry and its lease passed.
var workerFrom = []store.State{store.StateQueued, store.StateModem, store.StateCarrier}

// take records m (its new state set by the caller) only if the stored
// message is still the worker's to take (workerFrom). When it is not (a
// cancel_sm or another instance finished it), the queue entry is acked and
// take reports false; a store error releases the entry for later.
func (f *Failover) take(ctx context.Context, id string, m *store.Message, log *zap.Logger) bool {
	ok, err := f.d.store.FinishMessage(ctx, workerFrom, m, nil)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Warn("queued message has no record (expired); dropped")
		_ = f.d.store.AckModem(ctx, id)
		return false
	case err != nil:
		log.Warn("store write failed; retrying later", zap.Error(err))
		_ = f.d.store.ReleaseModem(context.WithoutCancel(ctx), id, time.Now().Add(5*time.Second))
		return false
	case !ok:
		log.Debug("queued message taken by someone else (cancelled or finished); dropped from the queue")
		_ = f.d.store.AckModem(ctx, id)
		return false
	}
	return true
}

// renewLease keeps the claimed queue entry id leased while a send runs;
// the returned function stops it.
func (f *Failover) renewLease(ctx context.Context, id string) (stop func()) {
	return every(ctx, queueLease/4, func(ctx context.Context) {
		err := f.d.store.ExtendModem(ctx, id, f.config().Worker, queueLease)
		switch {
		case errors.Is(err, store.ErrClaimed):
			f.log.Warn("modem queue entry claimed by another worker (a renewal came too late); it may be sent twice",
				zap.String("id", id))
		case err != nil && ctx.Err() == nil:
			f.log.Warn("modem queue lease renewal failed", zap.String("id", id), zap.Error(err))
		}
	})
}

// recorded ends a send: reports that arrived before the record are handled now.
func (f *Failover) recorded(ctx context.Context, id string) {
	f.mu.Lock()
	st := f.sending[id]
	delete(f.sending, id)
	f.mu.Unlock()
	if st != nil {
		for _, r := range st.early {
			f.handleReport(context.WithoutCancel(ctx), r)
		}
	}
}

// backResult is the outcome of backToCarrier.
type backResult int

const (
	backNotTaken   backResult = iota // the carrier did not take it: on to the modems
	backDone                         // accepted and recorded, or refused for its number: ack the entry
	backUnrecorded                   // accepted, or refused, but the store did not record it: release the entry
	backUnknown                      // no answer within response_timeout, or the connection lost with it in flight: the carrier may have it
)

// backToCarrier tries the message on its recovered carrier. An accepted
// message is recorded as the carrier path records it (linkCarrier: record,
// carrier id link and an early receipt, in one step, retried), so that its
// receipt finds it. A receipt that came before the link (orphan) is
// returned for the caller to deliver once the queue entry is acked.
func (f *Failover) backToCarrier(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, log *zap.Logger) (backResult, []byte) {
	c.submitStarted(time.Now()) // until its outcome is linked (idreuse.go)
	defer c.submitSettled()
	// An SMPP 3.3 carrier and a long message: not sent (errTooLongFor33),
	// the modems send it.
	res, err := c.SubmitFor(ctx, m.ID, m.Body)
	if err != nil {
		// Counted as the carrier path counts its submits (submits_total),
		// so that the carrier's metrics see the backlog it is given.
		reason := ""
		switch {
		case errors.Is(err, ErrResponseTimeout):
			f.d.health.Note(c.Name, OutcomeTimeout)
			reason = "timeout"
		case errors.Is(err, ErrConnLost):
			f.d.health.Note(c.Name, OutcomeLost)
			reason = "lost"
		case errors.Is(err, ErrCarrierDown), errors.Is(err, errTooLongFor33):
			// No bind (health knows), or nothing sent: the dispatcher
			// counts neither as a submit.
		default:
			metricSubmits.WithLabelValues(c.Name, "down").Inc()
		}
		if reason != "" {
			// The carrier may have it: on to the modems, a possible
			// duplicate (or held: on_unknown), as a new submit's timeout
			// is; carrierUnknown counts, logs and records it.
			metricSubmits.WithLabelValues(c.Name, reason).Inc()
			metricFailovers.WithLabelValues(c.Name, reason).Inc()
			return backUnknown, nil
		}
		return backNotTaken, nil
	}
	metricSubmitStatus.WithLabelValues(c.Name, statusName(res.Status)).Inc()
	switch Classify(res.Status) {
	case ClassOK:
		metricSubmits.WithLabelValues(c.Name, "ok").Inc()
		f.d.health.Note(c.Name, OutcomeAnswered)
		c.noteAccepted(m.RegDeliv)
		setCarrierID(m, c.cfg.Load().ReceiptID, res.MessageID)
		if m.CarrierID == "" {
			c.acceptedWithoutID(m.ID) // noid.go
		}
		m.State, m.Note = store.StateSent, "returned to carrier"
		m.Attempts++
		orphan, err := f.d.linkCarrier(m)
		if err != nil {
			// Not acked: released, it is tried again later (a possible
			// duplicate at the handset; the receipt of this send stays an
			// orphan), never left OK-ed without a record its receipt finds.
			log.Error("store write of the carrier id failed; the queue entry is released, not acked",
				zap.String("carrier_id", res.MessageID), zap.Error(err))
			return backUnrecorded, nil
		}
		metricModemPath.WithLabelValues("returned").Inc()
		log.Debug("queued message went back to its carrier")
		if ml := f.d.mlog(); ml != nil {
			ml.returned(m)
		}
		return backDone, orphan
	case ClassNumber:
		metricSubmits.WithLabelValues(c.Name, "error").Inc()
		f.d.health.Note(c.Name, OutcomeRefused)
		if _, err := f.finish(ctx, m, sm, []store.State{store.StateCarrier}, "REJECTD", "000",
			"carrier refused the number: "+StatusString(res.Status)); err != nil {
			return backUnrecorded, nil
		}
		return backDone, nil
	case ClassThrottle:
		metricSubmits.WithLabelValues(c.Name, "throttled").Inc()
		f.d.health.Note(c.Name, OutcomeThrottled)
		return backNotTaken, nil
	default:
		metricSubmits.WithLabelValues(c.Name, "error").Inc()
		metricFailovers.WithLabelValues(c.Name, "transient").Inc()
		f.d.health.Note(c.Name, OutcomeTransient)
		return backNotTaken, nil
	}
}

// modemDest writes a normalised destination for TP-DA: national numbers in
// international form (the modem's SIM may roam), others as they are.
func (f *Failover) modemDest(dest string) string {
	if strings.HasPrefix(dest, "+") {
		return dest
	}
	cc := f.config().CountryCode
	if cc != "" && len(dest) == 11 && dest[0] == '1' {
		return "+" + cc + dest
	}
	return dest
}

func (f *Failover) kickTimers() {
	select {
	case f.timerKick <- struct{}{}:
	default:
	}
}

// timers fires the durable store timers that are due, whoever set them
// (Dispatcher.runTimers): a message's here, by fireTimer.
func (f *Failover) timers(ctx context.Context) {
	f.d.runTimers(ctx, f.timerKick, f.fireTimer)
}

// fireTimer gives a message sent by modem that got no status report in time
// its ACCEPTD receipt, then clears the timer. A timer of a message in any
// other state is cleared: its receipt went out, or it is back in the queue.
func (f *Failover) fireTimer(ctx context.Context, id string) {
	f.finMu.Lock()
	defer f.finMu.Unlock()
	m, err := f.d.store.GetMessage(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return // claimed again when its lease passes
	case m.State == store.StateModemSent || m.State == store.StateModem:
		// "modem" too: a timer is set only after a successful send, so a
		// record still at "modem" is one whose "modemsent" write has not
		// succeeded yet (recordSent), not a send in doubt.
		sm, perr := ParseShortMessage(m.Body)
		if perr == nil {
			// Lost the compare-and-set: the report's receipt went out.
			if _, err := f.finish(ctx, m, sm, []store.State{store.StateModemSent, store.StateModem}, "ACCEPTD", "000",
				noReportNote); err != nil {
				return
			}
		}
		f.mu.Lock()
		delete(f.delivered, id)
		f.mu.Unlock()
	}
	if err := f.d.store.ClearTimer(context.WithoutCancel(ctx), id); err != nil {
		f.log.Warn("store write of the receipt timer failed", zap.String("id", id), zap.Error(err))
	}
}

// noReportNote is the note of a message whose receipt timer gave the
// ACCEPTD receipt.
const noReportNote = "no status report from the network in time"

// reports turns the pool's status reports and incoming messages into
// deliveries for the platform.
func (f *Failover) reports(ctx context.Context) {
	// Reports of multi-part messages: the receipt waits for every part, or
	// goes out at the first part that failed.
	retry := time.NewTicker(storedRetryEvery)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-f.pool.Reports():
			if r.Status == nil {
				continue
			}
			if r.ID == "" && r.Orphan {
				continue // a part of a message given up and sent again: no one's report
			}
			if r.ID == "" {
				// No send of this process: one made before a restart,
				// looked up in the store (reportmatch.go).
				var ok bool
				if r, ok = f.matchStored(ctx, r); !ok {
					continue
				}
			}
			f.report(ctx, r)
		case <-retry.C:
			for _, r := range f.retryStored(ctx) {
				f.report(ctx, r)
			}
		case in := <-f.pool.Incoming():
			f.incoming(ctx, in)
		}
	}
}

// report hands a status report with its message id to handleReport, or
// keeps it for the send's record when that is not written yet.
func (f *Failover) report(ctx context.Context, r modem.Report) {
	f.mu.Lock()
	if st := f.sending[r.ID]; st != nil {
		st.early = append(st.early, r) // the send is not recorded yet
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.handleReport(ctx, r)
}

// reportStat is the receipt word (SMPP 3.4 Appendix B) of a final status
// report's TP-Status (3GPP TS 23.040 §9.2.3.15): 0x00-0x1F delivered
// (DELIVRD); 0x46 validity period expired (EXPIRED); 0x47 and 0x48 deleted
// by the originator or the SC's administration (DELETED); every other
// failure, permanent (0x40-0x5F) or temporary given up (0x60-0x7F),
// UNDELIV.
func reportStat(st byte) string {
	switch {
	case st < 0x20:
		return "DELIVRD"
	case st == 0x46:
		return "EXPIRED"
	case st == 0x47, st == 0x48:
		return "DELETED"
	}
	return "UNDELIV"
}

// handleReport turns a status report into the message's receipt: it waits
// for every part to be delivered, or goes out at the first failed part. A
// temporary report (TP-ST 0x20-0x3F: the SC is still trying) is an
// intermediate notification (intermediate); a final one that comes after
// the receipt timer gave ACCEPTD is recorded, not sent (lateReport).
func (f *Failover) handleReport(ctx context.Context, r modem.Report) {
	f.finMu.Lock()
	defer f.finMu.Unlock()
	m, err := f.d.store.GetMessage(ctx, r.ID)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			// A store outage: kept and handled again (reportmatch.go,
			// retryStored), not dropped (its message would get ACCEPTD
			// from its timer instead of the report's outcome).
			f.keepReport(r, err)
		}
		return
	}
	if r.Status.Temporary() {
		f.intermediate(ctx, m, r)
		return
	}
	if m.State == store.StateDone && m.FinalStat == "ACCEPTD" && m.Note == noReportNote {
		f.lateReport(ctx, m, r)
		return
	}
	if m.State != store.StateModemSent {
		return
	}
	// The parts reported delivered are counted in memory, by part: a part
	// reported twice (a network repeating its report, a report read from
	// the SIM again) counts once. The count does not survive a restart: a
	// message of several parts whose first part reported before the
	// restart and the rest after it (each matched from the store then,
	// reportmatch.go) never reaches its count, and gets ACCEPTD from its
	// receipt timer, as before; one failed part still ends it UNDELIV.
	// Keeping the count durable would cost a store write per part report.
	f.mu.Lock()
	if r.Status.Delivered() {
		ps := f.delivered[r.ID]
		if ps == nil {
			ps = &partsSeen{}
			f.delivered[r.ID] = ps
		}
		if ps.add(r.Part) < max(r.Parts, 1) {
			f.mu.Unlock()
			return
		}
	}
	f.mu.Unlock()
	sm, err := ParseShortMessage(m.Body)
	if err != nil {
		return
	}
	stat := reportStat(r.Status.Status)
	won, err := f.finish(ctx, m, sm, []store.State{store.StateModemSent}, stat, fmt.Sprintf("%03d", r.Status.Status),
		"status report from "+r.Modem)
	if err != nil {
		// Not written: kept and handled again (the parts counted stay
		// counted meanwhile).
		f.keepReport(r, err)
		return
	}
	f.mu.Lock()
	delete(f.delivered, r.ID)
	f.mu.Unlock()
	if won {
		// After the receipt is durable; a kill in between leaves a timer
		// that finds the message done.
		_ = f.d.store.ClearTimer(context.WithoutCancel(ctx), r.ID)
	}
}

// intermediate passes a temporary status report on as an intermediate
// notification (SMPP 3.4 §5.2.12 esm_class 0x20, stat ENROUTE, err the
// TP-ST) when the submit asked for them (registered_delivery bit 4, 0x10,
// §5.2.17), as the carrier path passes a carrier's ENROUTE on
// (deliverCarrierReceipt): the message stays open (the same
// compare-and-set from modemsent, state unchanged, so one coming after the
// final receipt is dropped) and its final receipt follows.
func (f *Failover) intermediate(ctx context.Context, m *store.Message, r modem.Report) {
	if m.State != store.StateModemSent || m.RegDeliv&0x10 == 0 {
		return
	}
	sm, err := ParseShortMessage(m.Body)
	if err != nil {
		return
	}
	const stat = "ENROUTE"
	errCode := fmt.Sprintf("%03d", r.Status.Status)
	cp := *m
	cp.Note = fmt.Sprintf("status report from %s: SC still trying (TP-ST 0x%02X, intermediate)", r.Modem, r.Status.Status)
	body := buildReceiptESM(&cp, sm, stat, errCode, time.Now(), 0x20)
	del := &store.Delivery{ID: f.d.ids.Next(), Account: m.Account, Body: body, MsgID: m.ID, Created: time.Now()}
	won, err := f.d.store.FinishMessage(context.WithoutCancel(ctx), []store.State{store.StateModemSent}, &cp, del)
	if err != nil || !won {
		return
	}
	if ml := f.d.mlog(); ml != nil {
		ml.receipt(&cp, "modem", stat, false)
	}
	metricReceipts.WithLabelValues("modem", statLabel(stat)).Inc()
	f.d.kickDeliveries(m.Account)
}

// lateReport records the outcome of a final status report that came after
// the receipt timer gave the platform ACCEPTD (modem_receipt_timeout): the
// message record's final stat, error and note (GET /message, query_sm show
// the real outcome), an info log line and
// spareline_modem_late_reports_total. The platform gets no second final
// receipt: SMPP has one final receipt per message, and a platform that
// took ACCEPTD as the end has closed the message (docs/smpp.md). A message
// of several parts is recorded DELIVRD once every part's report said so,
// or at its first failed part.
// lateCount is lateReport's count of a message's parts reported
// delivered, with the time of the last.
type lateCount struct {
	seen partsSeen
	at   time.Time
}

// partsSeen counts the distinct parts of a message reported delivered: a
// report of a part already counted (a repeated report) does not count
// again. A report of an unknown part (Part 0) counts each time, as every
// report did before parts were told apart.
type partsSeen struct {
	parts   map[int]bool
	unknown int
}

// add counts part and returns how many parts are counted.
func (p *partsSeen) add(part int) int {
	if part <= 0 {
		p.unknown++
	} else {
		if p.parts == nil {
			p.parts = map[int]bool{}
		}
		p.parts[part] = true
	}
	return len(p.parts) + p.unknown
}

// lateReportsKept is how long lateReport waits for the other parts of a
// message after one reported late.
const lateReportsKept = 24 * time.Hour

func (f *Failover) lateReport(ctx context.Context, m *store.Message, r modem.Report) {
	stat := reportStat(r.Status.Status)
	f.mu.Lock()
	// Parts reported after the timer, per message; an entry whose other
	// parts never report (or reported before the timer) is forgotten
	// after lateReportsKept, so that the map cannot grow for ever.
	now := time.Now()
	for id, lc := range f.lateDelivered {
		if now.Sub(lc.at) > lateReportsKept {
			delete(f.lateDelivered, id)
		}
	}
	if f.lateDelivered == nil {
		f.lateDelivered = map[string]lateCount{}
	}
	if r.Status.Delivered() {
		lc := f.lateDelivered[r.ID]
		lc.at = now
		if lc.seen.add(r.Part) < max(r.Parts, 1) {
			f.lateDelivered[r.ID] = lc
			f.mu.Unlock()
			return
		}
	}
	delete(f.lateDelivered, r.ID)
	f.mu.Unlock()
	cp := *m
	cp.FinalStat, cp.FinalErr = stat, fmt.Sprintf("%03d", r.Status.Status)
	cp.Done = time.Now() // query_sm's final_date: when the outcome came, not the ACCEPTD
	cp.Note = "status report from " + r.Modem + " after modem_receipt_timeout (the platform had ACCEPTD): " + stat
	won, err := f.d.store.FinishMessage(context.WithoutCancel(ctx), []store.State{store.StateDone}, &cp, nil)
	if err != nil || !won {
		return
	}
	f.log.Info("final status report after modem_receipt_timeout recorded; the platform had ACCEPTD and gets no second final receipt",
		zap.String("id", m.ID), zap.String("modem", r.Modem), zap.String("stat", stat),
		zap.String("tp_st", fmt.Sprintf("0x%02X", r.Status.Status)))
	metricModemLateReports.WithLabelValues(statLabel(stat)).Inc()
}

// finish is Dispatcher.finishOwn for the modem path (source "modem").
func (f *Failover) finish(ctx context.Context, m *store.Message, sm *ShortMessage, from []store.State, stat, errCode, note string) (won bool, err error) {
	return f.d.finishOwn(ctx, m, sm, from, stat, errCode, note, "modem", f.log)
}

// finishOwn records a final outcome spareline gives m itself (source: the
// modem path's "modem", or the carrier that confirmed a cancel_sm) and,
// when the platform asked, a receipt, in one compare-and-set: only if the
// stored message is in one of from. won reports that this call wrote them
// (durably); false with a nil error means another finisher (of this or
// another instance) was first, and nothing was written. On a store error
// nothing may have been written.
func (d *Dispatcher) finishOwn(ctx context.Context, m *store.Message, sm *ShortMessage, from []store.State, stat, errCode, note, source string, log *zap.Logger) (won bool, err error) {
	m.State, m.Note = store.StateDone, note
	m.FinalStat, m.FinalErr, m.Done = stat, errCode, time.Now() // query_sm reads them (query.go)
	ctx = context.WithoutCancel(ctx)
	var del *store.Delivery
	// SMPP 3.4 §5.2.17: 1 = receipt on success or failure, 2 = on failure.
	if want := m.RegDeliv & 0x03; want != 0 && (want != 2 || stat != "DELIVRD") {
		body := buildReceipt(m, sm, stat, errCode, time.Now())
		del = &store.Delivery{ID: d.ids.Next(), Account: m.Account, Body: body, MsgID: m.ID, Created: time.Now()}
	}
	won, err = d.store.FinishMessage(ctx, from, m, del)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // expired: nothing left to finish
	}
	if err != nil {
		log.Error("store write of a final outcome failed", zap.String("id", m.ID), zap.String("stat", stat), zap.Error(err))
		return false, err
	}
	if !won {
		log.Debug("final outcome already recorded elsewhere", zap.String("id", m.ID), zap.String("stat", stat))
		return false, nil
	}
	if ml := d.mlog(); ml != nil {
		ml.ownReceipt(m, source, stat, note)
	}
	if del != nil {
		metricReceipts.WithLabelValues(source, statLabel(stat)).Inc()
		d.kickDeliveries(m.Account)
	}
	return true, nil
}

// appendixBText is a delivery receipt's text (SMPP 3.4 Appendix B): one
// message, submitted and finished at the given times, sample its first
// octets.
func appendixBText(id, stat, errCode string, submit, done time.Time, sample []byte) []byte {
	dlvrd := "000"
	if stat == "DELIVRD" {
		dlvrd = "001"
	}
	return fmt.Appendf(nil, "id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:%s",
		id, dlvrd, submit.Format("0601021504"), done.Format("0601021504"), stat, errCode, sample)
}

// message_state values (SMPP 3.4 §5.2.28).
var messageStates = map[string]byte{"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5,
	"ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}

// buildReceipt writes a delivery receipt deliver_sm body (SMPP 3.4 §4.6.1,
// Appendix B text) from the handset back to the message's source.
func buildReceipt(m *store.Message, sm *ShortMessage, stat, errCode string, done time.Time) []byte {
	return buildReceiptESM(m, sm, stat, errCode, done, 0x04)
}

// buildReceiptESM is buildReceipt with the esm_class given: 0x04 a
// delivery receipt, 0x20 an intermediate delivery notification (SMPP 3.4
// §5.2.12).
func buildReceiptESM(m *store.Message, sm *ShortMessage, stat, errCode string, done time.Time, esm byte) []byte {
	sample := sm.Payload()
	if sm.UDHI() && len(sample) > 0 && int(sample[0])+1 <= len(sample) {
		sample = sample[int(sample[0])+1:]
	}
	if sm.DataCoding != 0 && sm.DataCoding != 1 && sm.DataCoding != 3 {
		sample = nil // only plain text is quoted
	}
	if len(sample) > 20 {
		sample = sample[:20]
	}
	text := appendixBText(platformID(m.ID), stat, errCode, m.Created, done, sample)
	b := cstring(nil, "")                     // service_type
	b = append(b, sm.DestTON, sm.DestNPI)     // source = the handset
	b = cstring(b, sm.Dest)                   //
	b = append(b, sm.SourceTON, sm.SourceNPI) // dest = the platform's source
	b = cstring(b, sm.Source)                 //
	b = append(b, esm, 0, 0)                  // esm_class, protocol_id, priority
	b = cstring(b, "")                        // schedule_delivery_time
	b = cstring(b, "")                        // validity_period
	b = append(b, 0, 0, 0, 0)                 // registered_delivery, replace, data_coding, default_msg_id
	b = append(b, byte(len(text)))            // sm_length
	b = append(b, text...)                    //
	b = appendTLV(b, tagReceiptedMessageID, append([]byte(platformID(m.ID)), 0))
	b = appendTLV(b, tagMessageState, []byte{messageStates[stat]})
	return b
}

func appendTLV(b []byte, tag uint16, v []byte) []byte {
	b = append(b, byte(tag>>8), byte(tag), byte(len(v)>>8), byte(len(v)))
	return append(b, v...)
}

// incoming delivers a modem's MO message to the MO account as deliver_sm.
func (f *Failover) incoming(ctx context.Context, in modem.Incoming) {
	acct := f.d.moAccount.Load().(string)
	if acct == "" {
		f.log.Warn("MO message on a modem dropped: no account receives MO", zap.String("modem", in.Modem))
		return
	}
	cfg := f.config()
	// Numbers as the carriers' MO messages have them: national, the
	// country code taken off.
	national := func(n string) string {
		if cc := "+" + cfg.CountryCode; cc != "+" && strings.HasPrefix(n, cc) {
			return n[len(cc):]
		}
		return n
	}
	from, to := national(in.From), national(cfg.ModemNumbers[in.Modem])
	// The sender's TON/NPI (SMPP 3.4 §5.2.5-6) from its TP-OA: an
	// international one (decoded with '+') is 2/1, national, once its
	// country code is taken off, and 1/1 without the '+' from abroad.
	srcTON, srcNPI := byte(0), byte(0)
	if strings.HasPrefix(in.From, "+") {
		srcTON, srcNPI = 2, 1
		if strings.HasPrefix(from, "+") {
			srcTON, from = 1, from[1:]
		}
	}
	dc, payload := byte(0), []byte(in.Text)
	for _, r := range in.Text {
		if r > 0x7F {
			dc = 8
			break
		}
	}
	esm := byte(0)
	if in.Data != nil {
		dc, payload = 4, in.Data // 8-bit binary (SMPP 3.4 §5.2.19), as the handset sent it
		if len(in.UDH) > 0 && len(in.UDH) < 256 {
			// Its header too (application ports, say): UDHI (§5.2.12).
			esm, payload = 0x40, append(append([]byte{byte(len(in.UDH))}, in.UDH...), in.Data...)
		}
	}
	if dc == 8 {
		u := utf16.Encode([]rune(in.Text))
		payload = make([]byte, 0, 2*len(u))
		for _, c := range u {
			payload = append(payload, byte(c>>8), byte(c))
		}
	}
	b := cstring(nil, "")
	b = append(b, srcTON, srcNPI)
	b = cstring(b, from)
	b = append(b, 0, 0)
	b = cstring(b, to)
	b = append(b, esm, 0, 0) // esm_class, protocol_id, priority_flag
	b = cstring(b, "")
	b = cstring(b, "")
	b = append(b, 0, 0, dc, 0)
	if len(payload) <= 254 {
		b = append(b, byte(len(payload)))
		b = append(b, payload...)
	} else {
		b = append(b, 0)
		b = appendTLV(b, tagMessagePayload, payload)
	}
	del := &store.Delivery{ID: f.d.ids.Next(), Account: acct, Body: b, Created: time.Now()}
	if err := f.d.store.AddDelivery(context.WithoutCancel(ctx), del, nil); err != nil {
		f.log.Error("store write of a modem MO failed; message lost", zap.Error(err))
		return
	}
	if ml := f.d.mlog(); ml != nil {
		ml.mo(del, from, to, "modem", in.Modem)
	}
	f.d.kickDeliveries(acct)
}

func (f *Failover) gauges(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		depth, oldest, err := f.d.store.ModemQueue(ctx)
		if err == nil {
			metricQueueDepth.Set(float64(depth))
			if oldest.IsZero() {
				metricQueueOldest.Set(0)
			} else {
				metricQueueOldest.Set(time.Since(oldest).Seconds())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
