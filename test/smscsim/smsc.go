// Package smscsim is an SMSC (operator message centre) simulator speaking SMPP
// 3.4 over a real TCP listener, for end-to-end tests, `spareline demo` and
// benchmarks.
//
// Policy, in short:
//   - It accepts bind_transmitter, bind_receiver and bind_transceiver
//     (SMPP 3.4 4.1), checks system_id then password when they are configured
//     (ESME_RINVSYSID, ESME_RINVPASWD), refuses a bind beyond
//     Options.MaxBindsPerSystemID bound connections of its system_id
//     (ESME_RALYBND), answers enquire_link (4.11) and unbind
//     (4.2, then closes), and answers any other request with generic_nack
//     ESME_RINVCMDID (4.3). A submit_sm before bind, or on a receiver bind,
//     gets ESME_RINVBNDSTS.
//   - Every submit_sm is recorded byte-exact (Received, WaitFor), then
//     answered as the behaviour function says (SetBehaviour): a status, a delay,
//     or no answer at all. An error answer carries no body (4.4.2).
//   - An accepted submit_sm that asks for a receipt (registered_delivery bits
//     0-1, 5.2.17: 01 always, 10 on failure only) gets a delivery receipt
//     (esm_class 0x04, Appendix B text, TLVs receipted_message_id and
//     message_state) on a receiver or transceiver bind of the same system_id.
//     With no such bind the receipt waits for one; a receipt whose
//     connection drops before its deliver_sm_resp is sent again on the next
//     bind, as real SMSCs do.
//   - Message ids are a counter, written in decimal or hex; the receipt may
//     use the other form (Options.ReceiptIDFormat), as some carriers do.
//   - Faults on demand: CloseAll, Stop/Restart, SetSilent, MuteSubmits,
//     RefuseBinds.
//
// Concurrency: each TCP connection has a reader goroutine (which decides every
// answer) and a writer goroutine (the only one writing the socket). Shared
// state lives in SMSC under SMSC.mu. Delayed answers run on goroutines that
// Close cancels and waits for.
package smscsim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// IDFormat is how message ids are written.
type IDFormat string

// Message id formats.
const (
	IDDecimal IDFormat = "decimal" // "12345"
	IDHex     IDFormat = "hex"     // "3039" (upper case)
)

// ReceiptIDFormat says how the receipt writes the id relative to submit_sm_resp.
type ReceiptIDFormat string

// Receipt id formats.
const (
	ReceiptSame    ReceiptIDFormat = "same"    // as IDFormat
	ReceiptHex     ReceiptIDFormat = "hex"     // receipt in hex whatever IDFormat is
	ReceiptDecimal ReceiptIDFormat = "decimal" // receipt in decimal whatever IDFormat is
	ReceiptPadded  ReceiptIDFormat = "padded"  // receipt in decimal, zero-padded to 10 digits
)

// ThrottleMode is what happens above MaxTPSPerBind.
type ThrottleMode string

// Throttle modes.
const (
	ThrottleReject ThrottleMode = "reject" // answer ESME_RTHROTTLED at once
	ThrottleDelay  ThrottleMode = "delay"  // hold answers to the rate
)

