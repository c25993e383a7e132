package platform

import (
	"testing"
	"unicode/utf8"
)

func TestParseReceiptText(t *testing.T) {
	cases := map[string]ReceiptFields{
		"id:3E8 sub:001 dlvrd:001 submit date:2503040506 done date:2503040507 stat:DELIVRD err:000 text:hello world": {
			ID: "3E8", Sub: "001", Dlvrd: "001", SubmitDate: "2503040506", DoneDate: "2503040507", Stat: "DELIVRD", Err: "000", Text: "hello world"},
		// Appendix B spells "Text:"; some carriers upper-case keys or drop fields
		"ID:77 SUB:001 DLVRD:000 SUBMIT DATE:2503040506 DONE DATE:2503040507 STAT:UNDELIV ERR:001 Text:x y": {
			ID: "77", Sub: "001", Dlvrd: "000", SubmitDate: "2503040506", DoneDate: "2503040507", Stat: "UNDELIV", Err: "001", Text: "x y"},
		"id:1 stat:EXPIRED": {ID: "1", Stat: "EXPIRED"},
	}
	for in, want := range cases {
		got, err := ParseReceiptText(in)
		if err != nil || got != want {
			t.Errorf("%q:\n got %+v %v\nwant %+v", in, got, err, want)
		}
	}
	if _, err := ParseReceiptText("stat:DELIVRD"); err == nil {
		t.Error("a receipt without id was accepted")
	}
}

func TestSplitText(t *testing.T) {
	parts, dc, err := SplitText(string(make([]byte, 0)) + "短信")
	if err != nil || len(parts) != 1 || dc != 8 {
		t.Fatalf("%d parts dc %d %v", len(parts), dc, err)
	}
	// an escape pair (GSM 7-bit "€" = 1B 65) is never cut
	text := ""
	for i := 0; i < 152; i++ {
		text += "a"
	}
	text += "€€€€€" // 152 + 5*2 = 162 septets: two parts
	parts, dc, err = SplitText(text)
	if err != nil || dc != 0 || len(parts) != 2 || len(parts[0]) != 152 {
		t.Fatalf("escape split: %d parts, first %d octets, %v", len(parts), len(parts[0]), err)
	}
}

func FuzzParseReceiptText(f *testing.F) {
	f.Add("id:3E8 sub:001 dlvrd:001 submit date:2503040506 done date:2503040507 stat:DELIVRD err:000 text:hello")
	f.Add("ID:1 Text:")
	f.Add("err:id: id:err: text:id:")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReceiptText(s)
		if err == nil && r.ID == "" {
			t.Fatal("nil error without id")
		}
	})
}

func FuzzParseDeliverBody(f *testing.F) {
	f.Add([]byte("\x00\x00\x00123\x00\x00\x00456\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x05id:1 \x00\x1e\x00\x021\x00"))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 8, 0, 1, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDeliverBody(b)
		if err != nil {
			return
		}
		if len(d.ShortMessage) > len(b) {
			t.Fatal("short_message longer than the body")
		}
		_ = d.IsReceipt()
	})
}

func FuzzSplitText(f *testing.F) {
	f.Add("hello")
	f.Add("中文短信")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || len(s) > 2000 {
			return
		}
		parts, dc, err := SplitText(s)
		if err != nil {
			return
		}
		for _, p := range parts {
			if (len(parts) > 1 && ((dc == 0 && len(p) > 153) || (dc == 8 && len(p) > 134))) || len(p) > 160 {
				t.Fatalf("part of %d octets (dc %d, %d parts)", len(p), dc, len(parts))
			}
		}
	})
}
