package sms

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// TS 23.038 §4 data coding schemes that platforms send as SMPP data_coding
// (a message class, "flash" messages, message waiting indications): the
// SMS-SUBMIT keeps the group, class and indication, and the alphabet follows
// the text. Expected PDUs are the published [PGM] vectors of
// golden_test.go with only the TP-DCS octet changed: the user data is the
// same octets, so the alphabet bits must agree with it.
func TestEncodeSubmitDCSGolden(t *testing.T) {
	const (
		// [PGM] "Hello World!" to +27820001111 as GSM 7-bit: head, DCS, UD.
		gsmHead = "0001000B917228001011F100"
		gsmUD   = "0CC8329BFD065DDF72363904"
		// [PGM] "あ叶葉" to +34616585119 as UCS2.
		ucsHead = "0001000B914316565811F900"
		ucsUD   = "06304253F68449"
		// [PGM] 8-bit "Hello world!" to +27821234567.
		binHead = "0001000B917228214365F700"
		binUD   = "0C48656C6C6F20776F726C6421"
	)
	helloGSM := Submit{Dest: "+27820001111", Payload: []byte("Hello World!")}
	helloUCS2 := Submit{Dest: "+27820001111", Payload: utf16be("Hello World!")}
	kanji := Submit{Dest: "+34616585119", Payload: mustHex(t, "304253F68449")}
	bin := Submit{Dest: "+27821234567", Payload: []byte("Hello world!")}
	with := func(s Submit, dc byte) Submit { s.DataCoding = dc; return s }
	for _, tc := range []struct {
		name string
		in   Submit
		want string
	}{
		// General group with a message class (bit 4): 0x18 is UCS2 class 0,
		// the "flash" message; it stays 0x18.
		{"0x18 UCS2 class 0", with(kanji, 0x18), ucsHead + "18" + ucsUD},
		{"0x10 GSM class 0", with(helloGSM, 0x10), gsmHead + "10" + gsmUD},
		{"0x11 GSM class 1", with(helloGSM, 0x11), gsmHead + "11" + gsmUD},
		{"0x13 GSM class 3", with(helloGSM, 0x13), gsmHead + "13" + gsmUD},
		{"0x15 8-bit class 1", with(bin, 0x15), binHead + "15" + binUD},
		{"0x1A UCS2 class 2", with(kanji, 0x1A), ucsHead + "1A" + ucsUD},
		// UCS2 text that fits GSM 7-bit goes as GSM, still class 0.
		{"0x18 with GSM text", with(helloUCS2, 0x18), gsmHead + "10" + gsmUD},
		// 0x0B (reserved in SMPP) is UCS2 without class in 23.038.
		{"0x0B UCS2", with(kanji, 0x0B), ucsHead + "08" + ucsUD},
		// Automatic deletion group (bit 6) keeps bit 6 and the class;
		// without bit 4, bits 1-0 have no meaning and are cleared.
		{"0x40 GSM auto-delete", with(helloGSM, 0x40), gsmHead + "40" + gsmUD},
		{"0x48 UCS2 auto-delete", with(kanji, 0x48), ucsHead + "48" + ucsUD},
		{"0x43 bits 1-0 without class", with(helloGSM, 0x43), gsmHead + "40" + gsmUD},
		{"0x58 UCS2 auto-delete class 0", with(kanji, 0x58), ucsHead + "58" + ucsUD},
		// Data coding / message class group 1111: bit 2 is the alphabet,
		// bits 1-0 the class; bit 3 is reserved and cleared.
		{"0xF0 GSM class 0", with(helloGSM, 0xF0), gsmHead + "F0" + gsmUD},
		{"0xF1 GSM class 1", with(helloGSM, 0xF1), gsmHead + "F1" + gsmUD},
		{"0xF4 8-bit class 0", with(bin, 0xF4), binHead + "F4" + binUD},
		{"0xF7 8-bit class 3", with(bin, 0xF7), binHead + "F7" + binUD},
		{"0xF9 reserved bit 3", with(helloGSM, 0xF9), gsmHead + "F1" + gsmUD},
		// Message waiting, store message: GSM 0xD_, UCS2 0xE_, same
		// indication (here 0x08: voicemail, active).
		{"0xD8 GSM store", with(helloGSM, 0xD8), gsmHead + "D8" + gsmUD},
		{"0xE8 UCS2 store", with(kanji, 0xE8), ucsHead + "E8" + ucsUD},
		{"0xE8 with GSM text", with(helloUCS2, 0xE8), gsmHead + "D8" + gsmUD},
		{"0xC0 GSM discard", with(helloGSM, 0xC0), gsmHead + "C0" + gsmUD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := encodeOne(t, tc.in)
			if want := mustHex(t, tc.want); !bytes.Equal(p.PDU, want) {
				t.Fatalf("PDU\n got %X\nwant %X", p.PDU, want)
			}
			d, err := DecodeSubmit(p.PDU)
			if err != nil {
				t.Fatal(err)
			}
			if d.Text == "" && !bytes.Equal(d.Data, bin.Payload) {
				t.Fatalf("decoded text %q data %q", d.Text, d.Data)
			}
		})
	}
}

