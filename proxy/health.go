package proxy

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Carrier health (STYLE.md example 9): each carrier is up, on probation or
// down.
//
//   - down: no bind is bound, or down_after_timeouts consecutive submits got
//     no answer within response_timeout (a carrier that keeps TCP open and
//     goes silent), or the connection was lost with submits in flight.
//     A timeout counts towards down only when the carrier answered nothing
//     (no submit of any status) during the last response_timeout, i.e. while
//     the timed-out submit waited: the submits in flight time out together,
//     within milliseconds, when the answers are merely late, as when the
//     gateway is descheduled on a busy machine while a slow-but-alive SMSC's
//     answers sit unread (BENCHMARKS.md, soak: one such stall during a
//     778 ms spike gave five downs and flapping probations). A silent carrier
//     answers nothing, so its timeouts count as before and it is down about
//     response_timeout after it fell silent. (One bind silent while the
//     others answer is not the carrier's outage: that bind is reconnected,
//     recycle.go.)
//   - probation: a bind came back (or a probe submit was answered) after
//     being down; not a bind recycled because its probes went unanswered
//     (below). It lasts up_after, and a timer ends it then, traffic or
//     not (scheduleSettle); a timeout during it sends the carrier back
//     down. Messages queued for the modems during the outage go back to
//     a carrier on probation, new traffic keeps going to the modems until
//     probation ends, so a flapping carrier does not bounce traffic.
//   - up: everything goes to the carrier.
//
// A carrier marked down by timeouts while its binds stay connected is probed
// with one real submit at a time (the dispatcher asks Probe), at most every
// probeEvery; an answer (of any status) ends the outage. A bind whose probes
// go unanswered (recycleAfterProbes in a row: a stuck SMSC node keeping the
// connection) is recycled (recycle.go), and health is told first
// (holdForRecycle): the carrier stays down by timeouts, with its reason and
// count, while that bind is unbound and binds again (the bound count going
// to zero and back is no probation then: the queued messages would go back
// to a carrier that may still answer nothing, a flap), and it is probed again
// on the new connection; only an answered probe starts the probation.

// CarrierState is a carrier's health state.
type CarrierState int

// The states, ordered by health.
const (
	StateDown CarrierState = iota
	StateProbation
	StateUp
)

func (s CarrierState) String() string {
	switch s {
	case StateUp:
		return "up"
	case StateProbation:
		return "probation"
	}
	return "down"
}

// Health tracks every carrier's state.
type Health struct {
	mu        sync.Mutex
	carriers  map[string]*carrierHealth
	downAfter int
	upAfter   time.Duration
	now       func() time.Time
	log       *zap.Logger
	// OnChange, if set, is called (outside the lock) on every state change.
	OnChange func(carrier string, from, to CarrierState, reason string)
	// changed is closed and replaced at every state change (Changed).
	changed chan struct{}
	// owner is the carrier object whose binds a carrier's bind notes come
	// from (Attach); notes from another object of the same name, one a
	// reload removed and that is still unbinding, are ignored.
	owner map[string]*Carrier
	// gone are the carriers a reload removed (Forget), until one of the
	// same name is attached again.
	gone map[string]bool
	// afterFunc arms the timer that ends a probation (time.AfterFunc;
	// tests fake it); closed: Close was called, no timer is armed.
	afterFunc func(time.Duration, func()) stopper
	closed    bool
}

// stopper is a timer that can be stopped (*time.Timer).
type stopper interface{ Stop() bool }

type carrierHealth struct {
	state      CarrierState
	since      time.Time
	timeouts   int
	bound      int
	probing    bool
	everUp     bool // the first bind after start goes straight to up
	lastProbe  time.Time
	lastReason string
	// bindErr is the error of the last failed bind attempt since a bind
	// was last up (noteBindError): while no bind is up, the status page
	// shows it with the reason, since "not bound yet" says nothing of a
	// refused password or a refused bind_transceiver.
	bindErr string
	// ok, throttled, failed: lifetime submit outcomes (Note), as
	// spareline_submits_total counts them: accepted; answered
	// ESME_RTHROTTLED or ESME_RMSGQFUL and retried; everything else.
	ok, throttled, failed uint64
	recent                rateWindow // the last minute's outcomes (status page rates)
	// lastAnswer is when the carrier last answered a submit; respTimeout
	// its response_timeout (learnt when a bind comes up; 0 = unknown, every
	// timeout counts).
	lastAnswer  time.Time
	respTimeout time.Duration
	// settleTimer ends the probation once up_after has passed
	// (scheduleSettle); nil outside probation.
	settleTimer stopper
	// held: down by timeouts, a bind whose probes went unanswered was
	// recycled (holdForRecycle); until a probe is answered, the binds
	// going and coming back do not end the outage. Cleared when the
	// carrier leaves down.
	held bool
}

