package sms

// GSM 7-bit default alphabet and its extension table (3GPP TS 23.038 §6.2.1
// and §6.2.1.1), and septet packing (23.038 §6.1.2.1.1).

const esc = 0x1B // escape to the extension table (23.038 §6.2.1.1)

// gsmDefault maps a septet to its character (23.038 §6.2.1). 0x1B is the
// escape and never decodes to a character by itself.
var gsmDefault = [128]rune{
	'@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å',
	'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', 0x1B, 'Æ', 'æ', 'ß', 'É',
	' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/',
	'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?',
	'¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
	'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§',
	'¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
	'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à',
}

// gsmExtension is the extension table reached with ESC (23.038 §6.2.1.1).
var gsmExtension = map[byte]rune{
	0x0A: '\f', 0x14: '^', 0x28: '{', 0x29: '}', 0x2F: '\\',
	0x3C: '[', 0x3D: '~', 0x3E: ']', 0x40: '|', 0x65: '€',
}

var (
	gsmFromRune    = map[rune]byte{}
	gsmExtFromRune = map[rune]byte{}
)

func init() {
	for i, r := range gsmDefault {
		if i != esc {
			gsmFromRune[r] = byte(i)
		}
	}
	for c, r := range gsmExtension {
		gsmExtFromRune[r] = c
	}
}

// gsmSeptets appends the unpacked septets of text to dst and reports whether
// every character is in the default alphabet or the extension table.
func gsmSeptets(dst []byte, text []rune) ([]byte, bool) {
	for _, r := range text {
		if c, ok := gsmFromRune[r]; ok {
			dst = append(dst, c)
			continue
		}
		if c, ok := gsmExtFromRune[r]; ok {
			dst = append(dst, esc, c)
			continue
		}
		return dst, false
	}
	return dst, true
}

// gsmText decodes unpacked septets. An ESC followed by a code the extension
// table does not define shows the default-table character, as 23.038
// §6.2.1.1 asks of receivers; ESC ESC and a trailing ESC show a space.
func gsmText(septets []byte) string {
	out := make([]rune, 0, len(septets))
	for i := 0; i < len(septets); i++ {
		c := septets[i] & 0x7F
		if c != esc {
			out = append(out, gsmDefault[c])
			continue
		}
		if i+1 >= len(septets) {
			out = append(out, ' ')
			break
		}
		i++
		n := septets[i] & 0x7F
		if r, ok := gsmExtension[n]; ok {
			out = append(out, r)
		} else if n == esc {
			out = append(out, ' ')
		} else {
			out = append(out, gsmDefault[n])
		}
	}
	return string(out)
}

// packSeptets writes septets into dst, least significant bit first, starting
// at bit offset bitOff (23.038 §6.1.2.1.1). dst must be large enough:
// (bitOff+7*len(septets)+7)/8 octets.
func packSeptets(dst []byte, septets []byte, bitOff int) {
	for _, s := range septets {
		s &= 0x7F
		i, sh := bitOff/8, uint(bitOff%8)
		dst[i] |= s << sh
		if sh > 1 {
			dst[i+1] |= s >> (8 - sh)
		}
		bitOff += 7
	}
}

// unpackSeptets reads n septets from src starting at bit offset bitOff. The
// caller has checked that src holds them.
func unpackSeptets(src []byte, n, bitOff int) []byte {
	out := make([]byte, n)
	for k := range out {
		i, sh := bitOff/8, uint(bitOff%8)
		v := uint16(src[i]) >> sh
		if sh > 1 && i+1 < len(src) {
			v |= uint16(src[i+1]) << (8 - sh)
		}
		out[k] = byte(v) & 0x7F
		bitOff += 7
	}
	return out
}

// septetOctets is how many octets n septets occupy when packed.
func septetOctets(n int) int { return (n*7 + 7) / 8 }
