package modem_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
)

// killedMidSend plays a gateway process killed inside AT+CMGS: it opens the
// device, types the command, waits for the "> " prompt and, when pdu, types
// the PDU and Ctrl-Z; then it closes the port without reading the answer.
func killedMidSend(t *testing.T, sim *modemsim.Sim, text string, pdu bool) {
	t.Helper()
	f, err := os.OpenFile(sim.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := sms.EncodeSubmit(sms.Submit{Dest: "+8613800138000", Payload: []byte(text), StatusReport: true}, 1)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "AT+CMGS=%d\r", parts[0].TPDULen)
	r := bufio.NewReader(f)
	var seen strings.Builder
	for !strings.Contains(seen.String(), "> ") {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		seen.WriteByte(b)
	}
	if pdu {
		fmt.Fprintf(f, "%s\x1a", strings.ToUpper(hex.EncodeToString(parts[0].PDU)))
	}
}

// A gateway killed inside AT+CMGS leaves the modem in a state the next
// process must recover from by itself: a prompt still open (the modem takes
// every later character as PDU text until ESC or Ctrl-Z), or an answer and a
// status report of the killed send still buffered or still coming. The
// restarted pool must come up, and every later send must be confirmed with
// the TP-MR of its own transmission, never with a stale answer.
func TestModemRecoversFromAKilledSend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pdu   bool          // the killed process wrote the PDU
		delay time.Duration // the modem's time to send: the answer lands after the restart
	}{
		{"prompt-left-open", false, 0},
		{"answer-buffered", true, 0},
		{"answer-after-restart", true, 150 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := startSim(t, "s", modemsim.Options{SendDelay: 2*time.Millisecond + tc.delay, ReportDelay: 5 * time.Millisecond})
			killedMidSend(t, sim, "killed", tc.pdu)
			ctx := testCtx(t, 60*time.Second)
			if tc.pdu && tc.delay == 0 {
				if _, err := sim.WaitSent(ctx, 1); err != nil {
					t.Fatal(err)
				}
			}
			p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
			waitUp(t, ctx, p, "m0")
			for i := range 5 {
				txt := fmt.Sprintf("after-%d", i)
				sent, err := p.Send(ctx, txt, sms.Submit{Dest: "+8613800138000", Payload: []byte(txt), StatusReport: true})
				if err != nil {
					t.Fatalf("send %s: %v", txt, err)
				}
				var mrs []int
				for _, m := range sim.Sent() {
					if m.Text == txt {
						mrs = append(mrs, m.MRs...)
					}
				}
				if len(mrs) != 1 || len(sent.Refs) != 1 || sent.Refs[0] != mrs[0] {
					t.Fatalf("send %s confirmed with TP-MR %v; the modem sent it %d times with %v", txt, sent.Refs, len(mrs), mrs)
				}
			}
			killed := 0
			for _, m := range sim.Sent() {
				if m.Text == "killed" {
					killed++
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tc.pdu]; killed != want {
				t.Errorf("the killed send went out %d times, want %d", killed, want)
			}
		})
	}
}

