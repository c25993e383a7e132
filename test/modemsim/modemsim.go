// Package modemsim emulates a Siemens TC35i GSM modem behind a real
// pseudo-terminal, for end-to-end tests and `spareline demo`.
//
// The device path (Path) is a symlink to the pty slave, so a client opens it
// exactly like /dev/ttyUSB0 (go.bug.st/serial works on it). Unplug closes the
// pty and removes the link, as a vanished USB device; Replug creates a new
// pty and re-points the same path at it. The emulator keeps the slave open
// itself, so the client may close and reopen the path at will.
//
// Behaviour (27.005 PDU mode): echo is on after power-up (and after Replug)
// until ATE0; AT+CMGS=<n> answers the "> " prompt, reads the hex PDU up to
// Ctrl-Z (ESC cancels), decodes it with sms.DecodeSubmit, waits SendDelay,
// then answers "+CMGS: <mr>" and records the message (parts of a
// concatenated message are joined). A message counts as sent only once the
// +CMGS answer is written. With TP-SRR, a +CDS status report follows after
// ReportDelay when AT+CNMI asked for ds=1 (with ds=2 the report is stored
// and announced with +CDSI; AT+CPMS names one memory). Deliver stores incoming messages
// in the SIM memory and announces them with +CMTI.
//
// Faults, switchable at any time: Reset / ResetQuiet (a restart on the open
// port, with or without ^SYSSTART), FailNext and FailAfter (+CMS ERROR; FailAfter
// lets some sends go first: part 2 of a message refused), Hang (no answer to
// a send), HoldSends (a send waits before its answer until released), UnplugOnNextSend (the port vanishes after the PDU was received,
// before it is sent), RestartOnNextSend (a power cycle there: no answer, then ^SYSSTART), SetSIMReady(false) (+CME ERROR: 10, CMS 310 on send),
// SetRegistered(false) (+CREG: 0,0, CMS 331 on send), SetGarbage (noise
// instead of answers), SetGarbageOnSend (noise instead of the +CMGS answer),
// SetRegStat (any +CREG <stat>), InjectReport (a +CDS for any TP-MR and
// recipient), StoreReport (one kept in the SIM memory, unannounced, for the
// client's next start), FailCommand (ERROR to one given command, once), ReplaceStored
// and AnnounceStored (a new message in the slot of one deleted meanwhile).
//
// Variants of other makers and stored profiles (Options): TextMode (AT+CMGF=1
// at power-up and after a restart; StuckTextMode ignores AT+CMGF=0), ResetKeepsCNMI, Numeric (ATV0
// result codes), CMEE (verbose errors), Refuse/RefuseWith (Huawei's
// COMMAND NOT SUPPORT), Chatter (^RSSI, +CPIN: READY... inside answers),
// Mem (+CMTI/+CDSI memory), NoSCA, NoSMSC, SIMBusy, BootDelay, PIN (three wrong PINs
// block the SIM). Count and WaitCount tell what the client asked.
package modemsim

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"github.com/spareline/spareline/modem/sms"
	"golang.org/x/sys/unix"
)

// encodeDeliver and encodeStatusReport are the codec's encoders
// (sms.EncodeDeliver, sms.EncodeStatusReport).
var (
	encodeDeliver      = sms.EncodeDeliver
	encodeStatusReport = sms.EncodeStatusReport
)

// Options configure a Sim.
type Options struct {
	Name         string        // used in the device file name
	Dir          string        // directory of the device symlink; default a new temp dir (removed by Close)
	SendDelay    time.Duration // per SMS part, between the PDU and the +CMGS answer
	ReportDelay  time.Duration // between +CMGS and +CDS
	ReportStatus byte          // TP-ST of the status reports (0 = delivered)
	Manufacturer string        // default "SIEMENS"
	Model        string        // default "TC35i"
	PIN          string        // when set, the SIM asks for it after each power-up; 3 wrong PINs block it (SIM PUK)
	SMSC         string        // default "+8613800100500"
	Signal       int           // +CSQ rssi, default 20
	// Refuse lists commands (upper case, without "AT", e.g. "+CNMI=2,1,0,1,0")
	// answered ERROR, as a modem that lacks a mode or a feature does.
	Refuse []string
	// RefuseWith is the final result code of a refused command; default
	// "ERROR" (a Huawei answers "COMMAND NOT SUPPORT").
	RefuseWith string
	// NoSCA leaves the SMSC address field out of the PDUs it gives (+CDS,
	// +CMGR, +CMGL), as some modems do; the announced length is the TPDU's
	// either way.
	NoSCA bool
	// Numeric starts every power-up in ATV0 (a stored profile with numeric
	// result codes: "0<CR>" for OK, "4<CR>" for ERROR) until ATV1.
	Numeric bool
	// CMEE is the error format at power-up (AT+CMEE: 0 bare ERROR, 1
	// numbers, 2 words), as a stored profile sets it.
	CMEE int
	// NoSMSC leaves the SIM without an SMSC address: AT+CSCA? answers
	// `+CSCA: "",129` and sends fail with +CMS ERROR: 330 (SMSC address
	// unknown), until AT+CSCA=<number> sets one.
	NoSMSC bool
	// BootDelay is how long the modem ignores what it receives after each
	// power-up; then it writes "^SYSSTART".
	BootDelay time.Duration
	// SIMBusy answers the first n message-service commands after each
	// power-up (AT+CNMI, AT+CPMS, AT+CSMS, AT+CMGL/R/S/D) with +CMS ERROR: 314,
	// "SIM busy", as a SIM still reading its files after boot or PIN entry.
	SIMBusy int
	// PINBusy answers the first n AT+CPIN=<pin> with +CME ERROR: 14, "SIM
	// busy" (27.007 §9.2.1), as a SIM not ready to take its PIN yet: no
	// try is used.
	PINBusy int
	// CMGSForm is the format of the answer to AT+CMGS (default "+CMGS: %d"),
	// e.g. "+cmgs:%d" for a modem that answers in lower case.
	CMGSForm string
	// Mem is the memory +CMTI and +CDSI name (default "SM"; AT+CPMS? says
	// "SM" is <mem1>). The emulator has one memory under every name, so a
	// test checks with Count("+CPMS=") that the client selected it.
	Mem string
	// Phase2Plus makes AT+CSMS? answer service 1 (27.005 §3.2.1): every
	// routed +CDS must be acknowledged with AT+CNMA within AckTimeout
	// (default 10s), or the modem stops routing: it sets <mt> and <ds> of
	// AT+CNMI to 0 (27.005 §3.4.4). AT+CNMA with nothing to acknowledge
	// answers +CMS ERROR: 340.
	Phase2Plus bool
	AckTimeout time.Duration
	// CNMIRead, when set, is what AT+CNMI? answers whatever was set (e.g.
	// "2,1,0,0,1": firmware that words the setting otherwise than it was
	// given).
	CNMIRead string
	// Chatter are unsolicited lines written inside every answer, before its
	// information text, as a Huawei writes ^RSSI / ^BOOT / ^MODE and a
	// SIMCom "+CPIN: READY", "Call Ready" and "SMS Ready" at any time.
	Chatter []string
	// TextMode is a stored profile with AT+CMGF=1 (27.005 §3.2.3): every
	// power-up and restart starts in text mode until AT+CMGF=0. In text
	// mode AT+CMGS=<da> takes <da> as the number and what follows the
	// prompt as the text (a hex PDU given then goes out as text to the
	// number "<length>"), AT+CMGR/AT+CMGL answer in the text form, and
	// AT+CMGL=4 is refused (text mode says "ALL").
	TextMode bool
	// StuckTextMode answers OK to AT+CMGF=0 but stays in text mode
	// (broken firmware): for the client's last line of defence.
	StuckTextMode bool
	// ResetKeepsCNMI: a restart keeps the AT+CNMI setting (a profile
	// stored with AT&W holds it), so AT+CNMI? does not tell the restart.
	ResetKeepsCNMI bool
	// ListNewestFirst makes AT+CMGL list the highest index first, as some
	// firmware does.
	ListNewestFirst bool
}

