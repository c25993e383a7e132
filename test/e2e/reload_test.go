package e2e

import (
	"testing"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// An operator changes the carriers with a reload (SIGHUP), not a restart:
// a new carrier is dialed and takes the numbers routed to it, a removed one
// is unbound and takes nothing more, a carrier's binds go from 2 to 3; the
// platform's session stays up through all of it and every submit is
// answered.
func TestReloadChangesCarriers(t *testing.T) {
	e := startEnv(t, "bolt")
	c := e.dial("platform", "secret", platform.BindTRX)
	newco, err := smscsim.Start(smscsim.Options{Name: "newco", SystemID: "ent01", Password: "pw-new"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = newco.Close() })

	cfg, err := config.Parse([]byte(e.cfgYAML), "e2e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var carriers []config.Carrier
	for _, cc := range cfg.Carriers {
		switch cc.Name {
		case "telecom":
			continue // removed
		case "mobile":
			cc.Binds = 3
			add := cc
			add.Name, add.Address, add.Password = "newco", newco.Addr(), "pw-new"
			add.Binds = 2
			carriers = append(carriers, add)
		}
		carriers = append(carriers, cc)
	}
	cfg.Carriers = carriers
	cfg.Routing.Prefixes = map[string]string{"1703": "newco"}
	if err := e.gw.Reload(cfg); err != nil {
		t.Fatal(err)
	}

	if err := newco.WaitUntil(e.ctx, func(s smscsim.Stats) bool { return s.Bound == 2 }); err != nil {
		t.Fatalf("new carrier never bound twice: %v", err)
	}
	if err := e.smscs["mobile"].WaitUntil(e.ctx, func(s smscsim.Stats) bool { return s.Bound == 3 }); err != nil {
		t.Fatalf("mobile never got its third bind: %v", err)
	}
	if err := e.smscs["telecom"].WaitUntil(e.ctx, func(s smscsim.Stats) bool { return s.Bound == 0 }); err != nil {
		t.Fatalf("removed carrier still bound: %v", err)
	}
	waitHealth(e.ctx, t, e.gw, "newco", proxy.StateUp)

	r, err := c.Submit(e.ctx, platform.Submit{Dest: "17031234567", Text: "to the new carrier"})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit to the new carrier's prefix: %v 0x%X", err, r.Status)
	}
	if got := newco.Received(); len(got) != 1 || got[0].Dest != "17031234567" {
		t.Fatalf("new carrier received %d submits", len(got))
	}
	r, err = c.Submit(e.ctx, platform.Submit{Dest: "13312345678", Text: "to the removed carrier"})
	if err != nil || r.Status == 0 {
		t.Fatalf("a number of the removed carrier (no modems, no default): %v 0x%X, want a refusal", err, r.Status)
	}
	if n := len(e.smscs["telecom"].Received()); n != 0 {
		t.Fatalf("removed carrier received %d submits", n)
	}
	for _, cs := range e.gw.Snapshot(e.ctx).Carriers {
		if cs.Name == "telecom" {
			t.Error("the removed carrier is still on the status page")
		}
	}
	if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: "mobile still"}); err != nil || r.Status != 0 {
		t.Fatalf("submit to mobile after the reload: %v 0x%X", err, r.Status)
	}
}

// An operator told of a carrier's maintenance window redirects its numbers
// (routing.redirect, by a reload) to another carrier: new messages for them
// go there, while the carrier's binds stay up, so that the receipt of a
// message it took before the reload still reaches the platform. The status
// page says where its numbers go. Taking the entry out sends them back.
func TestRedirectMovesACarriersNumbersAndKeepsItsReceipts(t *testing.T) {
	e := startEnv(t, "bolt")
	unicom, telecom := e.smscs["unicom"], e.smscs["telecom"]
	unicom.HoldReceipts(true) // delivered during the maintenance window
	c := e.dial("platform", "secret", platform.BindTRX)
	const dest = "13012345678" // a unicom number
	before, err := c.Submit(e.ctx, platform.Submit{Dest: dest, Text: "before the window", RegisteredDelivery: 1})
	if err != nil || before.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, before.Status)
	}

	cfg, err := config.Parse([]byte(e.cfgYAML), "e2e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Routing.Redirect = map[string]string{"unicom": "telecom"}
	if err := e.gw.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	during, err := c.Submit(e.ctx, platform.Submit{Dest: dest, Text: "during the window", RegisteredDelivery: 1})
	if err != nil || during.Status != 0 {
		t.Fatalf("submit during the window: %v 0x%X", err, during.Status)
	}
	if got := telecom.Received(); len(got) != 1 || got[0].Dest != dest {
		t.Fatalf("telecom received %+v, want the redirected message", got)
	}
	if n := len(unicom.Received()); n != 1 {
		t.Fatalf("unicom received %d messages, want only the one before the window", n)
	}
	if st := unicom.Stats(); st.Bound != e.binds {
		t.Fatalf("unicom has %d binds during the window, want %d: they stay for its receipts", st.Bound, e.binds)
	}
	var shown string
	for _, cs := range e.gw.Snapshot(e.ctx).Carriers {
		if cs.Name == "unicom" {
			shown = cs.RedirectedTo
		} else if cs.RedirectedTo != "" {
			t.Errorf("%s shows redirected_to %q", cs.Name, cs.RedirectedTo)
		}
	}
	if shown != "telecom" {
		t.Errorf("unicom's redirected_to is %q, want telecom", shown)
	}
	// unicom delivers what it took before the window.
	unicom.HoldReceipts(false)
	seen := map[string]string{}
	for len(seen) < 2 {
		r := e.nextReceipt(c)
		seen[r.ID] = r.Stat
	}
	if seen[before.MessageID] != "DELIVRD" || seen[during.MessageID] != "DELIVRD" {
		t.Fatalf("receipts %v, want DELIVRD for %s (by unicom) and %s (by telecom)", seen, before.MessageID, during.MessageID)
	}

	cfg.Routing.Redirect = nil
	if err := e.gw.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Submit(e.ctx, platform.Submit{Dest: dest, Text: "after the window"}); err != nil || r.Status != 0 {
		t.Fatalf("submit after the window: %v 0x%X", err, r.Status)
	}
	if n := len(unicom.Received()); n != 2 {
		t.Fatalf("unicom received %d messages, want 2: its numbers are back", n)
	}
}
