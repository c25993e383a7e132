package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/bench"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// BenchmarkRelayVsDirect measures, in one run, a platform's throughput
// straight to an SMSC simulator and through spareline (both stores), with
// window 64. Compare the msg/s of the sub-benchmarks: the ratio is the figure.
//
//	go test -run '^$' -bench RelayVsDirect -benchtime 20000x ./test/e2e/
func BenchmarkRelayVsDirect(b *testing.B) {
	for _, kind := range []string{"direct", "bolt", "redis"} {
		b.Run(kind, func(b *testing.B) {
			store := kind
			if kind == "direct" {
				store = "bolt"
			}
			e := startEnv(b, store)
			addr := e.gw.SMPPAddr().String()
			user, pw := "platform", "secret"
			if kind == "direct" {
				addr, user, pw = e.smscs["mobile"].Addr(), "ent01", "pw-mob"
			}
			c, err := platform.Dial(e.ctx, addr, user, pw, platform.Options{BindType: platform.BindTX, Window: 64})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msgs := make([]platform.Submit, b.N)
			for i := range msgs {
				msgs[i] = platform.Submit{Src: "10690001", Dest: "13800138000", Text: "benchmark message"}
			}
			b.ResetTimer()
			start := time.Now()
			res := c.Bulk(e.ctx, msgs, 64)
			el := time.Since(start)
			for _, r := range res {
				if r.Err != nil || r.Status != 0 {
					b.Fatalf("%v 0x%X", r.Err, r.Status)
				}
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "msg/s")
		})
	}
}

// BenchmarkRelaySaturation is RelayVsDirect at saturation, set up as the
// bench tool's saturation scenario: 4 platform binds with window 64 each,
// b.N messages split between them, and 4 carrier binds with window 64.
//
//	go test -run '^$' -bench RelaySaturation -benchtime 200000x ./test/e2e/
func BenchmarkRelaySaturation(b *testing.B) {
	const binds, window = 4, 64
	for _, kind := range []string{"direct", "bolt", "redis"} {
		b.Run(kind, func(b *testing.B) {
			e := benchEnv(b, kind, withCarrierBinds(binds, window))
			clients := make([]*platform.Client, binds)
			for i := range clients {
				c, err := platform.Dial(e.ctx, e.benchAddr, e.benchUser, e.benchPw,
					platform.Options{BindType: platform.BindTX, Window: window, NoHistory: true})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				clients[i] = c
			}
			msgs := make([]platform.Submit, b.N/binds+1)
			for i := range msgs {
				msgs[i] = platform.Submit{Src: "10690001", Dest: "13800138000", Text: "benchmark message"}
			}
			b.ResetTimer()
			start := time.Now()
			cpu0 := processCPU()
			rcpu0 := redisCPU(b, e.store)
			var wg sync.WaitGroup
			errs := make(chan error, binds)
			for _, c := range clients {
				wg.Go(func() {
					for _, r := range c.Bulk(e.ctx, msgs, window) {
						if r.Err != nil || r.Status != 0 {
							errs <- fmt.Errorf("%v 0x%X", r.Err, r.Status)
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(start)
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(binds*len(msgs))/el.Seconds(), "msg/s")
			// CPU of the whole process (tools and gateway) per message: less
			// noisy than the rate on a shared machine, and it is what the
			// ratio is made of once both cores are busy.
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(binds*len(msgs)), "cpu-µs/msg")
			if kind == "redis" {
				// redis-server runs on the same cores: its CPU is part of
				// the cost of a relayed message too.
				b.ReportMetric(float64((redisCPU(b, e.store)-rcpu0).Microseconds())/float64(binds*len(msgs)), "redis-cpu-µs/msg")
			}
		})
	}
}

// processCPU is the user+system CPU time the process has used so far.
func processCPU() time.Duration { return bench.ProcessCPU() }

// redisCPU is the user+system CPU time the redis-server behind st has used
// so far (its pid from INFO server); 0 when st is not a Redis store.
func redisCPU(b *testing.B, st store.Store) time.Duration {
	r, ok := st.(*store.Redis)
	if !ok {
		return 0
	}
	info, err := r.Client().Info(context.Background(), "server").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err != nil {
				b.Fatalf("INFO server process_id %q: %v", v, err)
			}
			return bench.PidCPU(pid)
		}
	}
	b.Fatal("INFO server has no process_id")
	return 0
}

// BenchmarkRelayLatency sends at a steady 1000 msg/s (one bind) and reports
// the submit_sm -> submit_sm_resp latency percentiles, straight to an SMSC
// simulator and through spareline; the added latency is the difference.
//
//	go test -run '^$' -bench RelayLatency -benchtime 5000x ./test/e2e/
func BenchmarkRelayLatency(b *testing.B) {
	for _, kind := range []string{"direct", "bolt", "redis"} {
		b.Run(kind, func(b *testing.B) {
			e := benchEnv(b, kind)
			c, err := platform.Dial(e.ctx, e.benchAddr, e.benchUser, e.benchPw,
				platform.Options{BindType: platform.BindTX, Window: 64, NoHistory: true})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			lat := make([]time.Duration, b.N)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var wg sync.WaitGroup
			var failed atomic.Int64
			b.ResetTimer()
			for i := range b.N {
				<-tick.C
				wg.Go(func() {
					r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "latency"})
					if err != nil || r.Status != 0 {
						failed.Add(1)
						return
					}
					lat[i] = r.Answered.Sub(r.Sent)
				})
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d submits failed", n)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// benchEnv is an environment whose bench* fields say where a platform
// binds: the mobile SMSC simulator itself for "direct", else spareline on
// the named store.
type benchEnvT struct {
	*env
	benchAddr, benchUser, benchPw string
}

func benchEnv(b *testing.B, kind string, opts ...envOption) benchEnvT {
	store := kind
	if kind == "direct" {
		store = "bolt"
	}
	// The simulators keep only their last messages (as the bench tool's do):
	// recording every one grows a slice that a quarter of the profile
	// copied, in the direct and relayed phases alike.
	opts = append([]envOption{func(o *envOpts) {
		o.smscMutate = func(_ string, so *smscsim.Options) { so.RecordLimit = 16 }
	}}, opts...)
	e := benchEnvT{env: startEnv(b, store, opts...), benchUser: "platform", benchPw: "secret"}
	e.benchAddr = e.gw.SMPPAddr().String()
	if kind == "direct" {
		e.benchAddr, e.benchUser, e.benchPw = e.smscs["mobile"].Addr(), "ent01", "pw-mob"
	}
	return e
}
