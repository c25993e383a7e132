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
		// The platform segmented the message itself: its header is kept as
		// is and the rest must fit beside it.
		used := len(platformUDH) + len(b.b)
		limit := 140
		if b.alpha == alphaGSM {
			used = (len(platformUDH)*8+6)/7 + len(b.b)
			limit = 160
		}
		if used > limit {
			return nil, &Error{Field: "short_message", Offset: len(platformUDH), Msg: fmt.Sprintf(
				"text after the platform's UDH needs %d of %d units of one SMS; a message with its own UDH cannot be split again", used, limit)}
		}
		return []Part{build(platformUDH, b.b)}, nil
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
