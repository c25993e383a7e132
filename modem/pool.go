package modem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spareline/spareline/modem/at"
	"github.com/spareline/spareline/modem/sms"
	"go.bug.st/serial"
	"go.uber.org/zap"
)

// Config is one modem of the pool.
type Config struct {
	Name         string // label in logs, metrics and status; default the device
	Device       string
	Baud         int
	PIN          string
	MaxPerMinute int // SMS parts per sliding minute; 0 = unlimited
	// SendTimeout bounds the wait for the answer to AT+CMGS, per SMS part;
	// 0 = PoolOptions.SendTimeout.
	SendTimeout time.Duration
}

// Opener opens the port of a modem.
type Opener func(ctx context.Context, c Config) (io.ReadWriteCloser, error)

// SerialOpener opens c.Device as a serial port, 8N1 at c.Baud (default 115200).
func SerialOpener(ctx context.Context, c Config) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	baud := c.Baud
	if baud <= 0 {
		baud = 115200
	}
	p, err := serial.Open(c.Device, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("modem: open %s: %w", c.Device, err)
	}
	return p, nil
}

// PoolOptions tune the pool. Zero values take the defaults.
type PoolOptions struct {
	Logger          *zap.Logger
	CommandTimeout  time.Duration // default 10s
	SendTimeout     time.Duration // per SMS part, default 60s
	ReprobeInterval time.Duration // health check period (and re-probe of a modem that is out), default 30s
	ReopenMin       time.Duration // first delay before reopening a vanished device, default 1s
	ReopenMax       time.Duration // backoff cap, default 30s
	MaxErrors       int           // consecutive temporary send errors that take a modem out, default 3
	MaxAttempts     int           // sends of one message before a temporary error is returned, default 3
	Trace           bool          // AT transcript at debug level
	// SendHoldMin and SendHoldMax bound the hold of a modem taken out for
	// send errors (see the package doc): out for SendHoldMin (default 1m)
	// after the first take-out, doubling at each failed trial send up to
	// SendHoldMax (default 30m).
	SendHoldMin time.Duration
	SendHoldMax time.Duration
	// ReassemblyTimeout is how long the parts of an incomplete concatenated
	// incoming message wait for the others, counted from the first part
	// this process read; then what arrived is handed over. Default
	// sms.DefaultMaxAge (1h).
	ReassemblyTimeout time.Duration
}

// Sent is the outcome of a successful Send.
type Sent struct {
	Modem string
	Refs  []int // the TP-MR of each part
}

// SendError is a failed Send.
type SendError struct {
	Permanent   bool   // sending again cannot succeed
	NumberError bool   // the destination was refused (implies Permanent)
	Code        int    // the +CMS ERROR code, 0 if none
	Err         error  // the last error
	Modem       string // the modem of the last attempt, "" if none was made
	// InDoubt: the last attempt was cut short (its caller's context ended,
	// or the pool stopped) after an AT+CMGS of it had begun: the message,
	// or some of its parts, may have gone out. Sent again, it may be a
	// duplicate at the handset.
	InDoubt bool
	// subscription: an error of the SIM's subscription (at.CMSError
	// Subscription: no credit, barred), which no health probe can
	// disprove: it holds the modem out until a trial send succeeds.
	subscription bool
}

// mayBeTheModems reports whether a permanent error may be the modem's own
// rather than the message's: any but the number errors, which say the
// destination is wrong (unassigned, unknown subscriber), save RP-cause 21
// (short message transfer rejected), which a network also gives every
// message of a SIM it barred. Such an error is tried on the other modems
// and counts toward taking the modem out; a number error does neither (a
// bulk job with dead numbers would take every modem out).
func (e *SendError) mayBeTheModems() bool {
	return e.Permanent && (!e.NumberError || e.Code == 21)
}

func (e *SendError) Error() string {
	kind := "temporary"
	if e.Permanent {
		kind = "permanent"
	}
	return fmt.Sprintf("modem pool: %s send failure: %v", kind, e.Err)
}

// Unwrap returns the last error.
func (e *SendError) Unwrap() error { return e.Err }

// Report is a status report mapped back to the caller's id, by the modem,
// TP-MR and recipient (TP-RA) of the send it reports on.
type Report struct {
	ID string // the id given to Send; "" when the report matched no recent send
	// Orphan: the report of a part of a message given up after it went
	// out (the message is sent again whole): its id was taken off on
	// purpose, and it is no report of any message's send.
	Orphan bool
	Part   int // 1-based part the report is about
	Parts  int
	Modem  string
	Status *sms.StatusReport
}

// Incoming is a message received by a modem (parts reassembled).
type Incoming struct {
	Modem string
	From  string
	Text  string
	Data  []byte    // an 8-bit (binary) message's content, parts joined; Text is "" then
	UDH   []byte    // a one-part binary message's user data header (application ports, say), without its length
	Time  time.Time // the SC time stamp
}

// State of a modem in the pool.
type State string

// States.
const (
	StateOpening State = "opening"
	StateUp      State = "up"
	StateDown    State = "down"
	// StateClosing: a reload removed (or changed) the modem; it takes no
	// new message and is closed once its send in progress ends.
	StateClosing State = "closing"
)

// ModemStatus is one row of Status().
type ModemStatus struct {
	Name           string    `json:"name"`
	Device         string    `json:"device"`
	State          State     `json:"state"`
	SignalDBm      int       `json:"signal_dbm,omitempty"` // 0 (left out) unknown
	Registration   int       `json:"registration"`         // +CREG stat
	SentLastMinute int       `json:"sent_last_minute"`     // SMS parts
	LastError      string    `json:"last_error,omitempty"`
	LastChange     time.Time `json:"last_change"`
	// Trial: down (held out after send errors) and its hold is over: the
	// next message is sent on it, and tells whether it can send again.
	Trial bool `json:"trial,omitempty"`
}

// ErrPoolStopped is returned by Send when Run has ended.
var ErrPoolStopped = errors.New("modem pool: stopped")

// ErrWithdrawn is returned by SendUnless when the caller gave the message up
// while it waited for a modem: no modem is sending it, and every attempt
// made (if any) failed.
var ErrWithdrawn = errors.New("modem pool: withdrawn while waiting for a modem")

