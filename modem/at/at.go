// Package at is an AT command session (ITU-T V.250, 3GPP TS 27.007 / 27.005)
// over any io.ReadWriter: a serial port, a pseudo-terminal or a scripted fake.
//
// Policy:
//   - One reader goroutine splits the byte stream into lines (CR and/or LF end a
//     line; empty lines are dropped; a line over 4 KiB is noise, dropped) and recognises the "> " prompt that
//     AT+CMGS sends without a line ending (27.005 §3.5.1).
//   - One owner goroutine serialises commands: one in flight at a time, the
//     others wait in order. It alone writes to the port.
//   - Unsolicited result codes (URCs) are recognised by prefix, with a fixed
//     number of trailing lines (+CDS and +CMT carry one PDU line). A URC line is
//     never part of a command's answer, even when it arrives in the middle of it
//     — except a line whose prefix names the command in flight (the "+CREG:"
//     answering AT+CREG?).
//   - URC handlers run in arrival order on one dispatcher goroutine fed by one
//     bounded queue. When the queue is full the owner waits (back-pressure on
//     the port): a handler must therefore never wait for a Command of the same
//     session; hand the work to another goroutine instead.
//   - Echo on or off is tolerated: a line equal to the command in flight (or to
//     the PDU after the prompt) is dropped.
//   - Final result codes: OK; ERROR -> ErrError (also in the numeric form "0"
//     and "4" of a modem left in ATV0, V.250 §6.2.6, and Huawei's "COMMAND
//     NOT SUPPORT" and "TOO MANY PARAMETERS"); "+CMS ERROR: n" -> *CMSError;
//     "+CME ERROR: n" -> *CMEError (classification documented on the types).
//   - A command without a final result code when its context ends fails with
//     *TimeoutError; a plain command also at the command timeout
//     (Options.Timeout) when its context allows longer (a modem that stopped
//     answering must not hold its caller until a far deadline). For an SMS command ESC is sent first to abort the prompt
//     (27.005 §3.5.1). An SMS command whose "> " prompt does not come within
//     the command timeout (Options.Timeout; the context may allow much
//     longer for the network's answer) fails then, with ESC, as a
//     *TimeoutError wrapping ErrNoPrompt: the PDU was never written. Then, during a guard time, lines that are not URCs are
//     dropped as the late answer of the abandoned command.
//   - A line saying the modem restarted (AddRestartIndication: ^SYSSTART,
//     RDY) fails the command in flight with *RestartedError when no final
//     result code follows within restartGrace: the modem forgot the
//     command and will never answer it (not waiting for its timeout, a
//     minute for a send).
//   - A read or write error (EOF, device unplugged) fails the command in flight
//     and all later ones with *ClosedError and closes Done().
//
// The session never closes the io.ReadWriter: its owner does. Closing the port
// is also the only way to stop the reader goroutine if it is blocked in Read.
package at

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Options configure a Session. Zero values take the defaults.
type Options struct {
	// Logger receives errors and, with Trace, the transcript. Default: nop.
	Logger *zap.Logger
	// Timeout bounds every plain command (Command), also when its context
	// allows longer, and an SMS command (SMSCommand) whose context has no
	// deadline, and the wait for an SMS command's "> " prompt. Default 10s.
	Timeout time.Duration
	// Trace logs every line read and written at debug level (the PIN of
	// AT+CPIN="..." is masked).
	Trace bool
	// GuardTime is how long the late answer of a timed-out command is
	// dropped after it (and after ESC). Default 300ms.
	GuardTime time.Duration
	// IndicationQueue is the capacity of the URC queue. Default 64.
	IndicationQueue int
}

// IndicationHandler receives a URC: its first line and its trailing lines.
type IndicationHandler func(lines []string)

type indication struct {
	prefix   string
	trailing int
	handler  IndicationHandler
	restart  bool // the modem restarted: the command in flight fails (AddRestartIndication)
}

type request struct {
	ctx    context.Context
	cmd    string
	pdu    string // hex, only for an SMS command
	abort  bool   // Abort: ESC, then the guard time
	guard  time.Duration
	result chan result
}