// Modems differ in the AT+CNMI modes and features they take. One that
// refuses numeric error codes and the buffered indication mode comes up on
// mode 1 and still routes status reports, and so does one that takes only
// <bfr> 1 (a Siemens TC35i); one that refuses every mode tried
// comes up and sends all the same (its receipts come from the gateway's
// receipt timer).
func TestModemTakesWhatInitItCan(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refuse  []string
		reports bool
	}{
		{"no-cmee-no-mode-2", []string{"+CMEE=1", "+CNMI=2,1,0,1,0"}, true},
		// Siemens (TC35i, MC35i) take only <bfr> 1 ("buffer cleared"):
		// every mode with <bfr> 0 is refused.
		{"bfr-1-only", []string{"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0", "+CNMI=2,1,0,2,0", "+CNMI=1,1,0,2,0",
			"+CNMI=2,1,0,0,0", "+CNMI=1,1,0,0,0"}, true},
		// Modems without <bfr> (Sony Ericsson GM29: four parameters)
		// refuse every five-parameter form.
		{"no-bfr", []string{"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0", "+CNMI=2,1,0,2,0", "+CNMI=1,1,0,2,0",
			"+CNMI=2,1,0,0,0", "+CNMI=1,1,0,0,0", "+CNMI=2,1,0,1,1", "+CNMI=1,1,0,1,1", "+CNMI=2,1,0,2,1",
			"+CNMI=1,1,0,2,1", "+CNMI=2,1,0,0,1", "+CNMI=1,1,0,0,1"}, true},
		{"no-cnmi-at-all", []string{"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0", "+CNMI=2,1,0,2,0", "+CNMI=1,1,0,2,0",
			"+CNMI=2,1,0,0,0", "+CNMI=1,1,0,0,0", "+CNMI=2,1,0,1,1", "+CNMI=1,1,0,1,1", "+CNMI=2,1,0,2,1",
			"+CNMI=1,1,0,2,1", "+CNMI=2,1,0,0,1", "+CNMI=1,1,0,0,1", "+CNMI=2,1,0,1", "+CNMI=1,1,0,1",
			"+CNMI=2,1,0,2", "+CNMI=1,1,0,2", "+CNMI=2,1,0,0", "+CNMI=1,1,0,0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := startSim(t, "s", modemsim.Options{SendDelay: 2 * time.Millisecond, ReportDelay: 5 * time.Millisecond, Refuse: tc.refuse})
			ctx := testCtx(t, 30*time.Second)
			p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
			waitUp(t, ctx, p, "m0")
			sent, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("init tolerant"), StatusReport: true})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			if got := sim.Sent(); len(got) != 1 || got[0].Text != "init tolerant" || got[0].MRs[0] != sent.Refs[0] {
				t.Fatalf("the modem sent %+v; confirmed refs %v", got, sent.Refs)
			}
			if !tc.reports {
				// No +CMTI: an incoming message is found by polling.
				if err := sim.Deliver("+8613900000000", "reply without CNMI"); err != nil {
					t.Fatal(err)
				}
				select {
				case in := <-p.Incoming():
					if in.Text != "reply without CNMI" {
						t.Fatalf("incoming %+v", in)
					}
				case <-ctx.Done():
					t.Fatal("an incoming message on a modem without AT+CNMI was never read")
				}
				return
			}
			select {
			case r := <-p.Reports():
				if r.ID != "id1" || !r.Status.Delivered() {
					t.Fatalf("report %+v", r)
				}
			case <-ctx.Done():
				t.Fatal("no status report routed")
			}
		})
	}
}

// A modem that leaves the SMSC address out of its PDU lines (+CDS, +CMGR,
// +CMGL): status reports and incoming messages decode all the same, by the
// TPDU length the header line announces.
func TestModemPDUsWithoutSMSCAddress(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{SendDelay: 2 * time.Millisecond, ReportDelay: 5 * time.Millisecond, NoSCA: true})
	ctx := testCtx(t, 30*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	if _, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("no sca"), StatusReport: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-p.Reports():
		if r.ID != "id1" || !r.Status.Delivered() {
			t.Fatalf("report %+v", r)
		}
	case <-ctx.Done():
		t.Fatal("no status report decoded from a +CDS without the SMSC address")
	}
	if err := sim.Deliver("+8613900000000", "incoming without sca"); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-p.Incoming():
		if in.Text != "incoming without sca" || in.From != "+8613900000000" {
			t.Fatalf("incoming %+v", in)
		}
	case <-ctx.Done():
		t.Fatal("no incoming message decoded from a +CMGR without the SMSC address")
	}
}

// sendOneWithReport sends one message with a status report request on a
// one-modem pool over sim and checks the modem sent it and its report came
// back under the caller's id.
func sendOneWithReport(t *testing.T, sim *modemsim.Sim, tune func(*modem.PoolOptions)) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, tune)
	waitUp(t, ctx, p, "m0")
	sent, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("variant"), StatusReport: true})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := sim.Sent(); len(got) != 1 || got[0].Text != "variant" || got[0].MRs[0] != sent.Refs[0] {
		t.Fatalf("the modem sent %+v; confirmed refs %v", got, sent.Refs)
	}
	select {
	case r := <-p.Reports():
		if r.ID != "id1" || !r.Status.Delivered() {
			t.Fatalf("report %+v", r)
		}
	case <-ctx.Done():
		t.Fatal("no status report")
	}
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left in the modem's memory", n)
	}
}

