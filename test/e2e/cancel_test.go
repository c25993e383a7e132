package e2e

import (
	"testing"
	"time"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// A platform cancels a message its carrier still holds (scheduled: its
// receipt has not gone out). spareline relays the cancel_sm to that carrier
// naming the carrier's own id exactly as its submit_sm_resp wrote it (this
// carrier answers in hex and writes receipts in decimal, so the id receipts
// are matched by is another string) and the original addresses; the
// platform gets the carrier's OK, a DELETED receipt, query_sm says DELETED,
// and the carrier never sends the message's receipt. A message the carrier
// no longer holds gets the carrier's own refusal, and a finished message is
// refused without troubling the carrier.
func TestCancelSMRelayedToTheCarrier(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		telecom := e.smscs["telecom"]
		telecom.HoldReceipts(true) // the carrier holds its messages: not delivered yet
		c := e.dial("platform", "secret", platform.BindTRX)
		const dest = "13312345678"
		target, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: dest, Text: "drill at 15:00", RegisteredDelivery: 1})
		if err != nil || target.Status != 0 {
			t.Fatalf("submit: %v status 0x%X", err, target.Status)
		}
		noReceipt, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: dest, Text: "no receipt asked"})
		if err != nil || noReceipt.Status != 0 {
			t.Fatalf("submit: %v status 0x%X", err, noReceipt.Status)
		}
		sent := telecom.Received()
		if len(sent) != 2 {
			t.Fatalf("the carrier has %d messages, want 2", len(sent))
		}

		q := dialQuerySession(t, e, "platform", "secret")
		if s := q.cancel(target.MessageID, "10690001", ""); s != 0 {
			t.Fatalf("cancel of a message the carrier holds: 0x%X, want OK", s)
		}
		cs := telecom.Cancels()
		if len(cs) != 1 {
			t.Fatalf("the carrier got %d cancel_sm, want 1", len(cs))
		}
		want := smscsim.Cancel{ServiceType: sent[0].ServiceType, MessageID: sent[0].ID, SourceTON: sent[0].SourceTON,
			SourceNPI: sent[0].SourceNPI, Source: sent[0].Source, DestTON: sent[0].DestTON, DestNPI: sent[0].DestNPI,
			Dest: sent[0].Dest}
		if cs[0] != want {
			t.Fatalf("the carrier's cancel_sm %+v\nwant %+v (its own id %q and the submit's addresses)", cs[0], want, sent[0].ID)
		}
		if r := e.nextReceipt(c); r.ID != target.MessageID || r.Stat != "DELETED" || r.State != 4 {
			t.Fatalf("receipt %+v state %d, want DELETED (4) for %s", r.ReceiptFields, r.State, target.MessageID)
		}
		if got := q.query(target.MessageID, ""); got.Status != 0 || got.State != 4 || got.FinalDate == "" {
			t.Fatalf("cancelled message: %+v, want DELETED (4) with a final_date", got)
		}

		// A message the carrier delivered at once (no receipt asked): the
		// carrier refuses, and the platform gets its status.
		if s := q.cancel(noReceipt.MessageID, "", ""); s != qRCancelFail {
			t.Fatalf("cancel the carrier refuses: 0x%X, want its ESME_RCANCELFAIL", s)
		}
		if cs := telecom.Cancels(); len(cs) != 2 || cs[1].MessageID != sent[1].ID || cs[1].Status != qRCancelFail {
			t.Fatalf("the carrier's cancels %+v, want a second one for %s, refused", cs, sent[1].ID)
		}
		// A finished message: refused here, the carrier not asked.
		if s := q.cancel(target.MessageID, "", ""); s != qRCancelFail {
			t.Fatalf("second cancel: 0x%X, want ESME_RCANCELFAIL", s)
		}
		if n := len(telecom.Cancels()); n != 2 {
			t.Fatalf("the carrier got %d cancel_sm, want still 2", n)
		}

		// The carrier lets its receipts go: the cancelled message's never
		// comes; the next message's receipt is the next the platform gets.
		telecom.HoldReceipts(false)
		next, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: dest, Text: "after", RegisteredDelivery: 1})
		if err != nil || next.Status != 0 {
			t.Fatalf("submit: %v status 0x%X", err, next.Status)
		}
		if r := e.nextReceipt(c); r.ID != next.MessageID || r.Stat != "DELIVRD" {
			t.Fatalf("receipt %+v, want DELIVRD for %s (the cancelled message's never sent)", r.ReceiptFields, next.MessageID)
		}
		if st := telecom.Stats(); st.ReceiptsSent != 1 {
			t.Fatalf("the carrier sent %d receipts, want 1", st.ReceiptsSent)
		}
	})
}