// Message is one message the emulated modem sent (parts joined).
type Message struct {
	Dest         string
	Text         string
	Data         []byte
	DCS          byte
	Parts        int
	MRs          []int
	StatusReport bool
	// UDHs is each part's user data header (without UDHL; nil for a part
	// without one), in sequence order.
	UDHs [][]byte
	At   time.Time // when the (last part's) +CMGS answer was written
	// PartsAt is when each part's +CMGS answer was written, in the order
	// the parts were sent.
	PartsAt []time.Time
	// TextMode: sent in text mode (AT+CMGF=1): Dest is what AT+CMGS
	// named and Text what followed the prompt.
	TextMode bool
}

// Sim is one emulated modem.
type Sim struct {
	opts Options
	path string
	dir  string // removed by Close when we created it

	mu       sync.Mutex
	conn     *conn                       // guarded by mu: the current pty, nil when unplugged
	sent     []Message                   // guarded by mu
	notify   chan struct{}               // guarded by mu: closed and replaced on each sent message
	partial  map[string][]*sms.SubmitPDU // guarded by mu: concatenated parts by dest/ref
	partMRs  map[string][]int            // guarded by mu
	partAt   map[string][]time.Time      // guarded by mu
	store    map[int][]byte              // guarded by mu: SIM memory, index -> PDU with SMSC field
	outgoing map[int]bool                // guarded by mu: slots of store holding stored outgoing messages (<stat> 3, STO SENT)
	mem1     string                      // guarded by mu: the <mem1> AT+CPMS last selected ("SM" at power-up; kept across the client's restarts)
	mr       int                         // guarded by mu: last TP-MR
	failCode int                         // guarded by mu
	failLeft int                         // guarded by mu
	failSkip int                         // guarded by mu: sends let go before the failLeft ones (FailAfter)
	submits  []Submit                    // guarded by mu: every part sent, in order
	hang     bool                        // guarded by mu
	unplugAt bool                        // guarded by mu
	resetAt  bool                        // guarded by mu: RestartOnNextSend
	simReady bool                        // guarded by mu
	reg      bool                        // guarded by mu
	regStat  int                         // guarded by mu: +CREG <stat> set by SetRegStat; 0 = from reg
	garbage  bool                        // guarded by mu
	garbSend bool                        // guarded by mu
	pinTries int                         // guarded by mu: wrong PINs entered; 3 block the SIM (PUK)
	muted    bool                        // guarded by mu: Mute
	failCmds []string                    // guarded by mu: FailCommand, each answered ERROR once
	held     chan struct{}               // guarded by mu: HoldSends; closed to release the held sends
	pinBusy  int                         // guarded by mu: AT+CPIN=<pin> answered SIM busy so far (Options.PINBusy)
	smsc     string                      // guarded by mu: the SIM's SMSC address ("" none)
	signal   int                         // guarded by mu: the +CSQ <rssi> (Options.Signal, SetSignal)
	counts   map[string]int              // guarded by mu: commands received, by body ("+CPIN?")
	cmdSeen  chan struct{}               // guarded by mu: closed and replaced on each command
	closed   bool                        // guarded by mu
	wg       sync.WaitGroup
}

// conn is one power-up of the modem on one pty.
type conn struct {
	master, slave *os.File
	gone          chan struct{} // closed on unplug

	wmu sync.Mutex // serialises writes to master

	// owned by the serve goroutine:
	echo     bool
	numeric  bool     // ATV0: numeric result codes
	chatter  []string // Options.Chatter
	busyLeft int      // Options.SIMBusy left
	cmee     int
	unlocked bool
	cnmiMT   int
	cnmiDS   int
	cmgf     int    // 27.005 §3.2.3: 0 PDU mode, 1 text mode
	textDA   string // text mode: the number the current AT+CMGS named
	cnmi     string // guarded by wmu: the AT+CNMI setting as AT+CNMI? gives it
	unacked  []int  // guarded by wmu: the routed +CDS not acknowledged yet (Phase2Plus), oldest first
	cdsSeq   int    // guarded by wmu

	resetPending bool // guarded by wmu: Reset asked the serve goroutine to forget its settings
}

