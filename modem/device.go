package modem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spareline/spareline/modem/at"
	"github.com/spareline/spareline/modem/sms"
	"go.uber.org/zap"
)

// runDevice is the owner goroutine of device dev: open, serve, reopen with
// backoff until ctx ends (the pool stops, or a reload removed the modem: the
// scheduler ends ctx only while no job is on the device, so a send in
// progress is never cut short). The port is closed when it returns.
func (p *Pool) runDevice(ctx context.Context, dev *device) {
	i, cfg := dev.idx, dev.cfg
	log := p.log.With(zap.String("modem", cfg.Name), zap.String("device", cfg.Device))
	backoff := p.opts.ReopenMin
	// pinRejected: the SIM refused cfg.PIN once; it is not entered again
	// (kept across a reload that changes another setting of the modem)
	// (three wrong PINs block the SIM) until the process restarts.
	pinRejected := dev.pinRejected
	defer func() { dev.pinRejected = pinRejected }() // read by the scheduler after msgClosed
	// out outlives the ports opened: a hold after send errors outlives a
	// USB reset.
	out := &outage{}
	metricHeldOut(cfg.Name, false) // a reload of the modem starts it afresh
	for ctx.Err() == nil {
		p.tell(ctx, devMsg{kind: msgState, dev: i, state: StateOpening})
		rw, err := p.open(ctx, cfg)
		if err != nil {
			log.Warn("cannot open modem", zap.Error(err), zap.Duration("retry_in", backoff))
			p.tell(ctx, devMsg{kind: msgState, dev: i, state: StateDown, err: err, lost: true})
			p.idle(ctx, dev, backoff)
			backoff = min(2*backoff, p.opts.ReopenMax)
			continue
		}
		served := p.serve(ctx, dev, rw, log, &pinRejected, out)
		_ = rw.Close()
		if ctx.Err() != nil {
			return
		}
		if served {
			backoff = p.opts.ReopenMin
		}
		p.idle(ctx, dev, backoff)
		backoff = min(2*backoff, p.opts.ReopenMax)
	}
}

// outage is what a device owner keeps, across the ports it opens, about its
// modem being out of service: since when and why (said when it comes back),
// and the hold after send errors (see the package doc).
type outage struct {
	since  time.Time     // when it left service; zero while in service, or before it ever was
	reason string        // why it left: a reason of spareline_modem_taken_out_total
	hold   time.Duration // the hold after send errors; 0: not held
	until  time.Time     // the end of the hold: then it is tried with one message
	cause  error         // the send errors that took it out: its last error until a send succeeds
	// netOut: it was taken out for errors of the network or the radio
	// (reason network) and no send has succeeded since: taken out for them
	// again after a good probe put it back, it is held out (netHold), as a
	// good probe has shown that it proves nothing for this modem.
	netOut   bool
	netOutAt time.Time // when: a take-out older than netAgainWithin is forgotten (the network recovered since)
	netHold  bool      // the hold is for errors of the network or the radio: not counted in spareline_modem_held_out
}

// netAgainWithin is how long a take-out for errors of the network is
// remembered (outage.netOut): errors of the network again after it are a
// new outage (back at a good probe), not the same one.
const netAgainWithin = 10 * time.Minute

// netHoldMax caps the hold for errors of the network (they pass when the
// network recovers, which only a send can show): the hold doubles from
// SendHoldMin up to it, not up to SendHoldMax.
const netHoldMax = 5 * time.Minute

func (o *outage) held() bool { return o.hold > 0 }

// ErrNotAnswering wraps the error of a command the modem did not answer
// within the command timeout: a modem whose firmware hung, or that lost
// power behind its USB serial adapter, reads what it is sent and answers
// nothing. It is taken out at once and initialised again at each health
// probe until it answers.
var ErrNotAnswering = errors.New("modem: not answering")

// notAnswering reports an error of a command that got no answer within
// its timeout (not one its caller gave up, nor a broken port).
func notAnswering(err error) bool {
	var te *at.TimeoutError
	return errors.As(err, &te) && errors.Is(te.Err, context.DeadlineExceeded)
}

