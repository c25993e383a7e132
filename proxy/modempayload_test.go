package proxy

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/routing"
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

// A submit routed to the modems only (no carrier for its number) that no
// modem can send is refused at once, with the status of why, rather than
// accepted and failed UNDELIV later; one that a modem can send, such as a
// long binary message with a port header (sent as a concatenated series),
// is queued.
func TestModemOnlyRouteRefusesUnsendable(t *testing.T) {
	table, err := routing.New("86", "", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	st := openTestBolt(t)
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st, Router: table, Log: zap.NewNop()})
	t.Cleanup(func() { cancel(); d.Wait() })
	d.SetFailover(NewFailover(d, &fakePool{}, FailoverConfig{}, zap.NewNop()))
	port := []byte{6, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0}
	payload := func(udh []byte, n int) []TLV {
		return []TLV{{Tag: tagMessagePayload, Value: append(append([]byte{}, udh...), make([]byte, n)...)}}
	}
	for _, tc := range []struct {
		name string
		sm   ShortMessage
		want uint32
	}{
		{"port header, 307 octets", ShortMessage{DataCoding: 4, ESMClass: 0x40, TLVs: payload(port, 307)}, statusOK},
		{"port header, 255 parts", ShortMessage{DataCoding: 4, ESMClass: 0x40, TLVs: payload(port, 128*255)}, statusOK},
		{"port header, 256 parts", ShortMessage{DataCoding: 4, ESMClass: 0x40, TLVs: payload(port, 128*255+1)}, statusInvMsgLen},
		{"no header, 256 parts", ShortMessage{DataCoding: 4, TLVs: payload(nil, 134*255+1)}, statusInvMsgLen},
		{"EMS header, 200 octets", ShortMessage{DataCoding: 4, ESMClass: 0x40, TLVs: payload([]byte{5, 0x0A, 3, 0, 5, 0x10}, 200)}, statusInvMsgLen},
		{"own concatenation header, too long", ShortMessage{DataCoding: 4, ESMClass: 0x40, TLVs: payload([]byte{5, 0, 3, 1, 2, 1}, 135)}, statusInvMsgLen},
		{"UCS2 odd length", ShortMessage{DataCoding: 8, Message: []byte{0x4E, 0x2D, 0x00}}, statusInvMsgLen},
	} {
		sm := tc.sm
		sm.Source, sm.Dest = "10690001", "13800138000"
		if out := d.Submit(ctx, "acct", &sm, nil); out.Status != tc.want {
			t.Errorf("%s: status %#x, want %#x", tc.name, out.Status, tc.want)
		}
	}
}
