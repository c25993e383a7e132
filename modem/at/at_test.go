package at

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, h func(f *fakeModem, cmd string)) (*Session, *fakeModem) {
	t.Helper()
	f := newFake(h)
	s := New(f, Options{GuardTime: 20 * time.Millisecond})
	t.Cleanup(func() { s.Close(); f.unplugOnce() })
	return s, f
}

func (f *fakeModem) unplugOnce() {
	select {
	case <-f.quit:
	default:
		f.unplug()
	}
}

func TestCommandWithEchoReturnsInfoOnly(t *testing.T) {
	s, _ := start(t, func(f *fakeModem, cmd string) {
		f.send(cmd + "\r\r\n") // echo on, as a TC35i after power-up
		switch cmd {
		case "AT+CGMI":
			f.send("SIEMENS\r\n\r\nOK\r\n")
		default:
			f.send("ERROR\r\n")
		}
	})
	info, err := s.Command(ctxT(t), "+CGMI")
	if err != nil || !reflect.DeepEqual(info, []string{"SIEMENS"}) {
		t.Fatalf("got %q, %v", info, err)
	}
	if _, err := s.Command(ctxT(t), "AT+NOPE"); !errors.Is(err, ErrError) {
		t.Fatalf("want ErrError, got %v", err)
	}
}

// STYLE.md pitfall 1: a URC in the middle of an answer goes to its handler.
func TestURCInterleavedWithCommandAnswer(t *testing.T) {
	got := make(chan []string, 4)
	s, _ := start(t, func(f *fakeModem, cmd string) {
		if cmd == "AT+CPMS?" {
			f.send("\r\n+CPMS: \"SM\",1,10\r\n")
			f.send("+CDS: 25\r\n0791683108200005F006120B81\r\n")
			f.send("+CMTI: \"SM\",3\r\n")
			f.send("\r\nOK\r\n")
		}
	})
	s.AddIndication("+CDS:", 1, func(l []string) { got <- l })
	s.AddIndication("+CMTI:", 0, func(l []string) { got <- l })
	info, err := s.Command(ctxT(t), "AT+CPMS?")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(info, []string{`+CPMS: "SM",1,10`}) {
		t.Fatalf("answer polluted by URC: %q", info)
	}
	if l := <-got; !reflect.DeepEqual(l, []string{"+CDS: 25", "0791683108200005F006120B81"}) {
		t.Fatalf("+CDS handler got %q", l)
	}
	if l := <-got; !reflect.DeepEqual(l, []string{`+CMTI: "SM",3`}) {
		t.Fatalf("+CMTI handler got %q", l)
	}
}

func TestSolicitedCREGIsAnAnswerNotAURC(t *testing.T) {
	urcs := make(chan []string, 4)
	s, f := start(t, func(f *fakeModem, cmd string) {
		if cmd == "AT+CREG?" {
			f.send("+CREG: 0,5\r\nOK\r\n")
		}
	})
	s.AddIndication("+CREG:", 0, func(l []string) { urcs <- l })
	info, err := s.Command(ctxT(t), "AT+CREG?")
	if err != nil || !reflect.DeepEqual(info, []string{"+CREG: 0,5"}) {
		t.Fatalf("got %q, %v", info, err)
	}
	f.send("+CREG: 1\r\n")
	if l := <-urcs; l[0] != "+CREG: 1" {
		t.Fatalf("unsolicited +CREG: got %q", l)
	}
}

// STYLE.md pitfall 2: URC handlers run in arrival order.
func TestURCHandlersRunInOrder(t *testing.T) {
	s, f := start(t, func(f *fakeModem, cmd string) {})
	const n = 200
	got := make(chan int, n)
	s.AddIndication("+CMTI:", 0, func(l []string) {
		i, _ := Int(Fields(l[0]), 1)
		got <- i
	})
	go func() {
		for i := 0; i < n; i++ {
			f.send(fmt.Sprintf("+CMTI: \"SM\",%d\r\n", i))
		}
	}()
	for i := 0; i < n; i++ {
		if g := <-got; g != i {
			t.Fatalf("URC %d delivered as %d", i, g)
		}
	}
}

