package proxy

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
)

// Carrier ids used again.
//
// A carrier's message id names one message only for a while: counters wrap
// or are reset, random short ids collide, and a message whose receipt the
// carrier keeps (or that asked for none, registered_delivery 0) keeps its
// link for the whole store.ttl. When the carrier gives a new message B the
// id X of an older message A whose link is still there, and B's receipt
// overtakes the store write of B's link (the carrier sends it before its
// submit_sm_resp, or just after), the receipt resolves through A's link:
// delivered to A, it would finish A with B's outcome, and B would never get
// one.
//
// So a final receipt that resolves to a message M is held instead of
// delivered when another message may be about to take M's id
// (receiptAmbiguous): the carrier has submits in flight (sent, their
// acceptance not yet linked) that started after M was submitted, and
// either M is not recent (submitted more than reuseAgeFactor times the
// carrier's response_timeout ago: the carrier gave the id out long ago) or
// M asked for no receipt (registered_delivery 0: its receipt is not
// expected, a newer message is the likelier owner). It is held by the
// orphan stash (store.StashOrphan under its carrier id), so that the link
// write of the new message takes it in the same atomic step, as it takes a
// receipt that overtook a fresh id; after the carrier's response_timeout
// plus heldMargin (by then every submit that was in flight when it came
// is answered and linked) the receipt, unless a link took it, is taken
// back (TakeOrphan: whoever takes it delivers it) and resolved through the
// link again: delivered once to whichever message the link names then, M
// when no new message took the id.
//
// The ordinary receipt costs nothing more: with no submit in flight on
// the carrier, or M recent and asking for a receipt, it is delivered at
// once, and the check reads two atomic counters. A held one costs two
// store writes (the stash and its take) and one lookup, and waits about
// response_timeout.
//
// Limits. The submits in flight are this process's: with several gateways
// on one store, a new message sent through another one is not seen, and
// the receipt goes to M as before. Intermediate receipts are not held (one
// kept stash per carrier id: an intermediate receipt must not replace a
// final one kept there, store.FindOrStash), they go to M, which passes them
// on only if it asked for them. An acceptance that comes after the
// response_timeout (late.go) is not counted. When the receipt was M's
// after all (the carrier sends it just as it gives the same id to a new
// message), the new message gets it: the two cannot be told apart, and the
// newer owner is the likelier one. A held receipt lives in memory until it
// is resolved: a shutdown resolves those still held (FlushUnmatched); a
// crash leaves it kept in the store, taken by the next link of its id or
// expiring with store.ttl.

// reuseAgeFactor: a message submitted more than this many times its
// carrier's response_timeout ago is not recent. Its own submit was
// answered within one response_timeout, so it was accepted more than one
// response_timeout ago, before every submit in flight now was sent; and a
// carrier that gave an id out seconds ago does not give it again (most
// receipts, the fast DELIVRDs, come within that time and are never held).
const reuseAgeFactor = 2

// heldMargin is added to the carrier's response_timeout for a held
// receipt's wait: the store write of the last answer's link.
const heldMargin = time.Second

// submitsInFlight counts a carrier's submits from their start until their
// acceptance is linked in the store (or they failed), and keeps when the
// last one started: a per-process view (see above).
type submitsInFlight struct {
	n    atomic.Int64
	last atomic.Int64 // Unix nanoseconds
}

// submitStarted counts a submit to the carrier that starts at now (before
// it is sent); submitSettled ends it once its outcome is linked.
func (c *Carrier) submitStarted(now time.Time) {
	c.subs.last.Store(now.UnixNano())
	c.subs.n.Add(1)
}

func (c *Carrier) submitSettled() { c.subs.n.Add(-1) }

// newerSubmitsInFlight reports whether the carrier has submits in flight,
// the last of which started after since. (The last may be settled while an
// older one is not: then it errs towards a hold, which only delays.)
func (c *Carrier) newerSubmitsInFlight(since time.Time) bool {
	return c.subs.n.Load() > 0 && c.subs.last.Load() > since.UnixNano()
}

// responseTimeout is the carrier's response_timeout (its default when the
// config leaves it unset, as tests' do).
func (c *Carrier) responseTimeout() time.Duration {
	if rt := c.cfg.Load().ResponseTimeout.D(); rt > 0 {
		return rt
	}
	return config.DefaultCarrierRespTimeout
}

// receiptAmbiguous reports whether a final receipt that resolved to m
// through its link is to be held, a newer message possibly about to take
// m's carrier id (see the top of this file). now is the receipt's arrival.
func receiptAmbiguous(c *Carrier, m *store.Message, now time.Time) bool {
	if !c.newerSubmitsInFlight(m.Created) {
		return false
	}
	if m.RegDeliv&0x03 == 0 {
		return true // no receipt asked: not expected
	}
	return now.Sub(m.Created) > reuseAgeFactor*c.responseTimeout()
}

// receipts_held_total outcome: held (a receipt whose message another may
// be about to take the id of, kept for it), newer (it went to another
// message than the one it first named: the carrier used the id again),
// same (it went to the message it first named).
var metricHeld = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "spareline_receipts_held_total",
	Help: "Carrier receipts held because a newer submit in flight could take their message's carrier id (held), and where they went: to a newer message (newer) or the one first named (same).",
}, []string{"carrier", "outcome"})

var heldOutcomes = []string{"held", "newer", "same"}

