// Package platform is an SMPP 3.4 ESME client playing the enterprise SMS
// platform, for end-to-end tests, `spareline demo` and benchmarks.
//
// It is a small client of its own on gosmpp's pdu package, not gosmpp's
// Session: a test peer must see every PDU, match each submit_sm_resp to its
// request by sequence number, and report a missing answer as such, which the
// Session makes hard (see STYLE.md pitfalls 5-8).
//
// Policy:
//   - Dial connects and binds (transceiver, transmitter or receiver) under the
//     caller's context, and fails with *BindError on a non-zero bind status.
//   - Submit registers the request under its sequence number before writing it
//     (so a fast answer cannot be missed), keeps at most Options.Window
//     requests outstanding, and waits for the matching submit_sm_resp, for
//     Options.ResponseTimeout (a *TimeoutError), for the connection to drop
//     (ErrConnClosed) or for ctx. A response of any command_status is a result,
//     not an error.
//   - Every deliver_sm is recorded, queued on Receipts() or MOs() (never
//     blocking the reader; the queues are unbounded) and answered with
//     deliver_sm_resp (status from SetDeliverStatus, default 0).
//   - enquire_link from the peer is answered; Options.EnquireLink sends ours.
//   - Close unbinds (SMPP 3.4 4.2), waits briefly for unbind_resp, and closes.
//
// Concurrency: one reader goroutine and one writer goroutine per client;
// shared state under Client.mu.
package platform

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// BindType is the bind mode.
type BindType string

// Bind modes (SMPP 3.4 4.1).
const (
	BindTRX BindType = "trx"
	BindTX  BindType = "tx"
	BindRX  BindType = "rx"
)

// Options configure a client; the zero value binds as a transceiver.
type Options struct {
	BindType        BindType      // default BindTRX
	Window          int           // submit_sm outstanding at once; default 64
	EnquireLink     time.Duration // interval of our enquire_link; 0 = none
	ResponseTimeout time.Duration // per request; default 10s
	SystemType      string
	// InterfaceVersion of the bind (SMPP 3.4 §5.2.4); 0 = 0x34. 0x33 binds
	// as an SMPP 3.3 ESME.
	InterfaceVersion byte
	// NoHistory keeps no History of submits (for long load runs, whose
	// memory would otherwise grow with every message).
	NoHistory bool
	// Logf, when set, gets one line per notable event (never the password).
	Logf func(format string, args ...any)
}

// Submit is one submit_sm to send.
type Submit struct {
	Src, Dest string
	// TON/NPI of the addresses (SMPP 3.4 5.2.5, 5.2.6); zero is "unknown".
	SrcTON, SrcNPI, DestTON, DestNPI byte
	// Text is sent as GSM 7-bit (data_coding 0, one septet per octet) when
	// every character is in the GSM default alphabet, else as UCS2 (8).
	Text string
	// Raw, when set, is sent as short_message as is, with DataCoding.
	Raw                []byte
	DataCoding         byte
	ESMClass           byte
	RegisteredDelivery byte
	Priority           byte
	TLVs               []TLV
}

// SubmitResult is the answer to one submit_sm.
type SubmitResult struct {
	Seq       uint32
	Status    uint32 // command_status of submit_sm_resp
	MessageID string // "" when Status is not 0
	Err       error  // Bulk only: why there is no answer
	Sent      time.Time
	Answered  time.Time
}

// SubmitRecord is one submit in the history: what was sent and what came back.
type SubmitRecord struct {
	Submit Submit
	Result SubmitResult
	Err    error // no answer: timeout, connection closed, ctx
}

// History is everything the client sent and received, for checks.
type History struct {
	Submits  []SubmitRecord
	Receipts []Receipt
	MOs      []MO
}

// Errors.
var (
	ErrConnClosed = errors.New("platform: connection closed before the response")
	ErrClosed     = errors.New("platform: client closed")
)

// BindError is a bind answered with a non-zero command_status.
type BindError struct {
	SystemID string
	Status   uint32
}

