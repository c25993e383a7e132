package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// A carrier down by timeouts (binds connected, submits unanswered) whose
// messages wait in the modem queue while no modem can send them is probed
// with a queued message: when it answers again, with no new traffic from
// the platform, it leaves down and takes its queued messages back. Before,
// probes came only from new traffic: the carrier stayed down, and the
// queue waited, for as long as the platform sent nothing.
func TestDownCarrierIsProbedWithQueuedMessages(t *testing.T) {
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	sims[0].SetRegistered(false) // the modem cannot send: the messages wait in the queue
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for st := e.gw.Pool.Status(); st[0].State == modem.StateUp; st = e.gw.Pool.Status() {
		select {
		case <-e.ctx.Done():
			t.Fatal("the modem never went down")
		case <-tick.C:
		}
	}
	mobile := e.smscs["mobile"]
	for _, conn := range mobile.BoundConns() {
		mobile.MuteSubmits(conn, true) // binds and enquire_link answered, submit_sm never
	}
	c := e.dial("platform", "secret", platform.BindTRX)
	burst := func(prefix string, n int) {
		t.Helper()
		var msgs []platform.Submit
		for i := range n {
			msgs = append(msgs, platform.Submit{Dest: "13800138000", Text: fmt.Sprintf("%s-%d", prefix, i)})
		}
		for i, r := range c.Bulk(e.ctx, msgs, n) {
			if r.Err != nil || r.Status != 0 {
				t.Fatalf("%s: %v 0x%X, want OK (by the modem path)", msgs[i].Text, r.Err, r.Status)
			}
		}
	}
	burst("timeout", 3) // three timeouts: down
	if st := e.gw.Health.State("mobile"); st != proxy.StateDown {
		t.Fatalf("mobile is %v after 3 timeouts, want down", st)
	}
	// Down: the first of these is the dispatcher's probe (unanswered: it
	// times out), the others are queued at once, for mobile once it is back.
	burst("queued", 3)
	for _, conn := range mobile.BoundConns() {
		mobile.MuteSubmits(conn, false) // mobile answers again; the platform sends nothing more
	}
	wctx, cancel := context.WithTimeout(e.ctx, 40*time.Second)
	defer cancel()
	if err := mobile.WaitUntil(wctx, func(st smscsim.Stats) bool { return st.Submits >= 6 }); err != nil {
		t.Fatalf("no queued message went to mobile after it answered again (submits %d, health %v): %v",
			mobile.Stats().Submits, e.gw.Health.State("mobile"), err)
	}
	back := map[string]int{}
	for _, m := range mobile.Received() {
		if m.Status == 0 && !m.Silent {
			txt, _ := m.Text()
			back[txt]++
		}
	}
	if back["queued-1"]+back["queued-2"]+back["queued-0"] != 2 {
		t.Fatalf("mobile took %v back, want the two queued while it was down (the probe timed out: by modem)", back)
	}
	if st := e.gw.Health.State("mobile"); st == proxy.StateDown {
		t.Fatalf("mobile still down after answering a probe")
	}
}
