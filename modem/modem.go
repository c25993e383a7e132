// Package modem is the GSM-modem backup channel: the SMS semantics of one
// modem over an AT session (Modem), and a Pool of modems with one scheduler.
//
// # One modem
//
// Init runs AT (an unanswered one is followed by ESC: a "> " prompt left
// open by a process killed inside AT+CMGS would swallow every command), ATE0,
// AT+CMEE=1 (a modem that refuses it still works), AT+CPIN? (entering the PIN
// when asked), AT+CMGF=0 (PDU mode), AT+CSMS? (service 1 means +CDS/+CMT must
// be acknowledged with AT+CNMA, 27.005 §3.2.1; a send of several parts
// acknowledges those routed meanwhile between two parts), AT+CNMI=2,1,0,1,0 (27.005
// §3.4.1: incoming messages stored with a +CMTI index, status reports routed
// as +CDS; a modem that refuses it is tried with 1,1,0,1,0, then with
// status reports stored (+CDSI), then without them, then all of those with
// <bfr> 1, which is all a Siemens takes, and without <bfr>, then without
// indications at all), then reads identity,
// SMSC (AT+CSCA?), signal (AT+CSQ) and registration (AT+CREG?).
// A send is done only on "+CMGS: <mr>" (27.005 §3.5.1): a bare OK is a
// failure, as some Siemens firmware answers it to a failed send. Incoming
// messages are read (AT+CMGR) and then deleted (AT+CMGD) from the memory
// +CMTI names; status reports come as +CDS or, stored, as +CDSI and are
// read the same way; at start-up, AT+CMGL=4 picks up what arrived while
// we were down (messages and reports).
//
// A message read after +CMTI/+CDSI whose AT+CMGD fails is handed over all
// the same (it may sit in a memory AT+CMGL does not list: never lose it)
// and remembered (memory, index, PDU) so that it is not handed over twice:
// the next health probe (RetryDeletes) reads the slot again and deletes it
// only if it still holds the same PDU (a slot found empty or holding another
// message is forgotten: a new message may have taken the index, and it is
// never deleted unread); AT+CMGL listing it deletes it without handing it
// over. At most maxUndeleted are remembered, per Modem (per opened port):
// past that, or when the port is opened again or the process restarts
// before the delete is done, the message may be handed over twice (a
// duplicate, never a loss).
//
// The parts of a concatenated incoming message are the exception: Read
// and ReadAll leave them stored (Stored.Kept, KeepsStored) when they are
// in the memory AT+CMGL lists, and the caller deletes them (Delete, which
// reads each slot again and deletes it only if it holds the same PDU)
// once their whole message is handed over. The SIM is their durable copy
// while their message is incomplete: after a restart, AT+CMGL lists them
// again for the reassembly. A Delete that fails is remembered as above.
//
// # The pool
//
// One goroutine owns each device: it opens the port, initialises the modem,
// sends the messages the scheduler gives it, turns URCs into reports and
// incoming messages, re-probes health every ReprobeInterval (and whether
// the modem still has its AT+CNMI setting: one that lost it restarted
// without a word, and is initialised again), and when the port
// breaks (read error, EOF: the device vanished) closes it and reopens it with
// exponential backoff (ReopenMin doubling to ReopenMax) until it comes back.
//
// One scheduler goroutine owns the queue. It gives each message to the
// least-loaded healthy idle modem (fewest SMS in the last minute) whose
// sliding one-minute budget (max_per_minute, counted in SMS parts, each
// stamped when it is sent) allows it, preferring modems the message has not
// failed on yet. A message of more parts than the budget goes when the
// modem's minute is empty, its parts spaced by the budget. All parts of a message
// go out on ONE modem (concatenated parts from different SIMs could not be
// reassembled by the phone).
//
// A modem is healthy when its SIM is ready, it is registered (home or
// roaming, or on LTE for SMS: +CREG <stat> 1, 5, 6, 7, 9, 10; 27.007
// §7.2) and it answers; otherwise it is out until a re-probe succeeds.
// Every plain AT command is bounded by the command timeout (AT+CMGS by the
// send timeout), whatever the caller's context allows: a modem that stops
// answering (a probe's command, or the AT+CMGF=0 before a send, gets no
// answer) is taken out at once (ErrNotAnswering; its signal is no longer
// known), the message it was given goes to another modem, and it is
// initialised again at each probe until it answers.
//
// A modem with MaxErrors temporary send failures in a row none of which is
// an error of its SIM's subscription (at.CMSError Subscription: the
// network's or the radio's, such as 331 no network service, 38, 41, 42, 47,
// timeouts, bare ERROR) is taken out (reason network) until a probe finds
// it registered and answering, as for any other outage: no hold, no trial.
// Taken out for them again before any send went out on it since it came
// back, it is held out as below (reason network, without
// spareline_modem_held_out): a good probe has proved nothing for it.
//
// A modem taken out for send errors of its subscription (MaxErrors
// temporary failures in a row, one of them of the subscription: 50 no
// credit, 8/10 barred..., or permanent errors that may be its own for
// MaxErrors messages in a row, see below) is held out: a SIM without credit
// or barred answers every AT command, so a good probe proves nothing. It stays out, its last error the
// send errors, for SendHoldMin; then it is on trial (still reported down,
// ModemStatus.Trial): the scheduler gives it one message at a time. A trial
// send that succeeds puts it back in service; one that fails with an error
// that may be the modem's holds it out again for twice as long, up to
// SendHoldMax; a number error says nothing either way. The hold outlives
// a reopened port.
//
// Each time a modem in service (or on trial) is taken out, it is counted in
// spareline_modem_taken_out_total by reason; its return to service is
// logged ("modem back in service", with how long it was out and why).
//
// Failure policy:
//   - a permanent +CMS ERROR (number error, invalid PDU: see at.CMSError)
//     may be the modem's own (27.005 §3.2.5: 300-511 are ME errors; a SIM
//     barred by its operator gets RP-cause 21 for every message): the
//     message is tried once on each other modem that is up (within
//     MaxAttempts), then returned as a permanent *SendError; a modem that
//     gives permanent errors for MaxErrors different messages in a row is
//     taken out as for temporary errors (held out, above);
//   - a temporary error (other CMS/CME errors, bare OK, ERROR, timeout, port
//     broken mid-send) retries the whole message on another modem that is
//     up (waiting for it while it is busy; the same modem only when no
//     other is up), up to MaxAttempts sends in total, then returns a
//     temporary *SendError;
//   - a part of a multi-part message failing after earlier parts went out
//     (their AT+CMGS answered "+CMGS: <mr>") is the exception: those parts
//     are on the handset, which joins parts only from one SIM and one
//     reference (23.040 §9.2.3.24.1). After a temporary error only the
//     parts not sent yet are sent again, on the same modem (waited for
//     while it is busy, over its budget, or while no modem is up; preferred
//     to every other modem), under the same concatenation reference; the
//     TP-MRs of the parts sent count toward the message's (Sent.Refs,
//     Report.Part), and their status reports are held until the rest is
//     sent. Each such send counts as an attempt. When that modem cannot
//     take the rest (out of service, held out, removed by a reload) and
//     another modem is up, the whole message goes there under a new
//     reference; when its attempts run out (MaxAttempts) the message fails
//     as above (its caller may send it again, whole). Both are logged as
//     warnings ("the handset may show an incomplete message": the parts
//     sent, besides the whole message), and the held reports of the parts
//     given up are handed over without the message's id (Report.ID ""), so
//     that they do not count toward the receipt of the message sent again.
//     A permanent error after parts went out ends the message at once (a
//     permanent *SendError; the same warning): the parts sent are not sent
//     again, on that modem or another;
//   - every send sets PDU mode first (AT+CMGF=0): a modem that restarted
//     silently may be in the text mode of its stored profile; one that
//     refuses is taken out and initialised again, the message requeued
//     without counting an attempt (nothing was sent);
//   - a message given to a modem that went down before it wrote anything is
//     requeued without counting an attempt;
//   - a send cut short by a restart (^SYSSTART) or refused for the SIM's
//     state (CMS 310-318 but 314, CME 10-18 but 14: a PIN asked again after
//     a restart that said nothing) takes the modem down and initialises it
//     again at once (the message is retried as for a temporary error).
//
// A message waits in the queue while no modem can take it (none up, or all
// over their budget). SendUnless lets its caller give it up meanwhile (the
// failover returns it to its carrier once the carrier is up again): a
// waiting message is answered ErrWithdrawn at once; one on a modem finishes
// its attempt, and is not retried if that attempt failed.
//
// Duplicates: the pool sends a message again only after an attempt whose
// outcome is unknown or failed. When the port breaks or the send times out
// after the PDU was written, the modem may have transmitted it: the retry on
// another modem can then duplicate it (at-least-once; the same choice as
// failover.on_unknown: resend). For a multi-part message, parts confirmed on
// a modem are not sent again: the rest goes on that modem (see the failure
// policy), the part whose outcome was unknown included (a duplicate of one
// part, under the same reference); only when that modem cannot take the rest
// does the whole message go again, on another modem under a new reference
// (the handset then shows the parts sent first as an incomplete message).
//
// Crash safety is the caller's: Send returns only when the modem confirmed
// every part, and nothing is persisted here.
package modem

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spareline/spareline/modem/at"
	"github.com/spareline/spareline/modem/sms"
	"go.uber.org/zap"
)

