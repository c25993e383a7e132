package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap/zaptest"
)

var bTest = []byte("test-writes")

// putKey is a write function storing key -> "v".
func putKey(key string) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bTest)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), []byte("v"))
	}
}

func hasKey(t *testing.T, s *Bolt, key string) bool {
	t.Helper()
	var ok bool
	must(t, s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bTest); b != nil {
			ok = b.Get([]byte(key)) != nil
		}
		return nil
	}))
	return ok
}

// holdWriter queues a write that keeps the writer inside its transaction
// until release is called, and returns once the writer is in it.
func holdWriter(t *testing.T, s *Bolt) (release func() error) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	res := make(chan error, 1)
	go func() {
		res <- s.batch(context.Background(), "hold", func(tx *bolt.Tx) error {
			close(in)
			<-out
			return putKey("held")(tx)
		})
	}()
	select {
	case <-in:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer never ran the holding write")
	}
	return func() error { close(out); return <-res }
}

// waitQueued waits until n writes wait in the queue (there is no event to
// await: the queue is a channel).
func waitQueued(t *testing.T, s *Bolt, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); len(s.writes) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", len(s.writes), n)
		}
	}
}

func openTestBolt(t *testing.T, dir string) *Bolt {
	t.Helper()
	s, err := OpenBolt(dir, 0, zaptest.NewLogger(t))
	must(t, err)
	return s
}

// Writes that wait while a commit runs are committed together, in one
// transaction, and each caller sees its own write applied.
func TestBoltGroupCommit(t *testing.T) {
	s := openTestBolt(t, t.TempDir())
	defer s.Close()
	release := holdWriter(t, s)
	const n = 50
	txids := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.batch(context.Background(), "put", func(tx *bolt.Tx) error {
				txids[i] = tx.ID()
				return putKey(fmt.Sprint("k", i))(tx)
			})
		})
	}
	waitQueued(t, s, n)
	must(t, release())
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("write %d: %v", i, errs[i])
		}
		if !hasKey(t, s, fmt.Sprint("k", i)) {
			t.Fatalf("write %d answered but not applied", i)
		}
		if txids[i] != txids[0] {
			t.Fatalf("write %d ran in transaction %d, write 0 in %d: the waiting writes were not grouped", i, txids[i], txids[0])
		}
	}
}

// Many writers at once, with no holding: every write is applied.
func TestBoltConcurrentWriters(t *testing.T) {
	s := openTestBolt(t, t.TempDir())
	defer s.Close()
	const writers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				errs <- s.batch(context.Background(), "put", putKey(fmt.Sprint(w, "/", i)))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	for w := range writers {
		for i := range each {
			if !hasKey(t, s, fmt.Sprint(w, "/", i)) {
				t.Fatalf("write %d/%d answered but not applied", w, i)
			}
		}
	}
}

// One failing function does not lose the writes grouped with it; its
// caller gets its error and its write is not applied.
func TestBoltGroupCommitFailingWrite(t *testing.T) {
	s := openTestBolt(t, t.TempDir())
	defer s.Close()
	release := holdWriter(t, s)
	errBad := errors.New("bad write")
	res := map[string]chan error{"a": make(chan error, 1), "bad": make(chan error, 1), "c": make(chan error, 1)}
	for i, k := range []string{"a", "bad", "c"} {
		fn := putKey(k)
		if k == "bad" {
			fn = func(tx *bolt.Tx) error {
				if err := putKey(k)(tx); err != nil {
					return err
				}
				return errBad
			}
		}
		go func() { res[k] <- s.batch(context.Background(), "put "+k, fn) }()
		waitQueued(t, s, i+1) // queue them in this order
	}
	must(t, release())
	if err := <-res["bad"]; !errors.Is(err, errBad) {
		t.Fatalf("failing write: got %v, want %v", err, errBad)
	}
	for _, k := range []string{"a", "c"} {
		must(t, <-res[k])
		if !hasKey(t, s, k) {
			t.Fatalf("write %s grouped with a failing one was lost", k)
		}
	}
	if hasKey(t, s, "bad") {
		t.Fatal("the failing write was applied")
	}
}