// Options configure a simulator. The zero value is a usable SMSC on a random
// loopback port that accepts any system_id and password.
type Options struct {
	Name     string // system_id in bind responses and logs; default "smscsim"
	Addr     string // listen address; default "127.0.0.1:0"
	SystemID string // required system_id; "" accepts any
	Password string // required password; "" accepts any

	IDFormat        IDFormat        // default IDDecimal
	ReceiptIDFormat ReceiptIDFormat // default ReceiptSame
	FirstID         uint64          // first message id; default 1

	ResponseDelay time.Duration // added before every submit_sm_resp
	ReceiptDelay  time.Duration // between submit_sm_resp and its receipt
	// ReceiptRetry: a receipt answered with an error status is sent again
	// after ReceiptRetry, as real SMSCs do; 0 = never sent again.
	ReceiptRetry time.Duration
	// ReceiptsByDataSM sends receipts as data_sm (SMPP 3.4 §4.7, as some
	// SMSCs do): receipted_message_id, message_state and the receipt text
	// in message_payload; data_sm_resp answers them.
	ReceiptsByDataSM bool
	// NoTransceiver answers bind_transceiver with generic_nack
	// ESME_RINVCMDID, as an SMSC that takes only transmitter and receiver
	// binds (SMPP 3.3 style) does.
	NoTransceiver bool
	// NoCancel answers cancel_sm with generic_nack ESME_RINVCMDID, as an
	// SMSC without it does.
	NoCancel bool
	// DeletedReceiptOnCancel: a message cancelled by cancel_sm gets its
	// receipt at once, stat DELETED, sent before the cancel_sm_resp (as
	// SMSCs that report cancelled messages do, when one was asked for).
	DeletedReceiptOnCancel bool

	// SMPP33 is an SMSC built on SMPP 3.3 (GSM 03.39), which knows no
	// optional parameters: a submit_sm that carries any is refused
	// ESME_RINVCMDLEN (its octets do not add up to a 3.3 submit_sm).
	SMPP33 bool

	// MaxBindsPerSystemID: a bind beyond this many bound connections of
	// its system_id is refused ESME_RALYBND, as SMSCs that allow an
	// account one bind (or a few) do; 0 = no limit.
	MaxBindsPerSystemID int

	MaxTPSPerBind int          // submit_sm per second per connection; 0 = unlimited
	Throttle      ThrottleMode // default ThrottleReject

	// RecordLimit bounds Received to about the last RecordLimit messages
	// (for long demo or benchmark runs); 0 keeps every message.
	RecordLimit int

	// Logf, when set, receives one line per notable event (never passwords).
	Logf func(format string, args ...any)
}

// Reply is what the behaviour function decides for one submit_sm.
type Reply struct {
	Status      uint32        // command_status of submit_sm_resp; 0 = OK
	Silent      bool          // never answer this submit_sm
	Delay       time.Duration // extra delay before the answer
	ReceiptStat string        // receipt stat: DELIVRD (default), UNDELIV, EXPIRED, REJECTD...
	ReceiptErr  string        // receipt err: field; default "000"
	NoReceipt   bool          // send no receipt even if asked
	NoID        bool          // accept with an empty message_id (and send no receipt)
	// ReuseID accepts with this message_id, one an earlier submit_sm_resp
	// wrote, instead of a new one (its receipt writes it as that
	// message's did), as SMSCs whose counters wrap or reset, or whose
	// random short ids collide, do.
	ReuseID string
	// ReceiptFirst sends the receipt at once, before the submit_sm_resp
	// (which still waits for Delay), as an SMSC that fails a message at
	// once may.
	ReceiptFirst bool
}

// Behaviour decides the answer to a submit_sm; attempt is 1 for the first
// submit of a given source, destination and short_message, 2 for its first
// resubmission, and so on. It runs on a connection's reader goroutine and must
// not block.
type Behaviour func(m Message, attempt int) Reply

// Stats are the simulator's counters since Start.
type Stats struct {
	Conns         int    // TCP connections open now
	Bound         int    // bound connections now
	Bound33       int    // of them, bound with interface_version below 0x34 (SMPP 3.3)
	Binds         uint64 // successful binds
	BindsRefused  uint64 // binds answered with an error
	Submits       uint64 // submit_sm received (answered or not)
	Throttled     uint64 // submit_sm answered ESME_RTHROTTLED by the rate cap
	ReceiptsSent  uint64 // receipt deliver_sm written (a resend counts again)
	ReceiptsAcked uint64 // receipt deliver_sm_resp with status 0
	ReceiptsNack  uint64 // receipt deliver_sm_resp with another status, or generic_nack
	ReceiptsHeld  int    // receipts waiting for a receiver bind
	MOSent        uint64
	MOAcked       uint64
}

// Errors of SendMO.
var (
	ErrNoReceiver = errors.New("smscsim: no receiver or transceiver bound")
	ErrConnClosed = errors.New("smscsim: connection closed before the response")
	ErrClosed     = errors.New("smscsim: simulator closed")
)

// StatusError is a non-zero command_status in a response.
type StatusError struct{ Status uint32 }

