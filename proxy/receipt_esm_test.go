package proxy

import (
	"cmp"
	"context"
	"testing"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
)

// withESMClass is a deliver_sm body with its esm_class replaced.
func withESMClass(t *testing.T, sm *ShortMessage, body []byte, esm byte) []byte {
	t.Helper()
	out := append([]byte(nil), body...)
	off := len(sm.ServiceType) + 1 + 2 + len(sm.Source) + 1 + 2 + len(sm.Dest) + 1
	if out[off] != sm.ESMClass {
		t.Fatalf("esm_class not at offset %d", off)
	}
	out[off] = esm
	return out
}

// Some SMSCs mark their delivery receipts with esm_class message type 0x08
// (SMPP 3.4 §5.2.12 "SME Delivery Acknowledgement"); Kannel's ESME reads
// 0x04, 0x08 and 0x20 alike as receipts. Such a receipt, with an id that
// names our message, is a receipt: the platform gets it under our id, as
// an SMSC delivery receipt (esm_class 0x04), and the message is finished.
// Before, it went to the MO account as a message from the handset (or was
// dropped without one), and the platform never learnt the outcome.
func TestSMEAckReceiptIsAReceipt(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C8", 1)
	sm, body := carrierReceipt(t, "C8", "DELIVRD")
	body = withESMClass(t, sm, body, 0x08)
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	list, err := st.PendingDeliveries(context.Background(), "acct", 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("platform deliveries %d (%v), want the receipt", len(list), err)
	}
	got, err := ParseShortMessage(list[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if id, stat, _ := receiptFields(got.Payload()); id != platformID(m.ID) || stat != "DELIVRD" || got.ESMClass != 0x04 {
		t.Fatalf("platform got id %q stat %q esm_class 0x%02X, want %s DELIVRD 0x04", id, stat, got.ESMClass, platformID(m.ID))
	}
	rec, err := st.GetMessage(context.Background(), m.ID)
	if err != nil || rec.State != store.StateDone || rec.FinalStat != "DELIVRD" {
		t.Fatalf("message after the receipt: %+v, %v; want done, DELIVRD", rec, err)
	}
}

// An esm_class 0x08 deliver_sm with no receipt id in it (an
// acknowledgement whose content is the handset application's) stays an
// MO message.
func TestSMEAckWithoutIDStaysMO(t *testing.T) {
	sm, err := ParseShortMessage(goldenSubmit(t, "02 4F60", ""))
	if err != nil {
		t.Fatal(err)
	}
	sm.ESMClass = 0x08
	if sm.IsReceipt() {
		t.Fatal("an esm_class 0x08 message without a receipt id taken as a receipt")
	}
}

// A carrier whose submit_sm_resp gives ids in hex and whose receipt texts
// give them in decimal (receipt_id: decimal) may also send the
// receipted_message_id TLV, which SMPP 3.4 §5.3.2.12 defines as the SMSC's
// message id, i.e. as its submit_sm_resp wrote it (hex). The text's id, in
// the base receipt_id names, finds the message. Before, the TLV won and was
// read as decimal: no match, the receipt was kept as an orphan for ever and
// the platform never got it. The reverse (receipt_id: hex) likewise.
func TestReceiptTLVInTheResponseBase(t *testing.T) {
	for _, tc := range []struct{ mode, resp, text string }{
		{"decimal", "3A5F1C", "3825436"},
		{"decimal", "123456", "1193046"}, // hex of digits only
		{"hex", "1193046", "123456"},
	} {
		t.Run(tc.mode+"_"+tc.resp, func(t *testing.T) {
			st := openTestBolt(t)
			d := newTestDispatcher(t, st)
			c := NewCarrier(config.Carrier{Name: "cm", ReceiptID: tc.mode}, nil, zap.NewNop())
			m := sentMessage(t, st, d, canonicalCarrierID(tc.mode, tc.resp, false), 1)
			deliverReceiptIDs(t, d, c, tc.text, tc.resp)
			stats, ids := heldReceipts(t, st, "acct")
			if len(stats) != 1 || ids[0] != platformID(m.ID) || stats[0] != "DELIVRD" {
				t.Fatalf("platform receipts %v for %v, want one DELIVRD for %s", stats, ids, platformID(m.ID))
			}
		})
	}
}

// deliverReceiptIDs has carrier c deliver a DELIVRD receipt whose text
// names textID (no text when "") and whose receipted_message_id is tlvID
// (none when ""), and checks that it is answered OK.
func deliverReceiptIDs(t *testing.T, d *Dispatcher, c *Carrier, textID, tlvID string) {
	t.Helper()
	_, body := carrierReceipt(t, cmp.Or(textID, tlvID), "DELIVRD")
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	var tlvs []TLV
	for _, tlv := range sm.TLVs {
		if tlv.Tag == tagReceiptedMessageID {
			if tlvID == "" {
				continue
			}
			tlv.Value = append([]byte(tlvID), 0)
		}
		tlvs = append(tlvs, tlv)
	}
	text := sm.Message
	if textID == "" {
		text = nil
	}
	body = sm.rebuildBody(body, text, tlvs)
	if sm, err = ParseShortMessage(body); err != nil {
		t.Fatal(err)
	}
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
}

// Receipts whose ids are written otherwise than the submit_sm_resp wrote
// them find their message (found by an independent carrier-side test): a
// hex id in the other letter case or zero-padded (receipt_id as_is); a
// receipted_message_id that differs from the text's id, the text's being
// the one linked; with receipt_id decimal, a receipted_message_id written
// in hex as the submit_sm_resp wrote it with no letter in it (read as
// decimal first); a link made before hex ids were folded.
func TestReceiptIDWrittenOtherwise(t *testing.T) {
	for _, tc := range []struct {
		name, mode, resp, link, text, tlv string
	}{
		{"upper receipt", "as_is", "abcdef02", "", "ABCDEF02", "ABCDEF02"},
		{"lower receipt", "as_is", "ABCDEF05", "", "abcdef05", "abcdef05"},
		{"tlv upper", "as_is", "abcdef04", "", "abcdef04", "ABCDEF04"},
		{"zero-padded resp", "as_is", "00ab12", "", "ab12", ""},
		{"tlv another id", "as_is", "msg-7x", "", "msg-7x", "internal-99"},
		{"decimal tlv in hex digits", "decimal", "00123456", "", "", "00123456"},
		{"link before folding", "as_is", "ABCDEF09", "ABCDEF09", "ABCDEF09", "ABCDEF09"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openTestBolt(t)
			d := newTestDispatcher(t, st)
			c := NewCarrier(config.Carrier{Name: "cm", ReceiptID: tc.mode}, nil, zap.NewNop())
			var m *store.Message
			if tc.link != "" { // keyed as before hex ids were folded
				m = putTestMessage(t, st, d, "acct", func(m *store.Message) {
					m.Carrier, m.CarrierID, m.RegDeliv = "cm", tc.link, 1
				})
			} else {
				m = sentMessage(t, st, d, canonicalCarrierID(tc.mode, tc.resp, false), 1)
			}
			deliverReceiptIDs(t, d, c, tc.text, tc.tlv)
			rec, err := st.GetMessage(context.Background(), m.ID)
			if err != nil || rec.State != store.StateDone || rec.FinalStat != "DELIVRD" {
				t.Fatalf("message after its receipt: %+v, %v; want done, DELIVRD", rec, err)
			}
			stats, ids := heldReceipts(t, st, "acct")
			if len(stats) != 1 || (tc.text != "" && (ids[0] != platformID(m.ID) || stats[0] != "DELIVRD")) {
				t.Fatalf("platform receipts %v for %v, want one DELIVRD for %s", stats, ids, platformID(m.ID))
			}
		})
	}
}

// A receipt with no text (receipted_message_id and message_state only, as
// data_sm receipts often are) from a carrier whose submit_sm_resp ids are
// hex (receipt_id: decimal) names the message by its hex id: an id with
// letters cannot be decimal, so it is read as hex (as Kannel reads such
// ids). Before, it was kept as is and matched nothing.
func TestTextlessReceiptWithHexIDInDecimalMode(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	c := NewCarrier(config.Carrier{Name: "cm", ReceiptID: "decimal"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, canonicalCarrierID("decimal", "3A5F1C", false), 1)
	_, body := carrierReceipt(t, "3A5F1C", "DELIVRD")
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	body = sm.rebuildBody(body, nil, sm.TLVs) // the TLVs alone: receipted_message_id 3A5F1C, message_state
	if sm, err = ParseShortMessage(body); err != nil {
		t.Fatal(err)
	}
	if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	rec, err := st.GetMessage(context.Background(), m.ID)
	if err != nil || rec.State != store.StateDone || rec.FinalStat != "DELIVRD" {
		t.Fatalf("message after its receipt: %+v, %v; want done, DELIVRD", rec, err)
	}
}

// A receipt whose text has no stat: (and no message_state) says nothing
// about the outcome: the handset may have the message. It is passed to the
// platform and ends the message (UNKNOWN, as before), but it is not taken
// for a failure: resend_failed_receipts does not send the message again by
// modem (before, it did: the handset could get it twice).
func TestReceiptWithoutStatIsNotResent(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	NewFailover(d, &fakePool{}, FailoverConfig{ResendFailedReceipts: true}, zap.NewNop())
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C9", 1)
	sm, body := carrierReceipt(t, "C9", "DELIVRD")
	body = sm.rebuildBody(body, []byte("id:C9 sub:001 dlvrd:001 submit date:2611261000 done date:2611261001 err:000 text:hi"), nil)
	if sm, err := ParseShortMessage(body); err != nil {
		t.Fatal(err)
	} else if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
		t.Fatalf("deliver_sm answered %s, want OK", StatusString(s))
	}
	rec, err := st.GetMessage(context.Background(), m.ID)
	if err != nil || rec.State != store.StateDone || rec.FinalStat != "UNKNOWN" {
		t.Fatalf("message after the receipt: state %s stat %q (%v); want done, UNKNOWN, not queued for a modem",
			rec.State, rec.FinalStat, err)
	}
	if _, ids := heldReceipts(t, st, "acct"); len(ids) != 1 || ids[0] != m.ID {
		t.Fatalf("platform receipts for %v, want one for %s", ids, m.ID)
	}
}
