package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
)

// fakeSMSC accepts one connection at a time on loopback and hands each to
// serve (on the test's goroutine through conns).
func fakeSMSC(t *testing.T) (addr string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	return ln.Addr().String(), ch
}

func startTestCarrier(t *testing.T, name, addr string) *Carrier {
	t.Helper()
	return startTestCarrierCfg(t, config.Carrier{Name: name, Address: addr, Binds: 1})
}

// startTestCarrierCfg runs a carrier of cfg (window 8 and timeouts of 10 s
// unless cfg sets them) until the test ends.
func startTestCarrierCfg(t *testing.T, cfg config.Carrier) *Carrier {
	t.Helper()
	if cfg.Window == 0 {
		cfg.Window = 8
	}
	if cfg.ResponseTimeout == 0 {
		cfg.ResponseTimeout = config.Duration(10 * time.Second)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = config.Duration(10 * time.Second)
	}
	c := NewCarrier(cfg, NewHealth(3, 0, zap.NewNop()), zap.NewNop())
	runCarrier(t, c)
	return c
}

// recordDowns records the reasons h gives for its carriers going down;
// the function returned lists them so far.
func recordDowns(h *Health) func() []string {
	var mu sync.Mutex
	var downs []string
	h.OnChange = func(_ string, _, to CarrierState, reason string) {
		if to == StateDown {
			mu.Lock()
			downs = append(downs, reason)
			mu.Unlock()
		}
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), downs...)
	}
}

// runCarrier starts c until the test ends.
func runCarrier(t *testing.T, c *Carrier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	t.Cleanup(func() { cancel(); c.Stop() })
}

func nextConn(t *testing.T, conns <-chan net.Conn) *peer {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { _ = c.Close() })
		return &peer{t: t, conn: c}
	case <-time.After(hangGuard):
		t.Fatalf("the carrier bind did not connect within %s", hangGuard)
	}
	return nil
}

// An SMSC that answers bind_transceiver with generic_nack did not bind us
// (SMPP 3.4 §4.3), even when the nack's command_status is 0: the bind is not
// counted up (no submit goes there), the connection is closed and the bind
// is tried again (after the refusal hold, shortened here).
func TestCarrierBindAnsweredByGenericNack(t *testing.T) {
	old := refuseRetry
	refuseRetry = 100 * time.Millisecond
	t.Cleanup(func() { refuseRetry = old })
	addr, conns := fakeSMSC(t)
	c := startTestCarrier(t, "cm", addr)
	p := nextConn(t, conns)
	f := p.read()
	if f.ID != cmdBindTransceiver {
		t.Fatalf("first PDU %+v, want bind_transceiver", f.Header)
	}
	p.write(cmdGenericNack, statusOK, f.Seq, nil)
	p.expectClosed()
	if n := c.Bound(); n != 0 {
		t.Fatalf("%d binds counted up after a generic_nack", n)
	}
	p = nextConn(t, conns) // tried again, after its backoff
	if f := p.read(); f.ID != cmdBindTransceiver {
		t.Fatalf("retry's first PDU %+v, want bind_transceiver", f.Header)
	}
}

