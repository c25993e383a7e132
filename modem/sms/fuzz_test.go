package sms

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf16"
)

// goldenPDUs seed the fuzzers and the truncation test (sources in
// golden_test.go).
var goldenPDUs = []string{
	"0011000B916407281553F80000AA0AE8329BFD4697D9EC37",
	"07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37",
	"0591721891F1400781721881F800003160526104848059050003C30101916536FB1DCABEEB2074D85E064941B19CAB060319A5C522289C96D3D3ED32286C0FA7D96131BBEC024941B19CAB0603DDD36C36A88C87A7E565D0DB0D82C55EB0DB4B068BCD5C20",
	"07914346466554F601000B914316565811F9000806304253F68449",
	"0019000B917228001011F100003170013193008017D474BB3CA787DB70903DCC4E93D3F43C885E9ED301",
	"0006D60B911326880736F4111011719551401110117195714000",
	"0006000B910221815716F2709021510121807090215101718000070004067265706F7274",
	"000900" + "0B917228001011F1000003100300000000" + "05C8329BFD06",
	"00400ED04669D0397C26A700085150713220052306050008010203",
}

var decoders = []func([]byte) error{
	func(b []byte) error { _, err := DecodeDeliver(b); return err },
	func(b []byte) error { _, err := DecodeStatusReport(b); return err },
	func(b []byte) error { _, err := DecodeSubmit(b); return err },
}

func seed(f *testing.F) {
	for _, h := range goldenPDUs {
		f.Add(mustHex(f, h))
	}
}

func checkErr(t *testing.T, err error) {
	var e *Error
	if err != nil && !errors.As(err, &e) {
		t.Fatalf("error %T is not *Error: %v", err, err)
	}
}

func FuzzDecodeDeliver(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDeliver(b)
		checkErr(t, err)
		if err == nil && d.Concat != nil && (d.Concat.Seq < 1 || d.Concat.Seq > d.Concat.Total) {
			t.Fatalf("invalid concat %+v", d.Concat)
		}
	})
}

func FuzzDecodeStatusReport(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := DecodeStatusReport(b)
		checkErr(t, err)
	})
}

func FuzzDecodeSubmit(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := DecodeSubmit(b)
		checkErr(t, err)
	})
}

// FuzzSubmitRoundTrip: whatever UCS2 or Latin-1 text goes in comes back out
// of DecodeSubmit, part by part, in order.
func FuzzSubmitRoundTrip(f *testing.F) {
	f.Add([]byte("hello"), true, uint16(0))
	f.Add([]byte{0xD8, 0x3D, 0xDE, 0x00, 0x4E, 0x2D}, true, uint16(300))
	f.Add([]byte("[{€}]"), false, uint16(1))
	f.Fuzz(func(t *testing.T, p []byte, ucs2 bool, ref uint16) {
		dc := byte(3)
		var want string
		if ucs2 {
			dc = 8
			p = p[:len(p)&^1]
			units := make([]uint16, len(p)/2)
			for i := range units {
				units[i] = uint16(p[2*i])<<8 | uint16(p[2*i+1])
			}
			want = string(utf16.Decode(units))
		} else {
			rs := make([]rune, len(p))
			for i, c := range p {
				rs[i] = rune(c)
			}
			want = string(rs)
		}
		parts, err := EncodeSubmit(Submit{Dest: "+8613800138000", DataCoding: dc, Payload: p}, ref)
		if err != nil {
			checkErr(t, err)
			if !strings.Contains(err.Error(), "parts") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		var sb strings.Builder
		for i, part := range parts {
			d, err := DecodeSubmit(part.PDU)
			if err != nil {
				t.Fatalf("part %d: %v", i+1, err)
			}
			if len(parts) > 1 && (d.Concat == nil || d.Concat.Seq != i+1 || d.Concat.Total != len(parts)) {
				t.Fatalf("part %d concat %+v", i+1, d.Concat)
			}
			sb.WriteString(d.Text)
		}
		if sb.String() != want {
			t.Fatalf("got %q want %q", sb.String(), want)
		}
	})
}