// NewHealth makes a tracker.
func NewHealth(downAfterTimeouts int, upAfter time.Duration, log *zap.Logger) *Health {
	if downAfterTimeouts <= 0 {
		downAfterTimeouts = 3
	}
	return &Health{carriers: map[string]*carrierHealth{}, downAfter: downAfterTimeouts, upAfter: upAfter,
		now: time.Now, log: log,
		afterFunc: func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }}
}

// Changed returns a channel that is closed at the next state change of any
// carrier: read the states after taking it, and wait on it for a change.
func (h *Health) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

// DownAfter is failover.down_after_timeouts (3 without a Health): also
// the timeouts in a row that recycle a carrier bind (recycle.go).
func (h *Health) DownAfter() int {
	if h == nil {
		return 3
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.downAfter
}

// SetPolicy changes the thresholds (reload).
func (h *Health) SetPolicy(downAfterTimeouts int, upAfter time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if downAfterTimeouts > 0 {
		h.downAfter = downAfterTimeouts
	}
	h.upAfter = upAfter
	for name, ch := range h.carriers {
		if ch.state == StateProbation {
			h.scheduleSettle(name, ch) // a probation ends by the new up_after
		}
	}
}

// Close stops the timers that end probations (shutdown): no state changes
// by itself afterwards.
func (h *Health) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, ch := range h.carriers {
		stopSettle(ch)
	}
}

// scheduleSettle arms ch's timer to end its probation when up_after has
// passed since it began, so that the state (carrier_state, carrier_up, the
// status page, the log line "probation passed") moves then by itself, not
// at the next submit or status read; h.mu is held.
func (h *Health) scheduleSettle(name string, ch *carrierHealth) {
	stopSettle(ch)
	if h.closed || ch.state != StateProbation {
		return
	}
	wait := max(h.upAfter-h.now().Sub(ch.since), 0)
	var t stopper
	t = h.afterFunc(wait, func() {
		h.mu.Lock()
		if h.carriers[name] != ch || ch.settleTimer != t {
			h.mu.Unlock() // forgotten, or stopped and armed again meanwhile
			return
		}
		ch.settleTimer = nil
		after := h.settle(name, ch)
		if ch.state == StateProbation {
			h.scheduleSettle(name, ch) // fired early by h.now: the rest
		}
		h.mu.Unlock()
		after()
	})
	ch.settleTimer = t
}

// stopSettle disarms ch's probation timer; h.mu is held.
func stopSettle(ch *carrierHealth) {
	if ch.settleTimer != nil {
		ch.settleTimer.Stop()
		ch.settleTimer = nil
	}
}

func (h *Health) get(name string) *carrierHealth {
	ch := h.carriers[name]
	if ch == nil {
		ch = &carrierHealth{state: StateDown, since: h.now(), lastReason: "not bound yet"}
		h.carriers[name] = ch
		metricCarrierUp.WithLabelValues(name).Set(0)
		metricCarrierState.WithLabelValues(name).Set(0)
	}
	return ch
}

// change moves a carrier to a new state; h.mu is held. It returns a func to
// call after unlocking.
func (h *Health) change(name string, ch *carrierHealth, to CarrierState, reason string) func() {
	from := ch.state
	if from == to {
		return func() {}
	}
	ch.state, ch.since, ch.lastReason = to, h.now(), reason
	ch.probing = false
	if to != StateDown {
		ch.held = false
	}
	if to == StateProbation {
		h.scheduleSettle(name, ch)
	} else {
		stopSettle(ch)
	}
	up := 0.0
	if to != StateDown {
		up = 1
	}
	metricCarrierUp.WithLabelValues(name).Set(up)
	metricCarrierState.WithLabelValues(name).Set(float64(to))
	if h.changed != nil {
		close(h.changed)
		h.changed = nil // made again by the next Changed
	}
	// Going down is what an operator running at --log-level warn must see:
	// a warning, an error when no carrier is left; back up is info.
	level := zap.InfoLevel
	if to == StateDown {
		level = zap.WarnLevel
		if h.allDown() {
			level = zap.ErrorLevel
		}
	}
	cb := h.OnChange
	return func() {
		if h.log != nil {
			fields := []zap.Field{zap.String("carrier", name), zap.Stringer("from", from),
				zap.Stringer("to", to), zap.String("reason", reason)}
			if level == zap.ErrorLevel {
				fields = append(fields, zap.Bool("all_carriers_down", true))
			}
			h.log.Log(level, "carrier state changed", fields...)
		}
		if cb != nil {
			cb(name, from, to, reason)
		}
	}
}