// A carrier that refuses spareline's credentials is not hammered: the bind
// waits authRetry before it tries again (not the 1 s reconnect backoff),
// and then binds once the carrier takes the credentials again (an SMSC
// whose account backend was down comes back without a reload).
func TestCarrierBindRefusedForCredentialsTriesAgainSlowly(t *testing.T) {
	old := authRetry
	authRetry = 400 * time.Millisecond // waits 300-500 ms
	t.Cleanup(func() { authRetry = old })
	addr, conns := fakeSMSC(t)
	c := startTestCarrier(t, "cm", addr)
	p := nextConn(t, conns)
	f := p.read()
	p.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
	refused := time.Now()
	p.expectClosed()
	for c.BindStates()[0] != "auth_failed" { // polled: the bind notes it after the connection closed
		if time.Since(refused) > 3*authRetry/4 {
			t.Fatalf("bind state %q after ESME_RINVPASWD, want auth_failed", c.BindStates()[0])
		}
		time.Sleep(time.Millisecond)
	}
	p = nextConn(t, conns)
	if waited := time.Since(refused); waited < 3*authRetry/4 {
		t.Fatalf("tried again %s after a credentials refusal, want at least %s", waited, 3*authRetry/4)
	}
	f = p.read()
	if f.ID != cmdBindTransceiver {
		t.Fatalf("retry's first PDU %+v, want bind_transceiver", f.Header)
	}
	p.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	for c.Bound() != 1 { // polled: the bind counts itself up after the answer
		select {
		case <-time.After(hangGuard):
			t.Fatalf("not bound after the carrier took the credentials: %v", c.BindStates())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// bindOK answers a peer's bind request with OK.
func bindOK(t *testing.T, p *peer, want uint32) {
	t.Helper()
	f := p.read()
	if f.ID != want {
		t.Fatalf("first PDU %+v, want command 0x%08X", f.Header, want)
	}
	p.write(f.ID|cmdRespBit, statusOK, f.Seq, cstring(nil, "smsc"))
}

// expectUnbind reads the unbind a leaving bind sends and answers it.
func expectUnbind(t *testing.T, p *peer) {
	t.Helper()
	f := p.read()
	if f.ID != cmdUnbind {
		t.Fatalf("got %+v, want unbind", f.Header)
	}
	p.write(cmdUnbindResp, statusOK, f.Seq, nil)
	p.expectClosed()
}

func waitBound(t *testing.T, c *Carrier, n int) {
	t.Helper()
	deadline := time.After(hangGuard)
	for c.Bound() != n { // polled: the bind counts itself up after the answer
		select {
		case <-deadline:
			t.Fatalf("bound %d, want %d (%v)", c.Bound(), n, c.BindStates())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// A reload that changes binds or bind_mode changes the connections without
// a restart: added binds dial, the binds that stay keep their connection,
// the others unbind; when the mode changes, the old transceiver leaves only
// once a new transmitter is bound, so the carrier never counts as down.
func TestCarrierReloadChangesBinds(t *testing.T) {
	addr, conns := fakeSMSC(t)
	h := NewHealth(3, 0, zap.NewNop())
	downs := recordDowns(h)
	cfg := config.Carrier{Name: "cm", Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)}
	c := NewCarrier(cfg, h, zap.NewNop())
	runCarrier(t, c)

	first := nextConn(t, conns)
	bindOK(t, first, cmdBindTransceiver)
	waitBound(t, c, 1)

	cfg.Binds = 3
	c.Reconfigure(cfg)
	second, third := nextConn(t, conns), nextConn(t, conns)
	bindOK(t, second, cmdBindTransceiver)
	bindOK(t, third, cmdBindTransceiver)
	waitBound(t, c, 3)

	cfg.Binds = 1
	c.Reconfigure(cfg)
	expectUnbind(t, second) // binds 1 and 2 leave; bind 0 stays
	expectUnbind(t, third)
	waitBound(t, c, 1)
	if st := c.BindStates(); len(st) != 1 || st[0] != "bound" {
		t.Fatalf("bind states %v after going back to 1 bind", st)
	}

	cfg.BindMode = "transmitter_receiver"
	c.Reconfigure(cfg)
	a, b := nextConn(t, conns), nextConn(t, conns)
	fa, fb := a.read(), b.read()
	if fa.ID == cmdBindReceiver {
		a, b, fa, fb = b, a, fb, fa
	}
	if fa.ID != cmdBindTransmitter || fb.ID != cmdBindReceiver {
		t.Fatalf("new binds sent %+v and %+v, want bind_transmitter and bind_receiver", fa.Header, fb.Header)
	}
	b.write(cmdBindReceiver|cmdRespBit, statusOK, fb.Seq, cstring(nil, "smsc"))
	a.write(cmdBindTransmitter|cmdRespBit, statusOK, fa.Seq, cstring(nil, "smsc"))
	expectUnbind(t, first) // only now: the transmitter is up
	waitBound(t, c, 1)
	// The receiver's state is set by its own goroutine, after its answer.
	waitCond(t, "a bound transmitter and receiver", func() bool {
		st := c.BindStates()
		return len(st) == 2 && st[0] == "bound" && st[1] == "rx:bound"
	})
	if downs := downs(); len(downs) != 0 {
		t.Errorf("carrier went down during the reloads: %q", downs)
	}
}

// boundTestCarrier is a started carrier "cm" bound (transceiver) to a
// fake SMSC: the SMSC's side of the bind, and its further connections.
func boundTestCarrier(t *testing.T) (*Carrier, *peer, <-chan net.Conn) {
	t.Helper()
	addr, conns := fakeSMSC(t)
	c := startTestCarrier(t, "cm", addr)
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)
	return c, p, conns
}

// submitOnKeptBind checks that a submit given to c goes out on the bind
// whose SMSC side is working (kept after what), and is answered.
func submitOnKeptBind(t *testing.T, c *Carrier, working *peer, after string) {
	t.Helper()
	res := make(chan error, 1)
	go func() {
		_, err := c.Submit(context.Background(), goldenSubmit(t, "02 4F60", ""))
		res <- err
	}()
	sub := working.read()
	if sub.ID != cmdSubmitSM {
		t.Fatalf("the working bind got %+v after %s, want the submit", sub.Header, after)
	}
	working.write(cmdSubmitSMResp, statusOK, sub.Seq, cstring(nil, "C1"))
	if err := <-res; err != nil {
		t.Fatalf("submit on the kept bind: %v", err)
	}
}

// bindPassword is the password field of a bind request's body.
func bindPassword(t *testing.T, f Frame) string {
	t.Helper()
	parts := bytes.SplitN(f.Body, []byte{0}, 3)
	if len(parts) < 3 {
		t.Fatalf("bind body %q has no password", f.Body)
	}
	return string(parts[1])
}

// A reload with a password the carrier refuses must not take down a
// carrier that works: a trial bind with the new settings is refused, the
// bind keeps its session and carries traffic; a reload with a password the
// carrier takes then moves the bind over.
func TestReloadedCredentialsAreTriedBeforeTheBindLetsGo(t *testing.T) {
	old := authRetry
	authRetry = time.Hour // one trial per reload in this test
	t.Cleanup(func() { authRetry = old })
	c, working, conns := boundTestCarrier(t)

	cfg := c.Config()
	cfg.Password = "typo"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	f := trial.read()
	if f.ID != cmdBindTransceiver || bindPassword(t, f) != "typo" {
		t.Fatalf("trial sent %+v with password %q, want bind_transceiver with the new password", f.Header, bindPassword(t, f))
	}
	trial.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
	trial.expectClosed()

	// The working session still carries a submit, and nothing else was cut.
	submitOnKeptBind(t, c, working, "the refused trial")
	if c.Bound() != 1 {
		t.Fatalf("bound %d after the refused trial, want 1", c.Bound())
	}

	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial = nextConn(t, conns)
	f = trial.read()
	if bindPassword(t, f) != "rotated" {
		t.Fatalf("second trial with password %q", bindPassword(t, f))
	}
	trial.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	expectUnbind(t, working) // the bind lets its old session go, and takes the trial's
	waitTakenOver(t, c)
	submitOnKeptBind(t, c, trial, "the move to the new password")
	waitBound(t, c, 1)
}

// A trial bind refused for a reason that says nothing about the new
// settings (here the carrier's limit on binds) does not hold the reload
// back: the bind reconnects with them.
func TestReloadTrialRefusedForBindLimitReconnects(t *testing.T) {
	c, working, conns := boundTestCarrier(t)

	cfg := c.Config()
	cfg.SystemID = "ent02"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	f := trial.read()
	trial.write(cmdBindTransceiverR, statusAlyBnd, f.Seq, nil)
	trial.expectClosed()
	expectUnbind(t, working)
	again := nextConn(t, conns)
	f = again.read()
	if !bytes.HasPrefix(f.Body, []byte("ent02\x00")) {
		t.Fatalf("the bind came back as %q, want system_id ent02", f.Body)
	}
	again.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	waitBound(t, c, 1)
}

// An SMSC that closes the connection on a wrong password instead of
// answering the bind: the trial tells as much as a refusal, and the bind
// keeps its session.
func TestReloadTrialDroppedWithoutAnswerKeepsTheBind(t *testing.T) {
	old := authRetry
	authRetry = time.Hour
	t.Cleanup(func() { authRetry = old })
	c, working, conns := boundTestCarrier(t)
	core, logs := observer.New(zap.InfoLevel)
	c.log = zap.New(core) // before the trial starts: it logs its verdict
	cfg := c.Config()
	cfg.Password = "typo"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	if f := trial.read(); f.ID != cmdBindTransceiver {
		t.Fatalf("trial sent %+v", f.Header)
	}
	_ = trial.conn.Close()
	waitCond(t, "the trial's verdict", func() bool {
		return logs.FilterMessageSnippet("carrier refused the reloaded connection settings").Len() > 0 ||
			logs.FilterMessageSnippet("says nothing about them").Len() > 0
	})
	if logs.FilterMessageSnippet("says nothing about them").Len() > 0 {
		t.Fatal("a bind dropped without an answer was taken as saying nothing: the binds reconnect with the untried settings")
	}
	submitOnKeptBind(t, c, working, "the dropped trial")
}

// The usual fix at 3 a.m.: a reload with a typo in the password, its trial
// refused, then a reload back to the password the binds are using. Nothing
// is left to try: the trial stops, no trial bind dials, the binds keep their
// sessions (before, a new trial ran and its success reconnected every bind
// for nothing).
func TestReloadBackToTheLiveLoginStopsTheTrial(t *testing.T) {
	old := authRetry
	authRetry = time.Hour
	t.Cleanup(func() { authRetry = old })
	c, working, conns := boundTestCarrier(t)
	core, logs := observer.New(zap.InfoLevel)
	c.log = zap.New(core)
	good := c.Config()
	reloadTypoRefused(t, c, conns, good)
	waitCond(t, "the refusal logged", func() bool {
		return logs.FilterMessageSnippet("carrier refused the reloaded connection settings").Len() > 0
	})

	c.Reconfigure(good)
	c.mu.Lock()
	pending := c.trialCancel != nil
	c.mu.Unlock()
	if pending {
		t.Fatal("a reload back to the live login started a trial")
	}
	if logs.FilterMessageSnippet("reload restored the address and login the binds are using").Len() != 1 {
		t.Fatal("the restore is not logged")
	}
	submitOnKeptBind(t, c, working, "the restore")
	select {
	case conn := <-conns:
		t.Fatalf("a connection was dialed after the restore: %v", conn.RemoteAddr())
	default:
	}

	// The restore leaves the live login as it was: a real change after it
	// is tried as before.
	rotated := good
	rotated.Password = "rotated"
	c.Reconfigure(rotated)
	trial := nextConn(t, conns)
	if f := trial.read(); bindPassword(t, f) != "rotated" {
		t.Fatalf("the trial after the restore bound with %q", bindPassword(t, f))
	}
}

// While a trial of a typo waits, a bind whose session dropped redials with
// the login the binds are using, not the untried typo; so do both when the
// carrier drops every session (it restarts): the carrier stays up, and the
// typo is only ever sent by the trial. The reload back to the live login
// then reconnects nothing.
func TestReloadTypoRedialsWithTheLiveLogin(t *testing.T) {
	old := authRetry
	authRetry = time.Hour
	t.Cleanup(func() { authRetry = old })
	addr, conns := fakeSMSC(t)
	cfg := config.Carrier{Name: "cm", Address: addr, SystemID: "ent01", Password: "pw", Binds: 2}
	c := startTestCarrierCfg(t, cfg)
	cfg = c.Config()        // with the timeouts set
	a := nextConn(t, conns) // the other binds wait for the first one's answer
	bindOK(t, a, cmdBindTransceiver)
	b := nextConn(t, conns)
	bindOK(t, b, cmdBindTransceiver)
	waitBound(t, c, 2)

	reloadTypoRefused(t, c, conns, cfg)
	redialOK := func(what string) *peer {
		t.Helper()
		p := nextConn(t, conns)
		f := p.read()
		if f.ID != cmdBindTransceiver || bindPassword(t, f) != "pw" {
			t.Fatalf("%s: the bind redialled with %+v, password %q; want the live login's", what, f.Header, bindPassword(t, f))
		}
		p.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
		return p
	}
	_ = b.conn.Close() // the second bind's session drops
	b = redialOK("one session dropped")
	waitBound(t, c, 2)

	_ = a.conn.Close() // the carrier restarts: every session drops
	_ = b.conn.Close()
	a, b = redialOK("every session dropped"), redialOK("every session dropped")
	waitBound(t, c, 2)
	if s := c.cfg.Load().Password; s != "typo" {
		t.Fatalf("the carrier's settings say %q, want the reloaded typo (still on trial)", s)
	}

	c.Reconfigure(cfg) // back to the live login
	if c.Bound() != 2 {
		t.Fatalf("bound %d after the restore, want 2", c.Bound())
	}
	select {
	case conn := <-conns:
		t.Fatalf("a connection was dialed after the restore: %v", conn.RemoteAddr())
	default:
	}
}

// A bind that connected while a reload changed the connection settings
// lets its new session go only if it dialled with settings that are no
// longer the carrier's: one that dialled with the settings a later reload
// restored (or read the new ones just after the swap) keeps it.
func TestStaleConnOnlyForOtherSettings(t *testing.T) {
	c := NewCarrier(config.Carrier{Name: "cm", Address: "127.0.0.1:1", SystemID: "ent01", Password: "pw"}, nil, zap.NewNop())
	gen, dialled := c.connGen.Load(), c.cfg.Load()
	if c.staleConn(gen, dialled) {
		t.Fatal("stale with no reload at all")
	}
	c.connGen.Add(1) // a reload back to the same settings
	if c.staleConn(gen, dialled) {
		t.Fatal("a bind that dialled with the settings in force was let go")
	}
	for _, change := range []func(*config.Carrier){
		func(cfg *config.Carrier) { cfg.Password = "rotated" },
		func(cfg *config.Carrier) { cfg.Address = "127.0.0.1:2" },
		func(cfg *config.Carrier) { cfg.TLS = true },
		func(cfg *config.Carrier) { cfg.TLSCAPEM = []byte("ca") },
	} {
		now := *dialled
		change(&now)
		c.cfg.Store(&now)
		if !c.staleConn(gen, dialled) {
			t.Fatalf("a bind that dialled with settings since changed (%+v) kept its session", now)
		}
	}
}

// reloadTypoRefused reloads cfg with the password "typo" and has the SMSC
// refuse the trial bind that follows (ESME_RINVPASWD).
func reloadTypoRefused(t *testing.T, c *Carrier, conns <-chan net.Conn, cfg config.Carrier) {
	t.Helper()
	cfg.Password = "typo"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	f := trial.read()
	trial.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
	trial.expectClosed()
}

// A receipt the SMSC pushes on a trial bind that unbinds at once (the
// carrier has two binds bound) is refused (ESME_RX_T_APPN: sent again on a
// bind that stays), never handled: an answer behind its unbind would be
// lost.
func TestReloadTrialTakesNoDelivery(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := NewCarrier(config.Carrier{Name: "cm", Address: addr, Binds: 2, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)},
		NewHealth(3, 0, zap.NewNop()), zap.NewNop())
	c.onDeliver = func(*Carrier, *Session, Frame) { t.Error("a delivery on the trial bind was handled") }
	runCarrier(t, c)
	bindOK(t, nextConn(t, conns), cmdBindTransceiver)
	bindOK(t, nextConn(t, conns), cmdBindTransceiver)
	waitBound(t, c, 2)
	cfg := c.Config()
	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	f := trial.read()
	trial.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	trial.write(cmdDeliverSM, 0, 77, goldenSubmit(t, "02 4F60", ""))
	for unbound := false; !unbound; {
		f := trial.read()
		switch f.ID {
		case cmdDeliverSMResp:
			if f.Seq != 77 || f.Status != statusRXTAppn {
				t.Errorf("deliver_sm on the trial answered %+v, want ESME_RX_T_APPN", f.Header)
			}
		case cmdUnbind:
			trial.write(cmdUnbindResp, statusOK, f.Seq, nil)
			unbound = true
		default:
			t.Fatalf("trial sent %+v", f.Header)
		}
	}
}

// addr_ton, addr_npi and address_range go in the bind (SMPP 3.4 §4.1.1):
// an SMSC that routes MO and receipts to a receiver by its address_range
// (the service number) gets it.
func TestCarrierBindAddressRange(t *testing.T) {
	addr, conns := fakeSMSC(t)
	startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, SystemID: "ent01", Password: "pw", SystemType: "VMA",
		AddrTON: 2, AddrNPI: 1, AddressRange: "10690001"})
	p := nextConn(t, conns)
	f := p.read()
	want := "ent01\x00pw\x00VMA\x00\x34\x02\x0110690001\x00"
	if f.ID != cmdBindTransceiver || string(f.Body) != want {
		t.Fatalf("bind %+v body %q, want %q", f.Header, f.Body, want)
	}
}

// A password rotated on both sides, the file first: the trial of the new
// password is refused (the carrier has not applied it yet), then the
// carrier applies it and drops the sessions. The binds redial with the
// login they kept and are refused; that wakes the trial, which binds with
// the reloaded password, and the binds follow it at once, rather than
// holding off for authRetry with the carrier down. Two binds: the second
// refusal of the kept login must not hold its bind off either.
func TestReloadRotationAppliedByTheCarrierAfterTheFile(t *testing.T) {
	old := authRetry
	authRetry = time.Hour
	t.Cleanup(func() { authRetry = old })
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, SystemID: "ent01", Password: "pw", Binds: 2})
	a := nextConn(t, conns) // the other binds wait for the first one's answer
	bindOK(t, a, cmdBindTransceiver)
	b := nextConn(t, conns)
	bindOK(t, b, cmdBindTransceiver)
	waitBound(t, c, 2)
	cfg := c.Config()
	cfg.Password = "new"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	f := trial.read()
	trial.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil) // not applied yet
	trial.expectClosed()

	_ = a.conn.Close() // the carrier applies it and drops the sessions
	_ = b.conn.Close()
	// Every connection from now on: the old password refused, the new one
	// taken (the trial's unbind answered).
	var newBinds atomic.Int32
	go func() {
		for conn := range conns {
			p := &peer{t: t, conn: conn}
			go func() {
				defer conn.Close()
				f, err := p.tryRead()
				if err != nil {
					return
				}
				if bindPassword(t, f) != "new" {
					p.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
					return
				}
				newBinds.Add(1)
				p.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
				for {
					f, err := p.tryRead()
					if err != nil {
						return
					}
					switch f.ID {
					case cmdUnbind:
						p.write(cmdUnbindResp, statusOK, f.Seq, nil)
					case cmdEnquireLink:
						p.write(cmdEnquireLinkResp, statusOK, f.Seq, nil)
					}
				}
			}()
		}
	}()
	// Both binds with the new password (and the trial's), well before
	// authRetry.
	waitCond(t, "the trial and both binds bound with the new password", func() bool {
		return newBinds.Load() >= 3 && c.Bound() == 2
	})
}

