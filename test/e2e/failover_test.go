package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// startModems starts n emulated TC35i modems on real pseudo-terminals and
// returns them with the YAML that configures them.
func startModems(t *testing.T, n int) ([]*modemsim.Sim, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var sims []*modemsim.Sim
	var y strings.Builder
	y.WriteString("modems:\n")
	for i := range n {
		s, err := modemsim.Start(ctx, modemsim.Options{Name: fmt.Sprintf("gsm%d", i), SendDelay: 2 * time.Millisecond,
			ReportDelay: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		sims = append(sims, s)
		fmt.Fprintf(&y, "  - { name: gsm%d, device: %q, max_per_minute: 100000 }\n", i, s.Path())
	}
	return sims, y.String()
}

const failoverYAML = `failover:
  down_after_timeouts: 3
  up_after: 2s
  on_unknown: resend
`

// delivered counts, by text, the messages every simulator and modem got
// (accepted by a carrier, or sent by a modem).
func delivered(e *env, sims []*modemsim.Sim) map[string]int {
	out := map[string]int{}
	for _, s := range e.smscs {
		for _, m := range s.Received() {
			if m.Status == 0 && !m.Silent {
				txt, _ := m.Text()
				out[txt]++
			}
		}
	}
	for _, s := range sims {
		for _, m := range s.Sent() {
			out[m.Text]++
		}
	}
	return out
}

func bulk(n int, dest func(i int) string) []platform.Submit {
	out := make([]platform.Submit, n)
	for i := range out {
		out[i] = platform.Submit{Src: "10690001", Dest: dest(i), Text: fmt.Sprintf("alarm-%04d", i), RegisteredDelivery: 1}
	}
	return out
}

// waitDelivered waits until every text in want has arrived somewhere.
func waitDelivered(t *testing.T, e *env, sims []*modemsim.Sim, want []string) map[string]int {
	t.Helper()
	for {
		got := delivered(e, sims)
		missing := 0
		for _, w := range want {
			if got[w] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("%d acknowledged messages never delivered", missing)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A carrier's connections close in the middle of a 1,000-message bulk: every
// message the platform got an OK for reaches exactly one simulator or modem
// (duplicates only for those in flight on the dead connections), and every
// requested receipt reaches the platform.
func TestCarrierClosedMidBulkLosesNothing(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		sims, my := startModems(t, 2)
		e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML))
		c := e.dial("platform", "secret", platform.BindTRX)
		msgs := bulk(1000, func(i int) string { return carrierSetups[i%3].sample })
		mobile := e.smscs["mobile"]
		var killedAt atomic.Int64
		go func() {
			if mobile.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.Submits >= 100 }) == nil {
				mobile.Stop() // connections closed, no new ones accepted
				killedAt.Store(time.Now().UnixNano())
			}
		}()
		res := c.Bulk(e.ctx, msgs, 32)
		var okTexts []string
		for i, r := range res {
			if r.Err == nil && r.Status == 0 {
				okTexts = append(okTexts, msgs[i].Text)
			}
		}
		if killedAt.Load() == 0 {
			t.Fatal("the carrier was never stopped")
		}
		got := waitDelivered(t, e, sims, okTexts)
		dups := 0
		for _, txt := range okTexts {
			if got[txt] > 1 {
				dups++
			}
		}
		modemSent := 0
		for _, s := range sims {
			modemSent += len(s.Sent())
		}
		if modemSent == 0 {
			t.Fatal("nothing went by modem")
		}
		// Only messages in flight on the closed connections may be duplicates.
		if dups > 2*32 {
			t.Fatalf("%d duplicates: more than could have been in flight", dups)
		}
		// The carrier comes back: receipts it still owed arrive (it resends
		// those whose connection dropped).
		if err := mobile.Restart(); err != nil {
			t.Fatal(err)
		}
		receipts := map[string]bool{}
		for len(receipts) < len(okTexts) {
			r := e.nextReceipt(c)
			receipts[r.ID] = true
		}
		t.Logf("acknowledged %d of %d, by modem %d, duplicates %d, lost 0, receipts %d", len(okTexts), len(msgs), modemSent, dups, len(receipts))
	})
}