func (e *BindError) Error() string {
	return fmt.Sprintf("platform: bind as %q refused: command_status 0x%08X (%s)", e.SystemID, e.Status, data.CommandStatusType(e.Status))
}

// TimeoutError is a request left unanswered for ResponseTimeout.
type TimeoutError struct {
	Command string
	Seq     uint32
	After   time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("platform: no response to %s seq %d within %s", e.Command, e.Seq, e.After)
}

// SubmitError is a Submit that cannot be encoded.
type SubmitError struct{ Reason string }

func (e *SubmitError) Error() string { return "platform: cannot encode submit_sm: " + e.Reason }

type response struct {
	h    header
	full []byte
}

// Client is a bound SMPP session.
type Client struct {
	opts     Options
	systemID string
	nc       net.Conn
	out      chan []byte   // to the writer; nil means flush and close
	br       *bufio.Reader // the reader goroutine's, after bind
	done     chan struct{} // closed when the connection is gone
	stop     chan struct{} // closed by Close: ends the Receipts and MOs pumps
	once     sync.Once
	stopOnce sync.Once
	window   chan struct{} // semaphore of Options.Window
	wg       sync.WaitGroup

	receipts *queue[Receipt]
	mos      *queue[MO]

	mu            sync.Mutex // guards the fields below
	seq           uint32
	pending       map[uint32]chan response
	history       History
	deliverStatus uint32
	closeErr      error
	concatRef     byte
}

// Dial connects to addr and binds.
func Dial(ctx context.Context, addr, systemID, password string, opts Options) (*Client, error) {
	if opts.BindType == "" {
		opts.BindType = BindTRX
	}
	if opts.Window <= 0 {
		opts.Window = 64
	}
	if opts.ResponseTimeout <= 0 {
		opts.ResponseTimeout = 10 * time.Second
	}
	var bt pdu.BindingType
	switch opts.BindType {
	case BindTRX:
		bt = pdu.Transceiver
	case BindTX:
		bt = pdu.Transmitter
	case BindRX:
		bt = pdu.Receiver
	default:
		return nil, fmt.Errorf("platform: Options.BindType %q: want trx, tx or rx", opts.BindType)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("platform: dial %s: %w", addr, err)
	}
	c := &Client{
		opts:     opts,
		systemID: systemID,
		nc:       nc,
		out:      make(chan []byte, 256),
		done:     make(chan struct{}),
		stop:     make(chan struct{}),
		window:   make(chan struct{}, opts.Window),
		pending:  make(map[uint32]chan response),
	}
	// The queues outlive the connection so that receipts received before a
	// drop can still be read; Close ends them.
	c.receipts = newQueue[Receipt](c.stop)
	c.mos = newQueue[MO](c.stop)
	if err := c.bind(ctx, bt, password); err != nil {
		nc.Close()
		return nil, err
	}
	c.wg.Add(4)
	go c.readLoop()
	go c.writeLoop()
	go func() { defer c.wg.Done(); c.receipts.pump() }()
	go func() { defer c.wg.Done(); c.mos.pump() }()
	if opts.EnquireLink > 0 {
		c.wg.Add(1)
		go c.enquireLoop()
	}
	return c, nil
}

// bind writes the bind request and reads its response before any goroutine
// starts, under ctx's deadline (or ResponseTimeout).
func (c *Client) bind(ctx context.Context, bt pdu.BindingType, password string) error {
	req := pdu.NewBindRequest(bt)
	req.SystemID = c.systemID
	req.Password = password
	req.SystemType = c.opts.SystemType
	if c.opts.InterfaceVersion != 0 {
		req.InterfaceVersion = c.opts.InterfaceVersion
	}
	seq := c.nextSeq()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.opts.ResponseTimeout)
	}
	_ = c.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Now()) })
	defer stop()
	defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	if _, err := c.nc.Write(encode(req, 0, seq, nil)); err != nil {
		return fmt.Errorf("platform: write bind: %w", err)
	}
	r := bufio.NewReaderSize(c.nc, 32<<10)
	for {
		h, _, err := readFrame(r)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("platform: bind: %w", ctx.Err())
			}
			return fmt.Errorf("platform: read bind response: %w", err)
		}
		if h.Seq != seq || h.ID&0x80000000 == 0 {
			continue // nothing else is expected before the bind response
		}
		if h.Status != 0 {
			return &BindError{SystemID: c.systemID, Status: h.Status}
		}
		c.br = r // it may already hold what the peer sent after the bind response
		return nil
	}
}

