package sms

import (
	"bytes"
	"errors"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"golang.org/x/text/encoding/simplifiedchinese"
)

func utf16be(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return b
}

// sendAndRead encodes s and decodes every part back, checking the length
// argument of AT+CMGS and the 140-octet limit of TP-UD.
func sendAndRead(t *testing.T, s Submit, ref uint16) []*SubmitPDU {
	t.Helper()
	parts, err := EncodeSubmit(s, ref)
	if err != nil {
		t.Fatalf("EncodeSubmit: %v", err)
	}
	out := make([]*SubmitPDU, len(parts))
	for i, p := range parts {
		if p.TPDULen != len(p.PDU)-1 || TPDULen(p.PDU) != p.TPDULen {
			t.Fatalf("part %d: TPDULen %d for %d octets", i+1, p.TPDULen, len(p.PDU))
		}
		d, err := DecodeSubmit(p.PDU)
		if err != nil {
			t.Fatalf("part %d does not decode: %v (%X)", i+1, err, p.PDU)
		}
		if ud := udOctets(t, p.PDU, d.DCS); ud > 140 {
			t.Fatalf("part %d has %d octets of user data", i+1, ud)
		}
		out[i] = d
	}
	return out
}

// udOctets returns the TP-UD size of an encoded SMS-SUBMIT (no VP).
func udOctets(t *testing.T, pdu []byte, dcs byte) int {
	t.Helper()
	r := &reader{b: pdu}
	_ = r.skipSMSC()
	fo, _ := r.octet("")
	r.off++ // MR
	if _, err := r.address(""); err != nil {
		t.Fatal(err)
	}
	r.off += 2
	if fo&foVPFMask == foVPFRelative {
		r.off++
	}
	return len(pdu) - r.off - 1
}

func joined(ps []*SubmitPDU) string {
	var sb strings.Builder
	for _, p := range ps {
		sb.WriteString(p.Text)
	}
	return sb.String()
}

func TestGSMExtensionCharacters(t *testing.T) {
	text := "Price: 5€ [a] {b} \\ ^ ~ | end"
	ps := sendAndRead(t, Submit{Dest: "+8613800138000", DataCoding: 3, Payload: []byte(strings.ReplaceAll(text, "€", "E"))}, 0)
	if ps[0].DCS != 0x00 {
		t.Fatalf("DCS %#x, want GSM", ps[0].DCS)
	}
	// € is not Latin-1: send it as UCS2 input; it still goes as GSM 7-bit.
	ps = sendAndRead(t, Submit{Dest: "+8613800138000", DataCoding: 8, Payload: utf16be(text)}, 0)
	if len(ps) != 1 || ps[0].DCS != 0x00 || ps[0].Text != text {
		t.Fatalf("got %d parts DCS %#x text %q", len(ps), ps[0].DCS, ps[0].Text)
	}
	// 153 septets per part: 152 'a' then '€' would put ESC last in part 1.
	long := strings.Repeat("a", 152) + "€" + strings.Repeat("b", 20)
	ps = sendAndRead(t, Submit{Dest: "10086", DataCoding: 8, Payload: utf16be(long)}, 7)
	if len(ps) != 2 || ps[0].Text != strings.Repeat("a", 152) || ps[1].Text != "€"+strings.Repeat("b", 20) {
		t.Fatalf("escape sequence split: %q | %q", ps[0].Text, ps[1].Text)
	}
}

func TestChineseGoesUCS2(t *testing.T) {
	text := "您好，验证码是123456，请勿泄露。"
	ps := sendAndRead(t, Submit{Dest: "+8613800138000", DataCoding: 8, Payload: utf16be(text)}, 0)
	if len(ps) != 1 || ps[0].DCS != 0x08 || ps[0].Text != text {
		t.Fatalf("got %+v", ps[0])
	}
}

