package proxy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
)

// unhex joins hex fields written with spaces and comments stripped by the
// caller.
func unhex(t testing.TB, parts ...string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(parts, ""), " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hexs is the hex of an ASCII string.
func hexs(s string) string { return hex.EncodeToString([]byte(s)) }

// goldenSubmit is a submit_sm body written field by field from SMPP 3.4
// §4.4.1, with three TLVs in a deliberately unsorted order.
func goldenSubmit(t testing.TB, sm string, tlvs string) []byte {
	return unhex(t,
		"00",       // service_type: "" (default)
		"01", "01", // source_addr_ton international, npi E.164
		hexs("10690001"), "00", // source_addr
		"01", "01", // dest_addr_ton, dest_addr_npi
		hexs("8613800138000"), "00", // destination_addr
		"03",                           // esm_class: store and forward mode
		"00",                           // protocol_id
		"02",                           // priority_flag
		"00",                           // schedule_delivery_time: immediate
		hexs("000001000000000R"), "00", // validity_period: relative, one day
		"01", // registered_delivery: receipt on final outcome
		"00", // replace_if_present_flag
		"08", // data_coding: UCS2
		"00", // sm_default_msg_id
		sm,   // sm_length and short_message
		tlvs, // optional parameters (SMPP 3.4 §5.3)
	)
}

const goldenTLVs = "0204 0002 0007" + // user_message_reference 7
	"1400 0003 616263" + // vendor specific "abc"
	"020A 0002 1234" // source_port

func TestParseShortMessageGolden(t *testing.T) {
	body := goldenSubmit(t, "04 4F60 597D", goldenTLVs) // "你好" in UCS2
	m, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	if m.ServiceType != "" || m.SourceTON != 1 || m.SourceNPI != 1 || m.Source != "10690001" ||
		m.DestTON != 1 || m.DestNPI != 1 || m.Dest != "8613800138000" || m.ESMClass != 3 || m.ProtocolID != 0 ||
		m.Priority != 2 || m.ScheduleDelivery != "" || m.Validity != "000001000000000R" ||
		m.RegisteredDelivery != 1 || m.ReplaceIfPresent != 0 || m.DataCoding != 8 || m.SMDefaultMsgID != 0 {
		t.Fatalf("mandatory fields: %+v", m)
	}
	if !bytes.Equal(m.Message, []byte{0x4F, 0x60, 0x59, 0x7D}) || !bytes.Equal(m.Payload(), m.Message) {
		t.Fatalf("short_message %X", m.Message)
	}
	wantTags := []uint16{0x0204, 0x1400, 0x020A}
	if len(m.TLVs) != 3 {
		t.Fatalf("TLVs: %+v", m.TLVs)
	}
	for i, tag := range wantTags {
		if m.TLVs[i].Tag != tag {
			t.Fatalf("TLV %d tag 0x%04X, want 0x%04X (wire order)", i, m.TLVs[i].Tag, tag)
		}
	}
	if v, _ := m.TLV(0x1400); string(v) != "abc" {
		t.Fatalf("vendor TLV %q", v)
	}
	if st, err := m.validateContent(); err != nil || st != statusOK {
		t.Fatalf("valid content refused: 0x%X %v", st, err)
	}
	if out := m.rebuildBody(body, m.Message, m.TLVs); !bytes.Equal(out, body) {
		t.Fatalf("rebuild differs:\n got %X\nwant %X", out, body)
	}
}

func TestParseShortMessagePayloadTLV(t *testing.T) {
	text := strings.Repeat("long text ", 40) // 400 octets, more than short_message holds
	body := goldenSubmit(t, "00", "0424 0190 "+hexs(text)+"0204 0002 0001")
	m, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Message) != 0 || string(m.Payload()) != text {
		t.Fatalf("payload %q", m.Payload())
	}
	m.DataCoding = 0 // the golden body says UCS2; the check below is about the payload source only
	if st, err := m.validateContent(); err != nil {
		t.Fatalf("message_payload alone refused: 0x%X %v", st, err)
	}
}