func (c *Client) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf("platform %s: "+format, append([]any{c.systemID}, args...)...)
	}
}

func (c *Client) nextSeq() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	if c.seq > 0x7FFFFFFF { // SMPP 3.4 3.2: 0x00000001..0x7FFFFFFF
		c.seq = 1
	}
	return c.seq
}

// Done is closed when the connection is gone.
func (c *Client) Done() <-chan struct{} { return c.done }

// Receipts delivers every receipt received, in order; closed after Close.
func (c *Client) Receipts() <-chan Receipt { return c.receipts.out }

// MOs delivers every mobile-originated message received; closed after Close.
func (c *Client) MOs() <-chan MO { return c.mos.out }

// SetDeliverStatus sets the command_status of our deliver_sm_resp (0 = OK;
// e.g. StatusXTAppn to make the peer retry).
func (c *Client) SetDeliverStatus(status uint32) {
	c.mu.Lock()
	c.deliverStatus = status
	c.mu.Unlock()
}

// History returns a copy of what was sent and received.
func (c *Client) History() History {
	c.mu.Lock()
	defer c.mu.Unlock()
	return History{
		Submits:  append([]SubmitRecord(nil), c.history.Submits...),
		Receipts: append([]Receipt(nil), c.history.Receipts...),
		MOs:      append([]MO(nil), c.history.MOs...),
	}
}

func (c *Client) send(ctx context.Context, b []byte) error {
	select {
	case c.out <- b:
		return nil
	case <-c.done:
		return ErrConnClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) shutdown(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.closeErr = err
		c.mu.Unlock()
		close(c.done)
		c.nc.Close()
		c.logf("connection closed: %v", err)
	})
}

func (c *Client) writeLoop() {
	defer c.wg.Done()
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
			if b == nil {
				_ = bw.Flush()
				c.shutdown(ErrClosed)
				return
			}
			if _, err := bw.Write(b); err != nil {
				c.shutdown(err)
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
			c.shutdown(err)
			return
		}
	}
}

func (c *Client) readLoop() {
	defer c.wg.Done()
	for {
		h, full, err := readFrame(c.br)
		if err != nil {
			c.shutdown(err)
			return
		}
		switch {
		case h.ID == cmdDeliverSM:
			c.handleDeliver(h, full)
		case h.ID == cmdEnquireLink:
			_ = c.send(context.Background(), headerOnly(cmdEnquireLinkResp, 0, h.Seq))
		case h.ID == cmdUnbind:
			_ = c.send(context.Background(), headerOnly(cmdUnbindResp, 0, h.Seq))
			_ = c.send(context.Background(), nil)
		case h.ID&0x80000000 != 0: // a response, generic_nack included
			c.mu.Lock()
			ch := c.pending[h.Seq]
			delete(c.pending, h.Seq)
			c.mu.Unlock()
			if ch != nil {
				ch <- response{h: h, full: full}
			} else {
				c.logf("response 0x%08X seq %d matches no request", h.ID, h.Seq)
			}
		default:
			// SMPP 3.4 4.3: a request we do not handle -> generic_nack
			_ = c.send(context.Background(), headerOnly(cmdGenericNack, StatusInvCmdID, h.Seq))
		}
	}
}