// A carrier that keeps TCP open and stops answering is detected, and its
// traffic moves to the modems.
func TestSilentCarrierFailsOver(t *testing.T) {
	storeKinds(t, testSilentCarrierFailsOver)
}

func testSilentCarrierFailsOver(t *testing.T, kind string) {
	sims, my := startModems(t, 2)
	e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML))
	c := e.dial("platform", "secret", platform.BindTRX)
	e.smscs["unicom"].SetSilent(true)
	silentAt := time.Now()
	res, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: "silent-1", RegisteredDelivery: 1})
	if err != nil || res.Status != 0 {
		t.Fatalf("submit to a silent carrier: %v 0x%X, want OK by the modem path", err, res.Status)
	}
	answered := time.Since(silentAt)
	if _, err := sims[0].WaitSent(e.ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, e, sims, []string{"silent-1"})
	firstModem := time.Since(silentAt)
	// Two more timeouts mark it down; later messages go to the modems at once.
	for i := 2; i <= 3; i++ {
		if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: fmt.Sprintf("silent-%d", i)}); err != nil || r.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, r.Status)
		}
	}
	if st := e.gw.Health.State("unicom"); st != proxy.StateDown {
		t.Fatalf("unicom is %v after 3 timeouts, want down", st)
	}
	t0 := time.Now()
	if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: "silent-4"}); err != nil || r.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, r.Status)
	}
	direct := time.Since(t0)
	waitDelivered(t, e, sims, []string{"silent-2", "silent-3", "silent-4"})
	t.Logf("silent carrier: first answer after %v (response_timeout 2s), first modem send after %v; once down, answered in %v",
		answered, firstModem, direct)
}

// ESME_RINVDSTADR is a number error: no failover. ESME_RSYSERR is not: the
// message goes by modem and the platform gets OK.
func TestNumberErrorNotFailedOverSysErrIs(t *testing.T) {
	storeKinds(t, testNumberErrorNotFailedOverSysErrIs)
}

func testNumberErrorNotFailedOverSysErrIs(t *testing.T, kind string) {
	sims, my := startModems(t, 1)
	e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML))
	e.smscs["telecom"].SetBehaviour(smscsim.StatusByPrefix(map[string]uint32{"1331": 0x0B, "1332": 0x08}))
	c := e.dial("platform", "secret", platform.BindTRX)
	r, err := c.Submit(e.ctx, platform.Submit{Dest: "13312345678", Text: "wrong-number"})
	if err != nil || r.Status != 0x0B {
		t.Fatalf("number error: %v 0x%X, want ESME_RINVDSTADR", err, r.Status)
	}
	r, err = c.Submit(e.ctx, platform.Submit{Dest: "13322345678", Text: "syserr", RegisteredDelivery: 1})
	if err != nil || r.Status != 0 {
		t.Fatalf("system error: %v 0x%X, want OK via modem", err, r.Status)
	}
	got := waitDelivered(t, e, sims, []string{"syserr"})
	if got["wrong-number"] != 0 {
		t.Fatal("a number error was sent by modem")
	}
	rc := e.nextReceipt(c)
	if rc.ID != r.MessageID || rc.Stat != "DELIVRD" {
		t.Fatalf("modem receipt %+v for %s", rc.ReceiptFields, r.MessageID)
	}
}

// All three carriers down: the bulk completes through the modems.
func TestAllCarriersDownBulkByModem(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		sims, my := startModems(t, 2)
		e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML))
		for _, s := range e.smscs {
			s.Stop()
		}
		for _, cs := range carrierSetups {
			for e.gw.Health.State(cs.name) != proxy.StateDown {
				select {
				case <-e.ctx.Done():
					t.Fatal("carrier never marked down")
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		c := e.dial("platform", "secret", platform.BindTRX)
		msgs := bulk(90, func(i int) string { return carrierSetups[i%3].sample })
		var texts []string
		for i, r := range c.Bulk(e.ctx, msgs, 16) {
			if r.Err != nil || r.Status != 0 {
				t.Fatalf("message %d: %v 0x%X", i, r.Err, r.Status)
			}
			texts = append(texts, msgs[i].Text)
		}
		got := waitDelivered(t, e, sims, texts)
		for _, txt := range texts {
			if got[txt] != 1 {
				t.Fatalf("%s delivered %d times", txt, got[txt])
			}
		}
		for range texts {
			if r := e.nextReceipt(c); r.Stat != "DELIVRD" {
				t.Fatalf("receipt stat %s", r.Stat)
			}
		}
	})
}

