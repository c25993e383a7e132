package proxy

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Half-dead binds. An SMSC node can keep a session's TCP connection and
// answer its enquire_link while it answers no submit_sm (a stuck node behind
// the carrier's balancer). The carrier's health does not see it while the
// carrier's other binds answer (a timeout counts towards down only when the
// whole carrier answered nothing while it waited: health.go), and the bind,
// whose window frees once each timed-out submit's late-answer hold ends,
// keeps being picked: every few seconds a message, up to a window of them
// under load, waits response_timeout and fails (to the modems, a possible
// duplicate; or back to the platform).
//
// So each carrier session counts its own submits that time out
// (bindWatch), as health counts the carrier's: a timeout counts only when
// the session answered no submit (submit_sm_resp or generic_nack, of any
// status, late ones included) during the last response_timeout, and any
// answer on the session starts the count again. Once
// failover.down_after_timeouts of them are counted in a row and another
// session of the carrier answered a submit since the first of them timed
// out (an answer that ends a run of timeouts of that other session's own
// is no such sign: the carrier as a whole may be answering again), the
// session is recycled (Kannel's wait-ack-expire reconnects so): it
// is picked for no new submit from then on, is unbound (unbind, its
// unbind_resp awaited at most 2 s) and closed, and its bind dials again as
// after any lost connection (the bind's backoff). The submits still in
// flight on it end as on any connection that drops (ErrConnLost), their late
// answers with it. Logged at warn and counted
// (spareline_carrier_bind_recycled_total).
//
// A carrier that answers on none of its sessions (silent as a whole, or with
// a single bind, or with every bind half-dead) is health's outage: down
// after down_after_timeouts, then one probe submit at a time, at most every
// probeEvery (2 response_timeouts), on the binds it keeps. Its timeouts
// alone recycle nothing: a burst of them says nothing about one bind. But a
// stuck node keeps its connection for ever, so the probes would go down it
// for ever and the carrier would never come back. So a session that leaves
// recycleAfterProbes (2) probe submits in a row unanswered is recycled as
// above (logged and counted alike): two, not one, so that a stall of the
// SMSC (its own failover, a pause) has about three response_timeouts from
// the carrier's down to end by itself on the connection it has before the
// bind is torn down; counting probes, not the outage's length, so that a
// bind is recycled on evidence against it (no traffic, no probe, no
// recycle: nothing is lost meanwhile). The recycle must not look like a
// carrier coming back: health's rule for a carrier whose bound count goes to
// zero and back is a probation, which would send the messages queued for
// the modems back to a carrier that may still answer nothing and turn the
// outage into a flap. Health is told first (holdForRecycle): the carrier
// stays down by timeouts through the unbind and the new bind, goes on being
// probed once a bind is back, and only an answered probe starts its
// probation.
//
// A bind recycled again before any of its sessions answered a submit (its
// new connection landed on the stuck node again, or the whole SMSC is
// stuck) would otherwise be recycled after every reconnect: each time a few
// more messages wait response_timeout on it (a window of them under load),
// and the SMSC sees a bind and an unbind every few seconds. So the bind
// counts its recycles in a row (carrierBind.recycles, cleared by any answer
// on its session) and, from the second, dials again only after a pause that
// grows with them: recycleRetry (30 s) doubled each time, at most
// recycleRetryMax (5 minutes), ±25% (or at once on a reload). The first
// recycle reconnects at the usual backoff: a balancer usually sends the new
// connection to a healthy node. The pause bounds the damage to a few
// messages and one reconnect per 5 minutes per bind, without a mechanism of
// its own: the bind is simply absent meanwhile (its carrier's other binds
// carry the traffic; a carrier left without a bind stays down, its traffic
// on the modems, as it was anyway). A bind that answers again is recycled,
// if ever, as on its first time.

// recycleAfterProbes is how many probe submits in a row a session leaves
// unanswered, its carrier down by timeouts, before it is recycled.
const recycleAfterProbes = 2

// recycleRetry and recycleRetryMax: after its n-th recycle in a row (n ≥ 2)
// a bind dials again after recycleRetry doubled n-2 times, at most
// recycleRetryMax, ±25% (recyclePause).
var (
	recycleRetry    = 30 * time.Second
	recycleRetryMax = 5 * time.Minute
)

// recyclePause is the least wait before a bind recycled for the n-th time
// in a row dials again: none the first time (the bind's backoff).
func recyclePause(n int32) time.Duration {
	if n < 2 {
		return 0
	}
	d := recycleRetry
	for i := int32(2); i < n && d < recycleRetryMax; i++ {
		d *= 2
	}
	d = min(d, recycleRetryMax)
	return d*3/4 + rand.N(d/2+1)
}

