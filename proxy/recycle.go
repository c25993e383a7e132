package proxy

import (
	"context"
	"sync"
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
// a single bind) is not recycled: that is health's outage (down after
// down_after_timeouts, then one probe submit at a time on the binds it
// keeps); unbinding its binds as well would take the bound count to zero and
// back, which turns that outage into a probation, and new timeouts into a
// flap.

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
	// done: recycled, or the session ended; it counts nothing more.
	done bool
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
	w.timeouts = 0
	if w.suspect {
		w.suspect = false
		c.suspects.Add(-1)
	}
	w.mu.Unlock()
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
	rt := c.cfg.Load().ResponseTimeout.D()
	now := time.Now()
	w.mu.Lock()
	if w.done || !w.lastAnswer.IsZero() && now.Sub(w.lastAnswer) < rt {
		// Answered while this submit waited: late, not dead (as health).
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
			w.done = true
			if w.suspect {
				w.suspect = false
				c.suspects.Add(-1)
			}
		} else if !w.suspect {
			w.suspect = true
			c.suspects.Add(1)
		}
	}
	w.mu.Unlock()
	if recycle {
		c.recycle(s, n)
	}
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
			w.suspect, w.done = false, true
			c.suspects.Add(-1)
		}
		n := w.timeouts
		w.mu.Unlock()
		if ok {
			c.recycle(s, n)
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
	if w.suspect {
		w.suspect = false
		c.suspects.Add(-1)
	}
	w.done = true
	w.mu.Unlock()
}

// recycle takes s, whose last n submits went unanswered, out of service:
// no new submit on it, then the unbind; its bind dials again once it has
// ended (connectAndServe). The bridge of a reload leaves as closeBridge has
// it, with no drain: what is in flight on it will not be answered.
func (c *Carrier) recycle(s *Session, n int) {
	for _, b := range c.bindList() {
		if !b.sess.CompareAndSwap(s, nil) { // not picked from now on
			continue
		}
		c.log.Warn("carrier bind answers no submits while the carrier's other binds do; reconnecting it",
			zap.Int("bind", b.index), zap.Int("timeouts_in_a_row", n))
		metricCarrierBindRecycled.WithLabelValues(c.Name).Inc()
		go s.Unbind(context.Background())
		return
	}
	if br := c.bridge.Load(); br != nil && br.s == s && c.bridge.CompareAndSwap(br, nil) {
		c.log.Warn("carrier answers no submits on the reload's bridge session while its binds do; it leaves",
			zap.Int("timeouts_in_a_row", n))
		metricCarrierBindRecycled.WithLabelValues(c.Name).Inc()
		go func() {
			br.s.Unbind(context.Background())
			br.s.Wait()
			c.bridgeGone(br)
		}()
	}
}