func TestFinalResultCodesAreTyped(t *testing.T) {
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch cmd {
		case "AT+A":
			f.send("+CMS ERROR: 28\r\n")
		case "AT+B":
			f.send("+CMS ERROR: 332\r\n")
		case "AT+C":
			f.send("+CME ERROR: 10\r\n")
		case "AT+D":
			f.send("+CME ERROR: SIM busy\r\n")
		case "AT+E":
			f.send("+CMS ERROR: 197\r\n")
		}
	})
	var cms *CMSError
	_, err := s.Command(ctxT(t), "AT+A")
	if !errors.As(err, &cms) || cms.Code != 28 || !cms.Permanent() || !cms.NumberError() {
		t.Fatalf("CMS 28: want permanent number error, got %#v", err)
	}
	_, err = s.Command(ctxT(t), "AT+B")
	if !errors.As(err, &cms) || cms.Code != 332 || cms.Permanent() {
		t.Fatalf("CMS 332: want temporary, got %#v", err)
	}
	_, err = s.Command(ctxT(t), "AT+E")
	if !errors.As(err, &cms) || !cms.Permanent() || cms.NumberError() {
		t.Fatalf("CMS 197 (duplicate SM): want permanent, got %#v", err)
	}
	var cme *CMEError
	_, err = s.Command(ctxT(t), "AT+C")
	if !errors.As(err, &cme) || cme.Code != 10 || !cme.SIMNotReady() {
		t.Fatalf("CME 10: got %#v", err)
	}
	_, err = s.Command(ctxT(t), "AT+D")
	if !errors.As(err, &cme) || cme.Code != 14 || cme.Text != "SIM busy" || !cme.SIMNotReady() {
		t.Fatalf("verbose CME: got %#v", err)
	}
}

// After AT+CMEE=2 (or on a modem that keeps it from its stored profile),
// +CMS ERROR and +CME ERROR carry text: the 27.005 §3.2.5 and 27.007 §9.2
// wording, or the RP-cause (24.011 Table 8.4) and TP-FCS (23.040
// §9.2.3.22) names. They are classified as their numbers are.
func TestVerboseErrorsAreClassifiedLikeTheirCodes(t *testing.T) {
	for _, tc := range []struct {
		line      string
		code      int
		permanent bool
		number    bool
	}{
		{"+CMS ERROR: Unidentified subscriber", 28, true, true},
		{"+CMS ERROR: Unassigned (unallocated) number", 1, true, true},
		{"+CMS ERROR: unknown subscriber", 30, true, true},
		{"+CMS ERROR: Invalid SME address", 0xC3, true, true},
		{"+CMS ERROR: SM Rejected-Duplicate SM", 0xC5, true, false},
		{"+CMS ERROR: invalid PDU mode parameter", 304, true, false},
		{"+CMS ERROR: Congestion", 42, false, false},
		{"+CMS ERROR: SMSC address unknown", 330, false, false},
		{"+CMS ERROR: (U)SIM not inserted", 310, false, false},
		{"+CMS ERROR: SIM busy", 314, false, false},
		{"+CMS ERROR: no network service", 331, false, false},
		{"+CMS ERROR: something only this firmware says", 500, false, false},
	} {
		ok, err := parseFinal(tc.line)
		var cms *CMSError
		if !ok || !errors.As(err, &cms) {
			t.Fatalf("%q: not a +CMS ERROR: %v", tc.line, err)
		}
		if cms.Code != tc.code || cms.Permanent() != tc.permanent || cms.NumberError() != tc.number {
			t.Errorf("%q: code %d permanent %v number %v; want %d %v %v", tc.line, cms.Code, cms.Permanent(), cms.NumberError(),
				tc.code, tc.permanent, tc.number)
		}
	}
	for _, tc := range []struct {
		line string
		code int
		sim  bool
	}{
		{"+CME ERROR: SIM not inserted", 10, true},
		{"+CME ERROR: SIM PIN required", 11, true},
		{"+CME ERROR: SIM PUK required", 12, true},
		{"+CME ERROR: incorrect password", 16, true},
		{"+CME ERROR: no network service", 30, false},
		{"+CME ERROR: operation not allowed", 3, false},
		{"+CME ERROR: unknown", 100, false},
		{"+CME ERROR: Whatever", -1, false},
	} {
		_, err := parseFinal(tc.line)
		var cme *CMEError
		if !errors.As(err, &cme) || cme.Code != tc.code || cme.SIMNotReady() != tc.sim {
			t.Errorf("%q: got %#v; want code %d", tc.line, err, tc.code)
		}
	}
}

