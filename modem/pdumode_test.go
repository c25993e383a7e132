package modem_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
	"go.bug.st/serial"
)

// A TC35i on autobauding restarts without a word into its stored profile,
// here text mode (AT+CMGF=1). A send must not go out as "AT+CMGS=<length>"
// and hex text to the number "<length>": each message is sent after
// AT+CMGF=0, and reaches its destination in PDU mode.
func TestQuietRestartIntoTextModeStillSendsInPDUMode(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{TextMode: true, ReportDelay: time.Hour})
	ctx := testCtx(t, 20*time.Second)
	// A probe period longer than the test: only the send path can save it.
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.ReprobeInterval = time.Hour })
	waitUp(t, ctx, p, "m0")
	if _, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	sim.ResetQuiet()
	if _, err := p.Send(ctx, "id2", sms.Submit{Dest: "+8613800138001", Payload: []byte("after a quiet restart")}); err != nil {
		t.Fatal(err)
	}
	got, err := sim.WaitSent(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got {
		if m.TextMode {
			t.Fatalf("sent in text mode to %q: %q", m.Dest, m.Text)
		}
	}
	if got[1].Dest != "+8613800138001" || got[1].Text != "after a quiet restart" {
		t.Fatalf("second message sent as %+v", got[1])
	}
}

// A modem that refuses AT+CMGF=0 before a send is never sent to: the
// message goes out on another modem, and the refusing modem is taken out
// (initialised again, which fails while it refuses PDU mode).
func TestModemRefusingPDUModeBeforeASendIsTakenOut(t *testing.T) {
	bad := startSim(t, "bad", modemsim.Options{})
	good := startSim(t, "good", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{bad, good}, 0, func(o *modem.PoolOptions) { o.ReprobeInterval = time.Hour })
	waitUp(t, ctx, p, "m0", "m1")
	// From now on the bad one refuses PDU mode (once per command: enough
	// for the send check and the init that follows).
	bad.FailCommand("+CMGF=0")
	bad.FailCommand("+CMGF=0")
	for i := 0; i < 2; i++ { // one of them is given to the bad modem first
		s, err := p.Send(ctx, "id", sms.Submit{Dest: "+8613800138000", Payload: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if s.Modem != "m1" {
			t.Fatalf("sent on %s", s.Modem)
		}
	}
	if n := bad.Count("+CMGS="); n != 0 {
		t.Fatalf("AT+CMGS given %d times to the modem that refused PDU mode", n)
	}
}

// The health probe asks the mode too: a quiet restart into a text-mode
// profile that keeps its AT+CNMI setting (stored with AT&W) is not seen
// by AT+CNMI?, but AT+CMGF? says 1, and the modem is initialised again.
func TestProbeSeesTextMode(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{TextMode: true, ResetKeepsCNMI: true})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	n := sim.Count("+CNMI=")
	sim.ResetQuiet()
	if err := sim.WaitCount(ctx, "+CNMI=", n+1); err != nil {
		t.Fatalf("not initialised again after a quiet restart into text mode: %v", err)
	}
}

// openModem opens a sim's port as a bare Modem (no init).
func openModem(t *testing.T, sim *modemsim.Sim) *modem.Modem {
	t.Helper()
	port, err := serial.Open(sim.Path(), &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatal(err)
	}
	m := modem.New(port, modem.Options{Name: "t", CommandTimeout: 2 * time.Second})
	t.Cleanup(func() { m.Close(); _ = port.Close() })
	return m
}

// A stored message is read and deleted only in PDU mode: a modem that
// refuses AT+CMGF=0 keeps it, unread; one that says OK but answers in the
// text form (broken firmware) keeps it too: a text-mode answer that does
// not decode as a PDU is not a reason to delete.
func TestStoredMessagesAreReadOnlyInPDUMode(t *testing.T) {
	for _, c := range []struct {
		name string
		o    modemsim.Options
	}{
		{"refuses", modemsim.Options{TextMode: true, Refuse: []string{"+CMGF=0"}}},
		{"stuck", modemsim.Options{StuckTextMode: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sim := startSim(t, "s", c.o)
			ctx := testCtx(t, 10*time.Second)
			m := openModem(t, sim)
			if err := sim.Deliver("+8613900000000", "keep me"); err != nil {
				t.Fatal(err)
			}
			st, err := m.Read(ctx, "SM", 1)
			if err == nil && st != nil && st.Err == nil {
				t.Fatalf("read %+v", st)
			}
			if _, err := m.ReadAll(ctx); err == nil && c.name == "refuses" {
				t.Fatal("ReadAll read a modem that refuses PDU mode")
			}
			if n := sim.Count("+CMGD="); n != 0 || sim.Stored() != 1 {
				t.Fatalf("AT+CMGD given %d times; %d messages left stored, want 1", n, sim.Stored())
			}
			var pe *modem.PDUModeError
			if c.name == "refuses" && !errors.As(err, &pe) {
				t.Fatalf("Read error %v, want a *PDUModeError", err)
			}
		})
	}
}

var _ = context.Background

// Messages found on the SIM at start-up reach the platform in storage
// (index) order, as they arrived, even from a modem that lists the newest
// first.
func TestStoredMessagesAtStartInIndexOrder(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{ListNewestFirst: true})
	for _, s := range []string{"first", "second", "third"} {
		if err := sim.Deliver("+8613900000000", s); err != nil {
			t.Fatal(err)
		}
	}
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	for _, want := range []string{"first", "second", "third"} {
		select {
		case in := <-p.Incoming():
			if in.Text != want {
				t.Fatalf("got %q, want %q", in.Text, want)
			}
		case <-ctx.Done():
			t.Fatal("not all stored messages read")
		}
	}
}