func TestGBKBecomesUCS2(t *testing.T) {
	gbk := []byte{0xB2, 0xE2, 0xCA, 0xD4, 0xB6, 0xCC, 0xD0, 0xC5} // "测试短信" in GBK (GB 2312 code points)
	if enc, _ := simplifiedchinese.GBK.NewEncoder().Bytes([]byte("测试短信")); !bytes.Equal(enc, gbk) {
		t.Fatalf("test vector is not GBK: %X", enc)
	}
	parts, err := EncodeSubmit(Submit{Dest: "+8613800138000", DataCoding: 15, Payload: gbk}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// DCS 08, UDL 8, then UTF-16BE of the four characters.
	if want := mustHex(t, "00 01 00 0D91683108108300F0 00 08 08 6D4B 8BD5 77ED 4FE1"); !bytes.Equal(parts[0].PDU, want) {
		t.Errorf("got %X\nwant %X", parts[0].PDU, want)
	}
}

func TestEmojiNeverSplit(t *testing.T) {
	// 66 UCS2 units then a surrogate pair that would straddle the 67th unit.
	text := "中" + strings.Repeat("x", 65) + "😀" + strings.Repeat("y", 10)
	ps := sendAndRead(t, Submit{Dest: "+8613800138000", DataCoding: 8, Payload: utf16be(text)}, 0)
	if len(ps) != 2 {
		t.Fatalf("%d parts", len(ps))
	}
	if !strings.HasPrefix(ps[1].Text, "😀") || strings.ContainsRune(joined(ps), '\uFFFD') || joined(ps) != text {
		t.Fatalf("surrogate pair split: %q | %q", ps[0].Text, ps[1].Text)
	}
	// A lone emoji message is UCS2 with its pair intact.
	ps = sendAndRead(t, Submit{Dest: "1", DataCoding: 8, Payload: utf16be("😀")}, 0)
	if ps[0].DCS != 8 || ps[0].Text != "😀" {
		t.Fatalf("got %+v", ps[0])
	}
}

func TestLongGSMTextSplitsAndReassembles(t *testing.T) {
	var sb strings.Builder
	for sb.Len() < 500 {
		sb.WriteString("The quick brown fox jumps over the lazy dog 0123456789. ")
	}
	text := sb.String()[:500]
	ps := sendAndRead(t, Submit{Dest: "+8613800138000", Payload: []byte(text), StatusReport: true}, 0x42)
	want := []int{153, 153, 153, 41}
	if len(ps) != len(want) {
		t.Fatalf("%d parts, want 4", len(ps))
	}
	for i, p := range ps {
		if len(p.Text) != want[i] || p.Concat == nil || *p.Concat != (Concat{Ref: 0x42, Total: 4, Seq: i + 1}) || !p.StatusReport {
			t.Errorf("part %d: %d chars, concat %+v", i+1, len(p.Text), p.Concat)
		}
	}
	// The same text arriving as SMS-DELIVERs, in a shuffled order.
	pdus, err := EncodeDeliver("+8613900139000", text, time.Date(2024, 5, 1, 12, 0, 0, 0, tz(8)))
	if err != nil || len(pdus) != 4 {
		t.Fatalf("EncodeDeliver: %d, %v", len(pdus), err)
	}
	var r Reassembler
	now := time.Now()
	for n, i := range []int{2, 0, 3, 1} {
		d, err := DecodeDeliver(pdus[i])
		if err != nil {
			t.Fatal(err)
		}
		got, done := r.Add(d, now)
		if done != (n == 3) {
			t.Fatalf("after %d parts complete=%v", n+1, done)
		}
		if done && got != text {
			t.Fatalf("reassembled %q", got)
		}
	}
	if r.Pending() != 0 {
		t.Errorf("%d pending after completion", r.Pending())
	}
}

func TestSixteenBitReference(t *testing.T) {
	text := strings.Repeat("z", 305)
	ps := sendAndRead(t, Submit{Dest: "+1", Payload: []byte(text)}, 0x1234)
	if len(ps) != 3 || len(ps[0].Text) != 152 || len(ps[1].Text) != 152 || len(ps[2].Text) != 1 {
		t.Fatalf("parts %d", len(ps))
	}
	if !bytes.Equal(ps[0].UDH, []byte{0x08, 0x04, 0x12, 0x34, 3, 1}) || *ps[2].Concat != (Concat{Ref: 0x1234, Total: 3, Seq: 3}) {
		t.Fatalf("UDH %X concat %+v", ps[0].UDH, ps[2].Concat)
	}
	ucs := strings.Repeat("中", 70) // exactly one SMS
	if ps := sendAndRead(t, Submit{Dest: "+1", DataCoding: 8, Payload: utf16be(ucs)}, 0x1234); len(ps) != 1 {
		t.Fatalf("70 UCS2 characters need %d parts", len(ps))
	}
	ucs += "中"
	ps = sendAndRead(t, Submit{Dest: "+1", DataCoding: 8, Payload: utf16be(ucs)}, 0x1234)
	if len(ps) != 2 || len([]rune(ps[0].Text)) != 66 {
		t.Fatalf("71 UCS2 characters with a 16-bit reference: %d parts", len(ps))
	}
	ps = sendAndRead(t, Submit{Dest: "+1", DataCoding: 8, Payload: utf16be(ucs)}, 9)
	if len(ps) != 2 || len([]rune(ps[0].Text)) != 67 {
		t.Fatalf("71 UCS2 characters with an 8-bit reference: %d parts", len(ps))
	}
}

func TestBinarySplitsAt134(t *testing.T) {
	data := make([]byte, 300)
	for i := range data {
		data[i] = byte(i)
	}
	ps := sendAndRead(t, Submit{Dest: "+1", DataCoding: 4, Payload: data}, 1)
	if len(ps) != 3 || len(ps[0].Data) != 134 || len(ps[1].Data) != 134 || len(ps[2].Data) != 32 {
		t.Fatalf("parts %d", len(ps))
	}
	var all []byte
	for _, p := range ps {
		if p.DCS != 0x04 {
			t.Fatalf("DCS %#x", p.DCS)
		}
		all = append(all, p.Data...)
	}
	if !bytes.Equal(all, data) {
		t.Fatal("data differs")
	}
	if ps := sendAndRead(t, Submit{Dest: "+1", DataCoding: 2, Payload: data[:140]}, 1); len(ps) != 1 {
		t.Fatalf("140 octets need %d parts", len(ps))
	}
}

func TestPlatformUDHKept(t *testing.T) {
	udh := []byte{0x05, 0x00, 0x03, 0x99, 0x02, 0x01}
	text := strings.Repeat("a", 153)
	parts, err := EncodeSubmit(Submit{Dest: "+1", UDHI: true, Payload: append(append([]byte{}, udh...), text...)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeSubmit(parts[0].PDU)
	if err != nil || len(parts) != 1 || !bytes.Equal(d.UDH, udh[1:]) || d.Text != text || *d.Concat != (Concat{0x99, 2, 1}) {
		t.Fatalf("got %+v %v", d, err)
	}
	// One more character does not fit beside the platform's header.
	_, err = EncodeSubmit(Submit{Dest: "+1", UDHI: true, Payload: append(append([]byte{}, udh...), text+"a"...)}, 0)
	var e *Error
	if !errors.As(err, &e) || e.Field != "short_message" {
		t.Fatalf("err = %v", err)
	}
	// UDHL beyond the payload.
	_, err = EncodeSubmit(Submit{Dest: "+1", UDHI: true, Payload: []byte{0x07, 0x00, 0x03}}, 0)
	if !errors.As(err, &e) || e.Field != "UDH" {
		t.Fatalf("err = %v", err)
	}
	// UCS2 beside a platform header.
	parts, err = EncodeSubmit(Submit{Dest: "+1", DataCoding: 8, UDHI: true, Payload: append(append([]byte{}, udh...), utf16be("你好")...)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := DecodeSubmit(parts[0].PDU); err != nil || d.Text != "你好" || d.DCS != 8 {
		t.Fatalf("got %+v %v", d, err)
	}
}

func TestEncodeSubmitRejects(t *testing.T) {
	for name, s := range map[string]Submit{
		"data_coding":   {Dest: "+1", DataCoding: 5, Payload: []byte("x")},
		"short_message": {Dest: "+1", DataCoding: 8, Payload: []byte{0x00, 0x41, 0x00}},
		"TP-DA":         {Dest: "+86 138", Payload: []byte("x")},
	} {
		_, err := EncodeSubmit(s, 0)
		var e *Error
		if !errors.As(err, &e) || e.Field != name {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if _, err := EncodeSubmit(Submit{Dest: "", Payload: []byte("x")}, 0); err == nil {
		t.Error("empty destination accepted")
	}
	// 256 parts is more than a concatenation element can number.
	_, err := EncodeSubmit(Submit{Dest: "+1", Payload: bytes.Repeat([]byte("a"), 153*255+1)}, 0)
	var e *Error
	if !errors.As(err, &e) || e.Field != "short_message" {
		t.Errorf("256 parts: err = %v", err)
	}
	if ps, err := EncodeSubmit(Submit{Dest: "+1", Payload: bytes.Repeat([]byte("a"), 153*255)}, 0); err != nil || len(ps) != 255 {
		t.Errorf("255 parts: %d, %v", len(ps), err)
	}
}

func TestValidityRounding(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want byte
	}{
		{time.Second, 0}, {7 * time.Minute, 0}, {8 * time.Minute, 1}, {12 * time.Hour, 143},
		{24 * time.Hour, 167}, {4 * 24 * time.Hour, 0xAA}, {30 * 24 * time.Hour, 196},
		{32 * 24 * time.Hour, 196}, {33 * 24 * time.Hour, 197}, {63 * 7 * 24 * time.Hour, 255},
		{1000 * 7 * 24 * time.Hour, 255},
	} {
		if got := encodeRelativeVP(tc.d); got != tc.want {
			t.Errorf("VP(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
	ps := sendAndRead(t, Submit{Dest: "+1", Payload: []byte("x"), Validity: 48 * time.Hour}, 0)
	if ps[0].Validity != 48*time.Hour {
		t.Errorf("validity %v", ps[0].Validity)
	}
	ps = sendAndRead(t, Submit{Dest: "+1", Payload: []byte("x")}, 0)
	if ps[0].Validity != 0 {
		t.Errorf("validity %v without one", ps[0].Validity)
	}
}

func TestEnhancedValiditySkipped(t *testing.T) {
	// TP-VPF 01 (enhanced, 23.040 §9.2.3.12.3), format 3: HH MM SS = 01:30:00.
	pdu := mustHex(t, "00 09 00 0B917228001011F1 00 00 03 10 03 00 00 00 00 05 C8329BFD06")
	s, err := DecodeSubmit(pdu)
	if err != nil || s.Validity != 90*time.Minute || s.Text != "Hello" {
		t.Fatalf("got %+v %v", s, err)
	}
}

func TestEncodeDeliverSenders(t *testing.T) {
	scts := time.Date(2024, 1, 2, 3, 4, 5, 0, tz(8))
	for _, from := range []string{"+8613800138000", "10086", "Spareline", "a[]{}€"} {
		pdus, err := EncodeDeliver(from, "验证码 1234", scts)
		if err != nil {
			t.Fatalf("%q: %v", from, err)
		}
		d, err := DecodeDeliver(pdus[0])
		if err != nil || d.From != from || d.Text != "验证码 1234" || d.DCS != 8 || d.MoreToSend {
			t.Fatalf("%q: got %+v %v", from, d, err)
		}
		sameTime(t, "SCTS", d.SCTS, scts)
	}
	if _, err := EncodeDeliver("A very long sender", "x", scts); err == nil {
		t.Error("12-character alphanumeric sender accepted")
	}
}

func TestDecodeErrorsNameFieldAndOffset(t *testing.T) {
	deliver := mustHex(t, "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
	for _, tc := range []struct {
		name   string
		pdu    []byte
		field  string
		offset int
	}{
		{"empty", nil, "SMSC", 0},
		{"no OA", deliver[:9], "TP-OA", 9},
		{"short UD", deliver[:len(deliver)-1], "TP-UDL", 26},
		{"bad SCTS", append(append(append([]byte{}, deliver[:19]...), 0x9F), deliver[20:]...), "TP-SCTS", 19},
		{"not deliver", mustHex(t, "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"), "TP-MTI", 1},
		{"UDHL too long", mustHex(t, "00 40 04 91 3619 00 00 51507132200523 08 09 00 03 01 02 01 41 42"), "TP-UDHL", 16},
		{"IE overruns", mustHex(t, "00 40 04 91 3619 00 04 51507132200523 06 05 00 04 01 02 01"), "TP-UDH", 17},
	} {
		_, err := DecodeDeliver(tc.pdu)
		var e *Error
		if !errors.As(err, &e) || e.Field != tc.field || e.Offset != tc.offset {
			t.Errorf("%s: err = %#v, want %s at %d", tc.name, err, tc.field, tc.offset)
		}
	}
	report := mustHex(t, "0006D60B911326880736F4111011719551401110117195714000")
	_, err := DecodeStatusReport(report[:len(report)-1])
	var e *Error
	if !errors.As(err, &e) || e.Field != "TP-ST" || e.Offset != 25 || !strings.Contains(err.Error(), "TP-ST at octet 25") {
		t.Errorf("status report without TP-ST: %v", err)
	}
}

// Every prefix of every golden PDU must give an *Error, never a panic.
func TestTruncatedPDUs(t *testing.T) {
	for _, h := range goldenPDUs {
		pdu := mustHex(t, h)
		for n := 0; n < len(pdu); n++ {
			for _, dec := range decoders {
				if err := dec(pdu[:n]); err != nil {
					var e *Error
					if !errors.As(err, &e) {
						t.Fatalf("error is %T, not *Error", err)
					}
				}
			}
		}
	}
}

func TestReassembler(t *testing.T) {
	mk := func(from string, ref uint16, total, seq int, text string) *Deliver {
		return &Deliver{From: from, Text: text, Concat: &Concat{Ref: ref, Total: total, Seq: seq}}
	}
	var r Reassembler
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, ok := r.Add(&Deliver{From: "+1", Text: "single"}, t0); !ok || got != "single" {
		t.Fatal("single part message not complete")
	}
	// Same ref from two senders and with a different total are distinct.
	r.Add(mk("+1", 5, 2, 1, "a1"), t0)
	r.Add(mk("+2", 5, 2, 2, "b2"), t0)
	r.Add(mk("+1", 5, 3, 1, "c1"), t0)
	if _, ok := r.Add(mk("+1", 5, 2, 1, "a1"), t0); ok {
		t.Fatal("a repeated part completed a message")
	}
	if got, ok := r.Add(mk("+1", 5, 2, 2, "a2"), t0); !ok || got != "a1a2" {
		t.Fatalf("got %q %v", got, ok)
	}
	if got, ok := r.Add(mk("+2", 5, 2, 1, "b1"), t0); !ok || got != "b1b2" {
		t.Fatalf("got %q %v", got, ok)
	}
	// The 3-part message from +1 is older than MaxAge when its next part
	// comes: it was dropped, so the new part starts over.
	r.MaxAge = time.Minute
	if _, ok := r.Add(mk("+1", 5, 3, 2, "c2"), t0.Add(2*time.Minute)); ok {
		t.Fatal("complete")
	}
	if _, ok := r.Add(mk("+1", 5, 3, 3, "c3"), t0.Add(2*time.Minute)); ok {
		t.Fatal("a message completed with a part that had expired")
	}
	if r.Pending() != 1 {
		t.Fatalf("pending %d, want 1", r.Pending())
	}
	// The default MaxAge is an hour.
	var d Reassembler
	d.Add(mk("+1", 1, 2, 1, "x"), t0)
	d.Add(mk("+9", 1, 2, 1, "x"), t0.Add(61*time.Minute))
	if d.Pending() != 1 {
		t.Fatalf("pending %d after an hour, want 1", d.Pending())
	}
}

func TestStatusClasses(t *testing.T) {
	for st, want := range map[byte][2]bool{0x00: {true, false}, 0x02: {true, false}, 0x20: {false, true}, 0x3F: {false, true}, 0x40: {false, false}, 0x65: {false, false}} {
		r := StatusReport{Status: st}
		if r.Delivered() != want[0] || r.Temporary() != want[1] {
			t.Errorf("TP-ST %#x: delivered %v temporary %v", st, r.Delivered(), r.Temporary())
		}
	}
}

func TestRandomTextRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []rune("abc XYZ 0123 @£$¥èé€[]{}\\^~|\f\n中文😀ä")
	for i := 0; i < 300; i++ {
		n := rng.Intn(700)
		rs := make([]rune, n)
		for j := range rs {
			rs[j] = alphabet[rng.Intn(len(alphabet))]
		}
		text := string(rs)
		ps := sendAndRead(t, Submit{Dest: "+8613800138000", DataCoding: 8, Payload: utf16be(text)}, uint16(rng.Intn(0x1FF)))
		if got := joined(ps); got != text {
			t.Fatalf("round trip\n got %q\nwant %q", got, text)
		}
	}
}

// A sender that cuts long UCS2 text at a fixed number of UTF-16 units may
// split a surrogate pair (an emoji) between two parts: 23.040 §9.2.3.24.1
// keeps a UCS2 character, not a pair, whole. The joined message has the
// character, not two U+FFFD.
func TestSurrogatePairSplitAcrossPartsIsJoined(t *testing.T) {
	part := func(seq int, units ...uint16) *Deliver {
		// SMSC 00; TP-UDHI|TP-MMS; TP-OA +8613900000000; TP-PID 0; TP-DCS
		// UCS2; TP-SCTS; TP-UDL; concatenation IE ref 7, 2 parts.
		pdu := mustHex(t, "00 44 0D91 683109000000F0 00 08 42103001000000")
		ud := []byte{5, 0, 3, 7, 2, byte(seq)}
		for _, u := range units {
			ud = append(ud, byte(u>>8), byte(u))
		}
		pdu = append(append(pdu, byte(len(ud))), ud...)
		d, err := DecodeDeliver(pdu)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var r Reassembler
	now := time.Now()
	if _, ok := r.Add(part(1, 'A', 0xD83D), now); ok {
		t.Fatal("complete after one part")
	}
	got, ok := r.Add(part(2, 0xDE00, 'B'), now)
	if !ok || got != "A\U0001F600B" {
		t.Fatalf("got %q %v, want %q", got, ok, "A\U0001F600B")
	}
}

// Put keeps each distinct tag once; Expire returns what arrived of an
// incomplete message (parts in order, the missing ones named) with its
// tags; TakeOldestTags gives up the oldest one's tags only.
func TestReassemblerPutExpireTags(t *testing.T) {
	mk := func(from string, total, seq int, text string) *Deliver {
		return &Deliver{From: from, Text: text, Concat: &Concat{Ref: 9, Total: total, Seq: seq}}
	}
	r := Reassembler{MaxAge: time.Minute}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if r.Put(mk("+1", 3, 3, "c"), t0, 3) != nil || r.Put(mk("+1", 3, 1, "a"), t0, 1) != nil ||
		r.Put(mk("+1", 3, 1, "a"), t0, 1) != nil || r.Put(mk("+2", 2, 1, "x"), t0.Add(time.Second), 7) != nil {
		t.Fatal("an incomplete message was returned")
	}
	if n := r.Tagged(); n != 3 {
		t.Fatalf("%d tags, want 3 (a tag given twice counts once)", n)
	}
	if got := r.Expire(t0.Add(time.Minute)); got != nil {
		t.Fatalf("expired at MaxAge: %+v", got)
	}
	got := r.Expire(t0.Add(time.Minute + time.Millisecond))
	if len(got) != 1 || got[0].Text != "ac" || !slices.Equal(got[0].Missing, []int{2}) ||
		!slices.Equal(got[0].Tags, []any{3, 1}) || got[0].From != "+1" || got[0].Total != 3 {
		t.Fatalf("expired %+v", got)
	}
	if tags := r.TakeOldestTags(); !slices.Equal(tags, []any{7}) || r.Tagged() != 0 {
		t.Fatalf("oldest tags %v, %d left", tags, r.Tagged())
	}
	msg := r.Put(mk("+2", 2, 2, "y"), t0.Add(2*time.Second), 8)
	if msg == nil || msg.Text != "xy" || msg.Missing != nil || !slices.Equal(msg.Tags, []any{8}) {
		t.Fatalf("completed %+v", msg)
	}
	// Not a valid part: a message of its own.
	if msg := r.Put(mk("+3", 2, 3, "z"), t0, 4); msg == nil || msg.Text != "z" {
		t.Fatalf("invalid part: %+v", msg)
	}
}
