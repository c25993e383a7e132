package sms

import (
	"fmt"
	"time"
)

// First-octet bits (23.040 §9.2.3.1 - §9.2.3.26).
const (
	mtiMask         = 0x03
	mtiDeliver      = 0x00
	mtiSubmit       = 0x01
	mtiStatusReport = 0x02
	mtiReserved     = 0x03
	foMMS           = 0x04 // DELIVER / STATUS-REPORT: TP-More-Messages-to-Send (1 = no more)
	foRD            = 0x04 // SUBMIT: TP-Reject-Duplicates
	foVPFMask       = 0x18 // SUBMIT: TP-Validity-Period-Format
	foVPFEnhanced   = 0x08
	foVPFRelative   = 0x10
	foVPFAbsolute   = 0x18
	foSRR           = 0x20 // SUBMIT: TP-Status-Report-Request
	foUDHI          = 0x40 // TP-User-Data-Header-Indicator
)

// maxParts is the most parts a concatenation element can number
// (23.040 §9.2.3.24.1).
const maxParts = 255

func encodeErr(field, format string, a ...any) *Error {
	return &Error{Field: field, Offset: -1, Msg: fmt.Sprintf(format, a...)}
}

func encodeSubmit(s Submit, concatRef uint16) ([]Part, error) {
	// TP-MTI SUBMIT, TP-RD 0, TP-VPF, TP-SRR (23.040 §9.2.2.2).
	fo := byte(mtiSubmit)
	if s.Validity > 0 {
		fo |= foVPFRelative
	}
	if s.StatusReport {
		fo |= foSRR
	}
	// Everything from TP-MR to TP-DCS is the same in every part; TP-MR is 0
	// and the ME assigns the real one (23.040 §9.2.3.6).
	head := make([]byte, 0, 24)
	head = append(head, 0x00, fo, 0x00) // SMSC field: use the SIM's SMSC
	head, err := appendAddress(head, "TP-DA", s.Dest)
	if err != nil {
		return nil, err
	}
	dcsAt := len(head) + 1
	head = append(head, 0x00, 0x00) // TP-PID 0 (plain SME-to-SME), TP-DCS set below
	if s.Validity > 0 {
		head = append(head, encodeRelativeVP(s.Validity))
	}

	payload := s.Payload
	var platformUDH []byte
	if s.UDHI {
		if len(payload) == 0 || 1+int(payload[0]) > len(payload) {
			udhl := 0
			if len(payload) > 0 {
				udhl = int(payload[0])
			}
			return nil, &Error{Field: "UDH", Offset: 0, Msg: fmt.Sprintf("UDHL %d does not fit in a payload of %d octets", udhl, len(payload))}
		}
		platformUDH = payload[:1+int(payload[0])]
		payload = payload[len(platformUDH):]
	}
	text, binary, err := payloadText(s.DataCoding, payload)
	if err != nil {
		if e, ok := err.(*Error); ok && e.Offset >= 0 {
			e.Offset += len(platformUDH)
		}
		return nil, err
	}
	b := encodeBody(text, binary, payload)
	if head[dcsAt], err = submitDCS(s.DataCoding, b.alpha); err != nil {
		return nil, err
	}

	build := func(hdr, seg []byte) Part {
		pdu := make([]byte, 0, len(head)+1+140)
		pdu = append(pdu, head...)
		if len(hdr) > 0 {
			pdu[1] |= foUDHI
		}
		pdu = appendUserData(pdu, b.alpha, hdr, seg)
		return Part{PDU: pdu, TPDULen: len(pdu) - 1}
	}

	if s.UDHI {
		used := len(platformUDH) + len(b.b)
		limit := 140
		if b.alpha == alphaGSM {
			used = (len(platformUDH)*8+6)/7 + len(b.b)
			limit = 160
		}
		if used <= limit {
			// The header is kept as is and the rest fits beside it.
			return []Part{build(platformUDH, b.b)}, nil
		}
		ies, why := repeatableIEs(platformUDH[1:])
		if why != "" {
			return nil, &Error{Field: "short_message", Offset: len(platformUDH), Msg: fmt.Sprintf(
				"text after the platform's UDH needs %d of %d units of one SMS; %s", used, limit, why)}
		}
		return splitWithIEs(b, build, ies, concatRef)
	}

	if len(b.b) <= b.capacity(false, false) {
		return []Part{build(nil, b.b)}, nil
	}
	wide := concatRef > 0xFF
	segs := b.split(b.capacity(true, wide))
	if len(segs) > maxParts {
		return nil, &Error{Field: "short_message", Offset: -1, Msg: fmt.Sprintf("text needs %d parts, more than %d", len(segs), maxParts)}
	}
	parts := make([]Part, len(segs))
	for i, seg := range segs {
		parts[i] = build(concatIE(concatRef, wide, len(segs), i+1), seg)
	}
	return parts, nil
}