// bindWatch is a carrier session's record of its submits' answers
// (Session.Value of every carrier session: dialAndBind).
type bindWatch struct {
	mu sync.Mutex
	// lastAnswer is when the session last answered a submit.
	lastAnswer time.Time
	// timeouts counts the submits that timed out in a row since, as
	// noteSubmitTimeout counts them; answersAt is the carrier's answers
	// (Carrier.answers) when the first of them timed out.
	timeouts  int
	answersAt uint64
	// suspect: timeouts reached down_after_timeouts before the carrier
	// answered on another session; the next such answer recycles it
	// (Carrier.suspects counts the suspects).
	suspect bool
	// probeTimeouts counts the probe submits (its carrier down by
	// timeouts) that timed out in a row (noteProbeTimeout).
	probeTimeouts int
	// done: recycled, or the session ended; it counts nothing more.
	done bool
	// redialIn is the least wait before its bind dials again once it
	// has ended: set when it is recycled again (recyclePause).
	redialIn time.Duration
	// bind is the carrier bind whose session this is (set when the bind
	// takes it: connectAndServe), whose recycles in a row an answer ends.
	bind atomic.Pointer[carrierBind]
}

func watchOf(s *Session) *bindWatch {
	if s == nil {
		return nil
	}
	w, _ := s.Value.(*bindWatch)
	return w
}

// noteSubmitAnswer notes that the carrier answered a submit on s (in time
// or late, any status). A session waiting to be recycled (suspect) is, now
// that the carrier answered on another.
func (c *Carrier) noteSubmitAnswer(s *Session) {
	w := watchOf(s)
	if w == nil {
		return
	}
	now := time.Now()
	w.mu.Lock()
	silent := w.timeouts > 0
	w.lastAnswer = now
	w.timeouts, w.probeTimeouts = 0, 0
	if w.suspect {
		w.suspect = false
		c.suspects.Add(-1)
	}
	w.mu.Unlock()
	if b := w.bind.Load(); b != nil && b.recycles.Load() != 0 {
		b.recycles.Store(0) // the bind answers: a later recycle is a first one
	}
	if silent {
		// s ends a silence of its own: the carrier as a whole may be
		// answering again (an outage of health's), which says nothing
		// against its other sessions. The suspects are cleared (each
		// keeps its count: its next timeout decides).
		if c.suspects.Load() > 0 {
			c.acquitSuspects()
		}
		return
	}
	c.answers.Add(1)
	if c.suspects.Load() > 0 {
		c.recycleSuspects(s)
	}
}

// acquitSuspects clears the carrier's suspects (noteSubmitAnswer).
func (c *Carrier) acquitSuspects() {
	c.eachSession(func(s *Session) {
		if w := watchOf(s); w != nil {
			w.mu.Lock()
			if w.suspect {
				w.suspect = false
				c.suspects.Add(-1)
			}
			w.mu.Unlock()
		}
	})
}

// eachSession calls f with each session of the carrier's binds, and the
// bridge's.
func (c *Carrier) eachSession(f func(*Session)) {
	for _, b := range c.bindList() {
		if s := b.sess.Load(); s != nil {
			f(s)
		}
	}
	if br := c.bridge.Load(); br != nil {
		f(br.s)
	}
}

// noteSubmitTimeout notes that a submit on s got no answer within
// response_timeout, and recycles s when that makes it half-dead (see the
// top of this file).
func (c *Carrier) noteSubmitTimeout(s *Session) {
	w := watchOf(s)
	if w == nil {
		return
	}
	need := c.health.DownAfter()
	w.mu.Lock()
	if !w.countsTimeoutLocked(c) {
		w.mu.Unlock()
		return
	}
	w.timeouts++
	if w.timeouts == 1 {
		w.answersAt = c.answers.Load()
	}
	n := w.timeouts
	recycle := false
	if n >= need {
		if c.answers.Load() != w.answersAt {
			// The carrier answered on another session (its own answers
			// start the count again) since the first of these timeouts.
			recycle = true
			w.finishLocked(c)
		} else if !w.suspect {
			w.suspect = true
			c.suspects.Add(1)
		}
	}
	w.mu.Unlock()
	if recycle {
		c.recycle(s, n, false)
	}
}

// noteProbeTimeout notes that a probe submit on s (its carrier down by
// timeouts: Health.Probe) got no answer within response_timeout, and
// recycles s after recycleAfterProbes of them in a row (see the top of this
// file). noteSubmitTimeout has counted it already.
func (c *Carrier) noteProbeTimeout(s *Session) {
	w := watchOf(s)
	if w == nil {
		return
	}
	w.mu.Lock()
	if !w.countsTimeoutLocked(c) {
		w.mu.Unlock()
		return
	}
	w.probeTimeouts++
	n := w.probeTimeouts
	if n < recycleAfterProbes {
		w.mu.Unlock()
		return
	}
	w.finishLocked(c)
	w.mu.Unlock()
	c.recycle(s, n, true)
}