// Stopping a carrier (the gateway's shutdown) is not an outage: its health
// does not go down, so no "carrier state changed" warning (or error, for
// the last carrier) is logged at every SIGTERM.
func TestCarrierStopIsNotAnOutage(t *testing.T) {
	addr, conns := fakeSMSC(t)
	h := NewHealth(3, 0, zap.NewNop())
	downs := recordDowns(h)
	c := NewCarrier(config.Carrier{Name: "cm", Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)}, h, zap.NewNop())
	h.Attach(c)
	runCarrier(t, c)
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)
	go func() { // the SMSC answers the unbind
		if f, err := p.tryRead(); err == nil && f.ID == cmdUnbind {
			p.write(cmdUnbindResp, statusOK, f.Seq, nil)
		}
	}()
	c.Stop()
	if downs := downs(); len(downs) != 0 {
		t.Fatalf("stopping the carrier marked it down: %q", downs)
	}
}

// A typo on trial, then a carrier whose account backend refuses the good
// login once while it restarts: the binds do not take the typo; they come
// back with the login that works once the refusal passes.
func TestReloadTypoThenATransientRefusalKeepsTheGoodLogin(t *testing.T) {
	old := authRetry
	authRetry = 300 * time.Millisecond
	t.Cleanup(func() { authRetry = old })
	c, working, conns := boundTestCarrier(t)
	good := c.Config()
	reloadTypoRefused(t, c, conns, good)
	_ = working.conn.Close() // the carrier restarts
	refusedOnce := false
	for {
		p := nextConn(t, conns)
		f := p.read()
		switch pw := bindPassword(t, f); {
		case pw == "typo": // the trial, tried again
			p.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
			continue
		case !refusedOnce: // the backend, coming up, refuses the good login once
			refusedOnce = true
			p.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
			continue
		default:
			p.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
		}
		break
	}
	waitBound(t, c, 1)
	if live := c.live.Load(); live.password != good.Password {
		t.Fatalf("live login %q, want the good one kept", live.password)
	}
}

