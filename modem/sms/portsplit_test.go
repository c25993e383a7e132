package sms

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// wapPort is a platform UDH (with UDHL) holding a 16-bit application port
// address, destination 2948 (WAP push), source 9200 (TS 23.040 §9.2.3.24.4).
var wapPort = []byte{0x06, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0}

// packTest packs septets after skip fill septets, LSB first (TS 23.038
// §6.1.2.1.1), independently of packSeptets.
func packTest(septets []byte, skip int) []byte {
	out := make([]byte, (7*(skip+len(septets))+7)/8)
	for k, s := range septets {
		bit := 7 * (skip + k)
		for j := 0; j < 7; j++ {
			if s>>j&1 != 0 {
				out[(bit+j)/8] |= 1 << ((bit + j) % 8)
			}
		}
	}
	return out
}

// TestPortHeaderLongBinarySplit: 307 octets of 8-bit data behind a 16-bit
// port header go as a concatenated series of 128 + 128 + 51 octets, every
// part with the port element and an 8-bit reference concatenation element
// (TS 23.040 §9.2.3.24.1, §9.2.3.24.4), and the parts join to the data.
func TestPortHeaderLongBinarySplit(t *testing.T) {
	data := make([]byte, 307)
	for i := range data {
		data[i] = byte(i * 7)
	}
	s := Submit{Dest: "+8613800138000", DataCoding: 4, UDHI: true, Payload: append(append([]byte{}, wapPort...), data...)}
	parts, err := EncodeSubmit(s, 0x2A)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	// SMSC 00; FO 0x41 (SUBMIT, UDHI); MR 00; DA 13 digits international;
	// PID 00; DCS 04; UDL; UDHL 0B: 05 04 0B84 23F0, 00 03 2A 03 seq.
	const head = "00 41 00 0D 91 683108108300F0 00 04"
	cuts := [][2]int{{0, 128}, {128, 256}, {256, 307}}
	var joined []byte
	for i, p := range parts {
		seg := data[cuts[i][0]:cuts[i][1]]
		want := mustHex(t, head+hex.EncodeToString([]byte{byte(12 + len(seg))})+"0B 05040B8423F0 00032A03"+hex.EncodeToString([]byte{byte(i + 1)}))
		want = append(want, seg...)
		if !bytes.Equal(p.PDU, want) {
			t.Fatalf("part %d:\n got %X\nwant %X", i+1, p.PDU, want)
		}
		if p.TPDULen != len(want)-1 {
			t.Fatalf("part %d: TPDULen %d", i+1, p.TPDULen)
		}
		d, err := DecodeSubmit(p.PDU)
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		if !bytes.Equal(d.UDH, append(append([]byte{}, wapPort[1:]...), 0x00, 0x03, 0x2A, 3, byte(i+1))) ||
			d.Concat == nil || *d.Concat != (Concat{Ref: 0x2A, Total: 3, Seq: i + 1}) || d.DCS != 0x04 {
			t.Fatalf("part %d: UDH % X concat %+v DCS %02X", i+1, d.UDH, d.Concat, d.DCS)
		}
		joined = append(joined, d.Data...)
	}
	if !bytes.Equal(joined, data) {
		t.Fatalf("joined data differs: % X", joined)
	}

	// The 16-bit reference form when the reference is above 0xFF: 127 octets a part.
	parts, err = EncodeSubmit(s, 0x1234)
	if err != nil || len(parts) != 3 {
		t.Fatalf("%d parts, %v", len(parts), err)
	}
	if d, err := DecodeSubmit(parts[2].PDU); err != nil || len(d.Data) != 307-2*127 ||
		!bytes.Equal(d.UDH, append(append([]byte{}, wapPort[1:]...), 0x08, 0x04, 0x12, 0x34, 3, 3)) {
		t.Fatalf("part 3: %+v %v", d, err)
	}

	// Short: the platform's header as is, no concatenation element.
	parts, err = EncodeSubmit(Submit{Dest: "+8613800138000", DataCoding: 4, UDHI: true, Payload: append(append([]byte{}, wapPort...), data[:133]...)}, 0x2A)
	if err != nil || len(parts) != 1 {
		t.Fatalf("%d parts, %v", len(parts), err)
	}
	if d, err := DecodeSubmit(parts[0].PDU); err != nil || !bytes.Equal(d.UDH, wapPort[1:]) || d.Concat != nil || !bytes.Equal(d.Data, data[:133]) {
		t.Fatalf("short: %+v %v", d, err)
	}
}

