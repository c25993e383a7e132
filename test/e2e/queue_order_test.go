package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
)

// waitModemState waits until the gateway's only modem is in state want.
func waitModemState(t *testing.T, e *env, want modem.State) {
	t.Helper()
	for {
		ms := e.gw.Snapshot(e.ctx).Modems
		if len(ms) == 1 && ms[0].State == want {
			return
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("modem never %s: %+v", want, ms)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Messages queued while no modem is up (every carrier down, the modem not
// plugged in) go out, once a modem comes up, highest priority_flag first,
// then oldest: the queue's order. The workers, looking at each message in
// turn while no modem could send (its carrier may come back), put each
// back for a second; the first sends after the modem came up took the
// messages not looked at last, newest first among equals.
func TestModemQueueOrderAfterNoModemWasUp(t *testing.T) {
	sims, my := startModems(t, 1)
	sims[0].Unplug() // not there when the gateway starts: down from the start
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	for _, s := range e.smscs {
		s.Stop()
	}
	for _, cs := range carrierSetups {
		waitHealth(e.ctx, t, e.gw, cs.name, proxy.StateDown)
	}
	waitModemState(t, e, modem.StateDown)
	c := e.dial("platform", "secret", platform.BindTRX)
	prios := []byte{0, 3, 1, 2, 0, 3, 1, 2}
	for i, p := range prios {
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000",
			Text: fmt.Sprintf("p%d-#%d", p, i), Priority: p})
		if err != nil || r.Status != 0 {
			t.Fatalf("submit %d: %v 0x%X", i, err, r.Status)
		}
	}
	// Let the workers look at (and put back) queued messages, as they do
	// while no modem can send: every submit above has been looked at once
	// its queue entry was claimed.
	if err := waitQueueLooked(e, len(prios)); err != nil {
		t.Fatal(err)
	}
	if err := sims[0].Replug(); err != nil {
		t.Fatal(err)
	}
	sent, err := sims[0].WaitSent(e.ctx, len(prios))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sent {
		got = append(got, s.Text)
	}
	// The queue workers (three for one modem) take the first three in
	// order and hand them to the pool at once: the first to arrive goes
	// at once, the others wait in the pool in the queue's order, and so
	// does every later one.
	want := []string{"p3-#1", "p3-#5", "p2-#3", "p2-#7", "p1-#2", "p1-#6", "p0-#0", "p0-#4"}
	first := slices.Index(want[:3], got[0])
	if first < 0 {
		t.Fatalf("modem send order %v: the first is not one of the three first in the queue %v", got, want[:3])
	}
	rest := slices.Delete(slices.Clone(want), first, first+1)
	if !slices.Equal(got[1:], rest) {
		t.Fatalf("modem send order %v, want %s then %v (highest priority_flag first, then oldest)", got, got[0], rest)
	}
}

// waitQueueLooked waits until the queue holds n messages and the workers
// have put some of them back (not due now): the state a modem coming up
// meets.
func waitQueueLooked(e *env, n int) error {
	for {
		head, err := e.store.ModemQueueHead(e.ctx, n)
		if err != nil {
			return err
		}
		putBack := 0
		for _, q := range head {
			if !q.Claimed && q.Due.After(time.Now()) {
				putBack++
			}
		}
		if len(head) == n && putBack > 0 {
			return nil
		}
		select {
		case <-e.ctx.Done():
			return fmt.Errorf("the queue never held %d messages with some put back: %+v", n, head)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
