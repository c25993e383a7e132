package smscsim

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/linxGnu/gosmpp/pdu"
)

// SMPP 3.4 section 3.2: every PDU starts with a 16-octet header of four
// big-endian integers: command_length (whole PDU), command_id, command_status,
// sequence_number.
const headerLen = 16

// maxPDULen bounds command_length; the spec sets no limit, 64 KiB is far above
// any legal submit_sm (short_message <= 254 octets, message_payload <= 64K).
const maxPDULen = 64 << 10

// Response command ids used as raw values (gosmpp's are int32 constants).
const (
	cmdGenericNack  uint32 = 0x80000000 // SMPP 3.4 5.1.2.1
	cmdSubmitSMResp uint32 = 0x80000004
)

type header struct {
	Length uint32
	ID     uint32
	Status uint32
	Seq    uint32
}

// FrameError reports a PDU whose header cannot be trusted; the stream cannot be
// resynchronised after it, so the connection is closed.
type FrameError struct {
	Length uint32 // the offending command_length
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("smscsim: invalid command_length %d (want %d..%d)", e.Length, headerLen, maxPDULen)
}

// readFrame reads one PDU: the header, then command_length-16 body octets.
// It returns the whole PDU; the body is full[headerLen:].
func readFrame(r io.Reader) (header, []byte, error) {
	var hb [headerLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return header{}, nil, err
	}
	h := header{
		Length: binary.BigEndian.Uint32(hb[0:]),
		ID:     binary.BigEndian.Uint32(hb[4:]),
		Status: binary.BigEndian.Uint32(hb[8:]),
		Seq:    binary.BigEndian.Uint32(hb[12:]),
	}
	if h.Length < headerLen || h.Length > maxPDULen {
		return h, nil, &FrameError{Length: h.Length}
	}
	full := make([]byte, h.Length)
	copy(full, hb[:])
	if _, err := io.ReadFull(r, full[headerLen:]); err != nil {
		return h, nil, err
	}
	return h, full, nil
}

// TLV is one optional parameter (SMPP 3.4 section 3.2.4.1 / 5.3), in wire order.
type TLV struct {
	Tag   uint16
	Value []byte
}

// TLV tags used here (SMPP 3.4 section 5.3.2).
const (
	TagReceiptedMessageID uint16 = 0x001E // 5.3.2.12, C-Octet String
	TagMessageState       uint16 = 0x0427 // 5.3.2.35, 1 octet
	TagMessagePayload     uint16 = 0x0424 // 5.3.2.32
)

// encode builds a whole PDU from a gosmpp pdu value: gosmpp marshals the
// mandatory body, then the header fields are set here and the TLVs appended
// in the given order (gosmpp keeps TLVs in a map, so their order would vary).
func encode(p pdu.PDU, status, seq uint32, tlvs []TLV) []byte {
	b := pdu.NewBuffer(make([]byte, 0, 64))
	p.Marshal(b)
	out := b.Bytes()
	for _, t := range tlvs {
		out = binary.BigEndian.AppendUint16(out, t.Tag)
		out = binary.BigEndian.AppendUint16(out, uint16(len(t.Value)))
		out = append(out, t.Value...)
	}
	binary.BigEndian.PutUint32(out[0:], uint32(len(out)))
	binary.BigEndian.PutUint32(out[8:], status)
	binary.BigEndian.PutUint32(out[12:], seq)
	return out
}

// headerOnly builds a body-less PDU (SMPP 3.4 4.4.2: a submit_sm_resp with a
// non-zero command_status carries no body).
func headerOnly(id, status, seq uint32) []byte {
	out := make([]byte, headerLen)
	binary.BigEndian.PutUint32(out[0:], headerLen)
	binary.BigEndian.PutUint32(out[4:], id)
	binary.BigEndian.PutUint32(out[8:], status)
	binary.BigEndian.PutUint32(out[12:], seq)
	return out
}

// BodyError names the field of a submit_sm body that could not be decoded and
// the octet offset (within the body) where decoding stopped.
type BodyError struct {
	Field  string
	Offset int
}