// reuseHold is a receipt held by holdAmbiguous.
type reuseHold struct {
	c     *Carrier
	key   string
	named string    // the id of the message it resolved to when it came
	due   time.Time // when it is resolved again
}

// holdAmbiguous keeps a final receipt that resolved to m under its carrier
// id key and resolves it again after the carrier's response_timeout plus
// heldMargin. An error (the stash was not written) is the store's: the
// carrier is answered so that it sends the receipt again.
func (d *Dispatcher) holdAmbiguous(ctx context.Context, c *Carrier, key string, m *store.Message, body []byte, log *zap.Logger) error {
	if err := d.store.StashOrphan(ctx, c.Name, key, body); err != nil {
		return err
	}
	metricHeld.WithLabelValues(c.Name, "held").Inc()
	log.Info("receipt held: a newer submit in flight may take its message's carrier id",
		zap.String("carrier_id", key), zap.String("id", m.ID))
	wait := c.responseTimeout() + heldMargin
	id := unmatchedTimerID(c.Name, key)
	d.unmatchedMu.Lock()
	if d.reuseHolds == nil {
		d.reuseHolds = map[string]*reuseHold{}
	}
	// A second receipt for the id replaced the first in the stash, and
	// moves the wait.
	d.reuseHolds[id] = &reuseHold{c: c, key: key, named: m.ID, due: time.Now().Add(wait)}
	d.unmatchedMu.Unlock()
	d.armHeld(id, wait)
	return nil
}

// armHeld resolves the held receipt id after wait, unless a later receipt
// for the same id moved its due time, or the dispatcher stops first
// (FlushUnmatched resolves it then).
func (d *Dispatcher) armHeld(id string, wait time.Duration) {
	time.AfterFunc(wait, func() {
		d.spawn(func() {
			d.unmatchedMu.Lock()
			h, ok := d.reuseHolds[id]
			if ok && time.Until(h.due) > 0 {
				d.unmatchedMu.Unlock()
				return // moved by a later receipt, whose own timer resolves it
			}
			delete(d.reuseHolds, id)
			d.unmatchedMu.Unlock()
			if ok {
				d.resolveHeld(d.deliverCtx, h)
			}
		})
	})
}

// flushHeld resolves the receipts still held, at shutdown (FlushUnmatched):
// the submits in flight have ended by then.
func (d *Dispatcher) flushHeld(ctx context.Context) {
	d.unmatchedMu.Lock()
	list := d.reuseHolds
	d.reuseHolds = nil
	d.unmatchedMu.Unlock()
	for _, h := range list {
		d.resolveHeld(ctx, h)
	}
}

// resolveHeld takes a held receipt back from the stash, unless the link of
// a new message took it (then delivered there), and delivers it to the
// message its carrier id names now. Store failures are retried until ctx
// ends: before the take the receipt stays kept; after it, it is lost only
// if the store fails until then (logged at error level).
func (d *Dispatcher) resolveHeld(ctx context.Context, h *reuseHold) {
	c := h.c
	log := d.log.With(zap.String("carrier", c.Name), zap.String("carrier_id", h.key))
	var body []byte
	err := retryStore(ctx, d, func() (err error) {
		body, err = d.store.TakeOrphan(ctx, c.Name, h.key)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		// The link of a new message took it (and delivered it), or
		// another gateway resolved it.
		metricHeld.WithLabelValues(c.Name, "newer").Inc()
		log.Info("held receipt taken by the link of a newer message (the carrier used the id again)",
			zap.String("first_named", h.named))
		return
	case err != nil:
		log.Warn("store read of a held receipt failed until shutdown; it stays kept in the store", zap.Error(err))
		return
	}
	sm, err := ParseShortMessage(body)
	if err != nil {
		log.Error("held receipt unreadable; dropped", zap.Error(err))
		return
	}
	_, key, others, stat, final := receiptKeys(c, sm)
	if key != h.key && key != "" {
		others = append(others, key) // a reload changed receipt_id meanwhile
	}
	var m *store.Message
	err = retryStore(ctx, d, func() (err error) {
		m, err = d.findReceiptMessage(ctx, c.Name, h.key, others)
		if errors.Is(err, store.ErrNotFound) {
			m, err = d.store.FindOrStash(ctx, c.Name, h.key, body, final)
		}
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		// No link any more (expired): kept as a receipt that matches no
		// message.
		d.holdUnmatched(c, h.key, log)
		return
	case err != nil:
		log.Error("a held receipt could be neither delivered nor kept: the store failed until shutdown; it is lost",
			zap.String("stat", stat), zap.Error(err))
		return
	}
	outcome := "same"
	if m.ID != h.named {
		outcome = "newer"
	}
	metricHeld.WithLabelValues(c.Name, outcome).Inc()
	log.Info("held receipt delivered", zap.String("id", m.ID), zap.String("first_named", h.named), zap.String("stat", stat))
	d.deliverOrphan(ctx, c, m, body)
}

// retryStore calls fn until it succeeds, finds nothing (ErrNotFound), or
// ctx ends, with a growing pause between tries; it returns fn's last
// error.
func retryStore(ctx context.Context, d *Dispatcher, fn func() error) error {
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, storeProbeEvery) {
		err := fn()
		if err == nil || errors.Is(err, store.ErrNotFound) {
			return err
		}
		d.noteStore(storeOpReceipt, err)
		if sleepCtx(ctx, wait) != nil {
			return err
		}
	}
}
