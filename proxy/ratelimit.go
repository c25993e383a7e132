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
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
