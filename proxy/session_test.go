package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMain fails the package when any handler panicked (STYLE.md example 12).
// It also owns the directory of the shared test store.
func TestMain(m *testing.M) {
	code := m.Run()
	if boltStore != nil {
		_ = boltStore.Close()
	}
	if packageTempDir != "" {
		_ = os.RemoveAll(packageTempDir)
	}
	if n := testutil.ToFloat64(metricPanics); n != 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "spareline_panics_total is %v after the tests, want 0\n", n)
		code = 1
	}
	os.Exit(code)
}

var packageTempDir string

// tempDirForPackage is a directory removed when the package's tests end.
func tempDirForPackage() (string, error) {
	var err error
	if packageTempDir == "" {
		packageTempDir, err = os.MkdirTemp("", "spareline-proxy-test-")
	}
	return packageTempDir, err
}

// hangGuard bounds every wait on the peer side: it only turns a hang into a
// failure, nothing waits for it to pass.
const hangGuard = 10 * time.Second

// peer is the far end of a session, driven octet by octet by the test.
type peer struct {
	t    *testing.T
	conn net.Conn
	hdr  [headerLen]byte
}

func (p *peer) write(id, status, seq uint32, body []byte) {
	p.t.Helper()
	p.writeRaw(appendFrame(nil, id, status, seq, body))
}

func (p *peer) writeRaw(b []byte) {
	p.t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(hangGuard))
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
}

// read reads the next PDU the session wrote.
func (p *peer) read() Frame {
	p.t.Helper()
	f, err := p.tryRead()
	if err != nil {
		p.t.Fatalf("peer read: %v", err)
	}
	return f
}

func (p *peer) tryRead() (Frame, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(hangGuard))
	return readFrame(p.conn, 1<<20, &p.hdr)
}

// expectClosed asserts the session closed the connection.
func (p *peer) expectClosed() {
	p.t.Helper()
	f, err := p.tryRead()
	if err == nil {
		p.t.Fatalf("peer read a PDU %+v from a session that should have closed", f.Header)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		p.t.Fatalf("session did not close the connection within %s", hangGuard)
	}
}

// newPair runs a session over net.Pipe and returns it with its peer.
func newPair(t *testing.T, cfg SessionConfig) (*Session, *peer) {
	t.Helper()
	a, b := net.Pipe()
	s := NewSession(a, cfg).Start()
	t.Cleanup(func() {
		_ = b.Close()
		s.Close()
		s.Wait()
	})
	return s, &peer{t: t, conn: b}
}

func awaitDone(t *testing.T, s *Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(hangGuard):
		t.Fatalf("session still running after %s", hangGuard)
	}
}

type result struct {
	i   int
	f   Frame
	err error
}

// Many requests in flight are each matched to their own response by
// sequence number, whatever order the peer answers in.
func TestRequestsMatchedOutOfOrder(t *testing.T) {
	const n = 64
	s, p := newPair(t, SessionConfig{Window: n})
	ctx := context.Background()
	results := make(chan result, n)
	for i := range n {
		go func() {
			f, err := s.Request(ctx, cmdSubmitSM, []byte(fmt.Sprintf("req-%d", i)))
			results <- result{i, f, err}
		}()
	}
	reqs := make([]Frame, n)
	seen := map[uint32]bool{}
	for i := range n {
		reqs[i] = p.read()
		if reqs[i].ID != cmdSubmitSM || seen[reqs[i].Seq] || reqs[i].Seq == 0 || reqs[i].Seq > 0x7FFFFFFF {
			t.Fatalf("request %d: id 0x%08X seq %d (duplicate: %v)", i, reqs[i].ID, reqs[i].Seq, seen[reqs[i].Seq])
		}
		seen[reqs[i].Seq] = true
	}
	if s.Outstanding() != n || s.Free() != 0 {
		t.Fatalf("outstanding %d free %d, want %d and 0", s.Outstanding(), s.Free(), n)
	}
	for i := n - 1; i >= 0; i-- { // answer newest first
		p.write(cmdSubmitSMResp, statusOK, reqs[i].Seq, append([]byte("resp-to-"), reqs[i].Body...))
	}
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("request %d: %v", r.i, r.err)
		}
		if want := fmt.Sprintf("resp-to-req-%d", r.i); string(r.f.Body) != want || r.f.ID != cmdSubmitSMResp {
			t.Fatalf("request %d got %q (id 0x%08X), want %q", r.i, r.f.Body, r.f.ID, want)
		}
	}
	if s.Free() != n {
		t.Fatalf("free %d after every answer, want %d", s.Free(), n)
	}
}

