package sms

import (
	"fmt"
	"unicode/utf16"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// SMPP data_coding values we accept (SMPP 3.4 §5.2.19).
const (
	dcSMSCDefault = 0x00
	dcIA5         = 0x01
	dcBinary2     = 0x02
	dcLatin1      = 0x03
	dcBinary4     = 0x04
	dcUCS2        = 0x08
	dcUCS2GSM     = 0x0B // reserved in SMPP; TS 23.038 general group, UCS2
	dcGBK         = 0x0F // vendor use in China: GBK (superset of GB2312)
)

// payloadText turns short_message octets into Unicode text for the given
// SMPP data_coding; binary reports 8-bit data, which has no text.
//
// 0x00-0x0F are read as SMPP 3.4 §5.2.19 defines them:
//
//   - 0 (SMSC default), 1 (IA5) and 3 (Latin-1): each octet is the
//     ISO-8859-1 character of that code (ASCII is its lower half). This is
//     what most platforms mean by 0; GSM unpacked septets are NOT accepted
//     (they would only differ for '@', '$', '_' and a few more).
//   - 8: UCS2 big-endian; surrogate pairs are kept (they become one
//     character here and a pair again when sent as UCS2).
//   - 15: GBK, transcoded to Unicode.
//   - 2 and 4: 8-bit data.
//   - 0x0B, reserved in SMPP, is the TS 23.038 general-group UCS2 value
//     platforms send: read as UCS2.
//
// 0x10-0xFF are read as a TS 23.038 §4 data coding scheme (SMPP 3.4 defers
// 0xC0-0xFF to GSM 03.38, and platforms send the other groups too, e.g.
// 0x18 for a class 0 UCS2 "flash" message): the alphabet comes from the DCS
// bits (dcsAlphabet), and a GSM 7-bit alphabet means text read like
// data_coding 0. See dcsUsable for the values refused.
func payloadText(dc byte, p []byte) (text []rune, binary bool, err error) {
	alpha := alphaGSM
	switch {
	case dc == dcGBK:
		u, err := simplifiedchinese.GBK.NewDecoder().Bytes(p)
		if err != nil {
			return nil, false, &Error{Field: "short_message", Offset: -1, Msg: "not valid GBK: " + err.Error()}
		}
		return []rune(string(u)), false, nil
	case dc == dcSMSCDefault || dc == dcIA5 || dc == dcLatin1:
	case dc == dcBinary2 || dc == dcBinary4:
		alpha = alpha8Bit
	case dc == dcUCS2 || dc == dcUCS2GSM:
		alpha = alphaUCS2
	case dc >= 0x10 && dcsUsable(dc):
		alpha = dcsAlphabet(dc)
	default:
		return nil, false, &Error{Field: "data_coding", Offset: -1, Msg: fmt.Sprintf(
			"unsupported data_coding 0x%02X (accepted: SMPP 0x00-0x04, 0x08, 0x0B, 0x0F, and TS 23.038 "+
				"0x10-0x7F uncompressed with a defined alphabet, 0xC0-0xFF)", dc)}
	}
	switch alpha {
	case alpha8Bit:
		return nil, true, nil
	case alphaUCS2:
		if len(p)%2 != 0 {
			return nil, false, &Error{Field: "short_message", Offset: len(p) - 1, Msg: fmt.Sprintf("UCS2 text has an odd number of octets (%d)", len(p))}
		}
		units := make([]uint16, len(p)/2)
		for i := range units {
			units[i] = uint16(p[2*i])<<8 | uint16(p[2*i+1])
		}
		return utf16.Decode(units), false, nil
	}
	text = make([]rune, len(p))
	for i, c := range p {
		text[i] = rune(c)
	}
	return text, false, nil
}

// dcsUsable reports whether a data_coding of 0x10 or above, read as a TS
// 23.038 §4 DCS, can be sent by the modem path. Refused: the reserved coding
// groups 0x80-0xBF; compressed text (bit 5 of the general and automatic
// deletion groups, TS 23.042), which we cannot produce; and the reserved
// alphabet (bits 3-2 = 11) of those groups. Group 0xF0-0xFF's bit 3 is
// reserved too but names no alphabet: it is cleared on the way out.
func dcsUsable(dc byte) bool {
	switch {
	case dc < 0x80: // general data coding 00xx, automatic deletion 01xx
		return dc&0x20 == 0 && dc&0x0C != 0x0C
	case dc < 0xC0: // reserved coding groups 1000-1011
		return false
	}
	return true // message waiting 1100-1110, data coding/message class 1111
}

// submitDCS is the TP-DCS of an SMS-SUBMIT carrying text in alphabet a,
// for the data_coding dc the platform gave: the platform's coding group,
// message class and indication are kept (a class 0 "flash" message stays
// flash), only the alphabet may change, since the text goes in the most
// compact alphabet that holds it (TS 23.038 §4):
//
//   - 0x00-0x0F (SMPP values): general group, no class: 0x00, 0x04, 0x08.
//   - 0x10-0x7F (general / automatic deletion groups): the group bit 6 and,
//     when bit 4 is set, the class bits 1-0 are kept; bits 3-2 name a.
//   - 0xC0-0xDF (message waiting, GSM 7-bit): kept for GSM text; text that
//     needs UCS2 goes in 0xE0-0xEF (store message, UCS2) with the same
//     indication, and is an *Error for the "discard message" group
//     0xC0-0xCF, which has no UCS2 form.
//   - 0xE0-0xEF (message waiting, UCS2): kept for UCS2; GSM text goes in
//     0xD0-0xDF (store message, GSM 7-bit) with the same indication.
//   - 0xF0-0xFF (data coding / message class): 0xF0|class for GSM,
//     0xF4|class for 8-bit (bit 3, reserved, cleared); UCS2 has no form in
//     this group and goes as 0x18|class, the general group with the same
//     class.
func submitDCS(dc byte, a alphabet) (byte, error) {
	bits := byte(0x00)
	switch a {
	case alpha8Bit:
		bits = 0x04
	case alphaUCS2:
		bits = 0x08
	}
	switch {
	case dc < 0x10:
		return bits, nil
	case dc < 0x80:
		out := dc&0x40 | bits
		if dc&0x10 != 0 {
			out |= 0x10 | dc&0x03
		}
		return out, nil
	case dc >= 0xF0:
		if a == alphaUCS2 {
			return 0x18 | dc&0x03, nil
		}
		return 0xF0 | bits | dc&0x03, nil
	case dc >= 0xE0:
		if a == alphaUCS2 {
			return dc, nil
		}
		return 0xD0 | dc&0x0F, nil
	case dc >= 0xD0:
		if a == alphaUCS2 {
			return 0xE0 | dc&0x0F, nil
		}
		return dc, nil
	case dc >= 0xC0 && a == alphaGSM:
		return dc, nil
	}
	return 0, &Error{Field: "data_coding", Offset: -1, Msg: fmt.Sprintf(
		"data_coding 0x%02X (message waiting, discard message: GSM 7-bit only) cannot carry text outside the GSM 7-bit alphabet", dc)}
}

// body is message content ready to be cut into parts: unpacked septets for
// GSM, UTF-16BE octets for UCS2, raw octets for 8-bit.
type body struct {
	alpha alphabet
	b     []byte
}

// encodeBody chooses the alphabet (23.038 §4): GSM 7-bit when every
// character is in the default alphabet or its extension table, otherwise
// UCS2; binary data stays 8-bit.
func encodeBody(text []rune, binary bool, raw []byte) body {
	if binary {
		return body{alpha8Bit, raw}
	}
	if septets, ok := gsmSeptets(make([]byte, 0, len(text)+8), text); ok {
		return body{alphaGSM, septets}
	}
	units := utf16.Encode(text)
	b := make([]byte, 2*len(units))
	for i, u := range units {
		b[2*i], b[2*i+1] = byte(u>>8), byte(u)
	}
	return body{alphaUCS2, b}
}

// dcs is the TP-DCS for the alphabet (23.038 §4, general data coding, no
// message class); see submitDCS for an SMS-SUBMIT.
func (b body) dcs() byte {
	switch b.alpha {
	case alpha8Bit:
		return 0x04
	case alphaUCS2:
		return 0x08
	}
	return 0x00
}

// Capacities in body octets (septets for GSM) of one TP-UD of 140 octets
// (23.040 §9.2.3.16): alone, with the 8-bit concatenation element (UDH 6
// octets), with the 16-bit one (UDH 7 octets).
func (b body) capacity(parts bool, wide bool) int {
	switch {
	case !parts && b.alpha == alphaGSM:
		return 160
	case !parts:
		return 140
	case b.alpha == alphaGSM && wide:
		return 152 // 7 octets = 8 septets of header
	case b.alpha == alphaGSM:
		return 153 // 6 octets + 1 fill bit = 7 septets of header
	case b.alpha == alphaUCS2 && wide:
		return 132 // 66 characters
	case b.alpha == alphaUCS2:
		return 134 // 67 characters
	case wide:
		return 133
	}
	return 134
}

// canSplitAt reports whether a part may end just before b.b[i]: never
// between ESC and its extension character, nor inside a surrogate pair.
func (b body) canSplitAt(i int) bool {
	switch b.alpha {
	case alphaGSM:
		return b.b[i-1] != esc
	case alphaUCS2:
		return b.b[i-2] < 0xD8 || b.b[i-2] > 0xDB
	}
	return true
}

// split cuts the body into segments of at most max units.
func (b body) split(max int) [][]byte {
	var out [][]byte
	for start := 0; start < len(b.b); {
		end := start + max
		if end >= len(b.b) {
			end = len(b.b)
		} else {
			if b.alpha == alphaUCS2 && end%2 != start%2 {
				end--
			}
			if !b.canSplitAt(end) {
				if b.alpha == alphaUCS2 {
					end -= 2
				} else {
					end--
				}
			}
		}
		out = append(out, b.b[start:end])
		start = end
	}
	return out
}