func (c *Client) handleDeliver(h header, full []byte) {
	now := time.Now()
	d, err := ParseDeliverBody(full[headerLen:])
	c.mu.Lock()
	status := c.deliverStatus
	c.mu.Unlock()
	if err != nil {
		c.logf("%v", err)
		_ = c.send(context.Background(), headerOnly(cmdDeliverSMResp, StatusSysErr, h.Seq))
		return
	}
	if d.IsReceipt() {
		rc := Receipt{Src: d.Source, Dest: d.Dest, Seq: h.Seq, Status: status, Deliver: d, Raw: full, At: now}
		text := string(d.ShortMessage)
		if len(d.ShortMessage) == 0 {
			if p, ok := d.TLV(TagMessagePayload); ok {
				text = string(p)
			}
		}
		rc.ReceiptFields, _ = ParseReceiptText(text) // an unreadable text leaves the fields empty
		if v, ok := d.TLV(TagReceiptedMessageID); ok {
			rc.TLVID = string(bytes.TrimRight(v, "\x00"))
		}
		if v, ok := d.TLV(TagMessageState); ok && len(v) == 1 {
			rc.State = v[0]
		}
		if rc.ID == "" {
			rc.ID = rc.TLVID
		}
		c.mu.Lock()
		c.history.Receipts = append(c.history.Receipts, rc)
		c.mu.Unlock()
		if status == 0 {
			c.receipts.push(rc)
		}
	} else {
		mo := MO{Src: d.Source, Dest: d.Dest, DataCoding: d.DataCoding, Seq: h.Seq, Status: status, Deliver: d, Raw: full, At: now}
		ud := d.ShortMessage
		if d.ESMClass&0x40 != 0 && len(ud) > 0 && int(ud[0])+1 <= len(ud) {
			ud = ud[int(ud[0])+1:]
		}
		if enc := data.FromDataCoding(d.DataCoding); enc != nil {
			mo.Text, _ = enc.Decode(ud)
		}
		c.mu.Lock()
		c.history.MOs = append(c.history.MOs, mo)
		c.mu.Unlock()
		if status == 0 {
			c.mos.push(mo)
		}
	}
	// Answer after recording and queueing (STYLE.md 4: ack after the state is kept).
	_ = c.send(context.Background(), headerOnly(cmdDeliverSMResp, status, h.Seq))
}

// request sends a PDU built for a fresh sequence number and waits for the
// response with the same number. The pending entry exists before the write.
func (c *Client) request(ctx context.Context, name string, build func(seq uint32) []byte) (response, uint32, error) {
	seq := c.nextSeq()
	ch := make(chan response, 1)
	c.mu.Lock()
	c.pending[seq] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, seq)
		c.mu.Unlock()
	}
	if err := c.send(ctx, build(seq)); err != nil {
		forget()
		return response{}, seq, err
	}
	t := time.NewTimer(c.opts.ResponseTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, seq, nil
	case <-c.done:
		forget()
		// the response may have raced the close
		select {
		case r := <-ch:
			return r, seq, nil
		default:
		}
		return response{}, seq, ErrConnClosed
	case <-t.C:
		forget()
		return response{}, seq, &TimeoutError{Command: name, Seq: seq, After: c.opts.ResponseTimeout}
	case <-ctx.Done():
		forget()
		return response{}, seq, ctx.Err()
	}
}

// rawEncoding gives gosmpp's ShortMessage a data_coding for octets we encoded.
func rawEncoding(dc byte) data.Encoding { return data.NewCustomEncoding(dc, nil) }

// buildSubmit makes the submit_sm body (SMPP 3.4 4.4.1) for sm.
func buildSubmit(sm Submit) (*pdu.SubmitSM, error) {
	p := pdu.NewSubmitSM().(*pdu.SubmitSM)
	var err error
	if p.SourceAddr, err = pdu.NewAddressWithTonNpiAddr(sm.SrcTON, sm.SrcNPI, sm.Src); err != nil {
		return nil, &SubmitError{Reason: "source_addr: " + err.Error()}
	}
	if p.DestAddr, err = pdu.NewAddressWithTonNpiAddr(sm.DestTON, sm.DestNPI, sm.Dest); err != nil {
		return nil, &SubmitError{Reason: "destination_addr: " + err.Error()}
	}
	p.EsmClass = sm.ESMClass
	p.RegisteredDelivery = sm.RegisteredDelivery
	p.PriorityFlag = sm.Priority
	ud, dc := sm.Raw, sm.DataCoding
	if sm.Raw == nil {
		ud, dc, err = EncodeText(sm.Text)
		if err != nil {
			return nil, &SubmitError{Reason: err.Error()}
		}
	}
	if len(ud) > 254 { // sm_length is one octet; SMPP 3.4 5.2.21 caps it at 254
		return nil, &SubmitError{Reason: fmt.Sprintf("short_message is %d octets, more than 254; use SubmitLong or a message_payload TLV", len(ud))}
	}
	if err := p.Message.SetMessageDataWithEncoding(ud, rawEncoding(dc)); err != nil {
		return nil, &SubmitError{Reason: err.Error()}
	}
	return p, nil
}