func TestParseShortMessageErrors(t *testing.T) {
	full := goldenSubmit(t, "04 4F60 597D", goldenTLVs)
	destStart := bytes.Index(full, []byte("8613800138000"))
	cases := []struct {
		name   string
		body   []byte
		status uint32
		field  string
	}{
		{"unterminated destination_addr", full[:destStart+5], statusInvMsgLen, "destination_addr (no terminating NUL)"},
		{"destination_addr over 20 octets",
			append(append(append([]byte{}, full[:destStart]...), strings.Repeat("1", 21)...), full[destStart+13:]...),
			statusInvDstAdr, "destination_addr"},
		{"unterminated service_type", []byte("CMT"), statusInvMsgLen, "service_type (no terminating NUL)"},
		{"service_type of 6 octets", append([]byte("ABCDEF\x00"), full[1:]...), uint32(data.ESME_RINVSERTYP), "service_type"},
		{"body ends before data_coding", full[:bytes.Index(full, []byte("000001000000000R"))+17+2],
			statusInvMsgLen, "data_coding"},
		{"sm_length beyond the body", goldenSubmit(t, "20 4F60", ""), statusInvMsgLen, "short_message"},
		{"truncated TLV header", goldenSubmit(t, "00", "0204 00"), uint32(data.ESME_RINVOPTPARSTREAM), "optional parameter header"},
		{"TLV length beyond the body", goldenSubmit(t, "00", "0204 0002 0007 1400 0009 6162"),
			uint32(data.ESME_RINVOPTPARSTREAM), "optional parameter 0x1400 length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseShortMessage(tc.body)
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %v, want *BodyError", err)
			}
			if be.Status != tc.status || be.Field != tc.field {
				t.Fatalf("got %s (status 0x%X field %q), want status 0x%X field %q", be, be.Status, be.Field, tc.status, tc.field)
			}
			if !strings.Contains(be.Error(), tc.field) || be.Offset < 0 || be.Offset > len(tc.body) {
				t.Fatalf("error %q should name the field and a valid offset", be)
			}
		})
	}
}

func TestValidateContent(t *testing.T) {
	cases := []struct {
		name   string
		m      ShortMessage
		status uint32
	}{
		{"UDH longer than the message", ShortMessage{ESMClass: 0x40, Message: []byte{0x05, 0x00, 0x03, 0x01}}, statusInvEsmClass},
		{"UDHI on an empty message", ShortMessage{ESMClass: 0x40}, statusInvEsmClass},
		{"odd-length UCS2", ShortMessage{DataCoding: 0x08, Message: []byte{0x4F, 0x60, 0x59}}, statusInvMsgLen},
		{"odd-length UCS2 after a UDH", ShortMessage{ESMClass: 0x40, DataCoding: 0x08,
			Message: []byte{0x05, 0x00, 0x03, 0x01, 0x02, 0x01, 0x4F}}, statusInvMsgLen},
		{"both short_message and message_payload", ShortMessage{Message: []byte("a"),
			TLVs: []TLV{{Tag: tagMessagePayload, Value: []byte("b")}}}, statusInvMsgLen},
		{"short_message over 254 octets", ShortMessage{Message: make([]byte, 255)}, statusInvMsgLen},
		{"UCS2 with a UDH, even text", ShortMessage{ESMClass: 0x40, DataCoding: 0x08,
			Message: []byte{0x05, 0x00, 0x03, 0x01, 0x02, 0x01, 0x4F, 0x60}}, statusOK},
		{"254 octets", ShortMessage{Message: make([]byte, 254)}, statusOK},
		{"UDH in message_payload", ShortMessage{ESMClass: 0x40,
			TLVs: []TLV{{Tag: tagMessagePayload, Value: []byte{0x05, 0x00, 0x03, 0x01, 0x02, 0x01, 'h', 'i'}}}}, statusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tc.m.validateContent()
			if st != tc.status || (err != nil) != (tc.status != statusOK) {
				t.Fatalf("got 0x%X %v, want 0x%X", st, err, tc.status)
			}
		})
	}
}

func TestCanonicalCarrierID(t *testing.T) {
	cases := []struct {
		mode, resp, receipt, want string
	}{
		{"as_is", "AbC-1", " AbC-1 ", "AbC-1"},
		{"as_is", "0012", "0012", "12"},
		{"as_is", "12345", "0000012345", "12345"}, // receipts that pad the id
		{"as_is", "000", "0", "0"},
		{"as_is", "00ab", "00ab", "ab"},               // hex: folded
		{"as_is", "ABCDEF02", "abcdef02", "abcdef02"}, // hex in either case
		{"as_is", "00ab12", "AB12", "ab12"},           // hex zero-padded
		{"as_is", "AbC-1x", "AbC-1x", "AbC-1x"},       // not hex: case kept
		{"hex", "1234567", "12D687", "1234567"},       // resp decimal, receipt hex
		{"hex", "900000", "dbba0", "900000"},          // lower-case hex
		{"decimal", "ABC000", "11255808", "11255808"}, // resp hex, receipt decimal
		{"decimal", "abc001", "11255809", "11255809"},
	}
	for _, tc := range cases {
		r := canonicalCarrierID(tc.mode, tc.resp, false)
		c := canonicalCarrierID(tc.mode, tc.receipt, true)
		if r != tc.want || c != tc.want {
			t.Errorf("%s: resp %q -> %q, receipt %q -> %q; want both %q", tc.mode, tc.resp, r, tc.receipt, c, tc.want)
		}
	}
	// An id that is not a number in the expected base is kept as is, so it
	// still matches itself.
	if got := canonicalCarrierID("hex", "not-a-number", true); got != "not-a-number" {
		t.Errorf("unparseable id became %q", got)
	}
}

