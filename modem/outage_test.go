package modem_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// takenOut is spareline_modem_taken_out_total{modem,reason}.
func takenOut(t *testing.T, name, reason string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "spareline_modem_taken_out_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["modem"] == name && got["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no spareline_modem_taken_out_total{modem=%q,reason=%q}", name, reason)
	return 0
}

// heldOut is spareline_modem_held_out{modem}.
func heldOut(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "spareline_modem_held_out" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "modem" && l.GetValue() == name {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no spareline_modem_held_out{modem=%q}", name)
	return 0
}

// logged returns the entries with message msg that name modem name.
func logged(logs *observer.ObservedLogs, msg, name string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.FilterMessage(msg).All() {
		if e.ContextMap()["modem"] == name {
			out = append(out, e)
		}
	}
	return out
}

// A modem that stops answering (it reads what it is sent and answers
// nothing) while it is up is taken out at its next send: AT+CMGF=0, sent
// before every AT+CMGS on the message's own context (whose deadline is
// minutes away), is bounded by the command timeout; the message goes to
// the other modem at once; the modem is down with a last error saying it
// is not answering, its signal is no longer shown, and a warning names it.
// When it answers again, a probe initialises it and it is back in service,
// logged. (AT+CMGF=0 held the device until the message's deadline: no
// probe, no take-out, the message stuck on it.)
func TestModemThatStopsAnsweringIsTakenOutAtItsNextSend(t *testing.T) {
	quiet := startSim(t, "quiet", modemsim.Options{Signal: 20})
	good := startSim(t, "good", modemsim.Options{})
	core, logs := observer.New(zapcore.InfoLevel)
	p := startPoolConfigs(t, []modem.Config{{Name: "quiet0", Device: quiet.Path()}, {Name: "quiet1", Device: good.Path()}},
		func(o *modem.PoolOptions) {
			o.Logger = zap.New(core)
			o.CommandTimeout = 300 * time.Millisecond
			o.ReprobeInterval = 2 * time.Second // the send, not a probe, meets the silence
		})
	ctx := testCtx(t, 60*time.Second)
	waitUp(t, ctx, p, "quiet0", "quiet1")
	// Right after a probe of quiet0 (AT+CMGF? is its last command), so
	// that the send, not the next probe, meets the silence.
	if err := quiet.WaitCount(ctx, "+CMGF?", quiet.Count("+CMGF?")+1); err != nil {
		t.Fatal(err)
	}
	before, outs := quiet.Count("+CMGF="), takenOut(t, "quiet0", "not_answering")
	quiet.Mute(true)
	// The message's deadline is far away, as the gateway's (10 minutes).
	sendCtx := testCtx(t, 50*time.Second)
	res := make(chan error, 1)
	var sent *modem.Sent
	go func() {
		s, err := p.Send(sendCtx, "q1", sms.Submit{Dest: "+8613800138000", Payload: []byte("not stuck")})
		sent = s
		res <- err
	}()
	bound := time.NewTimer(20 * time.Second) // a bound on the wait, not a synchronisation
	defer bound.Stop()
	select {
	case err := <-res:
		if err != nil || sent.Modem != "quiet1" {
			t.Fatalf("send: %+v, %v; want sent by quiet1", sent, err)
		}
	case <-bound.C:
		t.Fatalf("the message is still held 20 s after its modem stopped answering: %+v", p.Status())
	}
	if quiet.Count("+CMGF=") == before {
		t.Fatal("the silent modem was not given the message: the test did not test the send path")
	}
	st := waitDown(t, ctx, p, "quiet0", "not answering")
	if st.SignalDBm != 0 || st.Registration != 0 {
		t.Errorf("silent modem's status still shows signal %d dBm, registration %d", st.SignalDBm, st.Registration)
	}
	if v, ok := series(t, "spareline_modem_up", "quiet0"); !ok || v != 0 {
		t.Errorf("spareline_modem_up{quiet0} = %v (present %v), want 0", v, ok)
	}
	if v, ok := series(t, "spareline_modem_signal_dbm", "quiet0"); ok {
		t.Errorf("spareline_modem_signal_dbm{quiet0} still %v", v)
	}
	if n := takenOut(t, "quiet0", "not_answering") - outs; n != 1 {
		t.Errorf("taken_out_total{quiet0,not_answering} = %v, want 1", n)
	}
	if w := logged(logs, "modem stopped answering; taken out, its message goes to another modem, and it is initialised again at each probe until it answers", "quiet0"); len(w) != 1 || w[0].Level != zap.WarnLevel {
		t.Errorf("warnings about quiet0 stopping answering: %v", w)
	}
	quiet.Mute(false)
	waitUp(t, ctx, p, "quiet0")
	back := logged(logs, "modem back in service", "quiet0")
	if len(back) != 1 || back[0].Level != zap.InfoLevel || back[0].ContextMap()["was_out_for"] != "not_answering" {
		t.Fatalf("back in service logged %v", back)
	}
	if d, ok := back[0].ContextMap()["out_for"].(time.Duration); !ok || d <= 0 {
		t.Errorf("out_for %v", back[0].ContextMap()["out_for"])
	}
}

// A modem whose sends all fail (a SIM without credit: +CMS ERROR: 50 to
// every AT+CMGS, while it answers every other command) is taken out after
// MaxErrors errors and stays out, with the cause as its last error, though
// its health probes pass; after its hold it is tried with one message (on
// trial: still down); a failed trial holds it out again for twice as long,
// up to SendHoldMax; a number error on trial tells nothing either way; a
// trial send that succeeds puts it back in service, logged with how long
// it was out. (It came back up at the next probe, last error cleared, and
// failed again: up and down every few seconds.)
func TestModemTakenOutForSendErrorsStaysOutUntilASendSucceeds(t *testing.T) {
	const holdMin, holdMax = 300 * time.Millisecond, time.Second
	bad := startSim(t, "bad", modemsim.Options{})
	good := startSim(t, "good", modemsim.Options{})
	core, logs := observer.New(zapcore.InfoLevel)
	p := startPoolConfigs(t, []modem.Config{{Name: "hold0", Device: bad.Path()}, {Name: "hold1", Device: good.Path()}},
		func(o *modem.PoolOptions) {
			o.Logger = zap.New(core)
			o.SendHoldMin, o.SendHoldMax = holdMin, holdMax
		})
	ctx := testCtx(t, 60*time.Second)
	waitUp(t, ctx, p, "hold0", "hold1")
	outs := takenOut(t, "hold0", "send_errors")
	if h := heldOut(t, "hold0"); h != 0 {
		t.Fatalf("held_out{hold0} = %v before any error, want 0", h)
	}
	bad.FailNext(50, 1000)
	n := 0
	send := func(dest string) (*modem.Sent, error) {
		n++
		return p.Send(ctx, fmt.Sprint("h", n), sms.Submit{Dest: dest, Payload: []byte(fmt.Sprint("msg ", n))})
	}
	// Each goes to hold0 first (fewest sends, or least recently used),
	// fails, and is sent by hold1.
	for range 3 {
		if s, err := send("+8613800138000"); err != nil || s.Modem != "hold1" {
			t.Fatalf("send %d: %+v, %v", n, s, err)
		}
	}
	if c := bad.Count("+CMGS="); c != 3 {
		t.Fatalf("hold0 was given %d messages, want 3", c)
	}
	waitDown(t, ctx, p, "hold0", "+CMS ERROR: 50")
	// Its probes pass (the SIM answers AT commands), and it stays out
	// with its cause.
	if err := bad.WaitCount(ctx, "+CREG?", bad.Count("+CREG?")+3); err != nil {
		t.Fatal(err)
	}
	if st := modemState(p, "hold0"); st.State != modem.StateDown || !strings.Contains(st.LastError, "+CMS ERROR: 50") {
		t.Fatalf("after good probes hold0 is %+v, want down with its send error", st)
	}
	if h := heldOut(t, "hold0"); h != 1 {
		t.Fatalf("held_out{hold0} = %v while held out, want 1 (what SparelineModemSendErrors watches)", h)
	}
	onTrial := func() {
		t.Helper()
		waitStatus(t, ctx, p, "hold0 on trial", func(all []modem.ModemStatus) bool {
			for _, s := range all {
				if s.Name == "hold0" {
					if s.State == modem.StateUp {
						t.Fatalf("hold0 up before a send succeeded: %+v", s)
					}
					return s.Trial && s.State == modem.StateDown && strings.Contains(s.LastError, "+CMS ERROR: 50")
				}
			}
			return false
		})
	}
	// Two failed trials: the hold doubles, then stops at its cap.
	for i, want := range []time.Duration{2 * holdMin, holdMax} {
		onTrial()
		c := bad.Count("+CMGS=")
		if s, err := send("+8613800138000"); err != nil || s.Modem != "hold1" {
			t.Fatalf("send %d: %+v, %v", n, s, err)
		}
		if got := bad.Count("+CMGS=") - c; got != 1 {
			t.Fatalf("trial %d: hold0 was given %d messages, want 1", i+1, got)
		}
		failed := logged(logs, "modem failed its trial send; out of service again, for longer", "hold0")
		if len(failed) != i+1 || failed[i].ContextMap()["hold"] != want {
			t.Fatalf("trial %d: failed trials logged %v, want the last with hold %v", i+1, failed, want)
		}
	}
	// A number error on trial says nothing about the modem.
	onTrial()
	bad.FailNext(1, 1) // replaces the 50s: the sends after it succeed
	var se *modem.SendError
	if _, err := send("+8613800000000"); !errors.As(err, &se) || !se.NumberError {
		t.Fatalf("dead number: %v", err)
	}
	if st := modemState(p, "hold0"); !st.Trial || st.State != modem.StateDown {
		t.Fatalf("after a number error on trial hold0 is %+v, want still down on trial", st)
	}
	// A trial that succeeds: back in service.
	for i := 0; ; i++ {
		s, err := send("+8613800138000")
		if err != nil {
			t.Fatal(err)
		}
		if s.Modem == "hold0" {
			break
		}
		if i == 5 {
			t.Fatalf("hold0, on trial, was given none of 6 messages: %+v", p.Status())
		}
	}
	waitUp(t, ctx, p, "hold0")
	if st := modemState(p, "hold0"); st.LastError != "" || st.Trial {
		t.Errorf("hold0 back in service with %+v", st)
	}
	back := logged(logs, "modem back in service", "hold0")
	if len(back) != 1 || back[0].ContextMap()["was_out_for"] != "send_errors" {
		t.Fatalf("back in service logged %v", back)
	}
	if d, _ := back[0].ContextMap()["out_for"].(time.Duration); d < holdMin+2*holdMin {
		t.Errorf("out_for %v, want at least the holds (%v)", d, 3*holdMin)
	}
	if h := heldOut(t, "hold0"); h != 0 {
		t.Errorf("held_out{hold0} = %v back in service, want 0", h)
	}
	if c := takenOut(t, "hold0", "send_errors") - outs; c != 3 {
		t.Errorf("taken_out_total{hold0,send_errors} = %v, want 3 (the take-out, two failed trials)", c)
	}
}

// A modem whose sends fail for the network's state (+CMS ERROR: 331, no
// network service, while it still reads as registered) is taken out after
// MaxErrors errors, counted with reason network, not held out (held_out
// stays 0, no trial), and comes back in service at a good probe with no
// message sent to it. (It was held out as for a SIM without credit: with
// no traffic it stayed down on trial for good, its probes good, and the
// alerts for no credit and no modem up firing.)
func TestModemTakenOutForNetworkErrorsComesBackAtAGoodProbe(t *testing.T) {
	bad := startSim(t, "net", modemsim.Options{})
	good := startSim(t, "good", modemsim.Options{})
	core, logs := observer.New(zapcore.InfoLevel)
	p := startPoolConfigs(t, []modem.Config{{Name: "net0", Device: bad.Path()}, {Name: "net1", Device: good.Path()}},
		func(o *modem.PoolOptions) {
			o.Logger = zap.New(core)
			o.SendHoldMin, o.SendHoldMax = time.Hour, time.Hour // a hold would outlast the test
		})
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "net0", "net1")
	nets, holds := takenOut(t, "net0", "network"), takenOut(t, "net0", "send_errors")
	bad.FailNext(331, 3)
	for i := range 3 {
		s, err := p.Send(ctx, fmt.Sprint("n", i), sms.Submit{Dest: "+8613800138000", Payload: []byte(fmt.Sprint("msg ", i))})
		if err != nil || s.Modem != "net1" {
			t.Fatalf("send %d: %+v, %v", i, s, err)
		}
	}
	if c := bad.Count("+CMGS="); c != 3 {
		t.Fatalf("net0 was given %d messages, want 3", c)
	}
	// Taken out before the scheduler heard of the third send.
	if n := takenOut(t, "net0", "network") - nets; n != 1 {
		t.Fatalf("taken_out_total{net0,network} = %v, want 1", n)
	}
	if n := takenOut(t, "net0", "send_errors") - holds; n != 0 {
		t.Errorf("taken_out_total{net0,send_errors} = %v, want 0", n)
	}
	if h := heldOut(t, "net0"); h != 0 {
		t.Errorf("held_out{net0} = %v after network errors, want 0", h)
	}
	w := logged(logs, "modem taken out after consecutive errors of the network or the radio; back in service at a good probe", "net0")
	if len(w) != 1 || !strings.Contains(fmt.Sprint(w[0].ContextMap()["error"]), "+CMS ERROR: 331") {
		t.Fatalf("take-out logged %v", w)
	}
	// No message: a good probe puts it back.
	waitUp(t, ctx, p, "net0")
	if st := modemState(p, "net0"); st.Trial || st.LastError != "" {
		t.Errorf("net0 back in service with %+v", st)
	}
	back := logged(logs, "modem back in service", "net0")
	if len(back) != 1 || back[0].ContextMap()["was_out_for"] != "network" {
		t.Fatalf("back in service logged %v", back)
	}
}

