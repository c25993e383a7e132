package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

type lateCall struct {
	cmd uint32
	tag any
	f   Frame
}

// A response that comes after its request's timeout, within LateGrace,
// reaches OnLate with the request's tag; the request keeps its window slot
// until then (the peer still counts it outstanding), and gets its slot
// back once answered.
func TestLateResponseGoesToOnLateAndHoldsTheSlot(t *testing.T) {
	late := make(chan lateCall, 1)
	s, p := newPair(t, SessionConfig{Window: 2, ResponseTimeout: time.Hour, LateGrace: time.Hour,
		OnLate: func(_ *Session, cmd uint32, tag any, f Frame) { late <- lateCall{cmd, tag, f} }})
	errc := make(chan error, 1)
	go func() {
		_, err := s.RequestTagged(context.Background(), cmdSubmitSM, []byte("x\x00"), 50*time.Millisecond, "msg-1")
		errc <- err
	}()
	req := p.read()
	if err := <-errc; !errors.Is(err, ErrResponseTimeout) {
		t.Fatalf("request: %v, want ErrResponseTimeout", err)
	}
	if s.Free() != 1 {
		t.Fatalf("free window slots after the timeout: %d, want 1 (the timed-out request still holds its slot)", s.Free())
	}
	p.write(cmdSubmitSMResp, 0, req.Seq, []byte("C42\x00"))
	select {
	case lc := <-late:
		if lc.cmd != cmdSubmitSM || lc.tag != "msg-1" || string(lc.f.Body) != "C42\x00" {
			t.Fatalf("OnLate got cmd 0x%X tag %v body %q", lc.cmd, lc.tag, lc.f.Body)
		}
	case <-time.After(hangGuard):
		t.Fatal("the late response never reached OnLate")
	}
	waitCond(t, "the slot freed by the late answer", func() bool { return s.Free() == 2 })
}

// Past LateGrace the request is forgotten: its slot is freed, and an
// answer after that is a stray.
func TestLateGraceEndsAndFreesTheSlot(t *testing.T) {
	called := make(chan struct{}, 1)
	s, p := newPair(t, SessionConfig{Window: 1, ResponseTimeout: time.Hour, LateGrace: 100 * time.Millisecond,
		OnLate: func(*Session, uint32, any, Frame) { called <- struct{}{} }})
	if _, err := s.RequestTagged(context.Background(), cmdSubmitSM, nil, 20*time.Millisecond, "m"); !errors.Is(err, ErrResponseTimeout) {
		t.Fatalf("request: %v", err)
	}
	req := p.read()
	waitCond(t, "the slot freed after LateGrace", func() bool { return s.Free() == 1 })
	p.write(cmdSubmitSMResp, 0, req.Seq, []byte("C\x00"))
	// The session lives on and answers: the stray did nothing.
	go func() { _, _ = s.Request(context.Background(), cmdEnquireLink, nil) }()
	if f := p.read(); f.ID != cmdEnquireLink {
		t.Fatalf("got 0x%X", f.ID)
	}
	select {
	case <-called:
		t.Fatal("an answer after LateGrace reached OnLate")
	default:
	}
}

// A peer that unbinds and then answers our outstanding request (a platform
// acknowledging its last receipt as it leaves) has the answer taken: the
// request gets its response, not ErrConnLost, and the session closes once
// nothing is awaited.
func TestAnswerAfterThePeersUnbindIsTaken(t *testing.T) {
	s, p := newPair(t, SessionConfig{ResponseTimeout: hangGuard})
	type out struct {
		f   Frame
		err error
	}
	res := make(chan out, 1)
	go func() {
		f, err := s.Request(context.Background(), cmdDeliverSM, []byte("receipt"))
		res <- out{f, err}
	}()
	req := p.read()
	p.write(cmdUnbind, 0, 7, nil)
	if f := p.read(); f.ID != cmdUnbindResp || f.Seq != 7 {
		t.Fatalf("got 0x%X seq %d, want unbind_resp", f.ID, f.Seq)
	}
	p.write(cmdDeliverSMResp, 0, req.Seq, []byte{0})
	o := <-res
	if o.err != nil || o.f.ID != cmdDeliverSMResp {
		t.Fatalf("the answer sent right after the unbind: %v %+v, want the deliver_sm_resp", o.err, o.f.Header)
	}
	p.expectClosed()
	awaitDone(t, s)
}

