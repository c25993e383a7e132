package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// lateBehaviour answers the submit whose text is "late" after delay
// (beyond the gateway's response_timeout of 2 s), every other at once.
func lateBehaviour(delay time.Duration) smscsim.Behaviour {
	return func(m smscsim.Message, _ int) smscsim.Reply {
		if txt, _ := m.Text(); txt == "late" {
			return smscsim.Reply{Delay: delay}
		}
		return smscsim.Reply{}
	}
}

// A slow SMSC accepts a message after spareline's response_timeout, when
// spareline has already queued it for the modems (failover.on_unknown:
// hold). The late submit_sm_resp is not thrown away: the message leaves the
// modem queue (no second copy by modem), is recorded as the carrier's, and
// the carrier's receipt reaches the platform under spareline's id.
func TestLateAcceptanceTakesTheMessageOutOfTheModemQueue(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		_, my := startModems(t, 1)
		e := startEnv(t, kind, withHTTP(), withYAML(my), withYAML("failover:\n  on_unknown: hold\n  hold_for: 10m\n"))
		e.smscs["mobile"].SetBehaviour(lateBehaviour(3 * time.Second))
		before := scrape(t, e)
		c := e.dial("platform", "secret", platform.BindTRX)
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "late", RegisteredDelivery: 1})
		if err != nil || r.Status != 0 {
			t.Fatalf("submit: %v 0x%X (a submit the carrier does not answer in time is queued for the modems and OK-ed)", err, r.Status)
		}
		rc := e.nextReceipt(c)
		if rc.ID != r.MessageID || rc.Stat != "DELIVRD" {
			t.Fatalf("receipt %q stat %s, want the carrier's DELIVRD for %q", rc.ID, rc.Stat, r.MessageID)
		}
		m, err := e.store.GetMessage(e.ctx, r.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		if m.CarrierID == "" || m.Modem != "" {
			t.Fatalf("record: carrier id %q, modem %q; want the carrier's id and no modem", m.CarrierID, m.Modem)
		}
		if depth, _, err := e.store.ModemQueue(e.ctx); err != nil || depth != 0 {
			t.Fatalf("modem queue depth %d (%v): the late-accepted message is still queued for a second copy", depth, err)
		}
		// Counted once the take-back is done, which may be just after the
		// receipt it delivered reached the platform.
		waitScrapeWhy(t, e, func(m metrics) string {
			if d := m.delta(before, "spareline_late_answers_total", "carrier", "mobile", "outcome", "taken_back"); d != 1 {
				return fmt.Sprintf("late acceptance outcome taken_back rose by %v, want 1", d)
			}
			return ""
		})
	})
}

// Without modems a submit the carrier does not answer in time is refused
// (ESME_RSYSERR: the platform may send it again). The carrier's late
// acceptance is counted, and its receipt is recognised as that message's:
// nothing is left to reach the platform as an unmatched receipt under the
// carrier's id.
func TestLateAcceptanceWithoutModemsIsCountedAndItsReceiptKept(t *testing.T) {
	e := startEnv(t, "bolt", withHTTP())
	e.smscs["mobile"].SetBehaviour(lateBehaviour(3 * time.Second))
	before := scrape(t, e)
	c := e.dial("platform", "secret", platform.BindTRX)
	r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "late", RegisteredDelivery: 1})
	if err != nil || r.Status == 0 {
		t.Fatalf("submit: %v 0x%X, want a refusal after response_timeout", err, r.Status)
	}
	if err := e.smscs["mobile"].WaitUntil(e.ctx, func(s smscsim.Stats) bool { return s.ReceiptsAcked >= 1 }); err != nil {
		t.Fatalf("the carrier's receipt was never answered: %v", err)
	}
	waitScrape(t, e, func(m metrics) bool {
		return m.delta(before, "spareline_late_answers_total", "carrier", "mobile", "outcome", "refused") == 1
	})
	got := e.smscs["mobile"].Received()
	var st store.State
	for _, rec := range got {
		if txt, _ := rec.Text(); txt == "late" {
			if msg, err := e.store.FindByCarrierID(e.ctx, "mobile", rec.ReceiptID); err == nil {
				st = msg.State
			}
			// Had the receipt come before the link, it was kept aside;
			// the link took it, so nothing is left to reach the platform
			// as unmatched.
			if body, err := e.store.TakeOrphan(e.ctx, "mobile", rec.ReceiptID); !errors.Is(err, store.ErrNotFound) || body != nil {
				t.Fatalf("the carrier's receipt is still kept as unmatched (%v, %q): it would reach the platform under the carrier's id", err, body)
			}
		}
	}
	if st != store.StateFailed {
		t.Fatalf("the carrier's id resolves to a message in state %q, want it linked to the refused message (failed)", st)
	}
}

// The same while no modem is up, with failover.on_unknown: resend (the
// default): the queue workers keep looking at the queued message (its
// carrier may come back); the carrier's late acceptance still takes it
// out of the queue, and the modem that comes up later does not send it
// (a worker holding it for its look made the take-back give up: the modem
// sent a second copy).
func TestLateAcceptanceWhileNoModemIsUpTakesTheMessageBack(t *testing.T) {
	sims, my := startModems(t, 1)
	sims[0].Unplug()
	e := startEnv(t, "bolt", withHTTP(), withYAML(my), withYAML(failoverYAML))
	waitModemState(t, e, modem.StateDown)
	e.smscs["mobile"].SetBehaviour(lateBehaviour(3 * time.Second))
	before := scrape(t, e)
	c := e.dial("platform", "secret", platform.BindTRX)
	r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "late", RegisteredDelivery: 1})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, r.Status)
	}
	if rc := e.nextReceipt(c); rc.ID != r.MessageID || rc.Stat != "DELIVRD" {
		t.Fatalf("receipt %q %s, want the carrier's DELIVRD for %q", rc.ID, rc.Stat, r.MessageID)
	}
	// Counted once the take-back is done, which may be just after the
	// receipt it delivered reached the platform.
	waitScrapeWhy(t, e, func(m metrics) string {
		if d := m.delta(before, "spareline_late_answers_total", "carrier", "mobile", "outcome", "taken_back"); d != 1 {
			return fmt.Sprintf("late acceptance outcome taken_back rose by %v, want 1", d)
		}
		return ""
	})
	if err := sims[0].Replug(); err != nil {
		t.Fatal(err)
	}
	waitModemState(t, e, modem.StateUp)
	if depth, _, err := e.store.ModemQueue(e.ctx); err != nil || depth != 0 {
		t.Fatalf("modem queue depth %d (%v), want 0", depth, err)
	}
	if n := len(sims[0].Sent()); n != 0 {
		t.Fatalf("the modem sent %d messages: a second copy of one the carrier took", n)
	}
}
