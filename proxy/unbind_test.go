package proxy

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/spareline/spareline/config"
)

// A platform that sends unbind gets no deliver_sm after it (SMPP 3.4 §4.2:
// it is ending the session; what it is sent now it may never answer, and a
// receipt it took without answering comes again on its next bind). Its
// session leaves the account's receivers at the unbind, not when the
// session ends after its submits in flight were answered (which may take a
// carrier's response timeout). Those submits are still answered, then
// unbind_resp.
func TestUnbindingPlatformGetsNoMoreDeliveries(t *testing.T) {
	addr, conns := fakeSMSC(t)
	ts := newTestServer(t, ServerConfig{Log: zaptest.NewLogger(t)})
	t.Cleanup(ts.stop)
	health := NewHealth(3, 0, zap.NewNop())
	ts.disp.health = health // before any session runs
	c := startTestCarrier(t, "mobile", addr)
	c.health = health
	cfg := c.Config()
	cfg.ResponseTimeout = config.Duration(time.Minute) // longer than any wait below: the submit stays in flight
	c.Reconfigure(cfg)
	ts.disp.SetCarriers([]*Carrier{c})
	smsc := nextConn(t, conns)
	f := smsc.read()
	smsc.write(f.ID|cmdRespBit, statusOK, f.Seq, cstring(nil, "smsc"))
	waitCond(t, "the carrier bound", func() bool { return c.Bound() == 1 })

	p := bound(t, ts, cmdBindTransceiver)
	p.write(cmdSubmitSM, 0, 2, goldenSubmit(t, "02 4F60", ""))
	held := smsc.read() // the carrier holds the submit: it is in flight
	if held.ID != cmdSubmitSM {
		t.Fatalf("carrier got %+v, want submit_sm", held.Header)
	}
	if n := len(ts.srv.receiversOf("platform")); n != 1 {
		t.Fatalf("%d receivers before the unbind, want 1", n)
	}
	p.write(cmdUnbind, 0, 3, nil)
	waitCond(t, "the unbinding session out of the receivers", func() bool {
		return len(ts.srv.receiversOf("platform")) == 0
	})
	smsc.write(cmdSubmitSMResp, statusOK, held.Seq, cstring(nil, "C-unbind-1"))
	if f := p.read(); f.ID != cmdSubmitSMResp || f.Seq != 2 || f.Status != statusOK {
		t.Fatalf("in-flight submit answered %+v, want OK", f.Header)
	}
	if f := p.read(); f.ID != cmdUnbindResp || f.Seq != 3 {
		t.Fatalf("after the submit's answer %+v, want unbind_resp", f.Header)
	}
	p.expectClosed()
}

// Once the peer sent unbind, no request of ours goes out on the session
// (it would follow, or cross, the unbind_resp): Request reports ErrNotSent
// at once and the peer sees nothing but its unbind_resp, even when we unbind
// meanwhile (shutdown). A carrier bind the SMSC unbinds is no longer picked
// for submits.
func TestNoRequestAfterPeerUnbind(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s, p := newPair(t, SessionConfig{OnUnbind: func(*Session) { close(entered); <-release }})
	p.write(cmdUnbind, 0, 7, nil)
	<-entered // the session is answering the unbind
	if !s.Unbound() {
		t.Fatal("Unbound false after the peer's unbind")
	}
	if _, err := s.Request(context.Background(), cmdDeliverSM, []byte{0}); !errors.Is(err, ErrNotSent) {
		t.Fatalf("Request after the peer's unbind: %v, want ErrNotSent", err)
	}
	if s.RequestAsync(cmdDeliverSM, []byte{0}, time.Second, func(Frame, error) {}) {
		t.Fatal("RequestAsync took a request after the peer's unbind")
	}
	// Our own Unbind meanwhile (a shutdown) lets the unbind_resp go out.
	unbound := make(chan struct{})
	go func() {
		s.Unbind(context.Background())
		close(unbound)
	}()
	close(release)
	if f := p.read(); f.ID != cmdUnbindResp || f.Seq != 7 {
		t.Fatalf("peer got %+v, want only unbind_resp", f.Header)
	}
	p.expectClosed()
	<-unbound

	c := &Carrier{}
	c.binds.Store(&[]*carrierBind{{kind: bindTRX}})
	c.bindList()[0].sess.Store(s)
	if got := c.pick(); got != nil {
		t.Fatal("pick chose a session its SMSC unbound")
	}
}