// With the window full a request waits (and can be abandoned unsent); it
// goes out as soon as a response frees a slot.
func TestWindowFullBlocksUntilSlotFrees(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 2})
	ctx := context.Background()
	results := make(chan result, 3)
	for i := range 2 {
		go func() {
			f, err := s.Request(ctx, cmdSubmitSM, []byte{byte(i)})
			results <- result{i, f, err}
		}()
	}
	first, second := p.read(), p.read()
	if s.Free() != 0 {
		t.Fatalf("free %d with two requests out on a window of 2", s.Free())
	}
	// A caller that gives up while waiting for a slot never sent anything.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Request(cctx, cmdSubmitSM, []byte{9}); !errors.Is(err, ErrNotSent) {
		t.Fatalf("request abandoned on a full window: %v, want ErrNotSent", err)
	}
	go func() {
		f, err := s.Request(ctx, cmdSubmitSM, []byte{2})
		results <- result{2, f, err}
	}()
	p.write(cmdSubmitSMResp, statusOK, first.Seq, nil)
	third := p.read() // only possible once the slot is free
	if len(third.Body) != 1 || third.Body[0] != 2 {
		t.Fatalf("after a slot freed the peer got body %v, want the waiting request [2]", third.Body)
	}
	p.write(cmdSubmitSMResp, statusOK, second.Seq, nil)
	p.write(cmdSubmitSMResp, statusOK, third.Seq, nil)
	for range 3 {
		if r := <-results; r.err != nil {
			t.Fatalf("request %d: %v", r.i, r.err)
		}
	}
}

// A request that times out frees its slot; its late response is dropped and
// never given to the next request.
func TestResponseTimeoutFreesSlotAndDropsLateResponse(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 1})
	ctx := context.Background()
	reqs := make(chan Frame, 2)
	go func() {
		for range 2 {
			f, err := p.tryRead()
			if err != nil {
				return
			}
			reqs <- f
		}
	}()
	if _, err := s.RequestTimeout(ctx, cmdSubmitSM, []byte("one"), 20*time.Millisecond); !errors.Is(err, ErrResponseTimeout) {
		t.Fatalf("unanswered request: %v, want ErrResponseTimeout", err)
	}
	if s.Free() != 1 {
		t.Fatalf("free %d after the timeout, want 1", s.Free())
	}
	first := <-reqs
	p.write(cmdSubmitSMResp, statusOK, first.Seq, []byte("late"))
	done := make(chan result, 1)
	go func() {
		f, err := s.Request(ctx, cmdSubmitSM, []byte("two"))
		done <- result{f: f, err: err}
	}()
	second := <-reqs
	if second.Seq == first.Seq {
		t.Fatalf("sequence number %d reused", second.Seq)
	}
	p.write(cmdSubmitSMResp, statusOK, second.Seq, []byte("fresh"))
	r := <-done
	if r.err != nil || string(r.f.Body) != "fresh" {
		t.Fatalf("second request got %q, %v; want the fresh answer", r.f.Body, r.err)
	}
	select {
	case <-s.Done():
		t.Fatalf("a late response closed the session: %v", s.Err())
	default:
	}
}