func (e *StatusError) Error() string {
	return fmt.Sprintf("smscsim: command_status 0x%08X (%s)", e.Status, data.CommandStatusType(e.Status))
}

// SMSC is a running simulator.
type SMSC struct {
	opts   Options
	ctx    context.Context // cancelled by Close; ends delayed work
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loops, connection goroutines, delayed work

	mu        sync.Mutex // guards the fields below
	addr      string     // resolved listen address, kept for Restart
	ln        net.Listener
	conns     map[*conn]struct{}
	received  []Message
	changed   chan struct{} // closed and replaced on every change; see WaitFor
	behaviour Behaviour
	silent    bool
	mute      map[uint64]bool // connections answering no submit_sm (MuteSubmits)
	refuse    uint32
	attempts  map[string]int
	held      []*receipt          // receipts waiting for a receiver bind
	hold      bool                // HoldReceipts: hold every new receipt
	cancels   []Cancel            // cancel_sm received (cancel.go)
	pending   map[string]*receipt // by message id: receipts not sent yet, which a cancel_sm can stop
	stats     Stats
	nextID    uint64
	nextConn  uint64
	rr        uint64 // round robin over receivers
	closed    bool
}

// Start listens and serves until Close.
func Start(opts Options) (*SMSC, error) {
	if opts.Name == "" {
		opts.Name = "smscsim"
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.IDFormat == "" {
		opts.IDFormat = IDDecimal
	}
	if opts.ReceiptIDFormat == "" {
		opts.ReceiptIDFormat = ReceiptSame
	}
	if opts.Throttle == "" {
		opts.Throttle = ThrottleReject
	}
	if opts.FirstID == 0 {
		opts.FirstID = 1
	}
	switch opts.IDFormat {
	case IDDecimal, IDHex:
	default:
		return nil, fmt.Errorf("smscsim: Options.IDFormat %q: want decimal or hex", opts.IDFormat)
	}
	switch opts.ReceiptIDFormat {
	case ReceiptSame, ReceiptHex, ReceiptDecimal, ReceiptPadded:
	default:
		return nil, fmt.Errorf("smscsim: Options.ReceiptIDFormat %q: want same, hex, decimal or padded", opts.ReceiptIDFormat)
	}
	switch opts.Throttle {
	case ThrottleReject, ThrottleDelay:
	default:
		return nil, fmt.Errorf("smscsim: Options.Throttle %q: want reject or delay", opts.Throttle)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("smscsim %s: listen %s: %w", opts.Name, opts.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &SMSC{
		opts:     opts,
		ctx:      ctx,
		cancel:   cancel,
		addr:     ln.Addr().String(),
		ln:       ln,
		conns:    make(map[*conn]struct{}),
		changed:  make(chan struct{}),
		attempts: make(map[string]int),
		nextID:   opts.FirstID,
	}
	s.wg.Add(1)
	go s.acceptLoop(ln)
	return s, nil
}

// Addr is the listen address ("127.0.0.1:port").
func (s *SMSC) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Name is Options.Name.
func (s *SMSC) Name() string { return s.opts.Name }

func (s *SMSC) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("smscsim %s: "+format, append([]any{s.opts.Name}, args...)...)
	}
}

// notifyLocked wakes every waiter; s.mu must be held.
func (s *SMSC) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *SMSC) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			return // listener closed by Stop or Close
		}
		s.mu.Lock()
		if s.closed || s.ln != ln {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.nextConn++
		c := &conn{
			s:        s,
			id:       s.nextConn,
			nc:       nc,
			out:      make(chan []byte, 256),
			done:     make(chan struct{}),
			inflight: make(map[uint32]*delivery),
		}
		s.conns[c] = struct{}{}
		s.stats.Conns++
		s.notifyLocked()
		s.wg.Add(2)
		s.mu.Unlock()
		go c.readLoop()
		go c.writeLoop()
	}
}

// after runs fn after d on a goroutine Close waits for; d <= 0 runs it now.
func (s *SMSC) after(d time.Duration, fn func()) {
	if d <= 0 {
		fn()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fn()
		case <-s.ctx.Done():
		}
	}()
}

