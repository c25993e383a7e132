package proxy

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Late answers. A request whose response_timeout passed is not forgotten
// at once: for lateGrace its sequence number is remembered, and it keeps
// its window slot (the peer still counts it as outstanding, SMPP 3.4
// §2.8: a strict SMSC refuses submits beyond the window it agreed to). An
// answer that comes in that time (a slow SMSC answering at 6 s with
// response_timeout 5 s) is acted on:
//
//   - a carrier's submit_sm_resp OK: the carrier has the message. By then
//     spareline has answered the platform (a failover to the modems, or an
//     error without modems). A message still waiting in the modem queue is
//     taken out of it and recorded as the carrier's (state sent, its id
//     linked, its receipt awaited as usual): no duplicate. One a modem
//     already took gets the carrier's id linked all the same, so that the
//     carrier's receipt is recognised (and ignored: the modem's outcome is
//     the platform's) instead of reaching the platform as an unmatched
//     receipt under an id it never got. Logged and counted
//     (spareline_late_answers_total).
//   - a platform's deliver_sm_resp OK (deliverer.go): the delivery is
//     removed, not sent again every response_timeout.

// lateGrace is how long a timed-out request's late answer is still taken
// (Kannel waits 60 s for a submit_sm_resp by default: wait-ack).
const lateGrace = time.Minute

// late is the carrier sessions' OnLate: it runs on the reader goroutine.
func (c *Carrier) late(s *Session, cmd uint32, tag any, f Frame) {
	if cmd != cmdSubmitSM {
		return
	}
	c.noteSubmitAnswer(s) // late, but the session answers (recycle.go)
	if f.ID != cmdSubmitSMResp {
		return
	}
	var id string
	switch t := tag.(type) {
	case string:
		id = t
	case *asyncSubmit:
		id = t.m.ID
	}
	res := submitResult(f)
	log := c.log.With(zap.String("id", id), zap.Uint32("seq", f.Seq))
	if res.Status != statusOK {
		log.Info("carrier answered a submit_sm after its response_timeout", zap.String("status", StatusString(res.Status)))
		return
	}
	if id == "" || c.onLateAccept == nil {
		log.Warn("carrier accepted a submit_sm after its response_timeout", zap.String("carrier_id", res.MessageID))
		return
	}
	c.onLateAccept(c, id, res)
}

// Outcomes of a late acceptance (spareline_late_answers_total).
const (
	lateTakenBack = "taken_back" // out of the modem queue: sent once, by the carrier
	lateDuplicate = "duplicate"  // a modem had taken it: the handset may get it twice
	lateRefused   = "refused"    // the platform was told an error: it may send it again
	lateUnknown   = "unknown"    // no record to act on (store trouble, expired)
)

var lateOutcomes = []string{lateTakenBack, lateDuplicate, lateRefused, lateUnknown}

// lateAccepted acts on a carrier's acceptance of message id that came after
// its response_timeout (see the top of this file), on a goroutine of its
// own (it is called on the carrier session's reader).
func (d *Dispatcher) lateAccepted(c *Carrier, id string, res SubmitResult) {
	if !d.spawn(func() { d.lateAcceptedNow(c, id, res) }) {
		c.log.Warn("carrier accepted a message after its response_timeout, during shutdown: not recorded",
			zap.String("id", id), zap.String("carrier_id", res.MessageID))
	}
}

func (d *Dispatcher) lateAcceptedNow(c *Carrier, id string, res SubmitResult) {
	ctx, cancel := context.WithTimeout(d.deliverCtx, linkRetryFor)
	defer cancel()
	log := d.log.With(zap.String("carrier", c.Name), zap.String("id", id), zap.String("carrier_id", res.MessageID))
	outcome := d.lateAccept(ctx, c, id, res, log)
	metricLateAnswers.WithLabelValues(c.Name, outcome).Inc()
	switch outcome {
	case lateTakenBack:
		log.Warn("carrier accepted a message after its response_timeout: taken out of the modem queue, the carrier sends it (raise response_timeout if this is frequent)")
	case lateDuplicate:
		log.Warn("carrier accepted a message after its response_timeout that a modem had already taken: the handset may get it twice (raise response_timeout, or failover.on_unknown: hold)")
	case lateRefused:
		log.Warn("carrier accepted a message after its response_timeout; the platform had been told it failed and may send it again (raise response_timeout)")
	default:
		log.Warn("carrier accepted a message after its response_timeout; its record could not be updated")
	}
}