// Pool is a set of modems behind one scheduler (see the package doc).
//
// The set may change while Run runs (Reconfigure). Devices are indexed by
// int (devs, status, window, job.tried, pins, TP-MR map) and an index is
// never reused: a removed modem's slot stays as a tombstone (dead), and a
// modem added or changed by a reload takes a new one.
type Pool struct {
	open Opener
	opts PoolOptions
	log  *zap.Logger

	submit   chan *job                // Send -> scheduler
	cancel   chan *job                // Send -> scheduler: withdraw a queued job
	withdraw chan *job                // SendUnless -> scheduler: no new attempt of a job
	reconf   chan reconfRequest       // Reconfigure -> scheduler
	fromDev  chan devMsg              // device owners -> scheduler
	reports  chan Report              // scheduler -> consumer
	incoming chan Incoming            // scheduler -> consumer
	stopped  chan struct{}            // closed when Run returns
	devs     []*device                // scheduler-owned (NewPool and Reconfigure before Run); never shrinks
	names    []string                 // scheduler-owned: the configured modems' names, in config order
	pins     map[string]threadPinning // scheduler-owned: the modem of each concatenated message's parts
	mrs      map[mrKey][]mrEntry      // scheduler-owned: TP-MR is 0..255 per modem, maxPerMR each: bounded
	runCtx   context.Context          // scheduler-owned: Run's context, nil before Run
	wg       sync.WaitGroup           // the device owner goroutines

	reconfMu sync.Mutex // guards running: Reconfigure before Run applies the change itself
	running  bool
	ref      atomic.Uint32 // concatenation reference counter
	started  atomic.Bool

	mu     sync.Mutex
	status []ModemStatus // guarded by mu; written by the scheduler; indexed by device
	order  []int         // guarded by mu; written by the scheduler: the devices Status shows, in order
	window [][]time.Time // guarded by mu; written by the scheduler: send times per modem
}

type device struct {
	idx  int
	cfg  Config    // what the owner goroutine runs; never changed
	jobs chan *job // scheduler -> device owner, capacity 1
	// scheduler-owned:
	up       bool
	busy     bool
	lastUsed time.Time
	// max is MaxPerMinute (SMS parts): a reload changes it in place; read
	// by the owner too (pacing the parts of a message).
	max     atomic.Int64
	entry   Config             // the config entry it runs for now (cfg but for max)
	stop    context.CancelFunc // ends the owner goroutine; nil before Run
	removed bool               // a reload removed or changed it: no new job; stopped once not busy
	stopped bool               // stop was called
	dead    bool               // its owner ended and its port is closed: a tombstone
	next    *Config            // the entry that replaces it (same name) once its port is closed
	// waiting: added while the pool runs but not started, because a live
	// (or closing) device still holds its device path (or name); started
	// by closed() once none does. Never given a job (not up).
	waiting bool
	// run is the pool's run context, set before the owner starts: what the
	// owner hands over (incoming messages, status reports) is sent with it,
	// not with the owner's own context, which a reload may end meanwhile.
	run context.Context
	// pinRejected: the SIM rejected cfg.PIN; owned by the owner goroutine
	// while it runs, passed on to a successor with the same PIN.
	pinRejected bool
}

type reconfRequest struct {
	mods []Config
	done chan struct{}
}

type job struct {
	ctx   context.Context
	id    string
	dest  string     // for matching status reports (TP-RA)
	sub   sms.Submit // what parts encode: encoded again under a new reference (dispatch)
	parts []sms.Part
	// from is the first part the device sends (set by the scheduler
	// before it gives the job to a device): 0, or len(sent) for the rest
	// of a message on the modem its first parts went out on.
	from     int
	attempts int          // scheduler-owned
	tried    map[int]bool // scheduler-owned
	// thread names the concatenated message this one is a part of (the
	// platform's own UDH): all its parts go out on one modem (threadKey).
	thread string
	// withdrawn: its caller gave it up (SendUnless); an attempt on a modem
	// ends normally, but no new attempt starts. Scheduler-owned.
	withdrawn bool
	// permanent: the last attempt failed with a permanent error (last), which
	// may be its modem's (a barred SIM, firmware that refuses the PDU): it is
	// tried once on each other modem that is up, and final when none is
	// left. Scheduler-owned.
	permanent bool
	last      *SendError
	res       chan jobResult
	// order places it among the jobs waiting for a modem (QueueOrder).
	order QueueOrder
	// sentOn and sent: the first len(sent) parts went out on modem sentOn
	// (their TP-MRs) and a later part failed with a temporary error: the
	// rest go on that modem, under the same reference (the handset joins
	// parts only from one SIM); sentOn -1 when none is pending. held are
	// the status reports of those parts that came meanwhile, handed over
	// once the message is sent (or without its id if it never is).
	// Scheduler-owned.
	sentOn int
	sent   []int
	held   []Report
}

// QueueOrder is where a message stands in its caller's queue: jobs wait
// for a modem highest Priority first, then oldest Queued (the gateway's
// modem queue order, SMPP priority_flag then age), so that messages handed
// over at about the same time by concurrent callers still go in that
// order. A job tried before (a retry) keeps its place ahead.
type QueueOrder struct {
	Priority byte
	Queued   time.Time
}

type queueOrderKey struct{}

// WithQueueOrder returns ctx carrying o for Send and SendUnless (without
// it a message is priority 0, queued when it is handed over).
func WithQueueOrder(ctx context.Context, o QueueOrder) context.Context {
	return context.WithValue(ctx, queueOrderKey{}, o)
}

// before reports whether a waits for a modem ahead of b.
func (a QueueOrder) before(b QueueOrder) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.Queued.Before(b.Queued)
}

// enqueueJob inserts a new job in queue after the retries and the jobs
// that go before it.
func enqueueJob(queue []*job, j *job) []*job {
	k := len(queue)
	for i, q := range queue {
		if q.attempts == 0 && j.order.before(q.order) {
			k = i
			break
		}
	}
	queue = append(queue, nil)
	copy(queue[k+1:], queue[k:])
	queue[k] = j
	return queue
}

type jobResult struct {
	sent *Sent
	err  error
}

// stoppedResult is the answer to an attempt's msgSendDone that no
// scheduler reads (the pool stopped, with err): what the attempt did, not
// err alone: a send that went out is answered sent, one that failed names
// its modem and says whether it may have gone out (SendError.InDoubt);
// only a job not attempted is answered err.
func (m devMsg) stoppedResult(err error) jobResult {
	if !m.attempted {
		return jobResult{err: err}
	}
	j := m.job
	if m.err == nil {
		return jobResult{sent: &Sent{Modem: m.modem, Refs: append(append([]int(nil), j.sent[:j.from]...), m.refs...)}}
	}
	se := classify(m.err)
	se.Modem, se.InDoubt = m.modem, m.cut || len(m.refs) > 0 || j.sentOn >= 0
	return jobResult{err: se}
}

type devMsgKind int

