// Package bench measures spareline end to end on one machine, in one run:
// SMSC simulators (test/smscsim), a load generator speaking SMPP
// (test/platform clients with a configurable window, open-loop paced or
// closed loop), emulated modems on real pseudo-terminals (test/modemsim), a
// real redis-server (test/redisserver; appendonly yes, appendfsync everysec)
// or the embedded store, and the gateway itself (proxy.NewGateway) in this
// process, all on loopback. `spareline bench` is its command line; the smoke
// test runs every scenario tiny.
//
// Method, in short:
//   - Throughput and latency are measured twice in the same environment: the
//     load generator bound straight to the simulators ("direct", the same
//     number of binds and window as the gateway's carrier binds), then bound
//     to the gateway ("relayed"). The ratio of delivered (status 0) rates and
//     the difference of latency percentiles are spareline's cost. Latency is
//     submit_sm written to submit_sm_resp read, per message, nearest-rank
//     percentiles.
//   - Every load loop is bounded by Options.Messages and Options.Duration.
//   - Each headline figure is compared with the floor and target
//     (Result.Verdict); figures without one are informational.
//   - Failover times are read from the gateway's own counter
//     (spareline_failovers_total, the first message put on the modem queue)
//     and the emulated modems' send times (the first message leaving by modem).
//   - Memory: Redis used_memory (INFO memory) and the Go heap (HeapAlloc after
//     GC) before and after a backlog held in flight (a carrier that accepts
//     but never sends the receipt: each message keeps its record and carrier
//     id index entry until then), and VmRSS per 1,000 bound platform sessions.
//     The load generator lives in the same process; it keeps no history, so
//     its share is its open sessions only.
//   - Soak (only when named: `--scenario soak`, see soak.go): a steady load
//     for minutes to hours while each carrier's answers are delayed at
//     random by spikes below response_timeout (a faultnet relay before each
//     simulator) and each carrier has one real outage; it counts false downs
//     (Health.OnChange), true detection times, modem sends, and per message
//     (by its number in the text) lost messages and possible duplicates.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/test/redisserver"
)

// Scenario names, in the order a full run takes them.
var Scenarios = []string{"realistic", "saturation", "latency", "failover", "modems", "memory", "drain"}

// LongScenarios run only when named (--scenario soak): they last minutes to
// hours.
var LongScenarios = []string{"soak"}

// Options configure a run. Zero values take the defaults of DefaultOptions.
type Options struct {
	Scenarios []string      // default all (Scenarios)
	Stores    []string      // StoreRedis, StoreBolt; default both
	Messages  int           // per load phase; 0 = bounded by Duration only
	Duration  time.Duration // per load phase

	RealisticRates []float64 // offered msg/s of "realistic"; default 1500 and 5000
	SMSCRate       int       // "realistic": simulator cap per bind, msg/s; default 250
	LatencyRate    float64   // "latency": offered msg/s; default 1000

	Modems         int           // "modems": emulated modems; default 4
	ModemSend      time.Duration // "modems": time per send; default 300ms
	ModemPerMinute int           // "modems": budget per modem; default 100
	ModemWindow    time.Duration // "modems": measurement window from the first send; default 1m

	Backlog  int // "memory": messages held in flight; "drain": receipts held; default 10000
	Sessions int // "memory": platform sessions bound; default 1000

	Soak     time.Duration // "soak": length of the load; default 2m
	SoakRate float64       // "soak": offered msg/s over the three carriers; default 300
	Seed     int64         // "soak": seed of the spike schedule; 0 = from the clock (printed)
	// SoakSpikeMax is the "soak" spikes' highest latency; default 800ms
	// (below response_timeout 1s). Above 1s it shows what a spike beyond
	// the response timeout does.
	SoakSpikeMax time.Duration

	// HeapProfile, when set, is where the memory scenario writes a heap
	// profile while its platform sessions are bound.
	HeapProfile string

	Dir      string      // for temporary files; default os.TempDir
	Log      *zap.Logger // the gateway's logger; default none
	Progress io.Writer   // progress lines; nil = none
}

// DefaultOptions are a full run of a few minutes.
func DefaultOptions() Options {
	return Options{
		Scenarios: slices.Clone(Scenarios), Stores: []string{StoreRedis, StoreBolt},
		Duration: 5 * time.Second, RealisticRates: []float64{1500, 5000}, SMSCRate: 250, LatencyRate: 1000,
		Modems: 4, ModemSend: 300 * time.Millisecond, ModemPerMinute: 100, ModemWindow: time.Minute,
		Backlog: 10000, Sessions: 1000, Soak: 2 * time.Minute, SoakRate: 300,
		SoakSpikeMax: 800 * time.Millisecond,
	}
}

