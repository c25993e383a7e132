package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/spareline/spareline/store"
)

// heldDelivery stores a deliver_sm for account "platform" whose
// short_message is marker, and returns it.
func heldDelivery(t *testing.T, ts *testServer, marker string) *store.Delivery {
	t.Helper()
	return heldReceipt(t, ts, marker, "")
}

// heldReceipt is heldDelivery for a receipt about message msgID.
func heldReceipt(t *testing.T, ts *testServer, marker, msgID string) *store.Delivery {
	t.Helper()
	sub, err := ParseShortMessage(goldenSubmit(t, "02 4F60", ""))
	if err != nil {
		t.Fatal(err)
	}
	body := sub.rebuildBody(goldenSubmit(t, "02 4F60", ""), []byte(marker), nil)
	del := &store.Delivery{ID: ts.disp.ids.Next(), Account: "platform", Body: body, MsgID: msgID, Created: time.Now()}
	if err := ts.disp.store.AddDelivery(context.Background(), del, nil); err != nil {
		t.Fatal(err)
	}
	return del
}

// The receipts of one message reach the platform in the order they came:
// an intermediate receipt held with the final one (the platform was not
// bound) is taken before it, even when the platform first refuses it for
// now. They were sent all at once, and a platform that keeps the last
// receipt's state was left with ENROUTE for a delivered message.
func TestReceiptsOfOneMessageKeepTheirOrder(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	msgID := ts.disp.ids.Next()
	first := "stat:ENROUTE " + msgID
	final := "stat:DELIVRD " + msgID
	heldReceipt(t, ts, first, msgID)
	heldReceipt(t, ts, final, msgID)
	p := boundTCP(t, ts, cmdBindReceiver)
	var taken []string
	refused := false
	for len(taken) < 2 {
		f := p.read()
		if f.ID != cmdDeliverSM {
			t.Fatalf("platform got %+v, want deliver_sm", f.Header)
		}
		switch {
		case bytes.Contains(f.Body, []byte(first)) && !refused:
			refused = true
			p.write(cmdDeliverSMResp, statusRXTAppn, f.Seq, nil)
			continue
		case bytes.Contains(f.Body, []byte(first)):
			taken = append(taken, "ENROUTE")
		case bytes.Contains(f.Body, []byte(final)):
			taken = append(taken, "DELIVRD")
		}
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0}) // another test's leftover too
	}
	if taken[0] != "ENROUTE" || taken[1] != "DELIVRD" {
		t.Fatalf("platform took the receipts in the order %v, want [ENROUTE DELIVRD]", taken)
	}
}

// pendingHas reports whether the store still holds a delivery of "platform".
func pendingHas(t *testing.T, st store.Store, id string) bool {
	list, err := st.PendingDeliveries(context.Background(), "platform", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.ID == id {
			return true
		}
	}
	return false
}

// A platform that refuses a deliver_sm with a status that says neither
// "later" (ESME_RX_T_APPN and its kin) nor "never" (ESME_RX_P_APPN,
// ESME_RX_R_APPN) — Kannel answers ESME_RINVSRCADR for a source address it
// cannot take — gets it maxRefusals times, then no more: it was sent again
// every second without end, and deliverBatch such receipts held back every
// later receipt of the account.
func TestDeliveryRefusedEveryTimeIsDropped(t *testing.T) {
	old := refusalSpacing
	refusalSpacing = 100 * time.Millisecond
	t.Cleanup(func() { refusalSpacing = old })
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	marker := "refused test " + ts.disp.ids.Next()
	del := heldDelivery(t, ts, marker)
	p := boundTCP(t, ts, cmdBindReceiver)
	// Refused every time it comes, until the gateway drops it (a refusal
	// counts only refusalSpacing after the last counted one, so how many
	// it takes depends on the pace of the rounds).
	refusals := 0
	for deadline := time.Now().Add(hangGuard); pendingHas(t, ts.disp.store, del.ID); {
		if time.Now().After(deadline) {
			t.Fatalf("the receipt refused %d times is still held", refusals)
		}
		_ = p.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond)) // polling: a drop sends nothing
		f, err := readFrame(p.conn, 1<<20, &p.hdr)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil || f.ID != cmdDeliverSM {
			t.Fatalf("platform got %+v, %v; want deliver_sm", f.Header, err)
		}
		if !bytes.Contains(f.Body, []byte(marker)) { // another test's leftover in the shared store: take it
			p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
			continue
		}
		refusals++
		p.write(cmdDeliverSMResp, uint32(0x0A), f.Seq, nil) // ESME_RINVSRCADR
	}
	if refusals < maxRefusals {
		t.Fatalf("dropped after %d refusals, want %d at least", refusals, maxRefusals)
	}
}