// Outgoing messages a handset saved on the SIM (27.005 <stat> 2 STO
// UNSENT, 3 STO SENT: SMS-SUBMITs) are neither incoming nor spareline's:
// the read at start leaves them stored and says nothing, and the incoming
// message beside them is read and deleted. Before, they were deleted as
// "undecodable" (found by an independent modem-side test).
func TestStoredOutgoingMessagesAreLeftAlone(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{})
	submit, err := hex.DecodeString("0001000B916831080031F8000002C834") // SMSC field 00, SMS-SUBMIT "Hi" to +86138000138
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sim.StoreOutgoing(submit); err != nil {
		t.Fatal(err)
	}
	if err := sim.Deliver("+8613900000000", "incoming"); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.Logger = zap.New(core) })
	select {
	case in := <-p.Incoming():
		if in.Text != "incoming" {
			t.Fatalf("got %q, want the incoming message", in.Text)
		}
	case <-ctx.Done():
		t.Fatal("the incoming message was not read")
	}
	if err := sim.WaitCount(ctx, "+CMGD=", 1); err != nil {
		t.Fatal(err)
	}
	if n := sim.Stored(); n != 1 {
		t.Errorf("%d messages left on the SIM, want 1: the saved outgoing one", n)
	}
	if n := sim.Count("+CMGD="); n != 1 {
		t.Errorf("AT+CMGD %d times, want once (the incoming message)", n)
	}
	if w := logs.FilterMessage("undecodable stored message deleted").All(); len(w) != 0 {
		t.Errorf("the saved outgoing message was taken for an undecodable one: %v", w[0].ContextMap())
	}
}

// Saved outgoing messages that fill half the SIM's memory are worth a
// warning (they take the slots incoming messages and status reports need);
// one alone is worth an info line, said once, not at every read.
func TestStoredOutgoingMessagesFillingTheSIMWarn(t *testing.T) {
	submit, err := hex.DecodeString("0001000B916831080031F8000002C834") // SMSC field 00, SMS-SUBMIT "Hi" to +86138000138
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    int
		want zapcore.Level
	}{{1, zapcore.InfoLevel}, {15, zapcore.WarnLevel}} { // the emulator's memory holds 30
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			sim := startSim(t, "s", modemsim.Options{})
			for range tc.n {
				if _, err := sim.StoreOutgoing(submit); err != nil {
					t.Fatal(err)
				}
			}
			if err := sim.Deliver("+8613900000000", "incoming"); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zapcore.InfoLevel)
			ctx := testCtx(t, 10*time.Second)
			p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.Logger = zap.New(core) })
			select {
			case <-p.Incoming():
			case <-ctx.Done():
				t.Fatal("the incoming message was not read")
			}
			said := logs.FilterMessageSnippet("saved outgoing messages").All()
			if len(said) != 1 || said[0].Level != tc.want || said[0].ContextMap()["outgoing"] != int64(tc.n) {
				t.Fatalf("said %v, want one line at %v with outgoing %d", said, tc.want, tc.n)
			}
		})
	}
}