const receiptText = "id:1234567 sub:001 dlvrd:001 submit date:2503141530 done date:2503141531 stat:DELIVRD err:000 text:hello"

func TestReceiptFields(t *testing.T) {
	id, stat, errCode := receiptFields([]byte(receiptText))
	if id != "1234567" || stat != "DELIVRD" || errCode != "000" {
		t.Fatalf("got id %q stat %q err %q", id, stat, errCode)
	}
	id, stat, _ = receiptFields([]byte("ID:ab12 Stat:undeliv"))
	if id != "ab12" || stat != "UNDELIV" {
		t.Fatalf("upper-case keys: id %q stat %q", id, stat)
	}
}

// receiptBody is a deliver_sm receipt (SMPP 3.4 §4.6.1, Appendix B).
func receiptBody(t testing.TB, sm, tlvs string) []byte {
	return unhex(t, "00", "01 01", hexs("8613800138000"), "00", "01 01", hexs("10690001"), "00",
		"04", "00 00 00 00 00 00 00 00", sm, tlvs)
}

func TestRewriteReceipt(t *testing.T) {
	tlvs := "1401 0002 0102" + "001E 0008 " + hexs("1234567") + "00" + "0427 0001 02"
	t.Run("short_message", func(t *testing.T) {
		body := receiptBody(t, "66"+hexs(receiptText[:102]), tlvs)
		checkRewrite(t, body, receiptText[:102], false)
	})
	t.Run("message_payload", func(t *testing.T) {
		body := receiptBody(t, "00", "0424 0066 "+hexs(receiptText[:102])+tlvs)
		checkRewrite(t, body, receiptText[:102], true)
	})
	t.Run("non-ASCII octets before the id", func(t *testing.T) {
		// bytes.ToLower turns each invalid octet into three: the id must
		// still be found at its real offset (a fixed bug).
		text := "\xff\xfe\xfd id:1234567 stat:DELIVRD"
		out := rewriteReceiptText([]byte(text), "M42")
		if want := "\xff\xfe\xfd id:M42 stat:DELIVRD"; string(out) != want {
			t.Fatalf("got %q, want %q", out, want)
		}
	})
	t.Run("id: in the text: field is the message's, not the receipt's", func(t *testing.T) {
		text := "sub:001 stat:DELIVRD text:my id:1234567"
		if out := rewriteReceiptText([]byte(text), "M42"); string(out) != text {
			t.Fatalf("got %q, want the text unchanged", out)
		}
	})
	t.Run("fields split by tabs and line ends, as receiptFields reads them", func(t *testing.T) {
		text := "sub:001\tid:1234567\r\nstat:DELIVRD"
		if id, _, _ := receiptFields([]byte(text)); id != "1234567" {
			t.Fatalf("receiptFields read id %q", id)
		}
		if out, want := rewriteReceiptText([]byte(text), "M42"), "sub:001\tid:M42\r\nstat:DELIVRD"; string(out) != want {
			t.Fatalf("got %q, want %q", out, want)
		}
	})
	t.Run("id: inside another key is not the id", func(t *testing.T) {
		out := rewriteReceiptText([]byte("msgid:5 id:1234567 stat:DELIVRD"), "M42")
		if want := "msgid:5 id:M42 stat:DELIVRD"; string(out) != want {
			t.Fatalf("got %q, want %q", out, want)
		}
	})
}