// A write whose ctx ends while it waits for the writer is not applied and
// its caller gets the ctx's error at once; an ended ctx writes nothing.
func TestBoltWriteCancelledBeforeStart(t *testing.T) {
	s := openTestBolt(t, t.TempDir())
	defer s.Close()

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.batch(ended, "put", putKey("ended")); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with an ended ctx: got %v, want %v", err, context.Canceled)
	}

	release := holdWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- s.batch(ctx, "put", putKey("cancelled")) }()
	waitQueued(t, s, 1)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("write cancelled while queued: got %v, want %v", err, context.Canceled)
	}
	must(t, release())
	must(t, s.batch(context.Background(), "put", putKey("after"))) // the writer went past it
	for k, want := range map[string]bool{"ended": false, "cancelled": false, "after": true, "held": true} {
		if got := hasKey(t, s, k); got != want {
			t.Errorf("key %s applied = %v, want %v", k, got, want)
		}
	}
}

// Close commits the writes already queued, refuses later ones, and what it
// committed is there after a restart.
func TestBoltCloseDrainsWrites(t *testing.T) {
	dir := t.TempDir()
	s := openTestBolt(t, dir)
	release := holdWriter(t, s)
	const n = 20
	res := make(chan error, n)
	for i := range n {
		go func() { res <- s.batch(context.Background(), "put", putKey(fmt.Sprint("k", i))) }()
	}
	waitQueued(t, s, n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) { // wait for Close to begin
		select {
		case <-s.stop:
		default:
			if time.Now().After(deadline) {
				t.Fatal("Close did not begin")
			}
			continue
		}
		break
	}
	if err := s.batch(context.Background(), "put", putKey("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: got %v, want %v", err, ErrClosed)
	}
	must(t, release())
	for range n {
		must(t, <-res)
	}
	must(t, <-closed)

	s = openTestBolt(t, dir)
	defer s.Close()
	for i := range n {
		if !hasKey(t, s, fmt.Sprint("k", i)) {
			t.Fatalf("queued write %d answered before Close but lost", i)
		}
	}
	if hasKey(t, s, "late") {
		t.Fatal("a write refused after Close was applied")
	}
}

// A panic in a write function reaches its caller; the writes grouped with
// it are still applied and the store keeps working.
func TestBoltWritePanic(t *testing.T) {
	s := openTestBolt(t, t.TempDir())
	defer s.Close()
	release := holdWriter(t, s)
	ok := make(chan error, 1)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = s.batch(context.Background(), "panic", func(*bolt.Tx) error { panic("boom") })
	}()
	waitQueued(t, s, 1)
	go func() { ok <- s.batch(context.Background(), "put", putKey("ok")) }()
	waitQueued(t, s, 2)
	must(t, release())
	if v := <-panicked; v != "boom" {
		t.Fatalf("caller of a panicking write recovered %v, want boom", v)
	}
	must(t, <-ok)
	if !hasKey(t, s, "ok") {
		t.Fatal("a write grouped with a panicking one was lost")
	}
}