// allDown reports whether every carrier is down; h.mu is held.
func (h *Health) allDown() bool {
	for name, ch := range h.carriers {
		if c := h.owner[name]; c != nil && c.cfg.Load().ReceiveOnly {
			continue // sends nothing: not a path for messages
		}
		if ch.state != StateDown {
			return false
		}
	}
	return true
}

// settle ends a probation that has lasted upAfter; h.mu is held.
func (h *Health) settle(name string, ch *carrierHealth) func() {
	if ch.state == StateProbation && h.now().Sub(ch.since) >= h.upAfter {
		return h.change(name, ch, StateUp, "probation passed")
	}
	return func() {}
}

// Attach makes the carrier known (down until a bind is up) with c as the
// carrier of its name: only its binds' notes count from now on.
func (h *Health) Attach(c *Carrier) {
	h.mu.Lock()
	delete(h.gone, c.Name)
	h.get(c.Name)
	if h.owner == nil {
		h.owner = map[string]*Carrier{}
	}
	h.owner[c.Name] = c
	h.mu.Unlock()
}

// stale reports a bind note from a carrier object that is not (or no
// longer) the one attached under its name; h.mu is held.
func (h *Health) stale(c *Carrier) bool {
	if h.gone[c.Name] {
		return true
	}
	o := h.owner[c.Name]
	return o != nil && o != c
}

// peek is a carrier's health without making it known: a name no carrier
// has (one a reload removed) reads as down and adds no series; h.mu is held.
func (h *Health) peek(name string) *carrierHealth {
	if ch := h.carriers[name]; ch != nil {
		return ch
	}
	return &carrierHealth{state: StateDown, lastReason: "no such carrier"}
}

// Forget drops a carrier a reload removed (after its binds ended): its
// state and its carrier_up / carrier_state / carrier_binds /
// carrier_reload_refused series, so that
// no alert fires for a carrier that is gone.
func (h *Health) Forget(name string) {
	h.mu.Lock()
	if ch := h.carriers[name]; ch != nil {
		stopSettle(ch)
	}
	delete(h.carriers, name)
	delete(h.owner, name)
	if h.gone == nil {
		h.gone = map[string]bool{}
	}
	h.gone[name] = true
	h.mu.Unlock()
	metricCarrierUp.DeleteLabelValues(name)
	metricCarrierState.DeleteLabelValues(name)
	metricCarrierBinds.DeleteLabelValues(name)
	metricCarrierReloadRefused.DeleteLabelValues(name)
}

// State returns the carrier's state now (down for a carrier it does not
// know).
func (h *Health) State(name string) CarrierState {
	h.mu.Lock()
	ch := h.peek(name)
	after := h.settle(name, ch)
	st := ch.state
	h.mu.Unlock()
	after()
	return st
}

// CarrierHealthInfo is a snapshot for the status page.
type CarrierHealthInfo struct {
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason"`
	Timeouts int       `json:"consecutive_timeouts"`
	// OK, Throttled and Failed count the submits since the start as
	// spareline_submits_total does: accepted (result ok); answered
	// ESME_RTHROTTLED or ESME_RMSGQFUL and sent again (throttled); the
	// rest (error, timeout, lost): refused with an error status (a number
	// error, a transient error, or a throttle still there after the
	// retries), unanswered within response_timeout, or cut by the
	// connection's end.
	OK        uint64 `json:"ok"`
	Throttled uint64 `json:"throttled"`
	Failed    uint64 `json:"failed"`
	BoundBind int    `json:"bound"`
	// PerSecond is the submits the carrier was given per second (each
	// throttled try counts) over the last rateSeconds whole seconds.
	// ErrorRate is the fraction of the last minute's submits that ended
	// failed (of those accepted or failed: a throttled try is not an end,
	// its retry is); ThrottleRate the fraction of the last minute's
	// submits (each try) the carrier answered throttled and that were sent
	// again.
	PerSecond    float64 `json:"submits_per_second"`
	ErrorRate    float64 `json:"error_rate"`
	ThrottleRate float64 `json:"throttle_rate"`
}