func checkRewrite(t *testing.T, body []byte, text string, inPayload bool) {
	t.Helper()
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, stat := receiptID(sm); id != "1234567" || stat != "DELIVRD" {
		t.Fatalf("receiptID: %q %q", id, stat)
	}
	out := rewriteReceipt(sm, body, "M000042")
	got, err := ParseShortMessage(out)
	if err != nil {
		t.Fatalf("rewritten body does not parse: %v", err)
	}
	if !bytes.Equal(out[:sm.smOffset], body[:sm.smOffset]) {
		t.Fatalf("mandatory fields changed:\n got %X\nwant %X", out[:sm.smOffset], body[:sm.smOffset])
	}
	wantText := strings.Replace(text, "id:1234567", "id:M000042", 1)
	if string(got.Payload()) != wantText {
		t.Fatalf("text %q, want %q", got.Payload(), wantText)
	}
	if inPayload != (len(got.Message) == 0) {
		t.Fatalf("text moved between short_message and message_payload")
	}
	if len(got.TLVs) != len(sm.TLVs) {
		t.Fatalf("TLVs %+v, want %+v", got.TLVs, sm.TLVs)
	}
	for i, tl := range sm.TLVs {
		g := got.TLVs[i]
		if g.Tag != tl.Tag {
			t.Fatalf("TLV %d is 0x%04X, want 0x%04X (order kept)", i, g.Tag, tl.Tag)
		}
		switch tl.Tag {
		case tagReceiptedMessageID:
			if string(g.Value) != "M000042\x00" {
				t.Fatalf("receipted_message_id %q", g.Value)
			}
		case tagMessagePayload:
		default:
			if !bytes.Equal(g.Value, tl.Value) {
				t.Fatalf("TLV 0x%04X changed: %X -> %X", tl.Tag, tl.Value, g.Value)
			}
		}
	}
	if id, _, stat := receiptID(got); id != "M000042" || stat != "DELIVRD" {
		t.Fatalf("rewritten receipt reads id %q stat %q", id, stat)
	}
}

func TestValidityEnd(t *testing.T) {
	now := time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		v    string
		want time.Time
	}{
		// SMPP 3.4 §7.1.1: YYMMDDhhmmsstnnp; p = R is relative to now.
		{"000001020304000R", now.Add(24*time.Hour + 2*time.Hour + 3*time.Minute + 4*time.Second)},
		{"000100000000000R", now.Add(30 * 24 * time.Hour)},
		// Absolute: nn quarter hours ahead of (+) or behind (-) UTC.
		{"250314153000132+", time.Date(2025, 3, 14, 7, 30, 0, 100_000_000, time.UTC)},
		{"250314153000004-", time.Date(2025, 3, 14, 16, 30, 0, 0, time.UTC)},
		{"", time.Time{}},
		{"2503141530000", time.Time{}},
		{"25031415300a004-", time.Time{}},
		{"250314153000004X", time.Time{}},
	}
	for _, tc := range cases {
		if got := validityEnd(tc.v, now); !got.Equal(tc.want) {
			t.Errorf("%q: %v, want %v", tc.v, got, tc.want)
		}
	}
}

// The text: field of a receipt (SMPP 3.4 Appendix B) is the first 20
// characters of the message, whatever they say: words in it that look like
// fields are not the receipt's. A message that read "stat:UNDELIV" must not
// turn its DELIVRD receipt into a failure (resent by modem: a duplicate).
func TestReceiptFieldsIgnoreTheText(t *testing.T) {
	text := "id:77 sub:001 dlvrd:001 submit date:2503141530 done date:2503141531 stat:DELIVRD err:000 " +
		"text:see stat:UNDELIV err:99 id:5"
	id, stat, errCode := receiptFields([]byte(text))
	if id != "77" || stat != "DELIVRD" || errCode != "000" {
		t.Fatalf("got id %q stat %q err %q, want 77 DELIVRD 000", id, stat, errCode)
	}
	// Without a text: field every field is read as before.
	if id, stat, errCode := receiptFields([]byte("id:78 stat:EXPIRED err:12")); id != "78" || stat != "EXPIRED" || errCode != "12" {
		t.Fatalf("got id %q stat %q err %q", id, stat, errCode)
	}
}

// Some SMSCs write the receipt's stat in full words instead of Appendix B's
// seven-letter ones. They are read as the word they stand for, so that an
// undeliverable message fails over, a delivered one is not reported to a
// platform that asked only for failures, and query_sm tells the state.
func TestReceiptStatLongForms(t *testing.T) {
	for text, want := range map[string]string{
		"id:1 stat:DELIVERED err:000":     "DELIVRD",
		"id:1 stat:delivered err:000":     "DELIVRD",
		"id:1 stat:UNDELIVERABLE err:001": "UNDELIV",
		"id:1 stat:UNDELIVERED err:001":   "UNDELIV",
		"id:1 stat:REJECTED err:001":      "REJECTD",
		"id:1 stat:ACCEPTED err:000":      "ACCEPTD",
		"id:1 stat:EXPIRED err:000":       "EXPIRED",
		"id:1 stat:FAILED err:000":        "FAILED", // no Appendix B word: kept as sent
	} {
		if _, stat, _ := receiptFields([]byte(text)); stat != want {
			t.Errorf("%q: stat %q, want %q", text, stat, want)
		}
	}
}
