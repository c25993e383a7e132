package proxy

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/linxGnu/gosmpp/data"
)

// dataSMAsDeliver rewrites the body of a data_sm a carrier sent (SMPP 3.4
// §4.7.1: an SMSC may deliver receipts and MO messages by data_sm instead of
// deliver_sm) as the body of the deliver_sm that carries the same thing
// (§4.6.1): the fields data_sm shares with deliver_sm are kept, those it
// lacks are set to their defaults (protocol_id 0, priority_flag 0, no
// schedule or validity, replace_if_present 0, sm_default_msg_id 0) and the
// content stays where data_sm carries it, in the optional parameters
// (message_payload, receipted_message_id, message_state...), with
// sm_length 0. The platform so gets an ordinary deliver_sm, and the receipt
// path rewrites it like any other.
func dataSMAsDeliver(body []byte) ([]byte, error) {
	r := &bodyReader{b: body}
	if err := r.skipSource(); err != nil {
		return nil, err
	}
	for _, f := range []string{"dest_addr_ton", "dest_addr_npi"} {
		if _, err := r.byte1(f); err != nil {
			return nil, err
		}
	}
	if _, err := r.field(maxAddr, "destination_addr", statusInvDstAdr); err != nil {
		return nil, err
	}
	if _, err := r.byte1("esm_class"); err != nil {
		return nil, err
	}
	head := r.off // service_type .. esm_class: the same in both
	regDeliv, err := r.byte1("registered_delivery")
	if err != nil {
		return nil, err
	}
	dc, err := r.byte1("data_coding")
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(body)+8)
	out = append(out, body[:head]...)
	out = append(out,
		0, // protocol_id
		0, // priority_flag
		0, // schedule_delivery_time ""
		0, // validity_period ""
		regDeliv,
		0,  // replace_if_present_flag
		dc, // data_coding
		0,  // sm_default_msg_id
		0,  // sm_length: the content is in message_payload
	)
	out = append(out, body[r.off:]...) // the optional parameters, as sent
	// The optional parameters are checked by the deliver_sm parser.
	if _, err := ParseShortMessage(out); err != nil {
		return nil, err
	}
	return out, nil
}

// legacyBody is a deliver_sm body for an SMPP 3.3 ESME (interface_version
// below 0x34), which knows no optional parameters: they are cut. A receipt
// keeps its id and stat in its text (Appendix B). Content carried only in
// message_payload (a data_sm MO, a long receipt text) moves into
// short_message when it fits its 254 octets; longer content is sent as a
// concatenated series by legacyParts, and only what it cannot split (over
// 255 parts, a malformed UDH) is left whole here: a 3.3 ESME may then ignore
// the tail, which is better than getting an empty message.
// schedule_delivery_time and validity_period are NULL (§4.6.1), whatever the
// carrier wrote.
func legacyBody(body []byte) []byte {
	m, err := ParseShortMessage(body)
	if err != nil {
		return body
	}
	if len(m.TLVs) == 0 {
		if m.ScheduleDelivery == "" && m.Validity == "" {
			return body
		}
		return m.rebuildDeliver(body, m.ESMClass, m.Message, nil)
	}
	msg := m.Message
	if len(msg) == 0 {
		if p, ok := m.TLV(tagMessagePayload); ok {
			if len(p) > 254 {
				return m.rebuildDeliver(body, m.ESMClass, m.Message, m.TLVs)
			}
			msg = p
		} else if m.IsReceipt() {
			if msg = receiptTextFromTLVs(m); len(msg) > 254 {
				return m.rebuildDeliver(body, m.ESMClass, m.Message, m.TLVs) // an absurd id: left whole
			}
		}
	}
	// A part of a concatenated message marked by sar_* (a carrier's long
	// MO in parts): the concatenation goes into the header, or the 3.3
	// platform would get unrelated fragments. No room for it: the part as
	// it was.
	esm := m.ESMClass
	if withUDH, e, ok := sarAsUDH(m, msg); ok && len(withUDH) <= 254 {
		msg, esm = withUDH, e
	}
	return m.rebuildDeliver(body, esm, msg, nil)
}

// rebuildDeliver writes deliver_sm body m (of body) with esm_class esm, a
// new short_message and TLVs, and schedule_delivery_time and
// validity_period NULL (SMPP 3.4 §4.6.1: they are not used in deliver_sm; a
// carrier that sets them is not relayed octet for octet); every other
// mandatory field keeps its octets.
func (m *ShortMessage) rebuildDeliver(body []byte, esm byte, msg []byte, tlvs []TLV) []byte {
	out := make([]byte, 0, len(body)+64)
	out = append(out, body[:m.esmOffset]...)
	out = append(out, esm)
	out = append(out, body[m.esmOffset+1:m.esmOffset+3]...) // protocol_id, priority_flag
	out = append(out, 0, 0)                                 // schedule_delivery_time, validity_period
	out = append(out, body[m.smOffset-4:m.smOffset]...)     // registered_delivery .. sm_default_msg_id
	out = append(out, byte(len(msg)))
	out = append(out, msg...)
	return appendTLVs(out, tlvs)
}

