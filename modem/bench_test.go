package modem_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
)

// BenchmarkPoolThroughput sends b.N single-part messages through N emulated
// modems (SendDelay d, max_per_minute m, real ptys) and reports the measured
// rate as a fraction of the nominal N x min(m/60, 1/d).
func BenchmarkPoolThroughput(b *testing.B) {
	const d = 20 * time.Millisecond
	const m = 6000
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("modems=%d", n), func(b *testing.B) {
			var sims []*modemsim.Sim
			for i := 0; i < n; i++ {
				sims = append(sims, startSim(b, fmt.Sprint("s", i), modemsim.Options{SendDelay: d}))
			}
			p := startPool(b, sims, m, nil)
			ctx := testCtx(b, 10*time.Minute)
			// Warm up: every modem up.
			var warm sync.WaitGroup
			for i := 0; i < 2*n; i++ {
				warm.Add(1)
				go func() { defer warm.Done(); _, _ = p.Send(ctx, "w", sms.Submit{Dest: "+1", Payload: []byte("w")}) }()
			}
			warm.Wait()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 4*n)
			for i := 0; i < b.N; i++ {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					if _, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("bench")}); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			rate := float64(b.N) / el.Seconds()
			nominal := float64(n) * min(float64(m)/60, 1/d.Seconds())
			b.ReportMetric(rate, "msg/s")
			b.ReportMetric(rate/nominal, "of_nominal")
			_ = modem.StateUp
		})
	}
}