// Received returns a copy of every submit_sm received so far (the last
// Options.RecordLimit when set), in order. Byte slices are shared: read only.
func (s *SMSC) Received() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.received
	if lim := s.opts.RecordLimit; lim > 0 && len(r) > lim {
		r = r[len(r)-lim:]
	}
	return append([]Message(nil), r...)
}

// WaitFor blocks until at least n submit_sm have been received or ctx ends.
func (s *SMSC) WaitFor(ctx context.Context, n int) error {
	err := s.WaitUntil(ctx, func(st Stats) bool { return st.Submits >= uint64(n) })
	if err != nil {
		return fmt.Errorf("smscsim %s: waiting for %d submit_sm, have %d: %w", s.opts.Name, n, s.Stats().Submits, err)
	}
	return nil
}

// WaitUntil blocks until cond holds for the counters or ctx ends. cond runs
// under the simulator's lock and must be quick.
func (s *SMSC) WaitUntil(ctx context.Context, cond func(Stats) bool) error {
	for {
		s.mu.Lock()
		ok := cond(s.statsLocked())
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *SMSC) statsLocked() Stats {
	st := s.stats
	st.ReceiptsHeld = len(s.held)
	st.Bound = 0
	for c := range s.conns {
		if c.bound {
			st.Bound++
			if c.version < 0x34 {
				st.Bound33++
			}
		}
	}
	return st
}

// Stats returns the counters.
func (s *SMSC) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsLocked()
}

// SetBehaviour installs the function deciding each submit_sm's answer; nil
// restores the default (OK, receipt DELIVRD).
func (s *SMSC) SetBehaviour(b Behaviour) {
	s.mu.Lock()
	s.behaviour = b
	s.mu.Unlock()
}

// SetSilent makes the SMSC stop answering anything (binds, enquire_link,
// submit_sm) while keeping TCP connections open; false resumes. Receipts
// already due are still sent.
func (s *SMSC) SetSilent(on bool) {
	s.mu.Lock()
	s.silent = on
	s.mu.Unlock()
}

// MuteSubmits makes connection conn (Message.Conn; BoundConns) stop
// answering submit_sm, as a half-dead SMSC node does, while it still
// answers enquire_link and unbind (SetSilent is the whole SMSC's); false
// resumes. The submits are still received and recorded (Message.Silent).
func (s *SMSC) MuteSubmits(conn uint64, on bool) {
	s.mu.Lock()
	if s.mute == nil {
		s.mute = map[uint64]bool{}
	}
	if on {
		s.mute[conn] = true
	} else {
		delete(s.mute, conn)
	}
	s.mu.Unlock()
}

// BoundConns lists the ids of the bound connections, in order.
func (s *SMSC) BoundConns() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []uint64
	for c := range s.conns {
		if c.bound {
			ids = append(ids, c.id)
		}
	}
	slices.Sort(ids)
	return ids
}

// RefuseBinds answers every later bind with status (e.g. ESME_RBINDFAIL
// 0x0D); 0 accepts binds again.
func (s *SMSC) RefuseBinds(status uint32) {
	s.mu.Lock()
	s.refuse = status
	s.mu.Unlock()
}

// HoldReceipts holds every new receipt, as if no receiver were bound,
// while on; turning it off sends the held ones.
func (s *SMSC) HoldReceipts(on bool) {
	s.mu.Lock()
	s.hold = on
	var flush []*receipt
	if !on {
		flush, s.held = s.held, nil
	}
	s.mu.Unlock()
	for _, r := range flush {
		s.sendReceipt(r)
	}
}

// CloseAll drops every TCP connection now; the listener stays up.
func (s *SMSC) CloseAll() {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// Stop closes the listener and every connection; Restart listens again on the
// same address.
func (s *SMSC) Stop() {
	s.mu.Lock()
	ln := s.ln
	s.ln = nil
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	s.CloseAll()
}

// Restart listens again on the address of Start after Stop.
func (s *SMSC) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("smscsim %s: listen again on %s: %w", s.opts.Name, s.addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop(ln)
	return nil
}

// Close stops the simulator for good and waits for its goroutines.
func (s *SMSC) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.Stop()
	s.cancel()
	s.wg.Wait()
	return nil
}

