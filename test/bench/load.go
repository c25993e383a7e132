package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spareline/spareline/test/platform"
)

// loadSpec is one bounded load run.
type loadSpec struct {
	clients []*platform.Client
	dests   []string // per client: the destination it sends to, or "" to use dest
	window  int      // outstanding submits per client
	rate    float64  // offered msg/s over all clients, open loop; 0 = closed loop (as fast as answers come)
	max     int      // messages; 0 = until dur
	dur     time.Duration
	receipt bool // ask for receipts (registered_delivery 1)
	text    string
	label   string // for progress lines
}

// loadResult is what a load run measured.
type loadResult struct {
	Sent     int           // submits written
	OK       int           // answered with status 0
	Refused  int           // answered with another status
	NoAnswer int           // timeouts, closed connections
	Elapsed  time.Duration // first submit to last answer
	Lat      []time.Duration
	Late     time.Duration // open loop: how far behind schedule the generator fell at worst
	CPU      time.Duration // this process's CPU time during the run (tools and gateway)
	RedisCPU time.Duration // redis-server's, when the environment runs one
}

// Rate is the delivered (OK) rate.
func (l loadResult) Rate() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(l.OK) / l.Elapsed.Seconds()
}

// Offered is the rate at which submits were written.
func (l loadResult) Offered() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(l.Sent) / l.Elapsed.Seconds()
}

// runLoad sends until max messages or dur (whichever first; the context
// ends it too), with window workers per client taking the next message from
// one pacer. With a rate, the pacer offers message i at start + i/rate (open
// loop); when every worker is busy it falls behind, which Late records.
func (r *runner) runLoad(ctx context.Context, s loadSpec) loadResult {
	if s.window <= 0 {
		s.window = 1
	}
	if s.text == "" {
		s.text = "benchmark message"
	}
	var rd byte
	if s.receipt {
		rd = 1
	}
	type job struct{}
	jobs := make(chan job)
	var sent, ok, refused, noAnswer atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	var lastAnswer atomic.Int64
	for ci, c := range s.clients {
		sm := platform.Submit{Src: "10690001", Dest: s.dests[ci], Text: s.text, RegisteredDelivery: rd}
		for range s.window {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]time.Duration, 0, 1024)
				for range jobs {
					sent.Add(1)
					res, err := c.Submit(ctx, sm)
					switch {
					case err != nil:
						noAnswer.Add(1)
					case res.Status != 0:
						refused.Add(1)
					default:
						ok.Add(1)
						local = append(local, res.Answered.Sub(res.Sent))
						lastAnswer.Store(res.Answered.UnixNano())
					}
				}
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
		}
		if s.receipt {
			// Drain receipts so that the client's queue stays small.
			go func() {
				for {
					select {
					case _, open := <-c.Receipts():
						if !open {
							return
						}
					case <-c.Done():
						return
					}
				}
			}()
		}
	}
	stopProgress := r.progress(s.label, func() (int64, int64) { return sent.Load(), ok.Load() })
	cpu0, rcpu0 := ProcessCPU(), PidCPU(r.redisPid())
	start := time.Now()
	deadline := start.Add(s.dur)
	var late time.Duration
	for i := 0; s.max == 0 || i < s.max; i++ {
		now := time.Now()
		if s.dur > 0 && !now.Before(deadline) || ctx.Err() != nil {
			break
		}
		if s.rate > 0 {
			due := start.Add(time.Duration(float64(i) / s.rate * float64(time.Second)))
			if d := due.Sub(now); d > 0 {
				time.Sleep(d)
			} else if -d > late {
				late = -d
			}
		}
		select {
		case jobs <- job{}:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	stopProgress()
	res := loadResult{Sent: int(sent.Load()), OK: int(ok.Load()), Refused: int(refused.Load()), NoAnswer: int(noAnswer.Load()),
		Lat: lat, Late: late, CPU: ProcessCPU() - cpu0}
	if rcpu0 > 0 {
		res.RedisCPU = PidCPU(r.redisPid()) - rcpu0
	}
	if la := lastAnswer.Load(); la > 0 {
		res.Elapsed = time.Unix(0, la).Sub(start)
	}
	slices.Sort(res.Lat)
	return res
}

// percentile of sorted durations (nearest rank); 0 when empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// latencies are the percentiles a scenario reports.
type latencies struct {
	P50, P99, Max time.Duration
}

func latOf(sorted []time.Duration) latencies {
	if len(sorted) == 0 {
		return latencies{}
	}
	return latencies{percentile(sorted, 0.50), percentile(sorted, 0.99), sorted[len(sorted)-1]}
}