// Start powers up an emulated modem. ctx bounds its life (Close also ends it).
func Start(ctx context.Context, opts Options) (*Sim, error) {
	if opts.Manufacturer == "" {
		opts.Manufacturer = "SIEMENS"
	}
	if opts.Model == "" {
		opts.Model = "TC35i"
	}
	if opts.SMSC == "" {
		opts.SMSC = "+8613800100500"
	}
	if opts.Mem == "" {
		opts.Mem = "SM"
	}
	if opts.Signal == 0 {
		opts.Signal = 20
	}
	if opts.Name == "" {
		opts.Name = "tc35i"
	}
	s := &Sim{opts: opts, notify: make(chan struct{}), partial: map[string][]*sms.SubmitPDU{},
		partMRs: map[string][]int{}, partAt: map[string][]time.Time{}, store: map[int][]byte{}, mem1: "SM", simReady: true, reg: true,
		counts: map[string]int{}, cmdSeen: make(chan struct{})}
	if !opts.NoSMSC {
		s.smsc = opts.SMSC
	}
	s.signal = opts.Signal
	s.dir = opts.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "modemsim")
		if err != nil {
			return nil, err
		}
		s.dir = d
	}
	s.path = filepath.Join(s.dir, opts.Name)
	if err := s.Replug(); err != nil {
		return nil, err
	}
	if ctx.Done() != nil {
		go func() {
			<-ctx.Done()
			_ = s.Close()
		}()
	}
	return s, nil
}

// Path is the device path to open.
func (s *Sim) Path() string { return s.path }

// Close unplugs the modem for good and removes its files.
func (s *Sim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.Unplug()
	s.wg.Wait()
	if s.opts.Dir == "" {
		return os.RemoveAll(s.dir)
	}
	return nil
}

// Unplug makes the device vanish: the pty is closed (the client's reads
// fail) and the path no longer exists.
func (s *Sim) Unplug() {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c == nil {
		return
	}
	_ = os.Remove(s.path)
	close(c.gone)
	_ = c.master.Close()
	_ = c.slave.Close()
}

// Reset restarts the modem on the same port, as a watchdog or a brown-out
// does to a modem on a serial line (the port stays open): it forgets its
// settings (echo on, no AT+CNMI, error format and result code form of
// power-up, SIM locked again when it has a PIN) and writes "^SYSSTART".
func (s *Sim) Reset() { s.reset(true) }

// ResetQuiet restarts the modem as Reset does but says nothing, as a
// TC35i set to autobauding does (it cannot write ^SYSSTART before it has
// learnt the bit rate from the next "AT").
func (s *Sim) ResetQuiet() { s.reset(false) }

func (s *Sim) reset(notice bool) {
	s.mu.Lock()
	c := s.conn
	s.mem1 = "SM" // a restart forgets the AT+CPMS selection
	s.mu.Unlock()
	if c == nil {
		return
	}
	c.wmu.Lock()
	if !s.opts.ResetKeepsCNMI {
		c.cnmiMT, c.cnmiDS, c.cnmi = 0, 0, ""
	}
	c.unacked = nil
	c.resetPending = true // the serve goroutine resets its own state
	c.wmu.Unlock()
	if notice {
		c.urc("^SYSSTART", nil)
	}
}

// Replug powers the modem up on a new pty behind the same path.
func (s *Sim) Replug() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("modemsim: closed")
	}
	old := s.conn
	s.mu.Unlock()
	if old != nil {
		s.Unplug()
	}
	master, slave, err := pty.Open()
	if err != nil {
		return fmt.Errorf("modemsim: open pty: %w", err)
	}
	if err := makeRaw(slave); err != nil {
		_ = master.Close()
		_ = slave.Close()
		return err
	}
	tmp := s.path + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(slave.Name(), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return err
	}
	c := &conn{master: master, slave: slave, gone: make(chan struct{}), echo: true, cmee: s.opts.CMEE, numeric: s.opts.Numeric, chatter: s.opts.Chatter, busyLeft: s.opts.SIMBusy, cmgf: s.textProfile()}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	s.wg.Add(1)
	go s.serve(c)
	return nil
}

// makeRaw turns off echo and line editing on the slave until the client
// sets its own mode, as a real UART has none.
func makeRaw(f *os.File) error {
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("modemsim: termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

func (s *Sim) noSMSC() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.smsc == ""
}

// Sent returns the messages sent so far, in order.
func (s *Sim) Sent() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.sent...)
}

// WaitSent waits until at least n messages were sent.
func (s *Sim) WaitSent(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		got, ch := len(s.sent), s.notify
		s.mu.Unlock()
		if got >= n {
			return s.Sent(), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Sent(), fmt.Errorf("modemsim: %d of %d messages sent: %w", got, n, ctx.Err())
		}
	}
}

// Count is how many times the modem received the command (upper case,
// without "AT", a set command without its parameters: "+CPIN?", "+CPIN=",
// "+CMGS=").
func (s *Sim) Count(cmd string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[cmd]
}

// WaitCount waits until the modem received cmd at least n times.
func (s *Sim) WaitCount(ctx context.Context, cmd string, n int) error {
	for {
		s.mu.Lock()
		got, ch := s.counts[cmd], s.cmdSeen
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("modemsim: %s received %d of %d times: %w", cmd, got, n, ctx.Err())
		}
	}
}

// PINBlocked reports whether three wrong PINs blocked the SIM (it asks for
// the PUK).
func (s *Sim) PINBlocked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pinTries >= 3
}

// Mem1 is the memory AT+CPMS last selected as <mem1> (the one AT+CMGL,
// AT+CMGR and AT+CMGD work on; "SM" at power-up).
func (s *Sim) Mem1() string { s.mu.Lock(); defer s.mu.Unlock(); return s.mem1 }

