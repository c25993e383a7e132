package sms

import (
	"fmt"
	"hash/fnv"
	"time"
)

// decodeDeliver decodes SMS-DELIVER (23.040 §9.2.2.1): first octet, TP-OA,
// TP-PID, TP-DCS, TP-SCTS, TP-UDL, TP-UD. Octets after the user data are
// ignored.
func decodeDeliver(pdu []byte) (*Deliver, error) {
	r := &reader{b: pdu}
	if err := r.skipSMSC(); err != nil {
		return nil, err
	}
	foOff := r.off
	fo, err := r.octet("TP-MTI")
	if err != nil {
		return nil, err
	}
	// 23.040 §9.2.3.1: a reserved TP-MTI (3) received by an MS is processed
	// as SMS-DELIVER.
	if mti := fo & mtiMask; mti != mtiDeliver && mti != mtiReserved {
		return nil, r.errf("TP-MTI", foOff, "message type %d is not SMS-DELIVER (0)", mti)
	}
	d := &Deliver{MoreToSend: fo&foMMS == 0}
	if d.From, err = r.address("TP-OA"); err != nil {
		return nil, err
	}
	if d.PID, err = r.octet("TP-PID"); err != nil {
		return nil, err
	}
	if d.DCS, err = r.octet("TP-DCS"); err != nil {
		return nil, err
	}
	if d.SCTS, err = r.timestamp("TP-SCTS"); err != nil {
		return nil, err
	}
	ud, err := r.readUserData(d.DCS, fo&foUDHI != 0)
	if err != nil {
		return nil, err
	}
	d.UDH, d.Text, d.Data, d.Concat, d.units = ud.udh, ud.text, ud.data, ud.concat, ud.units
	return d, nil
}

// EncodeDeliver builds the SMS-DELIVER PDUs (each with a leading empty SMSC
// address field, 0x00) that a modem would hand over for an incoming message
// from 'from' (a number, '+' for international, or an alphanumeric sender
// of up to 11 GSM characters). The text goes as GSM 7-bit when it can,
// otherwise UCS2, and is concatenated (8-bit reference derived from the
// inputs) when it does not fit one SMS. TP-MMS says no more messages; TP-PID
// is 0. It is meant for the modem emulator and tests.
func EncodeDeliver(from string, text string, scts time.Time) ([][]byte, error) {
	head := make([]byte, 0, 32)
	head = append(head, 0x00, mtiDeliver|foMMS)
	head, err := appendOriginator(head, from)
	if err != nil {
		return nil, err
	}
	b := encodeBody([]rune(text), false, nil)
	head = append(head, 0x00, b.dcs())
	head = appendTimestamp(head, scts)

	build := func(hdr, seg []byte) []byte {
		pdu := make([]byte, 0, len(head)+1+140)
		pdu = append(pdu, head...)
		if len(hdr) > 0 {
			pdu[1] |= foUDHI
		}
		return appendUserData(pdu, b.alpha, hdr, seg)
	}
	if len(b.b) <= b.capacity(false, false) {
		return [][]byte{build(nil, b.b)}, nil
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%s\x00%s\x00%d", from, text, scts.UnixNano())
	ref := uint16(h.Sum32() & 0xFF)
	segs := b.split(b.capacity(true, false))
	if len(segs) > maxParts {
		return nil, encodeErr("TP-UD", "text needs %d parts, more than %d", len(segs), maxParts)
	}
	out := make([][]byte, len(segs))
	for i, seg := range segs {
		out[i] = build(concatIE(ref, false, len(segs), i+1), seg)
	}
	return out, nil
}

// decodeStatusReport decodes SMS-STATUS-REPORT (23.040 §9.2.2.3): first
// octet, TP-MR, TP-RA, TP-SCTS, TP-DT, TP-ST. The optional TP-PI and what
// it announces (TP-PID, TP-DCS, TP-UDL, TP-UD) are tolerated and ignored.
func decodeStatusReport(pdu []byte) (*StatusReport, error) {
	r := &reader{b: pdu}
	if err := r.skipSMSC(); err != nil {
		return nil, err
	}
	foOff := r.off
	fo, err := r.octet("TP-MTI")
	if err != nil {
		return nil, err
	}
	if fo&mtiMask != mtiStatusReport {
		return nil, r.errf("TP-MTI", foOff, "message type %d is not SMS-STATUS-REPORT (2)", fo&mtiMask)
	}
	s := &StatusReport{}
	mr, err := r.octet("TP-MR")
	if err != nil {
		return nil, err
	}
	s.MR = int(mr)
	if s.Recipient, err = r.address("TP-RA"); err != nil {
		return nil, err
	}
	if s.SCTS, err = r.timestamp("TP-SCTS"); err != nil {
		return nil, err
	}
	if s.Discharge, err = r.timestamp("TP-DT"); err != nil {
		return nil, err
	}
	if s.Status, err = r.octet("TP-ST"); err != nil {
		return nil, err
	}
	return s, nil
}

// EncodeStatusReport builds an SMS-STATUS-REPORT PDU (with a leading empty
// SMSC address field, 0x00) for the SMS-SUBMIT with TP-MR mr (0-255) sent to
// recipient, as a modem gives it in +CDS. status is TP-ST (23.040
// §9.2.3.15: 0x00 delivered, 0x20-0x3F still trying, 0x40-0x7F failed).
// TP-MMS says no more messages and no TP-PI follows.
func EncodeStatusReport(mr int, recipient string, scts, dt time.Time, status byte) ([]byte, error) {
	if mr < 0 || mr > 255 {
		return nil, encodeErr("TP-MR", "message reference %d is outside 0-255", mr)
	}
	pdu := make([]byte, 0, 32)
	pdu = append(pdu, 0x00, mtiStatusReport|foMMS, byte(mr))
	pdu, err := appendAddress(pdu, "TP-RA", recipient)
	if err != nil {
		return nil, err
	}
	pdu = appendTimestamp(pdu, scts)
	pdu = appendTimestamp(pdu, dt)
	return append(pdu, status), nil
}

// TPDULen returns the length of the TPDU in a PDU that starts with an SMSC
// address field: the <length> of AT+CMGS, +CMT and +CDS (27.005 §3), or -1
// when the SMSC field overruns pdu.
func TPDULen(pdu []byte) int {
	if len(pdu) == 0 || 1+int(pdu[0]) > len(pdu) {
		return -1
	}
	return len(pdu) - 1 - int(pdu[0])
}