func TestSMSCommandPromptAndPDU(t *testing.T) {
	pdus := make(chan string, 1)
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch {
		case cmd == "AT+CMGS=13":
			f.send(cmd + "\r\r\n> ") // echo, then the prompt without line end
		case strings.HasPrefix(cmd, "PDU:"):
			pdus <- cmd[4:]
			f.send(cmd[4:] + "\x1a\r\n+CMGS: 42\r\n\r\nOK\r\n") // echoed PDU
		}
	})
	info, err := s.SMSCommand(ctxT(t), "AT+CMGS=13", "0001000B811000000000F0000001C8")
	if err != nil || !reflect.DeepEqual(info, []string{"+CMGS: 42"}) {
		t.Fatalf("got %q, %v", info, err)
	}
	if p := <-pdus; p != "0001000B811000000000F0000001C8" {
		t.Fatalf("modem received PDU %q", p)
	}
}

func TestSMSCommandTimeoutSendsEscAndRecovers(t *testing.T) {
	escaped := make(chan struct{}, 1)
	s, f := start(t, func(f *fakeModem, cmd string) {
		switch {
		case cmd == "AT+CMGS=10":
			f.send("\r\n> ") // then hang: no answer to the PDU
		case cmd == "ESC":
			escaped <- struct{}{}
			f.send("\r\nERROR\r\n") // late answer of the aborted send, dropped
		case cmd == "AT":
			f.send("OK\r\n")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := s.SMSCommand(ctx, "AT+CMGS=10", "00")
	var te *TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("want *TimeoutError, got %v", err)
	}
	<-escaped
	if _, err := s.Command(ctxT(t), "AT"); err != nil {
		t.Fatalf("session unusable after timeout: %v", err)
	}
	if !strings.Contains(f.wrote(), "00\x1a\x1b") {
		t.Fatalf("ESC not written after the PDU: %q", f.wrote())
	}
}

// Abort ends a prompt a killed process left open: it writes ESC, drops the
// modem's answer to it (and any late answer) for the guard time, and the
// next command gets its own answer, not the stale one.
func TestAbortEndsAnOpenPromptAndDropsItsAnswer(t *testing.T) {
	s, f := start(t, func(f *fakeModem, cmd string) {
		switch cmd {
		case "ESC":
			f.send("\r\n+CMGS: 7\r\n\r\nOK\r\n") // a late answer, then the ESC's own
		case "AT+CGMI":
			f.send("\r\nSIEMENS\r\n\r\nOK\r\n")
		}
	})
	if err := s.Abort(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
	info, err := s.Command(ctxT(t), "AT+CGMI")
	if err != nil || !reflect.DeepEqual(info, []string{"SIEMENS"}) {
		t.Fatalf("the command after Abort got %q, %v; want its own answer", info, err)
	}
	if w := f.wrote(); !strings.HasPrefix(w, "\x1b") {
		t.Fatalf("Abort did not write ESC first: %q", w)
	}
}

func TestUnpluggedPortFailsPendingCommands(t *testing.T) {
	received := make(chan struct{})
	s, f := start(t, func(f *fakeModem, cmd string) {
		if cmd == "AT+CSQ" {
			close(received) // never answers
		}
	})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Command(ctxT(t), "AT+CSQ")
		errc <- err
	}()
	<-received
	f.unplug()
	err := <-errc
	var ce *ClosedError
	if !errors.As(err, &ce) || !errors.Is(err, ErrClosed) {
		t.Fatalf("want *ClosedError, got %v", err)
	}
	<-s.Done()
	if _, err := s.Command(ctxT(t), "AT"); !errors.Is(err, ErrClosed) {
		t.Fatalf("command after unplug: want ErrClosed, got %v", err)
	}
}

func TestTraceMasksPIN(t *testing.T) {
	if got := maskCmd(`AT+CPIN="1234"`); strings.Contains(got, "1234") {
		t.Fatalf("PIN leaked: %s", got)
	}
}

func TestFields(t *testing.T) {
	got := Fields(`+CMGL: 1,0,"a,b",23`)
	if !reflect.DeepEqual(got, []string{"1", "0", "a,b", "23"}) {
		t.Fatalf("got %q", got)
	}
}

// A modem whose stored profile has ATV0 gives numeric result codes (V.250
// §6.2.6, Table 1): "0<CR>" for OK, "4<CR>" for ERROR; information text
// still ends with CR LF, and +CMS/+CME ERROR stay text.
func TestNumericResultCodes(t *testing.T) {
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch cmd {
		case "AT":
			f.send("0\r")
		case "AT+CSQ":
			f.send("+CSQ: 20,99\r\n0\r")
		case "AT+CMGS=1":
			f.send("+CMS ERROR: 331\r\n")
		default:
			f.send("4\r")
		}
	})
	if _, err := s.Command(ctxT(t), "AT"); err != nil {
		t.Fatalf("AT answered 0: %v", err)
	}
	info, err := s.Command(ctxT(t), "AT+CSQ")
	if err != nil || !reflect.DeepEqual(info, []string{"+CSQ: 20,99"}) {
		t.Fatalf("AT+CSQ: got %q, %v", info, err)
	}
	if _, err := s.Command(ctxT(t), "AT+NOPE"); !errors.Is(err, ErrError) {
		t.Fatalf("4 is ERROR, got %v", err)
	}
	var cms *CMSError
	if _, err := s.Command(ctxT(t), "AT+CMGS=1"); !errors.As(err, &cms) || cms.Code != 331 {
		t.Fatalf("got %v", err)
	}
}

