package sms

import (
	"fmt"
	"unicode/utf16"
)

// Information element identifiers for concatenation (23.040 §9.2.3.24.1 and
// §9.2.3.24.8).
const (
	ieConcat8  = 0x00 // 8-bit reference: ref, total, seq
	ieConcat16 = 0x08 // 16-bit reference: ref hi, ref lo, total, seq
)

// alphabet is the character set a TP-DCS selects.
type alphabet int

const (
	alphaGSM alphabet = iota
	alpha8Bit
	alphaUCS2
)

// dcsAlphabet reads the alphabet from a TP-DCS (23.038 §4). Reserved
// values are taken as the GSM 7-bit default alphabet, as §4 asks; a
// compressed message is returned as 8-bit data, since we do not decompress.
func dcsAlphabet(dcs byte) alphabet {
	switch dcs >> 4 {
	case 0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7: // general data coding
		if dcs&0x20 != 0 {
			return alpha8Bit // compressed (23.042)
		}
		switch dcs & 0x0C {
		case 0x04:
			return alpha8Bit
		case 0x08:
			return alphaUCS2
		}
		return alphaGSM
	case 0xC, 0xD: // message waiting indication, GSM 7-bit
		return alphaGSM
	case 0xE: // message waiting indication, UCS2
		return alphaUCS2
	case 0xF: // data coding / message class
		if dcs&0x04 != 0 {
			return alpha8Bit
		}
		return alphaGSM
	}
	return alphaGSM // 0x8-0xB reserved coding groups
}

// userData is a decoded TP-UD.
type userData struct {
	udh    []byte // without UDHL
	text   string
	data   []byte   // 8-bit only
	units  []uint16 // UCS2 only: the UTF-16 units as received
	concat *Concat
}

// readUserData decodes TP-UDL and TP-UD (23.040 §9.2.3.16, §9.2.3.24)
// starting at r.off.
func (r *reader) readUserData(dcs byte, udhi bool) (userData, error) {
	var ud userData
	udlOff := r.off
	udl, err := r.octet("TP-UDL")
	if err != nil {
		return ud, err
	}
	alpha := dcsAlphabet(dcs)
	octets := int(udl)
	if alpha == alphaGSM {
		if udl > 160 {
			return ud, r.errf("TP-UDL", udlOff, "%d septets exceed 160", udl)
		}
		octets = septetOctets(int(udl))
	} else if udl > 140 {
		return ud, r.errf("TP-UDL", udlOff, "%d octets exceed 140", udl)
	}
	udOff := r.off
	body, err := r.take(octets, "TP-UD")
	if err != nil {
		return ud, r.errf("TP-UDL", udlOff, "announces %d octets of user data, %d present", octets, len(r.b)-udOff)
	}
	hdrOctets := 0
	if udhi {
		if len(body) == 0 {
			return ud, r.errf("TP-UDHL", udOff, "TP-UDHI is set but the user data is empty")
		}
		hdrOctets = 1 + int(body[0])
		if hdrOctets > len(body) {
			return ud, r.errf("TP-UDHL", udOff, "header of %d octets exceeds the %d octets of user data", hdrOctets-1, len(body))
		}
		ud.udh = append([]byte(nil), body[1:hdrOctets]...)
		ud.concat, err = parseUDH(ud.udh, udOff+1)
		if err != nil {
			return ud, err
		}
	}
	switch alpha {
	case alphaGSM:
		skip := (hdrOctets*8 + 6) / 7 // header plus fill bits, in septets
		if skip > int(udl) {
			return ud, r.errf("TP-UDHL", udOff, "header of %d octets exceeds TP-UDL %d septets", hdrOctets-1, udl)
		}
		ud.text = gsmText(unpackSeptets(body, int(udl)-skip, skip*7))
	case alphaUCS2:
		rest := body[hdrOctets:]
		if len(rest)%2 != 0 {
			return ud, r.errf("TP-UD", udOff+hdrOctets, "UCS2 text has an odd number of octets (%d)", len(rest))
		}
		ud.units = ucs2Units(rest)
		ud.text = string(utf16.Decode(ud.units))
	default:
		ud.data = append([]byte(nil), body[hdrOctets:]...)
	}
	return ud, nil
}

// ucs2Units reads UTF-16BE units. Decoded (utf16.Decode), surrogate pairs
// become one character, a lone surrogate U+FFFD.
func ucs2Units(b []byte) []uint16 {
	units := make([]uint16, len(b)/2)
	for i := range units {
		units[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	return units
}

// parseUDH walks the information elements of a user data header (without
// UDHL) and returns the concatenation element if there is a valid one
// (23.040 §9.2.3.24). off is the header's octet offset in the PDU. An
// element with sequence number 0 or beyond the total is ignored, as
// §9.2.3.24.1 asks of receivers.
func parseUDH(h []byte, off int) (*Concat, error) {
	var c *Concat
	for i := 0; i < len(h); {
		if i+2 > len(h) {
			return nil, &Error{Field: "TP-UDH", Offset: off + i, Msg: "information element header cut short"}
		}
		iei, l := h[i], int(h[i+1])
		if i+2+l > len(h) {
			return nil, &Error{Field: "TP-UDH", Offset: off + i, Msg: fmt.Sprintf("information element 0x%02X of %d octets overruns the header", iei, l)}
		}
		d := h[i+2 : i+2+l]
		var cand *Concat
		switch {
		case iei == ieConcat8 && l == 3:
			cand = &Concat{Ref: uint16(d[0]), Total: int(d[1]), Seq: int(d[2])}
		case iei == ieConcat16 && l == 4:
			cand = &Concat{Ref: uint16(d[0])<<8 | uint16(d[1]), Total: int(d[2]), Seq: int(d[3])}
		}
		if cand != nil && cand.Total > 0 && cand.Seq > 0 && cand.Seq <= cand.Total {
			c = cand
		}
		i += 2 + l
	}
	return c, nil
}

// appendUserData appends TP-UDL and TP-UD: the header octets hdr (with
// UDHL; may be empty) then the body in the given alphabet. For GSM the body
// is unpacked septets and is packed after the header on the next septet
// boundary (fill bits, 23.040 §9.2.3.24).
func appendUserData(dst []byte, alpha alphabet, hdr, body []byte) []byte {
	if alpha != alphaGSM {
		dst = append(dst, byte(len(hdr)+len(body)))
		dst = append(dst, hdr...)
		return append(dst, body...)
	}
	skip := (len(hdr)*8 + 6) / 7
	udl := skip + len(body)
	dst = append(dst, byte(udl))
	start := len(dst)
	dst = append(dst, make([]byte, septetOctets(udl))...)
	copy(dst[start:], hdr)
	packSeptets(dst[start:], body, skip*7)
	return dst
}

// concatIE builds a UDH (with UDHL) holding one concatenation element: the
// 8-bit reference form when ref fits in 8 bits, else the 16-bit form.
func concatIE(ref uint16, wide bool, total, seq int) []byte {
	if wide {
		return []byte{6, ieConcat16, 4, byte(ref >> 8), byte(ref), byte(total), byte(seq)}
	}
	return []byte{5, ieConcat8, 3, byte(ref), byte(total), byte(seq)}
}
