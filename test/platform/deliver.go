package platform

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// Deliver is a deliver_sm body (SMPP 3.4 4.6.1), short_message kept exact.
type Deliver struct {
	ServiceType          string
	SourceTON, SourceNPI byte
	Source               string
	DestTON, DestNPI     byte
	Dest                 string
	ESMClass             byte
	ProtocolID           byte
	Priority             byte
	RegisteredDelivery   byte
	DataCoding           byte
	ShortMessage         []byte // UDH included when esm_class has 0x40
	TLVs                 []TLV
}

// TLV returns the first optional parameter with the tag.
func (d Deliver) TLV(tag uint16) ([]byte, bool) {
	for _, t := range d.TLVs {
		if t.Tag == tag {
			return t.Value, true
		}
	}
	return nil, false
}

// IsReceipt reports a delivery receipt: esm_class message type bits 5-2
// (SMPP 3.4 5.2.12) 0001 "SMSC delivery receipt" or 1000 "intermediate
// delivery notification".
func (d Deliver) IsReceipt() bool {
	t := d.ESMClass & 0x3C
	return t == 0x04 || t == 0x20
}

// BodyError names the deliver_sm field that did not decode and its offset in the body.
type BodyError struct {
	Field  string
	Offset int
}

func (e *BodyError) Error() string {
	return fmt.Sprintf("platform: deliver_sm body: %s truncated or unterminated at octet %d", e.Field, e.Offset)
}

// ParseDeliverBody decodes a deliver_sm body (the octets after the header).
func ParseDeliverBody(body []byte) (Deliver, error) {
	var d Deliver
	off := 0
	str := func(field string, max int) (string, error) {
		lim := body[off:]
		if len(lim) > max {
			lim = lim[:max]
		}
		s, n, ok := cstring(lim)
		if !ok {
			return "", &BodyError{Field: field, Offset: off}
		}
		off += n
		return s, nil
	}
	one := func(field string) (byte, error) {
		if off >= len(body) {
			return 0, &BodyError{Field: field, Offset: off}
		}
		off++
		return body[off-1], nil
	}
	var err error
	if d.ServiceType, err = str("service_type", 6); err != nil {
		return d, err
	}
	if d.SourceTON, err = one("source_addr_ton"); err != nil {
		return d, err
	}
	if d.SourceNPI, err = one("source_addr_npi"); err != nil {
		return d, err
	}
	if d.Source, err = str("source_addr", 21); err != nil {
		return d, err
	}
	if d.DestTON, err = one("dest_addr_ton"); err != nil {
		return d, err
	}
	if d.DestNPI, err = one("dest_addr_npi"); err != nil {
		return d, err
	}
	if d.Dest, err = str("destination_addr", 21); err != nil {
		return d, err
	}
	if d.ESMClass, err = one("esm_class"); err != nil {
		return d, err
	}
	if d.ProtocolID, err = one("protocol_id"); err != nil {
		return d, err
	}
	if d.Priority, err = one("priority_flag"); err != nil {
		return d, err
	}
	// schedule_delivery_time and validity_period must be empty in deliver_sm
	// (4.6.1) but are read as strings to be lenient.
	if _, err = str("schedule_delivery_time", 17); err != nil {
		return d, err
	}
	if _, err = str("validity_period", 17); err != nil {
		return d, err
	}
	if d.RegisteredDelivery, err = one("registered_delivery"); err != nil {
		return d, err
	}
	if _, err = one("replace_if_present_flag"); err != nil {
		return d, err
	}
	if d.DataCoding, err = one("data_coding"); err != nil {
		return d, err
	}
	if _, err = one("sm_default_msg_id"); err != nil {
		return d, err
	}
	n, err := one("sm_length")
	if err != nil {
		return d, err
	}
	if int(n) > len(body)-off {
		return d, &BodyError{Field: "short_message", Offset: off}
	}
	d.ShortMessage = body[off : off+int(n) : off+int(n)]
	off += int(n)
	for off < len(body) {
		if len(body)-off < 4 {
			return d, &BodyError{Field: "TLV header", Offset: off}
		}
		tag := binary.BigEndian.Uint16(body[off:])
		l := int(binary.BigEndian.Uint16(body[off+2:]))
		if l > len(body)-off-4 {
			return d, &BodyError{Field: fmt.Sprintf("TLV 0x%04X value", tag), Offset: off + 4}
		}
		d.TLVs = append(d.TLVs, TLV{Tag: tag, Value: body[off+4 : off+4+l : off+4+l]})
		off += 4 + l
	}
	return d, nil
}