// A carrier that does not take cancel_sm (generic_nack): the platform gets
// ESME_RCANCELFAIL, the message stays with its carrier, and its receipt
// still reaches the platform.
func TestCancelSMCarrierWithoutCancel(t *testing.T) {
	e := startEnv(t, "bolt", func(o *envOpts) {
		o.smscMutate = func(name string, so *smscsim.Options) { so.NoCancel = name == "mobile" }
	})
	mobile := e.smscs["mobile"]
	mobile.HoldReceipts(true)
	c := e.dial("platform", "secret", platform.BindTRX)
	m, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "drill", RegisteredDelivery: 1})
	if err != nil || m.Status != 0 {
		t.Fatalf("submit: %v status 0x%X", err, m.Status)
	}
	q := dialQuerySession(t, e, "platform", "secret")
	if s := q.cancel(m.MessageID, "", ""); s != qRCancelFail {
		t.Fatalf("cancel at a carrier without cancel_sm: 0x%X, want ESME_RCANCELFAIL", s)
	}
	if got := q.query(m.MessageID, ""); got.Status != 0 || got.State != 1 {
		t.Fatalf("message after the refused cancel: %+v, want ENROUTE (1)", got)
	}
	mobile.HoldReceipts(false)
	if r := e.nextReceipt(c); r.ID != m.MessageID || r.Stat != "DELIVRD" {
		t.Fatalf("receipt %+v, want DELIVRD for %s", r.ReceiptFields, m.MessageID)
	}
}

// A carrier that reports a cancelled message at once, its DELETED receipt
// before its answer to the cancel_sm: the message ends DELETED, the
// platform gets OK and one DELETED receipt, and no modem sends it (a
// DELETED receipt is never resent by modem, even with
// resend_failed_receipts).
func TestCancelSMDeletedReceiptBeforeTheAnswer(t *testing.T) {
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML), func(o *envOpts) {
		o.smscMutate = func(name string, so *smscsim.Options) {
			if name == "mobile" {
				so.ReceiptDelay, so.DeletedReceiptOnCancel = time.Minute, true // held: "scheduled"
			}
		}
	})
	c := e.dial("platform", "secret", platform.BindTRX)
	m, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "drill at 15:00", RegisteredDelivery: 1})
	if err != nil || m.Status != 0 {
		t.Fatalf("submit: %v status 0x%X", err, m.Status)
	}
	q := dialQuerySession(t, e, "platform", "secret")
	if s := q.cancel(m.MessageID, "", ""); s != 0 {
		t.Fatalf("cancel: 0x%X, want OK", s)
	}
	if r := e.nextReceipt(c); r.ID != m.MessageID || r.Stat != "DELETED" {
		t.Fatalf("receipt %+v, want DELETED for %s", r.ReceiptFields, m.MessageID)
	}
	if got := q.query(m.MessageID, ""); got.Status != 0 || got.State != 4 {
		t.Fatalf("query_sm after the cancel: %+v, want DELETED (4)", got)
	}
	// A message sent after it goes out by its carrier, and its receipt is
	// the next the platform gets: nothing of the cancelled one came between.
	e.smscs["mobile"].SetBehaviour(nil)
	if n := len(sims[0].Sent()); n != 0 {
		t.Fatalf("the modem sent %d messages, want none", n)
	}
	select {
	case r := <-c.Receipts():
		t.Fatalf("a further receipt %+v", r.ReceiptFields)
	default:
	}
}

// A message its carrier accepted without a message_id cannot be cancelled
// there: a cancel_sm without one would cancel every message from that
// source to that destination (§4.9.1).
func TestCancelSMNotRelayedWithoutTheCarriersID(t *testing.T) {
	e := startEnv(t, "bolt")
	mobile := e.smscs["mobile"]
	mobile.SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{NoID: true} })
	c := e.dial("platform", "secret", platform.BindTRX)
	m, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "no id"})
	if err != nil || m.Status != 0 {
		t.Fatalf("submit: %v status 0x%X", err, m.Status)
	}
	q := dialQuerySession(t, e, "platform", "secret")
	if s := q.cancel(m.MessageID, "", ""); s != qRCancelFail {
		t.Fatalf("cancel: 0x%X, want ESME_RCANCELFAIL", s)
	}
	if n := len(mobile.Cancels()); n != 0 {
		t.Fatalf("the carrier got %d cancel_sm, want none", n)
	}
}