// A modem taken out for errors of the network that fails again the same
// way after a good probe put it back, with no send gone out in between, is
// held out (then tried with one message), not put back at every probe to
// fail the next messages again: the probe proves nothing for it. The hold
// is not the alert's (held_out stays 0: no SIM to top up). A send that goes
// out in between clears the memory: errors after it are taken out and put
// back at a probe, as the first time.
func TestModemFailingTheNetworkAgainAfterAGoodProbeIsHeldOut(t *testing.T) {
	sim := startSim(t, "again", modemsim.Options{})
	core, logs := observer.New(zapcore.InfoLevel)
	p := startPoolConfigs(t, []modem.Config{{Name: "again0", Device: sim.Path()}}, func(o *modem.PoolOptions) {
		o.Logger = zap.New(core)
		o.MaxErrors, o.MaxAttempts = 1, 1
		o.SendHoldMin, o.SendHoldMax = time.Hour, time.Hour // the hold outlasts the test
	})
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "again0")
	nets := takenOut(t, "again0", "network")
	fail := func(n int) {
		t.Helper()
		sim.FailNext(42, 1) // congestion
		if _, err := p.Send(ctx, fmt.Sprint("f", n), sms.Submit{Dest: "+8613800138000", Payload: []byte("congested")}); err == nil {
			t.Fatalf("send %d went out through a congested network", n)
		}
	}
	send := func(n int) {
		t.Helper()
		if _, err := p.Send(ctx, fmt.Sprint("s", n), sms.Submit{Dest: "+8613800138000", Payload: []byte("ok")}); err != nil {
			t.Fatalf("send %d: %v", n, err)
		}
	}
	// Out, back at a good probe, a send goes out: out and back again.
	fail(1)
	waitUp(t, ctx, p, "again0")
	send(1)
	fail(2)
	waitUp(t, ctx, p, "again0")
	if n := takenOut(t, "again0", "network") - nets; n != 2 {
		t.Fatalf("taken_out_total{again0,network} = %v, want 2", n)
	}
	// Out again with nothing sent since it came back: held out.
	fail(3)
	st := waitDown(t, ctx, p, "again0", "none sent since a good probe put it back")
	if !strings.Contains(st.LastError, "+CMS ERROR: 42") || !strings.Contains(st.LastError, "out of service for 1h0m0s") {
		t.Errorf("last error %q", st.LastError)
	}
	if n := takenOut(t, "again0", "network") - nets; n != 3 {
		t.Errorf("taken_out_total{again0,network} = %v, want 3", n)
	}
	if h := heldOut(t, "again0"); h != 0 {
		t.Errorf("held_out{again0} = %v for errors of the network, want 0", h)
	}
	if w := logged(logs, "modem taken out again after consecutive errors of the network or the radio, no send having gone out since it came back; held out, then tried with one message", "again0"); len(w) != 1 {
		t.Errorf("hold logged %d times, want 1", len(w))
	}
	// Its probes are good, and it stays out: a probe brought it back
	// before and it failed again.
	if err := sim.WaitCount(ctx, "+CREG?", sim.Count("+CREG?")+2); err != nil {
		t.Fatalf("no probe came: %v", err)
	}
	if st := modemState(p, "again0"); st.State == modem.StateUp {
		t.Fatalf("held-out modem back in service at a probe: %+v", st)
	}
}