// ReceiptFields are the parts of a receipt text (SMPP 3.4 Appendix B:
// "id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done
// date:YYMMDDhhmm stat:DDDDDDD err:E text:...").
type ReceiptFields struct {
	ID, Sub, Dlvrd, SubmitDate, DoneDate, Stat, Err, Text string
}

// ReceiptTextError says why a receipt text could not be read.
type ReceiptTextError struct {
	Text   string
	Reason string
}

func (e *ReceiptTextError) Error() string {
	return fmt.Sprintf("platform: receipt text %q: %s", e.Text, e.Reason)
}

// asciiLower lowers A-Z only, so byte offsets stay the same as in s.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// ParseReceiptText reads the Appendix B receipt format. Keys are matched
// without regard to case ("Text:" and "text:" both occur in the field);
// everything after "text:" is the text. Only id is required.
func ParseReceiptText(s string) (ReceiptFields, error) {
	var f ReceiptFields
	low := asciiLower(s)
	head, headLow := s, low
	if i := strings.Index(low, "text:"); i >= 0 {
		f.Text = s[i+5:]
		head, headLow = s[:i], low[:i]
	}
	// "submit date" and "done date" hold a space: join them to one token.
	keys := []struct {
		key string
		dst *string
	}{
		{"submit date:", &f.SubmitDate}, {"done date:", &f.DoneDate},
		{"id:", &f.ID}, {"sub:", &f.Sub}, {"dlvrd:", &f.Dlvrd},
		{"stat:", &f.Stat}, {"err:", &f.Err},
	}
	taken := make([]bool, len(head))
	for _, k := range keys {
		from := 0
		for {
			j := strings.Index(headLow[from:], k.key)
			if j < 0 {
				break
			}
			j += from
			// a key starts the text or follows a space, and is not inside
			// another key ("id:" inside "submit date:" cannot happen, but
			// "err:" could be a value's tail).
			if (j == 0 || head[j-1] == ' ') && !taken[j] {
				v := head[j+len(k.key):]
				if e := strings.IndexByte(v, ' '); e >= 0 {
					v = v[:e]
				}
				*k.dst = v
				for t := j; t < j+len(k.key)+len(v) && t < len(taken); t++ {
					taken[t] = true
				}
				break
			}
			from = j + 1
		}
	}
	if f.ID == "" {
		return f, &ReceiptTextError{Text: s, Reason: "no id: field"}
	}
	return f, nil
}

// Receipt is a delivery receipt the client received.
type Receipt struct {
	ReceiptFields        // from the text
	TLVID         string // receipted_message_id TLV (SMPP 3.4 5.3.2.12), "" if absent
	State         byte   // message_state TLV (5.3.2.35), 0 if absent
	Src, Dest     string // Src is the handset the message went to
	Seq           uint32
	Status        uint32 // the deliver_sm_resp status we answered
	Deliver       Deliver
	Raw           []byte // the whole deliver_sm PDU
	At            time.Time
}

// MO is a mobile-originated message the client received.
type MO struct {
	Src, Dest  string
	DataCoding byte
	Text       string // decoded when the data_coding is known, else ""
	Seq        uint32
	Status     uint32 // the deliver_sm_resp status we answered
	Deliver    Deliver
	Raw        []byte
	At         time.Time
}