const (
	msgState devMsgKind = iota
	msgSendDone
	msgReport
	msgIncoming
	msgClosed // the owner goroutine ended; the port is closed
)

type devMsg struct {
	kind      devMsgKind
	dev       int
	state     State
	health    Health
	err       error
	trial     bool // msgState down: on trial, the scheduler may give it a message
	lost      bool // msgState: the signal and registration are not known now (port broken, not answering)
	job       *job
	refs      []int
	attempted bool
	// msgSendDone of an attempt: the modem's name, and cut: the attempt
	// was cut short by its job's context (or the device's) after an
	// AT+CMGS of it had begun (SendError.InDoubt).
	modem    string
	cut      bool
	report   *sms.StatusReport
	incoming Incoming
}

// NewPool builds a pool; Run starts it.
func NewPool(mods []Config, open Opener, opts PoolOptions) *Pool {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 10 * time.Second
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 60 * time.Second
	}
	if opts.ReprobeInterval <= 0 {
		opts.ReprobeInterval = 30 * time.Second
	}
	if opts.ReopenMin <= 0 {
		opts.ReopenMin = time.Second
	}
	if opts.ReopenMax < opts.ReopenMin {
		opts.ReopenMax = 30 * time.Second
		if opts.ReopenMax < opts.ReopenMin {
			opts.ReopenMax = opts.ReopenMin
		}
	}
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 3
	}
	if opts.SendHoldMin <= 0 {
		opts.SendHoldMin = time.Minute
	}
	if opts.SendHoldMax <= 0 {
		opts.SendHoldMax = 30 * time.Minute
	}
	opts.SendHoldMax = max(opts.SendHoldMax, opts.SendHoldMin)
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	p := &Pool{
		open:     open,
		opts:     opts,
		log:      opts.Logger,
		submit:   make(chan *job),
		cancel:   make(chan *job),
		withdraw: make(chan *job),
		reconf:   make(chan reconfRequest),
		fromDev:  make(chan devMsg, 16),
		reports:  make(chan Report),
		incoming: make(chan Incoming),
		stopped:  make(chan struct{}),
		pins:     map[string]threadPinning{},
		mrs:      map[mrKey][]mrEntry{},
	}
	for _, c := range mods {
		if c.Name == "" {
			c.Name = c.Device
		}
		p.names = append(p.names, c.Name)
		p.addDevice(c, false)
	}
	p.reorder()
	return p
}

// Reconfigure changes the set of modems while the pool runs (a config
// reload); before Run it just replaces the set. Modems are matched by name
// (default the device path):
//
//   - a new name is added and opened at once;
//   - a name no longer listed takes no new message; the send in progress on
//     it (if any) is not cut short (a cut AT+CMGS may or may not have gone
//     out) and ends as usual, a failure being retried on another modem;
//     then its port is closed and it leaves Status() and its metric series
//     (spareline_modem_up, spareline_modem_signal_dbm) are deleted;
//   - an entry whose max_per_minute alone changed is updated in place;
//   - an entry that changed otherwise (device, baud, PIN, send timeout) is
//     removed as above, and opened again with its new settings once its old
//     port is closed (never two owners of one name at a time);
//   - a new or changed entry whose device path is still held by a modem
//     that runs or is closing (a modem renamed keeping its device, two
//     device paths swapped between two names) is opened once that modem's
//     port is closed: never two owners of one device at a time (a second
//     owner's commands would land in the first one's AT+CMGS).
//
// Concatenated messages pinned to a removed modem may go out on another.
// Status reports for messages a removed modem sent can no longer arrive:
// their callers' receipt timeouts end them. Reconfigure returns once the
// scheduler has applied the change, before removed modems finish their
// sends; an error means mods names a modem twice (nothing is changed) or
// the pool stopped.
func (p *Pool) Reconfigure(mods []Config) error {
	seen := map[string]bool{}
	norm := make([]Config, 0, len(mods))
	for _, c := range mods {
		if c.Name == "" {
			c.Name = c.Device
		}
		if seen[c.Name] {
			return fmt.Errorf("modem pool: modem %q named twice", c.Name)
		}
		seen[c.Name] = true
		norm = append(norm, c)
	}
	p.reconfMu.Lock()
	if !p.running {
		defer p.reconfMu.Unlock()
		p.reconfigure(norm)
		return nil
	}
	p.reconfMu.Unlock()
	req := reconfRequest{mods: norm, done: make(chan struct{})}
	select {
	case p.reconf <- req:
	case <-p.stopped:
		return ErrPoolStopped
	}
	<-req.done
	return nil
}

// reconfigure applies Reconfigure's change; scheduler-owned (or before Run).
func (p *Pool) reconfigure(mods []Config) {
	want := make(map[string]Config, len(mods))
	p.names = p.names[:0]
	for _, c := range mods {
		want[c.Name] = c
		p.names = append(p.names, c.Name)
	}
	have := map[string]bool{}
	for _, d := range p.devs {
		if d.dead {
			continue
		}
		name := d.cfg.Name
		have[name] = true
		c, listed := want[name]
		switch {
		case d.removed: // closing: what follows it, if anything
			if listed {
				d.next = &c
			} else {
				d.next = nil
			}
		case !listed:
			p.log.Info("modem removed by a reload; it closes once its send in progress (if any) ends",
				zap.String("modem", name))
			p.retire(d, nil)
		case c == d.entry:
		case onlyRateChanged(c, d.entry):
			p.log.Info("modem max_per_minute changed by a reload", zap.String("modem", name),
				zap.Int("max_per_minute", c.MaxPerMinute))
			d.entry = c
			d.max.Store(int64(c.MaxPerMinute))
		default:
			p.log.Info("modem changed by a reload; it is opened again with its new settings once its send in progress (if any) ends",
				zap.String("modem", name))
			p.retire(d, &c)
		}
	}
	for _, c := range mods {
		if !have[c.Name] {
			p.log.Info("modem added by a reload", zap.String("modem", c.Name), zap.String("device", c.Device))
			p.addDevice(c, false)
		}
	}
	p.reorder()
}

// onlyRateChanged: a and b differ at most in MaxPerMinute, which the
// scheduler alone reads (changed in place).
func onlyRateChanged(a, b Config) bool {
	a.MaxPerMinute = b.MaxPerMinute
	return a == b
}

