package faultnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every connection and records what each one received.
type echoServer struct {
	ln   net.Listener
	mu   sync.Mutex
	got  []*bytes.Buffer
	ends []error // how each connection ended (io.EOF, ECONNRESET...)
	note chan struct{}
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, note: make(chan struct{}, 1024)}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			i := len(e.got)
			e.got = append(e.got, &bytes.Buffer{})
			e.ends = append(e.ends, nil)
			e.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					e.mu.Lock()
					e.got[i].Write(buf[:n])
					if err != nil {
						e.ends[i] = err
					}
					e.mu.Unlock()
					e.note <- struct{}{}
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						e.mu.Lock()
						e.ends[i] = err
						e.mu.Unlock()
						e.note <- struct{}{}
						return
					}
				}
			}()
		}
	}()
	return e
}

func (e *echoServer) conn(i int) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i >= len(e.got) {
		return "", nil
	}
	return e.got[i].String(), e.ends[i]
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // hang detector
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, target string) *Relay {
	t.Helper()
	r, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func dial(t *testing.T, r *Relay) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q back: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("read %q, want %q", got, msg)
	}
}

func TestRelaysBothWays(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	c := dial(t, r)
	roundTrip(t, c, "hello")
	roundTrip(t, c, "again")
	// Counters are updated just after each write: wait for them.
	if err := r.WaitUntil(ctxT(t), func(s Stats) bool { return s.Upstream == 10 && s.Downstream == 10 }); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Accepted != 1 || st.Dialed != 1 || st.Resets != 0 || st.Active != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDelayHoldsEachChunk(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	c := dial(t, r)
	const d = 50 * time.Millisecond
	r.SetDelay(Both, d)
	t0 := time.Now()
	roundTrip(t, c, "slow")
	// A lower bound only: a loaded machine can only make it slower.
	if el := time.Since(t0); el < 2*d {
		t.Fatalf("round trip through two delayed hops took %v, less than %v", el, 2*d)
	}
}

func TestDropDiscardsButKeepsTheConnection(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	c := dial(t, r)
	roundTrip(t, c, "a")
	r.SetDrop(Upstream, true)
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitUntil(ctxT(t), func(s Stats) bool { return s.Dropped == 4 }); err != nil {
		t.Fatal(err)
	}
	r.SetDrop(Upstream, false)
	roundTrip(t, c, "b")
	if got, _ := e.conn(0); got != "ab" {
		t.Fatalf("target received %q, want %q (dropped bytes never arrive)", got, "ab")
	}
}

func TestStallHoldsUntilResumed(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	c := dial(t, r)
	roundTrip(t, c, "a")
	r.SetStall(Downstream, true)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if err := r.WaitUntil(ctx, func(s Stats) bool { return s.Upstream == 5 }); err != nil {
		t.Fatal(err)
	}
	// The target has echoed; wait for it, then the answer must still be held.
	for got, _ := e.conn(0); got != "aheld"; got, _ = e.conn(0) {
		select {
		case <-e.note:
		case <-ctx.Done():
			t.Fatal("target never got the bytes")
		}
	}
	if err := r.WaitUntil(ctx, func(s Stats) bool { return s.Downstream == 1 }); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Downstream != 1 || st.Active != 1 {
		t.Fatalf("stalled relay forwarded downstream: %+v", st)
	}
	r.SetStall(Downstream, false)
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after the stall: %q %v", got, err)
	}
}

func TestResetAfterCutsNewConnectionsAtNBytes(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	live := dial(t, r)
	roundTrip(t, live, "x") // connected before the fault: unaffected
	r.ResetAfter(Upstream, 10)
	c := dial(t, r)
	if _, err := c.Write([]byte("0123456789abcdefghij")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	var err error
	for err == nil {
		_, err = c.Read(buf)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client saw %v, want connection reset", err)
	}
	ctx := ctxT(t)
	for {
		got, end := e.conn(1)
		if end != nil {
			if got != "0123456789" {
				t.Fatalf("target received %q, want exactly the first 10 bytes", got)
			}
			break
		}
		select {
		case <-e.note:
		case <-ctx.Done():
			t.Fatal("target connection never ended")
		}
	}
	if err := r.WaitUntil(ctx, func(s Stats) bool { return s.Resets == 1 && s.Active == 1 }); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, live, "y")
	r.ResetAfter(Upstream, 0)
	roundTrip(t, dial(t, r), "healed")
}

func TestResetAllAndResetNew(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	c := dial(t, r)
	roundTrip(t, c, "a")
	r.ResetAll()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after ResetAll: %v, want connection reset", err)
	}
	r.ResetNew(true)
	c2, err := net.Dial("tcp", r.Addr()) // the RST may arrive before connect returns
	if err == nil {
		defer c2.Close()
		_ = c2.SetDeadline(time.Now().Add(20 * time.Second))
		_, err = c2.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("new connection while ResetNew: %v, want connection reset", err)
	}
	if err := r.WaitUntil(ctxT(t), func(s Stats) bool { return s.Resets == 2 }); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Dialed != 1 || st.Resets != 2 {
		t.Fatalf("stats %+v: ResetNew must not dial the target", st)
	}
	if err := r.Heal(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, r), "healed")
}

func TestRefuse(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	if err := r.Refuse(true); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", r.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing: %v, want connection refused", err)
	}
	if err := r.Refuse(false); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, r), "back")
}

func TestLatencyDelaysWithoutReordering(t *testing.T) {
	e := startEcho(t)
	r := start(t, e.ln.Addr().String())
	c := dial(t, r)
	const d = 200 * time.Millisecond
	r.SetLatency(Downstream, d)
	t0 := time.Now()
	roundTrip(t, c, "slow")
	// A lower bound only: a loaded machine can only make it slower.
	if el := time.Since(t0); el < d {
		t.Fatalf("round trip through a hop with latency %v took %v", d, el)
	}
	// A chunk read while the latency was high is still forwarded before one
	// read after it dropped to 0: the delay line keeps the order.
	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	// Wait until the echo has answered "first" (so it is in the delay line).
	if err := r.WaitUntil(ctxT(t), func(s Stats) bool { return s.Upstream == 9 }); err != nil {
		t.Fatal(err)
	}
	for {
		got, _ := e.conn(0)
		if got == "slowfirst" {
			break
		}
		select {
		case <-e.note:
		case <-ctxT(t).Done():
			t.Fatalf("echo got %q", got)
		}
	}
	r.SetLatency(Downstream, 0)
	if _, err := c.Write([]byte("second")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("firstsecond"))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "firstsecond" {
		t.Fatalf("read %q, want firstsecond", got)
	}
}

func TestLatencyFlushesBeforeClosing(t *testing.T) {
	// A target that says "bye" and hangs up at once: what is still in the
	// delay line when its end of the stream arrives is forwarded first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = s.Write([]byte("bye"))
			_ = s.Close()
		}
	}()
	r := start(t, ln.Addr().String())
	r.SetLatency(Downstream, 100*time.Millisecond)
	c := dial(t, r)
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want bye then the end of the stream", got, err)
	}
}
