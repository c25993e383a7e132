package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// The record encoding shared by both stores. It is a compact binary form
// (about the body's size plus 60 octets for a typical message, against about
// twice that for JSON with a base64 body), so that an in-flight message costs
// little Redis memory.
//
// Message, version 1:
//
//	0x01 version
//	str ID, Account, Carrier, Source, Dest      (uvarint length, then octets)
//	str Body
//	u8  RegDeliv, u8 Priority
//	str State, CarrierID
//	varint Attempts
//	time Created, Expires                       (0x00 = zero time, or 0x01 varint seconds, uvarint nanoseconds)
//	str Note, Modem
//	uvarint count, then varint each              ModemRefs
//	[str FinalStat, FinalErr; time Done]         only when one is set, or CarrierMsgID is (records without them decode as before)
//	[str CarrierMsgID]                           only when set
//
// Delivery, version 1:
//
//	0x01 version
//	str ID, Account, Body, MsgID
//	time Created
//
// Unknown versions and short or over-long input are a *CorruptError.

const codecVersion = 1

// CorruptError reports a stored record that cannot be decoded: the record
// kind, the field and the octet offset where decoding stopped.
type CorruptError struct {
	Record string // "message" or "delivery"
	Field  string // the field being decoded
	Offset int    // octet offset in the record
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("store: corrupt %s record: field %s at octet %d: %s", e.Record, e.Field, e.Offset, e.Reason)
}

// encoder appends to a buffer.
type encoder struct{ b []byte }

func (e *encoder) str(s string) {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *encoder) bytes(p []byte) {
	e.b = binary.AppendUvarint(e.b, uint64(len(p)))
	e.b = append(e.b, p...)
}

func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.b = append(e.b, 0)
		return
	}
	e.b = append(e.b, 1)
	e.b = binary.AppendVarint(e.b, t.Unix())
	e.b = binary.AppendUvarint(e.b, uint64(t.Nanosecond()))
}

// decoder reads a record; the first error sticks and later reads return
// zero values.
type decoder struct {
	rec string
	b   []byte
	off int
	err *CorruptError
}

func (d *decoder) fail(field, reason string) {
	if d.err == nil {
		d.err = &CorruptError{Record: d.rec, Field: field, Offset: d.off, Reason: reason}
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, "bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, "bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u8(field string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail(field, "truncated")
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) raw(field string) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail(field, fmt.Sprintf("length %d exceeds the %d octets left", n, len(d.b)-d.off))
		return nil
	}
	p := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return p
}

func (d *decoder) str(field string) string { return string(d.raw(field)) }

func (d *decoder) bytes(field string) []byte {
	p := d.raw(field)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) time(field string) time.Time {
	switch d.u8(field) {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint(field)
		ns := d.uvarint(field)
		if d.err != nil {
			return time.Time{}
		}
		if ns >= 1e9 {
			d.fail(field, "nanoseconds out of range")
			return time.Time{}
		}
		return time.Unix(sec, int64(ns))
	default:
		d.off--
		d.fail(field, "bad time tag")
		return time.Time{}
	}
}

func (d *decoder) version() {
	if v := d.u8("version"); d.err == nil && v != codecVersion {
		d.off--
		d.fail("version", fmt.Sprintf("unknown version %d", v))
	}
}

func (d *decoder) end() {
	if d.err == nil && d.off != len(d.b) {
		d.fail("end", fmt.Sprintf("%d trailing octets", len(d.b)-d.off))
	}
}

// encodeMessage returns m's stored form.
func encodeMessage(m *Message) []byte {
	e := encoder{b: make([]byte, 0, 64+len(m.Body)+len(m.ID)+len(m.Dest)+len(m.Source)+len(m.Note))}
	e.b = append(e.b, codecVersion)
	e.str(m.ID)
	e.str(m.Account)
	e.str(m.Carrier)
	e.str(m.Source)
	e.str(m.Dest)
	e.bytes(m.Body)
	e.b = append(e.b, m.RegDeliv, m.Priority)
	e.str(string(m.State))
	e.str(m.CarrierID)
	e.b = binary.AppendVarint(e.b, int64(m.Attempts))
	e.time(m.Created)
	e.time(m.Expires)
	e.str(m.Note)
	e.str(m.Modem)
	e.b = binary.AppendUvarint(e.b, uint64(len(m.ModemRefs)))
	for _, r := range m.ModemRefs {
		e.b = binary.AppendVarint(e.b, int64(r))
	}
	if m.FinalStat != "" || m.FinalErr != "" || !m.Done.IsZero() || m.CarrierMsgID != "" {
		e.str(m.FinalStat)
		e.str(m.FinalErr)
		e.time(m.Done)
	}
	if m.CarrierMsgID != "" {
		e.str(m.CarrierMsgID)
	}
	return e.b
}

// decodeMessage parses a stored message.
func decodeMessage(b []byte) (*Message, error) {
	d := decoder{rec: "message", b: b}
	d.version()
	m := &Message{}
	m.ID = d.str("id")
	m.Account = d.str("account")
	m.Carrier = d.str("carrier")
	m.Source = d.str("source")
	m.Dest = d.str("dest")
	m.Body = d.bytes("body")
	m.RegDeliv = d.u8("regdeliv")
	m.Priority = d.u8("priority")
	m.State = State(d.str("state"))
	m.CarrierID = d.str("carrier_id")
	att := d.varint("attempts")
	if d.err == nil && (att < math.MinInt32 || att > math.MaxInt32) {
		d.fail("attempts", "out of range")
	}
	m.Attempts = int(att)
	m.Created = d.time("created")
	m.Expires = d.time("expires")
	m.Note = d.str("note")
	m.Modem = d.str("modem")
	n := d.uvarint("modem_refs")
	if d.err == nil && n > uint64(len(d.b)-d.off) { // each ref takes at least one octet
		d.fail("modem_refs", "count exceeds the record")
	}
	if d.err == nil && n > 0 {
		m.ModemRefs = make([]int, n)
		for i := range m.ModemRefs {
			v := d.varint("modem_refs")
			if d.err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
				d.fail("modem_refs", "out of range")
			}
			m.ModemRefs[i] = int(v)
		}
	}
	if d.err == nil && d.off < len(d.b) { // the optional final outcome
		m.FinalStat = d.str("final_stat")
		m.FinalErr = d.str("final_err")
		m.Done = d.time("done")
	}
	if d.err == nil && d.off < len(d.b) { // the optional carrier message_id
		m.CarrierMsgID = d.str("carrier_msg_id")
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// encodeDelivery returns d's stored form.
func encodeDelivery(dl *Delivery) []byte {
	e := encoder{b: make([]byte, 0, 32+len(dl.Body)+len(dl.ID)+len(dl.Account)+len(dl.MsgID))}
	e.b = append(e.b, codecVersion)
	e.str(dl.ID)
	e.str(dl.Account)
	e.bytes(dl.Body)
	e.str(dl.MsgID)
	e.time(dl.Created)
	return e.b
}

// decodeDelivery parses a stored delivery.
func decodeDelivery(b []byte) (*Delivery, error) {
	d := decoder{rec: "delivery", b: b}
	d.version()
	dl := &Delivery{}
	dl.ID = d.str("id")
	dl.Account = d.str("account")
	dl.Body = d.bytes("body")
	dl.MsgID = d.str("msg_id")
	dl.Created = d.time("created")
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return dl, nil
}