// addDevice adds a device for c in a new slot and, when the pool runs,
// starts its owner; scheduler-owned (or before Run).
func (p *Pool) addDevice(c Config, pinRejected bool) {
	d := &device{idx: len(p.devs), cfg: c, entry: c, jobs: make(chan *job, 1), pinRejected: pinRejected}
	d.max.Store(int64(c.MaxPerMinute))
	p.devs = append(p.devs, d)
	p.mu.Lock()
	p.status = append(p.status, ModemStatus{Name: c.Name, Device: c.Device, State: StateOpening, LastChange: time.Now()})
	p.window = append(p.window, nil)
	p.mu.Unlock()
	metricSeed(c.Name)
	if p.runCtx == nil {
		return
	}
	if h := p.holder(d); h != nil {
		d.waiting = true
		p.log.Info("modem waits for its device to be closed by the modem that holds it",
			zap.String("modem", c.Name), zap.String("device", c.Device), zap.String("held_by", h.cfg.Name))
		return
	}
	p.startDevice(d)
}

// holder returns a device other than d whose owner runs (or is closing)
// and holds d's device path or name, nil if none: d may not be opened
// before that one's port is closed. Scheduler-owned.
func (p *Pool) holder(d *device) *device {
	for _, h := range p.devs {
		if h != d && !h.dead && !h.waiting && h.stop != nil &&
			(h.cfg.Device == d.cfg.Device || h.cfg.Name == d.cfg.Name) {
			return h
		}
	}
	return nil
}

// startDevice starts d's owner goroutine; scheduler-owned. When the owner
// ends (its port closed), the scheduler is told (msgClosed).
func (p *Pool) startDevice(d *device) {
	run := p.runCtx
	ctx, cancel := context.WithCancel(run)
	d.stop, d.run, d.waiting = cancel, run, false
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.runDevice(ctx, d)
		cancel()
		p.tell(run, devMsg{kind: msgClosed, dev: d.idx})
	}()
}

// retire takes d out (a reload removed or changed it): no new job, no
// thread pinned to it; its owner is stopped now if no job is on it, else
// when that job's attempt ends. next is the entry to open once its port is
// closed. Scheduler-owned (or before Run, when d is closed at once).
func (p *Pool) retire(d *device, next *Config) {
	d.removed, d.next = true, next
	p.setStatus(d.idx, StateClosing, Health{}, nil, false, false)
	for k, v := range p.pins {
		if v.dev == d.idx {
			delete(p.pins, k)
		}
	}
	if p.runCtx == nil || d.waiting { // no owner: nothing to stop
		p.closed(d)
		return
	}
	p.stopIfIdle(d)
}

// stopIfIdle stops a retired device's owner once no job is on it (a job
// given to it is answered, msgSendDone, before it is not busy).
func (p *Pool) stopIfIdle(d *device) {
	if d.removed && !d.busy && !d.stopped {
		d.stopped = true
		d.stop()
	}
}

// closed turns a retired device whose port is closed (or that never
// started) into a tombstone: out of Status, metric series deleted, its
// TP-MR entries dropped (no status report can come from it now); its
// successor, if any, is opened, and so is any device that waited for its
// device path (unless another device still holds it). Scheduler-owned (or
// before Run).
func (p *Pool) closed(d *device) {
	d.dead, d.up, d.waiting = true, false, false
	for k := range p.mrs {
		if k.dev == d.idx {
			delete(p.mrs, k)
		}
	}
	p.mu.Lock()
	p.window[d.idx] = nil
	p.mu.Unlock()
	metricForget(d.cfg.Name)
	if d.next != nil {
		p.log.Info("modem opened again with its new settings", zap.String("modem", d.cfg.Name),
			zap.String("device", d.next.Device))
		// A PIN the SIM rejected is not entered again (three wrong PINs
		// block the SIM) unless the reload changed it.
		p.addDevice(*d.next, d.pinRejected && d.next.PIN == d.cfg.PIN)
	} else if p.runCtx != nil {
		p.log.Info("removed modem closed", zap.String("modem", d.cfg.Name))
	}
	for _, w := range p.devs {
		if w.waiting && p.holder(w) == nil {
			p.log.Info("modem opened: its device is no longer held", zap.String("modem", w.cfg.Name),
				zap.String("device", w.cfg.Device))
			p.startDevice(w)
		}
	}
	p.reorder()
}

// reorder sets the rows of Status: the configured modems in config order
// (a changed one as its old device until that is closed), then removed
// ones still closing. Scheduler-owned (or before Run).
func (p *Pool) reorder() {
	byName := map[string]int{}
	for _, d := range p.devs {
		if d.dead {
			continue
		}
		if i, ok := byName[d.cfg.Name]; !ok || p.devs[i].removed {
			byName[d.cfg.Name] = d.idx // a live device over one closing
		}
	}
	order := make([]int, 0, len(byName))
	listed := map[string]bool{}
	for _, n := range p.names {
		listed[n] = true
		if i, ok := byName[n]; ok {
			order = append(order, i)
		}
	}
	for _, d := range p.devs {
		if !d.dead && !listed[d.cfg.Name] {
			order = append(order, d.idx)
		}
	}
	p.mu.Lock()
	p.order = order
	p.mu.Unlock()
}

// Reports delivers status reports. The pool keeps them (in memory) until
// they are read.
func (p *Pool) Reports() <-chan Report { return p.reports }

// Incoming delivers received messages. The pool keeps them (in memory) until
// they are read; they are already deleted from the SIM.
func (p *Pool) Incoming() <-chan Incoming { return p.incoming }

// Status is a snapshot of every modem.
func (p *Pool) Status() []ModemStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ModemStatus, 0, len(p.order))
	cut := time.Now().Add(-budgetWindow)
	for _, i := range p.order {
		s := p.status[i]
		n := 0
		for _, t := range p.window[i] {
			if t.After(cut) {
				n++
			}
		}
		s.SentLastMinute = n
		out = append(out, s)
	}
	return out
}

// Send sends s (all its parts) on one modem and blocks until it is
// confirmed, failed (*SendError) or ctx ends. id is the caller's id, used in
// Reports.
func (p *Pool) Send(ctx context.Context, id string, s sms.Submit) (*Sent, error) {
	return p.SendUnless(ctx, nil, id, s)
}