// Modems as they come from other makers or with other stored profiles: each
// must come up, send, and route its status report.
func TestModemVariantsComeUpAndSend(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts modemsim.Options
	}{
		// ATV0 in the stored profile: "0<CR>" for OK, "4<CR>" for ERROR.
		{"numeric-result-codes", modemsim.Options{Numeric: true}},
		// A modem without circuit-switched registration status (LTE-only
		// firmware refusing AT+CREG?) tells it with AT+CEREG? / AT+CGREG?.
		{"no-creg", modemsim.Options{Refuse: []string{"+CREG?"}}},
		// A modem that answers nothing for a while after power-up.
		{"slow-boot", modemsim.Options{BootDelay: 1500 * time.Millisecond}},
		// A SIM still busy after boot (+CMS ERROR: 314) is not a modem
		// that refuses every AT+CNMI mode: init is tried again.
		{"sim-busy-at-init", modemsim.Options{SIMBusy: 8}},
		// Status reports only stored (AT+CNMI ds=2) and announced by +CDSI.
		{"reports-stored-cdsi", modemsim.Options{Refuse: []string{"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0"}}},
		// A Siemens TC35i in phase 2 (AT+CSMS service 0): <bfr> 1 only, and
		// <ds> 1 only in phase 2+, so it takes AT+CNMI=2,1,0,2,1.
		{"tc35i-phase-2", modemsim.Options{Refuse: []string{"+CNMI=2,1,0,1,0", "+CNMI=1,1,0,1,0", "+CNMI=2,1,0,2,0",
			"+CNMI=1,1,0,2,0", "+CNMI=2,1,0,0,0", "+CNMI=1,1,0,0,0", "+CNMI=2,1,0,1,1", "+CNMI=1,1,0,1,1"}}},
		// A Huawei refuses what it lacks with "COMMAND NOT SUPPORT".
		{"huawei-refusals", modemsim.Options{Refuse: []string{"+CMEE=1", "+CNMI=2,1,0,1,0"}, RefuseWith: "COMMAND NOT SUPPORT"}},
		// Unsolicited lines inside answers: Huawei's ^RSSI, ^BOOT, ^MODE;
		// "+CPIN: READY", "Call Ready", "SMS Ready" of a SIMCom after boot.
		{"unsolicited-lines-in-answers", modemsim.Options{Chatter: []string{
			"^RSSI: 14", "^BOOT:20341,0,0,0,72", "^MODE:5,4", "RDY", "+CFUN: 1", "+CPIN: READY", "Call Ready", "SMS Ready"}}},
		// An unsolicited "+CREG: <stat>,<lac>,<ci>" (AT+CREG=2 in the
		// profile) ahead of the "+CREG: <n>,<stat>" answer to AT+CREG?.
		{"creg-indication-in-answer", modemsim.Options{Chatter: []string{`+CREG: 1,"1A2B","0C3D"`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.SendDelay, tc.opts.ReportDelay = 2*time.Millisecond, 5*time.Millisecond
			sendOneWithReport(t, startSim(t, "s", tc.opts), nil)
		})
	}
}

// waitDown waits until modem name is down with a last error containing want.
func waitDown(t *testing.T, ctx context.Context, p *modem.Pool, name, want string) modem.ModemStatus {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond) // polling the status API: there is no event to await
	defer tick.Stop()
	for {
		for _, s := range p.Status() {
			if s.Name == name && s.State == modem.StateDown && strings.Contains(s.LastError, want) {
				return s
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("modem %s not down with %q: %+v", name, want, p.Status())
		case <-tick.C:
		}
	}
}

