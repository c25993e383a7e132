package store

import (
	"context"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/test/redisserver"
)

// benchMessage is a typical in-flight message: a 100-octet body, sent to a
// carrier that gave its id.
func benchMessage() *Message {
	body := make([]byte, 100)
	for i := range body {
		body[i] = byte(i)
	}
	return &Message{
		ID: "202601011200000001", Account: "platform", Carrier: "mobile", Source: "10690000",
		Dest: "8613800138000", Body: body, RegDeliv: 1, State: StateSent,
		CarrierID: "5f3c2a1b9e", Attempts: 1, Created: time.Now(),
	}
}

func benchPut(b *testing.B, s Store) { benchWrite(b, s, false) }

// benchWrite runs PutMessage, or LinkCarrier when link is set (the carrier
// path's one store step per message), from many goroutines.
func benchWrite(b *testing.B, s Store, link bool) {
	ctx := context.Background()
	var seq atomic.Int64
	b.SetParallelism(16) // many sessions writing at once: 16 x GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		m := benchMessage()
		for pb.Next() {
			n := seq.Add(1)
			m.ID = strconv.FormatInt(n, 10)
			m.CarrierID = "c" + m.ID
			var err error
			if link {
				_, err = s.LinkCarrier(ctx, m)
			} else {
				err = s.PutMessage(ctx, m)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkPutMessageParallel(b *testing.B) {
	b.Run("bolt", func(b *testing.B) {
		s, err := OpenBolt(b.TempDir(), time.Hour, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchPut(b, s)
	})
	srv := redisserver.Start(b)
	for _, c := range []struct {
		name string
		o    RedisOptions
	}{
		{"redis-nobatch", RedisOptions{NoBatch: true}},
		{"redis-batch", RedisOptions{}},
		{"redis-batch-window200us", RedisOptions{BatchWindow: 200 * time.Microsecond}},
		{"redis-batch-1writer", RedisOptions{BatchWriters: 1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			c.o.TTL = time.Hour
			s, err := NewRedisWithOptions(context.Background(), srv.URL(), c.o, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchPut(b, s)
		})
	}
}

// BenchmarkLinkCarrierParallel: the carrier path's one store step.
//
//	go test -run '^$' -bench LinkCarrierParallel -benchtime 20000x ./store/
func BenchmarkLinkCarrierParallel(b *testing.B) {
	b.Run("bolt", func(b *testing.B) {
		s, err := OpenBolt(b.TempDir(), time.Hour, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchWrite(b, s, true)
	})
	srv := redisserver.Start(b)
	for _, c := range []struct {
		name string
		o    RedisOptions
	}{
		{"redis-nobatch", RedisOptions{NoBatch: true}},
		{"redis-batch", RedisOptions{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			c.o.TTL = time.Hour
			s, err := NewRedisWithOptions(context.Background(), srv.URL(), c.o, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchWrite(b, s, true)
		})
	}
}

// BenchmarkTryLinkCarrierParallel: the carrier path's store step as the
// gateway takes it at saturation, TryLinkCarrier without a waiting
// goroutine, with inflight links outstanding (carrier windows), ids of
// IDGen's form. Reports the process's CPU per link. "nowal" is the store
// with its write-ahead log off (every batch committed to bbolt).
//
//	go test -run '^$' -bench TryLinkCarrierParallel -benchtime 100000x -benchmem ./store/
func BenchmarkTryLinkCarrierParallel(b *testing.B) {
	for _, c := range []struct {
		name string
		wal  bool
	}{{"bolt", true}, {"bolt-nowal", false}} {
		b.Run(c.name, func(b *testing.B) {
			defer func(v bool) { boltWAL = v }(boltWAL)
			boltWAL = c.wal
			s, err := OpenBolt(b.TempDir(), time.Hour, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const inflight = 256
			slots := make(chan struct{}, inflight)
			var failed atomic.Int64
			start := time.Now()
			msgs := make([]*Message, b.N)
			for i := range msgs {
				m := benchMessage()
				m.ID = genID(start, uint64(i))
				m.CarrierID = "c" + strconv.Itoa(i)
				msgs[i] = m
			}
			ctx := context.Background()
			b.ResetTimer()
			cpu0 := benchCPU()
			for _, m := range msgs {
				slots <- struct{}{}
				done := func(_ []byte, err error) {
					if err != nil {
						failed.Add(1)
					}
					<-slots
				}
				for !s.TryLinkCarrier(ctx, m, done) {
					time.Sleep(10 * time.Microsecond) // queue full
				}
			}
			for range inflight {
				slots <- struct{}{}
			}
			b.StopTimer()
			b.ReportMetric(float64((benchCPU()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d links failed", n)
			}
		})
	}
}

// benchCPU is the user+system CPU time the process has used so far.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
