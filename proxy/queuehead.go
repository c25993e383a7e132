package proxy

import (
	"context"
	"strings"
	"time"

	"github.com/spareline/spareline/store"
)

// queueHeadMax is how many queued messages the status page lists.
const queueHeadMax = 20

// QueuedMessage is a message waiting in the modem queue, as the status
// page shows it: enough to see what is stuck and why, without the text.
// The destination is masked (the page has no authentication).
type QueuedMessage struct {
	ID       string    `json:"id"`
	Account  string    `json:"account"`
	Carrier  string    `json:"carrier"` // routed carrier; "" = no carrier for the number
	To       string    `json:"to"`      // destination, middle digits masked
	Priority byte      `json:"priority"`
	Queued   time.Time `json:"queued"`
	Due      time.Time `json:"due,omitzero"` // zero: due now (left out of the JSON)
	Sending  bool      `json:"sending"`      // a worker holds it (on a modem, or waiting for one)
	Attempts int       `json:"attempts"`
	Note     string    `json:"note"` // why it is on the modem path, or its last error
}

// queueHead lists the oldest messages of the modem queue; an error when
// the queue could not be read (a failed read of the messages' records
// leaves only their queue fields).
func (g *Gateway) queueHead(ctx context.Context) ([]QueuedMessage, error) {
	entries, err := g.Store.ModemQueueHead(ctx, queueHeadMax)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return []QueuedMessage{}, nil
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	msgs, err := g.Store.GetMessages(ctx, ids) // one read for the page
	if err != nil {
		msgs = make([]*store.Message, len(ids)) // the queue's own fields still
	}
	out := make([]QueuedMessage, 0, len(entries))
	for i, e := range entries {
		q := QueuedMessage{ID: e.ID, Priority: e.Priority, Queued: e.Enqueued, Due: e.Due, Sending: e.Claimed}
		if m := msgs[i]; m != nil {
			q.Account, q.Carrier, q.To, q.Attempts, q.Note = m.Account, m.Carrier, maskNumber(m.Dest), m.Attempts, m.Note
		}
		out = append(out, q)
	}
	return out, nil
}

// maskNumber hides most of a phone number: a mobile number of 11 digits
// or more shows its first 3 and last 4 (13800138000 -> 138****8000, the
// usual form in China); shorter ones (8-10 digits: a national number in
// many countries) show only their last 3, and shorter still their last 2,
// so that most digits are hidden whatever the country.
func maskNumber(n string) string {
	if len(n) >= 11 {
		return n[:3] + strings.Repeat("*", len(n)-7) + n[len(n)-4:]
	}
	if len(n) >= 8 {
		return strings.Repeat("*", len(n)-3) + n[len(n)-3:]
	}
	if len(n) <= 2 {
		return strings.Repeat("*", len(n))
	}
	return strings.Repeat("*", len(n)-2) + n[len(n)-2:]
}