// A modem that cannot be initialised (no SIM, a PIN nobody configured, a
// modem without PDU mode) is marked down with the reason, for the status
// page and the modem_up metric, not left "opening" without a word.
func TestModemThatCannotInitIsMarkedDownWithTheReason(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  modemsim.Options
		noSIM bool
		want  string
	}{
		{"no-sim", modemsim.Options{}, true, "SIM"},
		{"pin-not-configured", modemsim.Options{PIN: "1234"}, false, "SIM PIN"},
		{"text-mode-only", modemsim.Options{Refuse: []string{"+CMGF=0"}}, false, "PDU mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := startSim(t, "s", tc.opts)
			if tc.noSIM {
				sim.SetSIMReady(false)
			}
			ctx := testCtx(t, 10*time.Second)
			p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
			waitDown(t, ctx, p, "m0", tc.want)
		})
	}
}

// A SIM blocks after three wrong PINs and then needs the PUK, which only a
// person can give. A configured PIN the SIM rejected is therefore entered
// once, never again at the re-probes: the modem stays down with the reason.
func TestWrongPINIsNotRetried(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{PIN: "1234"})
	ctx := testCtx(t, 10*time.Second)
	p := startPoolConfigs(t, []modem.Config{{Name: "m0", Device: sim.Path(), PIN: "0000"}}, nil)
	// The first init and four re-probes (every 50 ms here) ask for the SIM state.
	if err := sim.WaitCount(ctx, "+CPIN?", 5); err != nil {
		t.Fatal(err)
	}
	if n := sim.Count("+CPIN="); n != 1 || sim.PINBlocked() {
		t.Fatalf("the wrong PIN was entered %d times (SIM blocked: %v); want once", n, sim.PINBlocked())
	}
	waitDown(t, ctx, p, "m0", "PIN")
}

// A SIM that asks for its PIN at power-up is unlocked with the configured
// one and the modem comes up.
func TestConfiguredPINUnlocksTheSIM(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{PIN: "1234"})
	ctx := testCtx(t, 10*time.Second)
	p := startPoolConfigs(t, []modem.Config{{Name: "m0", Device: sim.Path(), PIN: "1234"}}, nil)
	waitUp(t, ctx, p, "m0")
	if _, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("pin ok")}); err != nil {
		t.Fatal(err)
	}
}

// A modem that keeps verbose errors (AT+CMEE=2 in its profile, AT+CMEE=1
// refused) says "+CMS ERROR: Unidentified subscriber": a permanent number
// error, returned as permanent after one attempt (the number is wrong, not
// the modem).
func TestVerboseCMSErrorIsClassifiedByItsText(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{CMEE: 2, Refuse: []string{"+CMEE=1"}})
	b := startSim(t, "b", modemsim.Options{CMEE: 2, Refuse: []string{"+CMEE=1"}})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{a, b}, 0, nil)
	waitUp(t, ctx, p, "m0", "m1")
	a.FailNext(28, 1)
	b.FailNext(28, 1)
	_, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800000000", Payload: []byte("hi")})
	var se *modem.SendError
	if !errors.As(err, &se) || !se.Permanent || !se.NumberError || se.Code != 28 {
		t.Fatalf("want a permanent number error 28, got %v", err)
	}
	// One attempt, not more.
	if na, nb := a.Count("+CMGS="), b.Count("+CMGS="); na+nb != 1 {
		t.Fatalf("AT+CMGS sent %d and %d times for a number error, want once", na, nb)
	}
}

// A status report waiting in the modem's memory (stored while the gateway
// was down, or by a modem that stores them) is read at start-up as a status
// report, not dropped as an undecodable incoming message.
func TestStoredStatusReportIsReadAsAReport(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{})
	now := time.Now()
	pdu, err := sms.EncodeStatusReport(77, "+8613800138000", now.Add(-time.Minute), now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.DeliverPDU(pdu); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	select {
	case r := <-p.Reports():
		if r.Status.MR != 77 || r.Status.Recipient != "+8613800138000" || !r.Status.Delivered() {
			t.Fatalf("report %+v", r.Status)
		}
	case <-ctx.Done():
		t.Fatal("the stored status report was not read as a report")
	}
}