func (e *BodyError) Error() string {
	return fmt.Sprintf("smscsim: submit_sm body: %s truncated or unterminated at octet %d", e.Field, e.Offset)
}

type bodyReader struct {
	b   []byte
	off int
}

func (r *bodyReader) cstring(field string, max int) (string, error) {
	for i := r.off; i < len(r.b) && i-r.off < max; i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.off:i])
			r.off = i + 1
			return s, nil
		}
	}
	return "", &BodyError{Field: field, Offset: r.off}
}

func (r *bodyReader) byte1(field string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, &BodyError{Field: field, Offset: r.off}
	}
	v := r.b[r.off]
	r.off++
	return v, nil
}

func (r *bodyReader) bytesN(field string, n int) ([]byte, error) {
	if n > len(r.b)-r.off {
		return nil, &BodyError{Field: field, Offset: r.off}
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

// parseSubmitBody decodes a submit_sm body (SMPP 3.4 section 4.4.1) field by
// field, keeping short_message as its exact octets (UDH included) and the TLVs
// in wire order. It is our own decoder rather than pdu.SubmitSM.Unmarshal so
// that a recorded message is byte-exact and an odd UDH is recorded, not lost.
// The lengths given are the spec's maxima including the NUL terminator.
func parseSubmitBody(body []byte) (Message, error) {
	r := &bodyReader{b: body}
	var m Message
	var err error
	steps := []func() error{
		func() (e error) { m.ServiceType, e = r.cstring("service_type", 6); return },
		func() (e error) { m.SourceTON, e = r.byte1("source_addr_ton"); return },
		func() (e error) { m.SourceNPI, e = r.byte1("source_addr_npi"); return },
		func() (e error) { m.Source, e = r.cstring("source_addr", 21); return },
		func() (e error) { m.DestTON, e = r.byte1("dest_addr_ton"); return },
		func() (e error) { m.DestNPI, e = r.byte1("dest_addr_npi"); return },
		func() (e error) { m.Dest, e = r.cstring("destination_addr", 21); return },
		func() (e error) { m.ESMClass, e = r.byte1("esm_class"); return },
		func() (e error) { m.ProtocolID, e = r.byte1("protocol_id"); return },
		func() (e error) { m.Priority, e = r.byte1("priority_flag"); return },
		func() (e error) { m.ScheduleDeliveryTime, e = r.cstring("schedule_delivery_time", 17); return },
		func() (e error) { m.ValidityPeriod, e = r.cstring("validity_period", 17); return },
		func() (e error) { m.RegisteredDelivery, e = r.byte1("registered_delivery"); return },
		func() (e error) { _, e = r.byte1("replace_if_present_flag"); return },
		func() (e error) { m.DataCoding, e = r.byte1("data_coding"); return },
		func() (e error) { _, e = r.byte1("sm_default_msg_id"); return },
		func() error {
			n, e := r.byte1("sm_length")
			if e != nil {
				return e
			}
			m.ShortMessage, e = r.bytesN("short_message", int(n))
			return e
		},
	}
	for _, step := range steps {
		if err = step(); err != nil {
			return Message{}, err
		}
	}
	m.TLVs, err = parseTLVs(body, r.off)
	if err != nil {
		return Message{}, err
	}
	return m, nil
}

// parseTLVs reads optional parameters (SMPP 3.4 section 3.2.4.1: tag, length,
// value) from body[off:] to the end.
func parseTLVs(body []byte, off int) ([]TLV, error) {
	var out []TLV
	for off < len(body) {
		if len(body)-off < 4 {
			return nil, &BodyError{Field: "TLV header", Offset: off}
		}
		tag := binary.BigEndian.Uint16(body[off:])
		n := int(binary.BigEndian.Uint16(body[off+2:]))
		if n > len(body)-off-4 {
			return nil, &BodyError{Field: fmt.Sprintf("TLV 0x%04X value", tag), Offset: off + 4}
		}
		out = append(out, TLV{Tag: tag, Value: body[off+4 : off+4+n : off+4+n]})
		off += 4 + n
	}
	return out, nil
}
