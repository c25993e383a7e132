package e2e

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// reuseAge is how old a message must be for a receipt through its link to
// be held while a newer submit is in flight: twice the harness carriers'
// response_timeout (2 s), and a little.
const reuseAge = 2*2*time.Second + 300*time.Millisecond

// reuseBehaviour: the message whose text is "A" is accepted with its
// receipt kept by the carrier (A stays sent); the one whose text is "B"
// gets A's id again, its submit_sm_resp 1 s late and its UNDELIV receipt
// sent before it. *idA is A's id once A went.
func reuseBehaviour(mu *sync.Mutex, idA *string) smscsim.Behaviour {
	return func(m smscsim.Message, _ int) smscsim.Reply {
		switch txt, _ := m.Text(); txt {
		case "A":
			return smscsim.Reply{NoReceipt: true}
		case "B":
			mu.Lock()
			defer mu.Unlock()
			return smscsim.Reply{ReuseID: *idA, Delay: time.Second, ReceiptFirst: true, ReceiptStat: "UNDELIV"}
		}
		return smscsim.Reply{}
	}
}

// receiptWithin waits up to d for a receipt (the harness's own wait is
// its 2 minutes).
func receiptWithin(t *testing.T, c *platform.Client, d time.Duration) platform.Receipt {
	t.Helper()
	select {
	case r := <-c.Receipts():
		return r
	case <-time.After(d):
		t.Fatalf("no receipt within %s", d)
	}
	return platform.Receipt{}
}

// waitLog waits for a log line of the gateway containing snippet.
func waitLog(t *testing.T, e *env, logs *observer.ObservedLogs, snippet string) {
	t.Helper()
	pollUntil(t, e, "a log line "+snippet, func() bool { return logs.FilterMessageSnippet(snippet).Len() > 0 })
}

// testReusedID runs the id reuse scenario: A (registered_delivery rdA)
// open with the carrier's id X, B given X again with its receipt before
// its submit_sm_resp, once A is age old.
func testReusedID(t *testing.T, kind string, rdA byte, age time.Duration) {
	core, logs := observer.New(zap.InfoLevel)
	e := startEnv(t, kind, withLogTee(core))
	var mu sync.Mutex
	var idA string
	mobile := e.smscs["mobile"]
	mobile.SetBehaviour(reuseBehaviour(&mu, &idA))
	c := e.dial("platform", "secret", platform.BindTRX)
	a, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "A", RegisteredDelivery: rdA})
	if err != nil || a.Status != 0 {
		t.Fatalf("submit A: %v 0x%X", err, a.Status)
	}
	sentA := time.Now()
	got := mobile.Received()
	mu.Lock()
	idA = got[len(got)-1].ID
	mu.Unlock()
	// A time to pass, not an event to wait for.
	time.Sleep(time.Until(sentA.Add(age)))

	b, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138001", Text: "B", RegisteredDelivery: 1})
	if err != nil || b.Status != 0 {
		t.Fatalf("submit B: %v 0x%X", err, b.Status)
	}
	if got := mobile.Received(); got[len(got)-1].ID != idA {
		t.Fatalf("the carrier gave B %q, want A's %q again", got[len(got)-1].ID, idA)
	}
	if r := receiptWithin(t, c, 20*time.Second); r.ID != b.MessageID || r.TLVID != b.MessageID || r.Stat != "UNDELIV" {
		t.Fatalf("receipt %+v; want B's (%s) UNDELIV, not A's (%s)", r.ReceiptFields, b.MessageID, a.MessageID)
	}
	// The hold ends (the link of B took the receipt): nothing more comes.
	waitLog(t, e, logs, "held receipt taken by the link of a newer message")
	select {
	case extra := <-c.Receipts():
		t.Fatalf("a further receipt %+v: A gets none", extra.ReceiptFields)
	default:
	}
	ma, err := e.store.GetMessage(e.ctx, a.MessageID)
	if err != nil || ma.State != store.StateSent {
		t.Fatalf("A after B's receipt: %+v %v; want still sent", ma, err)
	}
	mb, err := e.store.GetMessage(e.ctx, b.MessageID)
	if err != nil || mb.State != store.StateDone || mb.FinalStat != "UNDELIV" {
		t.Fatalf("B after its receipt: %+v %v; want done, UNDELIV", mb, err)
	}
	q := dialQuerySession(t, e, "platform", "secret")
	if got := q.query(a.MessageID, ""); got.Status != 0 || got.State != 1 || got.FinalDate != "" {
		t.Fatalf("query A: %+v, want ENROUTE (1) with no final_date", got)
	}
	if got := q.query(b.MessageID, ""); got.Status != 0 || got.State != 5 {
		t.Fatalf("query B: %+v, want UNDELIVERABLE (5)", got)
	}
}

// The carrier gives a new message B the id X of an older message A that
// is still open (its receipt kept by the carrier), and sends B's receipt
// before B's submit_sm_resp: the receipt resolves through A's stale link,
// and is held for B's link, which takes it. B gets its UNDELIV receipt; A
// gets none and stays sent (found by an independent platform-side test:
// the platform got UNDELIV under A's id, and B stayed sent for good).
func TestReceiptOfAReusedCarrierIDReachesTheNewMessage(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		t.Parallel() // each waits for A to age
		// A's link is a stale one: older than twice the carrier's
		// response_timeout.
		testReusedID(t, kind, 1, reuseAge)
	})
}

// The same when A asked for no receipt (registered_delivery 0: its link
// stays for the whole store.ttl with the message sent), however recent A
// is: a receipt for it is not expected, the newer message in flight is
// the likelier owner.
func TestReceiptOfAReusedCarrierIDOfAMessageWithoutReceipt(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		t.Parallel()
		testReusedID(t, kind, 0, 0)
	})
}

// With no newer submit in flight, a receipt for an old message goes to it
// at once: nothing is held.
func TestReceiptOfAnOldMessageNotHeldWithoutNewerSubmits(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		t.Parallel()
		core, logs := observer.New(zap.InfoLevel)
		e := startEnv(t, kind, withLogTee(core))
		mobile := e.smscs["mobile"]
		mobile.SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{NoReceipt: true} })
		c := e.dial("platform", "secret", platform.BindTRX)
		a, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "A", RegisteredDelivery: 1})
		if err != nil || a.Status != 0 {
			t.Fatalf("submit A: %v 0x%X", err, a.Status)
		}
		sentA := time.Now()
		got := mobile.Received()
		idA := got[len(got)-1].ReceiptID
		time.Sleep(time.Until(sentA.Add(reuseAge))) // A is old (a time to pass)
		if err := mobile.SendReceipt(e.ctx, idA, "13800138000", "10690001", "DELIVRD"); err != nil {
			t.Fatalf("the carrier's receipt: %v", err)
		}
		if r := e.nextReceipt(c); r.ID != a.MessageID || r.Stat != "DELIVRD" {
			t.Fatalf("receipt %+v; want A's (%s) DELIVRD", r.ReceiptFields, a.MessageID)
		}
		if held := logs.FilterMessageSnippet("receipt held").All(); len(held) != 0 {
			t.Fatalf("the receipt was held (%v) with no submit in flight", held[0].Message)
		}
	})
}