// ErrNoMR is a send the modem answered without "+CMGS: <mr>".
var ErrNoMR = errors.New("modem: send not confirmed (no +CMGS: <mr> in the answer)")

// ErrRestarted: the modem said it restarted (^SYSSTART, RDY) on an open
// port; it is initialised again.
var ErrRestarted = errors.New("modem: restarted (^SYSSTART/RDY) while the port was open; initialising it again")

// PDUModeError is a modem that could not be put in PDU mode (AT+CMGF=0
// refused or unanswered) before a send or a read of its memory. Nothing was
// sent or read: a modem in text mode would take "AT+CMGS=<length>" as a
// send of the hex PDU, as text, to the number "<length>".
type PDUModeError struct {
	Err error // AT+CMGF=0's error
}

func (e *PDUModeError) Error() string {
	return "modem: not in PDU mode (AT+CMGF=0: " + e.Err.Error() + "); nothing sent or read"
}

// Unwrap returns AT+CMGF=0's error.
func (e *PDUModeError) Unwrap() error { return e.Err }

// ErrTextModeAnswer is a stored message the modem gave in the text-mode
// form (27.005 §3.4.3: a quoted <stat> such as "REC UNREAD"): the modem is
// not in PDU mode whatever it said. Such a message is not deleted.
var ErrTextModeAnswer = errors.New("modem: stored message given in text mode (not PDU mode); left stored")

// ErrNotRegistered means the modem is not registered on a network.
var ErrNotRegistered = errors.New("modem: not registered on the network")

// SIMError means the SIM is not usable: not inserted, not ready, PIN or PUK
// needed, wrong PIN.
type SIMError struct {
	State string // the +CPIN answer ("SIM PIN", "NOT READY") or the cause
	Err   error  // the underlying error, if any
	// WrongPIN: the modem refused the configured PIN. Entering it again
	// would block the SIM after three tries (27.007 §8.3: SIM PUK).
	WrongPIN bool
}

func (e *SIMError) Error() string {
	if e.Err != nil {
		return "modem: SIM not ready (" + e.State + "): " + e.Err.Error()
	}
	return "modem: SIM not ready: " + e.State
}

// Unwrap returns the underlying error.
func (e *SIMError) Unwrap() error { return e.Err }

// Info is what Init learns about a modem.
type Info struct {
	Manufacturer string
	Model        string
	SMSC         string
	// NoSMSC: AT+CSCA? answered an empty address. Our PDUs leave the SMSC
	// to the SIM, so sends will fail (+CMS ERROR: 330) until one is set.
	NoSMSC bool
	Health
}

// ErrNoSMSC is the warning of a modem whose SIM has no SMSC address.
var ErrNoSMSC = errors.New(`modem: the SIM has no SMSC address (AT+CSCA? is empty): sends will fail with +CMS ERROR: 330 until one is set with AT+CSCA="<number>"`)

// Health is the radio state.
type Health struct {
	// SignalDBm is -113 + 2*rssi (27.007 §8.5); 0 when unknown (rssi 99).
	SignalDBm int
	// Reg is the +CREG <stat> (27.007 §7.2): 1 home, 5 roaming, 6/7 SMS
	// only, 9/10 CSFB not preferred; 0/2/3/4/8 not registered.
	Reg int
	// Registered is Reg 1, 5, 6, 7, 9 or 10.
	Registered bool
}

// EventKind says what an Event carries.
type EventKind int

// Event kinds.
const (
	EventStored       EventKind = iota // +CMTI / +CDSI: a message or status report stored at Mem, Index
	EventStatusReport                  // +CDS: PDU is an SMS-STATUS-REPORT
	EventDeliver                       // +CMT: PDU is an SMS-DELIVER
	EventRestarted                     // ^SYSSTART / RDY: the modem restarted and lost its settings (Index: its sequence number)
)

// Event is a URC turned into data; the owner of the Modem handles it.
type Event struct {
	Kind  EventKind
	Mem   string
	Index int
	PDU   []byte
}

// Options configure a Modem.
type Options struct {
	Name           string
	Logger         *zap.Logger
	CommandTimeout time.Duration // default 10s
	SendTimeout    time.Duration // per part, default 60s
	Trace          bool
}

// Modem is the SMS semantics of one modem. Its methods must be called from
// one goroutine (the device owner); URCs arrive on Events().
type Modem struct {
	s      *at.Session
	log    *zap.Logger
	opts   Options
	events chan Event // written by the session's URC dispatcher, read by the owner
	ackCDS bool       // owner: +CSMS service 1, acknowledge +CDS/+CMT with AT+CNMA
	// owed counts the routed +CDS/+CMT not acknowledged yet (incremented by
	// the URC dispatcher, taken by Ack and by Send between two parts).
	owed atomic.Int32
	cnmi string // the AT+CNMI setting the modem took; "" none
	// cnmiRead (owner): <mt>,<ds> as AT+CNMI? gave them right after Init
	// set cnmi (what IndicationsLost compares with); "" not known.
	cnmiRead string
	mem1     string // owner: the memory AT+CMGR/CMGL/CMGD work on (+CPMS <mem1>); "" unknown
	// usual (owner): the memory received messages are stored in (+CPMS
	// <mem3>), which AT+CMGL must list: Init selects it, and after a read
	// from the memory an indication named (a +CDSI's "SR"), Read and
	// each probe select it again. "" unknown (AT+CPMS? refused).
	usual string
	// restarts counts ^SYSSTART/RDY (written by the URC dispatcher);
	// initSeq is its value when the last Init began (owner).
	restarts atomic.Int64
	initSeq  int64
	// undeleted (owner): messages handed over whose AT+CMGD failed, deleted
	// later and not handed over again (see the package doc).
	undeleted []undeleted
	// capacity (owner): the number of messages the usual memory holds
	// (AT+CPMS? <total3>, or <total1>); 0 unknown.
	capacity int
	// outgoing (owner): the saved outgoing messages the last ReadAll left
	// alone (noteOutgoing).
	outgoing int
}

