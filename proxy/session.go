package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The session engine: one SMPP connection, used for both roles (spareline
// as the SMSC of a platform, and spareline as the ESME of a carrier).
//
// One reader goroutine reads frames, matches responses to the requests that
// are waiting for them, answers enquire_link and unbind itself, and hands every
// other request to the Handler. One writer goroutine owns the socket's write
// side and coalesces queued frames into one write. One sweeper goroutine
// ends the requests whose response timeout passed (one timer per session,
// not per request). A request is registered in
// the in-flight table BEFORE it is written, so a fast response can never
// arrive "unexpected" (unlike gosmpp's Session, STYLE.md pitfall 6), and every
// request ends in exactly one of: a response, ErrResponseTimeout, ErrNotSent
// (certainly never written), ErrConnLost (written, connection gone before the
// answer: the peer may or may not have acted on it).

// Errors of Request.
var (
	ErrResponseTimeout = errors.New("smpp: no response before the timeout")
	ErrNotSent         = errors.New("smpp: session closed before the request was written")
	ErrConnLost        = errors.New("smpp: connection lost while waiting for the response")
)

// SessionConfig tunes a Session.
type SessionConfig struct {
	MaxCommandLength int           // largest PDU read; default 65536
	Window           int           // outstanding outgoing requests; default 64
	ResponseTimeout  time.Duration // default 10s
	EnquireLink      time.Duration // send enquire_link after this long without input; 0 = never
	IdleTimeout      time.Duration // close after this long without input; 0 = never
	BodyTimeout      time.Duration // a started PDU must be complete within this; default 10s
	WriteTimeout     time.Duration // a write must finish within this; default 10s
	// Handler receives every request except enquire_link and unbind. It runs
	// on the reader goroutine: it must not block (start work elsewhere and
	// answer with Respond).
	Handler func(s *Session, f Frame)
	// OnUnbind is called when the peer unbinds (before the session closes).
	OnUnbind func(s *Session)
	// UnbindStatus, when set, is asked first when the peer sends unbind: a
	// status other than ESME_ROK answers the unbind with it, and the
	// session goes on (SMPP 3.4 §4.2: unbind is for a bound session).
	UnbindStatus func(s *Session) uint32
	// KeepAliveIf, when set, says whether enquire_link may be sent now
	// (a platform's session: only once it is bound).
	KeepAliveIf func() bool
	Log         *zap.Logger
	// Trace, when set, logs every PDU while it is true (trace.go).
	Trace *atomic.Bool

	// EnquireLinkAfterInput: no enquire_link before the peer's first PDU
	// (an ESME's session before its bind_resp: not bound yet).
	EnquireLinkAfterInput bool

	// LateGrace is how long after its response timeout a request's late
	// response is still taken: it goes to OnLate instead of being dropped
	// as a stray, and the request keeps its window slot meanwhile (the
	// peer still counts it as outstanding until it answers). 0: a late
	// response is dropped and the slot freed at the timeout.
	LateGrace time.Duration
	// OnLate receives a late response (within LateGrace) with the command
	// id and the tag of the request it answers (RequestTagged; an async
	// request's tag is its call's handler). It runs on the reader
	// goroutine and must not block; f's body is its own.
	OnLate func(s *Session, cmd uint32, tag any, f Frame)
}

func (c *SessionConfig) defaults() {
	if c.MaxCommandLength <= 0 {
		c.MaxCommandLength = 65536
	}
	if c.Window <= 0 {
		c.Window = 64
	}
	if c.ResponseTimeout <= 0 {
		c.ResponseTimeout = 10 * time.Second
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

type call struct {
	ch chan Frame // buffered 1; the reader delivers the response (Request)
	// cb, or h, replaces ch for RequestAsync (requestAsync): called once
	// with the outcome, after the call's window slot is freed (complete).
	cb       func(Frame, error)
	h        asyncDone
	written  atomic.Bool
	deadline int64 // of the response, in nanoseconds since the session's epoch
	// timedOut is set by sweepLoop before it sends the zero Frame on ch
	// that wakes the waiter; slotHeld with it when the call's window slot
	// passed to a late entry (LateGrace), which frees it.
	timedOut bool
	slotHeld bool
	// noSlot: the request takes no window slot (enquire_link: the link's
	// keep-alive must not wait behind submits).
	noSlot bool
	cmd    uint32 // the request's command id
	tag    any    // RequestTagged's tag, for OnLate
}

// lateEntry is a request whose response timeout passed, kept for
// LateGrace: its late response goes to OnLate. It holds the request's
// window slot (the peer still counts the request as outstanding) for one
// more response timeout at most: a window full of requests the peer lost
// must not stop the session for LateGrace.
type lateEntry struct {
	cmd       uint32
	tag       any
	until     int64 // nanoseconds since the session's epoch
	slot      bool  // it holds its request's window slot
	slotUntil int64 // until then
}

// asyncDone takes the outcome of a requestAsync call: what a RequestAsync
// callback would get, except that the response's body may be the reader's
// buffer: it must not be kept (copy what is needed) once requestDone
// returns. A caller that keeps its call in a struct of its own implements
// it on that struct, so that a request costs no closure.
type asyncDone interface {
	requestDone(Frame, error)
}

// async reports a RequestAsync call (no waiter on ch).
func (c *call) async() bool { return c.cb != nil || c.h != nil }

// outFrame is one PDU queued for the writer: its header fields and body,
// followed, when cstr is set, by cstr as a C-Octet String (a message_id);
// the writer encodes it into its buffer, so a frame costs no buffer of its
// own. body is the caller's and must not change until written: the
// queueing methods copy it (ownBody), except requestAsync, whose callers
// hand over a body they never modify.
type outFrame struct {
	id, status, seq uint32
	cstr            bool
	body            []byte
	str             string        // with cstr: written after body, with a NUL
	call            *call         // nil for responses
	flushed         chan struct{} // closed once written (flush markers)
}

// size is the frame's length on the wire.
func (f *outFrame) size() int {
	n := headerLen + len(f.body)
	if f.cstr {
		n += len(f.str) + 1
	}
	return n
}

// ownBody copies a body a caller may reuse once its call returns; nil
// stays nil (no allocation).
func ownBody(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// Session is one SMPP connection.
type Session struct {
	ID   string
	conn net.Conn
	cfg  SessionConfig
	log  *zap.Logger

	wq     chan outFrame // to the writer goroutine
	done   chan struct{} // closed when the session ends
	window chan struct{} // a token per outstanding outgoing request

	mu      sync.Mutex // guards pending, late, seq, wrapped, closed, err, nextSweep; unbound is set under it
	pending map[uint32]*call
	late    map[uint32]lateEntry // timed-out requests within LateGrace (nil until one)
	seq     uint32
	wrapped bool // seq went past 0x7FFFFFFF once
	closed  bool
	err     error
	// unbound: the peer sent unbind. No request of ours goes out after it
	// (SMPP 3.4 §4.2: the peer is ending the session and may not answer).
	unbound atomic.Bool
	// leaving: we sent unbind (Unbind); no request of ours follows it
	// either. Set under mu, with the unbind's registration.
	leaving atomic.Bool
	// closing: closeOnce ran.
	closing atomic.Bool

	// Response timeouts: one timer per session, not one per request (see
	// sweepLoop). nextSweep is when sweepLoop will next look at pending (0:
	// not armed); a request due earlier kicks it.
	epoch     time.Time // monotonic base of call.deadline
	nextSweep int64
	sweepKick chan struct{} // capacity 1

	lastRecv atomic.Int64 // unix nanos of the last read from the socket (reader goroutine writes)
	trace    atomic.Pointer[atomic.Bool]
	heard    atomic.Bool // a read from the socket brought a PDU
	wg       sync.WaitGroup
	// Value is the owner's state (northbound session or carrier bind).
	Value any
}

var sessionCounter atomic.Uint64

// NewSession prepares the engine on conn; Start runs it. Call Close (or let the peer close) to
// end it; Done is closed when it has ended.
func NewSession(conn net.Conn, cfg SessionConfig) *Session {
	cfg.defaults()
	s := &Session{
		ID:      fmt.Sprintf("s%d", sessionCounter.Add(1)),
		conn:    conn,
		cfg:     cfg,
		wq:      make(chan outFrame, writeQueueLen(cfg.Window)),
		done:    make(chan struct{}),
		window:  make(chan struct{}, cfg.Window),
		pending: make(map[uint32]*call),

		epoch:     time.Now(),
		sweepKick: make(chan struct{}, 1),
	}
	s.log = cfg.Log.With(zap.String("session", s.ID), zap.String("peer", conn.RemoteAddr().String()))
	s.lastRecv.Store(time.Now().UnixNano())
	if cfg.Trace != nil {
		s.trace.Store(cfg.Trace)
	}
	return s
}

// Start runs the session's goroutines. Set Value and anything the Handler
// reads before calling it.
func (s *Session) Start() *Session {
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.sweepLoop()
	if s.cfg.EnquireLink > 0 {
		s.wg.Add(1)
		go s.keepAlive()
	}
	return s
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (nil while it runs).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Outstanding is the number of requests waiting for a response.
func (s *Session) Outstanding() int { return len(s.window) }

// Unbound reports that the peer sent unbind: the session takes no more
// requests of ours and is about to end.
func (s *Session) Unbound() bool { return s.unbound.Load() }

// Ending reports that either side sent unbind: the session takes no more
// requests of ours.
func (s *Session) Ending() bool { return s.unbound.Load() || s.leaving.Load() }

// Free is the number of requests that can be sent without waiting.
func (s *Session) Free() int { return cap(s.window) - len(s.window) }

// RemoteAddr is the peer's address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Logger is the session's logger.
func (s *Session) Logger() *zap.Logger { return s.log }

// Close ends the session now.
func (s *Session) Close() { s.closeWith(errors.New("closed locally")) }

// Wait waits for the session's goroutines to exit.
func (s *Session) Wait() { s.wg.Wait() }

func (s *Session) closeWith(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.err = err
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	close(s.done)
	_ = s.conn.Close()
	for _, c := range pending {
		if c.async() {
			err := ErrNotSent
			if c.written.Load() {
				err = ErrConnLost
			}
			s.complete(c, Frame{}, err)
			continue
		}
		// Closing the channel tells the waiter the connection is gone;
		// it checks written to choose ErrConnLost or ErrNotSent.
		close(c.ch)
	}
}

// complete ends a RequestAsync call: it frees the call's window slot, then
// gives the outcome to its callback.
func (s *Session) complete(c *call, f Frame, err error) {
	if !c.slotHeld {
		<-s.window
	}
	if c.h != nil {
		c.h.requestDone(f, err)
		return
	}
	c.cb(f, err)
}

func (s *Session) nextSeq() uint32 {
	// SMPP 3.4 §5.1.4: 0x00000001 to 0x7FFFFFFF.
	s.seq++
	if s.seq > 0x7FFFFFFF {
		s.seq = 1
		s.wrapped = true
	}
	return s.seq
}

// Request sends a request and waits for its response (which may carry an
// error status: that is not an error of Request). The response timeout is
// the session's unless ctx ends first.
func (s *Session) Request(ctx context.Context, id uint32, body []byte) (Frame, error) {
	return s.RequestTimeout(ctx, id, body, s.cfg.ResponseTimeout)
}

// RequestTimeout is Request with its own response timeout.
func (s *Session) RequestTimeout(ctx context.Context, id uint32, body []byte, timeout time.Duration) (Frame, error) {
	return s.RequestTagged(ctx, id, body, timeout, nil)
}

// RequestTagged is RequestTimeout for a request whose late response
// (SessionConfig.LateGrace) goes to OnLate with tag.
func (s *Session) RequestTagged(ctx context.Context, id uint32, body []byte, timeout time.Duration, tag any) (Frame, error) {
	noSlot := id == cmdEnquireLink
	// Each select below first tries its channel alone, without blocking: a
	// one-case select costs much less than a multi-case one (issue 6).
	if !noSlot {
		select {
		case s.window <- struct{}{}:
		default:
			select {
			case s.window <- struct{}{}:
			case <-ctx.Done():
				return Frame{}, fmt.Errorf("%w: %v", ErrNotSent, ctx.Err())
			case <-s.done:
				return Frame{}, ErrNotSent
			}
		}
	}
	c := &call{ch: make(chan Frame, 1), deadline: int64(time.Since(s.epoch) + timeout), cmd: id, tag: tag, noSlot: noSlot}
	seq, ok := s.register(c, id == cmdUnbind)
	if !ok {
		s.freeSlot(c)
		return Frame{}, ErrNotSent
	}

	out := outFrame{id: id, seq: seq, body: ownBody(body), call: c}
	select {
	case s.wq <- out:
	default:
		select {
		case s.wq <- out:
		case <-s.done:
			// The sweeper may have passed the slot to a late entry while
			// the request waited for the write queue (it frees it then).
			s.mu.Lock()
			held := c.slotHeld
			s.mu.Unlock()
			if !held {
				s.freeSlot(c)
			}
			return Frame{}, ErrNotSent
		case <-ctx.Done():
			s.forget(c, seq)
			return Frame{}, fmt.Errorf("%w: %v", ErrNotSent, ctx.Err())
		}
	}
	done := ctx.Done()
	if done == nil {
		// A context that never ends (context.Background): the call ends by
		// the response, the timeout (sweepLoop) or the close (closeWith),
		// all of which come on c.ch.
		f, ok := <-c.ch
		return s.answer(c, f, ok)
	}
	select {
	case f, ok := <-c.ch:
		return s.answer(c, f, ok)
	case <-done:
		s.forget(c, seq)
		if c.written.Load() {
			return Frame{}, fmt.Errorf("%w: %v", ErrConnLost, ctx.Err())
		}
		return Frame{}, fmt.Errorf("%w: %v", ErrNotSent, ctx.Err())
	}
}

// RequestAsync sends a request without waiting for anything: it reports
// false at once, having sent nothing, when the window has no free slot, the
// write queue is full or the session has ended. Otherwise it reports true
// and done is called exactly once with what Request would have returned:
// on the reader goroutine (the response), the sweeper (ErrResponseTimeout)
// or the goroutine that closes the session (ErrConnLost, ErrNotSent). done
// must not block: it runs where the session's own work runs.
//
// It is how the gateway relays a submit without a goroutine waiting for
// each answer (issue 6): a caller that cannot wait falls back to Request
// on a goroutine of its own.
func (s *Session) RequestAsync(id uint32, body []byte, timeout time.Duration, done func(Frame, error)) bool {
	return s.RequestAsyncTagged(id, body, timeout, nil, done)
}

// RequestAsyncTagged is RequestAsync for a request whose late response
// (SessionConfig.LateGrace) goes to OnLate with tag.
func (s *Session) RequestAsyncTagged(id uint32, body []byte, timeout time.Duration, tag any, done func(Frame, error)) bool {
	if s.Free() == 0 {
		return false // spares the call's allocation
	}
	return s.requestAsync(id, ownBody(body), time.Now().Add(timeout), &call{cb: done, tag: tag})
}

// requestAsync is RequestAsync for a call c that the caller made, with h
// (or cb) set and nothing else, and whose response is due at deadline (the
// caller's clock reading plus the timeout: one clock read serves a whole
// message). c must be new: a call is used for one request. body is sent
// as is, not copied: it must not change afterwards.
func (s *Session) requestAsync(id uint32, body []byte, deadline time.Time, c *call) bool {
	select {
	case s.window <- struct{}{}:
	default:
		return false
	}
	c.deadline = int64(deadline.Sub(s.epoch))
	c.cmd = id
	seq, ok := s.register(c, id == cmdUnbind)
	if !ok {
		<-s.window
		return false
	}
	select {
	case s.wq <- outFrame{id: id, seq: seq, body: body, call: c}:
		return true
	default:
	}
	// The write queue is full: take the call back, unless the session
	// closed (or the sweeper ended it) meanwhile, which then completes it.
	s.mu.Lock()
	mine := s.pending[seq] == c
	if mine {
		delete(s.pending, seq)
	}
	s.mu.Unlock()
	if !mine {
		return true
	}
	<-s.window
	return false
}

// register enters c in the in-flight table under a new sequence number,
// before it is written, and makes the sweeper look at its deadline if it is
// the earliest; false if the session has ended or either side unbound.
// unbind is set for our unbind: the last request of the session.
func (s *Session) register(c *call, unbind bool) (uint32, bool) {
	s.mu.Lock()
	if s.closed || s.unbound.Load() || s.leaving.Load() {
		s.mu.Unlock()
		return 0, false
	}
	if unbind {
		s.leaving.Store(true)
	}
	seq := s.nextSeq()
	// After a 2^31 wrap, a number may still be held by a request that is
	// waiting; before it, every number is new (no lookup needed).
	for s.wrapped && (s.pending[seq] != nil || s.late[seq].until != 0) {
		seq = s.nextSeq()
	}
	s.pending[seq] = c
	kick := s.nextSweep == 0 || c.deadline < s.nextSweep
	if kick {
		s.nextSweep = c.deadline
	}
	s.mu.Unlock()
	if kick {
		select {
		case s.sweepKick <- struct{}{}:
		default:
		}
	}
	return seq, true
}

// answer is the outcome of a request once its channel delivered (ok false:
// closed by closeWith). It frees the request's window slot.
func (s *Session) answer(c *call, f Frame, ok bool) (Frame, error) {
	if !(ok && c.slotHeld) {
		s.freeSlot(c)
	}
	if !ok {
		if c.written.Load() {
			return Frame{}, ErrConnLost
		}
		return Frame{}, ErrNotSent
	}
	if c.timedOut {
		return Frame{}, ErrResponseTimeout
	}
	return f, nil
}

// sweepLoop ends the requests whose response timeout passed: it removes
// them from pending (so a late response is dropped as a stray) and wakes
// their waiters, which answer ErrResponseTimeout. It keeps one timer armed
// for the earliest deadline in pending and rescans when it fires; requests
// of one session mostly share one timeout, so a new request is rarely due
// before the armed time, and at saturation this costs one wake-up per
// timeout period instead of a timer started and stopped per request
// (issue 6).
func (s *Session) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	var expired []*call
	for {
		select {
		case <-s.done:
			return
		case <-s.sweepKick:
		case <-t.C:
		}
		now := int64(time.Since(s.epoch))
		next := int64(0)
		expired = expired[:0]
		grace := int64(s.cfg.LateGrace)
		freed := 0
		s.mu.Lock()
		for seq, c := range s.pending {
			if c.deadline <= now {
				delete(s.pending, seq)
				expired = append(expired, c)
				if grace > 0 && !s.closed && c.cmd != cmdUnbind && c.cmd != cmdEnquireLink {
					// Its late answer is still taken, and the peer
					// still counts it: the slot passes to the entry.
					if s.late == nil {
						s.late = make(map[uint32]lateEntry)
					}
					tag := c.tag
					if tag == nil && c.h != nil {
						tag = c.h // an async request: its handler
					}
					hold := min(grace, int64(s.cfg.ResponseTimeout))
					s.late[seq] = lateEntry{cmd: c.cmd, tag: tag, until: now + grace, slot: true, slotUntil: now + hold}
					c.slotHeld = true
					if next == 0 || now+hold < next {
						next = now + hold
					}
				}
				continue
			}
			if next == 0 || c.deadline < next {
				next = c.deadline
			}
		}
		for seq, e := range s.late {
			if e.until <= now {
				delete(s.late, seq)
				if e.slot {
					freed++
				}
				continue
			}
			if e.slot && e.slotUntil <= now {
				e.slot = false
				s.late[seq] = e
				freed++
			}
			at := e.until
			if e.slot {
				at = e.slotUntil
			}
			if next == 0 || at < next {
				next = at
			}
		}
		s.nextSweep = next
		s.mu.Unlock()
		for range freed {
			<-s.window
		}
		for i, c := range expired {
			if c.async() {
				s.complete(c, Frame{}, ErrResponseTimeout)
			} else {
				c.timedOut = true
				c.ch <- Frame{} // buffered, and nobody else sends once it left pending
			}
			expired[i] = nil
		}
		if next != 0 {
			t.Reset(time.Duration(next - now))
		}
	}
}

// freeSlot frees the window slot of c, unless it took none.
func (s *Session) freeSlot(c *call) {
	if !c.noSlot {
		<-s.window
	}
}

// forget drops a waiting request (cancel) and frees its window slot.
func (s *Session) forget(c *call, seq uint32) {
	s.mu.Lock()
	_, ok := s.pending[seq]
	if ok {
		delete(s.pending, seq)
	}
	held := c.slotHeld
	s.mu.Unlock()
	// Whether or not the reader raced us to it, our slot is ours to free
	// (the reader never frees a waiting request's slot), unless the
	// sweeper passed it to a late entry.
	if !held {
		s.freeSlot(c)
	}
}

// Respond answers a request with the given status and body.
func (s *Session) Respond(req Frame, status uint32, body []byte) {
	s.send(req.ID|cmdRespBit, status, req.Seq, body)
}

// TryRespond is Respond for a caller that must not wait: it reports false,
// having queued nothing, when the write queue is full.
func (s *Session) TryRespond(req Frame, status uint32, body []byte) bool {
	return s.tryQueue(outFrame{id: req.ID | cmdRespBit, status: status, seq: req.Seq, body: ownBody(body)})
}

// tryRespondID is TryRespond with a body of one C-Octet String, id (a
// submit_sm_resp's message_id), written from id itself.
func (s *Session) tryRespondID(req Frame, status uint32, id string) bool {
	return s.tryQueue(outFrame{id: req.ID | cmdRespBit, status: status, seq: req.Seq, cstr: true, str: id})
}

// respondID is Respond with tryRespondID's body.
func (s *Session) respondID(req Frame, status uint32, id string) {
	s.queue(outFrame{id: req.ID | cmdRespBit, status: status, seq: req.Seq, cstr: true, str: id})
}

func (s *Session) tryQueue(out outFrame) bool {
	select {
	case s.wq <- out:
		return true
	case <-s.done:
		return true // as Respond: nothing to answer on an ended session
	default:
		return false
	}
}

// send queues a frame that expects no response. It does not block once the
// session has ended.
func (s *Session) send(id, status, seq uint32, body []byte) {
	s.queue(outFrame{id: id, status: status, seq: seq, body: ownBody(body)})
}

// queue queues a frame; it does not block once the session has ended.
func (s *Session) queue(out outFrame) {
	select {
	case s.wq <- out: // without blocking: cheaper than the select below
	default:
		select {
		case s.wq <- out:
		case <-s.done:
		}
	}
}

// GenericNack answers an unparseable request (SMPP 3.4 §4.3).
func (s *Session) GenericNack(seq, status uint32) {
	s.send(cmdGenericNack, status, seq, nil)
}

// Unbind sends unbind, waits briefly for unbind_resp, then closes.
func (s *Session) Unbind(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if !s.Ending() {
		_, err := s.RequestTimeout(ctx, cmdUnbind, nil, 2*time.Second)
		if !errors.Is(err, ErrNotSent) || !s.Ending() {
			s.closeWith(errors.New("unbound locally"))
			return
		}
	}
	// The peer unbound first (the session is answering it and ends by
	// itself once its unbind_resp is out), or another Unbind is waiting
	// for our unbind_resp: do not cut that short.
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	s.closeWith(errors.New("unbound locally"))
}

func (s *Session) readLoop() {
	defer s.wg.Done()
	r := bufio.NewReaderSize(s.conn, 8<<10)
	var hdr [headerLen]byte
	// The body of a small response is read here, not into a buffer of its
	// own: a submit_sm_resp's message_id is copied out by its asyncDone
	// (dispatch copies it for any other taker).
	scratch := make([]byte, respScratch)
	for {
		// A deadline only matters for a read that reaches the socket, so
		// one is set only before such a read; a frame already whole in the
		// buffer (the common case under load: one read brings many) costs
		// no deadline update (issue 6).
		if r.Buffered() == 0 {
			// Always reset the deadline before waiting here: otherwise, with
			// no IdleTimeout, the previous PDU's BodyTimeout deadline would
			// still be armed and a quiet peer would be cut BodyTimeout after
			// its last PDU started.
			idle := time.Time{}
			if s.cfg.IdleTimeout > 0 {
				idle = time.Now().Add(s.cfg.IdleTimeout)
			}
			_ = s.conn.SetReadDeadline(idle)
			// The header's first octet is awaited under the idle deadline; once it
			// starts, the rest must arrive within BodyTimeout (slowloris).
			if _, err := r.Peek(1); err != nil {
				s.closeWith(readErr(err))
				return
			}
		}
		whole := frameBuffered(r)
		if !whole {
			_ = s.conn.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		}
		f, err := readFrameScratch(r, s.cfg.MaxCommandLength, &hdr, scratch)
		if err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				s.log.Warn("bad PDU framing, closing", zap.Uint32("command_length", fe.Header.Length),
					zap.String("command_id", fmt.Sprintf("0x%08X", fe.Header.ID)))
				s.GenericNack(fe.Header.Seq, fe.Status)
				s.flushAndClose(err)
				return
			}
			s.closeWith(readErr(err))
			return
		}
		if !whole || r.Buffered() == 0 {
			// Input arrived now (frames taken from the buffer arrived with
			// the read that filled it): one clock read per read, not per
			// frame.
			s.lastRecv.Store(time.Now().UnixNano())
			s.heard.Store(true)
		}
		if s.tracing() {
			s.tracePDU("in", f.ID, f.Status, f.Seq, f.Body, "", false)
		}
		s.dispatch(f)
		select {
		case <-s.done:
			return
		default:
		}
	}
}

// frameBuffered reports whether the next frame is whole in r's buffer, so
// that reading it cannot touch the socket.
func frameBuffered(r *bufio.Reader) bool {
	if r.Buffered() < headerLen {
		return false
	}
	h, err := r.Peek(4)
	if err != nil {
		return false
	}
	return int64(binary.BigEndian.Uint32(h)) <= int64(r.Buffered())
}

func readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("read timeout: %w", err)
	}
	return err
}