func (o *Options) fill() {
	d := DefaultOptions()
	if len(o.Scenarios) == 0 {
		o.Scenarios = d.Scenarios
	}
	if len(o.Stores) == 0 {
		o.Stores = d.Stores
	}
	if o.Duration <= 0 && o.Messages <= 0 {
		o.Duration = d.Duration
	}
	if len(o.RealisticRates) == 0 {
		o.RealisticRates = d.RealisticRates
	}
	if o.SMSCRate <= 0 {
		o.SMSCRate = d.SMSCRate
	}
	if o.LatencyRate <= 0 {
		o.LatencyRate = d.LatencyRate
	}
	if o.Modems <= 0 {
		o.Modems = d.Modems
	}
	if o.ModemSend <= 0 {
		o.ModemSend = d.ModemSend
	}
	if o.ModemPerMinute <= 0 {
		o.ModemPerMinute = d.ModemPerMinute
	}
	if o.ModemWindow <= 0 {
		o.ModemWindow = d.ModemWindow
	}
	if o.Backlog <= 0 {
		o.Backlog = d.Backlog
	}
	if o.Sessions <= 0 {
		o.Sessions = d.Sessions
	}
	if o.Soak <= 0 {
		o.Soak = d.Soak
	}
	if o.SoakRate <= 0 {
		o.SoakRate = d.SoakRate
	}
	if o.SoakSpikeMax <= 0 {
		o.SoakSpikeMax = d.SoakSpikeMax
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
}

// Validate names the first problem with the options.
func (o Options) Validate() error {
	for _, s := range o.Scenarios {
		if !slices.Contains(Scenarios, s) && !slices.Contains(LongScenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (want one of %s)", s, strings.Join(slices.Concat(Scenarios, LongScenarios), ", "))
		}
	}
	for _, s := range o.Stores {
		if s != StoreRedis && s != StoreBolt {
			return fmt.Errorf("bench: unknown store %q (want redis or bolt)", s)
		}
	}
	if o.Messages < 0 || o.Duration < 0 {
		return fmt.Errorf("bench: --messages and --duration must not be negative")
	}
	return nil
}

// Machine describes where the figures come from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	Model     string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

// Result is one headline figure.
type Result struct {
	Scenario string   `json:"scenario"`
	Store    string   `json:"store,omitempty"`
	Metric   string   `json:"metric"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Floor    *float64 `json:"floor,omitempty"`
	Target   *float64 `json:"target,omitempty"`
	Higher   bool     `json:"higher_is_better"`
	Verdict  string   `json:"verdict,omitempty"` // "target met", "floor met", "BELOW FLOOR", "" (no floor)
	Note     string   `json:"note,omitempty"`
}

// Phase is one load run's raw counts.
type Phase struct {
	Scenario  string  `json:"scenario"`
	Store     string  `json:"store,omitempty"`
	Name      string  `json:"name"`
	Sent      int     `json:"sent"`
	OK        int     `json:"ok"`
	Refused   int     `json:"refused"`
	NoAnswer  int     `json:"no_answer"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"delivered_per_s"`
	Offered   float64 `json:"offered_per_s"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	BehindMax float64 `json:"behind_schedule_ms,omitempty"`
	// CPU time per message answered OK, in µs: this process (load
	// generator, simulators and gateway together) and redis-server.
	CPUus      float64 `json:"cpu_us_per_msg"`
	RedisCPUus float64 `json:"redis_cpu_us_per_msg,omitempty"`
}

// Report is a whole run.
type Report struct {
	Machine  Machine   `json:"machine"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Options  Options   `json:"-"`
	Results  []Result  `json:"results"`
	Phases   []Phase   `json:"phases"`
	Failures []string  `json:"failures,omitempty"` // scenarios that could not run, and why
	Soak     *SoakLog  `json:"soak,omitempty"`     // the soak's schedule and the carrier state changes it caused
}

type runner struct {
	opts    Options
	scen    string
	store   string
	mu      sync.Mutex // guards report
	report  *Report
	started time.Time
	redis   atomic.Pointer[redisserver.Server] // the environment's redis-server, while one runs
}

// redisPid is the pid of the environment's redis-server, 0 when none.
func (r *runner) redisPid() int {
	if rs := r.redis.Load(); rs != nil {
		return rs.Pid()
	}
	return 0
}

// Run runs the selected scenarios and returns their figures. A scenario that
// fails is recorded in Report.Failures and the run goes on; the error is for
// invalid options or a cancelled context.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts.fill()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	r := &runner{opts: opts, report: &Report{Machine: machine(), Started: time.Now(), Options: opts}, started: time.Now()}
	for _, s := range slices.Concat(Scenarios, LongScenarios) { // in the canonical order
		if !slices.Contains(opts.Scenarios, s) {
			continue
		}
		r.scen = s
		r.logf("scenario %s", s)
		var err error
		switch s {
		case "realistic":
			err = r.eachStore(ctx, r.realistic)
		case "saturation":
			err = r.eachStore(ctx, r.saturation)
		case "latency":
			err = r.eachStore(ctx, r.latency)
		case "failover":
			err = r.eachStore(ctx, r.failover)
		case "modems":
			r.store = opts.Stores[0]
			err = r.modems(ctx)
		case "memory":
			err = r.eachStore(ctx, r.memory)
		case "drain":
			err = r.eachStore(ctx, r.drain)
		case "soak":
			r.store = opts.Stores[0]
			err = r.soak(ctx)
		}
		if err != nil {
			r.fail(err)
		}
		if ctx.Err() != nil {
			return r.report, ctx.Err()
		}
	}
	r.report.Seconds = time.Since(r.started).Seconds()
	return r.report, nil
}

func (r *runner) eachStore(ctx context.Context, f func(context.Context) error) error {
	for _, st := range r.opts.Stores {
		r.store = st
		if err := f(ctx); err != nil {
			r.fail(err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

func (r *runner) fail(err error) {
	msg := fmt.Sprintf("%s/%s: %v", r.scen, r.store, err)
	r.logf("FAILED: %v", err)
	r.mu.Lock()
	r.report.Failures = append(r.report.Failures, msg)
	r.mu.Unlock()
}

func (r *runner) logf(format string, args ...any) {
	if r.opts.Progress == nil {
		return
	}
	prefix := fmt.Sprintf("[%5.1fs] %s", time.Since(r.started).Seconds(), r.scen)
	if r.store != "" && r.scen != "" {
		prefix += "/" + r.store
	}
	fmt.Fprintf(r.opts.Progress, prefix+": "+format+"\n", args...)
}

// progress prints counts every second until the returned function is called.
func (r *runner) progress(label string, counts func() (sent, ok int64)) func() {
	if r.opts.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sent, ok := counts()
				r.logf("%s: %d sent, %d ok, %.0f msg/s", label, sent, ok, float64(ok)/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func ptr(f float64) *float64 { return &f }

// add records a headline figure and judges it against floor and target.
func (r *runner) add(res Result) {
	res.Scenario, res.Store = r.scen, r.store
	res.Verdict = verdict(res)
	r.mu.Lock()
	r.report.Results = append(r.report.Results, res)
	r.mu.Unlock()
	r.logf("%s = %.4g %s %s", res.Metric, res.Value, res.Unit, res.Verdict)
}

func verdict(res Result) string {
	meets := func(lim *float64) bool {
		if res.Higher {
			return res.Value >= *lim
		}
		return res.Value <= *lim
	}
	switch {
	case res.Floor == nil && res.Target == nil:
		return ""
	case res.Target != nil && meets(res.Target):
		return "target met"
	case res.Floor != nil && meets(res.Floor):
		return "floor met"
	case res.Floor == nil:
		return "target missed"
	}
	return "BELOW FLOOR"
}

// phase records a load run's counts.
func (r *runner) phase(name string, l loadResult) Phase {
	lat := latOf(l.Lat)
	p := Phase{Scenario: r.scen, Store: r.store, Name: name, Sent: l.Sent, OK: l.OK, Refused: l.Refused, NoAnswer: l.NoAnswer,
		Seconds: l.Elapsed.Seconds(), Rate: l.Rate(), Offered: l.Offered(), P50ms: ms(lat.P50), P99ms: ms(lat.P99), MaxMs: ms(lat.Max),
		BehindMax: ms(l.Late), CPUus: perMsg(l.CPU, l.OK), RedisCPUus: perMsg(l.RedisCPU, l.OK)}
	r.mu.Lock()
	r.report.Phases = append(r.report.Phases, p)
	r.mu.Unlock()
	cpu := fmt.Sprintf("%.1f µs CPU/msg", p.CPUus)
	if p.RedisCPUus > 0 {
		cpu += fmt.Sprintf(" + redis-server %.1f", p.RedisCPUus)
	}
	r.logf("%s: %d sent, %d ok, %d refused, %d unanswered, %.0f msg/s; latency p50 %.2f ms p99 %.2f ms max %.2f ms; %s",
		name, p.Sent, p.OK, p.Refused, p.NoAnswer, p.Rate, p.P50ms, p.P99ms, p.MaxMs, cpu)
	return p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.Model = cpuModel(string(b))
	}
	return m
}