// maxUndeleted bounds Modem.undeleted.
const maxUndeleted = 64

// undeleted is a stored message handed over whose AT+CMGD failed.
type undeleted struct {
	mem   string // the memory it was read from (upper case; "" the modem's, unknown)
	index int
	pdu   []byte // as read (Stored.PDU)
}

// StaleRestart reports whether an EventRestarted came before the last Init
// began (the boot notice of the power-up Init already handled).
func (m *Modem) StaleRestart(ev Event) bool { return int64(ev.Index) <= m.initSeq }

// New wraps rw; call Init next.
func New(rw io.ReadWriter, opts Options) *Modem {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 10 * time.Second
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 60 * time.Second
	}
	log := opts.Logger.With(zap.String("modem", opts.Name))
	m := &Modem{
		log:    log,
		opts:   opts,
		events: make(chan Event, 256),
	}
	m.s = at.New(rw, at.Options{Logger: log, Timeout: opts.CommandTimeout, Trace: opts.Trace})
	push := func(e Event) {
		select {
		case m.events <- e:
		case <-m.s.Done():
		}
	}
	// +CMTI (a message) and +CDSI (a status report, AT+CNMI ds=2; 27.005
	// §3.4.1): stored at <mem>,<index>, read the same way.
	stored := func(urc string) at.IndicationHandler {
		return func(l []string) {
			f := at.Fields(l[0])
			i, ok := at.Int(f, 1)
			if !ok {
				log.Warn("malformed "+urc, zap.String("line", l[0]))
				return
			}
			push(Event{Kind: EventStored, Mem: f[0], Index: i})
		}
	}
	m.s.AddIndication("+CMTI:", 0, stored("+CMTI"))
	pduURC := func(kind EventKind) at.IndicationHandler {
		return func(l []string) {
			m.owed.Add(1) // before the event: its Ack finds it counted
			b, err := hex.DecodeString(strings.TrimSpace(l[1]))
			if err != nil {
				log.Warn("malformed PDU line", zap.String("urc", l[0]), zap.Error(err))
				return
			}
			push(Event{Kind: kind, PDU: withSCA(b, l[0])})
		}
	}
	m.s.AddIndication("+CDSI:", 0, stored("+CDSI"))
	m.s.AddIndication("+CDS:", 1, pduURC(EventStatusReport))
	m.s.AddIndication("+CMT:", 1, pduURC(EventDeliver))
	// A modem that restarts while the port stays open (watchdog,
	// brown-out) says so: "^SYSSTART" (Siemens), "RDY" (SIMCom,
	// Quectel). It has lost ATE0, AT+CMEE, AT+CNMI, the PIN...: its owner
	// initialises it again.
	// The command in flight fails at that line (its answer will never
	// come), not at its timeout.
	for _, p := range []string{"^SYSSTART", "RDY"} {
		m.s.AddRestartIndication(p, func(l []string) {
			log.Warn("modem restarted", zap.String("line", l[0]))
			push(Event{Kind: EventRestarted, Index: int(m.restarts.Add(1))})
		})
	}
	// Status lines modems write at any time, even inside the answer to a
	// command (where a line naming the command stays an answer, e.g.
	// "+CPIN: READY" to AT+CPIN?): calls, registration, SIM and boot
	// notices of Siemens, SIMCom and Quectel ("RDY", "+CFUN: 1", "Call
	// Ready", "SMS Ready") and every
	// Huawei "^XXX" line (^RSSI, ^BOOT, ^MODE, ^SRVST, ^SIMST...).
	for _, p := range []string{"RING", "NO CARRIER", "+CRING:", "+CLIP:", "+CREG:", "+CGREG:", "+CEREG:",
		"+CPIN:", "+CIEV:", "+CUSD:", "+CTZV:", "+CFUN:", "+PBREADY", "Call Ready", "SMS Ready", "^"} {
		p := p
		m.s.AddIndication(p, 0, func(l []string) { log.Debug("URC", zap.String("line", l[0])) })
	}
	return m
}

// Events delivers URCs (+CMTI, +CDS, +CMT) in arrival order.
func (m *Modem) Events() <-chan Event { return m.events }

// Done is closed when the port broke or Close was called.
func (m *Modem) Done() <-chan struct{} { return m.s.Done() }

// Err is why the session ended.
func (m *Modem) Err() error { return m.s.Err() }

// Close ends the AT session (not the port).
func (m *Modem) Close() { m.s.Close() }

// Command passes a raw command through.
func (m *Modem) Command(ctx context.Context, cmd string) ([]string, error) {
	return m.s.Command(ctx, cmd)
}