// respScratch is the largest response body read into the reader's scratch
// buffer (a submit_sm_resp: message_id is at most 65 octets).
const respScratch = 80

// dispatch handles a frame the reader read. A response's body may be the
// reader's scratch buffer: only an asyncDone sees it as is, and must not
// keep it past its call; every other taker gets a copy.
func (s *Session) dispatch(f Frame) {
	if f.IsResponse() {
		s.mu.Lock()
		c := s.pending[f.Seq]
		if c != nil {
			delete(s.pending, f.Seq)
		}
		s.mu.Unlock()
		if c == nil {
			s.mu.Lock()
			e, late := s.late[f.Seq]
			if late {
				delete(s.late, f.Seq)
			}
			s.mu.Unlock()
			if late {
				if e.slot {
					<-s.window // the entry's slot: the peer has answered it
				}
				if s.cfg.OnLate != nil {
					f.Body = append([]byte(nil), f.Body...) // maybe the scratch buffer
					s.cfg.OnLate(s, e.cmd, e.tag, f)
				}
				s.afterUnbindAnswer()
				return
			}
			// A late answer past LateGrace, or a stray.
			s.log.Debug("response with no request waiting", zap.Uint32("seq", f.Seq),
				zap.String("command_id", fmt.Sprintf("0x%08X", f.ID)))
			return
		}
		if c.h == nil && len(f.Body) > 0 && len(f.Body) <= respScratch {
			f.Body = append([]byte(nil), f.Body...) // maybe the scratch buffer
		}
		if c.async() {
			s.complete(c, f, nil)
		} else {
			c.ch <- f
		}
		s.afterUnbindAnswer()
		return
	}
	switch f.ID {
	case cmdEnquireLink:
		s.Respond(f, statusOK, nil)
	case cmdUnbind:
		if s.cfg.UnbindStatus != nil {
			if st := s.cfg.UnbindStatus(s); st != statusOK {
				s.Respond(f, st, nil)
				return
			}
		}
		s.mu.Lock() // with register: no request registers after this
		s.unbound.Store(true)
		s.mu.Unlock()
		if s.cfg.OnUnbind != nil {
			s.cfg.OnUnbind(s)
		}
		s.Respond(f, statusOK, nil)
		if s.awaiting() {
			// Answers to our requests may follow the unbind in the
			// stream (a platform acknowledging the last receipts as it
			// leaves): read them for a moment, so that what the peer
			// took is not sent again on its next bind. The session
			// closes once none is awaited, or after unbindDrain.
			time.AfterFunc(unbindDrain, func() { s.closeOnce(errors.New("peer unbound")) })
			return
		}
		s.closeOnce(errors.New("peer unbound"))
	default:
		if s.unbound.Load() {
			// Sent after the peer's own unbind (SMPP 3.4 §4.2): the session
			// is ending and an answer might never reach the peer; acting on
			// it (a submit relayed) would leave the peer believing it failed.
			s.Respond(f, statusInvBndSts, nil)
			return
		}
		if s.cfg.Handler == nil {
			s.GenericNack(f.Seq, statusInvCmdID)
			return
		}
		s.cfg.Handler(s, f)
	}
}

