package proxy

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/spareline/spareline/store"
)

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