// StoreOutgoing puts an outgoing message (pdu: SMS-SUBMIT, its SMSC
// address field first) in the first free slot as a handset does that saved
// it (27.005 <stat> 3, STO SENT), and returns the slot.
func (s *Sim) StoreOutgoing(pdu []byte) (int, error) {
	i, err := s.storePDU(pdu)
	if err == nil {
		s.mu.Lock()
		if s.outgoing == nil {
			s.outgoing = map[int]bool{}
		}
		s.outgoing[i] = true
		s.mu.Unlock()
	}
	return i, err
}

// Stored is the number of messages in the SIM memory.
func (s *Sim) Stored() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.store)
}

// FailNext answers the next n sends with +CMS ERROR: code.
func (s *Sim) FailNext(code, n int) { s.FailAfter(0, code, n) }

// FailAfter lets the next k sends go (each part of a message is a send),
// then answers the n after them with +CMS ERROR: code: FailAfter(1, 42,
// 1) refuses part 2 of the next message once.
func (s *Sim) FailAfter(k, code, n int) {
	s.mu.Lock()
	s.failSkip, s.failCode, s.failLeft = k, code, n
	s.mu.Unlock()
}

// Submit is one SMS-SUBMIT the modem sent (one part of a message).
type Submit struct {
	Dest string
	// Ref, Seq and Total are its concatenation element's (23.040
	// §9.2.3.24.1); 0 for a message of one part.
	Ref, Seq, Total int
	MR              int
	Text            string
}

// Submits returns every part sent so far (Sent joins the parts of a
// concatenated message), in the order they were sent.
func (s *Sim) Submits() []Submit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Submit(nil), s.submits...)
}

// Mute makes the modem answer no command at all (firmware hung, the port
// still open); it still counts them.
func (s *Sim) Mute(on bool) { s.mu.Lock(); s.muted = on; s.mu.Unlock() }

// FailCommand makes the next command that is exactly cmd (case-insensitive,
// without the "AT", e.g. "+CMGD=2") fail with ERROR, once.
func (s *Sim) FailCommand(cmd string) {
	s.mu.Lock()
	s.failCmds = append(s.failCmds, strings.ToUpper(cmd))
	s.mu.Unlock()
}

// Hang makes sends get no answer at all (the PDU is swallowed, not sent).
func (s *Sim) Hang(on bool) { s.mu.Lock(); s.hang = on; s.mu.Unlock() }

// HoldSends(true) holds every send after its PDU is received, before any
// answer to it (+CMGS or an error) (a send in progress for as long as a test needs);
// HoldSends(false) lets the held sends and the following ones go on.
func (s *Sim) HoldSends(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.held == nil:
		s.held = make(chan struct{})
	case !on && s.held != nil:
		close(s.held)
		s.held = nil
	}
}

// UnplugOnNextSend unplugs the device when the next PDU has been received,
// before it is sent.
func (s *Sim) UnplugOnNextSend() { s.mu.Lock(); s.unplugAt = true; s.mu.Unlock() }

// RestartOnNextSend makes the modem restart (as Reset: a power cycle on
// the open port) when the next PDU has been received, before it is sent:
// the send gets no answer, then "^SYSSTART" comes.
func (s *Sim) RestartOnNextSend() { s.mu.Lock(); s.resetAt = true; s.mu.Unlock() }

// SetSignal sets the +CSQ <rssi> (27.007 §8.5: 0-31, 99 not known).
func (s *Sim) SetSignal(rssi int) { s.mu.Lock(); s.signal = rssi; s.mu.Unlock() }

// SetSIMReady switches the SIM between ready and "not ready" (CME 10).
func (s *Sim) SetSIMReady(ok bool) { s.mu.Lock(); s.simReady = ok; s.mu.Unlock() }

// SetRegistered switches network registration (+CREG: 0,1 / 0,0).
func (s *Sim) SetRegistered(ok bool) {
	s.mu.Lock()
	s.reg, s.regStat = ok, 0
	s.mu.Unlock()
}

// SetRegStat sets the +CREG <stat> the modem reports (27.007 §7.2: 0 not
// searching, 1 home, 2 searching, 3 denied, 4 unknown, 5 roaming, 6/7 SMS
// only home/roaming, 9/10 CSFB not preferred home/roaming); sends work in
// 1, 5, 6, 7, 9 and 10.
func (s *Sim) SetRegStat(stat int) {
	s.mu.Lock()
	s.regStat = stat
	s.reg = slices.Contains([]int{1, 5, 6, 7, 9, 10}, stat)
	s.mu.Unlock()
}

// SetGarbage makes the modem answer noise instead of result codes.
func (s *Sim) SetGarbage(on bool) { s.mu.Lock(); s.garbage = on; s.mu.Unlock() }

// SetGarbageOnSend makes AT+CMGS give its "> " prompt and read the PDU as
// usual, then answer noise (binary junk and malformed lines, no final result
// code) instead of "+CMGS: <mr>"; the message is not sent. Other commands
// are answered normally.
func (s *Sim) SetGarbageOnSend(on bool) { s.mu.Lock(); s.garbSend = on; s.mu.Unlock() }

// Deliver stores an incoming message from `from` (several parts when long)
// and announces each part with +CMTI.
func (s *Sim) Deliver(from, text string) error {
	pdus, err := encodeDeliver(from, text, time.Now())
	if err != nil {
		return err
	}
	return s.DeliverPDU(pdus...)
}

// DeliverPDU stores raw PDUs (with their SMSC field; SMS-DELIVER, or
// anything a modem may keep in its memory) and announces each with +CMTI.
func (s *Sim) DeliverPDU(pdus ...[]byte) error {
	for _, p := range pdus {
		idx, err := s.storePDU(p)
		if err != nil {
			return err
		}
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		if c != nil {
			c.urc(fmt.Sprintf("+CMTI: \"%s\",%d", s.opts.Mem, idx), func() bool { return c.cnmiMT > 0 })
		}
	}
	return nil
}

