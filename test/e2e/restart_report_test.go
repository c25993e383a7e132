package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
)

// Status reports of messages a modem sent before spareline restarted give
// the platform the real outcome with the message's id, not ACCEPTD at
// modem_receipt_timeout: a +CDS routed after the restart, one the modem
// stored on the SIM while spareline was stopped (read at start), and the
// two parts of a long message reported one each way. The gateway stops
// after the sends are recorded and before any report, and starts again on
// the same store (bbolt file, redis-server) and the same modem.
func TestStatusReportAfterRestart(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		// The network's own reports are an hour away: the test gives them.
		name := "rr-" + kind
		sim, err := modemsim.Start(ctx, modemsim.Options{Name: name, SendDelay: 2 * time.Millisecond, ReportDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sim.Close() })
		my := fmt.Sprintf("modems:\n  - { name: %s, device: %q, max_per_minute: 100000 }\n", name, sim.Path())
		// Without a match the receipts would be ACCEPTD after 20 s: the
		// test fails on their stat rather than on its deadline.
		e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML+"  modem_receipt_timeout: 20s\n"))
		for _, s := range e.smscs {
			s.Stop()
		}
		for _, cs := range carrierSetups {
			waitHealth(e.ctx, t, e.gw, cs.name, proxy.StateDown)
		}
		c := e.dial("platform", "secret", platform.BindTRX)
		long := strings.Repeat("substation 7 breaker trip; ", 8) // 216 septets: 2 parts
		subs := []struct {
			dest, text, want string
		}{
			{"8613800138000", "routed after the restart", "DELIVRD"},
			{"8613900139000", "stored on the SIM while stopped", "UNDELIV"},
			{"8613700137000", long, "DELIVRD"},
		}
		ids := map[string]string{} // text -> message id
		for _, s := range subs {
			r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: s.dest, Text: s.text, RegisteredDelivery: 1})
			if err != nil || r.Status != 0 {
				t.Fatalf("submit %q: %v 0x%X", s.text, err, r.Status)
			}
			ids[s.text] = r.MessageID
		}
		sent, err := sim.WaitSent(e.ctx, len(subs))
		if err != nil {
			t.Fatal(err)
		}
		mrs := map[string][]int{} // text -> TP-MRs, in part order
		for _, m := range sent {
			mrs[m.Text] = m.MRs
		}
		if len(mrs[long]) != 2 {
			t.Fatalf("the long message went as %d part(s), want 2", len(mrs[long]))
		}
		// Recorded as sent (the store knows modem and TP-MRs) before the
		// gateway stops.
		pollUntil(t, e, "every send recorded", func() bool {
			for _, id := range ids {
				m, err := e.store.GetMessage(e.ctx, id)
				if err != nil || m.State != store.StateModemSent {
					return false
				}
			}
			return true
		})
		sctx, scancel := context.WithTimeout(e.ctx, 10*time.Second)
		e.gw.Shutdown(sctx)
		scancel()

		// While spareline is stopped the modem stores two reports: the
		// second message's (failed: TP-ST 0x41, UNDELIV) and the long
		// message's first part's.
		if _, err := sim.StoreReport(mrs[subs[1].text][0], "+"+subs[1].dest, 0x41); err != nil {
			t.Fatal(err)
		}
		if _, err := sim.StoreReport(mrs[long][0], "+"+subs[2].dest, 0); err != nil {
			t.Fatal(err)
		}

		gw := secondGateway(t, e, "", "")
		pollUntil(t, e, "the modem up after the restart", func() bool {
			st := gw.Pool.Status()
			return len(st) == 1 && st[0].State == modem.StateUp
		})
		rc := dialGateway(t, e, gw, platform.BindTRX)
		// Routed now (+CDS): the first message's, in national form, and
		// the long message's second part's.
		if err := sim.InjectReport(mrs[subs[0].text][0], subs[0].dest[2:], 0); err != nil {
			t.Fatal(err)
		}
		if err := sim.InjectReport(mrs[long][1], "+"+subs[2].dest, 0); err != nil {
			t.Fatal(err)
		}

		want := map[string]string{} // message id -> stat
		for _, s := range subs {
			want[ids[s.text]] = s.want
		}
		for len(want) > 0 {
			r := e.nextReceipt(rc)
			stat, ok := want[r.ID]
			if !ok {
				t.Fatalf("receipt for %q (%s), not one of the messages waiting (or a second one)", r.ID, r.Stat)
			}
			if r.Stat != stat {
				t.Fatalf("receipt for %s: stat %s, want %s (the status report, matched after the restart)", r.ID, r.Stat, stat)
			}
			delete(want, r.ID)
		}
	})
}