// BenchmarkBoltWrite measures LinkCarrier on the embedded store, from one
// goroutine (the time of one commit: the latency at low load) and from
// many, with the bbolt options OpenBolt could take.
//
//	go test -run '^$' -bench BoltWrite -benchtime 3000x ./store/
func BenchmarkBoltWrite(b *testing.B) {
	base := boltOpenOptions
	defer func() { boltOpenOptions = base }()
	for _, o := range []struct {
		name string
		set  func(*bolt.Options)
	}{
		{"default", func(*bolt.Options) {}},
		{"nofreelistsync", func(o *bolt.Options) { o.NoFreelistSync = true }},
		{"freelistmap", func(o *bolt.Options) { o.FreelistType = bolt.FreelistMapType }},
		{"nofreelistsync-map", func(o *bolt.Options) { o.NoFreelistSync, o.FreelistType = true, bolt.FreelistMapType }},
		{"mmap64MiB", func(o *bolt.Options) { o.InitialMmapSize = 64 << 20 }},
		{"page16KiB", func(o *bolt.Options) { o.PageSize = 16 << 10 }},
	} {
		boltOpenOptions = func() *bolt.Options { opts := base(); o.set(opts); return opts }
		for _, c := range []struct {
			par  int
			aged bool
		}{{0, false}, {16, false}, {0, true}} {
			par, aged := c.par, c.aged
			name := o.name + "/serial"
			if par > 0 {
				name = o.name + "/parallel"
			}
			if aged {
				name += "-aged"
			}
			b.Run(name, func(b *testing.B) {
				s, err := OpenBolt(b.TempDir(), time.Hour, zaptest.NewLogger(b))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if aged {
					ageStore(b, s)
				}
				if par == 0 {
					m := benchMessage()
					ctx := context.Background()
					b.ResetTimer()
					for i := range b.N {
						m.ID = fmt.Sprint(i)
						m.CarrierID = "c" + m.ID
						if _, err := s.LinkCarrier(ctx, m); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				benchWrite(b, s, true)
			})
		}
	}
}

// ageStore gives s the shape of a store that has run for a while: 50,000
// records written, the older 40,000 deleted (as the expiry sweep does), so
// that its file has many free pages.
func ageStore(b *testing.B, s *Bolt) {
	b.Helper()
	m := benchMessage()
	enc := encodeMessage(m)
	for i := 0; i < 50000; i += 5000 {
		if err := s.db.Update(func(tx *bolt.Tx) error {
			for j := i; j < i+5000; j++ {
				m.ID, m.CarrierID = fmt.Sprintf("old%06d", j), fmt.Sprintf("cold%06d", j)
				if err := putMessageTx(tx, m, enc, 1); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	for {
		n, err := s.sweep() // every record expired at unix ms 1
		if err != nil {
			b.Fatal(err)
		}
		if n < sweepMax {
			break
		}
	}
	for i := 40000; i < 50000; i += 5000 { // keep the newest 10,000: the freed pages stay free
		if err := s.db.Update(func(tx *bolt.Tx) error {
			for j := i; j < i+5000; j++ {
				m.ID, m.CarrierID = fmt.Sprintf("new%06d", j), fmt.Sprintf("cnew%06d", j)
				if err := putMessageTx(tx, m, enc, 0); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	st := s.db.Stats()
	b.Logf("aged store: %d free pages, %d pending", st.FreePageN, st.PendingPageN)
	b.ResetTimer()
}

// A full queue holds its callers back (it does not grow), and a caller
// waiting for room can give up through its ctx, its write not applied.
func TestBoltWriteQueueFull(t *testing.T) {
	s := openTestBolt(t, t.TempDir())
	defer s.Close()
	release := holdWriter(t, s)
	res := make(chan error, writeQueueMax)
	for i := range writeQueueMax {
		go func() { res <- s.batch(context.Background(), "put", putKey(fmt.Sprint("k", i))) }()
	}
	waitQueued(t, s, writeQueueMax)
	ctx, cancel := context.WithCancel(context.Background())
	over := make(chan error, 1)
	go func() { over <- s.batch(ctx, "put", putKey("over")) }()
	cancel()
	if err := <-over; !errors.Is(err, context.Canceled) {
		t.Fatalf("write waiting for room, cancelled: got %v, want %v", err, context.Canceled)
	}
	must(t, release())
	for range writeQueueMax {
		must(t, <-res)
	}
	if hasKey(t, s, "over") {
		t.Fatal("a write given up while waiting for room was applied")
	}
	if !hasKey(t, s, fmt.Sprint("k", writeQueueMax-1)) {
		t.Fatal("a queued write was lost")
	}
}

// bbolt commits start at least commitGap apart, the writes arriving
// meanwhile sharing the next one: a receipt takes three to four store
// writes, and each commit costs two fdatasyncs whatever it holds.
func TestBoltCommitsAreSpacedAndShared(t *testing.T) {
	ctx := context.Background()
	s, err := OpenBolt(t.TempDir(), time.Hour, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var starts []time.Time
	commits, held := 0, 0
	commitStartHook = func(n int) {
		mu.Lock()
		defer mu.Unlock()
		starts = append(starts, time.Now())
		commits++
		held += n
	}
	t.Cleanup(func() { commitStartHook = nil })
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				m := &Message{ID: fmt.Sprintf("w%d-%d", w, i), Account: "a", Dest: "1", Body: []byte{1}, State: StateQueued}
				if err := s.PutMessage(ctx, m); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if held != writers*each {
		t.Fatalf("%d writes went through held commits, want %d", held, writers*each)
	}
	if commits < 2 {
		t.Fatalf("%d commits: nothing to compare", commits)
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < commitGap {
			t.Errorf("commit %d started %v after the previous one, want at least %v", i, gap, commitGap)
		}
	}
}
