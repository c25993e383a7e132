package proxy

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Receipts that match no message.
//
// A carrier's receipt whose id no message of spareline's carries is kept
// (store.FindOrStash): a receipt may overtake its link by milliseconds, and
// the link takes it. When no link comes within the carrier's
// unmatched_receipts_after, the receipt is one of a message spareline never
// relayed: most often one the platform sent the carrier directly before it
// was repointed at spareline (the carrier sends a receipt to whichever bind
// of the account is connected, hours later at times). It then goes to the
// platform as the carrier sent it, to the account that receives MO
// messages, exactly as the platform's own bind would have received it: the
// platform knows the carrier's id of such a message. With
// unmatched_receipts_after 0 it stays kept until store.ttl (for a very late
// link), then expires.
//
// The wait is a durable store timer (store.Timers), written once the
// receipt is still unmatched unmatchedLook (5 s) after it came (most kept
// receipts only overtook their link, and cost then no timer), so that a
// restart or another gateway sharing the store passes the receipt on; the receipt is
// taken from the store first (TakeOrphan: whoever takes it passes it, and a
// link that took it first wins), then written for the platform. A store
// failure between the two steps puts it back; only a crash between them
// loses it (before this existed, every such receipt was dropped).

// unmatchedTimerPrefix starts the store timer id of a kept receipt; message
// ids (the other timers) are hexadecimal, so they never start with it.
const unmatchedTimerPrefix = "unmatched:"

// unmatchedTimerID is the timer id of a receipt kept under (carrier, key):
// the carrier's name is length-prefixed so that no name or id can be read
// as another.
func unmatchedTimerID(carrier, key string) string {
	return unmatchedTimerPrefix + strconv.Itoa(len(carrier)) + ":" + carrier + ":" + key
}

// parseUnmatchedTimer reads unmatchedTimerID's form; ok is false for any
// other id.
func parseUnmatchedTimer(id string) (carrier, key string, ok bool) {
	rest, found := strings.CutPrefix(id, unmatchedTimerPrefix)
	if !found {
		return "", "", false
	}
	n, rest, found := strings.Cut(rest, ":")
	l, err := strconv.Atoi(n)
	// The length as unmatchedTimerID writes it (not "02"): one id, one parse.
	if !found || err != nil || l < 0 || strconv.Itoa(l) != n || len(rest) < l+1 || rest[l] != ':' {
		return "", "", false
	}
	return rest[:l], rest[l+1:], true
}

// receipts_unmatched_total outcome: held (no message matched it when it
// came: kept for its link), passed (no link came in time: given to the
// platform as the carrier sent it).
var metricUnmatched = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "spareline_receipts_unmatched_total",
	Help: "Carrier receipts no message matched when they came (held), and those given to the platform as sent when no message matched them in time (passed).",
}, []string{"carrier", "outcome"})

// unmatchedLook is how long after a kept receipt came its link is looked
// for, before its durable timer is written: most kept receipts only
// overtook their link by milliseconds (a fast SMSC), and cost then no
// store write at all. A shutdown writes the timers not written yet
// (FlushUnmatched); a crash within it leaves the receipt kept until
// store.ttl, as with unmatched_receipts_after 0.
var unmatchedLook = 5 * time.Second