// EncodeText encodes text as GSM 7-bit unpacked (data_coding 0) when it
// can, else UCS2 (data_coding 8).
func EncodeText(text string) ([]byte, byte, error) {
	if len(data.ValidateGSM7String(text)) == 0 {
		b, err := data.GSM7BIT.Encode(text)
		return b, 0, err
	}
	b, err := data.UCS2.Encode(text)
	return b, 8, err
}

// Submit sends one submit_sm and waits for its submit_sm_resp. A response with
// any command_status returns a nil error; an error means there was no
// response (*TimeoutError, ErrConnClosed, ctx) or sm is invalid (*SubmitError).
func (c *Client) Submit(ctx context.Context, sm Submit) (SubmitResult, error) {
	p, err := buildSubmit(sm)
	if err != nil {
		return SubmitResult{}, err
	}
	select {
	case c.window <- struct{}{}:
	case <-ctx.Done():
		return SubmitResult{}, ctx.Err()
	case <-c.done:
		return SubmitResult{}, ErrConnClosed
	}
	defer func() { <-c.window }()
	res := SubmitResult{Sent: time.Now()}
	r, seq, err := c.request(ctx, "submit_sm", func(seq uint32) []byte { return encode(p, 0, seq, sm.TLVs) })
	res.Seq = seq
	if err == nil {
		res.Answered = time.Now()
		res.Status = r.h.Status
		if r.h.ID != cmdSubmitSMResp && r.h.Status == 0 {
			res.Status = StatusSysErr // generic_nack with status 0: still a refusal
		}
		if res.Status == 0 {
			res.MessageID, _, _ = cstring(r.full[headerLen:])
		}
	}
	if !c.opts.NoHistory {
		c.mu.Lock()
		c.history.Submits = append(c.history.Submits, SubmitRecord{Submit: sm, Result: res, Err: err})
		c.mu.Unlock()
	}
	return res, err
}