// A carrier that comes back takes its queued messages back, and after
// up_after its new traffic too.
func TestRecoveredCarrierTakesTrafficBack(t *testing.T) {
	storeKinds(t, testRecoveredCarrierTakesTrafficBack)
}

func testRecoveredCarrierTakesTrafficBack(t *testing.T, kind string) {
	sims, my := startModems(t, 1)
	e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML))
	for _, s := range sims {
		s.SetRegistered(false) // the modems cannot send: messages wait in the queue
	}
	mobile := e.smscs["mobile"]
	mobile.Stop()
	for e.gw.Health.State("mobile") != proxy.StateDown {
		select {
		case <-e.ctx.Done():
			t.Fatal("mobile never marked down")
		case <-time.After(10 * time.Millisecond):
		}
	}
	c := e.dial("platform", "secret", platform.BindTRX)
	var texts []string
	for i := range 10 {
		txt := fmt.Sprintf("queued-%d", i)
		if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: txt}); err != nil || r.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, r.Status)
		}
		texts = append(texts, txt)
	}
	if err := mobile.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := mobile.WaitFor(e.ctx, 10); err != nil {
		t.Fatalf("queued messages did not go back to the carrier: %v", err)
	}
	for e.gw.Health.State("mobile") != proxy.StateUp {
		select {
		case <-e.ctx.Done():
			t.Fatal("mobile never left probation")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: "new-after-up"}); err != nil || r.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, r.Status)
	}
	if err := mobile.WaitFor(e.ctx, 11); err != nil {
		t.Fatal(err)
	}
	for _, s := range sims {
		if n := len(s.Sent()); n != 0 {
			t.Fatalf("modem sent %d messages", n)
		}
	}
}

// A message arriving on a modem reaches the platform as deliver_sm, sent
// to the SIM's own number (modems[].number, national as a carrier's MO
// messages have it), so that a platform routing MO by the number it was
// sent to can.
func TestModemMOReachesPlatform(t *testing.T) {
	sims, my := startModems(t, 1)
	my = strings.Replace(my, "max_per_minute: 100000 }", `max_per_minute: 100000, number: "+8613900000001" }`, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	c := e.dial("platform", "secret", platform.BindTRX)
	if err := sims[0].Deliver("+8613912345678", "已收到告警"); err != nil {
		t.Fatal(err)
	}
	select {
	case mo := <-c.MOs():
		if mo.Src != "13912345678" || mo.Dest != "13900000001" || mo.Text != "已收到告警" {
			t.Fatalf("MO %+v", mo)
		}
		// An international TP-OA of our country: national, TON 2 / NPI 1.
		if ton, npi := mo.Raw[17], mo.Raw[18]; ton != 2 || npi != 1 {
			t.Fatalf("MO source TON/NPI %d/%d, want 2/1", ton, npi)
		}
	case <-e.ctx.Done():
		t.Fatal("no MO from the modem")
	}
	// From abroad: international, TON 1 / NPI 1, without the '+'.
	if err := sims[0].Deliver("+447700900123", "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case mo := <-c.MOs():
		if ton, npi := mo.Raw[17], mo.Raw[18]; mo.Src != "447700900123" || ton != 1 || npi != 1 {
			t.Fatalf("MO from abroad: source %q TON/NPI %d/%d, want 447700900123 1/1", mo.Src, ton, npi)
		}
	case <-e.ctx.Done():
		t.Fatal("no MO from the modem")
	}
}