func decodeSubmit(pdu []byte) (*SubmitPDU, error) {
	r := &reader{b: pdu}
	if err := r.skipSMSC(); err != nil {
		return nil, err
	}
	foOff := r.off
	fo, err := r.octet("TP-MTI")
	if err != nil {
		return nil, err
	}
	if fo&mtiMask != mtiSubmit {
		return nil, r.errf("TP-MTI", foOff, "message type %d is not SMS-SUBMIT (1)", fo&mtiMask)
	}
	s := &SubmitPDU{StatusReport: fo&foSRR != 0}
	mr, err := r.octet("TP-MR")
	if err != nil {
		return nil, err
	}
	s.MR = int(mr)
	if s.Dest, err = r.address("TP-DA"); err != nil {
		return nil, err
	}
	if s.PID, err = r.octet("TP-PID"); err != nil {
		return nil, err
	}
	if s.DCS, err = r.octet("TP-DCS"); err != nil {
		return nil, err
	}
	if err := r.validity(fo&foVPFMask, s); err != nil {
		return nil, err
	}
	ud, err := r.readUserData(s.DCS, fo&foUDHI != 0)
	if err != nil {
		return nil, err
	}
	s.UDH, s.Text, s.Data, s.Concat = ud.udh, ud.text, ud.data, ud.concat
	return s, nil
}

// validity reads TP-VP in the format TP-VPF gives (23.040 §9.2.3.12):
// relative (1 octet), absolute (7 octets, a time stamp) or enhanced
// (7 octets, §9.2.3.12.3).
func (r *reader) validity(vpf byte, s *SubmitPDU) error {
	switch vpf {
	case foVPFRelative:
		v, err := r.octet("TP-VP")
		if err != nil {
			return err
		}
		s.Validity = relativeVP(v)
	case foVPFAbsolute:
		t, err := r.timestamp("TP-VP")
		if err != nil {
			return err
		}
		s.ValidUntil = t
	case foVPFEnhanced:
		off := r.off
		v, err := r.take(7, "TP-VP")
		if err != nil {
			return err
		}
		switch v[0] & 0x07 {
		case 0: // no validity period specified
		case 1: // relative, as §9.2.3.12.1
			s.Validity = relativeVP(v[1])
		case 2: // relative, integer seconds
			s.Validity = time.Duration(v[1]) * time.Second
		case 3: // relative, HH MM SS in swapped semi-octets
			h, ok1 := bcd(v[1])
			m, ok2 := bcd(v[2])
			sec, ok3 := bcd(v[3])
			if !ok1 || !ok2 || !ok3 {
				return r.errf("TP-VP", off+1, "enhanced relative time is not decimal semi-octets")
			}
			s.Validity = time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second
		default:
			return r.errf("TP-VP", off, "reserved enhanced validity format %d", v[0]&0x07)
		}
	}
	return nil
}