// SubmitLong sends sm.Text as one submit_sm when it fits (160 GSM 7-bit or 70
// UCS2 characters), else as concatenated parts: each short_message starts with
// a UDH with the 8-bit reference concatenation IE (3GPP TS 23.040 9.2.3.24.1)
// and esm_class has UDHI (0x40, SMPP 3.4 5.2.12). Parts go out in order; it
// stops at the first part without an answer.
func (c *Client) SubmitLong(ctx context.Context, sm Submit) ([]SubmitResult, error) {
	parts, dc, err := SplitText(sm.Text)
	if err != nil {
		return nil, &SubmitError{Reason: err.Error()}
	}
	if len(parts) == 1 {
		r, err := c.Submit(ctx, sm)
		return []SubmitResult{r}, err
	}
	if len(parts) > 255 {
		return nil, &SubmitError{Reason: fmt.Sprintf("text needs %d parts, more than 255", len(parts))}
	}
	c.mu.Lock()
	c.concatRef++
	ref := c.concatRef
	c.mu.Unlock()
	var out []SubmitResult
	for i, part := range parts {
		one := sm
		one.Text = ""
		one.DataCoding = dc
		one.ESMClass = sm.ESMClass | 0x40
		one.Raw = append([]byte{0x05, 0x00, 0x03, ref, byte(len(parts)), byte(i + 1)}, part...)
		r, err := c.Submit(ctx, one)
		out = append(out, r)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// SplitText encodes text (GSM 7-bit unpacked when possible, else UCS2) into
// one part, or into parts of at most 153 septets / 134 octets that leave room
// for a 6-octet concatenation UDH; a character (an escape pair, a surrogate
// pair) is never split.
func SplitText(text string) ([][]byte, byte, error) {
	whole, dc, err := EncodeText(text)
	if err != nil {
		return nil, 0, err
	}
	// one message holds 160 GSM 7-bit characters or 140 octets of UCS2
	if (dc == 0 && len(whole) <= 160) || (dc == 8 && len(whole) <= 140) {
		return [][]byte{whole}, dc, nil
	}
	per := 134
	if dc == 0 {
		per = 153
	}
	var parts [][]byte
	var cur []byte
	for _, r := range text {
		var enc []byte
		if dc == 0 {
			enc, err = data.GSM7BIT.Encode(string(r))
		} else {
			enc, err = data.UCS2.Encode(string(r))
		}
		if err != nil {
			return nil, 0, err
		}
		if len(cur)+len(enc) > per {
			parts = append(parts, cur)
			cur = nil
		}
		cur = append(cur, enc...)
	}
	if len(cur) > 0 {
		parts = append(parts, cur)
	}
	return parts, dc, nil
}

// Bulk sends msgs keeping up to window submits outstanding (capped by
// Options.Window) and returns one result per message, in the order of msgs;
// a message without an answer has Err set.
func (c *Client) Bulk(ctx context.Context, msgs []Submit, window int) []SubmitResult {
	if window <= 0 {
		window = 1
	}
	if window > len(msgs) {
		window = len(msgs)
	}
	out := make([]SubmitResult, len(msgs))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < window; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := c.Submit(ctx, msgs[i])
				r.Err = err
				out[i] = r
			}
		}()
	}
	for i := range msgs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// EnquireLink sends enquire_link (SMPP 3.4 4.11) and waits for its response.
func (c *Client) EnquireLink(ctx context.Context) error {
	_, _, err := c.request(ctx, "enquire_link", func(seq uint32) []byte { return headerOnly(cmdEnquireLink, 0, seq) })
	return err
}

func (c *Client) enquireLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.EnquireLink)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.ResponseTimeout)
			err := c.EnquireLink(ctx)
			cancel()
			var te *TimeoutError
			if errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded) {
				c.shutdown(err)
				return
			}
		case <-c.done:
			return
		}
	}
}

// Unbind sends unbind and waits for unbind_resp; the connection then closes.
func (c *Client) Unbind(ctx context.Context) error {
	_, _, err := c.request(ctx, "unbind", func(seq uint32) []byte { return headerOnly(cmdUnbind, 0, seq) })
	c.shutdown(ErrClosed)
	return err
}

// Close unbinds (waiting up to a second for unbind_resp), closes the
// connection, waits for the client's goroutines and closes Receipts and MOs.
func (c *Client) Close() error {
	select {
	case <-c.done:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.Unbind(ctx)
		cancel()
	}
	c.shutdown(ErrClosed)
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
	return nil
}

// Err says why the connection ended (nil while it is up).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// queue is an unbounded FIFO feeding a channel, so the reader never blocks on
// a consumer that is not reading.
type queue[T any] struct {
	out  chan T
	done <-chan struct{}
	kick chan struct{} // capacity 1

	mu    sync.Mutex
	items []T
}

func newQueue[T any](done <-chan struct{}) *queue[T] {
	return &queue[T]{out: make(chan T), done: done, kick: make(chan struct{}, 1)}
}

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// pump hands items to out in order until done, then closes out.
func (q *queue[T]) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			q.mu.Unlock()
			select {
			case <-q.kick:
				continue
			case <-q.done:
				return
			}
		}
		v := q.items[0]
		var zero T
		q.items[0] = zero
		q.items = q.items[1:]
		q.mu.Unlock()
		select {
		case q.out <- v:
		case <-q.done:
			return
		}
	}
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
