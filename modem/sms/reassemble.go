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
	first time.Time  // when the first part arrived
	parts [][]uint16 // index seq-1: the part's text as UTF-16 units; nil until arrived
	data  [][]byte   // index seq-1: an 8-bit part's user data
	have  []bool
	n     int // parts arrived
}

func (r *Reassembler) add(d *Deliver, now time.Time) (string, []byte, bool) {
	if d == nil {
		return "", nil, false
	}
	if d.Concat == nil {
		return d.Text, d.Data, true
	}
	maxAge := r.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	if r.pending == nil {
		r.pending = make(map[reassemblyKey]*pendingMessage)
	}
	for k, p := range r.pending {
		if now.Sub(p.first) > maxAge {
			delete(r.pending, k)
		}
	}
	c := d.Concat
	if c.Total < 1 || c.Seq < 1 || c.Seq > c.Total {
		return "", nil, false
	}
	k := reassemblyKey{d.From, c.Ref, c.Total}
	p := r.pending[k]
	if p == nil {
		p = &pendingMessage{first: now, parts: make([][]uint16, c.Total), data: make([][]byte, c.Total), have: make([]bool, c.Total)}
		r.pending[k] = p
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
	}
	if p.n < c.Total {
		return "", nil, false
	}
	delete(r.pending, k)
	if data := slices.Concat(p.data...); len(data) > 0 {
		return "", data, true // 8-bit parts
	}
	return string(utf16.Decode(slices.Concat(p.parts...))), nil, true
}

// Pending is the number of incomplete messages held.
func (r *Reassembler) Pending() int { return len(r.pending) }
