package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spareline/spareline/test/redisserver"
)

func openRedis(t testing.TB, url string, o RedisOptions) *Redis {
	t.Helper()
	s, err := NewRedisWithOptions(context.Background(), url, o, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// A message acknowledged by the store survives a restart of the Redis
// server itself (AOF, appendfsync everysec, clean shutdown).
func TestRedisServerRestartKeepsData(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	m := testMessage("persist")
	m.CarrierID = "P1"
	must(t, s.PutMessage(ctx, m))
	must(t, s.EnqueueModem(ctx, "persist", 1, time.Now()))
	srv.Restart()

	// The client reconnects by itself.
	got, err := s.FindByCarrierID(ctx, "mobile", "P1")
	if err != nil {
		t.Fatalf("after server restart: %v", err)
	}
	sameMessage(t, got, m)
	if id := claim(t, s, time.Hour); id != "persist" {
		t.Errorf("queue after restart: %q", id)
	}
}

// While Redis is down a write fails with an error (it does not hang past
// its context) and writes work again once Redis is back.
func TestRedisOutage(t *testing.T) {
	srv := redisserver.Start(t)
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.PutMessage(ctx, testMessage("down")); err == nil {
		t.Fatal("PutMessage with Redis down succeeded")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping with Redis down succeeded")
	}
	srv.Restart()
	must(t, s.PutMessage(context.Background(), testMessage("up")))
}

func TestRedisCloseFailsWaitingWrites(t *testing.T) {
	srv := redisserver.Start(t)
	s := openRedis(t, srv.URL(), RedisOptions{})
	must(t, s.Close())
	if err := s.PutMessage(context.Background(), testMessage("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("PutMessage after Close: %v, want ErrClosed", err)
	}
}

func TestRedisCheckPersistence(t *testing.T) {
	ctx := context.Background()
	on := openRedis(t, redisserver.Start(t).URL(), RedisOptions{})
	if w := on.CheckPersistence(ctx); w != "" {
		t.Errorf("AOF everysec: warning %q, want none", w)
	}
	off := openRedis(t, redisserver.Start(t, redisserver.WithoutAOF()).URL(), RedisOptions{})
	if w := off.CheckPersistence(ctx); !strings.Contains(w, "appendonly") {
		t.Errorf("AOF off: warning %q, want one naming appendonly", w)
	}
	must(t, on.Client().ConfigSet(ctx, "appendfsync", "no").Err())
	if w := on.CheckPersistence(ctx); !strings.Contains(w, "appendfsync") {
		t.Errorf("appendfsync no: warning %q, want one naming appendfsync", w)
	}
}

func TestNewRedisErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := NewRedis(ctx, "redis://:s3cret@127.0.0.1:1/0", 0, nil)
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("unreachable server: %v; want an error naming the address and not the password", err)
	}
	_, err = NewRedis(ctx, "mysql://:s3cret@h:1", 0, nil)
	var ue *URLError
	if !errors.As(err, &ue) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad scheme: %v; want a *URLError without the password", err)
	}
}

// Every key is under the spareline: prefix and in the {sl} hash-tag slot.
func TestRedisKeysShareOneSlot(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	m := testMessage("k1")
	m.CarrierID = "K"
	must(t, s.PutMessage(ctx, m))
	must(t, s.StashOrphan(ctx, "mobile", "O", []byte("x")))
	must(t, s.AddDelivery(ctx, &Delivery{Account: "a"}, nil))
	must(t, s.EnqueueModem(ctx, "k1", 0, time.Now()))
	must(t, s.EnqueueModem(ctx, "k2", 0, time.Now().Add(time.Hour)))
	_, _ = s.ClaimModem(ctx, "w", time.Hour)
	keys, err := s.Client().Keys(ctx, "*").Result()
	must(t, err)
	if len(keys) < 8 {
		t.Errorf("only %d keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "spareline:{sl}:") {
			t.Errorf("key %q is outside the spareline:{sl}: slot", k)
		}
	}
	// Records expire; deliveries and the queue do not.
	for _, k := range keys {
		ttl, err := s.Client().PTTL(ctx, k).Result()
		must(t, err)
		expires := ttl > 0
		record := strings.Contains(k, ":m:") || strings.Contains(k, ":c:") || strings.Contains(k, ":o:")
		if expires != record {
			t.Errorf("key %s: TTL %v", k, ttl)
		}
	}
}

