package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
)

// A long message the platform segmented with sar_* parameters (SMPP 3.4
// §5.3.2.22-24; the SMSC builds the concatenation header) is sent by a
// modem (its carrier is down) as concatenated parts the handset joins into
// the whole text, not as separate messages.
func TestSARSegmentsJoinedOnTheModem(t *testing.T) {
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	e.smscs["mobile"].Stop()
	waitHealth(e.ctx, t, e.gw, "mobile", proxy.StateDown)
	c := e.dial("platform", "secret", platform.BindTRX)
	const dest = "8613800138000"
	segs := []string{"第一段：变电站告警，", "第二段：请立即处理。"}
	for i, s := range segs {
		r, err := c.Submit(e.ctx, platform.Submit{Dest: dest, Text: s, TLVs: []platform.TLV{
			{Tag: 0x020C, Value: []byte{0x01, 0x2C}}, // sar_msg_ref_num 300
			{Tag: 0x020E, Value: []byte{byte(len(segs))}},
			{Tag: 0x020F, Value: []byte{byte(i + 1)}},
		}})
		if err != nil || r.Status != 0 {
			t.Fatalf("segment %d: %v 0x%X", i+1, err, r.Status)
		}
	}
	got, err := sims[0].WaitSent(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Parts != 2 || got[0].Text != segs[0]+segs[1] {
		t.Fatalf("the modem sent %d part(s) joined as %q, want the 2 segments as one message", got[0].Parts, got[0].Text)
	}
}

// registered_delivery 0x10 alone (intermediate notifications, SMPP 3.4
// §5.2.17, no final receipt) still asks the network for status reports on
// the modem path (TP-SRR): without them no temporary report, hence no
// intermediate notification, could ever come. 0x00 asks for none.
func TestIntermediateOnlyAsksForStatusReports(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The network's own final report is an hour away: the temporary one
	// this test plays comes first.
	sim, err := modemsim.Start(ctx, modemsim.Options{Name: "gsm0", SendDelay: 2 * time.Millisecond, ReportDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	sims := []*modemsim.Sim{sim}
	my := fmt.Sprintf("modems:\n  - { name: gsm0, device: %q, max_per_minute: 100000 }\n", sim.Path())
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	e.smscs["mobile"].Stop()
	waitHealth(e.ctx, t, e.gw, "mobile", proxy.StateDown)
	c := e.dial("platform", "secret", platform.BindTRX)
	for _, rd := range []byte{0x10, 0x00} {
		if r, err := c.Submit(e.ctx, platform.Submit{Dest: "8613800138000", Text: fmt.Sprintf("rd %#x", rd), RegisteredDelivery: rd}); err != nil || r.Status != 0 {
			t.Fatalf("submit rd %#x: %v 0x%X", rd, err, r.Status)
		}
	}
	sent, err := sims[0].WaitSent(e.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sent {
		if want := m.Text == "rd 0x10"; m.StatusReport != want {
			t.Errorf("%q sent with TP-SRR %v, want %v", m.Text, m.StatusReport, want)
		}
	}
	// The network's temporary report reaches the platform as an ENROUTE
	// intermediate notification (esm_class 0x20); its final report gives
	// no final receipt (none was asked).
	for _, m := range sent {
		if m.Text != "rd 0x10" {
			continue
		}
		if err := sims[0].InjectReport(m.MRs[0], "+8613800138000", 0x21); err != nil {
			t.Fatal(err)
		}
		if rc := e.nextReceipt(c); rc.Stat != "ENROUTE" {
			t.Fatalf("receipt stat %s, want the ENROUTE intermediate notification", rc.Stat)
		}
	}
}