// ErrNotSent means the request certainly never left; ErrConnLost means it
// was written and the connection went before the answer.
func TestPeerCloseNotSentVersusConnLost(t *testing.T) {
	ctx := context.Background()
	t.Run("written then lost", func(t *testing.T) {
		s, p := newPair(t, SessionConfig{})
		done := make(chan error, 1)
		go func() {
			_, err := s.Request(ctx, cmdSubmitSM, []byte("x"))
			done <- err
		}()
		p.read()
		_ = p.conn.Close()
		if err := <-done; !errors.Is(err, ErrConnLost) {
			t.Fatalf("written request on a closed connection: %v, want ErrConnLost", err)
		}
		awaitDone(t, s)
		if _, err := s.Request(ctx, cmdSubmitSM, []byte("y")); !errors.Is(err, ErrNotSent) {
			t.Fatalf("request after the close: %v, want ErrNotSent", err)
		}
	})
	t.Run("queued behind a blocked write", func(t *testing.T) {
		s, p := newPair(t, SessionConfig{Window: 4})
		big := make([]byte, 40<<10) // larger than the writer's buffer: written straight to the pipe
		errA, errB := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := s.Request(ctx, cmdSubmitSM, big)
			errA <- err
		}()
		var one [1]byte
		if _, err := io.ReadFull(p.conn, one[:]); err != nil { // the writer is now inside A's write
			t.Fatal(err)
		}
		go func() {
			_, err := s.Request(ctx, cmdSubmitSM, []byte("b"))
			errB <- err
		}()
		_ = p.conn.Close()
		if err := <-errA; !errors.Is(err, ErrConnLost) {
			t.Fatalf("request cut mid-write: %v, want ErrConnLost", err)
		}
		if err := <-errB; !errors.Is(err, ErrNotSent) {
			t.Fatalf("request that never reached the wire: %v, want ErrNotSent", err)
		}
	})
}

// enquire_link from the peer is answered by the engine, not the handler.
func TestEnquireLinkAnswered(t *testing.T) {
	_, p := newPair(t, SessionConfig{Handler: func(s *Session, f Frame) {
		t.Errorf("handler got command 0x%08X", f.ID)
	}})
	p.write(cmdEnquireLink, 0, 5, nil)
	f := p.read()
	if f.ID != cmdEnquireLinkResp || f.Seq != 5 || f.Status != statusOK || len(f.Body) != 0 {
		t.Fatalf("answer to enquire_link: %+v", f.Header)
	}
}

// The engine sends enquire_link when the line is quiet and closes the
// session when it goes unanswered (SMPP 3.4 §4.11).
func TestKeepAliveClosesWhenUnanswered(t *testing.T) {
	s, p := newPair(t, SessionConfig{EnquireLink: 20 * time.Millisecond, ResponseTimeout: 30 * time.Millisecond})
	f := p.read()
	if f.ID != cmdEnquireLink {
		t.Fatalf("keepalive sent 0x%08X, want enquire_link", f.ID)
	}
	awaitDone(t, s)
	if !errors.Is(s.Err(), ErrResponseTimeout) {
		t.Fatalf("session ended with %v, want an unanswered enquire_link", s.Err())
	}
	p.expectClosed()
}

// An answered keepalive keeps the session up.
func TestKeepAliveAnsweredKeepsSession(t *testing.T) {
	s, p := newPair(t, SessionConfig{EnquireLink: 10 * time.Millisecond, ResponseTimeout: hangGuard})
	for range 3 {
		f := p.read()
		if f.ID != cmdEnquireLink {
			t.Fatalf("keepalive sent 0x%08X", f.ID)
		}
		p.write(cmdEnquireLinkResp, statusOK, f.Seq, nil)
	}
	select {
	case <-s.Done():
		t.Fatalf("session ended: %v", s.Err())
	default:
	}
}

// unbind is answered, OnUnbind runs, and the session closes.
func TestUnbindAnsweredThenClosed(t *testing.T) {
	unbound := make(chan struct{})
	s, p := newPair(t, SessionConfig{OnUnbind: func(*Session) { close(unbound) }})
	p.write(cmdUnbind, 0, 9, nil)
	f := p.read()
	if f.ID != cmdUnbindResp || f.Seq != 9 || f.Status != statusOK {
		t.Fatalf("answer to unbind: %+v", f.Header)
	}
	<-unbound
	awaitDone(t, s)
	p.expectClosed()
}

// A command_length that cannot be right loses the framing: generic_nack
// ESME_RINVCMDLEN, then close (SMPP 3.4 §3.2, §4.3).
func TestBadCommandLengthNackedAndClosed(t *testing.T) {
	const maxLen = 1024
	for _, l := range []uint32{0, 15, 1 << 31, maxLen + 1, 0xFFFFFFFF} {
		t.Run(fmt.Sprint(l), func(t *testing.T) {
			s, p := newPair(t, SessionConfig{MaxCommandLength: maxLen})
			var h [headerLen]byte
			binary.BigEndian.PutUint32(h[0:], l)
			binary.BigEndian.PutUint32(h[4:], cmdSubmitSM)
			binary.BigEndian.PutUint32(h[12:], 42)
			p.writeRaw(h[:])
			f := p.read()
			if f.ID != cmdGenericNack || f.Status != statusInvCmdLen || f.Seq != 42 {
				t.Fatalf("answer: %+v, want generic_nack ESME_RINVCMDLEN seq 42", f.Header)
			}
			awaitDone(t, s)
			p.expectClosed()
		})
	}
}