// A wrong password in the file at start: the carrier sees one refused
// login, not one per bind (some SMSCs lock an account after three); the
// other binds wait for the first one's answer and then for the auth hold.
func TestCarrierStartWithAWrongPasswordTriesOnce(t *testing.T) {
	old := authRetry
	authRetry = time.Hour
	t.Cleanup(func() { authRetry = old })
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, SystemID: "ent01", Password: "typo", Binds: 3})
	p := nextConn(t, conns)
	f := p.read()
	p.write(cmdBindTransceiverR, statusInvPaswd, f.Seq, nil)
	waitCond(t, "every bind held off", func() bool {
		for _, st := range c.BindStates() {
			if st != "auth_failed" {
				return false
			}
		}
		return true
	})
	select {
	case conn := <-conns:
		t.Fatalf("a second login attempt from %v", conn.RemoteAddr())
	default:
	}
}

// A bind the SMSC never answers is "no response before the timeout", every
// time: before, the first such bind read "connection lost while waiting for
// the response: context deadline exceeded" (connect_timeout, which also
// bounds the dial, ended first), and only later ones the timeout.
func TestCarrierBindNeverAnsweredIsATimeout(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := NewCarrier(config.Carrier{Name: "cm", Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(300 * time.Millisecond)},
		NewHealth(3, 0, zap.NewNop()), zap.NewNop())
	// A dial that takes half of connect_timeout (a distant SMSC): the
	// connect_timeout context, which began before the dial, ends well
	// before the bind request's own timer.
	dial := c.dialer
	c.dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		select {
		case <-time.After(150 * time.Millisecond): // network latency, not synchronisation
		case <-ctx.Done():
		}
		return dial(ctx, network, addr)
	}
	for range 2 {
		res := make(chan error, 1)
		go func() {
			cfg := c.Config()
			_, err := c.dialAndBind(context.Background(), &cfg, bindTRX, zap.NewNop(), nil)
			res <- err
		}()
		p := nextConn(t, conns)
		if f := p.read(); f.ID != cmdBindTransceiver {
			t.Fatalf("got %+v, want bind_transceiver", f.Header)
		}
		err := <-res // never answered
		if !errors.Is(err, ErrResponseTimeout) || strings.Contains(err.Error(), "connection lost") {
			t.Fatalf("bind never answered: %v, want %v", err, ErrResponseTimeout)
		}
		if want := "bind: smpp: no response before the timeout"; err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	}
}