// Init runs the init sequence (see the package doc). A SIM problem is a
// *SIMError; registration is reported in Info, not as an error.
func (m *Modem) Init(ctx context.Context, pin string) (*Info, error) {
	m.initSeq = m.restarts.Load()
	// The first AT after opening may meet boot noise or a half-typed line,
	// or a "> " prompt left open by a process killed inside AT+CMGS: the
	// modem then takes every command as PDU text and answers nothing. A
	// modem answers AT at once, so a first try without an answer within a
	// second is followed by ESC (27.005 §3.5.1: it ends the prompt; a modem
	// in command state ignores it), 100 ms to drop the answer to the ESC,
	// and AT again.
	var err error
	for i := 0; i < 3; i++ {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = m.s.Command(actx, "AT")
		cancel()
		if err == nil || errors.Is(err, at.ErrClosed) || ctx.Err() != nil {
			break
		}
		var te *at.TimeoutError
		if errors.As(err, &te) {
			if aerr := m.s.Abort(ctx, 100*time.Millisecond); aerr != nil {
				err = aerr
				break
			}
		}
	}
	if err != nil {
		if te := (*at.TimeoutError)(nil); errors.As(err, &te) { // it says "no answer to AT" itself
			return nil, fmt.Errorf("modem %s: %w", m.opts.Name, err)
		}
		return nil, fmt.Errorf("modem %s: no answer to AT: %w", m.opts.Name, err)
	}
	if _, err := m.s.Command(ctx, "ATE0"); err != nil {
		return nil, fmt.Errorf("modem %s: ATE0: %w", m.opts.Name, err)
	}
	// Numeric +CME/+CMS errors help classify failures; a modem that refuses
	// them still works (its errors are then bare ERRORs: temporary).
	if _, err := m.s.Command(ctx, "AT+CMEE=1"); err != nil {
		if !refused(err) {
			return nil, fmt.Errorf("modem %s: AT+CMEE=1: %w", m.opts.Name, err)
		}
		m.log.Warn("modem refuses AT+CMEE=1 (numeric error codes); send errors will be bare ERRORs")
	}
	if err := m.unlockSIM(ctx, pin); err != nil {
		return nil, err
	}
	if _, err := m.s.Command(ctx, "AT+CMGF=0"); err != nil {
		if refused(err) {
			return nil, fmt.Errorf("modem %s: no PDU mode (AT+CMGF=0 refused; text-mode-only modems are not supported): %w", m.opts.Name, err)
		}
		return nil, fmt.Errorf("modem %s: AT+CMGF=0 (PDU mode): %w", m.opts.Name, err)
	}
	// The memory read and deleted from (27.005 §3.2.2 <mem1>): +CMTI and
	// +CDSI name theirs, which may be another one ("ME", "SR").
	// A refusal of either query leaves the default (a modem may not have
	// them), but a busy SIM does not: its answer would have mattered (with
	// +CSMS: 1 every +CDS must be acknowledged, or the modem stops routing
	// them), so init again at the next probe, as for AT+CNMI below.
	m.mem1, m.usual, m.ackCDS, m.capacity = "", "", false, 0
	m.owed.Store(0)
	l, err := m.s.Command(ctx, "AT+CPMS?")
	if err == nil {
		// +CPMS: <mem1>,<used1>,<total1>,<mem2>,...,<mem3>,...: <mem1> may
		// be left on another memory by a read before a restart (the modem
		// keeps it), so the one AT+CMGL lists is <mem3>, where received
		// messages go.
		if f := at.Fields(answer(l, "+CPMS:")); len(f) > 0 {
			m.mem1 = f[0]
			m.usual = strings.ToUpper(strings.TrimSpace(f[0]))
			m.capacity, _ = at.Int(f, 2)
			if len(f) > 6 && strings.TrimSpace(f[6]) != "" {
				m.usual = strings.ToUpper(strings.TrimSpace(f[6]))
				if n, ok := at.Int(f, 8); ok {
					m.capacity = n
				}
			}
		}
	} else if simBusy(err) {
		return nil, fmt.Errorf("modem %s: AT+CPMS?: %w", m.opts.Name, err)
	}
	if m.usual != "" && m.curMem() != m.usual {
		if err := m.selectMem(ctx, m.usual); simBusy(err) {
			return nil, fmt.Errorf("modem %s: AT+CPMS: %w", m.opts.Name, err)
		}
	}
	l, err = m.s.Command(ctx, "AT+CSMS?")
	if err == nil {
		if a := answer(l, "+CSMS:"); a != "" {
			svc, _ := at.Int(at.Fields(a), 0)
			m.ackCDS = svc == 1
		}
	} else if simBusy(err) {
		return nil, fmt.Errorf("modem %s: AT+CSMS?: %w", m.opts.Name, err)
	}
	// New-message indications (27.005 §3.4.1): stored MO messages announced
	// by +CMTI (mt=1), status reports routed as +CDS (ds=1). Modems differ in
	// the modes they take: mode 2 (buffer while the link is busy) first,
	// then mode 1, then without status reports. A modem that takes none
	// still sends: its receipts then come from failover.modem_receipt_timeout
	// (ACCEPTD) and its stored MO messages are polled at each health probe.
	m.cnmi = ""
	for _, mode := range cnmiModes {
		_, err := m.s.Command(ctx, "AT+CNMI="+mode)
		if err == nil {
			m.cnmi = mode
			break
		}
		if !refused(err) || simBusy(err) {
			// A SIM still busy after boot or PIN entry is not a modem
			// that lacks the mode: init again at the next probe.
			return nil, fmt.Errorf("modem %s: AT+CNMI=%s: %w", m.opts.Name, mode, err)
		}
	}
	// The setting as the modem reads it back, for IndicationsLost: a
	// modem may word it otherwise than it was given.
	m.cnmiRead = ""
	if m.cnmi != "" {
		m.cnmiRead = m.readCNMI(ctx)
	}
	switch m.cnmi {
	case cnmiModes[0]:
	case "":
		m.log.Warn("modem refuses every AT+CNMI mode tried: no status reports, incoming messages polled",
			zap.Strings("tried", cnmiModes))
	default:
		m.log.Info("modem takes AT+CNMI=" + m.cnmi)
	}
	info := &Info{}
	info.Manufacturer = m.first(ctx, "AT+CGMI")
	info.Model = m.first(ctx, "AT+CGMM")
	if l, err := m.s.Command(ctx, "AT+CSCA?"); err == nil {
		if f := at.Fields(answer(l, "+CSCA:")); len(f) > 0 {
			info.SMSC = f[0]
			info.NoSMSC = strings.Trim(f[0], `"+ `) == ""
		}
	}
	h, err := m.Health(ctx)
	if err != nil {
		return nil, err
	}
	info.Health = h
	return info, nil
}

func (m *Modem) first(ctx context.Context, cmd string) string {
	l, err := m.s.Command(ctx, cmd)
	if err != nil || len(l) == 0 {
		return ""
	}
	return l[0]
}

// SIMState asks AT+CPIN? and returns the state ("READY", "SIM PIN", ...).
func (m *Modem) SIMState(ctx context.Context) (string, error) {
	l, err := m.s.Command(ctx, "AT+CPIN?")
	if err != nil {
		var cme *at.CMEError
		if errors.As(err, &cme) {
			return "", &SIMError{State: "error", Err: err}
		}
		return "", err
	}
	a := answer(l, "+CPIN:")
	if a == "" {
		return "", &SIMError{State: "no +CPIN answer"}
	}
	f := at.Fields(a)
	if len(f) == 0 {
		return "", &SIMError{State: a}
	}
	return f[0], nil
}