// A PDU held half-sent is cut after BodyTimeout, whether the header or the
// body is incomplete.
func TestSlowlorisCutAfterBodyTimeout(t *testing.T) {
	header := appendFrame(nil, cmdSubmitSM, 0, 1, make([]byte, 100))
	for name, part := range map[string][]byte{"half header": header[:8], "header only": header[:headerLen], "part body": header[:40]} {
		t.Run(name, func(t *testing.T) {
			s, p := newPair(t, SessionConfig{BodyTimeout: 30 * time.Millisecond})
			p.writeRaw(part)
			awaitDone(t, s)
			var ne net.Error
			if !errors.As(s.Err(), &ne) || !ne.Timeout() {
				t.Fatalf("session ended with %v, want a read timeout", s.Err())
			}
			p.expectClosed()
		})
	}
}

// With no idle timeout, a quiet peer is never cut: the body deadline of its
// last PDU must not linger (a fixed bug).
func TestQuietPeerOutlivesBodyTimeout(t *testing.T) {
	s, p := newPair(t, SessionConfig{BodyTimeout: 10 * time.Millisecond})
	p.write(cmdEnquireLink, 0, 1, nil)
	p.read()
	// The scenario itself is a quiet line, several body timeouts long.
	time.Sleep(50 * time.Millisecond)
	select {
	case <-s.Done():
		t.Fatalf("quiet session was cut: %v", s.Err())
	default:
	}
	p.write(cmdEnquireLink, 0, 2, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp || f.Seq != 2 {
		t.Fatalf("answer: %+v", f.Header)
	}
}

// An unknown command id is answered generic_nack ESME_RINVCMDID and the
// session carries on (SMPP 3.4 §4.3.1).
func TestUnknownCommandIDNackedSessionLives(t *testing.T) {
	_, p := newPair(t, SessionConfig{})
	p.write(0x00000999, 0, 3, []byte("junk"))
	f := p.read()
	if f.ID != cmdGenericNack || f.Status != statusInvCmdID || f.Seq != 3 {
		t.Fatalf("answer to 0x999: %+v", f.Header)
	}
	p.write(cmdEnquireLink, 0, 4, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp || f.Seq != 4 {
		t.Fatalf("answer to enquire_link after the nack: %+v", f.Header)
	}
}

// A response nobody waits for (a stray) is dropped without harm.
func TestStrayResponseIgnored(t *testing.T) {
	s, p := newPair(t, SessionConfig{})
	p.write(cmdSubmitSMResp, 0, 1234, []byte("x\x00"))
	p.write(cmdGenericNack, statusInvCmdID, 1235, nil)
	p.write(cmdEnquireLink, 0, 5, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp || f.Seq != 5 {
		t.Fatalf("answer: %+v", f.Header)
	}
	if s.Free() != 64 {
		t.Fatalf("free %d", s.Free())
	}
}

// asyncResult collects the outcomes of RequestAsync calls.
type asyncResult struct {
	tag string
	f   Frame
	err error
}

// RequestAsync gives each request's outcome to its callback, once: the
// response, the timeout or the lost connection, as Request would return
// them. It refuses, having sent nothing, when the window is full.
func TestRequestAsync(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 3})
	out := make(chan asyncResult, 8)
	send := func(tag string, timeout time.Duration) bool {
		return s.RequestAsync(cmdSubmitSM, []byte(tag), timeout, func(f Frame, err error) { out <- asyncResult{tag, f, err} })
	}
	next := func() asyncResult {
		t.Helper()
		select {
		case r := <-out:
			return r
		case <-time.After(hangGuard):
			t.Fatal("no outcome")
			return asyncResult{}
		}
	}
	if !send("answered", time.Minute) || !send("timed out", 30*time.Millisecond) || !send("lost", time.Minute) {
		t.Fatal("RequestAsync refused with free window slots")
	}
	if send("over", time.Minute) {
		t.Fatal("RequestAsync took a request beyond the window")
	}
	reqs := map[string]Frame{}
	for range 3 {
		f := p.read()
		reqs[string(f.Body)] = f
	}
	if _, ok := reqs["over"]; ok {
		t.Fatal("the refused request was sent")
	}
	p.write(cmdSubmitSMResp, statusOK, reqs["answered"].Seq, []byte("id-1\x00"))
	got := map[string]asyncResult{}
	for range 2 { // the answer and the timeout, in either order
		r := next()
		got[r.tag] = r
	}
	if r := got["answered"]; r.err != nil || string(r.f.Body) != "id-1\x00" {
		t.Errorf("answered: %q, %v", r.f.Body, r.err)
	}
	if r := got["timed out"]; !errors.Is(r.err, ErrResponseTimeout) {
		t.Errorf("unanswered: %v, want ErrResponseTimeout", r.err)
	}
	if s.Free() != 2 {
		t.Errorf("free %d after an answer and a timeout, want 2", s.Free())
	}
	// The late answer to the timed-out request goes nowhere.
	p.write(cmdSubmitSMResp, statusOK, reqs["timed out"].Seq, nil)
	_ = p.conn.Close()
	if r := next(); r.tag != "lost" || !errors.Is(r.err, ErrConnLost) {
		t.Errorf("written request on a closed connection: %s %v, want lost ErrConnLost", r.tag, r.err)
	}
	awaitDone(t, s)
	if send("after", time.Minute) {
		t.Error("RequestAsync took a request on an ended session")
	}
	select {
	case r := <-out:
		t.Errorf("an outcome too many: %s %v", r.tag, r.err)
	default:
	}
}

// recordDone is an asyncDone that hands its outcome to a channel.
type recordDone chan asyncResult

func (r recordDone) requestDone(f Frame, err error) {
	f.Body = append([]byte(nil), f.Body...) // the reader's buffer: not kept (asyncDone)
	r <- asyncResult{f: f, err: err}
}

// requestAsync with the caller's clock reading: the response timeout runs
// from that reading, so the call ends with ErrResponseTimeout no earlier
// than the timeout after it (and, bounded by hangGuard only, soon after);
// the answer that comes after the timeout is dropped as a stray, the
// window slot is free again and the session goes on.
func TestRequestAsyncCallerClockTimeout(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 1, ResponseTimeout: time.Hour})
	const timeout = 50 * time.Millisecond
	out := make(recordDone, 2)
	start := time.Now()
	if !s.requestAsync(cmdSubmitSM, []byte("one"), start.Add(timeout), &call{h: out}) {
		t.Fatal("requestAsync refused with a free window slot")
	}
	req := p.read()
	var r asyncResult
	select {
	case r = <-out:
	case <-time.After(hangGuard):
		t.Fatal("no timeout")
	}
	if el := time.Since(start); el < timeout {
		t.Errorf("timed out after %v, before the %v timeout", el, timeout)
	}
	if !errors.Is(r.err, ErrResponseTimeout) {
		t.Fatalf("unanswered: %v, want ErrResponseTimeout", r.err)
	}
	if s.Free() != 1 {
		t.Fatalf("free %d after the timeout, want 1", s.Free())
	}
	p.write(cmdSubmitSMResp, statusOK, req.Seq, []byte("late\x00"))
	if !s.requestAsync(cmdSubmitSM, []byte("two"), time.Now().Add(time.Hour), &call{h: out}) {
		t.Fatal("requestAsync refused after the timeout freed the slot")
	}
	second := p.read()
	if second.Seq == req.Seq || string(second.Body) != "two" {
		t.Fatalf("second request: seq %d body %q (first seq %d)", second.Seq, second.Body, req.Seq)
	}
	p.write(cmdSubmitSMResp, statusOK, second.Seq, []byte("fresh\x00"))
	select {
	case r = <-out:
	case <-time.After(hangGuard):
		t.Fatal("no answer")
	}
	if r.err != nil || string(r.f.Body) != "fresh\x00" {
		t.Fatalf("second request got %q, %v; want the fresh answer (the late one dropped)", r.f.Body, r.err)
	}
	select {
	case <-s.Done():
		t.Fatalf("a late response closed the session: %v", s.Err())
	case r := <-out:
		t.Fatalf("an outcome too many: %q %v", r.f.Body, r.err)
	default:
	}
}

