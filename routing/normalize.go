package routing

import "strings"

// Normalize turns a destination address as platforms write it into the form
// the prefix table is keyed by:
//
//  1. spaces, tabs, dashes, dots and parentheses are removed
//     ("+86 (138) 1234-5678" -> "+8613812345678");
//  2. "+<cc>" and "00<cc>" are stripped, leaving the national number;
//  3. a bare "<cc>" is stripped only when what remains looks like a national
//     mobile number (for cc 86: 11 digits starting with 1, or a 13-digit
//     IoT number starting with 14), because national numbers may themselves
//     start with the country code's digits (a Beijing local number
//     "86123456" is not "+86 123456");
//  4. for cc 86, a trunk prefix "0" before a mobile number is dropped
//     ("013812345678" -> "13812345678");
//  5. other international numbers are returned as "+<digits>" ("0044..."
//     becomes "+44..."), which no prefix matches: they take routing.default.
//
// Steps 2-5 repeat until nothing changes, so Normalize is idempotent:
// Normalize(Normalize(x)) == Normalize(x), and routing a stored normalised
// number gives the same carrier as routing the original.
//
// Normalize does not allocate when dest contains none of the removed
// characters and is not written with "00" for a foreign country.
func Normalize(dest, countryCode string) string {
	s := clean(dest)
	for {
		n := step(s, countryCode)
		if n == s {
			return s
		}
		s = n
	}
}

func isSeparator(c byte) bool {
	switch c {
	case ' ', '\t', '-', '.', '(', ')':
		return true
	}
	return false
}

// clean removes separators, allocating only when there are some.
func clean(s string) string {
	i := 0
	for i < len(s) && !isSeparator(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		if !isSeparator(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// step applies one rewriting rule; every rule makes s shorter, so repeating
// step ends.
func step(s, cc string) string {
	switch {
	case cc == "":
		return s
	case strings.HasPrefix(s, "+"):
		if strings.HasPrefix(s[1:], cc) {
			return s[1+len(cc):]
		}
		return s
	case strings.HasPrefix(s, "00"):
		if strings.HasPrefix(s[2:], cc) {
			return s[2+len(cc):]
		}
		if len(s) > 2 {
			return "+" + s[2:]
		}
		return s
	case strings.HasPrefix(s, cc) && nationalMobile(s[len(cc):], cc):
		return s[len(cc):]
	case cc == "86" && len(s) > 1 && s[0] == '0' && nationalMobile(s[1:], cc):
		return s[1:]
	}
	return s
}

// nationalMobile reports whether s looks like a national mobile number of
// country cc. Only cc 86 has a rule: 11 digits starting with 1 (the format
// of every 13x-19x segment), or 13 digits starting with 14 (IoT segments).
func nationalMobile(s, cc string) bool {
	if cc != "86" || !allDigits(s) {
		return false
	}
	switch len(s) {
	case 11:
		return s[0] == '1'
	case 13:
		return s[0] == '1' && s[1] == '4'
	}
	return false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