// SendUnless is Send, given up when giveUp is closed while the message
// waits for a modem (before its first attempt, or between attempts): it
// then returns ErrWithdrawn at once. An attempt already on a modem is not
// cut short (that could leave its outcome unknown): it ends as in Send, with
// no further attempt if it failed. A nil giveUp is never closed.
func (p *Pool) SendUnless(ctx context.Context, giveUp <-chan struct{}, id string, s sms.Submit) (*Sent, error) {
	parts, err := sms.EncodeSubmit(s, p.nextRef())
	if err != nil {
		return nil, &SendError{Permanent: true, Err: err}
	}
	order, _ := ctx.Value(queueOrderKey{}).(QueueOrder)
	if order.Queued.IsZero() {
		order.Queued = time.Now()
	}
	j := &job{ctx: ctx, id: id, dest: s.Dest, sub: s, parts: parts, tried: map[int]bool{}, res: make(chan jobResult, 1),
		thread: threadKey(s), order: order, sentOn: -1}
	select {
	case p.submit <- j:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.stopped:
		return nil, ErrPoolStopped
	}
	select {
	case r := <-j.res:
		return r.sent, r.err
	case <-giveUp:
		// No new attempt; a job still queued is answered ErrWithdrawn at
		// once, one on a modem when its attempt ends.
		select {
		case p.withdraw <- j:
		case <-p.stopped:
		case r := <-j.res:
			return r.sent, r.err
		}
	case <-ctx.Done():
		// Withdraw the job if it is still queued; a job already on a modem
		// ends soon (its send uses ctx) and is answered normally.
		select {
		case p.cancel <- j:
		case <-p.stopped:
		case r := <-j.res:
			return r.sent, r.err
		}
	}
	r := <-j.res // the scheduler answers every job it accepted
	return r.sent, r.err
}

// Run owns the pool until ctx ends: one goroutine per device and the
// scheduler. It returns after they all stopped.
func (p *Pool) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("modem pool: Run called twice")
	}
	defer close(p.stopped)
	ctx, cancel := context.WithCancel(ctx)
	p.reconfMu.Lock() // a Reconfigure before this applied its change itself
	p.running = true
	p.reconfMu.Unlock()
	p.runCtx = ctx
	for _, d := range p.devs {
		if !d.dead {
			p.startDevice(d)
		}
	}
	p.schedule(ctx)
	cancel()
	// Drain device messages so no owner blocks while stopping, and answer
	// every send they finish; once the owners have ended, what is still
	// buffered is answered too (a send answered by no one would leave its
	// caller waiting for ever).
	devsDone, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		answer := func(m devMsg) {
			if m.kind == msgSendDone {
				m.job.res <- m.stoppedResult(ctx.Err())
			}
		}
		for {
			select {
			case m := <-p.fromDev:
				answer(m)
			case <-devsDone:
				for {
					select {
					case m := <-p.fromDev:
						answer(m)
					default:
						return
					}
				}
			}
		}
	}()
	p.wg.Wait()
	close(devsDone)
	<-drained
	for _, d := range p.devs {
		select {
		case j := <-d.jobs:
			j.res <- jobResult{err: ctx.Err()}
		default:
		}
	}
	return nil
}

type mrKey struct {
	dev int
	mr  int
}

type mrEntry struct {
	id          string
	dest        string
	part, parts int
	// orphan: a part of a message given up (dropPartial): its report is
	// no one's.
	orphan bool
	// pending: the part went out but the rest of its message has not yet
	// (job.sentOn): its reports are held in the job until it has.
	pending *job
}

// maxPerMR is how many sends are remembered under one (modem, TP-MR): the
// MR wraps after 256 sends and a modem starts it again at each restart, so
// a report for an older send can come while a newer one holds its MR.
const maxPerMR = 4

// matchReport finds the send a status report of modem dev is about: the
// newest one remembered under its TP-MR whose destination is its
// recipient (TP-RA); ok false when none is. A final report forgets it.
func (p *Pool) matchReport(dev int, r *sms.StatusReport) (mrEntry, bool) {
	k := mrKey{dev, r.MR}
	l := p.mrs[k]
	for i := len(l) - 1; i >= 0; i-- {
		if !sameNumber(l[i].dest, r.Recipient) {
			continue
		}
		e := l[i]
		if !r.Temporary() {
			l = append(l[:i:i], l[i+1:]...)
			if len(l) == 0 {
				delete(p.mrs, k)
			} else {
				p.mrs[k] = l
			}
		}
		return e, true
	}
	return mrEntry{}, false
}

// rememberSend notes the send of a part under (modem, TP-MR).
func (p *Pool) rememberSend(dev, mr int, e mrEntry) {
	k := mrKey{dev, mr}
	l := p.mrs[k]
	if len(l) >= maxPerMR {
		l = l[1:]
	}
	p.mrs[k] = append(l, e)
}