// ReplaceStored puts a new message from `from` (one part) at index of the
// SIM memory in place of what is there, without announcing it: the slot of a
// message deleted behind the client's back, taken by a new one.
// AnnounceStored gives its +CMTI when the test wants it.
func (s *Sim) ReplaceStored(index int, from, text string) error {
	pdus, err := encodeDeliver(from, text, time.Now())
	if err != nil {
		return err
	}
	if len(pdus) != 1 {
		return fmt.Errorf("modemsim: ReplaceStored takes a one-part message, %q needs %d", text, len(pdus))
	}
	s.mu.Lock()
	s.store[index] = pdus[0]
	s.mu.Unlock()
	return nil
}

// AnnounceStored writes "+CMTI: <mem>,<index>" (when AT+CNMI asked for
// them), whatever the slot holds.
func (s *Sim) AnnounceStored(index int) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.urc(fmt.Sprintf("+CMTI: \"%s\",%d", s.opts.Mem, index), func() bool { return c.cnmiMT > 0 })
	}
}

// urc writes an unsolicited line if cond (evaluated under the write lock,
// against state the serve goroutine sets before answering) holds.
func (c *conn) urc(line string, cond func() bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if cond != nil && !cond() {
		return
	}
	_, _ = c.master.Write([]byte("\r\n" + line + "\r\n"))
}

func (c *conn) write(text string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.master.Write([]byte(text))
}

func (c *conn) info(lines ...string) {
	var b strings.Builder
	for _, l := range append(append([]string(nil), c.chatter...), lines...) {
		if c.numeric {
			b.WriteString(l + "\r\n") // V.250 §5.7.1: information text in ATV0 form
		} else {
			b.WriteString("\r\n" + l + "\r\n")
		}
	}
	b.WriteString(c.final("OK"))
	c.write(b.String())
}

// final formats a final result code: "\r\nOK\r\n", or "0\r" / "4\r" in
// ATV0 (V.250 §5.7.1, Table 1).
func (c *conn) final(code string) string {
	if !c.numeric {
		return "\r\n" + code + "\r\n"
	}
	switch code {
	case "OK":
		return "0\r"
	case "ERROR":
		return "4\r"
	}
	return code + "\r\n"
}

// fail answers ERROR.
func (c *conn) fail() { c.write(c.final("ERROR")) }

func (c *conn) cmeError(code int) {
	switch {
	case c.cmee == 0:
		c.fail()
	case c.cmee == 2 && cmeTexts[code] != "":
		c.write(c.final("+CME ERROR: " + cmeTexts[code]))
	default:
		c.write(c.final(fmt.Sprintf("+CME ERROR: %d", code)))
	}
}

// cmsError answers +CMS ERROR: <code> (27.005 §3.2.5), in words after
// AT+CMEE=2.
func (c *conn) cmsError(code int) {
	if c.cmee == 2 && cmsTexts[code] != "" {
		c.write(c.final("+CMS ERROR: " + cmsTexts[code]))
		return
	}
	c.write(c.final(fmt.Sprintf("+CMS ERROR: %d", code)))
}

// The verbose texts (AT+CMEE=2) of the errors the emulator gives or tests
// ask for with FailNext: 27.007 §9.2, 27.005 §3.2.5, 24.011 Table 8.4.
var (
	cmeTexts = map[int]string{10: "SIM not inserted", 11: "SIM PIN required", 12: "SIM PUK required", 16: "incorrect password"}
	cmsTexts = map[int]string{1: "Unassigned (unallocated) number", 28: "Unidentified subscriber", 42: "Congestion",
		304: "invalid PDU mode parameter", 310: "SIM not inserted", 321: "invalid memory index",
		330: "SMSC address unknown", 331: "no network service", 500: "unknown error"}
)

// serve is the goroutine of one power-up: it reads commands from the pty.
func (s *Sim) serve(c *conn) {
	defer s.wg.Done()
	buf := make([]byte, 1024)
	booted := time.Now().Add(s.opts.BootDelay)
	if s.opts.BootDelay > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t := time.NewTimer(s.opts.BootDelay)
			defer t.Stop()
			select {
			case <-t.C:
				c.urc("^SYSSTART", nil)
			case <-c.gone:
			}
		}()
	}
	var line []byte
	prompt := false // reading a PDU after "> "
	var pduLen int
	for {
		n, err := c.master.Read(buf)
		if err != nil {
			return
		}
		if time.Now().Before(booted) {
			continue // still booting: input is lost
		}
		c.wmu.Lock()
		if c.resetPending {
			c.resetPending = false
			c.echo, c.cmee, c.numeric, c.unlocked = true, s.opts.CMEE, s.opts.Numeric, false
			c.busyLeft = s.opts.SIMBusy
			c.cmgf = s.textProfile()
			line, prompt = line[:0], false
		}
		c.wmu.Unlock()
		for _, b := range buf[:n] {
			if prompt {
				switch b {
				case 0x1a:
					prompt = false
					hexPDU := string(line)
					line = line[:0]
					if c.echo {
						c.write(hexPDU)
					}
					if !s.submit(c, hexPDU, pduLen) {
						return
					}
				case 0x1b:
					prompt = false
					line = line[:0]
					c.write(c.final("OK"))
				case '\r', '\n':
				default:
					line = append(line, b)
				}
				continue
			}
			switch b {
			case '\r':
				cmd := strings.TrimSpace(string(line))
				line = line[:0]
				if cmd == "" {
					continue
				}
				if c.echo {
					c.write(cmd + "\r")
				}
				if n, ok := s.command(c, cmd); ok {
					prompt, pduLen = true, n
				}
			case '\n', 0x1b, 0x1a:
			default:
				line = append(line, b)
			}
		}
	}
}