type result struct {
	info []string
	err  error
}

type readEvent struct {
	line   string
	prompt bool
}

type urc struct {
	ind   *indication
	lines []string
}

// Session is one AT session. All methods are safe for concurrent use.
type Session struct {
	rw   io.ReadWriter // read by the reader goroutine, written by the owner
	opts Options
	log  *zap.Logger

	reqs    chan *request  // callers -> owner
	events  chan readEvent // reader -> owner
	readErr chan error     // reader -> owner (once)
	indq    chan urc       // owner -> dispatcher
	closing chan struct{}  // closed by Close
	done    chan struct{}  // closed by the owner when it exits

	closeOnce sync.Once

	mu   sync.Mutex
	inds []*indication // guarded by mu; written by AddIndication, read by owner
	err  error         // guarded by mu; why the session ended
}

// New starts a session on rw.
func New(rw io.ReadWriter, opts Options) *Session {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.GuardTime <= 0 {
		opts.GuardTime = 300 * time.Millisecond
	}
	if opts.IndicationQueue <= 0 {
		opts.IndicationQueue = 64
	}
	s := &Session{
		rw:      rw,
		opts:    opts,
		log:     opts.Logger,
		reqs:    make(chan *request),
		events:  make(chan readEvent, 16),
		readErr: make(chan error, 1),
		indq:    make(chan urc, opts.IndicationQueue),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.readLoop()
	go s.ownerLoop()
	go s.dispatchLoop()
	return s
}

// AddIndication registers a URC by its prefix (e.g. "+CMTI:", "RING") with the
// number of lines that follow it (+CDS: 1, +CMT: 1, +CMTI: 0).
func (s *Session) AddIndication(prefix string, trailingLines int, h IndicationHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inds = append(s.inds, &indication{prefix: prefix, trailing: trailingLines, handler: h})
}

// AddRestartIndication registers the line a modem writes when it has
// restarted ("^SYSSTART", "RDY"): a URC as with AddIndication, and the
// command in flight fails with ErrModemRestarted unless its final result
// code follows within restartGrace, since its answer will never come (a
// send then has an unknown outcome, as at a timeout).
func (s *Session) AddRestartIndication(prefix string, h IndicationHandler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inds = append(s.inds, &indication{prefix: prefix, handler: h, restart: true})
}

// Command sends cmd ("AT" is prepended when missing) and returns the
// information lines of the answer (without echo, URCs and the final OK).
func (s *Session) Command(ctx context.Context, cmd string) ([]string, error) {
	return s.do(ctx, cmd, "")
}

// SMSCommand sends cmd (AT+CMGS=<len> or AT+CMGW=<len>), waits for the "> "
// prompt, writes pdu (hex) and Ctrl-Z, and returns the answer lines.
func (s *Session) SMSCommand(ctx context.Context, cmd, pdu string) ([]string, error) {
	return s.do(ctx, cmd, pdu)
}

// Abort writes ESC, which ends a "> " prompt left open by whoever used the
// port before (27.005 §3.5.1: a process killed between AT+CMGS and its PDU
// leaves the modem taking every later character as PDU text), and then drops
// the lines that are not URCs for guard (the session's GuardTime when 0):
// the modem's answer to the ESC, or a late answer of a command of that
// process. A modem in command state ignores the ESC. It returns once the
// guard time has passed.
func (s *Session) Abort(ctx context.Context, guard time.Duration) error {
	if guard <= 0 {
		guard = s.opts.GuardTime
	}
	r := &request{ctx: ctx, cmd: "<ESC>", abort: true, guard: guard, result: make(chan result, 1)}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return &TimeoutError{Cmd: r.cmd, Err: ctx.Err()}
	case <-s.done:
		return s.Err()
	}
	if res := <-r.result; res.err != nil {
		return res.err
	}
	select { // the guard time: the owner takes no request until it passes
	case s.reqs <- nil:
		return nil
	case <-ctx.Done():
		return &TimeoutError{Cmd: r.cmd, Err: ctx.Err()}
	case <-s.done:
		return s.Err()
	}
}