// formatID writes a message id number.
func formatID(n uint64, f IDFormat) string {
	if f == IDHex {
		return strings.ToUpper(strconv.FormatUint(n, 16))
	}
	return strconv.FormatUint(n, 10)
}

// receiptIDOf is the receipt form of message id, as the message that was
// given it first has it (id itself when none was).
func (s *SMSC) receiptIDOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.received {
		if m.ID == id {
			return m.ReceiptID
		}
	}
	return id
}

// newIDs allocates a message id: the submit_sm_resp form and the receipt form.
func (s *SMSC) newIDs() (resp, rcpt string) {
	s.mu.Lock()
	n := s.nextID
	s.nextID++
	s.mu.Unlock()
	resp = formatID(n, s.opts.IDFormat)
	switch s.opts.ReceiptIDFormat {
	case ReceiptHex:
		rcpt = formatID(n, IDHex)
	case ReceiptDecimal:
		rcpt = formatID(n, IDDecimal)
	case ReceiptPadded:
		rcpt = fmt.Sprintf("%010d", n)
	default:
		rcpt = resp
	}
	return resp, rcpt
}

// bindKind says what a bind may do.
type bindKind int

const (
	bindTX bindKind = iota + 1
	bindRX
	bindTRX
)

func (k bindKind) canSubmit() bool  { return k == bindTX || k == bindTRX }
func (k bindKind) canReceive() bool { return k == bindRX || k == bindTRX }

// conn is one TCP connection. Fields marked (mu) are guarded by SMSC.mu;
// nextSeq and the throttle fields are owned by the reader goroutine except as
// noted.
type conn struct {
	s    *SMSC
	id   uint64
	nc   net.Conn
	out  chan []byte   // PDUs for the writer; a nil entry means "flush and close"
	done chan struct{} // closed once the connection is closed
	once sync.Once

	bound    bool                 // (mu)
	kind     bindKind             // (mu)
	systemID string               // (mu)
	version  byte                 // (mu) the bind's interface_version
	dead     bool                 // (mu) set by close
	seq      uint32               // (mu) last sequence number we used for our requests
	inflight map[uint32]*delivery // (mu) our deliver_sm awaiting deliver_sm_resp

	tokens   float64   // reader: ThrottleReject bucket
	lastFill time.Time // reader
	nextSlot time.Time // reader: ThrottleDelay schedule
}

// delivery is a deliver_sm awaiting its response.
type delivery struct {
	rcpt *receipt    // set for receipts
	resp chan uint32 // set for MO: gets the status (buffered 1)
}

// send queues a PDU for the writer; false if the connection is closed.
func (c *conn) send(b []byte) bool {
	select {
	case c.out <- b:
		return true
	case <-c.done:
		return false
	}
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	bw := bufio.NewWriterSize(c.nc, 32<<10)
	yields := 0
	for {
		var b []byte
		select {
		case b = <-c.out:
		case <-c.done:
			return
		}
		for {
			if b == nil { // unbind answered: flush, then close
				_ = bw.Flush()
				c.close()
				return
			}
			if _, err := bw.Write(b); err != nil {
				c.close()
				return
			}
			select {
			case b = <-c.out:
				continue
			default:
			}
			// The queue is empty: give goroutines that are about to queue
			// a frame (answers released together) a few chances to join
			// this write before flushing. Fewer write syscalls under
			// load, at most a few scheduler yields of delay otherwise.
			if nb, ok := yieldFor(c.out, &yields); ok {
				b = nb
				continue
			}
			break
		}
		yields = 0
		if err := bw.Flush(); err != nil {
			c.close()
			return
		}
	}
}

// close closes the socket once and gives undelivered receipts back to the
// SMSC, to be sent again on the next receiver bind.
func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
		s := c.s
		s.mu.Lock()
		c.dead = true
		delete(s.conns, c)
		s.stats.Conns--
		for seq, d := range c.inflight {
			delete(c.inflight, seq)
			if d.rcpt != nil {
				s.held = append(s.held, d.rcpt)
			}
			if d.resp != nil {
				close(d.resp)
			}
		}
		s.notifyLocked()
		s.mu.Unlock()
		s.logf("conn %d closed", c.id)
	})
}