// answer is the first line of l that starts with prefix ("+CSQ:"), "" if
// none: an answer may hold lines the modem wrote unasked.
func answer(l []string, prefix string) string {
	for _, line := range l {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

func (m *Modem) unlockSIM(ctx context.Context, pin string) error {
	st, err := m.SIMState(ctx)
	if err != nil {
		return err
	}
	switch st {
	case "READY":
		return nil
	case "SIM PIN":
		if pin == "" {
			return &SIMError{State: st + " (no pin configured)"}
		}
		if _, err := m.s.Command(ctx, `AT+CPIN="`+pin+`"`); err != nil {
			return &SIMError{State: "PIN rejected", Err: err, WrongPIN: pinRefused(err)}
		}
		st, err = m.SIMState(ctx)
		if err != nil {
			return err
		}
		if st != "READY" {
			return &SIMError{State: st}
		}
		return nil
	default:
		return &SIMError{State: st}
	}
}

// IndicationsLost reports whether the modem no longer has the AT+CNMI
// setting Init gave it (AT+CNMI?: its <mt> or <ds> differ from what it
// read back right after Init): it restarted without saying so (a TC35i on
// autobauding writes no ^SYSSTART), or it dropped the routing itself
// (27.005 §3.4.4: a +CDS or +CMT not acknowledged in time sets <mt> and
// <ds> to 0). Then +CMTI and +CDS have stopped, and Init must run again. A
// modem that does not answer the query, or took no mode, is not judged.
func (m *Modem) IndicationsLost(ctx context.Context) bool {
	if m.cnmiRead == "" {
		return false
	}
	now := m.readCNMI(ctx)
	return now != "" && now != m.cnmiRead
}

// readCNMI is "<mt>,<ds>" of AT+CNMI? (27.005 §3.4.1), "" when the modem
// does not say.
func (m *Modem) readCNMI(ctx context.Context) string {
	l, err := m.s.Command(ctx, "AT+CNMI?")
	if err != nil {
		return ""
	}
	f := at.Fields(answer(l, "+CNMI:"))
	mt, ok1 := at.Int(f, 1)
	ds, ok2 := at.Int(f, 3)
	if !ok1 || !ok2 {
		return ""
	}
	return strconv.Itoa(mt) + "," + strconv.Itoa(ds)
}

// Announces reports whether the modem took an AT+CNMI mode that announces
// incoming messages (+CMTI); without one, its owner polls with ReadAll.
func (m *Modem) Announces() bool { return m.cnmi != "" }

// cnmiModes are the AT+CNMI settings Init tries, in order.
//
// Status reports routed (ds=1) first; a modem without that stores them and
// announces them with +CDSI (ds=2); the last resort is no reports. Each
// with <bfr> 0 (indications buffered while no mode was set are flushed to
// us), then the same with <bfr> 1 (they are cleared): Siemens modems
// (TC35i, MC35i, TC45) take only <bfr> 1 and refuse every <bfr> 0 mode;
// then without <bfr>, which some modems (Sony Ericsson GM29) do not have.
var cnmiModes = []string{"2,1,0,1,0", "1,1,0,1,0", "2,1,0,2,0", "1,1,0,2,0", "2,1,0,0,0", "1,1,0,0,0",
	"2,1,0,1,1", "1,1,0,1,1", "2,1,0,2,1", "1,1,0,2,1", "2,1,0,0,1", "1,1,0,0,1",
	"2,1,0,1", "1,1,0,1", "2,1,0,2", "1,1,0,2", "2,1,0,0", "1,1,0,0"}

// simStateError reports a send refused for the state of the SIM: not
// inserted, PIN or PUK required, failure, wrong (27.005 §3.2.5 CMS
// 310-318; 27.007 §9.2.1 CME 10-18), but not busy (314, 14: it passes).
func simStateError(err error) bool {
	if simBusy(err) {
		return false
	}
	var cms *at.CMSError
	var cme *at.CMEError
	return errors.As(err, &cms) && cms.Code >= 310 && cms.Code <= 318 || errors.As(err, &cme) && cme.SIMNotReady()
}

// simBusy reports the SIM-busy errors (27.005 §3.2.5 CMS 314, 27.007
// §9.2.1 CME 14): a refusal for now, not for good.
func simBusy(err error) bool {
	var cme *at.CMEError
	var cms *at.CMSError
	return errors.As(err, &cms) && cms.Code == 314 || errors.As(err, &cme) && cme.Code == 14
}

// refused reports whether err is the modem saying no (ERROR, +CME ERROR,
// +CMS ERROR), as opposed to no answer or a broken port.
// pinRefused reports an answer to AT+CPIN=<pin> saying the PIN itself was
// wrong, so that entering it again would use up another of the SIM's tries
// (27.007 §9.2.1: 16 incorrect password; 12 and 18, a PUK now required; a
// plain ERROR or a text the table does not know, which say nothing more,
// count as wrong: blocking the SIM is worse than waiting for an operator).
// A busy SIM (14), no SIM (10), a SIM failure (13), an operation not
// allowed now (3) and any +CMS answer used no try: the PIN is entered again
// at the next probe.
func pinRefused(err error) bool {
	var cme *at.CMEError
	if errors.As(err, &cme) {
		return cme.Code == 16 || cme.Code == 12 || cme.Code == 18 || cme.Code < 0
	}
	return errors.Is(err, at.ErrError)
}

func refused(err error) bool {
	var cme *at.CMEError
	var cms *at.CMSError
	return errors.Is(err, at.ErrError) || errors.As(err, &cme) || errors.As(err, &cms)
}

// Health reads AT+CSQ and AT+CREG? (AT+CEREG? or AT+CGREG? when the modem
// refuses AT+CREG?).
func (m *Modem) Health(ctx context.Context) (Health, error) {
	var h Health
	l, err := m.s.Command(ctx, "AT+CSQ")
	if err != nil {
		return h, fmt.Errorf("modem %s: AT+CSQ: %w", m.opts.Name, err)
	}
	if rssi, ok := at.Int(at.Fields(answer(l, "+CSQ:")), 0); ok {
		h.SignalDBm = RSSIToDBm(rssi)
	}
	// +CREG (circuit-switched registration) is what SMS needs. Firmware
	// without it (LTE-only modems refuse AT+CREG?) tells the registration
	// that carries its SMS (SGs or IMS) with +CEREG, or +CGREG.
	var stat int
	for _, name := range []string{"+CREG", "+CEREG", "+CGREG"} {
		l, err = m.s.Command(ctx, "AT"+name+"?")
		if err == nil {
			stat = regStat(l, name+":")
			break
		}
		if !refused(err) || name == "+CGREG" {
			return h, fmt.Errorf("modem %s: AT%s?: %w", m.opts.Name, name, err)
		}
	}
	h.Reg = stat
	h.Registered = registered(h.Reg)
	return h, nil
}

// regStat reads <stat> from the answer to AT+CREG? (27.007 §7.2; +CGREG
// §10.1.20 and +CEREG §10.1.22 have the same form), prefix "+CREG:":
// "+CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>]]". An unsolicited "+CREG:
// <stat>[,<lac>,<ci>...]" (AT+CREG=1/2 in the modem's profile) can come in
// the same answer; the solicited form wins, the unsolicited one is used
// when it is all there is. They differ in the second field: <stat> is a
// number, <lac> a quoted string.
func regStat(l []string, prefix string) int {
	stat, found := 0, false
	for _, line := range l {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := at.Fields(line)
		_, rest, _ := strings.Cut(line, ",")
		solicited := len(f) >= 2 && !strings.HasPrefix(strings.TrimSpace(rest), `"`)
		i := 0
		if solicited {
			i = 1
		}
		n, ok := at.Int(f, i)
		if !ok {
			continue
		}
		if solicited {
			return n
		}
		if !found {
			stat, found = n, true
		}
	}
	return stat
}

// registered reports whether a +CREG <stat> can carry SMS (27.007 §7.2):
// 1 home, 5 roaming, and on E-UTRAN 6/7 "SMS only" and 9/10 "CSFB not
// preferred" (home/roaming). 0, 2, 3, 4 and 8 (emergency only) cannot.
func registered(stat int) bool {
	switch stat {
	case 1, 5, 6, 7, 9, 10:
		return true
	}
	return false
}

// RSSIToDBm converts the +CSQ <rssi> (27.007 §8.5): 0 is -113 dBm or less,
// 31 is -51 dBm or more, 99 (unknown) gives 0.
func RSSIToDBm(rssi int) int {
	if rssi < 0 || rssi > 31 {
		return 0
	}
	return -113 + 2*rssi
}

// Send sends the parts with AT+CMGS in PDU mode (27.005 §3.5.1) and returns
// the TP-MR of each part confirmed so far. On error, len(refs) parts were
// confirmed; the part after them may or may not have been sent.
//
// Before the first part it sets PDU mode (AT+CMGF=0, one round trip per
// message): a modem that restarted without a word (a TC35i on autobauding)
// may be back in the text mode of its stored profile, where the PDU would
// go out as text to the number "<length>". When that fails nothing is sent
// and the error is a *PDUModeError.
//
// pace, if not nil, is asked before each part how long to wait before
// sending it (the modem's budget of SMS per minute); after is called after
// each AT+CMGS ended, whatever its outcome (the part may be on the air).
func (m *Modem) Send(ctx context.Context, parts []sms.Part) (refs []int, err error) {
	return m.SendPaced(ctx, parts, nil, nil)
}

// SendPaced is Send with pace and after (see Send).
func (m *Modem) SendPaced(ctx context.Context, parts []sms.Part, pace func() time.Duration, after func()) (refs []int, err error) {
	if err := m.EnsurePDUMode(ctx); err != nil {
		return nil, err
	}
	for i, p := range parts {
		if pace != nil {
			if err := m.wait(ctx, pace); err != nil {
				return refs, err
			}
		}
		if i > 0 {
			// A status report of an earlier part routed meanwhile is
			// acknowledged now: after the whole message could be too late
			// (the modem then stops routing them, 27.005 §3.4.4).
			m.ackOwed(ctx)
		}
		pctx, cancel := context.WithTimeout(ctx, m.opts.SendTimeout)
		l, err := m.s.SMSCommand(pctx, "AT+CMGS="+strconv.Itoa(p.TPDULen), strings.ToUpper(hex.EncodeToString(p.PDU)))
		cancel()
		if after != nil && mayHaveGone(err) {
			after()
		}
		if err != nil {
			return refs, err
		}
		mr := -1
		for _, line := range l {
			// Anywhere in the line, in any case: an echo of the PDU glued
			// to it, or a lowercase answer, still says the send was done
			// (not finding it would send the message again: a duplicate).
			if i := strings.Index(strings.ToUpper(line), "+CMGS:"); i >= 0 {
				if n, ok := at.Int(at.Fields(line[i:]), 0); ok {
					mr = n
				}
			}
		}
		if mr < 0 {
			return refs, ErrNoMR
		}
		refs = append(refs, mr)
	}
	return refs, nil
}

// mayHaveGone reports whether a part whose AT+CMGS ended with err may be on
// the air: sent, or its outcome unknown (no final answer in time, a port
// that broke). A final +CMS ERROR, +CME ERROR or ERROR says the modem did
// not send it (27.005 §3.5.1): it uses nothing of max_per_minute.
func mayHaveGone(err error) bool {
	var cms *at.CMSError
	var cme *at.CMEError
	return err == nil || !(errors.As(err, &cms) || errors.As(err, &cme) || errors.Is(err, at.ErrError))
}

// wait waits while pace asks to, acknowledging meanwhile the +CDS/+CMT
// routed (with +CSMS service 1 an acknowledgement must come within
// seconds, or the modem stops routing them).
func (m *Modem) wait(ctx context.Context, pace func() time.Duration) error {
	for d := pace(); d > 0; d = pace() {
		t := time.NewTimer(min(d, 5*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-m.s.Done():
			t.Stop()
			return m.s.Err()
		case <-t.C:
		}
		m.ackOwed(ctx)
	}
	return nil
}

// EnsurePDUMode sets PDU mode (AT+CMGF=0, 27.005 §3.2.3); an error is a
// *PDUModeError.
func (m *Modem) EnsurePDUMode(ctx context.Context) error {
	if _, err := m.s.Command(ctx, "AT+CMGF=0"); err != nil {
		return &PDUModeError{Err: err}
	}
	return nil
}

// TextMode reports whether the modem says it is in text mode (AT+CMGF?
// answers 1): it restarted into a stored profile. A modem that does not
// answer the query is not judged.
func (m *Modem) TextMode(ctx context.Context) bool {
	l, err := m.s.Command(ctx, "AT+CMGF?")
	if err != nil {
		return false
	}
	mode, ok := at.Int(at.Fields(answer(l, "+CMGF:")), 0)
	return ok && mode == 1
}

// Ack acknowledges a routed +CDS/+CMT with AT+CNMA when the modem requires it
// (+CSMS service 1, 27.005 §3.4.4) and Send has not already done so
// between two parts.
func (m *Modem) Ack(ctx context.Context) error {
	// Taken even when no acknowledgement is required, so that the count
	// stays that of the events not handled yet.
	if took := m.takeOwed(); !took || !m.ackCDS {
		return nil
	}
	_, err := m.s.Command(ctx, "AT+CNMA")
	return err
}

// ackOwed acknowledges the routed +CDS/+CMT counted so far (Ack then finds
// nothing left to do for their events).
func (m *Modem) ackOwed(ctx context.Context) {
	for m.ackCDS && m.takeOwed() {
		if _, err := m.s.Command(ctx, "AT+CNMA"); err != nil {
			m.log.Warn("AT+CNMA", zap.Error(err))
			return
		}
	}
}

// takeOwed takes one acknowledgement owed, false when none is.
func (m *Modem) takeOwed() bool {
	for {
		n := m.owed.Load()
		if n <= 0 {
			return false
		}
		if m.owed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// Stored is a message read from the modem's memory: an incoming message
// (SMS-DELIVER) or a status report (SMS-STATUS-REPORT, stored by AT+CNMI
// ds=2 or kept from before).
type Stored struct {
	Index int
	Mem   string // the memory it was read from (upper case; "" the modem's, unknown)
	PDU   []byte
	// Kept: a part of a concatenated message, left stored (see
	// KeepsStored); the caller deletes it (Delete) once its whole message
	// is handed over.
	Kept    bool
	Deliver *sms.Deliver      // an incoming message
	Report  *sms.StatusReport // a status report
	Err     error             // the decoding error (neither is set)
}

// Read reads the message at mem ("" or the current memory), index
// (AT+CMGR) and deletes it (AT+CMGD), but for a part of a concatenated
// message in the memory ReadAll lists: that one is left stored and
// returned with Kept (see KeepsStored). A message that does not decode is
// deleted too (and returned with Err), so one bad PDU cannot block the
// memory. It reads only in PDU mode: AT+CMGF=0 first (refused: an error,
// nothing read), and an answer in the text form (ErrTextModeAnswer) is
// left stored.
//
// When the delete fails, the message is returned all the same, for the
// caller to hand over, and with a nil error: it is remembered and deleted
// later (RetryDeletes, ReadAll), never returned again (see the package
// doc); the error is returned when too many are remembered already. A
// message read again that was returned before (its delete failed) is
// deleted and not returned: nil, nil.
func (m *Modem) Read(ctx context.Context, mem string, index int) (*Stored, error) {
	// Only in PDU mode: a text-mode answer would not decode, and an
	// undecodable message is deleted.
	if err := m.EnsurePDUMode(ctx); err != nil {
		return nil, fmt.Errorf("modem %s: stored message %d left unread: %w", m.opts.Name, index, err)
	}
	// The memory the indication names is selected for this read only: left
	// selected (a +CDSI's "SR", say), it would be the memory the next
	// AT+CMGL lists, at the next init too (a modem keeps <mem1>), and the
	// messages in the usual one would wait there unread.
	if m.selectMem(ctx, mem) == nil && m.usual != "" && m.curMem() != m.usual {
		defer func() { _ = m.selectMem(context.WithoutCancel(ctx), m.usual) }()
	}
	// The memory read: the one named, or the current one when it could
	// not be selected.
	from := m.curMem()
	l, err := m.s.Command(ctx, "AT+CMGR="+strconv.Itoa(index))
	if err != nil {
		return nil, fmt.Errorf("modem %s: AT+CMGR=%d: %w", m.opts.Name, index, err)
	}
	st := cmgrStored(index, l)
	if st != nil && errors.Is(st.Err, ErrTextModeAnswer) {
		return nil, fmt.Errorf("modem %s: AT+CMGR=%d: %w", m.opts.Name, index, st.Err)
	}
	if st != nil && m.handedOver(from, index, st.PDU) {
		if _, err := m.s.Command(ctx, "AT+CMGD="+strconv.Itoa(index)); err == nil {
			m.forget(from, index)
			m.log.Info("message handed over before (its delete failed) deleted", zap.String("mem", from), zap.Int("index", index))
		}
		return nil, nil
	}
	if st != nil {
		st.Mem = from
		if m.keep(st) {
			return st, nil // deleted by Delete once its message is complete
		}
	}
	if _, err := m.s.Command(ctx, "AT+CMGD="+strconv.Itoa(index)); err != nil {
		err = fmt.Errorf("modem %s: AT+CMGD=%d: %w", m.opts.Name, index, err)
		if st != nil && st.Err == nil && m.remember(from, index, st.PDU, err) {
			return st, nil
		}
		return st, err
	}
	if st == nil {
		return nil, fmt.Errorf("modem %s: AT+CMGR=%d: no message", m.opts.Name, index)
	}
	return st, nil
}

// cmgrStored is the message in an answer to AT+CMGR=index, nil if none
// (an empty slot).
func cmgrStored(index int, l []string) *Stored {
	for i := 0; i+1 < len(l); i++ {
		if strings.HasPrefix(l[i], "+CMGR:") {
			if strings.TrimSpace(l[i+1]) == "" {
				return nil
			}
			return decodeStored(index, l[i+1], l[i])
		}
	}
	return nil
}

// selectMem makes mem the memory AT+CMGR and AT+CMGD work on (AT+CPMS,
// 27.005 §3.2.2) when it is not already. A modem that refuses is read
// as it is. The error is AT+CPMS's: nil when mem ("" the current one) is
// the current memory now.
func (m *Modem) selectMem(ctx context.Context, mem string) error {
	mem = strings.ToUpper(strings.TrimSpace(mem))
	if mem == "" || mem == m.curMem() {
		return nil
	}
	if _, err := m.s.Command(ctx, `AT+CPMS="`+mem+`"`); err != nil {
		m.log.Warn("cannot select the message memory", zap.String("mem", mem), zap.Error(err))
		return err
	}
	m.mem1 = mem
	return nil
}

// curMem is the memory AT+CMGR, AT+CMGL and AT+CMGD work on, upper case;
// "" unknown (the modem's own).
func (m *Modem) curMem() string { return strings.ToUpper(strings.TrimSpace(m.mem1)) }

// remember records a message handed over whose delete failed (err); false
// when too many are remembered already (it may then be handed over twice).
// (An entry for the same slot was forgotten by handedOver before.)
func (m *Modem) remember(mem string, index int, pdu []byte, err error) bool {
	if len(m.undeleted) >= maxUndeleted {
		m.log.Warn("cannot delete a stored message handed over, and too many are waiting for their delete already: it may be handed over again",
			zap.String("mem", mem), zap.Int("index", index), zap.Int("waiting", len(m.undeleted)), zap.Error(err))
		return false
	}
	m.undeleted = append(m.undeleted, undeleted{mem: mem, index: index, pdu: pdu})
	m.log.Warn("cannot delete a stored message handed over; deleted at the next probe",
		zap.String("mem", mem), zap.Int("index", index), zap.Error(err))
	return true
}

// handedOver reports whether the message at mem, index with this PDU was
// handed over already (its delete failed). A remembered slot that holds
// another PDU now is forgotten: that message was deleted meanwhile and a
// new one took its index.
func (m *Modem) handedOver(mem string, index int, pdu []byte) bool {
	for i, u := range m.undeleted {
		if u.mem != mem || u.index != index {
			continue
		}
		if pdu != nil && bytes.Equal(u.pdu, pdu) {
			return true
		}
		m.undeleted = slices.Delete(m.undeleted, i, i+1)
		m.log.Info("the slot of a message handed over holds another message now: not deleted, forgotten",
			zap.String("mem", mem), zap.Int("index", index))
		return false
	}
	return false
}

// forget drops the remembered message at mem, index.
func (m *Modem) forget(mem string, index int) {
	m.undeleted = slices.DeleteFunc(m.undeleted, func(u undeleted) bool { return u.mem == mem && u.index == index })
}

// RetryDeletes tries again the deletes that failed after a Read (see the
// package doc): each remembered slot is read (AT+CMGR, in its memory) and
// deleted only if it still holds the PDU handed over; one found empty or
// holding another message is forgotten. A delete that fails again stays
// remembered. Then the usual memory (<mem3>) is selected again, also when
// a read's own select-back failed. It stops at a command that gets no
// answer.
func (m *Modem) RetryDeletes(ctx context.Context) {
	stop := false
	if len(m.undeleted) > 0 {
		keep := m.undeleted[:0]
		for _, u := range m.undeleted {
			if stop {
				keep = append(keep, u)
				continue
			}
			done := false
			err := m.selectMem(ctx, u.mem) // refused: tried again at the next probe
			if err == nil {
				done, err = m.retryDelete(ctx, u, "message handed over before (its delete failed)", false)
			}
			if !done {
				keep = append(keep, u)
			}
			stop = err != nil && !refused(err)
		}
		clear(m.undeleted[len(keep):])
		m.undeleted = keep
	}
	// The usual memory again, also when a read's own select-back failed.
	if m.usual != "" && !stop && m.curMem() != m.usual {
		_ = m.selectMem(ctx, m.usual)
	}
}

// emptySlot reports the answer of AT+CMGR for an index that holds no
// message (27.005 §3.2.5: +CMS ERROR 321, invalid memory index; some
// modems say +CME ERROR 21, invalid index, 27.007 §9.2.1).
func emptySlot(err error) bool {
	var cms *at.CMSError
	var cme *at.CMEError
	return errors.As(err, &cms) && cms.Code == 321 || errors.As(err, &cme) && cme.Code == 21
}

// retryDelete reads u's slot and deletes it if it holds u's PDU. done: u
// is to be forgotten (deleted, or gone). what names u in the log; quiet:
// the delete itself is logged at debug level.
func (m *Modem) retryDelete(ctx context.Context, u undeleted, what string, quiet bool) (done bool, err error) {
	idx := strconv.Itoa(u.index)
	l, err := m.s.Command(ctx, "AT+CMGR="+idx)
	switch {
	case emptySlot(err):
		// +CMS ERROR: 321, invalid memory index: an empty slot. Any other
		// refusal (a bare ERROR, 500 unknown, a busy SIM) says nothing
		// about the slot: the message may still be there, so it stays
		// remembered (forgotten, the next AT+CMGL would hand it over
		// again).
		m.log.Info(what+" is no longer stored",
			zap.String("mem", u.mem), zap.Int("index", u.index), zap.Error(err))
		return true, nil
	case err != nil:
		m.log.Debug("reading "+what+" again", zap.String("mem", u.mem),
			zap.Int("index", u.index), zap.Error(err))
		return false, err
	}
	st := cmgrStored(u.index, l)
	if st == nil {
		m.log.Info(what+" is no longer stored",
			zap.String("mem", u.mem), zap.Int("index", u.index))
		return true, nil
	}
	if !bytes.Equal(st.PDU, u.pdu) {
		m.log.Info("the slot of "+what+" holds another message now: not deleted, forgotten",
			zap.String("mem", u.mem), zap.Int("index", u.index))
		return true, nil
	}
	if _, err := m.s.Command(ctx, "AT+CMGD="+idx); err != nil {
		m.log.Debug("deleting "+what+" failed", zap.String("mem", u.mem),
			zap.Int("index", u.index), zap.Error(err))
		return false, err
	}
	logDone := m.log.Info
	if quiet {
		logDone = m.log.Debug
	}
	logDone(what+" deleted", zap.String("mem", u.mem), zap.Int("index", u.index))
	return true, nil
}

// KeepsStored reports whether a received message d is one that Read and
// ReadAll leave stored: a part of a concatenated message (a valid
// concatenation element of 2 parts or more; not a short message type 0).
// Its stored copy is the durable one until its whole message is handed
// over: after a restart, ReadAll lists it again for the reassembly.
func KeepsStored(d *sms.Deliver) bool {
	return d != nil && d.PID != 0x40 && d.Concat != nil && d.Concat.Total > 1 &&
		d.Concat.Seq >= 1 && d.Concat.Seq <= d.Concat.Total
}

// keep reports whether st, read from st.Mem, is left stored (and sets
// st.Kept): a part of a concatenated message (KeepsStored) in the memory
// ReadAll lists (the usual one; a part in another memory would not be
// listed again, so it is deleted as it is read).
func (m *Modem) keep(st *Stored) bool {
	st.Kept = st.Err == nil && KeepsStored(st.Deliver) && m.usual != "" && st.Mem == m.usual
	return st.Kept
}

// noteOutgoing says, each time their number changes, how many saved
// outgoing messages (a handset's, left alone by ReadAll) the memory holds:
// they take slots that incoming messages and status reports need, and a
// full memory makes the network hold those back (or the modem drop them).
// A warning once they fill half the memory (or its size is unknown and
// they are 10 or more), the engineer's cue to delete them with a handset
// or AT+CMGD; info below that.
func (m *Modem) noteOutgoing(n int) {
	if n == m.outgoing {
		return
	}
	m.outgoing = n
	if n == 0 {
		return
	}
	lvl := zap.InfoLevel
	if (m.capacity > 0 && 2*n >= m.capacity) || (m.capacity == 0 && n >= 10) {
		lvl = zap.WarnLevel
	}
	m.log.Log(lvl, "the SIM holds saved outgoing messages (a handset's; spareline leaves them): they take the slots incoming messages and status reports are stored in; delete them with a handset or AT+CMGD",
		zap.Int("outgoing", n), zap.Int("capacity", m.capacity))
}

// Capacity is the number of messages the memory received messages are
// stored in holds (AT+CPMS? at Init); 0 unknown.
func (m *Modem) Capacity() int { return m.capacity }

// Delete deletes a message Read or ReadAll left stored (Kept), once the
// caller has handed over its whole message: its slot is read again and
// deleted only if it still holds the same PDU (one found empty, or holding
// another message, is left alone). A delete that fails is remembered and
// done by a later RetryDeletes, and ReadAll does not return the message
// again meanwhile (see the package doc). Not cut short by ctx: an
// abandoned delete may have been done.
func (m *Modem) Delete(ctx context.Context, st *Stored) {
	ctx = context.WithoutCancel(ctx)
	u := undeleted{mem: st.Mem, index: st.Index, pdu: st.PDU}
	err := m.selectMem(ctx, u.mem)
	done := false
	if err == nil {
		done, err = m.retryDelete(ctx, u, "part of a concatenated message handed over", true)
	}
	if !done {
		if err == nil {
			err = fmt.Errorf("memory %s not selected", u.mem)
		}
		m.remember(u.mem, u.index, u.pdu, err)
	}
	if m.usual != "" && m.curMem() != m.usual {
		_ = m.selectMem(ctx, m.usual)
	}
}

// ReadAll sets PDU mode (AT+CMGF=0; refused: an error, nothing read or
// deleted), lists every stored message (AT+CMGL=4, all, PDU mode) and deletes
// each one it read, but for the parts of concatenated messages (see
// KeepsStored): those are left stored and returned with Kept, for the
// caller to reassemble and delete (Delete) once their message is complete.
// It returns the messages it deleted (the caller must take
// them: they are no longer stored) and those parts, and with them the first delete's error
// if any failed: a message whose delete was refused stays stored and is
// listed again at the next read (the modem's owner reads again at its next
// probe while a read left something behind). A message Read returned
// before (its delete failed: same memory, index and PDU) is deleted and
// not returned again.
func (m *Modem) ReadAll(ctx context.Context) ([]*Stored, error) {
	if err := m.EnsurePDUMode(ctx); err != nil {
		return nil, fmt.Errorf("modem %s: stored messages left unread: %w", m.opts.Name, err)
	}
	l, err := m.s.Command(ctx, "AT+CMGL=4")
	if err != nil {
		return nil, fmt.Errorf("modem %s: AT+CMGL=4: %w", m.opts.Name, err)
	}
	var out []*Stored
	outgoing := 0
	for i := 0; i+1 < len(l); i++ {
		if !strings.HasPrefix(l[i], "+CMGL:") {
			continue
		}
		idx, ok := at.Int(at.Fields(l[i]), 0)
		if !ok {
			continue
		}
		if stat, ok := at.Int(at.Fields(l[i]), 1); ok && (stat == 2 || stat == 3) {
			// A stored outgoing message (27.005 §3.1 <stat> 2 "STO
			// UNSENT", 3 "STO SENT"): a handset's, written to the SIM
			// before it was put in the modem. Neither incoming nor
			// spareline's (it sends with AT+CMGS, storing nothing): left
			// alone.
			outgoing++
			i++
			continue
		}
		st := decodeStored(idx, l[i+1], l[i])
		i++
		if errors.Is(st.Err, ErrTextModeAnswer) {
			// Not PDU mode whatever the modem said: nothing is deleted.
			return nil, fmt.Errorf("modem %s: AT+CMGL=4: %w", m.opts.Name, st.Err)
		}
		out = append(out, st)
	}
	m.noteOutgoing(outgoing)
	// In index order (storage order), as they arrived: some modems list
	// the newest first.
	slices.SortStableFunc(out, func(a, b *Stored) int { return a.Index - b.Index })
	// The deletes are not cut short by ctx (a reload removing the modem):
	// a delete written and then abandoned may have been done, and the
	// message would be neither delivered nor listed again. Each still ends
	// at the command timeout.
	dctx := context.WithoutCancel(ctx)
	taken := out[:0:0] // deleted, or kept
	var first error
	mem := m.curMem()
	for _, st := range out {
		st.Mem = mem
		again := m.handedOver(mem, st.Index, st.PDU)
		if !again && m.keep(st) {
			taken = append(taken, st) // deleted by Delete once its message is complete
			continue
		}
		_, err := m.s.Command(dctx, "AT+CMGD="+strconv.Itoa(st.Index))
		if err == nil && again {
			m.forget(mem, st.Index)
			m.log.Info("message handed over before (its delete failed) deleted", zap.String("mem", mem), zap.Int("index", st.Index))
			continue
		}
		if err == nil {
			taken = append(taken, st)
			continue
		}
		if first == nil {
			first = fmt.Errorf("modem %s: AT+CMGD=%d: %w", m.opts.Name, st.Index, err)
		}
		var cms *at.CMSError
		var cme *at.CMEError
		if errors.Is(err, at.ErrError) || errors.As(err, &cms) || errors.As(err, &cme) {
			continue // refused: it stays stored; the others are still deleted
		}
		break // no answer, or the port is gone: the rest stay stored
	}
	return taken, first
}

func decodeStored(index int, hexPDU, header string) *Stored {
	st := &Stored{Index: index}
	if textModeHeader(header) {
		st.Err = ErrTextModeAnswer
		return st
	}
	b, err := hex.DecodeString(strings.TrimSpace(hexPDU))
	if err != nil {
		st.Err = fmt.Errorf("modem: stored message %d: PDU is not hex: %w", index, err)
		return st
	}
	b = withSCA(b, header)
	st.PDU = b
	if n := sms.TPDULen(b); n > 0 && b[len(b)-n]&0x03 == 0x02 { // TP-MTI: SMS-STATUS-REPORT
		st.Report, st.Err = sms.DecodeStatusReport(b)
		return st
	}
	st.Deliver, st.Err = sms.DecodeDeliver(b)
	return st
}

// textModeHeader reports a +CMGR/+CMGL header of text mode (27.005
// §3.4.3, §4.1: a quoted <stat> such as "REC UNREAD"); PDU mode gives
// <stat> as a number (§3.4.2).
func textModeHeader(header string) bool {
	_, rest, _ := strings.Cut(header, ":")
	rest = strings.TrimSpace(rest)
	if strings.HasPrefix(header, "+CMGL:") { // +CMGL: <index>,<stat>,...
		_, rest, _ = strings.Cut(rest, ",")
		rest = strings.TrimSpace(rest)
	}
	return strings.HasPrefix(rest, `"`)
}

// withSCA returns a PDU line's octets with the SMSC address field first, as
// the decoders read them. 27.005 puts the SC address before the TPDU in PDU
// mode (+CMT, +CDS, +CMGR, +CMGL), and the header line's last field is the
// TPDU's length without it; some modems leave the SC address out. When the
// octets are exactly that length, an empty SC address (0x00) is put in front.
func withSCA(b []byte, header string) []byte {
	f := at.Fields(header)
	if len(f) == 0 {
		return b
	}
	n, err := strconv.Atoi(strings.TrimSpace(f[len(f)-1]))
	if err != nil || n <= 0 || n != len(b) {
		return b
	}
	return append([]byte{0}, b...)
}
