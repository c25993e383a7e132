package proxy

import (
	"github.com/linxGnu/gosmpp/data"
	"go.uber.org/zap"
)

// SMPP 3.3 carriers (carriers[].interface_version "3.3"). SMPP 3.3 (GSM
// 03.39, on which the Chinese operators' own SMPP specifications build)
// knows no optional parameters: a 3.3 SMSC refuses a submit_sm that carries
// any, or reads them as garbage. A platform that reaches such a carrier
// through spareline binds with 3.4 and may use them, so spareline rewrites
// what it re-originates to that carrier into the 3.3 form of the same
// message.

// legacySubmitBody is the submit_sm body an SMPP 3.3 SMSC takes for body (a
// submit_sm body, as the platform sent it or as dataSMAsSubmit wrote it):
// no optional parameters. sar_msg_ref_num, sar_total_segments and
// sar_segment_seqnum (§5.3.2.22-24) become the concatenation information
// element of 3GPP TS 23.040 §9.2.3.24.1 (8-bit reference when the reference
// fits one octet, §9.2.3.24.8's 16-bit one otherwise) at the head of
// short_message, with esm_class's UDHI bit (§5.2.12) set; content carried
// in message_payload moves into short_message. Every other optional
// parameter is left out (a 3.3 SMSC has no use for them). ok is false when
// the content does not fit short_message's 254 octets: such a message
// cannot be sent to a 3.3 SMSC as one submit_sm. A body without optional
// parameters is returned as is.
func legacySubmitBody(body []byte) (out []byte, ok bool) {
	var m ShortMessage
	if err := parseShortMessage(&m, body); err != nil {
		return body, true // relayed bodies were parsed before; a carrier refuses what it cannot read
	}
	if len(m.TLVs) == 0 {
		return body, true
	}
	msg := m.Message
	if len(msg) == 0 {
		if p, has := m.TLV(tagMessagePayload); has {
			msg = p
		}
	}
	msg, esm, ok := sarAsUDH(&m, msg)
	if !ok || len(msg) > 254 {
		return nil, false // no room for it: not as one 3.3 submit_sm
	}
	out = make([]byte, 0, m.smOffset+1+len(msg))
	out = append(out, body[:m.smOffset]...)
	out[m.esmOffset] = esm
	out = append(out, byte(len(msg)))
	out = append(out, msg...)
	return out, true
}

// sarAsUDH writes the concatenation that m's sar_msg_ref_num,
// sar_total_segments and sar_segment_seqnum say (§5.3.2.22-24) as the
// concatenation information element of 3GPP TS 23.040 §9.2.3.24.1 (8-bit
// reference when the reference fits one octet, §9.2.3.24.8's 16-bit one
// otherwise) at the head of msg (m's content), with esm_class's UDHI bit
// (§5.2.12) set: the form an SMPP 3.3 peer, which knows no optional
// parameters, reads. msg and m's esm_class are returned as they are when m
// has no sar_* (or values no element can carry) or its own header says it
// already; ok is false when m's own header leaves no room for the element.
func sarAsUDH(m *ShortMessage, msg []byte) (out []byte, esm byte, ok bool) {
	esm = m.ESMClass
	ref, total, seq, has := m.sar()
	if !has || total == 0 || seq == 0 || seq > total {
		// None, or values that make no concatenation element a handset
		// could join (a carrier's MO; a platform's submit with them was
		// refused, checkSAR): the content goes as it came.
		return msg, esm, true
	}
	ie := []byte{0x08, 4, ref[0], ref[1], total, seq}
	if ref[0] == 0 {
		ie = []byte{0x00, 3, ref[1], total, seq}
	}
	switch {
	case !m.UDHI():
		out = make([]byte, 0, 1+len(ie)+len(msg))
		out = append(append(append(out, byte(len(ie))), ie...), msg...)
		return out, esm | 0x40, true
	case udhHasConcat(msg):
		// The header already says it: sar_* only repeated it.
		return msg, esm, true
	}
	// A header of its own (application ports, say): the concatenation
	// element joins it, first.
	n := 0
	if len(msg) > 0 {
		n = int(msg[0])
	}
	if len(msg) == 0 || len(msg) <= n || n+len(ie) > 0xFF {
		return nil, esm, false
	}
	out = make([]byte, 0, len(msg)+len(ie))
	out = append(append(append(out, byte(n+len(ie))), ie...), msg[1:]...)
	return out, esm, true
}

// noteOptionalRefused logs, once per carrier, the hint to bind it as SMPP
// 3.3 when it refused a submit_sm that carried optional parameters with a
// status that says it could not read them (ESME_RINVCMDLEN: the octets do
// not add up to the submit_sm it knows; ESME_RINVOPTPARSTREAM,
// ESME_ROPTPARNOTALLWD): the sign of a 3.3 SMSC, whose bind_resp says
// nothing of its version.
func (c *Carrier) noteOptionalRefused(status uint32, body []byte) {
	switch status {
	case statusInvCmdLen, uint32(data.ESME_RINVOPTPARSTREAM), uint32(data.ESME_ROPTPARNOTALLWD):
	default:
		return
	}
	if c.legacy() || c.optRefusedLogged.Load() {
		return
	}
	var m ShortMessage
	if parseShortMessage(&m, body) != nil || len(m.TLVs) == 0 {
		return
	}
	if c.optRefusedLogged.CompareAndSwap(false, true) {
		c.log.Warn("carrier refused a submit_sm that carried optional parameters; if it speaks SMPP 3.3, set its interface_version: 3.3",
			zap.String("status", StatusString(status)))
	}
}

// udhHasConcat reports whether the user data header at the head of ud
// (its length octet first) has a concatenation element (TS 23.040
// §9.2.3.24.1, §9.2.3.24.8).
func udhHasConcat(ud []byte) bool {
	if len(ud) == 0 {
		return false
	}
	n := int(ud[0])
	if len(ud) < 1+n {
		return false
	}
	for h := ud[1 : 1+n]; len(h) >= 2; {
		iei, l := h[0], int(h[1])
		if iei == 0x00 || iei == 0x08 {
			return true
		}
		if len(h) < 2+l {
			return false
		}
		h = h[2+l:]
	}
	return false
}