// BenchmarkRedisMemoryPerMessage reports the Redis memory one in-flight
// message with a carrier id and a 100-octet body costs (record + index).
func BenchmarkRedisMemoryPerMessage(b *testing.B) {
	srv := redisserver.Start(b)
	ctx := context.Background()
	s := openRedis(b, srv.URL(), RedisOptions{TTL: 72 * time.Hour})
	used := func() int64 {
		info, err := s.Client().Info(ctx, "memory").Result()
		if err != nil {
			b.Fatal(err)
		}
		for line := range strings.SplitSeq(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		b.Fatal("no used_memory")
		return 0
	}
	const n = 20000
	m := benchMessage()
	before := used()
	for i := range n {
		m.ID = "20260101" + strconv.Itoa(1000000+i)
		m.CarrierID = strconv.FormatInt(int64(7e15)+int64(i), 16)
		must(b, s.PutMessage(ctx, m))
	}
	per := float64(used()-before) / n
	for b.Loop() {
	}
	b.ReportMetric(per, "redis-bytes/msg")
	b.ReportMetric(float64(len(encodeMessage(m))), "value-bytes/msg")
}

// A Redis that answers PING but refuses writes (here NOREPLICAS, as
// MISCONF on a full disk or READONLY after a failover would) fails
// ProbeWrite while Ping passes: the outage probe must not take it for
// healthy.
func TestRedisProbeWriteSeesRefusedWrites(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	must(t, s.ProbeWrite(ctx))
	must(t, s.rdb.ConfigSet(ctx, "min-replicas-to-write", "1").Err())
	must(t, s.Ping(ctx))
	if err := s.ProbeWrite(ctx); err == nil {
		t.Fatal("ProbeWrite succeeded on a Redis that refuses writes")
	}
	if err := s.PutMessage(ctx, testMessage("refused")); err == nil {
		t.Fatal("PutMessage succeeded on a Redis that refuses writes (the test's premise)")
	}
	must(t, s.rdb.ConfigSet(ctx, "min-replicas-to-write", "0").Err())
	must(t, s.ProbeWrite(ctx))
}

// TryLinkCarrier answers by its ctx's end even while the transaction it
// went into is stuck in Redis (as LinkCarrier returns then): the gateway's
// answer to the platform waits no longer than the link's time limit.
func TestRedisTryLinkCarrierEndsWithItsContext(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	// Every write stalls for 2 s (as on a Redis that stopped answering).
	must(t, s.rdb.Do(ctx, "CLIENT", "PAUSE", "2000", "WRITE").Err())
	lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	m := testMessage(genID(time.Now(), 1))
	m.CarrierID = "stuck"
	errc := make(chan error, 2)
	if !s.TryLinkCarrier(lctx, m, func(_ []byte, err error) { errc <- err }) {
		t.Fatal("TryLinkCarrier refused the write of an idle store")
	}
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("TryLinkCarrier during the stall: %v, want context.DeadlineExceeded", err)
	}
	// The transaction completes when the pause ends: no second outcome.
	must(t, s.rdb.Do(ctx, "CLIENT", "UNPAUSE").Err())
	if _, err := s.GetMessage(ctx, m.ID); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		t.Fatalf("a second outcome: %v", err)
	default:
	}
}

// Against a Redis that hangs (SIGSTOP: connections are accepted, nothing
// is answered), a call returns when its context's deadline passes, not
// after go-redis's read_timeout (5 s): /readyz and /message promise an
// answer within 2 s, and a carrier's receipt must be answered before the
// SMSC gives up on it.
func TestRedisCallsEndAtTheirDeadline(t *testing.T) {
	srv := redisserver.Start(t)
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	must(t, s.Ping(context.Background())) // a pooled connection, as in use
	srv.Pause()
	const deadline = 300 * time.Millisecond
	for name, call := range map[string]func(context.Context) error{
		"Ping": s.Ping,
		"FindOrStash": func(ctx context.Context) error {
			_, err := s.FindOrStash(ctx, "mobile", "C1", []byte("r"), true)
			return err
		},
		"CountDeliveries": func(ctx context.Context) error {
			_, err := s.CountDeliveries(ctx, "acct")
			return err
		},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		if err == nil || took > deadline+time.Second {
			t.Errorf("%s against a paused Redis: %v after %v; want an error soon after the %v deadline", name, err, took, deadline)
		}
	}
	srv.Resume()
	must(t, s.Ping(context.Background()))
}