// A platform that refuses everything for a moment (the rounds come one
// after the other while it refuses) loses nothing: refusals count only
// refusalSpacing apart, and the receipt taken afterwards is delivered.
func TestDeliveryRefusedInABurstIsKept(t *testing.T) {
	old := refusalSpacing
	refusalSpacing = time.Hour
	t.Cleanup(func() { refusalSpacing = old })
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	marker := "burst test " + ts.disp.ids.Next()
	del := heldDelivery(t, ts, marker)
	p := boundTCP(t, ts, cmdBindReceiver)
	for refusals := 0; refusals <= 2*maxRefusals; {
		f := p.read()
		if f.ID != cmdDeliverSM {
			t.Fatalf("platform got %+v, want deliver_sm", f.Header)
		}
		if !bytes.Contains(f.Body, []byte(marker)) { // another test's leftover in the shared store: take it
			p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
			continue
		}
		refusals++
		p.write(cmdDeliverSMResp, uint32(0x0A), f.Seq, nil) // ESME_RINVSRCADR
		if !pendingHas(t, ts.disp.store, del.ID) {
			t.Fatalf("the receipt was dropped after %d refusals in a burst", refusals)
		}
		ts.disp.kickDeliveries("platform") // the next round at once, as when others are taken
	}
	for {
		f := p.read()
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
		if bytes.Contains(f.Body, []byte(marker)) {
			break
		}
	}
	waitCond(t, "the receipt taken at last removed from the store", func() bool {
		return !pendingHas(t, ts.disp.store, del.ID)
	})
}

// ownReceipt is the receipt body spareline writes for its message msgID,
// and the receipt parsed.
func ownReceipt(t *testing.T, msgID, stat, errCode string) ([]byte, *ShortMessage) {
	t.Helper()
	sub, err := ParseShortMessage(goldenSubmit(t, "02 4F60", ""))
	if err != nil {
		t.Fatal(err)
	}
	full := buildReceipt(&store.Message{ID: msgID, Created: time.Now()}, sub, stat, errCode, time.Now())
	rcpt, err := ParseShortMessage(full)
	if err != nil {
		t.Fatal(err)
	}
	return full, rcpt
}

// A carrier that writes its receipts as text only (Appendix B, no optional
// parameters, as SMPP 3.3-era SMSCs do): an SMPP 3.4 platform still gets
// receipted_message_id with spareline's id, and message_state, as from the
// modem path. It got neither, and a platform that matches receipts by
// receipted_message_id found no id.
func TestTextOnlyReceiptGetsItsTLVs(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	msgID := ts.disp.ids.Next()
	full, rcpt := ownReceipt(t, msgID, "DELIVRD", "000")
	textOnly := rcpt.rebuildBody(full, rcpt.Message, nil)
	del := &store.Delivery{ID: ts.disp.ids.Next(), Account: "platform", Body: textOnly, MsgID: msgID, Created: time.Now()}
	if err := ts.disp.store.AddDelivery(context.Background(), del, nil); err != nil {
		t.Fatal(err)
	}
	p := boundTCP(t, ts, cmdBindReceiver)
	for {
		f := p.read()
		if f.ID != cmdDeliverSM {
			t.Fatalf("platform got %+v, want deliver_sm", f.Header)
		}
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
		if !bytes.Contains(f.Body, []byte("id:"+msgID)) {
			continue // another test's leftover in the shared store
		}
		got, err := ParseShortMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := got.TLV(tagReceiptedMessageID); string(v) != msgID+"\x00" {
			t.Errorf("receipted_message_id %q, want %q", v, msgID+"\x00")
		}
		if v, _ := got.TLV(tagMessageState); !bytes.Equal(v, []byte{2}) {
			t.Errorf("message_state %v, want [2] (DELIVERED)", v)
		}
		if !bytes.Equal(got.Message, rcpt.Message) || got.ESMClass != 0x04 {
			t.Errorf("text %q esm_class 0x%02X, want %q 0x04", got.Message, got.ESMClass, rcpt.Message)
		}
		return
	}
}