// Huawei modems end a command they do not know with "COMMAND NOT SUPPORT"
// (and one with too many parameters with "TOO MANY PARAMETERS") instead of
// ERROR: a final result code, not a line to wait past.
func TestVendorRefusalsAreFinal(t *testing.T) {
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch cmd {
		case "AT+CNMI=2,1,0,1,0":
			f.send("\r\nCOMMAND NOT SUPPORT\r\n")
		case "AT+CSCA=1,2,3,4":
			f.send("\r\nTOO MANY PARAMETERS\r\n")
		}
	})
	for _, cmd := range []string{"AT+CNMI=2,1,0,1,0", "AT+CSCA=1,2,3,4"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.Command(ctx, cmd)
		cancel()
		if !errors.Is(err, ErrError) {
			t.Fatalf("%s: want ErrError, got %v", cmd, err)
		}
	}
}

// An indication registered by a bare prefix ("^", every Huawei status line)
// takes ^RSSI inside any answer, but the line naming the command in flight
// ("^SYSINFO:" to AT^SYSINFO) stays its answer.
func TestCatchAllIndicationLeavesTheAnswer(t *testing.T) {
	got := make(chan string, 4)
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch cmd {
		case "AT^SYSINFO":
			f.send("\r\n^RSSI: 14\r\n^SYSINFO: 2,3,0,5,1\r\n\r\nOK\r\n")
		case "AT+CSQ":
			f.send("\r\n^BOOT:20341,0,0,0,72\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
		}
	})
	s.AddIndication("^", 0, func(l []string) { got <- l[0] })
	info, err := s.Command(ctxT(t), "AT^SYSINFO")
	if err != nil || !reflect.DeepEqual(info, []string{"^SYSINFO: 2,3,0,5,1"}) {
		t.Fatalf("AT^SYSINFO: got %q, %v", info, err)
	}
	info, err = s.Command(ctxT(t), "AT+CSQ")
	if err != nil || !reflect.DeepEqual(info, []string{"+CSQ: 20,99"}) {
		t.Fatalf("AT+CSQ: got %q, %v", info, err)
	}
	for _, want := range []string{"^RSSI: 14", "^BOOT:20341,0,0,0,72"} {
		if g := <-got; g != want {
			t.Fatalf("indication %q, want %q", g, want)
		}
	}
}

// Noise without line ends (a wrong baud rate, a dying cable) must not grow
// a line without bound: a line longer than any AT answer is dropped.
func TestOverlongLineIsDropped(t *testing.T) {
	s, _ := start(t, func(f *fakeModem, cmd string) {
		if cmd == "AT" {
			f.send(strings.Repeat("\xfe~", 64<<10) + "\r\nOK\r\n")
		}
	})
	info, err := s.Command(ctxT(t), "AT")
	if err != nil || len(info) != 0 {
		t.Fatalf("got %d lines (first %d bytes), %v; want the noise dropped", len(info), len(strings.Join(info, "")), err)
	}
}