// flushAndClose lets the writer send what is queued (an unbind_resp, a
// generic_nack), then closes.
// unbindDrain is how long a session the peer unbound keeps reading the
// answers to requests of ours still awaited.
var unbindDrain = 2 * time.Second

// awaiting reports whether a request of ours awaits its answer (one that
// timed out within LateGrace included).
func (s *Session) awaiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0 || len(s.late) > 0
}

// afterUnbindAnswer closes a session the peer unbound once the last answer
// it awaited came (see the unbind case of dispatch).
func (s *Session) afterUnbindAnswer() {
	if s.unbound.Load() && !s.awaiting() {
		s.closeOnce(errors.New("peer unbound"))
	}
}

// closeOnce is flushAndClose, once: the unbind drain may end by its last
// answer and by its timer.
func (s *Session) closeOnce(err error) {
	if s.closing.CompareAndSwap(false, true) {
		s.flushAndClose(err)
	}
}

func (s *Session) flushAndClose(err error) {
	flushed := make(chan struct{})
	go func() {
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case s.wq <- outFrame{flushed: flushed}:
			select {
			case <-flushed:
			case <-t.C:
			case <-s.done:
			}
		case <-s.done:
		case <-t.C:
		}
		s.closeWith(err)
	}()
}

func (s *Session) writeLoop() {
	defer s.wg.Done()
	// The deadline is armed by deadlineWriter before every write that
	// reaches the socket, so WriteTimeout bounds each write, not a batch: a
	// peer that reads steadily, slower than we produce, is never cut.
	w := bufio.NewWriterSize(deadlineWriter{s.conn, s.cfg.WriteTimeout}, writeBufSize)
	var markers []chan struct{}
	for {
		var f outFrame
		select {
		case f = <-s.wq:
		case <-s.done:
			return
		}
		markers = markers[:0]
		frames, octets, yields := 0, 0, 0
		var yieldStart time.Time
	batch:
		for {
			if f.call != nil {
				// Set before the write: "written" means "the peer may have it",
				// so ErrNotSent is only ever reported for requests that
				// certainly never left.
				f.call.written.Store(true)
			}
			if f.flushed == nil || f.id != 0 {
				if err := writeFrame(w, &f); err != nil {
					s.closeWith(fmt.Errorf("write: %w", err))
					return
				}
				if s.tracing() {
					s.tracePDU("out", f.id, f.status, f.seq, f.body, f.str, f.cstr)
				}
				frames++
				octets += f.size()
			}
			if f.flushed != nil {
				// A flush marker (unbind, close after a generic_nack) is
				// waited on: flush now, whatever else is queued.
				markers = append(markers, f.flushed)
				break
			}
			if octets >= maxBatchOctets {
				// Bounded, so that a steady flood still flushes often and
				// the markers behind it are reached.
				break
			}
			select {
			case f = <-s.wq:
				continue
			default:
			}
			// The queue is empty. Frames usually come in bursts (a store
			// batch commits, a read buffer holds many requests) from
			// goroutines that are runnable but have not run yet: yield so
			// they queue their frames, and write them all in one syscall.
			// A write syscall and the wake-up of the peer's reader cost far
			// more than a yield, and a yield adds no latency when nothing
			// else is runnable. But on a loaded CPU a yield can wait a
			// scheduler slice: yield only while the batch is small (a
			// large one already pays for its syscall) and while the yields
			// have cost under maxYieldDelay in all, at most maxWriteYields
			// times. The clock is read only on this path (never while the
			// queue keeps the writer busy).
			if yields >= maxWriteYields || frames >= maxYieldFrames {
				break
			}
			if yields == 0 {
				yieldStart = time.Now()
			} else if time.Since(yieldStart) > maxYieldDelay {
				break
			}
			yields++
			runtime.Gosched()
			select {
			case f = <-s.wq:
			default:
				break batch
			}
		}
		if err := w.Flush(); err != nil {
			s.closeWith(fmt.Errorf("write: %w", err))
			return
		}
		for _, m := range markers {
			close(m)
		}
	}
}