// nextSeqLocked numbers our next request (SMPP 3.4 3.2: 0x00000001..0x7FFFFFFF).
func (c *conn) nextSeqLocked() uint32 {
	c.seq++
	if c.seq > 0x7FFFFFFF {
		c.seq = 1
	}
	return c.seq
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer c.close()
	r := bufio.NewReaderSize(c.nc, 32<<10)
	for {
		h, full, err := readFrame(r)
		if err != nil {
			var fe *FrameError
			if errors.As(err, &fe) {
				// SMPP 3.4 4.3: invalid command_length -> generic_nack; the
				// stream cannot be trusted after it, so close.
				c.send(headerOnly(cmdGenericNack, uint32(data.ESME_RINVCMDLEN), h.Seq))
				c.send(nil)
				c.s.logf("conn %d: %v", c.id, err)
				<-c.done // the writer closes after flushing the generic_nack
			}
			return
		}
		c.handle(h, full)
	}
}

func (c *conn) isSilent() bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.silent
}

func (c *conn) handle(h header, full []byte) {
	s := c.s
	switch data.CommandIDType(h.ID) {
	case data.BIND_TRANSCEIVER:
		if s.opts.NoTransceiver {
			c.send(headerOnly(cmdGenericNack, uint32(data.ESME_RINVCMDID), h.Seq))
			return
		}
		c.handleBind(h, full)
	case data.BIND_TRANSMITTER, data.BIND_RECEIVER:
		c.handleBind(h, full)
	case data.ENQUIRE_LINK:
		if !c.isSilent() {
			c.send(encode(pdu.NewEnquireLinkResp(), 0, h.Seq, nil))
		}
	case data.UNBIND:
		if !c.isSilent() {
			// Unbound from its unbind_resp on (SMPP 3.4 §4.2), not only
			// once the connection's end is noticed: a bind of the same
			// system_id that follows at once is not one too many
			// (MaxBindsPerSystemID).
			s.mu.Lock()
			c.bound = false
			s.notifyLocked()
			s.mu.Unlock()
			c.send(encode(pdu.NewUnbindResp(), 0, h.Seq, nil))
			c.send(nil)
		}
	case data.SUBMIT_SM:
		c.handleSubmit(h, full)
	case data.CANCEL_SM:
		if s.opts.NoCancel {
			c.send(headerOnly(cmdGenericNack, uint32(data.ESME_RINVCMDID), h.Seq))
			return
		}
		c.handleCancel(h, full)
	case data.DELIVER_SM_RESP, data.DATA_SM_RESP, data.GENERIC_NACK:
		status := h.Status
		if data.CommandIDType(h.ID) == data.GENERIC_NACK && status == 0 {
			status = uint32(data.ESME_RSYSERR)
		}
		s.mu.Lock()
		d := c.inflight[h.Seq]
		delete(c.inflight, h.Seq)
		if d != nil {
			switch {
			case d.rcpt != nil && status == 0:
				s.stats.ReceiptsAcked++
			case d.rcpt != nil:
				s.stats.ReceiptsNack++
				if s.opts.ReceiptRetry > 0 {
					rc := d.rcpt
					s.after(s.opts.ReceiptRetry, func() { s.sendReceipt(rc) })
				}
			case status == 0:
				s.stats.MOAcked++
			}
			if d.resp != nil {
				d.resp <- status
			}
			s.notifyLocked()
		}
		s.mu.Unlock()
	case data.ENQUIRE_LINK_RESP, data.UNBIND_RESP:
		// nothing awaits these
	default:
		if h.ID&0x80000000 == 0 && !c.isSilent() {
			// SMPP 3.4 4.3: unknown or unsupported command -> generic_nack.
			c.send(headerOnly(cmdGenericNack, uint32(data.ESME_RINVCMDID), h.Seq))
		}
	}
}