// A modem that never gives the "> " prompt to AT+CMGS has not taken the
// PDU: the send fails after the command timeout (not the long send
// timeout, which is for the network's answer), with ESC to leave the
// prompt state, and says the PDU was never written.
func TestSMSCommandWithoutPromptFailsAtTheCommandTimeout(t *testing.T) {
	escaped := make(chan struct{}, 1)
	f := newFake(func(f *fakeModem, cmd string) {
		switch cmd {
		case "ESC":
			escaped <- struct{}{}
		case "AT":
			f.send("\r\nOK\r\n")
		}
	})
	s := New(f, Options{GuardTime: 20 * time.Millisecond, Timeout: 200 * time.Millisecond})
	t.Cleanup(func() { s.Close(); f.unplugOnce() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the send timeout
	defer cancel()
	start := time.Now()
	_, err := s.SMSCommand(ctx, "AT+CMGS=10", "00")
	if !errors.Is(err, ErrNoPrompt) {
		t.Fatalf("want ErrNoPrompt, got %v after %v", err, time.Since(start))
	}
	<-escaped
	if strings.Contains(f.wrote(), "00\x1a") {
		t.Fatalf("the PDU was written without a prompt: %q", f.wrote())
	}
	if _, err := s.Command(ctxT(t), "AT"); err != nil {
		t.Fatalf("session unusable after a missing prompt: %v", err)
	}
}

// Modems differ in line ends (CR LF, LF only, CR only) and in the AT+CMGS
// prompt (with or without the CR LF before it, with or without the space
// after it).
func TestLineEndsAndPromptForms(t *testing.T) {
	for _, tc := range []struct{ name, eol, prompt string }{
		{"crlf", "\r\n", "\r\n> "},
		{"lf-only", "\n", "\n> "},
		{"cr-only", "\r", "\r> "},
		{"bare-prompt", "\r\n", "> "},
		{"prompt-without-space", "\r\n", "\r\n>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := start(t, func(f *fakeModem, cmd string) {
				switch {
				case cmd == "AT+CSQ":
					f.send(tc.eol + "+CSQ: 20,99" + tc.eol + tc.eol + "OK" + tc.eol)
				case cmd == "AT+CMGS=10":
					f.send(tc.prompt)
				case strings.HasPrefix(cmd, "PDU:"):
					f.send(tc.eol + "+CMGS: 7" + tc.eol + tc.eol + "OK" + tc.eol)
				}
			})
			info, err := s.Command(ctxT(t), "AT+CSQ")
			if err != nil || !reflect.DeepEqual(info, []string{"+CSQ: 20,99"}) {
				t.Fatalf("AT+CSQ: %q, %v", info, err)
			}
			info, err = s.SMSCommand(ctxT(t), "AT+CMGS=10", "0011")
			if err != nil || !reflect.DeepEqual(info, []string{"+CMGS: 7"}) {
				t.Fatalf("AT+CMGS: %q, %v", info, err)
			}
		})
	}
}