// repeatableIEs checks a platform's user data header (without UDHL) for a
// message too long for one SMS, and returns its information elements when
// they may go in every part of a concatenated message beside a
// concatenation element we add; otherwise why not (for the error).
//
// TS 23.040 §9.2.3.24 and its subclauses:
//
//   - A concatenation element (0x00, 0x08, §9.2.3.24.1, §9.2.3.24.8): the
//     platform segmented the message itself; it is not segmented again.
//   - Special SMS Message Indication (0x01, §9.2.3.24.2) and application
//     port addressing (0x04, 0x05, §9.2.3.24.3-4): "shall be contained in
//     the first segment of the concatenated SM" and "should also be
//     contained in every subsequent segment", else a receiver may discard
//     parts that arrive out of order; WAP WDP over SMS needs the port in
//     every segment. Repeated in every part.
//   - SMSC Control Parameters (0x06, §9.2.3.24.6: the status reports asked
//     for each SM), UDH Source Indicator (0x07, §9.2.3.24.7: where the
//     elements after it come from) and the national language single and
//     locking shifts (0x24, 0x25, §9.2.3.24.15-16: the tables each part's
//     text is read with) are about each short message: repeated in every
//     part.
//   - Anything else (the EMS elements 0x0A-0x1F, whose positions count
//     within one segment's text, the hyperlink 0x21 likewise, WCMP 0x09,
//     compression control, RFC 822 header 0x20, reply address 0x22,
//     enhanced voice mail 0x23, reserved and unknown elements) cannot be
//     repeated or placed in a part correctly without knowing the text they
//     refer to: the message is refused, as before.
//
// A header that does not parse into elements is refused too.
func repeatableIEs(h []byte) ([]byte, string) {
	for i := 0; i < len(h); {
		if i+2 > len(h) || i+2+int(h[i+1]) > len(h) {
			return nil, "its UDH does not parse into information elements, so it cannot be repeated in parts"
		}
		switch iei := h[i]; iei {
		case ieConcat8, ieConcat16:
			return nil, "a message with its own concatenation header cannot be split again"
		case 0x01, 0x04, 0x05, 0x06, 0x07, 0x24, 0x25:
		default:
			return nil, fmt.Sprintf("its UDH has information element 0x%02X, which cannot be repeated in each part (TS 23.040 §9.2.3.24)", iei)
		}
		i += 2 + int(h[i+1])
	}
	return h, ""
}

// splitWithIEs cuts b into parts whose header is ies (the platform's
// elements, repeated in every part) followed by a concatenation element
// (8-bit reference, or 16-bit when concatRef > 0xFF).
func splitWithIEs(b body, build func(hdr, seg []byte) Part, ies []byte, concatRef uint16) ([]Part, error) {
	wide := concatRef > 0xFF
	hdrLen := len(concatIE(concatRef, wide, 1, 1)) + len(ies) // with UDHL
	max := 140 - hdrLen
	switch b.alpha {
	case alphaGSM:
		max = (140 - hdrLen) * 8 / 7 // header and fill bits in whole septets
	case alphaUCS2:
		max &^= 1 // an odd header leaves 139 octets: whole characters only
	}
	if max < 8 { // room for a few characters, and always for an escape or a surrogate pair
		return nil, &Error{Field: "UDH", Offset: 0, Msg: fmt.Sprintf(
			"the platform's UDH of %d octets leaves no room for text beside a concatenation element", len(ies)+1)}
	}
	segs := b.split(max)
	if len(segs) > maxParts {
		return nil, &Error{Field: "short_message", Offset: -1, Msg: fmt.Sprintf("text needs %d parts, more than %d", len(segs), maxParts)}
	}
	parts := make([]Part, len(segs))
	for i, seg := range segs {
		c := concatIE(concatRef, wide, len(segs), i+1)
		hdr := make([]byte, 0, hdrLen)
		hdr = append(hdr, byte(hdrLen-1))
		hdr = append(hdr, ies...)
		hdr = append(hdr, c[1:]...)
		parts[i] = build(hdr, seg)
	}
	return parts, nil
}