// +CMTI names the memory the message is in (27.005 §3.4.1); when it is not
// the one AT+CMGR reads (+CPMS <mem1>), it is selected first, and the
// usual one again after the read: left selected, it would be the memory
// the next AT+CMGL lists, at the next init too (the modem keeps <mem1>).
func TestIncomingMessageReadFromTheMemoryCMTINames(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Mem: "ME"})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	if err := sim.Deliver("+8613900000000", "in ME"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "in ME")
	if err := sim.WaitCount(ctx, "+CPMS=", 2); err != nil {
		t.Fatalf("the memory was not selected back after the read: %v", err)
	}
	if n, mem := sim.Count("+CPMS="), sim.Mem1(); n != 2 || mem != "SM" {
		t.Fatalf("AT+CPMS= sent %d times, <mem1> left %q; want twice (ME, then SM again), SM", n, mem)
	}
}

// A modem that refuses AT+CPMS? at init (the usual memory unknown) still
// has the memory +CMTI names selected before the read: AT+CMGR=<index> of
// another memory would read (and delete) another message.
func TestMemoryCMTINamesSelectedWhenCPMSQueryRefused(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Mem: "ME"})
	sim.FailCommand("+CPMS?")
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	if err := sim.Deliver("+8613900000000", "in ME"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "in ME")
	if n := sim.Count("+CPMS="); n < 1 {
		t.Fatal("the memory +CMTI named was not selected before the read")
	}
}

// When selecting the usual memory again after a read fails, the next
// probe does it: left on the memory the indication named, AT+CMGL would
// list that one and the MO messages would wait unread.
func TestUsualMemorySelectedAgainAtTheNextProbe(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Mem: "ME"})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	sim.FailCommand(`+CPMS="SM"`)
	if err := sim.Deliver("+8613900000000", "in ME"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "in ME")
	// ME, the refused SM, then the probe's SM.
	if err := sim.WaitCount(ctx, "+CPMS=", 3); err != nil {
		t.Fatalf("the usual memory was not selected again: %v", err)
	}
	// A command is counted when it arrives: one of the next probe says
	// that the AT+CPMS before it was answered.
	if err := sim.WaitCount(ctx, "+CSQ", sim.Count("+CSQ")+1); err != nil {
		t.Fatal(err)
	}
	if mem := sim.Mem1(); mem != "SM" {
		t.Fatalf("<mem1> left %q, want SM", mem)
	}
}

// A SIM without an SMSC address (`+CSCA: "",129`) cannot send: the PDUs
// leave the SMSC to the SIM, and the modem answers +CMS ERROR: 330. Init
// says so, on the status page, instead of leaving it to each failed send.
func TestModemWithoutSMSCAddressSaysSo(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{NoSMSC: true})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	tick := time.NewTicker(10 * time.Millisecond) // polling the status API: there is no event to await
	defer tick.Stop()
	for {
		st := p.Status()[0]
		if strings.Contains(st.LastError, "SMSC") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no word of the missing SMSC address: %+v", st)
		case <-tick.C:
		}
	}
}

// A modem on a serial line can restart (watchdog, brown-out) while the
// port stays open: it says so ("^SYSSTART" on a Siemens, "RDY" on SIMCom
// and Quectel) and has forgotten AT+CNMI, ATE0, AT+CMEE and the PIN. It
// must be initialised again, or its status reports stop (and a SIM with a
// PIN stays locked, the modem down for good).
func TestModemRestartedOnAnOpenPortIsInitialisedAgain(t *testing.T) {
	for _, tc := range []struct {
		name string
		pin  string
	}{{"no-pin", ""}, {"pin", "1234"}} {
		t.Run(tc.name, func(t *testing.T) {
			sim := startSim(t, "s", modemsim.Options{PIN: tc.pin, SendDelay: 2 * time.Millisecond, ReportDelay: 5 * time.Millisecond})
			ctx := testCtx(t, 10*time.Second)
			p := startPoolConfigs(t, []modem.Config{{Name: "m0", Device: sim.Path(), PIN: tc.pin}}, nil)
			waitUp(t, ctx, p, "m0")
			if err := sim.WaitCount(ctx, "+CNMI=", 1); err != nil {
				t.Fatal(err)
			}
			cnmi := sim.Count("+CNMI=")
			sim.Reset()
			if err := sim.WaitCount(ctx, "+CNMI=", cnmi+1); err != nil {
				t.Fatalf("not initialised again after ^SYSSTART: %v", err)
			}
			waitUp(t, ctx, p, "m0")
			if _, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("after reset"), StatusReport: true}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-p.Reports():
				if r.ID != "id1" {
					t.Fatalf("report %+v", r)
				}
			case <-ctx.Done():
				t.Fatal("no status report after the modem restarted")
			}
		})
	}
}