// command answers one command line; it returns (len, true) when a PDU
// prompt was sent.
func (s *Sim) command(c *conn, cmd string) (int, bool) {
	s.mu.Lock()
	simReady, reg, garbage, blocked, muted := s.simReady, s.reg, s.garbage, s.pinTries >= 3, s.muted
	key := strings.ToUpper(cmd)
	if len(key) >= 2 {
		key = key[2:]
	}
	if i := strings.IndexByte(key, '='); i >= 0 {
		key = key[:i+1] // "+CPIN=", "+CMGS=": any parameters
	}
	s.counts[key]++
	close(s.cmdSeen)
	s.cmdSeen = make(chan struct{})
	s.mu.Unlock()
	if garbage {
		c.write("\r\n\xff#~^@junk\x07\r\n")
		return 0, false
	}
	if muted {
		return 0, false // counted, never answered
	}
	up := strings.ToUpper(cmd)
	if !strings.HasPrefix(up, "AT") {
		c.fail()
		return 0, false
	}
	body := up[2:]
	s.mu.Lock()
	i := slices.Index(s.failCmds, body)
	if i >= 0 {
		s.failCmds = slices.Delete(s.failCmds, i, i+1)
	}
	s.mu.Unlock()
	if i >= 0 {
		c.fail()
		return 0, false
	}
	if slices.Contains(s.opts.Refuse, body) {
		if s.opts.RefuseWith != "" {
			c.write(c.final(s.opts.RefuseWith))
			return 0, false
		}
		c.fail()
		return 0, false
	}
	arg := func(prefix string) (string, bool) {
		if strings.HasPrefix(body, prefix) {
			return cmd[2+len(prefix):], true
		}
		return "", false
	}
	pinOK := s.opts.PIN == "" || c.unlocked
	if c.busyLeft > 0 {
		for _, p := range []string{"+CNMI", "+CPMS", "+CSMS", "+CMGL", "+CMGR", "+CMGS", "+CMGD"} {
			if strings.HasPrefix(body, p) {
				c.busyLeft--
				c.cmsError(314)
				return 0, false
			}
		}
	}
	switch {
	case body == "":
		c.info()
	case body == "E0" || body == "E1":
		c.echo = body == "E1"
		c.info()
	case body == "V0" || body == "V1":
		c.numeric = body == "V0"
		c.info()
	case strings.HasPrefix(body, "+CMEE="):
		c.cmee, _ = strconv.Atoi(body[6:])
		c.info()
	case body == "+CPIN?":
		switch {
		case !simReady:
			c.cmeError(10)
		case blocked:
			c.info("+CPIN: SIM PUK")
		case !pinOK:
			c.info("+CPIN: SIM PIN")
		default:
			c.info("+CPIN: READY")
		}
	case strings.HasPrefix(body, "+CPIN="):
		v, _ := arg("+CPIN=")
		s.mu.Lock()
		busy := s.pinBusy < s.opts.PINBusy
		if busy {
			s.pinBusy++
		}
		s.mu.Unlock()
		switch {
		case busy:
			c.cmeError(14) // SIM busy
		case blocked:
			c.cmeError(12) // SIM PUK required
		case strings.Trim(v, `"`) == s.opts.PIN:
			c.unlocked = true
			c.info()
		default:
			s.mu.Lock()
			s.pinTries++
			s.mu.Unlock()
			c.cmeError(16) // incorrect password
		}
	case body == "+CGMI":
		c.info(s.opts.Manufacturer)
	case body == "+CGMM":
		c.info(s.opts.Model)
	case body == "+CSQ":
		s.mu.Lock()
		rssi := s.signal
		s.mu.Unlock()
		c.info(fmt.Sprintf("+CSQ: %d,99", rssi))
	case body == "+CREG?", body == "+CGREG?", body == "+CEREG?":
		st := 0
		if reg && simReady {
			st = 1
		}
		s.mu.Lock()
		if s.regStat != 0 && simReady {
			st = s.regStat
		}
		s.mu.Unlock()
		c.info(fmt.Sprintf("%s: 0,%d", body[:len(body)-1], st))
	case body == "+CSCA?":
		s.mu.Lock()
		smsc := s.smsc
		s.mu.Unlock()
		if smsc == "" {
			c.info(`+CSCA: "",129`)
		} else {
			c.info(fmt.Sprintf("+CSCA: \"%s\",145", smsc))
		}
	case strings.HasPrefix(body, "+CSCA="):
		v, _ := arg("+CSCA=")
		num, _, _ := strings.Cut(v, ",")
		s.mu.Lock()
		s.smsc = strings.Trim(num, `" `)
		s.mu.Unlock()
		c.info()
	case body == "+CMGF=0":
		if !s.opts.StuckTextMode {
			c.cmgf = 0
		}
		c.info()
	case body == "+CMGF=1":
		c.cmgf = 1
		c.info()
	case body == "+CMGF?":
		c.info(fmt.Sprintf("+CMGF: %d", c.cmgf))
	case body == "+CNMA", body == "+CNMA=0":
		c.wmu.Lock()
		owed := s.opts.Phase2Plus && len(c.unacked) > 0
		if owed {
			c.unacked = c.unacked[1:]
		}
		c.wmu.Unlock()
		if !owed {
			c.cmsError(340) // no +CNMA acknowledgement expected
			break
		}
		c.info()
	case body == "+CPMS?", strings.HasPrefix(body, "+CPMS="):
		// One memory holds everything; "SM", "ME", "MT" and "SR" all name it.
		if v, ok := arg("+CPMS="); ok {
			for _, m := range strings.Split(v, ",") {
				if !slices.Contains([]string{"SM", "ME", "MT", "SR"}, strings.ToUpper(strings.Trim(m, `" `))) {
					c.cmsError(302)
					return 0, false
				}
			}
		}
		s.mu.Lock()
		n := len(s.store)
		if v, ok := arg("+CPMS="); ok {
			s.mem1 = strings.ToUpper(strings.Trim(strings.Split(v, ",")[0], `" `))
		}
		mem1 := s.mem1
		s.mu.Unlock()
		if body == "+CPMS?" {
			c.info(fmt.Sprintf(`+CPMS: "%s",%d,30,"SM",%d,30,"SM",%d,30`, mem1, n, n, n))
		} else {
			c.info(fmt.Sprintf("+CPMS: %d,30,%d,30,%d,30", n, n, n))
		}
	case body == "+CSMS?":
		if s.opts.Phase2Plus {
			c.info("+CSMS: 1,1,1,1")
		} else {
			c.info("+CSMS: 0,1,1,1")
		}
	case strings.HasPrefix(body, "+CNMI="):
		f := strings.Split(body[6:], ",")
		mt, ds := 0, 0
		if len(f) > 1 {
			mt, _ = strconv.Atoi(f[1])
		}
		if len(f) > 3 {
			ds, _ = strconv.Atoi(f[3])
		}
		c.wmu.Lock()
		c.cnmiMT, c.cnmiDS, c.cnmi = mt, ds, body[6:]
		c.wmu.Unlock()
		c.info()
	case body == "+CNMI?":
		c.wmu.Lock()
		v := c.cnmi
		c.wmu.Unlock()
		if v == "" {
			v = "0,0,0,0,1" // a TC35i after power-up
		}
		if s.opts.CNMIRead != "" {
			v = s.opts.CNMIRead
		}
		c.info("+CNMI: " + v)
	case strings.HasPrefix(body, "+CMGS="):
		n, err := strconv.Atoi(body[6:])
		if c.cmgf == 1 {
			// Text mode: the parameter is the destination address.
			c.textDA, n, err = strings.Trim(cmd[2+6:], `" `), 0, nil
		}
		switch {
		case err != nil:
			c.cmsError(304)
		case !simReady || !pinOK:
			c.cmsError(310)
		case !reg:
			c.cmsError(331)
		case s.noSMSC():
			c.cmsError(330)
		default:
			c.write("\r\n> ")
			return n, true
		}
	case strings.HasPrefix(body, "+CMGR="):
		i, _ := strconv.Atoi(body[6:])
		s.mu.Lock()
		p, ok := s.store[i]
		s.mu.Unlock()
		if !ok {
			c.cmsError(321)
			break
		}
		if c.cmgf == 1 {
			c.info(textStored("+CMGR: ", p)...)
			break
		}
		c.info(fmt.Sprintf("+CMGR: 0,,%d", tpduLen(p)), s.pduHex(p))
	case strings.HasPrefix(body, "+CMGL=") && c.cmgf == 1 && body == "+CMGL=4":
		c.cmsError(302) // text mode lists "ALL", not 4
	case strings.HasPrefix(body, "+CMGL="):
		s.mu.Lock()
		var idx []int
		for i := range s.store {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		if s.opts.ListNewestFirst {
			slices.Reverse(idx)
		}
		var lines []string
		for _, i := range idx {
			p := s.store[i]
			stat := 0
			if s.outgoing[i] {
				stat = 3
			}
			lines = append(lines, fmt.Sprintf("+CMGL: %d,%d,,%d", i, stat, tpduLen(p)), s.pduHex(p))
		}
		s.mu.Unlock()
		c.info(lines...)
	case strings.HasPrefix(body, "+CMGD="):
		i, _ := strconv.Atoi(body[6:])
		s.mu.Lock()
		delete(s.store, i)
		delete(s.outgoing, i)
		s.mu.Unlock()
		c.info()
	default:
		c.fail()
	}
	return 0, false
}

func tpduLen(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	return len(p) - 1 - int(p[0])
}

// submit handles one PDU after the prompt; false when the connection ended.
func (s *Sim) submit(c *conn, hexPDU string, n int) bool {
	s.mu.Lock()
	held := s.held
	s.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-c.gone:
			return false
		}
	}
	s.mu.Lock()
	unplug, reset, hang, garbSend := s.unplugAt, s.resetAt, s.hang, s.garbSend
	s.unplugAt, s.resetAt = false, false
	fail := 0
	switch {
	case s.failLeft > 0 && s.failSkip > 0:
		s.failSkip--
	case s.failLeft > 0:
		s.failLeft--
		fail = s.failCode
	}
	s.mu.Unlock()
	if unplug {
		s.Unplug()
		return false
	}
	if reset {
		s.Reset()
		return true
	}
	if hang {
		return true
	}
	if garbSend {
		c.write("\r\n+CMG\x00\xfe\r\n:: 12,\xff\x1b\r\nO K\r\n\x07+CMGS:\r\n")
		return true
	}
	if fail != 0 {
		c.cmsError(fail)
		return true
	}
	if c.cmgf == 1 {
		// Text mode: whatever followed the prompt is the text.
		s.mu.Lock()
		s.mr = (s.mr + 1) % 256
		mr := s.mr
		now := time.Now()
		s.sent = append(s.sent, Message{Dest: c.textDA, Text: hexPDU, Parts: 1, MRs: []int{mr}, At: now,
			PartsAt: []time.Time{now}, TextMode: true})
		close(s.notify)
		s.notify = make(chan struct{})
		s.mu.Unlock()
		c.info(fmt.Sprintf("+CMGS: %d", mr))
		return true
	}
	raw, err := hex.DecodeString(hexPDU)
	if err != nil || tpduLen(raw) != n {
		c.cmsError(304)
		return true
	}
	sub, err := sms.DecodeSubmit(raw)
	if err != nil {
		c.cmsError(304)
		return true
	}
	if d := s.opts.SendDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.gone:
			t.Stop()
			return false
		}
	}
	s.mu.Lock()
	if s.conn != c { // unplugged during the delay
		s.mu.Unlock()
		return false
	}
	s.mr = (s.mr + 1) % 256
	mr := s.mr
	s.record(sub, mr)
	s.mu.Unlock()
	form := s.opts.CMGSForm
	if form == "" {
		form = "+CMGS: %d"
	}
	c.info(fmt.Sprintf(form, mr))
	if sub.StatusReport {
		go s.report(c, mr, sub.Dest)
	}
	return true
}