// writeFrame encodes f into w.
func writeFrame(w *bufio.Writer, f *outFrame) error {
	// The header is put straight into the buffer's free space: a local
	// array handed to Write would escape (to the connection's Write), an
	// allocation per frame.
	if w.Available() < headerLen {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	h := w.AvailableBuffer()
	h = binary.BigEndian.AppendUint32(h, uint32(f.size()))
	h = binary.BigEndian.AppendUint32(h, f.id)
	h = binary.BigEndian.AppendUint32(h, f.status)
	h = binary.BigEndian.AppendUint32(h, f.seq)
	if _, err := w.Write(h); err != nil {
		return err
	}
	if _, err := w.Write(f.body); err != nil {
		return err
	}
	if f.cstr {
		if _, err := w.WriteString(f.str); err != nil {
			return err
		}
		return w.WriteByte(0)
	}
	return nil
}

// deadlineWriter arms the connection's write deadline before each write.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(p)
}

// keepAlive sends enquire_link after EnquireLink without input and closes the
// session when it goes unanswered (SMPP 3.4 §4.11).
func (s *Session) keepAlive() {
	defer s.wg.Done()
	t := time.NewTimer(s.cfg.EnquireLink)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.cfg.EnquireLinkAfterInput && !s.heard.Load() || s.cfg.KeepAliveIf != nil && !s.cfg.KeepAliveIf() {
			t.Reset(s.cfg.EnquireLink)
			continue
		}
		idle := time.Since(time.Unix(0, s.lastRecv.Load()))
		if idle < s.cfg.EnquireLink {
			t.Reset(s.cfg.EnquireLink - idle)
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.done:
			case <-ctx.Done():
			}
			cancel()
		}()
		f, err := s.Request(ctx, cmdEnquireLink, nil)
		cancel()
		if err != nil {
			if errors.Is(err, ErrResponseTimeout) {
				s.log.Warn("enquire_link unanswered, closing")
				s.closeWith(fmt.Errorf("enquire_link unanswered: %w", err))
			}
			return
		}
		if f.Status == statusInvBndSts {
			// The peer no longer counts the session as bound (an SMSC
			// whose session table lost it while TCP stayed up): every
			// request would be refused; closing makes the owner bind again.
			s.log.Warn("peer answered enquire_link ESME_RINVBNDSTS, closing")
			s.closeWith(errors.New("enquire_link answered ESME_RINVBNDSTS"))
			return
		}
		if f.ID == cmdGenericNack {
			s.log.Debug("peer answered enquire_link with generic_nack")
		}
		t.Reset(s.cfg.EnquireLink)
	}
}

// The writer's batching (see writeLoop). writeBufSize is small because a
// gateway holds thousands of sessions; a batch ends once it holds
// maxBatchOctets (3/4 of the buffer: a frame that does not fit makes bufio
// write the buffer out, and a batch is meant to be one write), when the
// queue stays empty, or at a flush marker. The writer yields at most
// maxWriteYields times for more frames, only while the batch holds fewer
// than maxYieldFrames and the yields have cost under maxYieldDelay.
const (
	writeBufSize   = 16 << 10
	maxBatchOctets = writeBufSize * 3 / 4
	maxWriteYields = 4
	maxYieldFrames = 32
	maxYieldDelay  = 50 * time.Microsecond
)

// writeQueueLen sizes a session's write queue: our requests are bounded by
// the window and the peer's by its own; a full queue only makes the writer
// wait (backpressure), and the writer drains it in batches into one
// buffered write. Kept small because a gateway holds thousands of sessions:
// 72 octets a slot.
func writeQueueLen(window int) int {
	return min(max(window+32, 64), 256)
}