// A modem power-cycled in the middle of AT+CMGS (after the PDU) never
// answers that send: it falls silent, then says "^SYSSTART". The send
// fails at that line, not at the send timeout, and the message goes out
// once the modem is initialised again.
func TestModemRestartedMidSendFailsTheSendAtOnce(t *testing.T) {
	// With a PIN: the restarted modem refuses sends until it is
	// initialised again.
	sim := startSim(t, "s", modemsim.Options{SendDelay: 2 * time.Millisecond, PIN: "1234"})
	ctx := testCtx(t, 10*time.Second) // well under the send timeout
	p := startPoolConfigs(t, []modem.Config{{Name: "m0", Device: sim.Path(), PIN: "1234"}}, func(o *modem.PoolOptions) {
		o.SendTimeout = time.Minute
		o.MaxAttempts = 2 // the one the restart cut short, and one more
	})
	waitUp(t, ctx, p, "m0")
	sim.RestartOnNextSend()
	if _, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("power cycled")}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := sim.Sent(); len(got) != 1 || got[0].Text != "power cycled" {
		t.Fatalf("the modem sent %+v", got)
	}
	if n := sim.Count("+CMGS="); n != 2 {
		t.Fatalf("AT+CMGS given %d times, want 2 (the one the restart swallowed, then the resend)", n)
	}
}

// A modem that restarts without a word (a TC35i on autobauding writes no
// ^SYSSTART) has its SIM locked again: sends fail with a SIM error
// (+CMS ERROR: 310/311). Such an error says the modem needs its init (and
// its PIN) again, not only a health probe: the message goes out after it.
func TestSIMErrorOnSendInitialisesTheModemAgain(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{SendDelay: 2 * time.Millisecond, PIN: "1234"})
	ctx := testCtx(t, 10*time.Second)
	p := startPoolConfigs(t, []modem.Config{{Name: "m0", Device: sim.Path(), PIN: "1234"}}, nil)
	waitUp(t, ctx, p, "m0")
	pins := sim.Count("+CPIN=")
	sim.ResetQuiet()
	if _, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte("after a quiet restart")}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if got := sim.Sent(); len(got) != 1 {
		t.Fatalf("the modem sent %+v", got)
	}
	if n := sim.Count("+CPIN="); n != pins+1 {
		t.Fatalf("the PIN was entered %d more times, want once", n-pins)
	}
}

// A modem that restarts without a word (a TC35i on autobauding writes no
// ^SYSSTART) and without a PIN to ask for still sends, but has forgotten
// AT+CNMI: no +CMTI, no +CDS. The health probe sees the setting gone and
// initialises the modem again, and a message that arrived since is read.
func TestQuietRestartIsSeenByTheProbe(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{SendDelay: 2 * time.Millisecond})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	cnmi := sim.Count("+CNMI=")
	sim.ResetQuiet()
	if err := sim.Deliver("+8613900000000", "while nobody listened"); err != nil {
		t.Fatal(err)
	}
	select {
	case in := <-p.Incoming():
		if in.Text != "while nobody listened" {
			t.Fatalf("incoming %+v", in)
		}
	case <-ctx.Done():
		t.Fatal("the message that arrived after a quiet restart was never read")
	}
	if n := sim.Count("+CNMI="); n <= cnmi {
		t.Fatal("AT+CNMI not given again after the quiet restart")
	}
}