// takenOutReason is the reason (spareline_modem_taken_out_total) of a
// probe's error.
func takenOutReason(err error) string {
	var se *SIMError
	switch {
	case notAnswering(err):
		return reasonNotAnswering
	case errors.Is(err, ErrNotRegistered):
		return reasonNotRegistered
	case errors.As(err, &se), simStateError(err):
		return reasonSIM
	case errors.Is(err, at.ErrClosed):
		return reasonPortBroken
	case errors.Is(err, ErrRestarted), errors.Is(err, at.ErrModemRestarted):
		return reasonRestarted
	}
	return reasonOther
}

// testHookTaken, when set (by tests, before the pool runs), is called by a
// device owner with its modem's name when it has taken an incoming message
// or a status report off the modem, before handing it to the scheduler.
var testHookTaken func(modem string)

// tell sends a message to the scheduler.
func (p *Pool) tell(ctx context.Context, m devMsg) {
	select {
	case p.fromDev <- m:
	case <-ctx.Done():
		if m.kind == msgSendDone {
			m.job.res <- m.stoppedResult(ctx.Err())
		}
	}
}

// giveBack returns a job the device will not attempt.
func (p *Pool) giveBack(ctx context.Context, i int, j *job) {
	p.tell(ctx, devMsg{kind: msgSendDone, dev: i, job: j, attempted: false})
}

// idle waits d, giving back any job that arrives meanwhile.
func (p *Pool) idle(ctx context.Context, dev *device, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case j := <-dev.jobs:
			p.giveBack(ctx, dev.idx, j)
		}
	}
}