// The writer encodes queued frames itself: a frame with a C-Octet String
// tail (tryRespondID) and one whose body the caller keeps (TryRespond
// copies it) reach the peer as appendFrame would write them.
func TestWriterEncodesFrames(t *testing.T) {
	s, p := newPair(t, SessionConfig{})
	body := []byte("abc")
	if !s.tryRespondID(Frame{Header: Header{ID: cmdSubmitSM, Seq: 7}}, statusOK, "SL01") {
		t.Fatal("tryRespondID refused")
	}
	if !s.TryRespond(Frame{Header: Header{ID: cmdQuerySM, Seq: 8}}, statusInvMsgLen, body) {
		t.Fatal("TryRespond refused")
	}
	copy(body, "xyz") // the caller's buffer is the caller's again
	f := p.read()
	if f.ID != cmdSubmitSMResp || f.Seq != 7 || f.Status != statusOK || string(f.Body) != "SL01\x00" || f.Length != headerLen+5 {
		t.Errorf("submit_sm_resp: %+v %q", f.Header, f.Body)
	}
	f = p.read()
	if f.ID != cmdQuerySM|cmdRespBit || f.Seq != 8 || f.Status != statusInvMsgLen || string(f.Body) != "abc" {
		t.Errorf("query_sm_resp: %+v %q", f.Header, f.Body)
	}
}

