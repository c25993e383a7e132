package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
)

// A submit_sm for an SMPP 3.3 carrier carries no optional parameters: the
// concatenation that sar_* described travels as a UDH, message_payload as
// short_message, and the other fields are the platform's.
func TestLegacySubmitBody(t *testing.T) {
	sar := func(ref uint16, total, seq byte) []TLV {
		r := binary.BigEndian.AppendUint16(nil, ref)
		return []TLV{{Tag: tagSarMsgRefNum, Value: r}, {Tag: tagSarTotalSegments, Value: []byte{total}}, {Tag: tagSarSegmentSeqnum, Value: []byte{seq}}}
	}
	text := []byte("part two of the alarm")
	for _, tc := range []struct {
		name    string
		body    []byte
		wantESM byte
		wantSM  []byte
		wantOK  bool
	}{
		{"no optional parameters", submitBody(t, "13800138000", 0, text), 0, text, true},
		{"sar, 8-bit reference", submitBody(t, "13800138000", 0, text, sar(0x2A, 3, 2)...), 0x40,
			append([]byte{5, 0, 3, 0x2A, 3, 2}, text...), true},
		{"sar, 16-bit reference", submitBody(t, "13800138000", 8, text, sar(0x1234, 2, 1)...), 0x40,
			append([]byte{6, 8, 4, 0x12, 0x34, 2, 1}, text...), true},
		{"message_payload moves into short_message", submitBody(t, "13800138000", 8, nil,
			TLV{Tag: tagMessagePayload, Value: text}, TLV{Tag: 0x0204, Value: []byte{0, 7}}), 0, text, true},
		{"a UDH already there stays; sar is dropped", submitBody(t, "13800138000", 0,
			append([]byte{5, 0, 3, 9, 2, 1}, text...), sar(9, 2, 1)...), 0, append([]byte{5, 0, 3, 9, 2, 1}, text...), true},
		{"a port header gets the concatenation element", submitBody(t, "13800138000", 4,
			append([]byte{6, 5, 4, 0x0B, 0x84, 0x23, 0xF0}, text...), sar(7, 2, 1)...), 0,
			append([]byte{11, 0, 3, 7, 2, 1, 5, 4, 0x0B, 0x84, 0x23, 0xF0}, text...), true},
		{"254 octets fit", submitBody(t, "13800138000", 8, nil, TLV{Tag: tagMessagePayload, Value: bytes.Repeat([]byte{'a'}, 254)}),
			0, bytes.Repeat([]byte{'a'}, 254), true},
		{"255 octets do not", submitBody(t, "13800138000", 8, nil, TLV{Tag: tagMessagePayload, Value: bytes.Repeat([]byte{'a'}, 255)}),
			0, nil, false},
		{"nor does a UDH that pushes a full part over", submitBody(t, "13800138000", 0, bytes.Repeat([]byte{'a'}, 250), sar(1, 2, 1)...),
			0, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, _ := ParseShortMessage(tc.body)
			if tc.name == "a UDH already there stays; sar is dropped" || tc.name == "a port header gets the concatenation element" {
				tc.body[in.esmOffset] = 0x40
				tc.wantESM = 0x40
				in, _ = ParseShortMessage(tc.body)
			}
			out, ok := legacySubmitBody(tc.body)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !ok {
				return
			}
			m, err := ParseShortMessage(out)
			if err != nil {
				t.Fatalf("the 3.3 body does not parse: %v", err)
			}
			if len(m.TLVs) != 0 {
				t.Errorf("optional parameters left: %v", m.TLVs)
			}
			if m.ESMClass != tc.wantESM || !bytes.Equal(m.Message, tc.wantSM) {
				t.Errorf("esm_class 0x%02X short_message % X; want 0x%02X % X", m.ESMClass, m.Message, tc.wantESM, tc.wantSM)
			}
			if m.Dest != in.Dest || m.Source != in.Source || m.DataCoding != in.DataCoding || m.RegisteredDelivery != in.RegisteredDelivery {
				t.Errorf("mandatory fields changed: %+v", m)
			}
		})
	}
}

func TestSCInterfaceVersion(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		v    byte
		ok   bool
	}{
		{[]byte("SMSC\x00"), 0, false},
		{[]byte("SMSC\x00\x02\x10\x00\x01\x34"), 0x34, true},
		{[]byte("SMSC\x00\x00\x1e\x00\x01x\x02\x10\x00\x01\x33"), 0x33, true},
		{[]byte("SMSC\x00\x02\x10\x00\x02\x33"), 0, false}, // length past the end
		{[]byte("SMSC"), 0, false},
	} {
		if v, ok := scInterfaceVersion(tc.body); v != tc.v || ok != tc.ok {
			t.Errorf("%q: %#x %v, want %#x %v", tc.body, v, ok, tc.v, tc.ok)
		}
	}
}

