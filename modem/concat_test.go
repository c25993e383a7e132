package modem_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// threeParts is a 3-part GSM 7-bit message from +8613900000080: its text,
// each part's text, and its SMS-DELIVER PDUs.
func threeParts(t *testing.T) (string, []string, [][]byte) {
	t.Helper()
	parts := []string{strings.Repeat("1", 153), strings.Repeat("2", 153), strings.Repeat("3", 10)}
	text := strings.Join(parts, "")
	pdus, err := sms.EncodeDeliver("+8613900000080", text, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(pdus) != 3 {
		t.Fatalf("%d parts, want 3", len(pdus))
	}
	return text, parts, pdus
}

// runPool runs a pool of one modem on sim (named m0) until stop is called.
func runPool(t *testing.T, sim *modemsim.Sim, tune func(*modem.PoolOptions)) (p *modem.Pool, stop func()) {
	t.Helper()
	o := modem.PoolOptions{
		CommandTimeout: 2 * time.Second, SendTimeout: 5 * time.Second,
		ReprobeInterval: 50 * time.Millisecond, ReopenMin: 20 * time.Millisecond, ReopenMax: 100 * time.Millisecond,
	}
	if tune != nil {
		tune(&o)
	}
	p = modem.NewPool([]modem.Config{{Name: "m0", Device: sim.Path(), Baud: 115200}}, modem.SerialOpener, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return p, stop
}

// syncDevice sends a message through the pool: the modem's owner handles
// its job after what it was doing (deleting the parts of a message it
// handed over, say).
func syncDevice(t *testing.T, ctx context.Context, p *modem.Pool) {
	t.Helper()
	if _, err := p.Send(ctx, "sync", sms.Submit{Dest: "+1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

// Parts 1 and 3 of a 3-part message arrive (+CMTI) and are read; spareline
// restarts on the same SIM; part 2 arrives: the whole message is handed
// over once, and no part is left on the SIM. The parts of an incomplete
// message stay on the SIM (its durable copy) until the message is handed
// over, and are reassembled again from there at start-up.
func TestIncompleteConcatenatedMessageSurvivesARestart(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	text, _, pdus := threeParts(t)

	p, stop := runPool(t, sim, nil)
	waitUp(t, ctx, p, "m0")
	if err := sim.DeliverPDU(pdus[0], pdus[2]); err != nil {
		t.Fatal(err)
	}
	// The control message comes after parts 1 and 3 were read.
	if err := sim.Deliver("+8613900000001", "control"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "control")
	stop()
	if n := sim.Stored(); n != 2 {
		t.Fatalf("%d messages on the SIM after the restart, want parts 1 and 3", n)
	}

	p, _ = runPool(t, sim, nil)
	waitUp(t, ctx, p, "m0")
	if err := sim.DeliverPDU(pdus[1]); err != nil {
		t.Fatal(err)
	}
	if in := takeIncoming(t, ctx, p); in.Text != text || in.From != "+8613900000080" {
		t.Fatalf("incoming %q from %s, want the 3 parts joined", in.Text, in.From)
	}
	syncDevice(t, ctx, p)
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left on the SIM", n)
	}
	controlNextAndSIMEmpty(t, ctx, sim, p)
}

// A modem without +CMTI is polled (AT+CMGL at each probe): the parts left
// on the SIM are listed again and again, and the message is handed over
// once when its last part comes.
func TestPolledPartsAreJoinedOnce(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{Refuse: []string{
		"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0", "+CNMI=2,1,0,2,0", "+CNMI=1,1,0,2,0", "+CNMI=2,1,0,0,0", "+CNMI=1,1,0,0,0",
		"+CNMI=2,1,0,1,1", "+CNMI=1,1,0,1,1", "+CNMI=2,1,0,2,1", "+CNMI=1,1,0,2,1", "+CNMI=2,1,0,0,1", "+CNMI=1,1,0,0,1",
		"+CNMI=2,1,0,1", "+CNMI=1,1,0,1", "+CNMI=2,1,0,2", "+CNMI=1,1,0,2", "+CNMI=2,1,0,0", "+CNMI=1,1,0,0",
	}})
	ctx := testCtx(t, 30*time.Second)
	text, _, pdus := threeParts(t)
	p, _ := runPool(t, sim, nil)
	waitUp(t, ctx, p, "m0")
	if err := sim.DeliverPDU(pdus[2], pdus[0]); err != nil {
		t.Fatal(err)
	}
	n := sim.Count("+CMGL=")
	if err := sim.WaitCount(ctx, "+CMGL=", n+3); err != nil { // listed at three probes
		t.Fatal(err)
	}
	if err := sim.DeliverPDU(pdus[1]); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, text)
	controlNextAndSIMEmpty(t, ctx, sim, p)
}

// Parts 1 and 3 arrive, part 2 never does: after the reassembly timeout
// the two parts are handed over in order, a warning names the missing
// part, and the SIM is emptied of them.
func TestIncompleteConcatenatedMessageHandedOverAfterTheReassemblyTimeout(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	_, parts, pdus := threeParts(t)
	core, logs := observer.New(zap.WarnLevel)
	p, _ := runPool(t, sim, func(o *modem.PoolOptions) {
		o.Logger = zap.New(core)
		o.ReassemblyTimeout = 100 * time.Millisecond
	})
	waitUp(t, ctx, p, "m0")
	if err := sim.DeliverPDU(pdus[2], pdus[0]); err != nil {
		t.Fatal(err)
	}
	if in := takeIncoming(t, ctx, p); in.Text != parts[0]+parts[2] || in.From != "+8613900000080" {
		t.Fatalf("incoming %q from %s, want parts 1 and 3", in.Text, in.From)
	}
	found := false
	for _, e := range logs.FilterMessageSnippet("incomplete after the reassembly timeout").All() {
		if ints, ok := e.ContextMap()["missing_parts"].([]any); ok && slices.Equal(ints, []any{2}) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no warning naming part 2 missing: %v", logs.All())
	}
	syncDevice(t, ctx, p)
	controlNextAndSIMEmpty(t, ctx, sim, p)
}

// The parts of incomplete messages may take at most three quarters of the
// SIM memory (AT+CPMS? says 30: 22 parts), so that the missing parts and
// other messages still find room: past that, the oldest incomplete
// message's parts are deleted from the SIM and held in memory, and the
// message is still handed over whole when its last part comes.
func TestPartsOfIncompleteMessagesLeaveRoomOnTheSIM(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	text := strings.Repeat("0123456789", 24*153/10)
	pdus, err := sms.EncodeDeliver("+8613900000080", text, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(pdus) != 24 {
		t.Fatalf("%d parts, want 24", len(pdus))
	}
	p, _ := runPool(t, sim, nil)
	waitUp(t, ctx, p, "m0")
	// A job is taken after the event in hand: sent once a part's AT+CMGR
	// came, it is done after that part was dealt with.
	reads := sim.Count("+CMGR=")
	if err := sim.DeliverPDU(pdus[:22]...); err != nil {
		t.Fatal(err)
	}
	if err := sim.WaitCount(ctx, "+CMGR=", reads+22); err != nil {
		t.Fatal(err)
	}
	syncDevice(t, ctx, p)
	if n := sim.Stored(); n != 22 {
		t.Fatalf("%d parts on the SIM, want 22", n)
	}
	if err := sim.DeliverPDU(pdus[22]); err != nil {
		t.Fatal(err)
	}
	if err := sim.WaitCount(ctx, "+CMGR=", reads+23); err != nil {
		t.Fatal(err)
	}
	syncDevice(t, ctx, p)
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d parts on the SIM, want none (23 parts take more than 3/4 of 30)", n)
	}
	if err := sim.DeliverPDU(pdus[23]); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, text)
	controlNextAndSIMEmpty(t, ctx, sim, p)
}