// record adds a sent part; s.mu is held.
func (s *Sim) record(sub *sms.SubmitPDU, mr int) {
	now := time.Now()
	one := Submit{Dest: sub.Dest, MR: mr, Text: sub.Text}
	if sub.Concat != nil {
		one.Ref, one.Seq, one.Total = int(sub.Concat.Ref), sub.Concat.Seq, sub.Concat.Total
	}
	s.submits = append(s.submits, one)
	done := func(m Message) {
		m.At = now
		if m.PartsAt == nil {
			m.PartsAt = []time.Time{now}
		}
		s.sent = append(s.sent, m)
		close(s.notify)
		s.notify = make(chan struct{})
	}
	if sub.Concat == nil || sub.Concat.Total <= 1 {
		done(Message{Dest: sub.Dest, Text: sub.Text, Data: sub.Data, DCS: sub.DCS, Parts: 1, MRs: []int{mr}, StatusReport: sub.StatusReport,
			UDHs: [][]byte{sub.UDH}})
		return
	}
	key := fmt.Sprintf("%s/%d/%d", sub.Dest, sub.Concat.Ref, sub.Concat.Total)
	s.partial[key] = append(s.partial[key], sub)
	s.partMRs[key] = append(s.partMRs[key], mr)
	s.partAt[key] = append(s.partAt[key], now)
	parts := s.partial[key]
	if len(parts) < sub.Concat.Total {
		return
	}
	mrs, at := s.partMRs[key], s.partAt[key]
	delete(s.partial, key)
	delete(s.partMRs, key)
	delete(s.partAt, key)
	order := make([]int, len(parts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return parts[order[a]].Concat.Seq < parts[order[b]].Concat.Seq })
	var text strings.Builder
	var data []byte
	var sortedMRs []int
	var udhs [][]byte
	for _, i := range order {
		text.WriteString(parts[i].Text)
		data = append(data, parts[i].Data...)
		sortedMRs = append(sortedMRs, mrs[i])
		udhs = append(udhs, parts[i].UDH)
	}
	done(Message{Dest: sub.Dest, Text: text.String(), Data: data, DCS: sub.DCS, Parts: len(parts), MRs: sortedMRs, StatusReport: sub.StatusReport,
		UDHs: udhs, PartsAt: at})
}