// legacyParts are the deliver_sm bodies that carry body to an SMPP 3.3
// ESME: legacyBody's one, but for content in message_payload longer than
// short_message's 254 octets (a long MO message a carrier delivered whole),
// which goes as a concatenated series instead: each part has the
// concatenation information element of 3GPP TS 23.040 §9.2.3.24.1 (8-bit
// reference ref, the same for every try of the delivery) at the head of
// short_message (after the other elements of the message's own UDH, when it
// had one), esm_class's UDHI bit set (§5.2.12), and at most 254 octets in
// all. The content is cut on its coding's character boundaries
// (splitContent). The parts are sent in order, each once the one before was
// answered OK.
func legacyParts(body []byte, ref byte) [][]byte {
	m, err := ParseShortMessage(body)
	if err != nil || len(m.Message) != 0 {
		return [][]byte{legacyBody(body)}
	}
	p, ok := m.TLV(tagMessagePayload)
	if !ok || len(p) <= 254 {
		return [][]byte{legacyBody(body)}
	}
	content, keep := p, []byte(nil)
	if m.UDHI() {
		// The message's own UDH: its elements but concatenation ones go
		// into every part's.
		udhl := int(p[0])
		if 1+udhl > len(p) {
			return [][]byte{legacyBody(body)}
		}
		ies := p[1 : 1+udhl]
		content = p[1+udhl:]
		for i := 0; i < len(ies); {
			if i+2 > len(ies) || i+2+int(ies[i+1]) > len(ies) {
				return [][]byte{legacyBody(body)}
			}
			if iei, l := ies[i], int(ies[i+1]); iei != 0x00 && iei != 0x08 {
				keep = append(keep, ies[i:i+2+l]...)
			}
			i += 2 + int(ies[i+1])
		}
	}
	udhLen := 1 + len(keep) + 5
	room := 254 - udhLen
	if room < 8 {
		return [][]byte{legacyBody(body)}
	}
	chunks := splitContent(m.DataCoding, content, room)
	if len(chunks) > 255 {
		return [][]byte{legacyBody(body)}
	}
	parts := make([][]byte, 0, len(chunks))
	for i, c := range chunks {
		msg := make([]byte, 0, udhLen+len(c))
		msg = append(msg, byte(udhLen-1))
		msg = append(msg, keep...)
		msg = append(msg, 0x00, 3, ref, byte(len(chunks)), byte(i+1))
		msg = append(msg, c...)
		parts = append(parts, m.rebuildDeliver(body, m.ESMClass|0x40, msg, nil))
	}
	return parts
}

// splitContent cuts content of data_coding dc into pieces of at most room
// octets (room 8 at least), on the coding's character boundaries: UCS2 at
// even octets and not inside a surrogate pair; GSM 7-bit text (unpacked, a
// septet an octet) not between an escape (0x1B) and the character it
// extends; GBK (data_coding 15) not inside a two-octet character; anything
// else (8-bit data, single-octet alphabets) as it comes.
func splitContent(dc byte, content []byte, room int) [][]byte {
	var out [][]byte
	for len(content) > 0 {
		n := min(room, len(content))
		if n < len(content) {
			n = cutAt(dc, content, n)
		}
		out = append(out, content[:n])
		content = content[n:]
	}
	return out
}

// cutAt is the longest prefix of b, at most n octets (n < len(b)) and more
// than none, that ends on a character boundary of data_coding dc.
func cutAt(dc byte, b []byte, n int) int {
	switch {
	case ucs2DataCoding(dc):
		n &^= 1
		if n >= 4 && b[n-2] >= 0xD8 && b[n-2] <= 0xDB { // a high surrogate: its pair goes with it
			n -= 2
		}
	case gsm7DataCoding(dc):
		i := 0
		for i < n {
			step := 1
			if b[i] == 0x1B {
				step = 2
			}
			if i+step > n {
				break
			}
			i += step
		}
		n = i
	case dc == 0x0F: // GBK: a lead octet 0x81-0xFE and its trail octet
		i := 0
		for i < n {
			step := 1
			if b[i] >= 0x81 && b[i] <= 0xFE {
				step = 2
			}
			if i+step > n {
				break
			}
			i += step
		}
		n = i
	}
	return max(n, 1)
}

// gsm7DataCoding reports a data_coding whose text is the GSM 7-bit default
// alphabet (TS 23.038): SMPP 0 (the SMSC default alphabet), the general
// data coding groups with alphabet bits 00, the message waiting groups
// 0xC0-0xDF, and 0xF0-0xF3, 0xF8-0xFB.
func gsm7DataCoding(dc byte) bool {
	switch {
	case dc == 0:
		return true
	case dc >= 0x10 && dc < 0x80:
		return dc&0x2C == 0
	case dc >= 0xC0 && dc < 0xE0:
		return true
	}
	return dc >= 0xF0 && dc&0x04 == 0
}