// schedule is the scheduler goroutine (see the package doc).
func (p *Pool) schedule(ctx context.Context) {
	var (
		queue    []*job
		reports  []Report
		incoming []Incoming
		timer    = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	for {
		queue = p.dispatch(queue, &reports)
		p.armBudgetTimer(timer, queue)
		var repC chan Report
		var rep Report
		if len(reports) > 0 {
			repC, rep = p.reports, reports[0]
		}
		var inC chan Incoming
		var in Incoming
		if len(incoming) > 0 {
			inC, in = p.incoming, incoming[0]
		}
		select {
		case <-ctx.Done():
			for _, j := range queue {
				j.res <- jobResult{err: ctx.Err()}
			}
			return
		case j := <-p.submit:
			queue = enqueueJob(queue, j)
		case j := <-p.cancel:
			for k, q := range queue {
				if q == j {
					queue = append(queue[:k], queue[k+1:]...)
					p.endPartial(j, j.ctx.Err(), &reports)
					j.res <- jobResult{err: j.ctx.Err()}
					break
				}
			}
		case j := <-p.withdraw:
			// Not in the queue: on a modem (answered when its attempt
			// ends, without a retry) or answered already.
			j.withdrawn = true
			for k, q := range queue {
				if q == j {
					queue = append(queue[:k], queue[k+1:]...)
					err := p.withdrawnErr(j) // before endPartial forgets the parts sent
					p.endPartial(j, ErrWithdrawn, &reports)
					j.res <- jobResult{err: err}
					break
				}
			}
		case r := <-p.reconf:
			p.reconfigure(r.mods)
			close(r.done)
		case <-timer.C:
		case repC <- rep:
			reports = reports[1:]
		case inC <- in:
			incoming = incoming[1:]
		case m := <-p.fromDev:
			d := p.devs[m.dev]
			name := d.cfg.Name
			switch m.kind {
			case msgClosed:
				p.closed(d)
			case msgState:
				d.up = m.state == StateUp || m.trial
				if d.removed {
					m.state = StateClosing
				}
				p.setStatus(m.dev, m.state, m.health, m.err, m.trial, m.lost)
			case msgIncoming:
				incoming = append(incoming, m.incoming)
			case msgReport:
				// TP-MR and TP-RA identify the submit (23.040 §9.2.2.3):
				// TP-MR alone repeats after 256 sends on a modem.
				// A report for an older send whose MR a newer one took
				// (wrapped, or restarted at the modem's restart) finds
				// the older one by its recipient.
				e, ok := p.matchReport(m.dev, m.report)
				if !ok {
					p.log.Debug("status report matches no recent send (late, stale, or of another process)",
						zap.String("modem", name), zap.Int("mr", m.report.MR), zap.String("recipient", m.report.Recipient))
				}
				r := Report{ID: e.id, Part: e.part, Parts: e.parts, Modem: name, Status: m.report, Orphan: e.orphan}
				if e.pending != nil {
					// A part of a message whose rest is not sent yet:
					// handed over with the message's other reports once it
					// is (without its id if it never is: dropPartial).
					e.pending.held = append(e.pending.held, r)
					continue
				}
				reports = append(reports, r)
			case msgSendDone:
				d.busy = false
				p.stopIfIdle(d) // a removed modem closes once its attempt ended
				j := m.job
				if !m.attempted {
					if j.withdrawn {
						err := p.withdrawnErr(j) // before endPartial forgets the parts sent
						p.endPartial(j, ErrWithdrawn, &reports)
						j.res <- jobResult{err: err}
						continue
					}
					queue = append([]*job{j}, queue...)
					continue
				}
				// This attempt sent parts from j.from on (the rest of a
				// message whose first j.from parts went out on this modem
				// before, j.sent, or the whole message); m.refs are the
				// TP-MRs of those it confirmed.
				if m.err == nil {
					metricSend(name, "ok")
					for i, mr := range m.refs {
						p.rememberSend(m.dev, mr, mrEntry{id: j.id, dest: j.dest, part: j.from + i + 1, parts: len(j.parts)})
					}
					refs := append(append([]int(nil), j.sent[:j.from]...), m.refs...)
					if j.from > 0 {
						p.log.Info("rest of a concatenated message sent on the modem its first parts went out on, under the same reference",
							zap.String("id", j.id), zap.String("modem", name), zap.Int("parts_sent_before", j.from),
							zap.Int("parts", len(j.parts)))
					}
					p.settle(j, &reports)
					j.res <- jobResult{sent: &Sent{Modem: name, Refs: refs}}
					continue
				}
				se := classify(m.err)
				se.Modem, se.InDoubt = name, m.cut
				j.attempts++
				j.tried[m.dev] = true
				j.permanent, j.last = se.Permanent, se
				if len(m.refs) > 0 {
					// Parts on the air (confirmed with +CMGS: <mr>), not all:
					// the rest go on this modem under the same reference
					// (dispatch), the reports of these held meanwhile.
					j.sentOn = m.dev
					for i, mr := range m.refs {
						p.rememberSend(m.dev, mr, mrEntry{id: j.id, dest: j.dest, part: j.from + i + 1, parts: len(j.parts), pending: j})
					}
					j.sent = append(j.sent, m.refs...)
				}
				// In doubt too when the message's first parts went out (in
				// this attempt or before) and a temporary failure ends it:
				// its caller sends it again whole (a permanent one fails
				// it: nothing is sent again).
				se.InDoubt = se.InDoubt || (j.sentOn >= 0 && !se.Permanent)
				if se.Permanent && j.sentOn >= 0 {
					// Parts went out: sent again whole (on another modem,
					// or under another reference) the handset would show
					// them twice, and the rest cannot go on this modem.
					// The message fails; what went is not sent again.
					metricSend(name, "permanent")
					p.log.Warn("permanent send error after parts of a concatenated message went out: the message fails and the parts sent are not sent again; the handset may show an incomplete message",
						zap.String("id", j.id), zap.String("modem", name), zap.Int("parts_sent", len(j.sent)),
						zap.Int("parts", len(j.parts)), zap.Error(m.err))
					p.dropPartial(j, &reports)
					j.res <- jobResult{err: se}
					continue
				}
				if se.Permanent {
					metricSend(name, "permanent")
					// A permanent error may be the modem's (27.005 §3.2.5:
					// 300-511 are ME errors; a SIM barred by its operator
					// gets RP-cause 21 for every message): tried on each
					// other modem that is up before it is final. A number
					// error is final at once.
					if !se.mayBeTheModems() || j.attempts >= p.opts.MaxAttempts || j.ctx.Err() != nil || j.withdrawn || !p.untriedUp(j) {
						j.res <- jobResult{err: se}
						continue
					}
					p.log.Info("permanent send error; the message is tried on another modem before it is final",
						zap.String("id", j.id), zap.String("modem", name), zap.Int("attempt", j.attempts), zap.Error(m.err))
					queue = append([]*job{j}, queue...)
					continue
				}
				metricSend(name, "error")
				if j.attempts >= p.opts.MaxAttempts || j.ctx.Err() != nil || j.withdrawn {
					p.endPartial(j, m.err, &reports)
					j.res <- jobResult{err: se}
					continue
				}
				switch {
				case j.sentOn >= 0:
					p.log.Info("send failed after parts of a concatenated message went out; the rest will be sent on the same modem, under the same reference",
						zap.String("id", j.id), zap.String("modem", name), zap.Int("parts_sent", len(j.sent)),
						zap.Int("parts", len(j.parts)), zap.Int("attempt", j.attempts), zap.Error(m.err))
				case p.untriedUp(j):
					p.log.Info("send failed, will retry on another modem", zap.String("id", j.id),
						zap.String("modem", name), zap.Int("attempt", j.attempts), zap.Error(m.err))
				default:
					p.log.Info("send failed, will retry (no other modem is up)", zap.String("id", j.id),
						zap.String("modem", name), zap.Int("attempt", j.attempts), zap.Error(m.err))
				}
				queue = append([]*job{j}, queue...)
			}
		}
	}
}

// sameNumber reports whether a status report's recipient (TP-RA) can be
// the destination a message was sent to. Networks give TP-RA in their own
// format: international or national, with or without the country code or
// trunk prefix. So the digits are compared without '+' and leading zeros,
// and one may end the other (an alphanumeric or empty TP-RA matches).
func sameNumber(dest, ra string) bool {
	digits := func(s string) string {
		s = strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(s), "+"), "0")
		for _, c := range s {
			if c < '0' || c > '9' {
				return ""
			}
		}
		return s
	}
	a, b := digits(dest), digits(ra)
	if a == "" || b == "" {
		return true
	}
	return strings.HasSuffix(a, b) || strings.HasSuffix(b, a)
}

// SameNumber is sameNumber for the pool's users: the failover path matches
// a status report that no send of this process explains (one of a send
// made before a restart) against the stored messages with it.
func SameNumber(dest, ra string) bool { return sameNumber(dest, ra) }

