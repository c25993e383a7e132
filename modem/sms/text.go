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
	dcGBK         = 0x0F // vendor use in China: GBK (superset of GB2312)
)

// payloadText turns short_message octets into Unicode text for the given
// SMPP data_coding; binary reports 8-bit data (2 and 4), which has no text.
//
//   - 0 (SMSC default), 1 (IA5) and 3 (Latin-1): each octet is the
//     ISO-8859-1 character of that code (ASCII is its lower half). This is
//     what most platforms mean by 0; GSM unpacked septets are NOT accepted
//     (they would only differ for '@', '$', '_' and a few more).
//   - 8: UCS2 big-endian; surrogate pairs are kept (they become one
//     character here and a pair again when sent as UCS2).
//   - 15: GBK, transcoded to Unicode.
func payloadText(dc byte, p []byte) (text []rune, binary bool, err error) {
	switch dc {
	case dcSMSCDefault, dcIA5, dcLatin1:
		text = make([]rune, len(p))
		for i, c := range p {
			text[i] = rune(c)
		}
		return text, false, nil
	case dcUCS2:
		if len(p)%2 != 0 {
			return nil, false, &Error{Field: "short_message", Offset: len(p) - 1, Msg: fmt.Sprintf("UCS2 text has an odd number of octets (%d)", len(p))}
		}
		units := make([]uint16, len(p)/2)
		for i := range units {
			units[i] = uint16(p[2*i])<<8 | uint16(p[2*i+1])
		}
		return utf16.Decode(units), false, nil
	case dcGBK:
		u, err := simplifiedchinese.GBK.NewDecoder().Bytes(p)
		if err != nil {
			return nil, false, &Error{Field: "short_message", Offset: -1, Msg: "not valid GBK: " + err.Error()}
		}
		return []rune(string(u)), false, nil
	case dcBinary2, dcBinary4:
		return nil, true, nil
	}
	return nil, false, &Error{Field: "data_coding", Offset: -1, Msg: fmt.Sprintf("unsupported SMPP data_coding 0x%02X (accepted: 0, 1, 2, 3, 4, 8, 15)", dc)}
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
// message class).
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