// Done is closed when the session has ended (port broken or Close).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended (*ClosedError), or nil while it runs.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: pending commands fail with *ClosedError. It does
// not close the port.
func (s *Session) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	<-s.done
}

func (s *Session) do(ctx context.Context, cmd, pdu string) ([]string, error) {
	if !strings.HasPrefix(strings.ToUpper(cmd), "AT") {
		cmd = "AT" + cmd
	}
	// A plain command is always bounded by the command timeout, whatever
	// the caller's context allows: a caller's deadline may be minutes
	// away (a message's), and a modem that stopped answering would hold
	// its owner that long. An SMS command's context is its bound (the
	// send timeout, which allows for the network), the command timeout
	// when it has none; its "> " prompt has the command timeout.
	if _, ok := ctx.Deadline(); !ok || pdu == "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
	}
	r := &request{ctx: ctx, cmd: cmd, pdu: pdu, result: make(chan result, 1)}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return nil, &TimeoutError{Cmd: cmd, Err: ctx.Err()}
	case <-s.done:
		return nil, s.Err()
	}
	res := <-r.result // the owner always answers a request it accepted
	return res.info, res.err
}

// restartGrace is how long a command may still get its final result code
// after a restart line (AddRestartIndication) came in its answer: a modem
// that writes its boot notice as chatter answers at once; one that
// restarted never does.
const restartGrace = time.Second

// maxLine bounds a line: the longest we read is a PDU line (at most 2 x
// 176 hex digits) or an information line of a few hundred characters. A
// longer run without a line end is noise (wrong baud rate, bad cable) and
// is dropped up to the next line end.
const maxLine = 4096

// readLoop is the reader goroutine: bytes -> lines and prompts.
func (s *Session) readLoop() {
	buf := make([]byte, 512)
	var line []byte
	overlong := false // dropping the rest of an overlong line
	emit := func(ev readEvent) bool {
		select {
		case s.events <- ev:
			return true
		case <-s.done:
			return false
		}
	}
	for {
		n, err := s.rw.Read(buf)
		for _, b := range buf[:n] {
			switch b {
			case '\r', '\n':
				if l := strings.TrimSpace(string(line)); l != "" && !overlong {
					if !emit(readEvent{line: l}) {
						return
					}
				}
				line, overlong = line[:0], false
			case 0x1a, 0x1b, 0: // echoed Ctrl-Z / ESC, NUL noise
			default:
				if overlong {
					continue
				}
				if len(line) >= maxLine {
					s.log.Warn("at: line without end longer than maxLine dropped", zap.Int("max", maxLine))
					line, overlong = line[:0], true
					continue
				}
				line = append(line, b)
				if len(line) == 2 && line[0] == '>' && line[1] == ' ' {
					if !emit(readEvent{prompt: true}) {
						return
					}
					line = line[:0]
				}
			}
		}
		// A lone ">" at the end of a read is the prompt of modems that omit
		// the space.
		if len(line) == 1 && line[0] == '>' {
			if !emit(readEvent{prompt: true}) {
				return
			}
			line = line[:0]
		}
		if err != nil {
			s.readErr <- err
			return
		}
	}
}

// dispatchLoop is the dispatcher goroutine: URC handlers, in order.
func (s *Session) dispatchLoop() {
	for {
		select {
		case u := <-s.indq:
			u.ind.handler(u.lines)
		case <-s.done:
			for {
				select {
				case u := <-s.indq:
					u.ind.handler(u.lines)
				default:
					return
				}
			}
		}
	}
}

func (s *Session) trace(dir, text string) {
	if !s.opts.Trace {
		return
	}
	if strings.HasPrefix(strings.ToUpper(text), "AT+CPIN=") {
		text = "AT+CPIN=<masked>"
	}
	s.log.Debug("at "+dir, zap.String("line", text))
}

func (s *Session) match(line string) *indication {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ind := range s.inds {
		if strings.HasPrefix(line, ind.prefix) {
			return ind
		}
	}
	return nil
}