// receiptTextFromTLVs writes the Appendix B text of a receipt that carries
// only receipted_message_id and message_state (a carrier's data_sm may), for
// a platform that reads no optional parameters. The dates are unknown: the
// time of writing stands for both.
func receiptTextFromTLVs(m *ShortMessage) []byte {
	idv, ok := m.TLV(tagReceiptedMessageID)
	if !ok {
		return nil
	}
	id := strings.TrimRight(string(idv), "\x00")
	stat := "UNKNOWN"
	if v, ok := m.TLV(tagMessageState); ok && len(v) == 1 {
		for name, code := range messageStates {
			if code == v[0] {
				stat = name
			}
		}
	}
	now := time.Now()
	return appendixBText(id, stat, "000", now, now, nil)
}

// tagQosTimeToLive is data_sm's qos_time_to_live (§5.3.2.9): seconds.
const tagQosTimeToLive = uint16(0x0017)

// submitName names the request a platform submitted a message with.
func submitName(id uint32) string {
	if id == cmdDataSM {
		return "data_sm"
	}
	return "submit_sm"
}

// dataSMAsSubmit rewrites the body of a data_sm a platform sent (§4.7.1:
// an ESME may submit by data_sm instead of submit_sm) as the submit_sm body
// that carries the same message (§4.4.1), which is what the carrier and the
// modem path then get: the fields data_sm shares with submit_sm are kept,
// those it lacks take their defaults (protocol_id 0, priority_flag 0, no
// schedule, replace_if_present 0, sm_default_msg_id 0). Content in
// message_payload moves into short_message when it fits its 254 octets (the
// carriers see the most ordinary submit_sm; longer content stays in
// message_payload); qos_time_to_live becomes a relative validity_period;
// the parameters only data_sm defines (network, bearer and telematics
// types, set_dpf), which a strict SMSC refuses in a submit_sm, are left
// out; every other optional parameter is kept as sent.
func dataSMAsSubmit(body []byte) ([]byte, error) {
	asDeliver, err := dataSMAsDeliver(body) // the same layout as submit_sm
	if err != nil {
		return nil, err
	}
	m, err := ParseShortMessage(asDeliver)
	if err != nil {
		return nil, err
	}
	validity := ""
	msg := m.Message
	tlvs := make([]TLV, 0, len(m.TLVs))
	payloads := 0
	for _, t := range m.TLVs {
		switch t.Tag {
		case tagQosTimeToLive:
			if len(t.Value) != 4 {
				return nil, &BodyError{Status: statusInvParLen, Field: "qos_time_to_live length"}
			}
			if ttl := binary.BigEndian.Uint32(t.Value); ttl > 0 { // 0: none given
				validity = relativeTime(ttl)
			}
			continue
		case 0x0006, 0x0007, 0x0008, 0x000E, 0x000F, 0x0010, 0x0421:
			// Only data_sm defines these (§4.7.1; §4.4.1 has none):
			// dest_network_type, dest_bearer_type, dest_telematics_id,
			// source_network_type, source_bearer_type,
			// source_telematics_id, set_dpf.
			continue
		case tagMessagePayload:
			// One content: a second message_payload would leave the
			// submit with short_message and message_payload both
			// (§5.3.2.32), and which one is the message?
			if payloads++; payloads > 1 {
				return nil, &BodyError{Status: uint32(data.ESME_RINVOPTPARSTREAM), Field: "message_payload given twice"}
			}
			if len(msg) == 0 && len(t.Value) <= 254 {
				msg = t.Value
				continue
			}
		}
		tlvs = append(tlvs, t)
	}
	// Mandatory fields up to validity_period: service_type .. priority_flag
	// as rebuilt, then the schedule "" and the validity.
	vStart := m.smOffset - 5 // validity "" (1), registered_delivery, replace, data_coding, sm_default_msg_id
	out := make([]byte, 0, len(asDeliver)+len(validity)+len(msg))
	out = append(out, asDeliver[:vStart]...)
	out = append(cstring(out, validity), asDeliver[vStart+1:m.smOffset]...)
	out = append(out, byte(len(msg)))
	out = append(out, msg...)
	return appendTLVs(out, tlvs), nil
}

// relativeTime writes a number of seconds as an SMPP relative time
// (§7.1.1.2, "YYMMDDhhmmss000R"), at most 99 days.
func relativeTime(secs uint32) string {
	d := min(secs/86400, 99)
	secs -= min(secs, d*86400)
	if d == 99 {
		secs = 0
	}
	return fmt.Sprintf("0000%02d%02d%02d%02d000R", d, secs/3600, secs/60%60, secs%60)
}
