package modem_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func modemState(p *modem.Pool, name string) modem.ModemStatus {
	for _, s := range p.Status() {
		if s.Name == name {
			return s
		}
	}
	return modem.ModemStatus{}
}

// A modem whose SIM or firmware refuses every send with a "permanent"
// error (+CMS ERROR: 304, invalid PDU mode parameter, an ME error; 21, a
// SIM barred by its operator) must not turn its share of the traffic into
// permanent failures: each message is tried on the other modem, and after
// MaxErrors different messages in a row the modem is taken out.
func TestPermanentErrorsOfOneModemAreRetriedElsewhereAndTakeItOut(t *testing.T) {
	for _, code := range []int{304, 21} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			bad := startSim(t, "bad", modemsim.Options{})
			good := startSim(t, "good", modemsim.Options{})
			ctx := testCtx(t, 20*time.Second)
			p := startPool(t, []*modemsim.Sim{bad, good}, 0, func(o *modem.PoolOptions) { o.ReprobeInterval = time.Hour })
			waitUp(t, ctx, p, "m0", "m1")
			bad.FailNext(code, 1000)
			for i := 0; i < 6; i++ {
				s, err := p.Send(ctx, fmt.Sprint("id", i), sms.Submit{Dest: "+8613800138000", Payload: []byte(fmt.Sprint("msg ", i))})
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if s.Modem != "m1" {
					t.Fatalf("message %d sent on %s", i, s.Modem)
				}
			}
			if n := bad.Count("+CMGS="); n != 3 {
				t.Fatalf("the refusing modem was given %d messages, want 3 (then out)", n)
			}
			st := modemState(p, "m0")
			if st.State != modem.StateDown || !strings.Contains(st.LastError, fmt.Sprint(code)) {
				t.Fatalf("refusing modem's status %+v, want down with its error", st)
			}
		})
	}
}

// A permanent error that every modem gives is final after one attempt on
// each, and reaches the caller.
func TestPermanentErrorOnEveryModemIsFinal(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	b := startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{a, b}, 0, nil)
	waitUp(t, ctx, p, "m0", "m1")
	a.FailNext(96, 5)
	b.FailNext(96, 5)
	_, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800000000", Payload: []byte("hi")})
	var se *modem.SendError
	if !errors.As(err, &se) || !se.Permanent || se.Code != 96 {
		t.Fatalf("want permanent error 96, got %v", err)
	}
	if na, nb := a.Count("+CMGS="), b.Count("+CMGS="); na != 1 || nb != 1 {
		t.Fatalf("AT+CMGS %d and %d times, want once on each modem", na, nb)
	}
}

// A number error (unassigned number, unknown subscriber) says the
// destination is wrong, not the modem: it is final at once, tried on no
// other modem, and a bulk job with dead numbers in a row takes no modem
// out (three did take every modem out for a probe period).
func TestNumberErrorsAreFinalAndTakeNoModemOut(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	b := startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{a, b}, 0, nil)
	waitUp(t, ctx, p, "m0", "m1")
	a.FailNext(1, 5)
	b.FailNext(1, 5)
	for i := range 5 {
		_, err := p.Send(ctx, fmt.Sprint("dead", i), sms.Submit{Dest: "+8613800000000", Payload: []byte("hi")})
		var se *modem.SendError
		if !errors.As(err, &se) || !se.NumberError || se.Code != 1 {
			t.Fatalf("message %d: want number error 1, got %v", i, err)
		}
	}
	if na, nb := a.Count("+CMGS="), b.Count("+CMGS="); na+nb != 5 {
		t.Fatalf("AT+CMGS %d and %d times for 5 dead numbers, want 5 in all (one attempt each)", na, nb)
	}
	for _, st := range p.Status() {
		if st.State != modem.StateUp {
			t.Fatalf("modem %s is %s after dead numbers (%s), want up", st.Name, st.State, st.LastError)
		}
	}
}