// classify turns a send error into a *SendError, once.
func classify(err error) *SendError {
	se := &SendError{Err: err}
	var cms *at.CMSError
	if errors.As(err, &cms) {
		se.Code = cms.Code
		se.Permanent = cms.Permanent()
		se.NumberError = cms.NumberError()
		se.subscription = cms.Subscription()
	}
	return se
}

// dispatch gives queued jobs to free modems and returns the rest; the
// reports held by a job whose sent parts are given up (dropPartial) go to
// reports.
func (p *Pool) dispatch(queue []*job, reports *[]Report) []*job {
	if len(queue) == 0 {
		return queue
	}
	now := time.Now()
	rest := queue[:0]
	for _, j := range queue {
		if err := j.ctx.Err(); err != nil {
			p.endPartial(j, err, reports)
			j.res <- jobResult{err: err}
			continue
		}
		// A part of a concatenated message whose other parts went out on
		// a modem that is still up waits for that modem: a handset joins
		// parts only from one sender.
		pinned := -1
		if pin, ok := p.pins[j.thread]; ok && j.thread != "" && now.Sub(pin.at) < threadPin && p.devs[pin.dev].up && !p.devs[pin.dev].removed {
			pinned = pin.dev
		}
		// The rest of a message whose first parts went out on a modem goes
		// on that modem, under the same reference, even when others are up
		// (waiting for it while it is busy or over its budget, or while no
		// modem is up): the parts sent are on the handset, which joins
		// parts only from one SIM. When it cannot take them (taken out,
		// held, removed) and another modem can, the whole message goes
		// there under a new reference.
		j.from = 0
		if j.sentOn >= 0 {
			x := p.devs[j.sentOn]
			switch {
			case x.up && !x.removed:
				pinned, j.from = j.sentOn, len(j.sent)
			case x.removed || p.otherUp(j.sentOn):
				p.log.Warn("parts of a concatenated message went out on a modem that cannot take the rest now: the whole message goes to another modem under a new reference; the handset may show an incomplete message (the parts sent) besides the whole one",
					zap.String("id", j.id), zap.String("modem", x.cfg.Name), zap.Int("parts_sent", len(j.sent)),
					zap.Int("parts", len(j.parts)))
				p.dropPartial(j, reports)
				if parts, err := sms.EncodeSubmit(j.sub, p.nextRef()); err == nil && len(parts) == len(j.parts) {
					j.parts = parts
				}
			default:
				rest = append(rest, j) // no modem is up: waits for that one
				continue
			}
		}
		// A message that failed on a modem goes to another one that is up,
		// waiting for it if it is busy or over its budget; the modem it
		// failed on only when no other is up. One that failed permanently
		// goes only to a modem it has not failed on (and is final when
		// none is up: answered below).
		untried := p.untriedUp(j)
		if j.permanent && !untried {
			j.res <- jobResult{err: j.last}
			continue
		}
		if j.permanent && pinned >= 0 && j.tried[pinned] {
			pinned = -1 // its thread's modem refused it for good: another one
		}
		best := -1
		bestN, bestTried := 0, true
		for i, d := range p.devs {
			if !d.up || d.busy || d.removed || (pinned >= 0 && i != pinned) {
				continue
			}
			if j.tried[i] && untried && pinned < 0 {
				continue
			}
			n := p.inWindow(i, now)
			// Counted in SMS parts; a message of more parts than the
			// budget goes when the minute is empty, its parts spaced by
			// the device owner (pace).
			if max := int(d.max.Load()); max > 0 && n > 0 && n+len(j.parts)-j.from > max {
				continue
			}
			tried := j.tried[i]
			better := best < 0 ||
				(bestTried && !tried) ||
				(bestTried == tried && (n < bestN || (n == bestN && d.lastUsed.Before(p.devs[best].lastUsed))))
			if better {
				best, bestN, bestTried = i, n, tried
			}
		}
		if best < 0 {
			rest = append(rest, j)
			continue
		}
		if j.thread != "" {
			p.pin(j.thread, best, now)
		}
		d := p.devs[best]
		d.busy = true
		d.lastUsed = now
		// The window is stamped by the device owner as each part goes out
		// (stamp): the budget counts SMS on the air, when they are.
		d.jobs <- j // capacity 1 and the device was not busy: never blocks
	}
	return rest
}

// threadPin is how long the parts of one concatenated message stay on the
// modem the first went out on (a handset keeps parts waiting for their
// siblings for minutes, not hours).
const threadPin = 30 * time.Minute

type threadPinning struct {
	dev int
	at  time.Time
}

// pin notes that a part of thread went out on modem dev; scheduler-owned.
func (p *Pool) pin(thread string, dev int, now time.Time) {
	if len(p.pins) >= 4096 {
		for k, v := range p.pins {
			if now.Sub(v.at) >= threadPin {
				delete(p.pins, k)
			}
		}
	}
	p.pins[thread] = threadPinning{dev: dev, at: now}
}

// threadKey names the concatenated message s is a part of, from the
// concatenation element of the UDH the platform gave (TS 23.040
// §9.2.3.24.1 8-bit and §9.2.3.24.8 16-bit reference): the destination, the
// reference and the number of parts. "" for a message without one (the
// parts of a text the pool splits itself go out together on one modem).
func threadKey(s sms.Submit) string {
	if !s.UDHI || len(s.Payload) == 0 {
		return ""
	}
	udh := s.Payload[1:min(len(s.Payload), 1+int(s.Payload[0]))]
	for len(udh) >= 2 {
		iei, l := udh[0], int(udh[1])
		if 2+l > len(udh) {
			return ""
		}
		v := udh[2 : 2+l]
		switch {
		case iei == 0x00 && l == 3:
			return fmt.Sprintf("%s/%d/%d", s.Dest, v[0], v[1])
		case iei == 0x08 && l == 4:
			return fmt.Sprintf("%s/%d/%d", s.Dest, int(v[0])<<8|int(v[1]), v[2])
		}
		udh = udh[2+l:]
	}
	return ""
}

// nextRef is a new concatenation reference: 1..255 (8-bit IE).
func (p *Pool) nextRef() uint16 { return uint16(p.ref.Add(1)%255 + 1) }

// otherUp reports whether a modem other than dev is up; scheduler-owned.
func (p *Pool) otherUp(dev int) bool {
	for i, d := range p.devs {
		if i != dev && d.up && !d.removed {
			return true
		}
	}
	return false
}