func (c *conn) handleBind(h header, full []byte) {
	s := c.s
	p, err := pdu.Parse(bytes.NewReader(full))
	req, ok := p.(*pdu.BindRequest)
	respID := h.ID | 0x80000000
	if err != nil || !ok {
		c.send(headerOnly(respID, uint32(data.ESME_RSYSERR), h.Seq))
		return
	}
	s.mu.Lock()
	var status data.CommandStatusType
	switch {
	case s.silent:
		s.mu.Unlock()
		return
	case c.bound:
		status = data.ESME_RALYBND
	case s.refuse != 0:
		status = data.CommandStatusType(s.refuse)
	case s.opts.SystemID != "" && req.SystemID != s.opts.SystemID:
		status = data.ESME_RINVSYSID
	case s.opts.Password != "" && req.Password != s.opts.Password:
		status = data.ESME_RINVPASWD
	case s.opts.MaxBindsPerSystemID > 0 && s.boundAsLocked(req.SystemID) >= s.opts.MaxBindsPerSystemID:
		status = data.ESME_RALYBND
	}
	if status != 0 {
		s.stats.BindsRefused++
		s.notifyLocked()
		s.mu.Unlock()
		s.logf("conn %d: bind as %q refused: %s", c.id, req.SystemID, status)
		c.send(headerOnly(respID, uint32(status), h.Seq))
		return
	}
	c.bound = true
	c.systemID = req.SystemID
	c.version = byte(req.InterfaceVersion)
	switch req.BindingType {
	case pdu.Transmitter:
		c.kind = bindTX
	case pdu.Receiver:
		c.kind = bindRX
	default:
		c.kind = bindTRX
	}
	s.stats.Binds++
	s.notifyLocked()
	var flush []*receipt
	if c.kind.canReceive() && !s.hold {
		keep := s.held[:0]
		for _, r := range s.held {
			if r.systemID == c.systemID {
				flush = append(flush, r)
			} else {
				keep = append(keep, r)
			}
		}
		s.held = keep
	}
	s.mu.Unlock()
	s.logf("conn %d: bound as %q (%s)", c.id, req.SystemID, data.CommandIDType(h.ID))
	resp := pdu.NewBindResp(*req)
	resp.SystemID = s.opts.Name
	c.send(encode(resp, 0, h.Seq, nil))
	for _, r := range flush {
		s.sendReceipt(r)
	}
}

// boundAsLocked counts the bound connections of systemID; s.mu is held.
func (s *SMSC) boundAsLocked(systemID string) int {
	n := 0
	for c := range s.conns {
		if c.bound && c.systemID == systemID {
			n++
		}
	}
	return n
}

// throttle applies MaxTPSPerBind: it says whether to answer ESME_RTHROTTLED
// (reject mode) or how long to hold the answer (delay mode).
func (c *conn) throttle(now time.Time) (reject bool, wait time.Duration) {
	rate := c.s.opts.MaxTPSPerBind
	if rate <= 0 {
		return false, 0
	}
	if c.s.opts.Throttle == ThrottleDelay {
		slot := c.nextSlot
		if slot.Before(now) {
			slot = now
		}
		c.nextSlot = slot.Add(time.Second / time.Duration(rate))
		return false, slot.Sub(now)
	}
	if c.lastFill.IsZero() {
		c.tokens = float64(rate)
	} else {
		c.tokens += now.Sub(c.lastFill).Seconds() * float64(rate)
		if c.tokens > float64(rate) {
			c.tokens = float64(rate)
		}
	}
	c.lastFill = now
	if c.tokens < 1 {
		return true, 0
	}
	c.tokens--
	return false, 0
}