// max_per_minute counts SMS parts when they go on the air: a message of
// more parts than the budget goes when the window is empty, its parts
// spaced so that no window holds more than the budget, and a message after
// it waits until its part fits.
func TestBudgetCountsPartsWhenSent(t *testing.T) {
	const window = 500 * time.Millisecond
	restore := modem.SetBudgetWindow(window)
	defer restore()
	sim := startSim(t, "s", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 2, nil)
	waitUp(t, ctx, p, "m0")
	long := strings.Repeat("L", 400) // 3 parts of GSM 7-bit
	if _, err := p.Send(ctx, "long", sms.Submit{Dest: "+8613800138000", Payload: []byte(long)}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, "short", sms.Submit{Dest: "+8613800138001", Payload: []byte("short")}); err != nil {
		t.Fatal(err)
	}
	got, err := sim.WaitSent(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for _, m := range got {
		at = append(at, m.PartsAt...)
	}
	if len(at) != 4 {
		t.Fatalf("%d parts sent, want 4", len(at))
	}
	// Any three consecutive parts span more than the window (at most 2
	// per window). Lower bounds only: a slow machine cannot break them.
	for i := 2; i < len(at); i++ {
		if d := at[i].Sub(at[i-2]); d < window {
			t.Errorf("parts %d and %d went out %v apart, within one window (%v) with a budget of 2", i-2, i, d, window)
		}
	}
}

// A part the modem refused (+CMS ERROR: nothing went on the air, 27.005
// §3.5.1) uses nothing of max_per_minute and is not "sent last minute":
// before, two refusals used up a budget of 3 and held the message that
// went out on the third try, and the next, for a minute (found by an
// independent modem-side test).
func TestBudgetLeavesRefusedPartsOut(t *testing.T) {
	restore := modem.SetBudgetWindow(time.Hour) // a miscounted part would hold the test for good
	defer restore()
	sim := startSim(t, "s", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 2, func(o *modem.PoolOptions) { o.MaxErrors, o.MaxAttempts = 5, 3 })
	waitUp(t, ctx, p, "m0")
	sim.FailNext(42, 2) // congestion: refused twice
	if _, err := p.Send(ctx, "first", sms.Submit{Dest: "+8613800138000", Payload: []byte("third try")}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Send(ctx, "second", sms.Submit{Dest: "+8613800138001", Payload: []byte("within the budget")}); err != nil {
		t.Fatal(err)
	}
	if n := sim.Count("+CMGS="); n != 4 {
		t.Errorf("AT+CMGS %d times, want 4 (two refused, two sent)", n)
	}
	if st := modemState(p, "m0"); st.SentLastMinute != 2 {
		t.Errorf("sent last minute %d, want 2: the refused parts did not go", st.SentLastMinute)
	}
}

// A status report for an older message whose TP-MR a newer one took
// (the MR wraps at 255, and a modem starts it again when it restarts)
// finds the older message by its recipient, while the newer one is
// pending and after it is done.
func TestReportForReusedMRFindsTheOlderMessage(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{ReportDelay: time.Hour})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	x, err := p.Send(ctx, "X", sms.Submit{Dest: "+8613800000001", Payload: []byte("x"), StatusReport: true})
	if err != nil {
		t.Fatal(err)
	}
	sim.SetNextMR(x.Refs[0]) // as a modem that restarted, or after 256 sends
	y, err := p.Send(ctx, "Y", sms.Submit{Dest: "+8613800000002", Payload: []byte("y"), StatusReport: true})
	if err != nil {
		t.Fatal(err)
	}
	if y.Refs[0] != x.Refs[0] {
		t.Fatalf("MRs %v and %v, want the same", x.Refs, y.Refs)
	}
	report := func(recipient string) modem.Report {
		t.Helper()
		if err := sim.InjectReport(x.Refs[0], recipient, 0); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-p.Reports():
			return r
		case <-ctx.Done():
			t.Fatal("no report")
		}
		return modem.Report{}
	}
	if r := report("+8613800000001"); r.ID != "X" {
		t.Fatalf("X's report (Y pending) matched %q", r.ID)
	}
	if r := report("+8613800000002"); r.ID != "Y" {
		t.Fatalf("Y's report matched %q", r.ID)
	}
	// Again for the other order: Y done first, then X's report.
	z, err := p.Send(ctx, "Z", sms.Submit{Dest: "+8613800000003", Payload: []byte("z"), StatusReport: true})
	if err != nil {
		t.Fatal(err)
	}
	sim.SetNextMR(z.Refs[0])
	w, err := p.Send(ctx, "W", sms.Submit{Dest: "+8613800000004", Payload: []byte("w"), StatusReport: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.InjectReport(w.Refs[0], "+8613800000004", 0); err != nil {
		t.Fatal(err)
	}
	if r := <-p.Reports(); r.ID != "W" {
		t.Fatalf("W's report matched %q", r.ID)
	}
	if err := sim.InjectReport(z.Refs[0], "+8613800000003", 0); err != nil {
		t.Fatal(err)
	}
	if r := <-p.Reports(); r.ID != "Z" {
		t.Fatalf("Z's report (W done) matched %q", r.ID)
	}
}

// A message that failed on a modem (+CMS ERROR: 38, network out of order)
// is retried on another modem that is up, waiting for it while it is busy,
// not sent again at once on the modem it failed on.
func TestRetryWaitsForAnotherModem(t *testing.T) {
	busy := startSim(t, "busy", modemsim.Options{})
	failing := startSim(t, "failing", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	failed := make(chan struct{}, 8)
	hook := zap.Hooks(func(e zapcore.Entry) error {
		if strings.HasPrefix(e.Message, "send failed, will retry") {
			failed <- struct{}{}
		}
		return nil
	})
	cfgs := []modem.Config{{Name: "m0", Device: busy.Path()}, {Name: "m1", Device: failing.Path()}}
	p := startPoolConfigs(t, cfgs, func(o *modem.PoolOptions) {
		o.ReprobeInterval = time.Hour
		core, _ := observer.New(zapcore.InfoLevel)
		o.Logger = zap.New(core, hook)
	})
	waitUp(t, ctx, p, "m0", "m1")
	busy.HoldSends(true)
	first := make(chan error, 1)
	go func() {
		_, err := p.Send(ctx, "first", sms.Submit{Dest: "+8613800138000", Payload: []byte("first")})
		first <- err
	}()
	if err := busy.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	failing.FailNext(38, 3)
	second := make(chan *modem.Sent, 1)
	go func() {
		s, err := p.Send(ctx, "second", sms.Submit{Dest: "+8613800138001", Payload: []byte("second")})
		if err != nil {
			t.Error(err)
		}
		second <- s
	}()
	// The scheduler logged the failure; a reload it applies (no change)
	// comes after its next dispatch: the retry, if any, is given by then.
	select {
	case <-failed:
	case <-ctx.Done():
		t.Fatal("no failure")
	}
	if err := p.Reconfigure(cfgs); err != nil {
		t.Fatal(err)
	}
	busy.HoldSends(false)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	s := <-second
	if s == nil || s.Modem != "m0" {
		t.Fatalf("second message sent as %+v, want on m0", s)
	}
	if n := failing.Count("+CMGS="); n != 1 {
		t.Fatalf("the modem it failed on was given it %d times", n)
	}
}
