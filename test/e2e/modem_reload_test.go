package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
)

// With every carrier down and a backlog going out by modem, a reload swaps
// the one modem for another while it is in the middle of a send: the
// platform's session stays up, every accepted message is sent exactly once
// (counted at the emulators), the send in flight on the removed modem
// completes there, and every message gets one receipt: the removed modem's
// status report can no longer arrive, so its message ends with the
// modem_receipt_timeout's ACCEPTD, the others with DELIVRD.
func TestReloadSwapsAModemWithoutLossOrDuplicate(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	start := func(name string, reportDelay time.Duration) *modemsim.Sim {
		s, err := modemsim.Start(ctx, modemsim.Options{Name: name, SendDelay: 2 * time.Millisecond, ReportDelay: reportDelay})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// The old modem's reports would come after it is closed: never read.
	old, repl := start("old", time.Hour), start("new", 5*time.Millisecond)
	line := func(name string, s *modemsim.Sim) string {
		return fmt.Sprintf("  - { name: %s, device: %q, max_per_minute: 100000 }\n", name, s.Path())
	}
	oldLine := line("gsm-old", old)
	e := startEnv(t, "bolt", withYAML("modems:\n"+oldLine), withYAML(`failover:
  down_after_timeouts: 3
  up_after: 2s
  on_unknown: resend
  modem_receipt_timeout: 2s
`))
	for _, s := range e.smscs {
		s.Stop()
	}
	for _, cs := range carrierSetups {
		waitHealth(e.ctx, t, e.gw, cs.name, proxy.StateDown)
	}
	c := e.dial("platform", "secret", platform.BindTRX)

	old.HoldSends(true) // the first send stays in flight on the old modem
	msgs := bulk(40, func(i int) string { return carrierSetups[i%3].sample })
	ids := map[string]string{}
	var texts []string
	for i, r := range c.Bulk(e.ctx, msgs, 16) {
		if r.Err != nil || r.Status != 0 {
			t.Fatalf("message %d: %v 0x%X", i, r.Err, r.Status)
		}
		ids[r.MessageID] = msgs[i].Text
		texts = append(texts, msgs[i].Text)
	}
	if err := old.WaitCount(e.ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Parse([]byte(strings.Replace(e.cfgYAML, oldLine, line("gsm-new", repl), 1)), "e2e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.gw.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	old.HoldSends(false)

	got := waitDelivered(t, e, []*modemsim.Sim{old, repl}, texts)
	for _, txt := range texts {
		if got[txt] != 1 {
			t.Errorf("%s sent %d times", txt, got[txt])
		}
	}
	if n := len(old.Sent()); n != 1 {
		t.Errorf("the removed modem sent %d messages, want the one in flight at the reload", n)
	}
	stats := map[string]int{}
	seen := map[string]bool{}
	for range texts {
		r := e.nextReceipt(c)
		id := r.TLVID
		if _, ok := ids[id]; !ok || seen[id] {
			t.Fatalf("receipt for %q: unknown or a second one", id)
		}
		seen[id] = true
		stats[r.Stat]++
	}
	if stats["ACCEPTD"] != 1 || stats["DELIVRD"] != len(texts)-1 {
		t.Errorf("receipts %v, want 1 ACCEPTD (the removed modem's send) and %d DELIVRD", stats, len(texts)-1)
	}
	// The old modem leaves the status page once its port is closed (polled:
	// there is no event to await).
	for rows := ""; ; {
		rows = fmt.Sprint(e.gw.Snapshot(e.ctx).Modems)
		if !strings.Contains(rows, "gsm-old") && strings.Contains(rows, "gsm-new") {
			break
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("modems on the status page after the reload: %s", rows)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if len(e.gw.Server.Sessions()) != 1 {
		t.Errorf("platform sessions after the reload: %d, want 1", len(e.gw.Server.Sessions()))
	}
}