// A modem that answers nothing when it is initialised is down with a last
// error that says so once ("...no answer to AT: at: no answer to AT: ..."
// said it twice).
func TestSilentModemLastErrorSaysItOnce(t *testing.T) {
	sim := startSim(t, "mute", modemsim.Options{})
	sim.Mute(true)
	p := startPoolConfigs(t, []modem.Config{{Name: "mute0", Device: sim.Path()}}, func(o *modem.PoolOptions) {
		o.CommandTimeout = 200 * time.Millisecond
	})
	ctx := testCtx(t, 30*time.Second)
	st := waitDown(t, ctx, p, "mute0", "not answering")
	if n := strings.Count(st.LastError, "no answer to AT"); n != 1 {
		t.Errorf("last error %q says \"no answer to AT\" %d times, want once", st.LastError, n)
	}
}

// The only modem, held out after send errors, still gets its trial
// message: a pool whose modems are all held is not stuck for good.
func TestSoleModemHeldOutIsStillTried(t *testing.T) {
	sim := startSim(t, "sole", modemsim.Options{})
	p := startPoolConfigs(t, []modem.Config{{Name: "sole0", Device: sim.Path()}}, func(o *modem.PoolOptions) {
		o.SendHoldMin, o.SendHoldMax = 200*time.Millisecond, 200*time.Millisecond
		o.MaxErrors, o.MaxAttempts = 1, 1
	})
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "sole0")
	sim.FailNext(50, 1)
	if _, err := p.Send(ctx, "s1", sms.Submit{Dest: "+8613800138000", Payload: []byte("no credit")}); err == nil {
		t.Fatal("the send without credit succeeded")
	}
	waitDown(t, ctx, p, "sole0", "+CMS ERROR: 50")
	// Waits for the trial, goes out then.
	s, err := p.Send(ctx, "s2", sms.Submit{Dest: "+8613800138000", Payload: []byte("credit again")})
	if err != nil || s.Modem != "sole0" {
		t.Fatalf("send: %+v, %v", s, err)
	}
	waitUp(t, ctx, p, "sole0")
}

