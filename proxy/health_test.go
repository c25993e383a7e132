package proxy

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// A slow but alive carrier is not marked down when the submits in flight
// time out together right after it answered (the gateway read the answers
// late); a carrier that answered nothing for response_timeout is.
func TestHealthTimeoutsCountOnlyWhenTheCarrierWasSilent(t *testing.T) {
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := NewHealth(3, 0, nil)
	h.now = func() time.Time { return clock }
	c := NewCarrier(config.Carrier{Name: "mobile", ResponseTimeout: config.Duration(time.Second)}, h, zap.NewNop())
	h.noteBindUp(c)
	if st := h.State("mobile"); st != StateUp {
		t.Fatalf("after the first bind: %v", st)
	}

	h.Note("mobile", OutcomeAnswered)
	clock = clock.Add(300 * time.Millisecond)
	for range 10 { // ten submits in flight time out at once
		h.Note("mobile", OutcomeTimeout)
	}
	if st := h.State("mobile"); st != StateUp {
		t.Fatalf("timeouts 300 ms after an answer: %v, want up (late, not silent)", st)
	}
	if info := h.Info("mobile"); info.Failed != 10 {
		t.Errorf("failed = %d, want the 10 timeouts counted in the statistics", info.Failed)
	}

	clock = clock.Add(time.Second) // nothing answered for 1.3 s
	h.Note("mobile", OutcomeTimeout)
	h.Note("mobile", OutcomeTimeout)
	if st := h.State("mobile"); st != StateUp {
		t.Fatalf("after 2 timeouts: %v, want up until down_after_timeouts (3)", st)
	}
	h.Note("mobile", OutcomeTimeout)
	if st := h.State("mobile"); st != StateDown {
		t.Fatalf("after 3 timeouts with the carrier silent for longer than response_timeout: %v, want down", st)
	}
}

// The status page's carrier rates: submits per second over the last 10
// whole seconds and the failed fraction over the last minute.
func TestHealthRates(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	h := NewHealth(3, time.Second, zap.NewNop())
	h.now = func() time.Time { return clock }
	for sec := 0; sec < 20; sec++ {
		for i := 0; i < 5; i++ {
			h.Note("mobile", OutcomeAnswered)
		}
		if sec >= 15 {
			h.Note("mobile", OutcomeTransient) // one failure a second in the last 5 s
		}
		clock = clock.Add(time.Second)
	}
	info := h.Info("mobile")
	// The last 10 whole seconds: 10 x 5 answered + 5 failures.
	if info.PerSecond != 5.5 {
		t.Errorf("PerSecond = %v, want 5.5", info.PerSecond)
	}
	// The last minute (20 seconds of traffic): 5 failed of 105.
	if want := 5.0 / 105; info.ErrorRate != want {
		t.Errorf("ErrorRate = %v, want %v", info.ErrorRate, want)
	}
	// A minute later with no traffic, both are zero.
	clock = clock.Add(2 * time.Minute)
	if info := h.Info("mobile"); info.PerSecond != 0 || info.ErrorRate != 0 {
		t.Errorf("after a quiet minute: %v/s, %v failed", info.PerSecond, info.ErrorRate)
	}
}
