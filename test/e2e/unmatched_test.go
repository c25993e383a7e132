package e2e

import (
	"testing"

	"github.com/spareline/spareline/test/platform"
)

// The cut-over: a platform repointed at spareline still has messages it
// sent the carrier directly, and the carrier sends their receipts to the
// bind it now has, spareline's. No message of spareline's matches them; once
// the carrier's unmatched_receipts_after has passed, each reaches the
// platform as the carrier sent it, under the carrier's id that the platform
// got in its own submit_sm_resp. A message relayed meanwhile still gets its
// receipt under spareline's id, once.
func TestReceiptOfAMessageSentBeforeTheCutOverReachesThePlatform(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		t.Parallel() // each waits unmatched_receipts_after
		e := startEnv(t, kind, func(o *envOpts) {
			o.carrierYAML = func(string) string { return "\n    unmatched_receipts_after: 10s" }
		})
		c := e.dial("platform", "secret", platform.BindTRX)
		const preID = "7702611250001" // the carrier's id of a message sent before the cut-over
		if err := e.smscs["mobile"].SendReceipt(e.ctx, preID, "13800138000", "10690001", "DELIVRD"); err != nil {
			t.Fatalf("the carrier's receipt: %v", err)
		}
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "after the cut-over", RegisteredDelivery: 1})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit: %v status 0x%X", err, res.Status)
		}
		if r := e.nextReceipt(c); r.ID != res.MessageID || r.TLVID != res.MessageID {
			t.Fatalf("first receipt for %q (TLV %q), want the relayed message's %s: the earlier one waits for a link", r.ID, r.TLVID, res.MessageID)
		}
		r := e.nextReceipt(c)
		if r.ID != preID || r.TLVID != preID || r.Stat != "DELIVRD" || r.State != 2 {
			t.Fatalf("receipt %+v; want the carrier's own for %s, DELIVRD", r.ReceiptFields, preID)
		}
		select {
		case extra := <-c.Receipts():
			t.Fatalf("a further receipt %+v: each goes out once", extra.ReceiptFields)
		default:
		}
	})
}