// recycleSuspects recycles the carrier's suspect sessions other than
// answered, which just answered a submit.
func (c *Carrier) recycleSuspects(answered *Session) {
	c.eachSession(func(s *Session) {
		w := watchOf(s)
		if s == answered || w == nil {
			return
		}
		w.mu.Lock()
		ok := w.suspect && !w.done
		if ok {
			w.finishLocked(c)
		}
		n := w.timeouts
		w.mu.Unlock()
		if ok {
			c.recycle(s, n, false)
		}
	})
}

// endWatch stops s's watch: s has ended (a suspect among them is no longer
// one).
func (c *Carrier) endWatch(s *Session) {
	w := watchOf(s)
	if w == nil {
		return
	}
	w.mu.Lock()
	w.finishLocked(c)
	w.mu.Unlock()
}

// finishLocked marks w done (recycled, or its session ended: it counts
// nothing more) and takes it off c's suspects; w.mu is held.
func (w *bindWatch) finishLocked(c *Carrier) {
	if w.suspect {
		w.suspect = false
		c.suspects.Add(-1)
	}
	w.done = true
}

// countsTimeoutLocked reports whether a submit timeout on w's session counts
// towards recycling it: w is not done, and the session answered no submit
// during the last response_timeout (answered while this submit waited: late,
// not dead, as health judges it); w.mu is held.
func (w *bindWatch) countsTimeoutLocked(c *Carrier) bool {
	rt := c.cfg.Load().ResponseTimeout.D()
	return !w.done && (w.lastAnswer.IsZero() || time.Since(w.lastAnswer) >= rt)
}

// recycle takes s, whose last n submits (probes: the last n probe submits
// of its carrier's outage) went unanswered, out of service: no new submit
// on it, then the unbind; its bind dials again once it has ended
// (connectAndServe), after a pause when it was recycled before with
// nothing answered since. For probes, health is told first
// (holdForRecycle): the carrier stays down. The bridge of a reload leaves
// as closeBridge has it, with no drain: what is in flight on it will not be
// answered.
func (c *Carrier) recycle(s *Session, n int, probes bool) {
	msg, countField := "carrier bind answers no submits while the carrier's other binds do; reconnecting it", "timeouts_in_a_row"
	if probes {
		msg, countField = "carrier bind answers no probe submits while the carrier is down by timeouts; reconnecting it (the carrier stays down until a probe is answered)", "probes_in_a_row"
	}
	for _, b := range c.bindList() {
		if !b.sess.CompareAndSwap(s, nil) { // not picked from now on
			continue
		}
		k := b.recycles.Add(1)
		pause := recyclePause(k)
		if w := watchOf(s); w != nil {
			w.mu.Lock()
			w.redialIn = pause // before the session ends: its bind reads it then
			w.mu.Unlock()
		}
		fields := []zap.Field{zap.Int("bind", b.index), zap.Int(countField, n), zap.Int("recycles_in_a_row", int(k))}
		if pause > 0 {
			fields = append(fields, zap.Duration("redial_in", pause))
		}
		if probes {
			c.health.holdForRecycle(c) // before the bound count can drop
		}
		c.log.Warn(msg, fields...)
		metricCarrierBindRecycled.WithLabelValues(c.Name).Inc()
		go s.Unbind(context.Background())
		return
	}
	if br := c.bridge.Load(); br != nil && br.s == s && c.bridge.CompareAndSwap(br, nil) {
		if probes {
			c.health.holdForRecycle(c)
			c.log.Warn("carrier answers no probe submits on the reload's bridge session while it is down by timeouts; it leaves",
				zap.Int("probes_in_a_row", n))
		} else {
			c.log.Warn("carrier answers no submits on the reload's bridge session while its binds do; it leaves",
				zap.Int("timeouts_in_a_row", n))
		}
		metricCarrierBindRecycled.WithLabelValues(c.Name).Inc()
		go func() {
			br.s.Unbind(context.Background())
			br.s.Wait()
			c.bridgeGone(br)
		}()
	}
}

// redialIn is the least wait before the bind of s, which has ended, dials
// again (bindWatch.redialIn).
func redialIn(s *Session) time.Duration {
	w := watchOf(s)
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.redialIn
}

// probeKey marks the context of a probe submit (withProbe).
type probeKey struct{}

// withProbe marks ctx as a probe submit's (the dispatcher's, for a carrier
// down by timeouts: Health.Probe): its timeout counts towards recycling
// the session it went on (noteProbeTimeout).
func withProbe(ctx context.Context) context.Context {
	return context.WithValue(ctx, probeKey{}, true)
}

// isProbe reports whether ctx is a probe submit's (withProbe).
func isProbe(ctx context.Context) bool {
	v, _ := ctx.Value(probeKey{}).(bool)
	return v
}