// A modem that reads AT+CNMI back otherwise than it was given (here <ds> 0
// for 1, as some firmware does) is not taken for one that lost it: it is
// initialised once, not at every probe.
func TestCNMIReadBackOtherwiseIsNotALoss(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{CNMIRead: "2,1,0,0,0"})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	if err := sim.WaitCount(ctx, "+CNMI?", sim.Count("+CNMI?")+3); err != nil {
		t.Fatal(err)
	}
	if n := sim.Count("+CNMI="); n != 1 {
		t.Fatalf("AT+CNMI set %d times, want once", n)
	}
}

// A SIM not ready to take its PIN yet answers +CME ERROR: 14 (SIM busy): no
// try was used, so the PIN is entered again at the next probe and the modem
// comes up (a wrong PIN, +CME ERROR: 16, is never entered twice:
// TestWrongPINIsNotRetried).
func TestPINEnteredAgainAfterSIMBusy(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{PIN: "1234", PINBusy: 1})
	ctx := testCtx(t, 10*time.Second)
	p := startPoolConfigs(t, []modem.Config{{Name: "m0", Device: sim.Path(), PIN: "1234"}}, nil)
	waitUp(t, ctx, p, "m0")
	if n := sim.Count("+CPIN="); n != 2 {
		t.Fatalf("the PIN was entered %d times, want twice (busy, then taken)", n)
	}
}

// A modem that answers AT+CMGS in lower case ("+cmgs:7") has still sent the
// message: the send is confirmed once, not taken as unconfirmed and sent
// again on another modem (a duplicate at the handset).
func TestLowercaseCMGSAnswerConfirmsTheSend(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{CMGSForm: "+cmgs:%d"})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	sent, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("once")})
	if err != nil || len(sent.Refs) != 1 {
		t.Fatalf("send: %+v, %v", sent, err)
	}
	if n := len(sim.Sent()); n != 1 {
		t.Fatalf("the modem sent it %d times", n)
	}
}

// A modem that stops answering (firmware hung, the port still open) is
// taken out at its next health probe, not left up to be picked for sends
// that would each time out after the PDU was written; once it answers
// again, it is initialised again and comes back.
func TestMutedModemIsTakenOutAtTheProbe(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.CommandTimeout = 200 * time.Millisecond })
	waitUp(t, ctx, p, "m0")
	sim.Mute(true)
	waitDown(t, ctx, p, "m0", "")
	sim.Mute(false)
	waitUp(t, ctx, p, "m0")
}

// A modem whose signal becomes unknown (+CSQ: 99,99; 27.007 §8.5: not known
// or not detectable) has no spareline_modem_signal_dbm series, rather than
// the last value it read, which told a dashboard the signal was good.
func TestUnknownSignalClearsTheSignalGauge(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Signal: 20})
	ctx := testCtx(t, 10*time.Second)
	p := startPoolConfigs(t, []modem.Config{{Name: "sig0", Device: sim.Path()}}, nil)
	waitUp(t, ctx, p, "sig0")
	// A command of a later probe says the earlier one was reported.
	probes := func(n int) {
		t.Helper()
		if err := sim.WaitCount(ctx, "+CREG?", sim.Count("+CREG?")+n); err != nil {
			t.Fatal(err)
		}
	}
	probes(2)
	if v, ok := series(t, "spareline_modem_signal_dbm", "sig0"); !ok || v != -73 {
		t.Fatalf("signal gauge %v (present %v), want -73", v, ok)
	}
	sim.SetSignal(99)
	probes(3)
	if v, ok := series(t, "spareline_modem_signal_dbm", "sig0"); ok {
		t.Fatalf("signal gauge still %v after +CSQ: 99,99", v)
	}
	if st := p.Status()[0]; st.SignalDBm != 0 {
		t.Fatalf("status page signal %d dBm after +CSQ: 99,99", st.SignalDBm)
	}
}