// rateSeconds is the window of CarrierHealthInfo.PerSecond.
const rateSeconds = 10

// rateWindow counts submit outcomes in one-second buckets over the last
// minute (60 buckets indexed by the Unix second; a bucket from an older
// minute is reset when reused). Guarded by Health.mu.
type rateWindow struct {
	sec                 [60]int64
	ok, throttled, fail [60]uint32
}

// outcomeKind is how a submit outcome counts in the statistics.
type outcomeKind int

const (
	kindOK outcomeKind = iota
	kindThrottled
	kindFailed
)

func (w *rateWindow) add(t time.Time, k outcomeKind) {
	s := t.Unix()
	i := s % 60
	if w.sec[i] != s {
		w.sec[i], w.ok[i], w.throttled[i], w.fail[i] = s, 0, 0, 0
	}
	switch k {
	case kindOK:
		w.ok[i]++
	case kindThrottled:
		w.throttled[i]++
	default:
		w.fail[i]++
	}
}

// rateSums are the outcomes of some seconds (rateWindow.sums).
type rateSums struct{ ok, throttled, failed uint64 }

// sums adds the outcomes of the n whole seconds before t's second.
func (w *rateWindow) sums(t time.Time, n int64) rateSums {
	var r rateSums
	s := t.Unix()
	for k := int64(1); k <= n && k <= 59; k++ {
		sec := s - k
		if i := sec % 60; w.sec[i] == sec {
			r.ok += uint64(w.ok[i])
			r.throttled += uint64(w.throttled[i])
			r.failed += uint64(w.fail[i])
		}
	}
	return r
}

// Info returns a snapshot.
func (h *Health) Info(name string) CarrierHealthInfo {
	h.mu.Lock()
	ch := h.peek(name)
	after := h.settle(name, ch)
	info := CarrierHealthInfo{State: ch.state.String(), Since: ch.since, Reason: ch.lastReason, Timeouts: ch.timeouts,
		OK: ch.ok, Throttled: ch.throttled, Failed: ch.failed, BoundBind: ch.bound}
	if ch.bound == 0 && ch.bindErr != "" {
		info.Reason += "; last bind attempt: " + ch.bindErr
	}
	now := h.now()
	r10 := ch.recent.sums(now, rateSeconds)
	info.PerSecond = float64(r10.ok+r10.throttled+r10.failed) / rateSeconds
	r60 := ch.recent.sums(now, 60)
	if ended := r60.ok + r60.failed; ended > 0 {
		info.ErrorRate = float64(r60.failed) / float64(ended)
	}
	if all := r60.ok + r60.throttled + r60.failed; all > 0 {
		info.ThrottleRate = float64(r60.throttled) / float64(all)
	}
	h.mu.Unlock()
	after()
	return info
}

func (h *Health) noteBindUp(c *Carrier) {
	h.mu.Lock()
	if h.stale(c) {
		h.mu.Unlock()
		return
	}
	ch := h.get(c.Name)
	ch.bound = c.Bound()
	ch.bindErr = ""
	ch.respTimeout = c.Config().ResponseTimeout.D()
	after := func() {}
	if ch.state == StateDown && !ch.everUp {
		ch.everUp = true
		after = h.change(c.Name, ch, StateUp, "first bind up")
	} else if ch.state == StateDown && ch.timeouts < h.downAfter && !ch.held {
		after = h.change(c.Name, ch, StateProbation, "bind up")
		if h.upAfter <= 0 {
			after2 := h.change(c.Name, ch, StateUp, "bind up")
			a1 := after
			after = func() { a1(); after2() }
		}
	}
	h.mu.Unlock()
	after()
}

// noteBindError records why a bind attempt of c failed (the dial, TLS, or
// the carrier's refusal of the bind: a status name and, for a refused
// bind_transceiver, the bind_mode hint; the errors carry no password).
func (h *Health) noteBindError(c *Carrier, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stale(c) || err == nil {
		return
	}
	h.get(c.Name).bindErr = err.Error()
}