// settle ends the pending state of j, sent whole now: the TP-MRs of the
// parts sent before are those of a sent message, and the reports held for
// them go to reports. Scheduler-owned.
func (p *Pool) settle(j *job, reports *[]Report) {
	if j.sentOn >= 0 {
		for _, mr := range j.sent {
			l := p.mrs[mrKey{j.sentOn, mr}]
			for i := range l {
				if l[i].pending == j {
					l[i].pending = nil
				}
			}
		}
	}
	*reports = append(*reports, j.held...)
	j.sentOn, j.sent, j.held, j.from = -1, nil, nil, 0
}

// dropPartial gives up the parts of j that went out (j.sent on j.sentOn):
// their TP-MRs are forgotten and the reports held for them go to reports
// without the message's id (a report of an orphan part must not count
// toward the receipt of the message sent again). Scheduler-owned.
func (p *Pool) dropPartial(j *job, reports *[]Report) {
	if j.sentOn < 0 {
		return
	}
	for _, mr := range j.sent {
		// Kept as an orphan's: its report, when it comes, is marked
		// Orphan (no one's report), not taken for a send of another
		// process.
		for i, e := range p.mrs[mrKey{j.sentOn, mr}] {
			if e.pending == j {
				p.mrs[mrKey{j.sentOn, mr}][i] = mrEntry{dest: e.dest, orphan: true}
			}
		}
	}
	for _, r := range j.held {
		p.log.Debug("status report of a part of a message given up", zap.String("id", r.ID),
			zap.String("modem", r.Modem), zap.Int("part", r.Part), zap.Int("mr", r.Status.MR))
		r.ID, r.Part, r.Parts, r.Orphan = "", 0, 0, true
		*reports = append(*reports, r)
	}
	j.sentOn, j.sent, j.held, j.from = -1, nil, nil, 0
}

// endPartial is dropPartial for a message that ends unsent (err) after
// some of its parts went out: logged, as the caller may send it again
// whole. Scheduler-owned.
// withdrawnErr is the answer to a job its caller gave up while it waited
// for a modem: ErrWithdrawn, unless some of its parts went out already (the
// rest waited for that modem): then a SendError in doubt naming that modem,
// so that the caller counts the message's next send as a possible
// duplicate (the handset has those parts) instead of a clean retry.
func (p *Pool) withdrawnErr(j *job) error {
	if j.sentOn < 0 {
		return ErrWithdrawn
	}
	return &SendError{InDoubt: true, Modem: p.devs[j.sentOn].cfg.Name,
		Err: fmt.Errorf("given up waiting for its modem after %d of %d parts went out", len(j.sent), len(j.parts))}
}

func (p *Pool) endPartial(j *job, err error, reports *[]Report) {
	if j.sentOn < 0 {
		return
	}
	p.log.Warn("parts of a concatenated message went out and the rest could not be sent: the message fails; sent again, the handset may show an incomplete message (the parts sent) besides the whole one",
		zap.String("id", j.id), zap.String("modem", p.devs[j.sentOn].cfg.Name), zap.Int("parts_sent", len(j.sent)),
		zap.Int("parts", len(j.parts)), zap.Int("attempts", j.attempts), zap.Error(err))
	p.dropPartial(j, reports)
}

// untriedUp reports whether a modem j has not been tried on is up (busy or
// not); scheduler-owned.
func (p *Pool) untriedUp(j *job) bool {
	for i, d := range p.devs {
		if d.up && !d.removed && !j.tried[i] {
			return true
		}
	}
	return false
}

// budgetWindow is the span max_per_minute counts over (a test shortens it).
var budgetWindow = time.Minute

// stamp records an SMS part modem i just sent (or may have: its AT+CMGS
// got no final answer; a part the modem refused with an error did not go,
// mayHaveGone); called by the device owner.
func (p *Pool) stamp(i int) {
	p.mu.Lock()
	p.window[i] = append(p.window[i], time.Now())
	p.mu.Unlock()
}

// pace is how long modem i must wait before its next SMS part for its
// budget (max parts per minute): 0 when it may go now. Only a message of
// more parts than the budget ever waits (the scheduler gives a modem a
// message only when its parts fit, or the minute is empty).
func (p *Pool) pace(i int, max int) time.Duration {
	if max <= 0 {
		return 0
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.window[i]
	cut := now.Add(-budgetWindow)
	n := 0
	for _, t := range w {
		if t.After(cut) {
			n++
		}
	}
	if n < max {
		return 0
	}
	// The part that leaves the window first frees a slot.
	return w[len(w)-n].Add(budgetWindow).Sub(now) + time.Millisecond
}

// inWindow prunes and counts the sends of modem i in the last minute.
func (p *Pool) inWindow(i int, now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.window[i]
	cut := now.Add(-budgetWindow)
	k := 0
	for k < len(w) && !w[k].After(cut) {
		k++
	}
	p.window[i] = w[k:]
	return len(p.window[i])
}

// armBudgetTimer wakes the scheduler when a budget-blocked modem frees up.
func (p *Pool) armBudgetTimer(t *time.Timer, queue []*job) {
	t.Stop()
	if len(queue) == 0 {
		return
	}
	var next time.Time
	p.mu.Lock()
	for i, d := range p.devs {
		if d.up && !d.busy && !d.removed && d.max.Load() > 0 && len(p.window[i]) > 0 {
			free := p.window[i][0].Add(budgetWindow)
			if next.IsZero() || free.Before(next) {
				next = free
			}
		}
	}
	p.mu.Unlock()
	if !next.IsZero() {
		t.Reset(time.Until(next) + time.Millisecond)
	}
}

// setStatus records modem i's state; trial: down, and on trial (see
// ModemStatus.Trial); lost: its signal and registration are not known now
// (its port broke, it stopped answering): cleared, not left at the last
// reading.
func (p *Pool) setStatus(i int, st State, h Health, err error, trial, lost bool) {
	p.mu.Lock()
	s := &p.status[i]
	if s.State != st {
		s.LastChange = time.Now()
	}
	s.State = st
	s.Trial = trial && st == StateDown
	// A zero Health is no reading (a state change before any probe); a
	// reading with signal 0 is "not known" (+CSQ: 99).
	read := h.SignalDBm != 0 || h.Reg != 0
	if lost {
		h, read = Health{}, true // "not known" now, as after +CSQ: 99
	}
	if read {
		s.SignalDBm, s.Registration = h.SignalDBm, h.Reg
	}
	switch {
	case err != nil:
		s.LastError = err.Error()
	case st == StateUp:
		s.LastError = "" // up again without a warning: the last error is over
	}
	name, dbm := s.Name, s.SignalDBm
	p.mu.Unlock()
	metricUp(name, st == StateUp)
	switch {
	case dbm != 0:
		metricSignal(name, dbm)
	case read:
		// Not the last known value: the modem says it has none now.
		metricSignalUnknown(name)
	}
}
