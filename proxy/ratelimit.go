package proxy

import (
	"context"
	"sync"
	"time"
)

// rateLimiter is a token bucket: rate tokens a second, burst of rate (at
// least 1). A nil *rateLimiter allows everything.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

func newRateLimiter(perSecond int) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &rateLimiter{rate: float64(perSecond), tokens: float64(perSecond), last: time.Now()}
}

func (l *rateLimiter) refill(now time.Time) {
	l.tokens += now.Sub(l.last).Seconds() * l.rate
	if max := l.rate; l.tokens > max {
		l.tokens = max
	}
	if l.tokens > 1 && l.rate < 1 {
		l.tokens = 1
	}
	l.last = now
}

// Allow takes a token if one is available now.
func (l *rateLimiter) Allow() bool { return l.AllowN(1) }

// AllowN takes n tokens if min(n, burst) are available now. A request for
// more than the burst (a submit_multi to more destinations than max_tps)
// is let through when the bucket is full and leaves it in debt, so the
// long-run rate holds.
func (l *rateLimiter) AllowN(n int) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(time.Now())
	if l.tokens >= min(float64(n), max(l.rate, 1)) {
		l.tokens -= float64(n)
		return true
	}
	return false
}

// giveBack returns a token taken by Allow that was not used.
func (l *rateLimiter) giveBack() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.tokens = min(l.tokens+1, max(l.rate, 1))
	l.mu.Unlock()
}

// Wait takes a token, waiting for one until ctx ends.
func (l *rateLimiter) Wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	for {
		l.mu.Lock()
		now := time.Now()
		l.refill(now)
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		wait := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
		l.mu.Unlock()
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// tpsWindow lets at most n sends go out in any one second: the (n+1)-th
// waits until a second has passed since the first. It is a carrier's
// max_tps: SMSCs count a contract's rate per second (a calendar second or
// the last one) and throttle the excess, so a burst that a token bucket
// allows on top of its rate (up to twice the rate in the first second
// after a quiet spell) is refused. The sends are also paced, at least a
// second / n apart: n sent at once every second reach an SMSC whose count
// is its own (a window from its receive times) in bursts one second apart
// that network jitter can put within one of its seconds (twice the rate,
// found by an independent carrier-side test); paced, jitter moves one send
// at most. A nil *tpsWindow allows everything.
//
// The pace is kept on a schedule (due: when the next send is due), not
// from the last send's actual time: a sender woken late by the timer (Go's
// timers overshoot by up to about a millisecond, more on a busy machine)
// sends the next one that much sooner, so the overshoot does not add up.
// Measured before: max_tps 1,000 gave 932 a second, 2,000 gave 929, 5,000
// gave 1,105. A send later than its due time by more than late (a sender
// that had nothing to send) starts the schedule again from itself.
type tpsWindow struct {
	mu   sync.Mutex
	sent []time.Duration // the last n send times (monoClock), a ring; sent[next] is the oldest
	next int
	gap  time.Duration // second / n: the time between two sends on the schedule
	due  time.Duration // when the next send is due on the schedule
	late time.Duration // how late a send may be and still keep the schedule
	now  func() time.Duration
}

// tpsLateMin is the least lateness a send may have and keep its carrier's
// schedule (tpsWindow.late): more than a timer's usual overshoot.
const tpsLateMin = 2 * time.Millisecond

func newTPSWindow(perSecond int) *tpsWindow {
	if perSecond <= 0 {
		return nil
	}
	gap := time.Second / time.Duration(perSecond)
	w := &tpsWindow{sent: make([]time.Duration, perSecond), gap: gap, late: max(tpsLateMin, gap/4), now: monoClock}
	for i := range w.sent {
		w.sent[i] = w.now() - time.Second // nothing sent in the last second
	}
	w.due = w.now() - time.Second
	return w
}

// take takes a send slot if one is free now; otherwise it returns how long
// until one is.
func (w *tpsWindow) take() (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if wait := max(w.sent[w.next]+time.Second, w.due) - now; wait > 0 {
		return wait, false
	}
	w.sent[w.next] = now
	w.next = (w.next + 1) % len(w.sent)
	if now-w.due <= w.late {
		w.due += w.gap // on schedule, or late by a timer's overshoot: kept
	} else {
		w.due = now + w.gap // after a pause: from this send
	}
	return 0, true
}

// Allow takes a send slot if one is free now.
func (w *tpsWindow) Allow() bool {
	if w == nil {
		return true
	}
	_, ok := w.take()
	return ok
}

// giveBack is for a slot taken by Allow and not used: it is kept (one
// send fewer in that second, never one more).
func (w *tpsWindow) giveBack() {}

// Wait takes a send slot, waiting for one until ctx ends.
func (w *tpsWindow) Wait(ctx context.Context) error {
	if w == nil {
		return nil
	}
	for {
		wait, ok := w.take()
		if ok {
			return nil
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// sleepCtx waits d, or until ctx ends (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