// CheckData notices a Redis that lost its data behind the gateways' back:
// restarted without persistence, or flushed. Every gateway sharing it
// reports the loss once; a restart that keeps the data (AOF) is no loss.
func TestRedisCheckDataNoticesALoss(t *testing.T) {
	ctx := context.Background()
	check := func(s *Redis, want DataState, when string) {
		t.Helper()
		got, err := s.CheckData(ctx)
		if err != nil || got != want {
			t.Fatalf("%s: CheckData = %v, %v; want %v", when, got, err, want)
		}
	}

	kept := redisserver.Start(t)
	k := openRedis(t, kept.URL(), RedisOptions{})
	check(k, DataKept, "AOF: before the restart")
	kept.Restart()
	check(k, DataKept, "AOF: after a restart that kept the data")

	srv := redisserver.Start(t, redisserver.WithoutAOF())
	a := openRedis(t, srv.URL(), RedisOptions{}) // the first: writes the marker
	b := openRedis(t, srv.URL(), RedisOptions{}) // a second gateway on the same Redis
	check(a, DataKept, "two gateways: a")
	check(b, DataKept, "two gateways: b")
	srv.Restart() // no AOF, no RDB: empty
	check(a, DataLost, "restart without persistence: a")
	check(b, DataLost, "restart without persistence: b (a wrote a new marker)")
	check(a, DataKept, "a, once the loss was reported")
	check(b, DataKept, "b, once the loss was reported")

	must(t, a.Client().FlushAll(ctx).Err())
	check(b, DataLost, "FLUSHALL: b")
	check(a, DataLost, "FLUSHALL: a")

	// A gateway started on a Redis that already lost its data cannot tell:
	// its first look finds no marker, the same as on a new Redis.
	must(t, a.Client().FlushAll(ctx).Err())
	c, err := NewRedisWithOptions(ctx, srv.URL(), RedisOptions{}, zaptest.NewLogger(t))
	must(t, err)
	t.Cleanup(func() { _ = c.Close() })
	check(c, DataKept, "a gateway started after the flush")
}

// A Redis at its maxmemory (noeviction) discards a transaction (it refuses
// every command queued in a MULTI) but takes deletions outside one: the
// acks of a refused batch are applied on their own, not failed with it
// (each failed ack sent its receipt to the platform again).
func TestRedisAckSurvivesARefusedBatchMate(t *testing.T) {
	srv := redisserver.Start(t)
	ctx := context.Background()
	s := openRedis(t, srv.URL(), RedisOptions{TTL: time.Hour})
	del := &Delivery{ID: "d-oom", Account: "acct", Body: []byte("receipt"), Created: time.Now()}
	must(t, s.AddDelivery(ctx, del, nil))
	alone := &Delivery{ID: "d-alone", Account: "acct", Body: []byte("receipt 2"), Created: time.Now()}
	must(t, s.AddDelivery(ctx, alone, nil))
	must(t, s.rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	t.Cleanup(func() { _ = s.rdb.ConfigSet(context.Background(), "maxmemory", "0").Err() })
	set := &putReq{key: msgKey("oom"), val: []byte("refused"), done: make(chan error, 1)}
	ack := &putReq{ackList: delivListKey("acct"), ackHash: delivHashKey("acct"), ackID: del.ID, done: make(chan error, 1)}
	s.flush([]*putReq{set, ack})
	if err := <-set.done; err == nil {
		t.Fatal("the SET at maxmemory succeeded; want it refused (the test's premise)")
	}
	if err := <-ack.done; err != nil {
		t.Fatalf("the ack beside it: %v, want applied", err)
	}
	// At maxmemory Redis refuses every command of a MULTI, deletions
	// too: an ack alone in its batch goes through all the same.
	ack2 := &putReq{ackList: delivListKey("acct"), ackHash: delivHashKey("acct"), ackID: alone.ID, done: make(chan error, 1)}
	s.flush([]*putReq{ack2})
	if err := <-ack2.done; err != nil {
		t.Fatalf("an ack alone at maxmemory: %v, want applied", err)
	}
	must(t, s.rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	list, err := s.PendingDeliveries(ctx, "acct", 10)
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("delivery still pending after its ack: %+v", list)
	}
}
