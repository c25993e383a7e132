package e2e

import (
	"testing"
	"time"

	"github.com/spareline/spareline/test/platform"
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