// Small response bodies are read into the reader's scratch buffer: a
// Request or RequestAsync caller still gets a body of its own, intact
// after the reader has read the next responses.
func TestResponseBodiesOutliveTheNextRead(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 4})
	out := make(chan asyncResult, 4)
	for _, tag := range []string{"a", "b"} {
		if !s.RequestAsync(cmdSubmitSM, []byte(tag), time.Minute, func(f Frame, err error) { out <- asyncResult{tag, f, err} }) {
			t.Fatal("RequestAsync refused")
		}
	}
	sync := make(chan result, 1)
	go func() {
		f, err := s.Request(context.Background(), cmdSubmitSM, []byte("c"))
		sync <- result{f: f, err: err}
	}()
	seqs := map[string]uint32{}
	for range 3 {
		f := p.read()
		seqs[string(f.Body)] = f.Seq
	}
	var burst []byte
	for _, tag := range []string{"a", "b", "c"} {
		burst = appendFrame(burst, cmdSubmitSMResp, statusOK, seqs[tag], []byte("id-"+tag+"\x00"))
	}
	p.writeRaw(burst)
	for range 2 {
		select {
		case r := <-out:
			if r.err != nil || string(r.f.Body) != "id-"+r.tag+"\x00" {
				t.Errorf("%s: %q, %v", r.tag, r.f.Body, r.err)
			}
		case <-time.After(hangGuard):
			t.Fatal("no outcome")
		}
	}
	r := <-sync
	if r.err != nil || string(r.f.Body) != "id-c\x00" {
		t.Errorf("c: %q, %v", r.f.Body, r.err)
	}
}

// Sequence numbers run 1 to 0x7FFFFFFF and wrap to 1; after the wrap, a
// number still held by a waiting request is skipped.
func TestSequenceWrapSkipsWaitingRequest(t *testing.T) {
	s, p := newPair(t, SessionConfig{Window: 4})
	send := func() {
		t.Helper()
		if !s.RequestAsync(cmdSubmitSM, []byte("x"), time.Minute, func(Frame, error) {}) {
			t.Fatal("RequestAsync refused")
		}
	}
	send()
	if f := p.read(); f.Seq != 1 {
		t.Fatalf("first seq %d, want 1", f.Seq)
	}
	s.mu.Lock()
	s.seq = 0x7FFFFFFE
	s.mu.Unlock()
	send()
	send()
	if f := p.read(); f.Seq != 0x7FFFFFFF {
		t.Fatalf("seq %d, want 0x7FFFFFFF", f.Seq)
	}
	if f := p.read(); f.Seq != 2 {
		t.Fatalf("seq after the wrap %d, want 2 (1 is still waiting)", f.Seq)
	}
}