// holdUnmatched counts a receipt FindOrStash kept and, when the carrier
// passes such receipts on, looks unmatchedLook later whether a link took
// it; if none did, it writes the receipt's timer, due
// unmatched_receipts_after from its arrival (a second receipt for the same
// id moves it). A failed timer write leaves the receipt kept until
// store.ttl, as with unmatched_receipts_after 0.
func (d *Dispatcher) holdUnmatched(c *Carrier, key string, log *zap.Logger) {
	metricUnmatched.WithLabelValues(c.Name, "held").Inc()
	after := c.cfg.Load().UnmatchedReceiptsAfter.D()
	if after <= 0 {
		return
	}
	id := unmatchedTimerID(c.Name, key)
	d.unmatchedMu.Lock()
	if d.unmatchedLooks == nil {
		d.unmatchedLooks = map[string]time.Time{}
	}
	d.unmatchedLooks[id] = time.Now().Add(after) // a second receipt for the id moves it
	d.unmatchedMu.Unlock()
	time.AfterFunc(min(unmatchedLook, after), func() {
		d.spawn(func() { // not once the dispatcher stops: FlushUnmatched writes it then
			d.unmatchedMu.Lock()
			due, ok := d.unmatchedLooks[id]
			delete(d.unmatchedLooks, id)
			d.unmatchedMu.Unlock()
			if !ok {
				return // an earlier look of the same id wrote it
			}
			ctx, cancel := context.WithTimeout(d.deliverCtx, 10*time.Second)
			defer cancel()
			if _, err := d.store.FindByCarrierID(ctx, c.Name, key); !errors.Is(err, store.ErrNotFound) {
				return // linked: the link took it (or the store failed: kept until store.ttl)
			}
			if err := d.store.SetTimer(ctx, id, due); err != nil {
				log.Warn("store write of an unmatched receipt's timer failed; the receipt is kept until store.ttl",
					zap.String("carrier_id", key), zap.Error(err))
			}
		})
	})
}

// FlushUnmatched writes the timers of the kept receipts whose look has not
// run yet (holdUnmatched), at shutdown, after Wait and before the store
// closes: a SIGTERM within unmatchedLook of a receipt does not leave it
// kept without a timer. (A timer of a receipt a link took fires, finds
// nothing, and is cleared.)
func (d *Dispatcher) FlushUnmatched(ctx context.Context) {
	d.flushHeld(ctx) // first: one whose link is gone is kept as unmatched
	d.unmatchedMu.Lock()
	looks := d.unmatchedLooks
	d.unmatchedLooks = nil
	d.unmatchedMu.Unlock()
	for id, due := range looks {
		if err := d.store.SetTimer(ctx, id, due); err != nil {
			d.log.Warn("store write of an unmatched receipt's timer failed at shutdown; the receipt is kept until store.ttl",
				zap.String("timer", id), zap.Error(err))
		}
	}
}

// fireUnmatched handles a due timer of holdUnmatched: the receipt, if no
// link took it meanwhile, goes to the platform as it came. The timer is
// cleared unless the store failed (it fires again when its lease passes).
func (d *Dispatcher) fireUnmatched(ctx context.Context, id string) {
	if carrier, key, ok := parseUnmatchedTimer(id); ok && !d.passUnmatched(ctx, carrier, key) {
		return
	}
	if err := d.store.ClearTimer(context.WithoutCancel(ctx), id); err != nil {
		d.log.Warn("store write of an unmatched receipt's timer failed", zap.String("timer", id), zap.Error(err))
	}
}