// With nothing awaited, the peer's unbind closes the session at once, as
// before.
func TestUnbindWithNothingAwaitedCloses(t *testing.T) {
	s, p := newPair(t, SessionConfig{})
	p.write(cmdUnbind, 0, 3, nil)
	if f := p.read(); f.ID != cmdUnbindResp {
		t.Fatalf("got 0x%X", f.ID)
	}
	p.expectClosed()
	awaitDone(t, s)
}

// lateEntries is the number of timed-out requests s still takes late
// answers for.
func lateEntries(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.late)
}

// A platform slower than smpp.response_timeout answers a receipt OK after
// it: the delivery is taken as delivered and leaves the store, instead of
// being sent again every response_timeout for ever.
func TestLateDeliverSMRespRemovesTheDelivery(t *testing.T) {
	ts := newIsolatedServer(t, nil, 100*time.Millisecond)
	hold(t, ts, deliverBody("13900000000", 0, []byte("id:M1 stat:DELIVRD"), nil, "", ""), "M1")
	p := boundTCP(t, ts, cmdBindReceiver)
	f, _ := readDeliverSM(t, p)
	waitCond(t, "the deliver_sm timed out", func() bool {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		for n := range ts.srv.sessions {
			if lateEntries(n.sess) > 0 {
				return true
			}
		}
		return false
	})
	p.write(cmdDeliverSMResp, 0, f.Seq, []byte{0}) // OK, after the timeout
	waitCond(t, "the late-answered delivery left the store", func() bool {
		n, err := ts.disp.store.CountDeliveries(context.Background(), "platform")
		return err == nil && n == 0
	})
}

// A timed-out request holds its window slot for one more response timeout
// at most: a window full of requests the peer lost (an SMSC that dropped
// them in a hiccup) does not stop the session for LateGrace. The next
// request goes out once that hold ends, and a late answer still reaches
// OnLate after it.
func TestLateSlotHeldForOneResponseTimeoutOnly(t *testing.T) {
	late := make(chan lateCall, 1)
	s, p := newPair(t, SessionConfig{Window: 1, ResponseTimeout: 100 * time.Millisecond, LateGrace: time.Hour,
		OnLate: func(_ *Session, cmd uint32, tag any, f Frame) { late <- lateCall{cmd, tag, f} }})
	if _, err := s.RequestTagged(context.Background(), cmdSubmitSM, []byte("a\x00"), 100*time.Millisecond, "lost"); !errors.Is(err, ErrResponseTimeout) {
		t.Fatalf("first request: %v", err)
	}
	lost := p.read()
	next := make(chan error, 1)
	go func() {
		_, err := s.RequestTagged(context.Background(), cmdSubmitSM, []byte("b\x00"), time.Hour, "next")
		next <- err
	}()
	f := p.read() // within hangGuard (10 s), not LateGrace (an hour)
	if f.ID != cmdSubmitSM || string(f.Body) != "b\x00" {
		t.Fatalf("got %+v %q, want the next submit_sm", f.Header, f.Body)
	}
	p.write(cmdSubmitSMResp, 0, f.Seq, []byte("N\x00"))
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	p.write(cmdSubmitSMResp, 0, lost.Seq, []byte("L\x00"))
	select {
	case lc := <-late:
		if lc.tag != "lost" {
			t.Fatalf("OnLate tag %v", lc.tag)
		}
	case <-time.After(hangGuard):
		t.Fatal("the late answer after the slot was freed never reached OnLate")
	}
	if s.Free() != 1 {
		t.Fatalf("free slots %d after every answer, want 1 (the late answer must not free a slot twice)", s.Free())
	}
}

// enquire_link takes no window slot: the keep-alive goes out, and finds a
// dead link, while every slot waits for an answer.
func TestEnquireLinkNeedsNoWindowSlot(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 1, ResponseTimeout: time.Hour})
	go func() { _, _ = s.Request(context.Background(), cmdSubmitSM, []byte("x\x00")) }()
	if f := p.read(); f.ID != cmdSubmitSM {
		t.Fatalf("got 0x%X", f.ID)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Request(context.Background(), cmdEnquireLink, nil)
		errc <- err
	}()
	f := p.read()
	if f.ID != cmdEnquireLink {
		t.Fatalf("got 0x%X, want enquire_link with the window full", f.ID)
	}
	p.write(cmdEnquireLinkResp, 0, f.Seq, nil)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s.Free() != 0 {
		t.Fatalf("free slots %d: the enquire_link freed the submit's slot", s.Free())
	}
}
