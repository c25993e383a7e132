package proxy

import (
	"fmt"
	"testing"

	"github.com/spareline/spareline/modem/sms"
)

// Every data_coding value, against the ranges of SMPP 3.4 §5.2.19 and 3GPP
// TS 23.038 §4 written out: refused only when both readings reserve it or it
// announces compressed text; everything relayed from 0x10 up (and 0x0B) can
// also go out through a modem on failover.
func TestDataCodingRefusedOnlyWhenReservedInBoth(t *testing.T) {
	in := func(dc byte, lo, hi byte) bool { return dc >= lo && dc <= hi }
	for v := range 256 {
		dc := byte(v)
		want := dc == 0x0C || // SMPP reserved; 23.038 alphabet 11 reserved
			in(dc, 0x1C, 0x1F) || in(dc, 0x4C, 0x4F) || in(dc, 0x5C, 0x5F) || // alphabet 11
			in(dc, 0x20, 0x3F) || in(dc, 0x60, 0x7F) || // compressed (TS 23.042)
			in(dc, 0x80, 0xBF) // reserved coding groups
		t.Run(fmt.Sprintf("0x%02X", dc), func(t *testing.T) {
			m := ShortMessage{DataCoding: dc, Message: []byte{0x00, 'h', 0x00, 'i'}}
			st, err := m.validateContent()
			if want && (st != 0x45 || err == nil) {
				t.Fatalf("got 0x%X %v, want ESME_RSUBMITFAIL", st, err)
			}
			if !want && (st != statusOK || err != nil) {
				t.Fatalf("got 0x%X %v, want it relayed", st, err)
			}
			if want || (dc < 0x10 && dc != 0x0B) {
				return
			}
			text := []byte("hi!!")
			if ucs2DataCoding(dc) {
				text = m.Message
			}
			if _, err := sms.EncodeSubmit(sms.Submit{Dest: "+8613800138000", DataCoding: dc, Payload: text}, 0); err != nil {
				t.Fatalf("relayed, but the modem path cannot send it: %v", err)
			}
		})
	}
}

// UCS2 by either reading must have an even length: a carrier and the modem
// path refuse half a character.
func TestDataCodingOddUCS2(t *testing.T) {
	for _, dc := range []byte{0x08, 0x0B, 0x18, 0x19, 0x48, 0x5B, 0xE0, 0xEF} {
		m := ShortMessage{DataCoding: dc, Message: []byte{0x4F, 0x60, 0x59}}
		if st, _ := m.validateContent(); st != statusInvMsgLen {
			t.Errorf("0x%02X: odd UCS2 answered 0x%X, want ESME_RINVMSGLEN", dc, st)
		}
	}
	for _, dc := range []byte{0x00, 0x10, 0x14, 0xD8, 0xF4} {
		m := ShortMessage{DataCoding: dc, Message: []byte{0x4F, 0x60, 0x59}}
		if st, err := m.validateContent(); st != statusOK {
			t.Errorf("0x%02X: three octets answered 0x%X %v", dc, st, err)
		}
	}
}