// An unplugged modem's signal is not known: its status shows none and
// spareline_modem_signal_dbm has no series for it, not the last reading.
func TestUnpluggedModemHasNoSignal(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Signal: 20})
	p := startPoolConfigs(t, []modem.Config{{Name: "unplug0", Device: sim.Path()}}, nil)
	ctx := testCtx(t, 10*time.Second)
	waitUp(t, ctx, p, "unplug0")
	if v, ok := series(t, "spareline_modem_signal_dbm", "unplug0"); !ok || v != -73 {
		t.Fatalf("signal gauge %v (present %v), want -73", v, ok)
	}
	outs := takenOut(t, "unplug0", "port_broken")
	sim.Unplug()
	st := waitDown(t, ctx, p, "unplug0", "")
	if st.SignalDBm != 0 || st.Registration != 0 {
		t.Errorf("unplugged modem's status shows signal %d dBm, registration %d", st.SignalDBm, st.Registration)
	}
	if v, ok := series(t, "spareline_modem_signal_dbm", "unplug0"); ok {
		t.Errorf("spareline_modem_signal_dbm{unplug0} still %v after the unplug", v)
	}
	if n := takenOut(t, "unplug0", "port_broken") - outs; n != 1 {
		t.Errorf("taken_out_total{unplug0,port_broken} = %v, want 1", n)
	}
	if err := sim.Replug(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, ctx, p, "unplug0")
	if v, ok := series(t, "spareline_modem_signal_dbm", "unplug0"); !ok || v != -73 {
		t.Fatalf("signal gauge %v (present %v) after the replug, want -73", v, ok)
	}
}
