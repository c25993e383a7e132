package proxy

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// noIDWarnEvery is the least time between two warnings of one carrier's
// acceptances without a message_id (acceptedWithoutID).
const noIDWarnEvery = time.Minute

// noIDWarning rate-limits a carrier's warning of acceptances without a
// usable message_id.
type noIDWarning struct {
	at      atomic.Int64 // UnixNano of the last line; 0 = none yet
	pending atomic.Int64 // acceptances without an id not in a line yet
}

// acceptedWithoutID notes that c answered submit_sm_resp ESME_ROK with no
// usable message_id (an empty body or an empty id) for our message id: the
// platform got OK, but no receipt of the carrier's can ever be matched to
// the message, and cancel_sm cannot reach it at the carrier. Nothing else
// shows it when it happens, so it is a warning, at most one a minute per
// carrier, with how many there were since the last line.
func (c *Carrier) acceptedWithoutID(id string) {
	w := &c.noID
	w.pending.Add(1)
	now := time.Now().UnixNano()
	last := w.at.Load()
	if (last != 0 && now-last < int64(noIDWarnEvery)) || !w.at.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("carrier accepted a message without a message_id: its receipts cannot be matched to the message (nor to the platform's id), and cancel_sm cannot reach it at the carrier; check with the carrier that its submit_sm_resp carries the message id, and this carrier's receipt_id",
		zap.String("id", id), zap.Int64("without_id_since_last_line", w.pending.Swap(0)))
}