// An SMPP 3.4 platform gets in a deliver_sm only the optional parameters
// §4.6.1 defines for it: a carrier's vendor-specific ones (Infobip's
// 0x1454) and those of a data_sm that deliver_sm has not
// (source_network_type) stay behind. Relayed, they made platforms whose
// decoder checks the tags (Jasmin's) refuse the PDU, and the receipt or MO
// message never reached them.
func TestDeliverSMCarriesOnlyItsOwnTLVs(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	msgID := ts.disp.ids.Next()
	full, rcpt := ownReceipt(t, msgID, "UNDELIV", "001")
	carrierTLVs := []TLV{
		{Tag: 0x1454, Value: []byte{0, 0, 0, 1}}, // vendor-specific
		{Tag: tagReceiptedMessageID, Value: append([]byte(msgID), 0)},
		{Tag: 0x000E, Value: []byte{1}}, // source_network_type (data_sm only)
		{Tag: tagNetworkErrorCode, Value: []byte{3, 0, 1}},
		{Tag: tagMessageState, Value: []byte{5}},
	}
	receipt := rcpt.rebuildBody(full, rcpt.Message, carrierTLVs)
	sub, err := ParseShortMessage(goldenSubmit(t, "02 4F60", ""))
	if err != nil {
		t.Fatal(err)
	}
	mo := sub.rebuildBody(goldenSubmit(t, "02 4F60", ""), []byte("mo "+msgID), []TLV{{Tag: 0x1401, Value: []byte("x")}})
	for _, b := range [][]byte{receipt, mo} {
		del := &store.Delivery{ID: ts.disp.ids.Next(), Account: "platform", Body: b, Created: time.Now()}
		if err := ts.disp.store.AddDelivery(context.Background(), del, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := boundTCP(t, ts, cmdBindReceiver)
	var gotReceipt, gotMO bool
	for !gotReceipt || !gotMO {
		f := p.read()
		if f.ID != cmdDeliverSM {
			t.Fatalf("platform got %+v, want deliver_sm", f.Header)
		}
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
		got, err := ParseShortMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		var tags []uint16
		for _, tl := range got.TLVs {
			tags = append(tags, tl.Tag)
		}
		switch {
		case bytes.Contains(f.Body, []byte("id:"+msgID)):
			gotReceipt = true
			if want := []uint16{tagReceiptedMessageID, tagNetworkErrorCode, tagMessageState}; !slices.Equal(tags, want) {
				t.Errorf("receipt with optional parameters %04X, want %04X", tags, want)
			}
			if !bytes.Equal(got.Message, rcpt.Message) {
				t.Errorf("receipt text %q, want %q", got.Message, rcpt.Message)
			}
		case bytes.Contains(f.Body, []byte("mo "+msgID)):
			gotMO = true
			if len(tags) != 0 {
				t.Errorf("MO with optional parameters %04X, want none", tags)
			}
		}
	}
}

// A platform that answers a deliver_sm with generic_nack did not take it
// (SMPP 3.4 §4.3: the PDU could not be processed), whatever the status: a
// generic_nack carrying ESME_ROK, as sloppy clients send, is not the
// deliver_sm_resp that removes the receipt from the store. The receipt is
// sent again, and removed once a deliver_sm_resp OK comes.
func TestGenericNackIsNotADeliverSMResp(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	const account = "platform"
	st := ts.disp.store
	marker := []byte("generic_nack test " + ts.disp.ids.Next())
	sub, err := ParseShortMessage(goldenSubmit(t, "02 4F60", ""))
	if err != nil {
		t.Fatal(err)
	}
	body := sub.rebuildBody(goldenSubmit(t, "02 4F60", ""), marker, nil)
	del := &store.Delivery{ID: ts.disp.ids.Next(), Account: account, Body: body, Created: time.Now()}
	if err := st.AddDelivery(context.Background(), del, nil); err != nil {
		t.Fatal(err)
	}
	p := bound(t, ts, cmdBindReceiver)
	next := func() Frame {
		for {
			f := p.read()
			if f.ID == cmdDeliverSM && bytes.Contains(f.Body, marker) {
				return f
			}
			if f.ID == cmdDeliverSM { // another test's leftover in the shared store: take it
				p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
			}
		}
	}
	f := next()
	p.write(cmdGenericNack, statusOK, f.Seq, nil)
	f = next() // sent again: the generic_nack did not remove it
	p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	waitCond(t, "the answered receipt removed from the store", func() bool {
		list, err := st.PendingDeliveries(context.Background(), account, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list {
			if d.ID == del.ID {
				return false
			}
		}
		return true
	})
}