// serve runs one opened port until it breaks or ctx ends. It reports whether
// the modem got initialised (to reset the reopen backoff).
func (p *Pool) serve(ctx context.Context, dev *device, rw io.ReadWriter, log *zap.Logger, pinRejected *bool, out *outage) bool {
	i, cfg := dev.idx, dev.cfg
	sendTimeout := p.opts.SendTimeout
	if cfg.SendTimeout > 0 {
		sendTimeout = cfg.SendTimeout
	}
	m := New(rw, Options{Name: cfg.Name, Logger: p.log, CommandTimeout: p.opts.CommandTimeout,
		SendTimeout: sendTimeout, Trace: p.opts.Trace})
	defer m.Close()

	var (
		ready bool // Init succeeded on this port
		up    bool // in service: ready, registered, fewer than MaxErrors consecutive errors, not held
		// trial: held out after send errors, its hold over and its probe
		// good: it takes one message at a time (the only test of a SIM's
		// credit) while it is reported down; a send that succeeds puts it
		// back in service, one that fails holds it out again for longer.
		trial bool
		errs  int // consecutive temporary send errors
		// subs: one of them was an error of the SIM's subscription (no
		// credit, barred: SendError.subscription), which a good probe
		// cannot disprove: errs then hold the modem out (holdOut); errors
		// of the network or the radio only take it out until a probe
		// finds it registered and answering.
		subs bool
		// perms counts the permanent send errors in a row, each for
		// another message (permID the last one's): a modem that refuses
		// every message (a barred SIM, firmware that rejects the PDU) is
		// taken out as for MaxErrors temporary errors.
		perms   int
		permID  string
		health  Health
		lastErr error
		// reasm joins the parts of concatenated incoming messages. The
		// parts read from the SIM stay stored until their message is
		// handed over (the SIM is their durable copy: after a restart or a
		// reopened port, readSIM lists them again); each part's tag is its
		// slot (a part listed again is the same tag), none for a part
		// routed as +CMT (no copy on the SIM).
		reasm  = sms.Reassembler{MaxAge: p.opts.ReassemblyTimeout}
		served bool
		warn   error // a problem that does not take the modem out (no SMSC address)
	)
	// report tells the scheduler whether the modem is in service (v), or
	// out with err as its last error (and on trial or not); lost: its
	// signal and registration are not known now (port broken, not
	// answering), not left at the last reading.
	report := func(v bool, err error, lost bool) {
		if v && !up && !out.since.IsZero() {
			log.Info("modem back in service", zap.String("was_out_for", out.reason),
				zap.Duration("out_for", time.Since(out.since).Round(time.Millisecond)))
			out.since, out.reason = time.Time{}, ""
		}
		up = v
		if v {
			trial = false
		}
		if lost {
			health = Health{}
		}
		st := StateDown
		if v {
			st = StateUp
		}
		p.tell(ctx, devMsg{kind: msgState, dev: i, state: st, health: health, err: err, trial: trial && !v, lost: lost})
	}
	setUp := func(v bool, err error) { report(v, err, false) }
	// takeOut takes the modem out of service, or off its trial, for reason
	// (counted, and remembered for the log line when it comes back).
	takeOut := func(reason string, err error, lost bool) {
		if up || trial {
			metricTakenOut(cfg.Name, reason)
			if out.since.IsZero() {
				out.since = time.Now()
			}
			if up {
				out.reason = reason
			}
		}
		trial = false
		report(false, err, lost)
	}
	// The end of a hold after send errors wakes the owner (refresh: the
	// modem goes on trial).
	holdT := time.NewTimer(time.Hour)
	holdT.Stop()
	defer holdT.Stop()
	var holdC <-chan time.Time
	armHold := func() {
		holdT.Stop()
		holdC = nil
		if out.held() && !trial {
			holdT.Reset(time.Until(out.until))
			holdC = holdT.C
		}
	}
	// holdOut takes the modem out after send errors, for a hold that
	// doubles at each failed trial (SendHoldMin to SendHoldMax). A SIM
	// without credit, or barred, answers every AT command: a good probe
	// proves nothing, only a send does. err (the cause) stays its last
	// error until a send succeeds.
	holdOut := func(reason string, err error) {
		if !out.held() {
			out.hold = p.opts.SendHoldMin
		} else {
			out.hold = min(2*out.hold, p.opts.SendHoldMax)
		}
		if reason == reasonNetwork {
			out.hold = min(out.hold, max(netHoldMax, p.opts.SendHoldMin))
		}
		out.until = time.Now().Add(out.hold)
		out.cause = fmt.Errorf("%w; out of service for %s, then tried with one message", err, out.hold)
		errs, perms, subs = 0, 0, false
		out.netHold = reason == reasonNetwork
		takeOut(reason, out.cause, false)
		armHold()
		metricHeldOut(cfg.Name, !out.netHold)
	}
	// handOver gives the scheduler what the device took off the modem (an
	// incoming message deleted from the SIM, a status report acknowledged
	// with AT+CNMA): with the pool's run context, since ctx ends when a
	// reload removes the modem, which happens while it is not sending, that
	// is while it may be handling these; the scheduler still runs then.
	handOver := func(m devMsg) {
		if testHookTaken != nil {
			testHookTaken(cfg.Name)
		}
		p.tell(dev.run, m)
	}
	// deleteParts deletes the stored parts (tags) of a message handed over.
	type slot struct {
		mem   string
		index int
		pdu   string
	}
	deleteParts := func(tags []any) {
		for _, t := range tags {
			s := t.(slot)
			m.Delete(ctx, &Stored{Mem: s.mem, Index: s.index, PDU: []byte(s.pdu)})
		}
	}
	// joined hands over a reassembled message (complete, or what arrived
	// of it) and then deletes its stored parts.
	joined := func(msg *sms.Message) {
		handOver(devMsg{kind: msgIncoming, dev: i, incoming: Incoming{Modem: cfg.Name, From: msg.From,
			Text: msg.Text, Data: msg.Data, Time: msg.SCTS}})
		deleteParts(msg.Tags)
	}
	// expire hands over what arrived of the concatenated messages whose
	// parts did not all come within the reassembly timeout.
	expire := func() {
		for _, msg := range reasm.Expire(time.Now()) {
			log.Warn("concatenated message incomplete after the reassembly timeout: handed over as the parts that arrived",
				zap.String("from", msg.From), zap.Int("ref", int(msg.Ref)), zap.Int("parts", msg.Total),
				zap.Ints("missing_parts", msg.Missing), zap.Time("first_part_at", msg.First))
			joined(msg)
		}
	}
	// spare keeps a quarter of the SIM memory free of the parts of
	// incomplete messages, for their missing parts and other messages: a
	// full memory takes no more (the network is told "memory capacity
	// exceeded" and keeps them): past that, the oldest incomplete message's
	// parts are deleted from the SIM and held in memory only (lost if the
	// process restarts before its message completes).
	spare := func() {
		capacity := m.Capacity()
		for capacity > 0 && reasm.Tagged() > capacity*3/4 {
			tags := reasm.TakeOldestTags()
			if tags == nil {
				return
			}
			log.Warn("SIM memory filling with parts of incomplete concatenated messages: the oldest one's parts deleted from the SIM, held in memory only (lost on a restart before it completes)",
				zap.Int("parts", len(tags)), zap.Int("capacity", capacity))
			deleteParts(tags)
		}
	}
	// deliver hands over an incoming message, or gives a part of a
	// concatenated one to the reassembler; st is its stored copy (nil for
	// a +CMT), left stored for a part (st.Kept) until its message is
	// handed over.
	deliver := func(d *sms.Deliver, st *Stored) {
		if d.PID == 0x40 {
			// Short message type 0 (23.040 §9.2.3.9: acknowledged, its
			// contents discarded, never shown): a network's silent SMS,
			// not a message for the platform.
			log.Info("short message type 0 (TP-PID 0x40) discarded", zap.String("from", d.From))
			return
		}
		if !KeepsStored(d) {
			in := Incoming{Modem: cfg.Name, From: d.From, Text: d.Text, Data: d.Data, Time: d.SCTS}
			if d.Concat == nil && d.Data != nil {
				in.UDH = d.UDH // application ports and the like mean something to the receiver
			}
			handOver(devMsg{kind: msgIncoming, dev: i, incoming: in})
			return
		}
		expire() // an expired message is not joined by a new part
		var tag any
		if st != nil && st.Kept {
			tag = slot{st.Mem, st.Index, string(st.PDU)}
		}
		if msg := reasm.Put(d, time.Now(), tag); msg != nil {
			joined(msg)
			return
		}
		spare()
	}
	stored := func(st *Stored) {
		switch {
		case st.Err != nil:
			log.Error("undecodable stored message deleted", zap.Int("index", st.Index), zap.Error(st.Err))
		case st.Report != nil:
			handOver(devMsg{kind: msgReport, dev: i, report: st.Report})
		case st.Deliver != nil:
			deliver(st.Deliver, st)
		}
	}
	// readSIM empties the SIM of stored messages (ReadAll), delivering what
	// it deleted and giving the parts of concatenated messages it left
	// stored to the reassembler (a part it holds already, listed again, is
	// not counted twice); when a delete failed it asks for another read at the next
	// probe (reread), +CMTI or not, so a refused delete leaves no message on
	// the SIM until the port is opened again. A message Read handed over
	// though its delete failed (+CMTI, +CDSI) is deleted by the next probe
	// (RetryDeletes) or by ReadAll, without being handed over again.
	reread := false
	readSIM := func() {
		msgs, err := m.ReadAll(ctx)
		reread = err != nil
		if err != nil {
			log.Warn("reading stored messages; read again at the next probe", zap.Error(err))
		}
		for _, st := range msgs { // those deleted from the SIM, even after an error
			stored(st)
		}
	}
	probe := func() {
		if ready {
			h, err := m.Health(ctx)
			if err != nil {
				lastErr = err
				if notAnswering(err) {
					// It stopped answering: down now (not picked for sends
					// that would time out after their PDU was written, each
					// an unknown outcome), initialised again at the next probe.
					lastErr = fmt.Errorf("%w: %w", ErrNotAnswering, err)
					ready = false
				}
				return
			}
			health = h
			if m.IndicationsLost(ctx) {
				// Restarted without a word (no ^SYSSTART: a TC35i on
				// autobauding), or it dropped the routing itself (an
				// unacknowledged +CDS): +CMTI and +CDS have stopped.
				log.Warn("modem no longer has its AT+CNMI setting (restarted?); initialising it again")
				ready = false
			} else if m.TextMode(ctx) {
				// Restarted without a word into a text-mode profile
				// (AT+CMGF=1 stored) that kept its AT+CNMI setting.
				log.Warn("modem is in text mode (AT+CMGF? says 1: restarted?); initialising it again")
				ready = false
			} else {
				m.RetryDeletes(ctx)
				if !m.Announces() || reread { // no +CMTI: incoming messages are polled
					readSIM()
				}
			}
		}
		if !ready {
			pin := cfg.PIN
			if *pinRejected {
				pin = ""
			}
			info, err := m.Init(ctx, pin)
			var se *SIMError
			if errors.As(err, &se) && se.WrongPIN {
				*pinRejected = true
				log.Error("the SIM rejected the configured PIN; it will not be entered again (three wrong PINs block the SIM)", zap.Error(err))
			}
			if err != nil && *pinRejected && errors.As(err, &se) && !se.WrongPIN {
				err = fmt.Errorf("%w; the configured pin was rejected earlier and is not entered again, "+
					"so the SIM does not block (PUK): correct modems[].pin and reload", err)
			}
			if notAnswering(err) {
				err = fmt.Errorf("%w: %w", ErrNotAnswering, err)
			}
			if err != nil {
				if lastErr == nil || lastErr.Error() != err.Error() { // once per cause, not per probe
					log.Warn("modem init failed; tried again at each probe", zap.Error(err),
						zap.Duration("probe_interval", p.opts.ReprobeInterval))
				}
				lastErr = err
				return
			}
			ready, served = true, true
			health = info.Health
			if info.NoSMSC {
				warn = ErrNoSMSC
				log.Warn("modem without SMSC address", zap.Error(warn))
			}
			fields := []zap.Field{zap.String("manufacturer", info.Manufacturer), zap.String("model", info.Model)}
			if health.SignalDBm != 0 { // 0: not known (+CSQ: 99)
				fields = append(fields, zap.Int("signal_dbm", health.SignalDBm))
			}
			log.Info("modem initialised", append(fields, zap.Int("creg", health.Reg))...)
			readSIM()
			m.RetryDeletes(ctx) // those in a memory ReadAll does not list
		}
		if !health.Registered {
			lastErr = ErrNotRegistered
			return
		}
		if !up {
			// Out (after errors, or not yet up): a good probe puts it back
			// with a clean count. While up, the counts run on: "in a row"
			// is not cut by the probe period.
			errs, perms, subs = 0, 0, false
		}
		lastErr = warn
	}
	refresh := func() {
		probe()
		ok := ready && health.Registered && errs < p.opts.MaxErrors && perms < p.opts.MaxErrors
		// A failed probe is reported each time, with its cause: a modem
		// that never initialises is down with the reason, not "opening".
		if !ok {
			lost := notAnswering(lastErr)
			if up || trial { // the paths that take it out elsewhere (port broken, errors) say so there
				log.Warn("modem taken out of service", zap.Error(lastErr))
				takeOut(takenOutReason(lastErr), lastErr, lost)
			} else if lastErr != nil || lost {
				report(false, lastErr, lost)
			}
			return
		}
		if out.held() {
			// Held out after send errors: its good probe does not say it
			// can send. On trial once the hold is over.
			if !trial && !time.Now().Before(out.until) {
				trial = true
				log.Info("modem's hold after send errors is over: the next message is sent on it as a trial",
					zap.Duration("hold", out.hold), zap.NamedError("cause", out.cause))
			}
			report(false, out.cause, false)
			armHold()
			return
		}
		setUp(true, lastErr) // with lastErr: up with a warning
	}

	refresh()
	tick := time.NewTicker(p.opts.ReprobeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return served
		case <-m.Done():
			err := m.Err()
			log.Warn("modem port broken", zap.Error(err))
			takeOut(reasonPortBroken, err, true)
			return served
		case <-tick.C:
			refresh()
			expire()
		case <-holdC:
			holdC = nil
			refresh()
		case ev := <-m.Events():
			switch ev.Kind {
			case EventRestarted:
				if ready && !m.StaleRestart(ev) {
					ready = false
					takeOut(reasonRestarted, ErrRestarted, false)
					refresh() // init again now
				}
			case EventStored:
				if !ready {
					// Not initialised (PDU mode not set, or refused): the
					// message stays stored; the init's AT+CMGL reads it.
					log.Debug("stored message announced while the modem is not initialised; left for its init",
						zap.String("mem", ev.Mem), zap.Int("index", ev.Index))
					continue
				}
				st, err := m.Read(ctx, ev.Mem, ev.Index)
				if err != nil {
					log.Warn("reading incoming message", zap.Int("index", ev.Index), zap.Error(err))
				}
				if st != nil {
					stored(st)
				}
			case EventDeliver:
				if err := m.Ack(ctx); err != nil {
					log.Warn("AT+CNMA", zap.Error(err))
				}
				d, err := sms.DecodeDeliver(ev.PDU)
				if err != nil {
					log.Error("undecodable +CMT dropped", zap.Error(err))
					continue
				}
				deliver(d, nil)
			case EventStatusReport:
				if err := m.Ack(ctx); err != nil {
					log.Warn("AT+CNMA", zap.Error(err))
				}
				r, err := sms.DecodeStatusReport(ev.PDU)
				if err != nil {
					log.Error("undecodable +CDS dropped", zap.Error(err))
					continue
				}
				handOver(devMsg{kind: msgReport, dev: i, report: r})
			}
		case j := <-dev.jobs:
			if !up && !trial {
				p.giveBack(ctx, i, j)
				continue
			}
			max := int(dev.max.Load())
			begun := false // an AT+CMGS of it ended sent, or with its outcome unknown
			refs, err := m.SendPaced(j.ctx, j.parts[j.from:], func() time.Duration { return p.pace(i, max) },
				func() { begun = true; p.stamp(i) })
			// Cut short by its caller (or the pool stopping) after a part
			// may have gone out: said to the caller (SendError.InDoubt).
			cut := err != nil && begun && (j.ctx.Err() != nil || ctx.Err() != nil)
			var pme *PDUModeError
			if errors.As(err, &pme) && len(refs) == 0 {
				// Nothing was sent: the message goes back to the scheduler
				// (another modem).
				switch {
				case j.ctx.Err() != nil:
					// Its caller gave it up during AT+CMGF=0: not the
					// modem's doing.
				case notAnswering(pme.Err):
					// No answer to AT+CMGF=0 within the command timeout:
					// out first, then the message back, then init again
					// (tried again at each probe until it answers).
					err = fmt.Errorf("%w: %w", ErrNotAnswering, pme.Err)
					log.Warn("modem stopped answering; taken out, its message goes to another modem, and it is initialised again at each probe until it answers",
						zap.Error(err), zap.Duration("probe_interval", p.opts.ReprobeInterval))
					ready = false
					takeOut(reasonNotAnswering, err, true)
				default:
					// Not in PDU mode and AT+CMGF=0 refused: out first,
					// then the message back, then init again.
					log.Warn("modem cannot be put in PDU mode before a send; nothing sent, taken out and initialised again", zap.Error(err))
					ready = false
					takeOut(reasonOther, err, false)
				}
				p.giveBack(ctx, i, j)
				if !ready {
					refresh()
				}
				continue
			}
			// Whether the error tells against the modem: not a number
			// error (the destination's), not its caller giving up, not a
			// broken port, a restart or the SIM's state (handled below:
			// the modem is initialised again).
			var se *SendError
			against := false
			if err != nil {
				se = classify(err)
				against = j.ctx.Err() == nil && !errors.Is(err, at.ErrClosed) && !errors.Is(err, at.ErrModemRestarted) &&
					!simStateError(err) && (!se.Permanent || se.mayBeTheModems())
			}
			// The modem is taken out, if it is, before the scheduler hears
			// of the send, so that it gets no retry of this message.
			switch {
			case trial && against:
				reason := reasonSendErrors
				switch {
				case se.Permanent:
					reason = reasonSendRefused
				case out.netHold && !se.subscription:
					reason = reasonNetwork
				}
				holdOut(reason, fmt.Errorf("trial send failed: %w", err))
				log.Warn("modem failed its trial send; out of service again, for longer", zap.String("id", j.id),
					zap.Error(err), zap.Duration("hold", out.hold))
			case against && se.Permanent:
				// A permanent error that may be the modem's (see
				// mayBeTheModems): counted per message.
				if j.id != permID || j.id == "" {
					perms++
				}
				permID = j.id
				if perms >= p.opts.MaxErrors && up {
					n := perms
					holdOut(reasonSendRefused, fmt.Errorf("permanent send errors for %d messages in a row: %w", n, err))
					log.Warn("modem taken out: permanent send errors for several different messages in a row (its SIM may be barred, or its firmware refuse the PDUs); their messages are tried on other modems",
						zap.Int("messages", n), zap.Error(err), zap.Duration("hold", out.hold))
				}
			case against:
				errs++
				subs = subs || se.subscription
				switch {
				case errs < p.opts.MaxErrors || !up:
				case subs:
					n := errs
					holdOut(reasonSendErrors, fmt.Errorf("send errors %d times in a row: %w", n, err))
					log.Warn("modem taken out after consecutive errors", zap.Int("errors", n), zap.Error(err),
						zap.Duration("hold", out.hold))
				case out.netOut && time.Since(out.netOutAt) < netAgainWithin:
					// Errors of the network or the radio again, and no
					// send has gone out since a good probe put it back
					// after the last ones: the probe proves nothing for
					// this modem (congestion, a cell that registers it
					// and refuses its messages). Held out, as for errors
					// of its subscription, without the alert for those.
					n := errs
					holdOut(reasonNetwork, fmt.Errorf("send errors %d times in a row again, none sent since a good probe put it back: %w", n, err))
					log.Warn("modem taken out again after consecutive errors of the network or the radio, no send having gone out since it came back; held out, then tried with one message",
						zap.Int("errors", n), zap.Error(err), zap.Duration("hold", out.hold))
				default:
					// Errors of the network or the radio (no network
					// service, congestion, a send timeout...): they pass
					// when it is registered again, which a probe sees; no
					// hold, no trial (but see the case above).
					n := errs
					out.netOut, out.netOutAt = true, time.Now()
					cause := fmt.Errorf("send errors %d times in a row: %w; back in service when a probe finds it registered and answering", n, err)
					errs, perms, subs = 0, 0, false
					log.Warn("modem taken out after consecutive errors of the network or the radio; back in service at a good probe",
						zap.Int("errors", n), zap.Error(err), zap.Duration("probe_interval", p.opts.ReprobeInterval))
					takeOut(reasonNetwork, cause, false)
				}
			case err == nil:
				errs, perms, subs = 0, 0, false
				out.netOut = false
				if out.held() {
					// Its trial send went out: it can send again.
					out.hold, out.until, out.cause, out.netHold = 0, time.Time{}, nil, false
					armHold()
					metricHeldOut(cfg.Name, false)
					setUp(true, warn)
				}
			}
			p.tell(ctx, devMsg{kind: msgSendDone, dev: i, job: j, refs: refs, err: err, attempted: true, modem: cfg.Name, cut: cut})
			if err == nil {
				continue
			}
			if errors.Is(err, at.ErrClosed) {
				continue // m.Done() is closed: handled next round
			}
			if errors.Is(err, at.ErrModemRestarted) {
				// ^SYSSTART cut the send short: the modem has forgotten
				// its settings (and its PIN). Initialised again now, before
				// it takes the next job (its EventRestarted is then stale).
				ready = false
				takeOut(reasonRestarted, ErrRestarted, false)
				refresh()
				continue
			}
			if simStateError(err) {
				// The SIM asks for its PIN again or is gone (a restart
				// without ^SYSSTART, a swapped SIM): the modem needs its
				// init, not only a health probe, which would put it back
				// up as it is.
				ready = false
				takeOut(reasonSIM, err, false)
				refresh()
				continue
			}
		}
	}
}