// A 3.4-configured carrier that refuses a submit with optional parameters
// as a 3.3 SMSC does gets the hint logged, once; refusals of submits without
// them, or of a carrier already bound as 3.3, say nothing.
func TestOptionalParametersRefusedHint(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	cfg := config.Carrier{Name: "mobile", InterfaceVersion: "3.4"}
	c := NewCarrier(cfg, NewHealth(3, 0, zap.NewNop()), zap.New(core))
	plain := submitBody(t, "13800138000", 0, []byte("hi"))
	withTLV := submitBody(t, "13800138000", 0, []byte("hi"), TLV{Tag: 0x0204, Value: []byte{0, 1}})
	c.noteOptionalRefused(statusInvCmdLen, plain)
	c.noteOptionalRefused(statusInvDstAdr, withTLV)
	if n := logs.Len(); n != 0 {
		t.Fatalf("%d lines for refusals that say nothing of optional parameters", n)
	}
	c.noteOptionalRefused(statusInvCmdLen, withTLV)
	c.noteOptionalRefused(0xC1, withTLV)
	if n := logs.FilterMessageSnippet("interface_version: 3.3").Len(); n != 1 {
		t.Fatalf("hint logged %d times, want once", n)
	}
	cfg.InterfaceVersion = "3.3"
	c33 := NewCarrier(cfg, NewHealth(3, 0, zap.NewNop()), zap.New(core))
	c33.noteOptionalRefused(statusInvCmdLen, withTLV)
	if n := logs.Len(); n != 1 {
		t.Fatalf("a 3.3 carrier got the hint too (%d lines)", n)
	}
}

// A part of a concatenated MO message that the carrier marked with sar_*
// reaches an SMPP 3.3 platform, which knows no optional parameters, with
// the concatenation in a UDH (esm_class UDHI), as a 3.3 carrier gets a
// platform's parts: before, the parts arrived as unrelated fragments (found
// by an independent platform-side test). A part with no room left for the
// header goes as it was.
func TestLegacyDeliverKeepsSARAsUDH(t *testing.T) {
	sar := func(ref uint16, total, seq byte) []TLV {
		r := binary.BigEndian.AppendUint16(nil, ref)
		return []TLV{{Tag: tagSarMsgRefNum, Value: r}, {Tag: tagSarTotalSegments, Value: []byte{total}}, {Tag: tagSarSegmentSeqnum, Value: []byte{seq}}}
	}
	for _, tc := range []struct {
		name    string
		body    []byte
		wantESM byte
		wantSM  []byte
	}{
		{"8-bit reference", submitBody(t, "10690001", 0, []byte("part1-"), sar(0x2A, 2, 1)...), 0x40,
			append([]byte{5, 0, 3, 0x2A, 2, 1}, "part1-"...)},
		{"16-bit reference", submitBody(t, "10690001", 8, []byte{0x4F, 0x60}, sar(0x0102, 2, 2)...), 0x40,
			[]byte{6, 8, 4, 1, 2, 2, 2, 0x4F, 0x60}},
		{"no room: as it was", submitBody(t, "10690001", 4, bytes.Repeat([]byte{'a'}, 250), sar(3, 2, 1)...), 0,
			bytes.Repeat([]byte{'a'}, 250)},
		// A carrier's invalid sar_* (§5.3.2.23-24: total 1-255, seq 1 to
		// the total) makes no valid concatenation element (23.040
		// §9.2.3.24.1): the part goes as it came, with no header.
		{"total 0: no header", submitBody(t, "10690001", 0, []byte("x"), sar(7, 0, 1)...), 0, []byte("x")},
		{"seq 0: no header", submitBody(t, "10690001", 0, []byte("x"), sar(7, 2, 0)...), 0, []byte("x")},
		{"seq above total: no header", submitBody(t, "10690001", 0, []byte("x"), sar(7, 2, 3)...), 0, []byte("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseShortMessage(legacyBody(tc.body))
			if err != nil {
				t.Fatalf("the 3.3 body does not parse: %v", err)
			}
			if len(m.TLVs) != 0 {
				t.Errorf("optional parameters left for a 3.3 platform: %v", m.TLVs)
			}
			if m.ESMClass != tc.wantESM || !bytes.Equal(m.Message, tc.wantSM) {
				t.Errorf("esm_class 0x%02X short_message % X; want 0x%02X % X", m.ESMClass, m.Message, tc.wantESM, tc.wantSM)
			}
		})
	}
}