func (c *conn) handleSubmit(h header, full []byte) {
	s := c.s
	respID := cmdSubmitSMResp
	s.mu.Lock()
	bound, kind, systemID, version, silent, behaviour := c.bound, c.kind, c.systemID, c.version, s.silent, s.behaviour
	muted := s.mute[c.id]
	s.mu.Unlock()
	if !bound || !kind.canSubmit() {
		if !silent && !muted {
			c.send(headerOnly(respID, uint32(data.ESME_RINVBNDSTS), h.Seq))
		}
		return
	}
	m, err := parseSubmitBody(full[headerLen:])
	if err != nil {
		s.logf("conn %d: %v", c.id, err)
		if !silent && !muted {
			c.send(headerOnly(respID, uint32(data.ESME_RINVCMDLEN), h.Seq))
		}
		return
	}
	now := time.Now()
	m.Raw = full[headerLen:]
	m.Seq = h.Seq
	m.SystemID = systemID
	m.InterfaceVersion = version
	m.Conn = c.id
	m.At = now

	key := m.Source + "\x00" + m.Dest + "\x00" + string(m.ShortMessage)
	s.mu.Lock()
	s.attempts[key]++
	m.Attempt = s.attempts[key]
	s.mu.Unlock()

	var reply Reply
	if behaviour != nil {
		reply = behaviour(m, m.Attempt)
	}
	if silent || muted {
		reply.Silent = true
	}
	if s.opts.SMPP33 && len(m.TLVs) > 0 {
		s.logf("conn %d: submit_sm with optional parameters refused (SMPP 3.3)", c.id)
		reply = Reply{Status: uint32(data.ESME_RINVCMDLEN), Silent: reply.Silent}
	}
	throttled := false
	var wait time.Duration
	if !reply.Silent && reply.Status == 0 {
		throttled, wait = c.throttle(now)
		if throttled {
			reply.Status = uint32(data.ESME_RTHROTTLED)
		}
	}
	if reply.Status == 0 && !reply.Silent && !reply.NoID {
		if reply.ReuseID != "" {
			m.ID, m.ReceiptID = reply.ReuseID, s.receiptIDOf(reply.ReuseID)
		} else {
			m.ID, m.ReceiptID = s.newIDs()
		}
	}
	m.Status = reply.Status
	m.Silent = reply.Silent

	s.mu.Lock()
	s.received = append(s.received, m)
	if lim := s.opts.RecordLimit; lim > 0 && len(s.received) >= 2*lim {
		s.received = append([]Message(nil), s.received[len(s.received)-lim:]...)
	}
	s.stats.Submits++
	if throttled {
		s.stats.Throttled++
	}
	s.notifyLocked()
	s.mu.Unlock()

	if reply.Silent {
		return
	}
	var resp []byte
	if reply.Status != 0 {
		resp = headerOnly(respID, reply.Status, h.Seq)
	} else {
		r := pdu.NewSubmitSMResp().(*pdu.SubmitSMResp)
		r.MessageID = m.ID
		resp = encode(r, 0, h.Seq, nil)
	}
	stat := reply.ReceiptStat
	if stat == "" {
		stat = "DELIVRD"
	}
	// SMPP 3.4 5.2.17 registered_delivery bits 0-1: 01 receipt on success or
	// failure, 10 receipt on failure only.
	wantReceipt := false
	switch m.RegisteredDelivery & 0x03 {
	case 1:
		wantReceipt = true
	case 2:
		wantReceipt = stat != "DELIVRD"
	}
	wantReceipt = wantReceipt && reply.Status == 0 && !reply.NoReceipt && !reply.NoID
	if wantReceipt && reply.ReceiptFirst {
		s.sendReceipt(&receipt{systemID: systemID, msg: m, stat: stat, errCode: reply.ReceiptErr, submitted: now})
		s.after(s.opts.ResponseDelay+reply.Delay+wait, func() { c.send(resp) })
		return
	}
	s.after(s.opts.ResponseDelay+reply.Delay+wait, func() {
		if !c.send(resp) || !wantReceipt {
			return
		}
		rc := &receipt{systemID: systemID, msg: m, stat: stat, errCode: reply.ReceiptErr, submitted: now}
		s.mu.Lock()
		if s.pending == nil {
			s.pending = map[string]*receipt{}
		}
		s.pending[m.ID] = rc
		s.mu.Unlock()
		s.after(s.opts.ReceiptDelay, func() { s.sendReceipt(rc) })
	})
}

// yieldFor yields the processor while fewer than 4 yields were spent on the
// current write batch and returns a frame queued meanwhile (ok), which may
// be the nil end-of-session marker.
func yieldFor(out <-chan []byte, yields *int) (b []byte, ok bool) {
	for *yields < 4 {
		*yields++
		runtime.Gosched()
		select {
		case b = <-out:
			return b, true
		default:
		}
	}
	return nil, false
}
