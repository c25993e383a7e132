package sms

import (
	"fmt"
	"strings"
	"time"
)

// reader walks a PDU and names the field and octet offset of every failure.
type reader struct {
	b   []byte
	off int
}

func (r *reader) errf(field string, off int, format string, a ...any) *Error {
	return &Error{Field: field, Offset: off, Msg: fmt.Sprintf(format, a...)}
}

func (r *reader) octet(field string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, r.errf(field, r.off, "PDU ends before this field (%d octets)", len(r.b))
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *reader) take(n int, field string) ([]byte, error) {
	if n < 0 || len(r.b)-r.off < n {
		return nil, r.errf(field, r.off, "needs %d octets, %d left", n, len(r.b)-r.off)
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s, nil
}

// skipSMSC skips the leading SMSC address field that AT+CMGR, +CMT and +CDS
// put before the TPDU in PDU mode (3GPP TS 27.005 §3.1 <pdu>; its length
// octet counts the octets that follow it, 24.011 §8.2.5.1).
func (r *reader) skipSMSC() error {
	n, err := r.octet("SMSC")
	if err != nil {
		return err
	}
	if n > 11 {
		return r.errf("SMSC", r.off-1, "address length %d octets exceeds 11", n)
	}
	_, err = r.take(int(n), "SMSC")
	return err
}

// Type-of-address values (23.040 §9.1.2.5).
const (
	toaUnknown       = 0x81 // TON unknown, ISDN/telephone numbering plan
	toaInternational = 0x91 // TON international, ISDN/telephone numbering plan
	toaAlphanumeric  = 0xD0 // TON alphanumeric (GSM 7-bit packed), NPI unknown
	tonMask          = 0x70
	tonInternational = 0x10
	tonAlphanumeric  = 0x50
)

const semiOctetDigits = "0123456789*#abc"

// address decodes an address field (23.040 §9.1.2.5): the length in useful
// semi-octets, the type of address, then BCD digits or, for TON
// alphanumeric, GSM 7-bit packed characters.
func (r *reader) address(field string) (string, error) {
	start := r.off
	n, err := r.octet(field)
	if err != nil {
		return "", err
	}
	toa, err := r.octet(field)
	if err != nil {
		return "", err
	}
	if n > 20 {
		return "", r.errf(field, start, "address length %d semi-octets exceeds 20", n)
	}
	v, err := r.take((int(n)+1)/2, field)
	if err != nil {
		return "", err
	}
	if toa&tonMask == tonAlphanumeric {
		return gsmText(unpackSeptets(v, int(n)*4/7, 0)), nil
	}
	var sb strings.Builder
	if toa&tonMask == tonInternational {
		sb.WriteByte('+')
	}
	for i := 0; i < int(n); i++ {
		d := v[i/2] & 0x0F
		if i%2 == 1 {
			d = v[i/2] >> 4
		}
		if d == 0x0F {
			return "", r.errf(field, start+2+i/2, "filler semi-octet inside the number")
		}
		sb.WriteByte(semiOctetDigits[d])
	}
	return sb.String(), nil
}

// appendAddress encodes a phone number as an address field: a leading '+'
// gives TON international (0x91), otherwise unknown/national (0x81)
// (23.040 §9.1.2.5). Digits, '*' and '#' are allowed.
func appendAddress(dst []byte, field, number string) ([]byte, error) {
	toa := byte(toaUnknown)
	digits := number
	if strings.HasPrefix(number, "+") {
		toa = toaInternational
		digits = number[1:]
	}
	if digits == "" || len(digits) > 20 {
		return dst, &Error{Field: field, Offset: -1, Msg: fmt.Sprintf("number %q must have 1 to 20 digits", number)}
	}
	dst = append(dst, byte(len(digits)), toa)
	var cur byte
	for i := 0; i < len(digits); i++ {
		d := strings.IndexByte("0123456789*#", digits[i])
		if d < 0 {
			return dst, &Error{Field: field, Offset: -1, Msg: fmt.Sprintf("number %q has a character other than digits, '*', '#'", number)}
		}
		if i%2 == 0 {
			cur = byte(d)
		} else {
			dst = append(dst, cur|byte(d)<<4)
		}
	}
	if len(digits)%2 == 1 {
		dst = append(dst, cur|0xF0)
	}
	return dst, nil
}

// appendOriginator encodes an originating address: a number as in
// appendAddress, or, when it holds anything else, an alphanumeric address
// (TON 101, GSM 7-bit packed, at most 11 characters; 23.040 §9.1.2.5).
func appendOriginator(dst []byte, from string) ([]byte, error) {
	numeric := from != ""
	for i := 0; i < len(from); i++ {
		c := from[i]
		if !(c >= '0' && c <= '9' || c == '*' || c == '#' || c == '+' && i == 0) {
			numeric = false
		}
	}
	if numeric {
		return appendAddress(dst, "TP-OA", from)
	}
	septets, ok := gsmSeptets(nil, []rune(from))
	if !ok || len(septets) == 0 || len(septets) > 11 {
		return dst, &Error{Field: "TP-OA", Offset: -1, Msg: fmt.Sprintf("alphanumeric address %q must be 1 to 11 GSM 7-bit characters", from)}
	}
	octets := septetOctets(len(septets))
	semi := len(septets) * 7 / 4
	if len(septets)*7%4 != 0 {
		semi++
	}
	dst = append(dst, byte(semi), toaAlphanumeric)
	start := len(dst)
	dst = append(dst, make([]byte, octets)...)
	packSeptets(dst[start:], septets, 0)
	return dst, nil
}

// bcd reads one swapped semi-octet pair (23.040 §9.1.2.3).
func bcd(c byte) (int, bool) {
	lo, hi := int(c&0x0F), int(c>>4)
	return lo*10 + hi, lo <= 9 && hi <= 9
}

// timestamp decodes a service centre time stamp (23.040 §9.2.3.11): year,
// month, day, hour, minute, second as swapped semi-octets, then the time
// zone in quarters of an hour with the sign in bit 3. Two-digit years from
// 90 are 19xx, the others 20xx.
func (r *reader) timestamp(field string) (time.Time, error) {
	start := r.off
	v, err := r.take(7, field)
	if err != nil {
		return time.Time{}, err
	}
	var f [6]int
	for i := range f {
		d, ok := bcd(v[i])
		if !ok {
			return time.Time{}, r.errf(field, start+i, "octet 0x%02X is not two decimal semi-octets", v[i])
		}
		f[i] = d
	}
	if f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 || f[5] > 59 {
		return time.Time{}, r.errf(field, start, "not a valid date and time %02d-%02d-%02d %02d:%02d:%02d",
			f[0], f[1], f[2], f[3], f[4], f[5])
	}
	tz := v[6]
	q, ok := bcd(tz & 0xF7)
	if !ok {
		return time.Time{}, r.errf(field, start+6, "time zone octet 0x%02X is not decimal", tz)
	}
	off := q * 15 * 60
	if tz&0x08 != 0 {
		off = -off
	}
	year := 2000 + f[0]
	if f[0] >= 90 {
		year = 1900 + f[0]
	}
	return time.Date(year, time.Month(f[1]), f[2], f[3], f[4], f[5], 0, zone(off)), nil
}

func zone(off int) *time.Location {
	if off == 0 {
		return time.UTC
	}
	return time.FixedZone("", off)
}

func swapBCD(n int) byte { return byte(n%10)<<4 | byte(n/10%10) }

// appendTimestamp encodes t in its own zone as in 23.040 §9.2.3.11 (the
// offset rounded to a quarter of an hour).
func appendTimestamp(dst []byte, t time.Time) []byte {
	_, off := t.Zone()
	q := off / (15 * 60)
	neg := q < 0
	if neg {
		q = -q
	}
	if q > 79 {
		q = 79
	}
	tz := swapBCD(q)
	if neg {
		tz |= 0x08
	}
	return append(dst, swapBCD(t.Year()%100), swapBCD(int(t.Month())), swapBCD(t.Day()),
		swapBCD(t.Hour()), swapBCD(t.Minute()), swapBCD(t.Second()), tz)
}

// relativeVP gives the duration of a relative TP-VP value
// (23.040 §9.2.3.12.1).
func relativeVP(v byte) time.Duration {
	switch {
	case v <= 143:
		return time.Duration(v+1) * 5 * time.Minute
	case v <= 167:
		return 12*time.Hour + time.Duration(v-143)*30*time.Minute
	case v <= 196:
		return time.Duration(v-166) * 24 * time.Hour
	default:
		return time.Duration(v-192) * 7 * 24 * time.Hour
	}
}

// encodeRelativeVP returns the relative TP-VP value nearest to d (ties go
// to the longer period); below 5 minutes gives 5 minutes, above 63 weeks
// gives 63 weeks (23.040 §9.2.3.12.1).
func encodeRelativeVP(d time.Duration) byte {
	best, bestDiff := byte(0), time.Duration(-1)
	for v := 0; v <= 255; v++ {
		diff := relativeVP(byte(v)) - d
		if diff < 0 {
			diff = -diff
		}
		if bestDiff < 0 || diff <= bestDiff {
			best, bestDiff = byte(v), diff
		}
	}
	return best
}