func (h *Health) noteBindDown(c *Carrier, err error) {
	h.mu.Lock()
	if h.stale(c) {
		h.mu.Unlock()
		return
	}
	ch := h.get(c.Name)
	ch.bound = c.Bound()
	after := func() {}
	if ch.bound == 0 && !(ch.held && ch.state == StateDown) {
		// (held: the bind a probe-timeout recycle took down; the carrier
		// stays down by timeouts, its count kept, and its bind's return
		// is no sign that it answers: holdForRecycle.)
		reason := "all binds down"
		if err != nil {
			reason += ": " + err.Error()
		}
		ch.timeouts = 0
		after = h.change(c.Name, ch, StateDown, reason)
	}
	h.mu.Unlock()
	after()
}

// holdForRecycle notes that a bind of c is about to be recycled because
// its probe submits went unanswered while c is down by timeouts
// (recycle.go): the bound count going to zero and back for it must not end
// the outage (the rule for a carrier whose binds all dropped and came back
// is a probation), which would send the queued messages back to a carrier
// that may answer nothing and turn the outage into a flap. c stays down,
// with its reason and its timeouts, and goes on being probed once a bind
// is back; only an answered submit starts its probation. Nothing is held
// for a carrier no longer down (another bind answered meanwhile).
func (h *Health) holdForRecycle(c *Carrier) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stale(c) {
		return
	}
	if ch := h.get(c.Name); ch.state == StateDown {
		ch.held = true
	}
}

// Outcome is how one submit to a carrier ended, for health.
type Outcome int

// Outcomes.
//
// Every answer shows the carrier alive (it resets the timeouts and ends an
// outage); for the status page's figures an acceptance is ok, a throttle
// that is retried is throttled, and the rest failed (CarrierHealthInfo).
const (
	OutcomeAnswered  Outcome = iota // accepted (ESME_ROK)
	OutcomeThrottled                // ESME_RTHROTTLED or ESME_RMSGQFUL, sent again
	OutcomeRefused                  // an error status that refuses the message: a number error, a throttle after the retries
	OutcomeTransient                // an error status of ClassTransient
	OutcomeTimeout                  // no answer within response_timeout
	OutcomeLost                     // the connection ended with it in flight
)

// Note records a submit's outcome.
func (h *Health) Note(name string, o Outcome) {
	h.mu.Lock()
	ch := h.get(name)
	now := h.now()
	after := func() {}
	switch o {
	case OutcomeAnswered, OutcomeThrottled, OutcomeRefused, OutcomeTransient:
		switch o {
		case OutcomeAnswered:
			ch.ok++
			ch.recent.add(now, kindOK)
		case OutcomeThrottled:
			ch.throttled++
			ch.recent.add(now, kindThrottled)
		default:
			ch.failed++
			ch.recent.add(now, kindFailed)
		}
		ch.timeouts = 0
		ch.lastAnswer = now
		if ch.state == StateDown && ch.bound > 0 {
			after = h.change(name, ch, StateProbation, "carrier answered again")
		}
	case OutcomeTimeout:
		ch.recent.add(now, kindFailed)
		ch.failed++
		if !ch.lastAnswer.IsZero() && h.now().Sub(ch.lastAnswer) < ch.respTimeout {
			// The carrier answered while this submit waited: late, not
			// silent (see the doc above).
			break
		}
		ch.timeouts++
		if ch.timeouts >= h.downAfter || ch.state == StateProbation {
			after = h.change(name, ch, StateDown, "submits unanswered within response_timeout")
		}
	case OutcomeLost:
		ch.recent.add(now, kindFailed)
		ch.failed++
	}
	h.mu.Unlock()
	after()
}

// Probe reports whether one submit may be sent to a down carrier whose binds
// are still connected, to find out whether it answers again. Only one probe
// is in flight at a time; call Note with its outcome and then EndProbe.
func (h *Health) Probe(name string, every time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch := h.get(name)
	if ch.state != StateDown || ch.bound == 0 || ch.probing || h.now().Sub(ch.lastProbe) < every {
		return false
	}
	ch.probing = true
	ch.lastProbe = h.now()
	return true
}

// EndProbe releases the probe slot.
func (h *Health) EndProbe(name string) {
	h.mu.Lock()
	h.get(name).probing = false
	h.mu.Unlock()
}
