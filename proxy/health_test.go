package proxy

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

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

// A carrier removed by a reload and added back by another while the old one
// still unbinds: the old binds going down do not mark the new carrier,
// whose binds are up, down.
func TestHealthIgnoresTheBindsOfAReplacedCarrier(t *testing.T) {
	h := NewHealth(3, 0, zap.NewNop())
	cfg := config.Carrier{Name: "x", Binds: 1}
	old := NewCarrier(cfg, h, zap.NewNop())
	h.Attach(old)
	old.bound.Store(1)
	h.noteBindUp(old)
	h.Forget("x") // removed; its binds are unbinding
	re := NewCarrier(cfg, h, zap.NewNop())
	h.Attach(re) // added back
	re.bound.Store(1)
	h.noteBindUp(re)
	old.bound.Store(0)
	h.noteBindDown(old, errors.New("unbound locally"))
	if st := h.State("x"); st != StateUp {
		t.Fatalf("state %v after the replaced carrier's bind went down, want up", st)
	}
	if info := h.Info("x"); info.BoundBind != 1 {
		t.Fatalf("%d binds counted, want the new carrier's 1", info.BoundBind)
	}
}

// A forgotten carrier (removed by a reload) stays forgotten: reading its
// state (queued messages that named it) or a late note of its binds brings
// back no series, so no "carrier down" alert fires for a carrier that is
// gone.
func TestHealthForgetLeavesNoSeries(t *testing.T) {
	h := NewHealth(3, 0, zap.NewNop())
	c := NewCarrier(config.Carrier{Name: "gone-carrier", Binds: 1}, h, zap.NewNop())
	h.Attach(c)
	h.Forget("gone-carrier")
	if st := h.State("gone-carrier"); st != StateDown {
		t.Fatalf("state %v, want down", st)
	}
	h.noteBindDown(c, nil)
	_ = h.Info("gone-carrier")
	for _, v := range []*prometheus.GaugeVec{metricCarrierUp, metricCarrierState, metricCarrierBinds} {
		if seriesOf(v, "gone-carrier") {
			t.Fatal("a series of the forgotten carrier is exported")
		}
	}
	h.mu.Lock()
	_, back := h.carriers["gone-carrier"]
	h.mu.Unlock()
	if back {
		t.Fatal("the forgotten carrier is tracked again")
	}
}

// seriesOf reports whether v exports a series with a label of value value.
func seriesOf(v *prometheus.GaugeVec, value string) bool {
	ch := make(chan prometheus.Metric, 64)
	go func() { v.Collect(ch); close(ch) }()
	found := false
	for m := range ch {
		var d dto.Metric
		_ = m.Write(&d)
		for _, l := range d.GetLabel() {
			found = found || l.GetValue() == value
		}
	}
	return found
}

// Log lines name every SMPP 3.4 status (a carrier's bind refusal reads
// ESME_RINVPASWD, not a bare number); a status outside the spec stays a
// number.
func TestStatusStringNamesEveryStatus(t *testing.T) {
	for status, want := range map[uint32]string{
		0x0E: "ESME_RINVPASWD(0x0000000E)", 0x0D: "ESME_RBINDFAIL(0x0000000D)", 0x58: "ESME_RTHROTTLED(0x00000058)",
		0x0400: "0x00000400",
	} {
		if got := StatusString(status); got != want {
			t.Errorf("StatusString(0x%X) = %q, want %q", status, got, want)
		}
	}
}

// A carrier going down is logged at warn, at error when it was the last
// one up; coming back is info, so that --log-level warn shows the outages
// and nothing else of it.
func TestHealthLogsCarrierDownAtWarn(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	h := NewHealth(3, 0, zap.New(core))
	mobile := NewCarrier(config.Carrier{Name: "mobile"}, h, zap.NewNop())
	unicom := NewCarrier(config.Carrier{Name: "unicom"}, h, zap.NewNop())
	h.Attach(mobile)
	h.Attach(unicom)
	mobile.bound.Store(1)
	h.noteBindUp(mobile)
	unicom.bound.Store(1)
	h.noteBindUp(unicom)
	logs.TakeAll()

	type line struct {
		level   zapcore.Level
		carrier string
		to      string
	}
	changes := func() []line {
		var out []line
		for _, e := range logs.TakeAll() {
			if e.Message == "carrier state changed" {
				m := e.ContextMap()
				out = append(out, line{e.Level, m["carrier"].(string), m["to"].(string)})
			}
		}
		return out
	}
	mobile.bound.Store(0)
	h.noteBindDown(mobile, errors.New("EOF"))
	if got, want := changes(), []line{{zapcore.WarnLevel, "mobile", "down"}}; !slices.Equal(got, want) {
		t.Errorf("one carrier down: logged %v, want %v", got, want)
	}
	unicom.bound.Store(0)
	h.noteBindDown(unicom, errors.New("EOF"))
	if got, want := changes(), []line{{zapcore.ErrorLevel, "unicom", "down"}}; !slices.Equal(got, want) {
		t.Errorf("the last carrier down: logged %v, want %v", got, want)
	}
	mobile.bound.Store(1)
	h.noteBindUp(mobile)
	got := changes()
	for _, l := range got {
		if l.level != zapcore.InfoLevel {
			t.Errorf("carrier back up logged at %v", l.level)
		}
	}
	if len(got) == 0 {
		t.Error("carrier back up: no state change logged")
	}
}