// A send times out after its PDU was written, and the modem's late answer
// ("+CMGS: 7", OK) arrives while the next AT+CMGS waits for its prompt. That
// answer is not the next send's (27.005 §3.5.1: before the prompt only "> "
// or an error): the next PDU is written and its own answer taken.
func TestLateAnswerIsNotTheNextSendsAnswer(t *testing.T) {
	n := 0
	pdus := make(chan string, 4)
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch {
		case cmd == "AT+CMGS=10":
			n++
			if n == 2 {
				f.send("\r\n+CMGS: 7\r\n\r\nOK\r\n") // the first send's, late
			}
			f.send("\r\n> ")
		case strings.HasPrefix(cmd, "PDU:"):
			pdus <- cmd[4:]
			if n == 2 {
				f.send("\r\n+CMGS: 8\r\n\r\nOK\r\n")
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond) // the modem never answers the first
	defer cancel()
	if _, err := s.SMSCommand(ctx, "AT+CMGS=10", "AA"); err == nil {
		t.Fatal("the first send should have timed out")
	}
	if p := <-pdus; p != "AA" {
		t.Fatalf("first PDU %q", p)
	}
	info, err := s.SMSCommand(ctxT(t), "AT+CMGS=10", "BB")
	if err != nil || len(info) != 1 || info[0] != "+CMGS: 8" {
		t.Fatalf("second send: %q, %v; want its own +CMGS: 8", info, err)
	}
	select {
	case p := <-pdus:
		if p != "BB" {
			t.Fatalf("second PDU %q", p)
		}
	default:
		t.Fatal("the second send was answered but its PDU never written")
	}
}

// A modem that restarts during a command never answers it: the restart
// line (AddRestartIndication) fails the command within restartGrace, not
// at its timeout. One that only chatters its boot notice inside an answer
// ("RDY" of a SIMCom) answers at once, and the command succeeds.
func TestRestartLineFailsTheCommandInFlight(t *testing.T) {
	s, _ := start(t, func(f *fakeModem, cmd string) {
		switch {
		case cmd == "AT":
			f.send("\r\nRDY\r\n\r\nOK\r\n")
		case cmd == "AT+CMGS=10":
			f.send("\r\n> ")
		case strings.HasPrefix(cmd, "PDU:"):
			f.send("\r\n^SYSSTART\r\n") // power cycled: no answer will come
		}
	})
	restarts := make(chan []string, 4)
	for _, p := range []string{"^SYSSTART", "RDY"} {
		s.AddRestartIndication(p, func(l []string) { restarts <- l })
	}
	if _, err := s.Command(ctxT(t), "AT"); err != nil {
		t.Fatalf("AT with RDY chatter: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := s.SMSCommand(ctx, "AT+CMGS=10", "0011")
	if !errors.Is(err, ErrModemRestarted) {
		t.Fatalf("want ErrModemRestarted, got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("failed after %v", d)
	}
	for _, want := range []string{"RDY", "^SYSSTART"} {
		if l := <-restarts; l[0] != want {
			t.Fatalf("restart handler got %q, want %q", l, want)
		}
	}
}

// The errors modems give to sends have a text in the log (27.005 §3.2.5,
// 24.011 Table 8.4), and a manufacturer's code says so.
func TestCMSErrorTexts(t *testing.T) {
	for code, want := range map[int]string{50: "requested facility not subscribed", 305: "invalid text mode parameter",
		512: "manufacturer specific", 38: "network out of order", 321: "invalid memory index"} {
		e := &CMSError{Code: code, Line: fmt.Sprintf("+CMS ERROR: %d", code)}
		if !strings.Contains(e.Error(), "("+want+")") {
			t.Errorf("%d: %q, want the text %q", code, e.Error(), want)
		}
	}
}

// A plain command is bounded by the command timeout even when its context
// allows much longer (a message's deadline, minutes away): a modem that
// stopped answering fails the command at the command timeout, so its
// owner is free to take it out (it held the device until the far deadline).
func TestPlainCommandBoundedByTheCommandTimeout(t *testing.T) {
	f := newFake(func(f *fakeModem, cmd string) {
		if cmd == "AT" {
			f.send("\r\nOK\r\n")
		}
		// AT+CMGF=0: no answer at all (firmware hung)
	})
	s := New(f, Options{GuardTime: 20 * time.Millisecond, Timeout: 200 * time.Millisecond})
	t.Cleanup(func() { s.Close(); f.unplugOnce() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // a message's far deadline
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := s.Command(ctx, "AT+CMGF=0"); done <- err }()
	select {
	case err := <-done:
		var te *TimeoutError
		if !errors.As(err, &te) || te.Cmd != "AT+CMGF=0" {
			t.Fatalf("want a *TimeoutError for AT+CMGF=0, got %v", err)
		}
	case <-ctxT(t).Done():
		t.Fatal("a command the modem does not answer was not bounded by the command timeout (200ms)")
	}
	if _, err := s.Command(ctxT(t), "AT"); err != nil {
		t.Fatalf("session unusable after the timeout: %v", err)
	}
}

// Subscription singles out the errors of the SIM's subscription (no credit,
// barred), which no health probe can disprove, from those of the network
// or the radio, and from number errors (but 21, which a barred SIM gets for
// every message).
func TestCMSErrorSubscription(t *testing.T) {
	for code, want := range map[int]bool{
		8: true, 10: true, 21: true, 29: true, 50: true, 69: true, 0xC1: true, 330: true,
		1: false, 28: false, 30: false, 27: false, 38: false, 41: false, 42: false, 47: false,
		0xC0: false, 0xC2: false, 300: false, 331: false, 332: false, 500: false, 512: false, 515: false,
	} {
		if got := (&CMSError{Code: code}).Subscription(); got != want {
			t.Errorf("+CMS ERROR: %d: Subscription() = %v, want %v", code, got, want)
		}
	}
}