// A request the peer sends after its unbind (an asynchronous client whose
// submits race its own unbind) is not handed to the handler: relayed, its
// answer would follow the unbind_resp on a closing connection, and the
// platform, never told, would send it again. It is answered
// ESME_RINVBNDSTS if the connection still takes it.
func TestRequestAfterUnbindNotHandled(t *testing.T) {
	var handled atomic.Int32
	s, p := newPair(t, SessionConfig{Handler: func(s *Session, f Frame) {
		handled.Add(1)
		s.Respond(f, statusOK, []byte{0})
	}})
	both := appendFrame(nil, cmdUnbind, 0, 1, nil)
	both = appendFrame(both, cmdSubmitSM, 0, 2, []byte{0})
	p.writeRaw(both)
	if f := p.read(); f.ID != cmdUnbindResp || f.Seq != 1 {
		t.Fatalf("peer got %+v, want unbind_resp", f.Header)
	}
	for {
		f, err := p.tryRead()
		if err != nil {
			break
		}
		if f.ID != cmdSubmitSMResp || f.Status != statusInvBndSts {
			t.Fatalf("after unbind_resp %+v, want nothing or submit_sm_resp ESME_RINVBNDSTS", f.Header)
		}
	}
	awaitDone(t, s)
	s.Wait()
	if n := handled.Load(); n != 0 {
		t.Fatalf("handler got %d requests sent after the unbind", n)
	}
}

// Once spareline sent its own unbind (shutdown, a reload that reconnects a
// carrier), no request of ours follows it on the session (SMPP 3.4 §4.2:
// the peer answers unbind_resp and closes; a submit_sm after the unbind is
// refused ESME_RINVBNDSTS, or its answer is lost with the connection while
// the message goes by modem too). Request reports ErrNotSent at once, and
// the carrier picks another bind. Before, a submit given to the carrier
// during the unbind's wait for unbind_resp went out after the unbind.
func TestNoRequestAfterOwnUnbind(t *testing.T) {
	c, p, _ := boundTestCarrier(t)
	s := c.pick()
	unbound := make(chan struct{})
	go func() {
		s.Unbind(context.Background())
		close(unbound)
	}()
	f := p.read()
	if f.ID != cmdUnbind {
		t.Fatalf("SMSC got %+v, want unbind", f.Header)
	}
	if got := c.pick(); got != nil {
		t.Fatal("pick chose a session that is unbinding")
	}
	if _, err := s.Request(context.Background(), cmdSubmitSM, goldenSubmit(t, "02 4F60", "")); !errors.Is(err, ErrNotSent) {
		t.Fatalf("Request after our unbind: %v, want ErrNotSent", err)
	}
	if s.RequestAsync(cmdSubmitSM, goldenSubmit(t, "02 4F60", ""), time.Second, func(Frame, error) {}) {
		t.Fatal("RequestAsync took a request after our unbind")
	}
	p.write(cmdUnbindResp, statusOK, f.Seq, nil)
	p.expectClosed() // nothing came after the unbind
	<-unbound
}

// A second Unbind while the first waits for unbind_resp (a reload's
// reconnect, then the shutdown) sends no second unbind and does not cut the
// first one's wait short.
func TestSecondUnbindWaitsForTheFirst(t *testing.T) {
	s, p := newPair(t, SessionConfig{})
	first := make(chan struct{})
	go func() {
		s.Unbind(context.Background())
		close(first)
	}()
	f := p.read()
	if f.ID != cmdUnbind {
		t.Fatalf("peer got %+v, want unbind", f.Header)
	}
	second := make(chan struct{})
	go func() {
		s.Unbind(context.Background())
		close(second)
	}()
	p.write(cmdUnbindResp, statusOK, f.Seq, nil)
	p.expectClosed() // no second unbind
	<-first
	<-second
}