// passUnmatched gives the receipt kept under (carrier, key) to the account
// that receives MO messages. It reports false when the store failed and
// the receipt is still kept (to be tried again).
func (d *Dispatcher) passUnmatched(ctx context.Context, carrier, key string) bool {
	log := d.log.With(zap.String("carrier", carrier), zap.String("carrier_id", key))
	acct := d.moAccount.Load().(string)
	if c := (*d.carriers.Load())[carrier]; c != nil {
		cfg := c.cfg.Load()
		if cfg.UnmatchedReceiptsAfter.D() <= 0 {
			return true // kept until store.ttl (a reload turned it off)
		}
		if cfg.UnmatchedReceiptsTo != "" {
			acct = cfg.UnmatchedReceiptsTo
		}
	}
	if acct == "" {
		return true // no account to give it to: kept until store.ttl
	}
	body, err := d.store.TakeOrphan(ctx, carrier, key)
	if errors.Is(err, store.ErrNotFound) {
		return true // its link took it, or another gateway passed it
	}
	if err != nil {
		d.storeError(storeOpReceipt, log, "store read of an unmatched receipt failed; tried again later", err)
		return false
	}
	if c := (*d.carriers.Load())[carrier]; c != nil {
		// Linked, and kept all the same: a receipt held for a newer
		// message (idreuse.go) whose hold has not ended, or one whose
		// message was linked under another reading of its id than key
		// (otherReceiptKeys: a TLV and a text id that differ, a hex id
		// in another case) after it overtook that link. Delivered
		// through the link, as its hold's end or the receipt side would.
		var others []string
		if sm, err := ParseShortMessage(body); err == nil {
			_, _, others, _, _ = receiptKeys(c, sm)
		}
		m, err := d.findReceiptMessage(ctx, carrier, key, others)
		switch {
		case err == nil:
			d.deliverOrphan(ctx, c, m, body)
			return true
		case !errors.Is(err, store.ErrNotFound):
			// Not known whether it is linked: kept again, as the receipt
			// side keeps one, and tried again when its timer fires.
			d.storeError(storeOpReceipt, log, "store read of an unmatched receipt's links failed; tried again later", err)
			return d.keepUnmatchedAgain(ctx, carrier, key, body, log)
		}
	}
	del := &store.Delivery{ID: d.ids.Next(), Account: acct, Body: body, Created: time.Now()}
	if err := d.store.AddDelivery(ctx, del, nil); err != nil {
		d.storeError(storeOpReceipt, log, "store write of an unmatched receipt for the platform failed; tried again later", err)
		return d.keepUnmatchedAgain(ctx, carrier, key, body, log)
	}
	d.noteStore(storeOpReceipt, nil)
	metricUnmatched.WithLabelValues(carrier, "passed").Inc()
	log.Info("receipt matching no message passed to the platform as the carrier sent it",
		zap.String("account", acct), zap.String("delivery", del.ID))
	if ml := d.mlog(); ml != nil {
		stat := ""
		if sm, err := ParseShortMessage(body); err == nil {
			_, _, stat = receiptID(sm)
		}
		ml.unmatched(del, carrier, key, stat)
	}
	d.kickDeliveries(acct)
	return true
}

// keepUnmatchedAgain keeps again an unmatched receipt passUnmatched took
// (TakeOrphan) and could not pass on, as the receipt side keeps one
// (FindOrStash): an intermediate receipt does not replace a final one that
// came meanwhile, and a link made meanwhile gets it now. It returns
// passUnmatched's answer: false while it is kept (its timer fires again).
func (d *Dispatcher) keepUnmatchedAgain(ctx context.Context, carrier, key string, body []byte, log *zap.Logger) bool {
	final := true
	if sm, err := ParseShortMessage(body); err == nil {
		_, _, stat := receiptID(sm)
		final = isFinalReceipt(sm, stat)
	}
	m, err := d.store.FindOrStash(context.WithoutCancel(ctx), carrier, key, body, final)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false // kept; its timer fires again
	case err != nil:
		log.Error("an unmatched receipt could be neither passed on nor kept; it is lost", zap.Error(err))
		return true
	}
	if c := (*d.carriers.Load())[carrier]; c != nil {
		// As a receipt the link took: tried for linkRetryFor, then in the
		// background until shutdown (deliverOrphan).
		d.deliverOrphan(ctx, c, m, body)
		return true
	}
	log.Error("a receipt whose message was linked while it was passed on, of a carrier a reload removed, could not be delivered; it is lost",
		zap.String("id", m.ID))
	return true
}

// runTimers fires the durable store timers that are due, whoever set them:
// a kept receipt's (fireUnmatched) here, a message's (the modem path's
// receipt timer) by message, which is nil without a modem pool (such a
// timer, set by another gateway sharing the store, is left to one that has
// one). kick, when not nil, wakes it before its next poll.
func (d *Dispatcher) runTimers(ctx context.Context, kick <-chan struct{}, message func(context.Context, string)) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		ids, err := d.store.ClaimTimers(ctx, timerLease, 100)
		if err != nil && ctx.Err() == nil {
			d.storeReadFailed("", d.log, "store timers unreadable", err)
		}
		for _, id := range ids {
			switch {
			case strings.HasPrefix(id, unmatchedTimerPrefix):
				d.fireUnmatched(ctx, id)
			case message != nil:
				message(ctx, id)
			}
		}
		if len(ids) == 100 {
			continue // more are due
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// StartTimers runs the store timers' loop when no modem pool does
// (Failover.Run runs it otherwise).
func (d *Dispatcher) StartTimers() {
	d.spawn(func() { d.runTimers(d.deliverCtx, nil, nil) })
}
