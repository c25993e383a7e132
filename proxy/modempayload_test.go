package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spareline/spareline/modem/sms"
)

// A long message the platform segmented with sar_* parameters leaves the
// modem as concatenated parts a handset joins: each part's TP-UD starts with
// the 8-bit concatenation header made from the parameters.
func TestModemSubmitBuildsConcatenationFromSAR(t *testing.T) {
	seg := func(text string, dc byte, tlvs ...TLV) *ShortMessage {
		body := submitBody(t, "8613800138000", dc, []byte(text), tlvs...)
		m, err := ParseShortMessage(body)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	sar := []TLV{{Tag: tagSarMsgRefNum, Value: []byte{0x12, 0x34}}, {Tag: tagSarTotalSegments, Value: []byte{3}}, {Tag: tagSarSegmentSeqnum, Value: []byte{2}}}
	text := strings.Repeat("a", 153)
	sub := modemSubmit(seg(text, 0, sar...), "+8613800138000", true)
	if !sub.UDHI || !bytes.Equal(sub.Payload[:6], []byte{5, 0, 3, 0x34, 3, 2}) || string(sub.Payload[6:]) != text || !sub.StatusReport {
		t.Fatalf("segment 2 of 3: UDHI %v payload % x", sub.UDHI, sub.Payload[:8])
	}
	parts, err := sms.EncodeSubmit(sub, 0)
	if err != nil || len(parts) != 1 {
		t.Fatalf("encoded as %d parts: %v", len(parts), err)
	}

	// No sar_*, a single segment, or the platform's own UDH: as sent.
	for name, m := range map[string]*ShortMessage{
		"plain":     seg("hello", 0),
		"1 of 1":    seg("hello", 0, TLV{Tag: tagSarMsgRefNum, Value: []byte{0, 1}}, TLV{Tag: tagSarTotalSegments, Value: []byte{1}}, TLV{Tag: tagSarSegmentSeqnum, Value: []byte{1}}),
		"too long":  seg(strings.Repeat("b", 160), 0, sar...),
		"UCS2 full": seg(strings.Repeat("\x4e\x2d", 70), 8, sar...),
	} {
		if sub := modemSubmit(m, "+86", false); sub.UDHI || !bytes.Equal(sub.Payload, m.Payload()) {
			t.Errorf("%s: UDHI %v, payload changed", name, sub.UDHI)
		}
	}
}

// submitBody is a submit_sm body to dest with the given content and TLVs.
func submitBody(t testing.TB, dest string, dc byte, sm []byte, tlvs ...TLV) []byte {
	t.Helper()
	b := cstring(nil, "")
	b = append(b, 0, 1)
	b = cstring(b, "10690001")
	b = append(b, 1, 1)
	b = cstring(b, dest)
	b = append(b, 0, 0, 0, 0, 0, 1, 0, dc, 0, byte(len(sm)))
	b = append(b, sm...)
	return (&ShortMessage{smOffset: len(b) - len(sm) - 1}).rebuildBody(b, sm, tlvs)
}
