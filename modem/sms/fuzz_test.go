package sms

import (
	"bytes"
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

// FuzzSubmitRoundTrip: whatever UCS2, Latin-1 or 8-bit content goes in
// comes back out of DecodeSubmit, part by part, in order. With a platform
// header (hdr not empty: the payload is UDHL, hdr, content, as esm_class
// UDHI sends it), one part carries it as is; several parts each carry it
// followed by our concatenation element, which happens exactly when its
// elements are ones TS 23.040 §9.2.3.24 lets go in every part.
func FuzzSubmitRoundTrip(f *testing.F) {
	f.Add([]byte("hello"), byte(1), uint16(0), []byte(nil))
	f.Add([]byte{0xD8, 0x3D, 0xDE, 0x00, 0x4E, 0x2D}, byte(1), uint16(300), []byte(nil))
	f.Add([]byte("[{€}]"), byte(0), uint16(1), []byte(nil))
	f.Add(bytes.Repeat([]byte{0x5A}, 307), byte(2), uint16(0x2A), []byte{0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0})
	f.Add(bytes.Repeat([]byte("a[b"), 70), byte(0), uint16(7), []byte{0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0})
	f.Add(bytes.Repeat([]byte{0xD8, 0x3D, 0xDE, 0x00}, 50), byte(1), uint16(0x1234), []byte{0x04, 0x02, 0xF5, 0xF5, 0x07, 0x01, 0x01})
	f.Add(bytes.Repeat([]byte("x"), 200), byte(0), uint16(3), []byte{0x0A, 0x03, 0x00, 0x05, 0x10})
	f.Add(bytes.Repeat([]byte("x"), 200), byte(0), uint16(3), []byte{0x00, 0x03, 0x01, 0x02, 0x01})
	f.Fuzz(func(t *testing.T, p []byte, mode byte, ref uint16, hdr []byte) {
		dc := byte(3)
		var want string
		switch mode % 3 {
		case 1:
			dc = 8
			p = p[:len(p)&^1]
			units := make([]uint16, len(p)/2)
			for i := range units {
				units[i] = uint16(p[2*i])<<8 | uint16(p[2*i+1])
			}
			want = string(utf16.Decode(units))
		case 2:
			dc = 4
		default:
			rs := make([]rune, len(p))
			for i, c := range p {
				rs[i] = rune(c)
			}
			want = string(rs)
		}
		s := Submit{Dest: "+8613800138000", DataCoding: dc, Payload: p}
		if len(hdr) > 0 {
			hdr = hdr[:min(len(hdr), 255)]
			s.UDHI = true
			s.Payload = append(append([]byte{byte(len(hdr))}, hdr...), p...)
		}
		parts, err := EncodeSubmit(s, ref)
		if err != nil {
			checkErr(t, err)
			msg := err.Error()
			if strings.Contains(msg, "parts") || strings.Contains(msg, "no room") {
				return
			}
			if s.UDHI && repeatableInEveryPart(hdr) {
				t.Fatalf("header % X with repeatable elements refused: %v", hdr, err)
			}
			if !s.UDHI {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if s.UDHI && len(parts) > 1 && !repeatableInEveryPart(hdr) {
			t.Fatalf("header % X split into %d parts", hdr, len(parts))
		}
		var sb strings.Builder
		var data []byte
		for i, part := range parts {
			if len(part.PDU)-1 != part.TPDULen {
				t.Fatalf("part %d: TPDULen %d of %d", i+1, part.TPDULen, len(part.PDU))
			}
			d, err := DecodeSubmit(part.PDU)
			if err != nil {
				if len(parts) == 1 && s.UDHI {
					checkErr(t, err) // the platform's header as is, which need not parse
					return
				}
				t.Fatalf("part %d: %v", i+1, err)
			}
			if len(parts) > 1 && (d.Concat == nil || d.Concat.Seq != i+1 || d.Concat.Total != len(parts)) {
				t.Fatalf("part %d concat %+v", i+1, d.Concat)
			}
			if s.UDHI {
				if len(parts) == 1 && !bytes.Equal(d.UDH, hdr) {
					t.Fatalf("UDH % X, platform's % X", d.UDH, hdr)
				}
				concatLen := 5
				if ref > 0xFF {
					concatLen = 6
				}
				if len(parts) > 1 && (!bytes.HasPrefix(d.UDH, hdr) || len(d.UDH) != len(hdr)+concatLen) {
					t.Fatalf("part %d UDH % X, platform's % X", i+1, d.UDH, hdr)
				}
			}
			sb.WriteString(d.Text)
			data = append(data, d.Data...)
		}
		if dc == 4 {
			if !bytes.Equal(data, p) {
				t.Fatalf("data % X want % X", data, p)
			}
			return
		}
		if sb.String() != want {
			t.Fatalf("got %q want %q", sb.String(), want)
		}
	})
}

// repeatableInEveryPart is the test's own reading of TS 23.040 §9.2.3.24:
// a header that parses into elements, none a concatenation element, all of
// them ones that go in every part (0x01, 0x04-0x07, 0x24, 0x25).
func repeatableInEveryPart(h []byte) bool {
	for i := 0; i < len(h); i += 2 + int(h[i+1]) {
		if i+2 > len(h) || i+2+int(h[i+1]) > len(h) {
			return false
		}
		switch h[i] {
		case 0x01, 0x04, 0x05, 0x06, 0x07, 0x24, 0x25:
		default:
			return false
		}
	}
	return true
}