// TestPortHeaderLongTextSplit: GSM 7-bit text behind a port header is split
// at 146 septets (12 octets of header and 2 fill bits take 14 septets),
// UCS2 at 64 characters; an odd header leaves 139 octets, 63 characters.
func TestPortHeaderLongTextSplit(t *testing.T) {
	text := strings.Repeat("abcdefghij", 20) // 200 septets
	parts, err := EncodeSubmit(Submit{Dest: "+8613800138000", UDHI: true, Payload: append(append([]byte{}, wapPort...), text...)}, 7)
	if err != nil || len(parts) != 2 {
		t.Fatalf("%d parts, %v", len(parts), err)
	}
	for i, cut := range [][2]int{{0, 146}, {146, 200}} {
		seg := []byte(text[cut[0]:cut[1]])
		ud := append(mustHex(t, "0B 05040B8423F0 00030702"+hex.EncodeToString([]byte{byte(i + 1)})), packTest(seg, 14)[12:]...)
		want := append(mustHex(t, "00 41 00 0D 91 683108108300F0 00 00"), byte(14+len(seg)))
		want = append(want, ud...)
		if !bytes.Equal(parts[i].PDU, want) {
			t.Fatalf("part %d:\n got %X\nwant %X", i+1, parts[i].PDU, want)
		}
	}
	var sb strings.Builder
	for i, p := range parts {
		d, err := DecodeSubmit(p.PDU)
		if err != nil || d.Concat == nil || d.Concat.Seq != i+1 || !bytes.HasPrefix(d.UDH, wapPort[1:]) {
			t.Fatalf("part %d: %+v %v", i+1, d, err)
		}
		sb.WriteString(d.Text)
	}
	if sb.String() != text {
		t.Fatalf("joined %q", sb.String())
	}

	// An escape sequence is not cut: "[" (ESC 3C) would take septets 146-147.
	esc := strings.Repeat("a", 145) + "[" + strings.Repeat("b", 20)
	ps := sendAndRead(t, Submit{Dest: "+1", UDHI: true, Payload: append(append([]byte{}, wapPort...), esc...)}, 7)
	if len(ps) != 2 || ps[0].Text != strings.Repeat("a", 145) || ps[1].Text != "["+strings.Repeat("b", 20) {
		t.Fatalf("escape cut: %d parts %q", len(ps), ps[0].Text)
	}

	// UCS2: 150 characters, 64 + 64 + 22.
	zh := strings.Repeat("你", 150)
	ps = sendAndRead(t, Submit{Dest: "+1", DataCoding: 8, UDHI: true, Payload: append(append([]byte{}, wapPort...), utf16be(zh)...)}, 9)
	if len(ps) != 3 || len([]rune(ps[0].Text)) != 64 || len([]rune(ps[2].Text)) != 22 {
		t.Fatalf("%d parts", len(ps))
	}
	// Odd header: 8-bit port (04 02 dst src) and UDH source indicator (07 01 01),
	// 13 octets with the concatenation element: 126 octets of text a part,
	// and a surrogate pair is never cut.
	odd := []byte{0x07, 0x04, 0x02, 0xF5, 0xF5, 0x07, 0x01, 0x01}
	emo := strings.Repeat("你", 62) + strings.Repeat("😀", 40)
	ps = sendAndRead(t, Submit{Dest: "+1", DataCoding: 8, UDHI: true, Payload: append(append([]byte{}, odd...), utf16be(emo)...)}, 9)
	var joined strings.Builder
	for i, p := range ps {
		if !bytes.HasPrefix(p.UDH, odd[1:]) || p.Concat == nil || *p.Concat != (Concat{Ref: 9, Total: len(ps), Seq: i + 1}) {
			t.Fatalf("part %d: UDH % X", i+1, p.UDH)
		}
		if n := len(utf16be(p.Text)); n > 126 {
			t.Fatalf("part %d: %d octets of text", i+1, n)
		}
		joined.WriteString(p.Text)
	}
	if joined.String() != emo || len([]rune(ps[0].Text)) != 62 { // 62 + a pair would be 128
		t.Fatalf("joined %q, first part %d characters", joined.String(), len([]rune(ps[0].Text)))
	}
}

// TestPlatformUDHNotRepeatable: a long message whose header has an element
// that does not go in every part (EMS text formatting, whose positions
// count within one segment) or a concatenation element is refused, as is
// a header that leaves no room for text.
func TestPlatformUDHNotRepeatable(t *testing.T) {
	long := strings.Repeat("a", 200)
	for name, udh := range map[string][]byte{
		"EMS text formatting": {0x05, 0x0A, 0x03, 0x00, 0x05, 0x10},
		"concatenation":       {0x05, 0x00, 0x03, 0x01, 0x02, 0x01},
		"malformed":           {0x03, 0x05, 0x04, 0x0B},
	} {
		_, err := EncodeSubmit(Submit{Dest: "+1", UDHI: true, Payload: append(append([]byte{}, udh...), long...)}, 1)
		var e *Error
		if !errors.As(err, &e) || e.Field != "short_message" {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	big := []byte{130}
	for len(big) < 131 {
		big = append(big, 0x01, 0x02, 0x00, 0x01) // special SMS message indication
	}
	big = big[:131]
	big[len(big)-2], big[len(big)-1] = 0x01, 0x00 // last element: 01 00, no data
	_, err := EncodeSubmit(Submit{Dest: "+1", DataCoding: 4, UDHI: true, Payload: append(big, make([]byte, 20)...)}, 1)
	var e *Error
	if !errors.As(err, &e) || e.Field != "UDH" {
		t.Fatalf("huge header: err = %v", err)
	}
	// More than 255 parts.
	_, err = EncodeSubmit(Submit{Dest: "+1", DataCoding: 4, UDHI: true, Payload: append(append([]byte{}, wapPort...), make([]byte, 128*255+1)...)}, 1)
	if !errors.As(err, &e) || !strings.Contains(err.Error(), "256 parts") {
		t.Fatalf("256 parts: err = %v", err)
	}
	if _, err := EncodeSubmit(Submit{Dest: "+1", DataCoding: 4, UDHI: true, Payload: append(append([]byte{}, wapPort...), make([]byte, 128*255)...)}, 1); err != nil {
		t.Fatalf("255 parts: %v", err)
	}
}