// GSM-alphabet coding groups whose text needs UCS2 switch alphabet within the
// group that can say so, keeping the class; a "discard message" indication
// has no UCS2 form and is refused.
func TestEncodeSubmitDCSUpgrade(t *testing.T) {
	latin := []byte("Cr\xeape") // ê (Latin-1 0xEA) is not in the GSM 7-bit alphabet
	for _, tc := range []struct {
		dc, want byte
	}{{0x10, 0x18}, {0x11, 0x19}, {0x50, 0x58}, {0xF0, 0x18}, {0xF3, 0x1B}, {0xD8, 0xE8}, {0xD0, 0xE0}} {
		ps := sendAndRead(t, Submit{Dest: "+1", DataCoding: tc.dc, Payload: latin}, 0)
		if len(ps) != 1 || ps[0].DCS != tc.want || ps[0].Text != "Crêpe" {
			t.Errorf("0x%02X: TP-DCS 0x%02X text %q, want 0x%02X %q", tc.dc, ps[0].DCS, ps[0].Text, tc.want, "Crêpe")
		}
	}
	_, err := EncodeSubmit(Submit{Dest: "+1", DataCoding: 0xC8, Payload: latin}, 0)
	var e *Error
	if !errors.As(err, &e) || e.Field != "data_coding" {
		t.Errorf("0xC8 with non-GSM text: err = %v", err)
	}
	// A long flash message keeps its class in every part.
	long := bytes.Repeat([]byte("a"), 200)
	for i, p := range sendAndRead(t, Submit{Dest: "+1", DataCoding: 0xF0, Payload: long}, 1) {
		if p.DCS != 0xF0 {
			t.Errorf("part %d: TP-DCS 0x%02X, want 0xF0", i+1, p.DCS)
		}
	}
}

// Refused: values the modem path cannot encode — the reserved groups
// 0x80-0xBF, compressed text (bit 5 of groups 00xx and 01xx), the reserved
// alphabet 11 in bits 3-2, and SMPP codings we do not transcode. UCS2 by DCS
// must have an even length.
func TestEncodeSubmitDCSRefused(t *testing.T) {
	for _, dc := range []byte{0x05, 0x09, 0x0C, 0x1C, 0x1F, 0x20, 0x28, 0x3F, 0x4C, 0x5F, 0x60, 0x7F, 0x80, 0xA5, 0xBF} {
		t.Run(fmt.Sprintf("0x%02X", dc), func(t *testing.T) {
			_, err := EncodeSubmit(Submit{Dest: "+1", DataCoding: dc, Payload: []byte("hello!")}, 0)
			var e *Error
			if !errors.As(err, &e) || e.Field != "data_coding" {
				t.Errorf("err = %v, want a data_coding *Error", err)
			}
		})
	}
	for _, dc := range []byte{0x0B, 0x18, 0x48, 0xE0} {
		_, err := EncodeSubmit(Submit{Dest: "+1", DataCoding: dc, Payload: []byte{0x4F, 0x60, 0x59}}, 0)
		var e *Error
		if !errors.As(err, &e) || e.Field != "short_message" {
			t.Errorf("0x%02X odd UCS2: err = %v", dc, err)
		}
	}
}

// Any data_coding and payload (a platform's own UDH is kept unchecked, so it
// is left out here): EncodeSubmit never panics, answers an *Error
// or parts that decode, and a message class given by the platform is the
// class of every part.
func FuzzEncodeSubmitAnyDCS(f *testing.F) {
	f.Add(byte(0x18), []byte{0x4E, 0x2D, 0x65, 0x87})
	f.Add(byte(0xF0), []byte("flash"))
	f.Add(byte(0xD8), []byte("Cr\xeape"))
	f.Add(byte(0x0F), []byte{0xD6, 0xD0})
	f.Fuzz(func(t *testing.T, dc byte, p []byte) {
		parts, err := EncodeSubmit(Submit{Dest: "+8613800138000", DataCoding: dc, Payload: p}, 7)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			return
		}
		hasClass := (dc >= 0x10 && dc < 0x80 && dc&0x10 != 0) || dc >= 0xF0
		for i, part := range parts {
			d, err := DecodeSubmit(part.PDU)
			if err != nil {
				t.Fatalf("part %d does not decode: %v", i+1, err)
			}
			if hasClass {
				gotClass := (d.DCS < 0x80 && d.DCS&0x10 != 0) || d.DCS >= 0xF0
				if !gotClass || d.DCS&0x03 != dc&0x03 {
					t.Fatalf("data_coding 0x%02X went as TP-DCS 0x%02X: class lost", dc, d.DCS)
				}
			}
		}
	})
}