// SetNextMR makes the next send get TP-MR mr (a modem that restarted
// counts from its start again; the MR wraps after 255).
func (s *Sim) SetNextMR(mr int) { s.mu.Lock(); s.mr = (mr + 255) % 256; s.mu.Unlock() }

// InjectReport makes the modem give a +CDS status report now (when
// AT+CNMI asked for them) for TP-MR mr and recipient, whatever was sent: a
// late report of an earlier send, or one in another number format.
func (s *Sim) InjectReport(mr int, recipient string, status byte) error {
	now := time.Now()
	pdu, err := encodeStatusReport(mr, recipient, now.Add(-time.Second), now, status)
	if err != nil {
		return err
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return errors.New("modemsim: unplugged")
	}
	s.giveReport(c, pdu)
	return nil
}

// StoreReport puts a status report for TP-MR mr and recipient in the SIM
// memory without announcing it, as a modem that stores reports keeps one
// the network gave while no client read the modem (spareline stopped): the
// client finds it when it reads the memory (AT+CMGL), at its next start.
// It returns the report's index.
func (s *Sim) StoreReport(mr int, recipient string, status byte) (int, error) {
	now := time.Now()
	pdu, err := encodeStatusReport(mr, recipient, now.Add(-time.Second), now, status)
	if err != nil {
		return 0, err
	}
	return s.storePDU(pdu)
}

func (s *Sim) report(c *conn, mr int, dest string) {
	if d := s.opts.ReportDelay; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.gone:
			return
		}
	}
	now := time.Now()
	pdu, err := encodeStatusReport(mr, dest, now.Add(-s.opts.ReportDelay), now, s.opts.ReportStatus)
	if err != nil {
		return
	}
	s.giveReport(c, pdu)
}

// giveReport hands a status report over as AT+CNMI asked: routed as +CDS
// (ds=1), or stored in the SIM memory and announced with +CDSI (ds=2,
// 27.005 §3.4.1).
func (s *Sim) giveReport(c *conn, pdu []byte) {
	c.wmu.Lock()
	ds := c.cnmiDS
	c.wmu.Unlock()
	if ds != 2 {
		seq := 0
		c.urc(fmt.Sprintf("+CDS: %d\r\n%s", tpduLen(pdu), s.pduHex(pdu)), func() bool {
			if c.cnmiDS != 1 {
				return false
			}
			if s.opts.Phase2Plus {
				c.cdsSeq++
				seq = c.cdsSeq
				c.unacked = append(c.unacked, seq)
			}
			return true
		})
		if seq != 0 {
			d := s.opts.AckTimeout
			if d <= 0 {
				d = 10 * time.Second
			}
			time.AfterFunc(d, func() {
				c.wmu.Lock()
				defer c.wmu.Unlock()
				if slices.Contains(c.unacked, seq) { // not acknowledged in time
					c.cnmiMT, c.cnmiDS, c.cnmi, c.unacked = 0, 0, "0,0,0,0,1", nil
				}
			})
		}
		return
	}
	idx, err := s.storePDU(pdu)
	if err != nil {
		return
	}
	c.urc(fmt.Sprintf("+CDSI: \"%s\",%d", s.opts.Mem, idx), func() bool { return c.cnmiDS == 2 })
}

// storePDU puts a PDU in the first free SIM slot.
func (s *Sim) storePDU(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 1; i <= 30; i++ {
		if _, used := s.store[i]; !used {
			s.store[i] = append([]byte(nil), p...)
			return i, nil
		}
	}
	return 0, errors.New("modemsim: SIM memory full")
}

// pduHex is a PDU (SMSC address field first) as the modem writes it: hex,
// without the SMSC address field when Options.NoSCA.
func (s *Sim) pduHex(p []byte) string {
	if s.opts.NoSCA && len(p) > 0 && int(p[0])+1 <= len(p) {
		p = p[int(p[0])+1:]
	}
	return strings.ToUpper(hex.EncodeToString(p))
}

// textProfile is the AT+CMGF of a power-up.
func (s *Sim) textProfile() int {
	if s.opts.TextMode || s.opts.StuckTextMode {
		return 1
	}
	return 0
}

// textStored is a stored message as text mode gives it (27.005 §3.4.3):
// the header line, then the text (here the sender's number stands in for
// it: the emulator keeps PDUs).
func textStored(prefix string, p []byte) []string {
	return []string{prefix + `"REC UNREAD","+8613900000000",,"24/01/01,00:00:00+32"`, fmt.Sprintf("stored message of %d octets", len(p))}
}
