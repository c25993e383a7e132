package sms

import (
	"slices"
	"time"
	"unicode/utf16"
)

// DefaultMaxAge is how long the Reassembler keeps the parts of an
// incomplete message when MaxAge is 0.
const DefaultMaxAge = time.Hour

type reassemblyKey struct {
	from  string
	ref   uint16
	total int
}

type pendingMessage struct {
	key   reassemblyKey
	first time.Time  // when the first part arrived
	parts [][]uint16 // index seq-1: the part's text as UTF-16 units; nil until arrived
	data  [][]byte   // index seq-1: an 8-bit part's user data
	have  []bool
	n     int       // parts arrived
	tags  []any     // the tags given with its parts, each once
	scts  time.Time // part 1's TP-SCTS, else the first part's to arrive
}

// Message is what the Reassembler gives back: a complete message, or what
// arrived of one that did not complete within MaxAge (Missing then lists
// the parts that never came).
type Message struct {
	From  string
	Ref   uint16
	Total int
	// Text is the parts' text joined in order ("" when the parts are 8-bit
	// data); Data is the joined user data of 8-bit parts (UDHs left out).
	Text string
	Data []byte
	// Missing are the sequence numbers (1-based) of the parts that did
	// not arrive; nil for a complete message.
	Missing []int
	// Tags are the tags given with its parts (each distinct tag once, in
	// the order given), for the caller to release what they stand for (the
	// parts' stored copies, say).
	Tags  []any
	First time.Time // when its first part arrived
	SCTS  time.Time // the TP-SCTS of part 1 (of the first to arrive when part 1 did not)
}

// Put gives one part of a concatenated message with the caller's tag for
// it (nil for none; tags must be comparable): a tag given again for the
// same message is recorded once, and a repeated part counts once but its
// tag is kept. When the part completes its message, Put returns it (with
// every tag given for it) and forgets it; otherwise nil. A part without a
// valid concatenation element (none, total < 2, sequence number out of
// range) is returned at once as a message of its own. Put does not expire
// anything: the caller calls Expire.
func (r *Reassembler) Put(d *Deliver, now time.Time, tag any) *Message {
	if d == nil {
		return nil
	}
	c := d.Concat
	if c == nil || c.Total < 2 || c.Seq < 1 || c.Seq > c.Total {
		msg := &Message{From: d.From, Text: d.Text, Data: d.Data, Total: 1, First: now, SCTS: d.SCTS}
		if tag != nil {
			msg.Tags = []any{tag}
		}
		return msg
	}
	if r.pending == nil {
		r.pending = make(map[reassemblyKey]*pendingMessage)
	}
	k := reassemblyKey{d.From, c.Ref, c.Total}
	p := r.pending[k]
	if p == nil {
		p = &pendingMessage{key: k, first: now, parts: make([][]uint16, c.Total), data: make([][]byte, c.Total), have: make([]bool, c.Total)}
		r.pending[k] = p
	}
	if tag != nil && !slices.Contains(p.tags, tag) {
		p.tags = append(p.tags, tag)
	}
	if !p.have[c.Seq-1] { // a repeated part replaces nothing and counts once
		p.have[c.Seq-1] = true
		// UTF-16 units, joined before decoding: a surrogate pair split
		// between two UCS2 parts is one character again.
		u := d.units
		if u == nil {
			u = utf16.Encode([]rune(d.Text))
		}
		p.parts[c.Seq-1] = u
		p.data[c.Seq-1] = d.Data
		p.n++
		if p.n == 1 || c.Seq == 1 {
			p.scts = d.SCTS
		}
	}
	if p.n < c.Total {
		return nil
	}
	delete(r.pending, k)
	return p.message()
}

// message joins what arrived of p, in order.
func (p *pendingMessage) message() *Message {
	msg := &Message{From: p.key.from, Ref: p.key.ref, Total: p.key.total, Tags: p.tags, First: p.first, SCTS: p.scts}
	for i, ok := range p.have {
		if !ok {
			msg.Missing = append(msg.Missing, i+1)
		}
	}
	if data := slices.Concat(p.data...); len(data) > 0 {
		msg.Data = data // 8-bit parts
		return msg
	}
	msg.Text = string(utf16.Decode(slices.Concat(p.parts...)))
	return msg
}

// Expire returns the incomplete messages whose first part arrived more
// than MaxAge (0: DefaultMaxAge) before now, as what arrived of them (the
// parts in order, Missing set), oldest first, and forgets them.
func (r *Reassembler) Expire(now time.Time) []*Message {
	maxAge := r.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	var out []*Message
	for k, p := range r.pending {
		if now.Sub(p.first) > maxAge {
			delete(r.pending, k)
			out = append(out, p.message())
		}
	}
	slices.SortStableFunc(out, func(a, b *Message) int { return a.First.Compare(b.First) })
	return out
}

// Tagged is the number of tags the incomplete messages hold.
func (r *Reassembler) Tagged() int {
	n := 0
	for _, p := range r.pending {
		n += len(p.tags)
	}
	return n
}

// TakeOldestTags removes the tags of the incomplete message that holds
// tags and whose first part arrived first, and returns them; the message
// itself is kept (its parts still join the later ones). Nil when no
// incomplete message holds a tag.
func (r *Reassembler) TakeOldestTags() []any {
	var old *pendingMessage
	for _, p := range r.pending {
		if len(p.tags) > 0 && (old == nil || p.first.Before(old.first)) {
			old = p
		}
	}
	if old == nil {
		return nil
	}
	tags := old.tags
	old.tags = nil
	return tags
}

// add is Add and AddData: expired messages are dropped, a message without
// a concatenation element is complete by itself.
func (r *Reassembler) add(d *Deliver, now time.Time) (string, []byte, bool) {
	if d == nil {
		return "", nil, false
	}
	r.Expire(now)
	if c := d.Concat; c == nil {
		return d.Text, d.Data, true
	} else if c.Total < 1 || c.Seq < 1 || c.Seq > c.Total {
		return "", nil, false
	}
	msg := r.Put(d, now, nil)
	if msg == nil {
		return "", nil, false
	}
	return msg.Text, msg.Data, true
}

// Pending is the number of incomplete messages held.
func (r *Reassembler) Pending() int { return len(r.pending) }