// answers reports whether the line's own prefix names the command cmd
// ("+CREG: 0,1" and "AT+CREG?"). The line's name, not the indication's
// prefix, decides: an indication registered as "^" catches every Huawei
// "^XXX:" line, and "^SYSINFO: ..." still answers AT^SYSINFO.
func answers(cmd, line string) bool {
	name, _, _ := strings.Cut(line, ":")
	name = strings.TrimSpace(name)
	if !strings.HasPrefix(name, "+") && !strings.HasPrefix(name, "^") {
		return false
	}
	return strings.HasPrefix(strings.ToUpper(cmd), "AT"+strings.ToUpper(name))
}

// ownerLoop is the owner goroutine. Its locals are the session state:
// cur (the command in flight), info (its answer so far), pending (a URC
// waiting for its trailing lines), guard (drop late answers until it fires).
func (s *Session) ownerLoop() {
	var (
		cur         *request
		info        []string
		awaitPrompt bool
		prompt      *time.Timer // bounds the wait for "> " (the command timeout)
		promptC     <-chan time.Time
		pending     *urc
		guard       *time.Timer
		guardC      <-chan time.Time
		restart     *time.Timer // a restart line came during the command in flight
		restartC    <-chan time.Time
		restartLine string
	)
	stopPrompt := func() {
		if prompt != nil {
			prompt.Stop()
		}
		promptC = nil
	}
	finish := func(err error) {
		cur.result <- result{info: info, err: err}
		cur, info, awaitPrompt = nil, nil, false
		stopPrompt()
		if restart != nil {
			restart.Stop()
		}
		restartC = nil
	}
	shutdown := func(cause error) {
		ce := &ClosedError{Err: cause}
		s.mu.Lock()
		s.err = ce
		s.mu.Unlock()
		if cur != nil {
			finish(ce)
		}
		if guard != nil {
			guard.Stop()
		}
		stopPrompt()
		close(s.done)
		// Requests already handed over cannot exist (reqs is unbuffered);
		// callers blocked on reqs see done.
	}
	write := func(text string) error {
		s.trace("tx", strings.TrimRight(text, "\r\x1a"))
		_, err := io.WriteString(s.rw, text)
		return err
	}
	for {
		var reqs chan *request
		if cur == nil && guardC == nil {
			reqs = s.reqs
		}
		var ctxDone <-chan struct{}
		if cur != nil {
			ctxDone = cur.ctx.Done()
		}
		select {
		case <-s.closing:
			shutdown(nil)
			return
		case err := <-s.readErr:
			shutdown(err)
			return
		case <-guardC:
			guardC = nil
		case r := <-reqs:
			if r == nil { // Abort waiting out its guard time: it has passed
				continue
			}
			if r.abort {
				if err := write("\x1b"); err != nil {
					shutdown(err)
					return
				}
				r.result <- result{}
				guard = time.NewTimer(r.guard)
				guardC = guard.C
				continue
			}
			if err := r.ctx.Err(); err != nil {
				r.result <- result{err: &TimeoutError{Cmd: r.cmd, Err: err}}
				continue
			}
			cur, info = r, nil
			awaitPrompt = r.pdu != ""
			if err := write(r.cmd + "\r"); err != nil {
				shutdown(err)
				return
			}
			if awaitPrompt {
				prompt = time.NewTimer(s.opts.Timeout)
				promptC = prompt.C
			}
		case <-promptC:
			// No "> " within the command timeout: the modem did not take
			// the command, and the PDU was never written.
			promptC = nil
			if err := write("\x1b"); err != nil {
				shutdown(err)
				return
			}
			s.log.Warn("no > prompt to an SMS command", zap.String("cmd", cur.cmd))
			finish(&TimeoutError{Cmd: cur.cmd, Err: ErrNoPrompt})
			guard = time.NewTimer(s.opts.GuardTime)
			guardC = guard.C
		case <-restartC:
			// The modem restarted and gave no final result since: it
			// forgot the command, whose answer will never come.
			restartC = nil
			s.log.Warn("modem restarted during a command", zap.String("cmd", maskCmd(cur.cmd)), zap.String("line", restartLine))
			finish(&RestartedError{Cmd: maskCmd(cur.cmd), Line: restartLine})
			guard = time.NewTimer(s.opts.GuardTime)
			guardC = guard.C
		case <-ctxDone:
			if awaitPrompt || cur.pdu != "" {
				// Abort the prompt or the send (27.005 §3.5.1: ESC cancels).
				if err := write("\x1b"); err != nil {
					shutdown(err)
					return
				}
			}
			s.log.Warn("at command timed out", zap.String("cmd", maskCmd(cur.cmd)))
			finish(&TimeoutError{Cmd: maskCmd(cur.cmd), Err: cur.ctx.Err()})
			guard = time.NewTimer(s.opts.GuardTime)
			guardC = guard.C
		case ev := <-s.events:
			if ev.prompt {
				s.trace("rx", ">")
				if cur != nil && awaitPrompt {
					awaitPrompt = false
					stopPrompt()
					if err := write(cur.pdu + "\x1a"); err != nil {
						shutdown(err)
						return
					}
				}
				continue
			}
			line := ev.line
			s.trace("rx", line)
			if pending != nil {
				pending.lines = append(pending.lines, line)
				if len(pending.lines) > pending.ind.trailing {
					if !s.queue(*pending) {
						shutdown(nil)
						return
					}
					pending = nil
				}
				continue
			}
			if ind := s.match(line); ind != nil && (cur == nil || !answers(cur.cmd, line)) {
				u := urc{ind: ind, lines: []string{line}}
				if ind.trailing == 0 {
					if !s.queue(u) {
						shutdown(nil)
						return
					}
				} else {
					pending = &u
				}
				if ind.restart && cur != nil && restartC == nil {
					// A modem that restarted never answers the command
					// in flight; one that only chatters its boot notice
					// answers it now.
					restartLine = line
					restart = time.NewTimer(restartGrace)
					restartC = restart.C
				}
				continue
			}
			if cur == nil {
				if guardC == nil {
					s.log.Debug("at: unsolicited line dropped", zap.String("line", line))
				}
				continue
			}
			if strings.EqualFold(line, cur.cmd) || (cur.pdu != "" && strings.EqualFold(line, cur.pdu)) {
				continue // echo
			}
			final, err := parseFinal(line)
			if awaitPrompt && (!final || err == nil) {
				// 27.005 §3.5.1: before its prompt an SMS command gets only
				// "> " or an error. An OK or an information line now is the
				// late answer of an earlier command (a send that timed out
				// while the modem was already transmitting): taking it as
				// this one's would report this message sent, never sent.
				s.log.Warn("at: late answer of an earlier command ignored while waiting for the prompt",
					zap.String("cmd", maskCmd(cur.cmd)), zap.String("line", line))
				continue
			}
			if final {
				finish(err)
				continue
			}
			info = append(info, line)
		}
	}
}

// queue hands a URC to the dispatcher; false when the session is closing.
func (s *Session) queue(u urc) bool {
	select {
	case s.indq <- u:
		return true
	case <-s.closing:
		return false
	}
}

func maskCmd(cmd string) string {
	if strings.HasPrefix(strings.ToUpper(cmd), "AT+CPIN=") {
		return "AT+CPIN=<masked>"
	}
	return cmd
}

// Fields splits the parameters of an information line "+XXX: a,b,"c"" into
// its fields, unquoting quoted ones. The prefix up to ": " is dropped.
func Fields(line string) []string {
	if i := strings.Index(line, ":"); i >= 0 && (strings.HasPrefix(line, "+") || strings.HasPrefix(line, "^")) {
		line = line[i+1:]
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return nil
	}
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range line {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// Int parses field i of fields as an integer.
func Int(fields []string, i int) (int, bool) {
	if i >= len(fields) {
		return 0, false
	}
	n, err := strconv.Atoi(fields[i])
	return n, err == nil
}
