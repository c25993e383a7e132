package modem_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
)

// Faulty modems on real ptys next to a healthy one. The promise (package doc,
// "Failure policy" and "Duplicates"): a send the faulty modem does not confirm
// with "+CMGS: <mr>" is a temporary failure, the message is retried on the
// other modem, the faulty one is taken out after MaxErrors, and nothing is
// lost. These emulated faults never transmit, so here every message is sent
// exactly once; on real hardware a hang after the PDU may have transmitted it
// (at-least-once, documented as a possible duplicate).

// faultPool runs two modems: m0 on the faulty emulator, m1 on a healthy one.
func faultPool(t *testing.T) (bad, good *modemsim.Sim, p *modem.Pool, ctx context.Context) {
	t.Helper()
	bad = startSim(t, "bad", modemsim.Options{SendDelay: 2 * time.Millisecond})
	good = startSim(t, "good", modemsim.Options{SendDelay: 2 * time.Millisecond})
	p = startPool(t, []*modemsim.Sim{bad, good}, 0, func(o *modem.PoolOptions) {
		o.SendTimeout = 2 * time.Second // the hang is detected by this timeout
		o.MaxErrors = 1
		o.ReprobeInterval = time.Hour // once out, the faulty modem stays out for the test
	})
	ctx = testCtx(t, 90*time.Second)
	waitUp(t, ctx, p, "m0", "m1")
	return bad, good, p, ctx
}

// sendAll sends n messages concurrently and checks each arrived exactly once,
// on the healthy modem, and that the faulty modem was taken out.
func sendAll(t *testing.T, ctx context.Context, bad, good *modemsim.Sim, p *modem.Pool, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, err := p.Send(ctx, fmt.Sprint("id", i), sms.Submit{Dest: "+8613800138000", Payload: []byte(fmt.Sprintf("fault-%d", i))})
			if err != nil {
				errs <- fmt.Errorf("message %d: %w", i, err)
			} else if sent.Modem != "m1" {
				errs <- fmt.Errorf("message %d confirmed by %s, the faulty modem", i, sent.Modem)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	count := map[string]int{}
	for _, m := range good.Sent() {
		count[m.Text]++
	}
	for _, m := range bad.Sent() {
		count[m.Text]++
	}
	for i := range n {
		if c := count[fmt.Sprintf("fault-%d", i)]; c != 1 {
			t.Errorf("fault-%d sent %d times, want exactly once", i, c)
		}
	}
	for _, st := range p.Status() {
		if st.Name == "m0" && st.State == modem.StateUp {
			t.Errorf("the faulty modem is still up: %+v", st)
		}
	}
}

// A modem that gives the "> " prompt and then never answers the PDU.
func TestFaultModemHangsInCMGS(t *testing.T) {
	bad, good, p, ctx := faultPool(t)
	bad.Hang(true)
	sendAll(t, ctx, bad, good, p, 6)
}

// A modem that answers AT+CMGS with binary junk and malformed lines.
func TestFaultModemGarbageToCMGS(t *testing.T) {
	bad, good, p, ctx := faultPool(t)
	bad.SetGarbageOnSend(true)
	sendAll(t, ctx, bad, good, p, 6)
}

// A modem that answers every command with noise from power-up never comes
// up; all traffic goes to the other modem.
func TestFaultModemGarbageFromStart(t *testing.T) {
	bad := startSim(t, "bad", modemsim.Options{})
	bad.SetGarbage(true)
	good := startSim(t, "good", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{bad, good}, 0, func(o *modem.PoolOptions) {
		o.CommandTimeout = 500 * time.Millisecond
	})
	ctx := testCtx(t, 60*time.Second)
	waitUp(t, ctx, p, "m1")
	sendAll(t, ctx, bad, good, p, 4)
}