func (d *Dispatcher) lateAccept(ctx context.Context, c *Carrier, id string, res SubmitResult, log *zap.Logger) string {
	// The timeout's own path writes the record (queued, or failed) on a
	// goroutine of its own: an answer a moment late may come first.
	var m *store.Message
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var err error
		m, err = d.store.GetMessage(ctx, id)
		if err == nil && m.State != store.StateCarrier {
			break
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			log.Warn("store read for a late acceptance failed", zap.Error(err))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return lateUnknown
		case <-t.C:
		}
	}
	// Taken back while it waits in the modem queue; otherwise linked in
	// its present state, so that the carrier's receipt finds the message
	// (and leaves it: the modem's outcome, or the error the platform got,
	// stands). Each try works on a fresh read and writes by a
	// compare-and-set of its state: a modem worker that moved it meanwhile
	// (or put it back in the queue) makes the next try.
	var was store.State
	linked := false
	for try := 0; try < 5 && !linked; try++ {
		if try > 0 {
			cur, err := d.store.GetMessage(ctx, id)
			if err != nil {
				return lateUnknown
			}
			m = cur
		}
		if m.CarrierID != "" {
			return lateDuplicate // sent again to a carrier meanwhile, and linked
		}
		setCarrierID(m, c.cfg.Load().ReceiptID, res.MessageID)
		if m.State == store.StateQueued {
			if fo := d.failover.Load(); fo != nil && fo.takeBackLate(ctx, m) {
				// A receipt that came before this link waits in the stash.
				if orphan, err := d.store.TakeOrphan(ctx, m.Carrier, m.CarrierID); err == nil && orphan != nil {
					d.deliverOrphan(ctx, c, m, orphan)
				}
				if ml := d.mlog(); ml != nil {
					ml.returned(m)
				}
				return lateTakenBack
			}
		}
		ok, err := d.store.FinishMessage(ctx, []store.State{m.State}, m, nil)
		if err != nil {
			return lateUnknown
		}
		was, linked = m.State, ok
	}
	if !linked {
		return lateUnknown
	}
	if orphan, err := d.store.TakeOrphan(ctx, c.Name, m.CarrierID); err == nil && orphan != nil {
		log.Debug("the carrier's receipt of a message a modem had taken is dropped")
	}
	if was == store.StateFailed {
		return lateRefused
	}
	return lateDuplicate
}

// takeBackLate takes m, queued for the modems, out of the queue as its
// carrier's (state sent, the carrier id linked): the carrier accepted it
// late. m has its carrier id set; it is updated only when taken. Reports
// whether it did. The
// compare-and-set from queued decides against the queue workers: one that
// holds the entry moves the record (to modem, or carrier for a try on its
// recovered carrier) before anything is sent, and finds it taken here
// otherwise (it then acks the entry unsent); one that only looked at it
// while no modem was up has put it back.
func (f *Failover) takeBackLate(ctx context.Context, m *store.Message) bool {
	taken := *m
	taken.State, taken.Note = store.StateSent, "accepted by the carrier after response_timeout"
	won, err := f.d.store.FinishMessage(ctx, []store.State{store.StateQueued}, &taken, nil)
	if err != nil || !won {
		return false // a worker (of any gateway) took it first; m is as it was
	}
	*m = taken
	// As cancelQueued: a worker that claims the entry before it is gone
	// finds the record no longer queued and acks it unsent.
	if err := f.d.store.AckModem(context.WithoutCancel(ctx), m.ID); err != nil {
		f.log.Warn("store write removing a late-accepted message from the modem queue failed", zap.String("id", m.ID),
			zap.Error(err))
	}
	return true
}

// late is a platform session's OnLate: a deliver_sm_resp OK that came after
// smpp.response_timeout still means the platform took the delivery (tag:
// the *store.Delivery the deliverer sent); it is removed, not sent again.
func (n *northSession) late(_ *Session, cmd uint32, tag any, f Frame) {
	del, ok := tag.(*store.Delivery)
	if !ok || cmd != cmdDeliverSM || f.ID != cmdDeliverSMResp || f.Status != statusOK {
		return
	}
	d := n.srv.disp
	if !d.spawn(func() {
		ctx, cancel := context.WithTimeout(d.deliverCtx, 10*time.Second)
		defer cancel()
		if err := d.store.AckDelivery(ctx, del.Account, del.ID); err != nil {
			d.log.Warn("removing a delivery answered after response_timeout failed; it may be sent again",
				zap.String("account", del.Account), zap.String("delivery", del.ID), zap.Error(err))
			return
		}
		d.log.Info("platform answered a deliver_sm after smpp.response_timeout; taken as delivered",
			zap.String("account", del.Account), zap.String("delivery", del.ID))
		d.settledLate(del)
		d.kickDeliveries(del.Account) // what waited behind it may go
	}) {
		d.log.Debug("late deliver_sm_resp during shutdown; the delivery is sent again later", zap.String("delivery", del.ID))
	}
}

// settledLate tells the account's deliverer that del was taken (its
// refusal count is dropped).
func (d *Dispatcher) settledLate(del *store.Delivery) {
	d.deliverMu.Lock()
	dl := d.deliverers[del.Account]
	d.deliverMu.Unlock()
	if dl != nil {
		dl.settled(del.ID)
	}
}