// A modem in phase 2+ (AT+CSMS? service 1) stops routing status reports
// when one is not acknowledged with AT+CNMA in time (27.005 §3.4.4). The
// report of a part arrives while the next parts of a long message are sent:
// it is acknowledged between two parts, not after the whole message, and
// every part's report comes.
func TestStatusReportAcknowledgedBetweenParts(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Phase2Plus: true, AckTimeout: 400 * time.Millisecond,
		SendDelay: 150 * time.Millisecond, ReportDelay: 5 * time.Millisecond})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	text := strings.Repeat("five parts, one report each. ", 24) // 5 parts of 153 septets
	sent, err := p.Send(ctx, "id1", sms.Submit{Dest: "+8613800138000", Payload: []byte(text), StatusReport: true})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if len(sent.Refs) != 5 {
		t.Fatalf("%d parts, want 5", len(sent.Refs))
	}
	parts := map[int]bool{}
	for len(parts) < 5 {
		select {
		case r := <-p.Reports():
			if r.ID != "id1" {
				t.Fatalf("report %+v", r)
			}
			parts[r.Part] = true
		case <-ctx.Done():
			t.Fatalf("status reports for parts %v only", parts)
		}
	}
}

// A "type 0" short message (TP-PID 0x40, the silent SMS networks send to
// page a phone) must be acknowledged and its contents discarded (23.040
// §9.2.3.9). A modem that stores and announces it anyway does not make it
// an MO message for the platform.
func TestShortMessageType0IsDiscarded(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	pdus, err := sms.EncodeDeliver("+8613900000000", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	silent := append([]byte(nil), pdus[0]...)
	silent[1+1+2+7] = 0x40 // TP-PID after SMSC 00, first octet, TP-OA (13 digits: 2+7 octets)
	if err := sim.DeliverPDU(silent); err != nil {
		t.Fatal(err)
	}
	if err := sim.Deliver("+8613900000001", "after the silent one"); err != nil {
		t.Fatal(err)
	}
	nextIncoming(t, ctx, p, "after the silent one")
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left on the SIM", n)
	}
}

// An 8-bit (binary) message arriving on a modem is handed over with its
// octets as sent, not as an empty text; a binary message in two parts is
// joined.
func TestBinaryIncomingMessageKeepsItsOctets(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	// SMSC "00"; SMS-DELIVER (MTI 00, MMS); TP-OA +8613900000000; PID 00;
	// DCS 04 (8-bit); SCTS; then the user data (with a UDH when udh).
	deliver := func(udh []byte, ud []byte) []byte {
		first := byte(0x04)
		if udh != nil {
			first |= 0x40 // TP-UDHI
		}
		b := []byte{0x00, first, 0x0D, 0x91, 0x68, 0x31, 0x09, 0x00, 0x00, 0x00, 0xF0, 0x00, 0x04,
			0x62, 0x11, 0x62, 0x11, 0x00, 0x00, 0x00}
		full := ud
		if udh != nil {
			full = append(append([]byte{byte(len(udh))}, udh...), ud...)
		}
		return append(append(b, byte(len(full))), full...)
	}
	if err := sim.DeliverPDU(deliver(nil, []byte{0xDE, 0xAD, 0x00, 0xEF})); err != nil {
		t.Fatal(err)
	}
	next := func() modem.Incoming { return takeIncoming(t, ctx, p) }
	if in := next(); in.Text != "" || !bytes.Equal(in.Data, []byte{0xDE, 0xAD, 0x00, 0xEF}) || in.From != "+8613900000000" {
		t.Fatalf("incoming %+v, want the 4 octets from +8613900000000", in)
	}
	concat := func(seq byte) []byte { return []byte{0x00, 0x03, 0x2A, 0x02, seq} }
	if err := sim.DeliverPDU(deliver(concat(1), []byte{0x01, 0x02}), deliver(concat(2), []byte{0x03})); err != nil {
		t.Fatal(err)
	}
	if in := next(); !bytes.Equal(in.Data, []byte{0x01, 0x02, 0x03}) {
		t.Fatalf("incoming %+v, want the two parts' octets joined", in)
	}
}
