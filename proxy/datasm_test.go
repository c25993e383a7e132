package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// dataSMBody builds a data_sm body (SMPP 3.4 §4.7.1) with the given TLVs.
func dataSMBody(src, dst string, esm, regDeliv, dc byte, tlvs ...TLV) []byte {
	b := cstring(nil, "")            // service_type
	b = append(b, 1, 1)              // source ton, npi
	b = cstring(b, src)              // source_addr
	b = append(b, 1, 1)              // dest ton, npi
	b = cstring(b, dst)              // destination_addr
	b = append(b, esm, regDeliv, dc) // esm_class, registered_delivery, data_coding
	for _, t := range tlvs {
		b = binary.BigEndian.AppendUint16(b, t.Tag)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b
}

// A receipt and an MO message by data_sm become the deliver_sm bodies that
// carry the same: addresses, esm_class, data_coding and every optional
// parameter kept, the content in message_payload, an empty short_message.
func TestDataSMAsDeliver(t *testing.T) {
	receipt := dataSMBody("13800138000", "10690001", 0x04, 0, 0,
		TLV{Tag: tagReceiptedMessageID, Value: []byte("1234567\x00")}, TLV{Tag: 0x0427, Value: []byte{2}},
		TLV{Tag: tagMessagePayload, Value: []byte(receiptText)})
	out, err := dataSMAsDeliver(receipt)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseShortMessage(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "13800138000" || m.Dest != "10690001" || !m.IsReceipt() || len(m.Message) != 0 || len(m.TLVs) != 3 {
		t.Fatalf("converted receipt: %+v", m)
	}
	if id, _, stat := receiptID(m); id != "1234567" || stat == "" {
		t.Fatalf("receipt id %q stat %q", id, stat)
	}

	mo := dataSMBody("13800138000", "10690001", 0, 0, 8, TLV{Tag: tagMessagePayload, Value: []byte{0x4F, 0x60, 0x59, 0x7D}})
	out, err = dataSMAsDeliver(mo)
	if err != nil {
		t.Fatal(err)
	}
	m, err = ParseShortMessage(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.IsReceipt() || m.DataCoding != 8 || !bytes.Equal(m.Payload(), []byte{0x4F, 0x60, 0x59, 0x7D}) {
		t.Fatalf("converted MO: %+v, payload %X", m, m.Payload())
	}

	// For an SMPP 3.3 platform: no optional parameters, the MO's content
	// moved into short_message.
	legacy, err := ParseShortMessage(legacyBody(out))
	if err != nil || len(legacy.TLVs) != 0 || !bytes.Equal(legacy.Message, []byte{0x4F, 0x60, 0x59, 0x7D}) || legacy.DataCoding != 8 {
		t.Fatalf("legacy body: %+v, %v", legacy, err)
	}

	// A receipt by data_sm with only its TLVs: an SMPP 3.3 platform gets the
	// id and stat written as the Appendix B text.
	bare, err := dataSMAsDeliver(dataSMBody("13800138000", "10690001", 0x04, 0, 0,
		TLV{Tag: tagReceiptedMessageID, Value: []byte("M42\x00")}, TLV{Tag: 0x0427, Value: []byte{5}}))
	if err != nil {
		t.Fatal(err)
	}
	lm, err := ParseShortMessage(legacyBody(bare))
	if err != nil || len(lm.TLVs) != 0 {
		t.Fatalf("legacy bare receipt: %+v, %v", lm, err)
	}
	if id, _, stat := receiptID(lm); id != "M42" || stat != "UNDELIV" {
		t.Fatalf("legacy bare receipt reads id %q stat %q from %q", id, stat, lm.Message)
	}

	for _, bad := range [][]byte{receipt[:5], receipt[:len(receipt)-2], {}} {
		var be *BodyError
		if _, err := dataSMAsDeliver(bad); !errors.As(err, &be) || be.Status == statusOK {
			t.Errorf("% X: %v, want a *BodyError with a status", bad, err)
		}
	}
}

// Whatever a carrier sends as data_sm, the conversion never panics, and a
// body it returns parses as a deliver_sm with the same addresses, esm_class,
// data_coding and optional parameters.
func FuzzDataSMAsDeliver(f *testing.F) {
	f.Add(dataSMBody("13800138000", "10690001", 0x04, 0, 0,
		TLV{Tag: tagReceiptedMessageID, Value: []byte("abc\x00")}, TLV{Tag: 0x0427, Value: []byte{2}}))
	f.Add(dataSMBody("1", "2", 0, 1, 8, TLV{Tag: tagMessagePayload, Value: []byte("hi")}))
	f.Add([]byte{0, 1, 1, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := dataSMAsDeliver(body)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) || be.Status == statusOK {
				t.Fatalf("error %v is not a *BodyError with a status", err)
			}
			return
		}
		m, err := ParseShortMessage(out)
		if err != nil {
			t.Fatalf("converted body does not parse: %v", err)
		}
		if len(m.Message) != 0 || !bytes.HasSuffix(body, out[m.tlvStart:]) {
			t.Fatalf("content moved: short_message %X, optional parameters %X", m.Message, out[m.tlvStart:])
		}
		lb := legacyBody(out)
		l, err := ParseShortMessage(lb)
		if err != nil {
			t.Fatalf("the SMPP 3.3 body does not parse: %v", err)
		}
		// Either no optional parameters, or left whole (content too long
		// for short_message).
		if len(l.TLVs) != 0 && !bytes.Equal(lb, out) {
			t.Fatalf("the SMPP 3.3 body keeps some optional parameters: %v", l.TLVs)
		}
	})
}

// A platform's data_sm becomes the submit_sm a carrier expects: content in
// short_message when it fits, qos_time_to_live as a relative validity, the
// other optional parameters kept.
func TestDataSMAsSubmit(t *testing.T) {
	ttl := binary.BigEndian.AppendUint32(nil, 90061) // 1 day 1 h 1 min 1 s
	sar := []byte{0x00, 0x07}
	body := dataSMBody("10690001", "8613800138000", 0, 1, 8,
		TLV{Tag: tagQosTimeToLive, Value: ttl},
		TLV{Tag: tagMessagePayload, Value: []byte{0x4f, 0x60, 0x59, 0x7d}},
		TLV{Tag: 0x0204, Value: sar},                                           // user_message_reference, kept
		TLV{Tag: 0x000E, Value: []byte{1}}, TLV{Tag: 0x0421, Value: []byte{1}}) // source_network_type, set_dpf: data_sm's only
	out, err := dataSMAsSubmit(body)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseShortMessage(out)
	if err != nil {
		t.Fatalf("not a submit_sm body: %v", err)
	}
	if m.Source != "10690001" || m.Dest != "8613800138000" || m.RegisteredDelivery != 1 || m.DataCoding != 8 ||
		!bytes.Equal(m.Message, []byte{0x4f, 0x60, 0x59, 0x7d}) || m.Validity != "000001010101000R" || m.ScheduleDelivery != "" {
		t.Errorf("submit_sm %+v", m)
	}
	if _, ok := m.TLV(tagMessagePayload); ok {
		t.Error("message_payload kept beside short_message (§5.3.2.32 forbids both)")
	}
	if _, ok := m.TLV(tagQosTimeToLive); ok {
		t.Error("qos_time_to_live kept: it is the validity_period now")
	}
	if v, ok := m.TLV(0x0204); !ok || !bytes.Equal(v, sar) {
		t.Errorf("user_message_reference %x %v", v, ok)
	}
	for _, tag := range []uint16{0x000E, 0x0421} {
		if _, ok := m.TLV(tag); ok {
			t.Errorf("tag 0x%04X, which only data_sm defines, kept in the submit_sm", tag)
		}
	}
	if status, err := m.validateContent(); err != nil {
		t.Errorf("refused by submit_sm's own checks: %#x %v", status, err)
	}

	long := bytes.Repeat([]byte("x"), 300)
	out, err = dataSMAsSubmit(dataSMBody("10690001", "8613800138000", 0, 0, 0, TLV{Tag: tagMessagePayload, Value: long}))
	if err != nil {
		t.Fatal(err)
	}
	if m, err = ParseShortMessage(out); err != nil || len(m.Message) != 0 || !bytes.Equal(m.Payload(), long) || m.Validity != "" {
		t.Errorf("300 octets: %v, short_message %d octets, payload %d", err, len(m.Message), len(m.Payload()))
	}

	out, err = dataSMAsSubmit(dataSMBody("1", "2", 0, 0, 0, TLV{Tag: tagQosTimeToLive, Value: []byte{0, 0, 0, 0}}))
	if m, _ := ParseShortMessage(out); err != nil || m.Validity != "" {
		t.Errorf("qos_time_to_live 0 (none): %v, validity %q", err, m.Validity)
	}
	var be *BodyError
	if _, err := dataSMAsSubmit(dataSMBody("1", "2", 0, 0, 0, TLV{Tag: tagQosTimeToLive, Value: []byte{1}})); !errors.As(err, &be) || be.Status != statusInvParLen {
		t.Errorf("qos_time_to_live of 1 octet: %v", err)
	}
	if _, err := dataSMAsSubmit(dataSMBody("1", "2", 0, 0, 0)[:5]); !errors.As(err, &be) || be.Status != statusInvMsgLen {
		t.Errorf("cut body: %v", err)
	}
}

func TestRelativeTime(t *testing.T) {
	for secs, want := range map[uint32]string{
		0: "000000000000000R", 59: "000000000059000R", 3600: "000000010000000R", 86399: "000000235959000R",
		86400: "000001000000000R", 200 * 86400: "000099000000000R",
	} {
		if got := relativeTime(secs); got != want || !smppTimeValid(got) {
			t.Errorf("relativeTime(%d) = %q, want %q", secs, got, want)
		}
	}
}

// A data_sm with message_payload twice is refused (ESME_RINVOPTPARSTREAM):
// converted, it left the submit with short_message and message_payload both
// (found by FuzzDataSMAsSubmit; its input is in testdata).
func TestDataSMWithTwoPayloadsRefused(t *testing.T) {
	body := dataSMBody("10690001", "8613800138000", 0, 1, 8,
		TLV{Tag: tagMessagePayload, Value: []byte("one")}, TLV{Tag: tagMessagePayload, Value: []byte("two")})
	_, err := dataSMAsSubmit(body)
	var be *BodyError
	if !errors.As(err, &be) || be.Status != 0xC0 {
		t.Fatalf("two message_payloads: %v, want ESME_RINVOPTPARSTREAM", err)
	}
}

func FuzzDataSMAsSubmit(f *testing.F) {
	f.Add(dataSMBody("10690001", "8613800138000", 0, 1, 8, TLV{Tag: tagMessagePayload, Value: []byte("hi")}))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := dataSMAsSubmit(body)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) || be.Status == statusOK {
				t.Fatalf("error without a status: %v", err)
			}
			return
		}
		m, err := ParseShortMessage(out)
		if err != nil {
			t.Fatalf("result does not parse as submit_sm: %v", err)
		}
		if len(m.Message) > 0 {
			if _, ok := m.TLV(tagMessagePayload); ok {
				t.Fatal("short_message and message_payload both")
			}
		}
	})
}
