package modem_test

import (
	"context"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/test/modemsim"
)

// nextIncoming is the text of the next message the pool hands over.
func nextIncoming(t *testing.T, ctx context.Context, p *modem.Pool, want string) {
	t.Helper()
	if in := takeIncoming(t, ctx, p); in.Text != want {
		t.Fatalf("incoming %q, want %q", in.Text, want)
	}
}

// takeIncoming is the pool's next incoming message.
func takeIncoming(t *testing.T, ctx context.Context, p *modem.Pool) modem.Incoming {
	t.Helper()
	select {
	case in := <-p.Incoming():
		return in
	case <-ctx.Done():
		t.Fatal("no incoming message")
	}
	return modem.Incoming{}
}

// controlNextAndSIMEmpty delivers a control message and checks that it is
// the next one handed over (a duplicate would come before it) and that the
// SIM is empty afterwards.
func controlNextAndSIMEmpty(t *testing.T, ctx context.Context, sim *modemsim.Sim, p *modem.Pool) {
	t.Helper()
	if err := sim.Deliver("+8613900000001", "control"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "control")
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left in the SIM", n)
	}
}

// nextReport checks the TP-MR of the next status report the pool hands over.
func nextReport(t *testing.T, ctx context.Context, p *modem.Pool, want int) {
	t.Helper()
	select {
	case r := <-p.Reports():
		if r.Status.MR != want {
			t.Fatalf("status report for TP-MR %d, want %d", r.Status.MR, want)
		}
	case <-ctx.Done():
		t.Fatalf("no status report for TP-MR %d", want)
	}
}

// An incoming message announced by +CMTI whose AT+CMGD fails is handed over
// at once (it could be lost otherwise) and remembered: the next probe
// deletes it, and it is not handed over a second time. A control message
// delivered afterwards comes next (a duplicate would come before it).
func TestIncomingWhoseDeleteFailedIsDeliveredOnceAndDeletedAtTheNextProbe(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	sim.FailCommand("+CMGD=1")
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 15*time.Second)
	waitUp(t, ctx, p, "m0")
	if err := sim.Deliver("+8613900000001", "once"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "once")
	if err := sim.WaitCount(ctx, "+CMGD=", 2); err != nil {
		t.Fatalf("the refused delete was not tried again: %v", err)
	}
	controlNextAndSIMEmpty(t, ctx, sim, p)
}

// The same for a status report stored by the modem (AT+CNMI ds=2) and
// announced by +CDSI: one receipt to the platform, none left on the SIM.
func TestStoredReportWhoseDeleteFailedIsDeliveredOnceAndDeletedAtTheNextProbe(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{Refuse: []string{"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0"}})
	sim.FailCommand("+CMGD=1")
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 15*time.Second)
	waitUp(t, ctx, p, "m0")
	if err := sim.InjectReport(7, "+8613800138000", 0); err != nil {
		t.Fatal(err)
	}
	nextReport(t, ctx, p, 7)
	if err := sim.WaitCount(ctx, "+CMGD=", 2); err != nil {
		t.Fatalf("the refused delete was not tried again: %v", err)
	}
	if err := sim.InjectReport(200, "+8613800138000", 0); err != nil {
		t.Fatal(err)
	}
	nextReport(t, ctx, p, 200)
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left in the SIM", n)
	}
}

// The slot of a message whose delete failed may be emptied behind our back
// and taken by a new message before the retry: the retry reads it, sees
// another PDU, and leaves it (never delete a message not handed over); the
// new one is delivered when announced.
func TestRetriedDeleteLeavesANewMessageInTheSameSlot(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	sim.FailCommand("+CMGD=1")
	replaced := false
	restore := modem.SetTakenHook(func(string) {
		// On the device's goroutine, after the failed delete, before any
		// later probe.
		if !replaced {
			replaced = true
			if err := sim.ReplaceStored(1, "+8613900000002", "new one"); err != nil {
				panic(err)
			}
		}
	})
	t.Cleanup(restore) // after the pool has stopped (cleanups run last first)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 15*time.Second)
	waitUp(t, ctx, p, "m0")
	if err := sim.Deliver("+8613900000001", "old one"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "old one")
	if err := sim.WaitCount(ctx, "+CMGR=", 2); err != nil { // the retry reads the slot
		t.Fatalf("the refused delete was not tried again: %v", err)
	}
	sim.AnnounceStored(1)
	nextIncoming(t, ctx, p, "new one")
	controlNextAndSIMEmpty(t, ctx, sim, p)
}

// A modem initialised again (it restarted) before any probe retried the
// delete lists the message with AT+CMGL: it is deleted, not handed over
// again. A remembered slot that now holds another message is handed over.
func TestReadAllDeletesWithoutHandingOverAgain(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	sim.FailCommand("+CMGD=1")
	sim.FailCommand("+CMGD=2")
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.ReprobeInterval = time.Hour })
	ctx := testCtx(t, 15*time.Second)
	waitUp(t, ctx, p, "m0")
	for _, txt := range []string{"first", "second"} {
		if err := sim.Deliver("+8613900000001", txt); err != nil {
			t.Fatal(err)
		}
		nextIncoming(t, ctx, p, txt)
	}
	if err := sim.ReplaceStored(2, "+8613900000002", "third"); err != nil {
		t.Fatal(err)
	}
	cmgl := sim.Count("+CMGL=")
	sim.Reset()
	if err := sim.WaitCount(ctx, "+CMGL=", cmgl+1); err != nil {
		t.Fatalf("not read again after the restart: %v", err)
	}
	nextIncoming(t, ctx, p, "third")
	controlNextAndSIMEmpty(t, ctx, sim, p)
}

// A refusal of the retry's AT+CMGR that does not say the slot is empty (a
// bare ERROR here) leaves the message remembered: it is still on the SIM,
// and the next probe deletes it. (Forgotten, it stayed on the SIM and the
// next listing would hand it over a second time.)
func TestRetryReadRefusedKeepsTheMessageRemembered(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	sim.FailCommand("+CMGD=1")
	armed := false
	restore := modem.SetTakenHook(func(string) {
		// On the device's goroutine, after the failed delete, before the
		// retry's AT+CMGR.
		if !armed {
			armed = true
			sim.FailCommand("+CMGR=1")
		}
	})
	t.Cleanup(restore)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 15*time.Second)
	waitUp(t, ctx, p, "m0")
	if err := sim.Deliver("+8613900000001", "once"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "once")
	// The Read's AT+CMGR, the refused retry, the one after it.
	if err := sim.WaitCount(ctx, "+CMGR=", 3); err != nil {
		t.Fatalf("the delete was not tried again after a refused read: %v", err)
	}
	if err := sim.WaitCount(ctx, "+CMGD=", 2); err != nil {
		t.Fatalf("the message was not deleted after a refused read: %v", err)
	}
	controlNextAndSIMEmpty(t, ctx, sim, p)
}
