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
