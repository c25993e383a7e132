package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// A link that bbolt would refuse is refused before it is logged (answered
// OK from the log, it could never be applied and every apply after it
// would fail), and the store goes on logging and applying.
func TestWALRefusesUnappliableLinks(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	bad := map[string]*Message{
		"empty id":        linked("", "B1"),
		"id too long":     linked(strings.Repeat("i", bolt.MaxKeySize+1), "B2"),
		"carrier id long": linked(genID(time.Now(), 3), strings.Repeat("c", bolt.MaxKeySize)),
	}
	for name, m := range bad {
		if _, err := s.LinkCarrier(ctx, m); err == nil {
			t.Errorf("%s: LinkCarrier answered OK", name)
		}
		if s.TryLinkCarrier(ctx, m, func([]byte, error) {}) {
			t.Errorf("%s: TryLinkCarrier queued it", name)
		}
	}
	good := genID(time.Now(), 4)
	if _, err := s.LinkCarrier(ctx, linked(good, "B4")); err != nil {
		t.Fatal(err)
	}
	must(t, s.flushWAL())
	if rawMessage(t, s, good) == nil {
		t.Error("the good link was not applied")
	}
	must(t, s.Close())
	r, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	mustGet(t, r, good)
}

// The replay steps over a record that bbolt refuses (written by a release
// that logged such links), saying which, instead of ending the chain there
// (losing the answered links after it) or failing OpenBolt for ever.
func TestWALReplayStepsOverUnappliableRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	must(t, s.Close())
	var walseq uint64
	{
		db, err := bolt.Open(filepath.Join(dir, "spareline.db"), 0o600, nil)
		must(t, err)
		must(t, db.View(func(tx *bolt.Tx) error {
			walseq = u64of(tx.Bucket(bMeta).Get(walMeta))
			return nil
		}))
		must(t, db.Close())
	}
	good := genID(time.Now(), 1)
	enc := encodeMessage(linked(good, "R1"))
	var b []byte
	b = appendWALRecord(b, walseq+1, false, 0, "", boltCarrierKey("mobile", "R0"), enc)
	b = appendWALRecord(b, walseq+2, false, 0, "big", bytes.Repeat([]byte("k"), bolt.MaxKeySize+1), enc)
	b = appendWALRecord(b, walseq+3, false, 0, good, boltCarrierKey("mobile", "R1"), enc)
	f, err := os.OpenFile(filepath.Join(dir, walName), os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt(b, 0)
	must(t, err)
	must(t, f.Close())

	core, logs := observer.New(zapcore.ErrorLevel)
	r, err := OpenBolt(dir, longTTL, zap.New(core))
	if err != nil {
		t.Fatalf("OpenBolt fails on an unappliable record: %v", err)
	}
	defer r.Close()
	if got, err := r.FindByCarrierID(ctx, "mobile", "R1"); err != nil || got.ID != good {
		t.Errorf("the link logged after the unappliable records: %v, %v", got, err)
	}
	if n := logs.FilterMessageSnippet("stepped over").Len(); n != 2 {
		t.Errorf("%d records said stepped over, want 2", n)
	}
}

func u64of(v []byte) uint64 {
	var n uint64
	for _, c := range v {
		n = n<<8 | uint64(c)
	}
	return n
}

// Close returns the outcome of its apply of the overlay; what it could not
// apply is replayed by the next OpenBolt.
func TestWALCloseReturnsApplyError(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	id := genID(time.Now(), 1)
	if _, err := s.LinkCarrier(ctx, linked(id, "C1")); err != nil {
		t.Fatal(err)
	}
	var fail atomic.Bool
	fail.Store(true)
	walApplyErr = func() error {
		if fail.Load() {
			return errors.New("injected apply failure")
		}
		return nil
	}
	t.Cleanup(func() { walApplyErr = nil })
	if err := s.Close(); err == nil {
		t.Error("Close answered OK with the overlay not applied")
	}
	fail.Store(false)
	r, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	mustGet(t, r, id)
}

// The log file is enlarged (walFileSize grew between releases) only once
// the replay has committed: an open that dies before (here: the file
// opened, then the process gone) leaves the halves where the records are.
func TestWALFileSizeChangeBeforeReplay(t *testing.T) {
	noAutoApply(t)
	walApplyRecords = 5
	size := walFileSize
	walFileSize = 64 << 10
	t.Cleanup(func() { walFileSize = size })
	gate, entered := holdApplies(t)
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	var ids []string
	for i := range 8 {
		ids = append(ids, genID(time.Now(), uint64(i)))
		if _, err := s.LinkCarrier(ctx, linked(ids[i], "S"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			<-entered // the first five are being applied (held): the rest go to the second half
		}
	}
	img := crashImage(t, s, dir)
	close(gate)
	must(t, s.Close())

	walFileSize = 1 << 20
	// A release with a larger log opens the file and dies before its
	// replay commits.
	f, _, err := openWALFile(img)
	must(t, err)
	must(t, f.close())
	r, err := OpenBolt(img, longTTL, zaptest.NewLogger(t))
	must(t, err)
	for i, id := range ids {
		if _, err := r.FindByCarrierID(ctx, "mobile", "S"+strconv.Itoa(i)); err != nil {
			t.Errorf("link %d (%s) lost: %v", i, id, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(img, walName)); err != nil || fi.Size() != walFileSize {
		t.Errorf("log file not enlarged after the replay: %v, %v", fi.Size(), err)
	}
	// The new layout holds: log, crash, replay.
	late := genID(time.Now(), 9)
	if _, err := r.LinkCarrier(ctx, linked(late, "S9")); err != nil {
		t.Fatal(err)
	}
	img2 := crashImage(t, r, img)
	must(t, r.Close())
	r2, err := OpenBolt(img2, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r2.Close()
	mustGet(t, r2, late)
	mustGet(t, r2, ids[7])
}

// A batch whose log write fails at the fdatasync (the octets may be on
// disk) is not answered an error and then replayed after a crash: it goes
// to bbolt, whose walseq covers the failed record. Above all, a receipt the
// link took is either given to the caller or still stashed after a crash.
func TestWALFailedSyncNeverReplayed(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	defer s.Close()
	first := genID(time.Now(), 1)
	if _, err := s.LinkCarrier(ctx, linked(first, "F1")); err != nil {
		t.Fatal(err)
	}
	must(t, s.StashOrphan(ctx, "mobile", "F2", []byte("receipt")))
	sync := walSync
	t.Cleanup(func() { walSync = sync }) // after the store has closed (its deferred Close)
	must(t, s.write(ctx, func(*bolt.Tx) error { s.wal.retryLog = time.Hour; return nil }))
	second := genID(time.Now(), 3)
	if _, err := s.LinkCarrier(ctx, linked(second, "F3")); err != nil {
		t.Fatal(err)
	}
	if overlayLen(s) != 1 {
		t.Fatal("the link was not logged")
	}
	// Set without a write (which would apply the overlay): the writer
	// reads it after it takes the next request.
	walSync = func(*os.File) error { return syscall.EIO }
	// A store that retried a failed apply at once (after the answer) could
	// have covered the record by luck before the crash image: that retry
	// (applyNow) fails here, as it would on a disk that just failed.
	var armed atomic.Bool
	armed.Store(true)
	walApplyErr = func() error {
		if buf := make([]byte, 8<<10); armed.Load() && strings.Contains(string(buf[:runtime.Stack(buf, false)]), ".applyNow(") {
			return errors.New("injected: the retry after the failed log write fails")
		}
		return nil
	}
	t.Cleanup(func() { walApplyErr = nil })
	defer armed.Store(false)
	failing := genID(time.Now(), 4)
	orphan, err := s.LinkCarrier(ctx, linked(failing, "F2"))
	img := crashImage(t, s, dir) // right after the answer
	r, rerr := OpenBolt(img, longTTL, zaptest.NewLogger(t))
	must(t, rerr)
	defer r.Close()
	left, terr := r.TakeOrphan(ctx, "mobile", "F2")
	switch {
	case err != nil && terr != nil:
		t.Errorf("link answered %v, and after a crash its receipt is gone (%v): delivered to nobody", err, terr)
	case err == nil && string(orphan) != "receipt":
		t.Errorf("link answered OK without the receipt (%q)", orphan)
	case err == nil && terr == nil:
		t.Errorf("the receipt was given to the link and is back after a crash: %q", left)
	}
	if err == nil {
		mustGet(t, r, failing)
	}
	mustGet(t, r, first)
	mustGet(t, r, second)
}

// No read sees the overlay's older record next to bbolt's newer
// transaction: a write that applies the overlay holds the overlay still
// until the overlay is cleared after its commit.
func TestWALNoStaleReadAfterApplyCommit(t *testing.T) {
	ctx, _, s := openNoApply(t)
	defer s.Close()
	id := genID(time.Now(), 1)
	m := linked(id, "N1")
	if _, err := s.LinkCarrier(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := make(chan *Message, 1)
	var once sync.Once
	walAppliedHook = func() {
		once.Do(func() {
			go func() {
				g, err := s.GetMessage(ctx, id)
				if err != nil {
					t.Error(err)
				}
				got <- g
			}()
			time.Sleep(50 * time.Millisecond) // the read runs now, between the commit and the clearing
		})
	}
	t.Cleanup(func() { walAppliedHook = nil })
	m2 := linked(id, "N1")
	m2.Attempts = 5
	must(t, s.PutMessage(ctx, m2))
	if g := <-got; g == nil || g.Attempts != 5 {
		t.Errorf("read after the commit: %+v, want the record it committed (attempts 5)", g)
	}
}

// The sweep keeps where its next round goes on only once the round
// committed: a round run again (its batch rolled back by another write's
// failure) starts from the same place.
func TestBoltSweepRoundRunAgain(t *testing.T) {
	old := sweepMax
	sweepMax = 1
	t.Cleanup(func() { sweepMax = old })
	ctx := context.Background()
	s, err := OpenBolt(t.TempDir(), time.Hour, zaptest.NewLogger(t))
	must(t, err)
	defer s.Close()
	now := msU64(time.Now())
	past := time.Now().Add(-2 * time.Hour)
	d1, d2 := genID(past, 1), genID(past, 2)
	link(t, s, d1, "D1", now-1)
	link(t, s, d2, "D2", now-1)

	gate, in := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.write(ctx, func(*bolt.Tx) error { close(in); <-gate; return nil })
	}()
	<-in // the writer is held: the next two writes go in one batch
	swept := make(chan error, 1)
	go func() { _, err := s.sweep(); swept <- err }()
	for len(s.writes) < 1 {
		time.Sleep(time.Millisecond)
	}
	failed := make(chan error, 1)
	go func() { failed <- s.write(ctx, func(*bolt.Tx) error { return errors.New("fails") }) }()
	for len(s.writes) < 2 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	must(t, <-swept)
	if <-failed == nil {
		t.Fatal("the failing write succeeded")
	}
	if k := keys(t, s, bMsg); len(k) != 1 || k[0] != d2 {
		t.Errorf("records left %q, want %s only (the round's first, from the start)", k, d2)
	}
}

// A failing apply is tried again after a delay that doubles, not every
// walApplyAge, with one log line a try.
func TestWALApplyRetryBacksOff(t *testing.T) {
	age := walApplyAge
	walApplyAge = 5 * time.Millisecond
	t.Cleanup(func() { walApplyAge = age })
	var fail atomic.Bool
	fail.Store(true)
	var tries atomic.Int32
	walApplyErr = func() error {
		tries.Add(1)
		if fail.Load() {
			return errors.New("injected apply failure")
		}
		return nil
	}
	t.Cleanup(func() { walApplyErr = nil })
	core, logs := observer.New(zapcore.ErrorLevel)
	ctx := context.Background()
	s, err := OpenBolt(t.TempDir(), longTTL, zap.New(core))
	must(t, err)
	defer s.Close()
	id := genID(time.Now(), 1)
	if _, err := s.LinkCarrier(ctx, linked(id, "A1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // 5 ms doubling: about 8 tries; every 5 ms: 140
	n := logs.FilterMessageSnippet("applying the write-ahead log").Len()
	if n < 2 || n > 12 || int(tries.Load()) > 12 {
		t.Errorf("%d tries and %d log lines in 700 ms; want a doubling delay", tries.Load(), n)
	}
	fail.Store(false)
	must(t, s.flushWAL())
	if rawMessage(t, s, id) == nil {
		t.Error("the link was not applied once the apply works again")
	}
}

// The same with the fallback bbolt commit failing too (a disk that keeps
// failing): the caller is told the link failed, so after a kill -9 its
// record must not come back from the log, and the receipt it would have
// taken must still be stashed. The failed write's bytes are in the page
// cache (a new process reads them), so they are overwritten with zeros.
func TestWALFailedWriteAndCommitNeverReplayed(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	first := genID(time.Now(), 1)
	if _, err := s.LinkCarrier(ctx, linked(first, "G1")); err != nil {
		t.Fatal(err)
	}
	must(t, s.StashOrphan(ctx, "mobile", "G2", []byte("receipt")))
	saved := walSync
	t.Cleanup(func() { walSync = saved })
	must(t, s.write(ctx, func(*bolt.Tx) error { s.wal.retryLog = time.Hour; return nil }))
	second := genID(time.Now(), 3)
	if _, err := s.LinkCarrier(ctx, linked(second, "G3")); err != nil {
		t.Fatal(err)
	}
	failSyncs := true
	var mu sync.Mutex
	walSync = func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		if failSyncs {
			failSyncs = false // the write's sync fails; the zeros' sync works
			return syscall.EIO
		}
		return f.Sync()
	}
	walApplyErr = func() error { return errors.New("injected: every apply fails") }
	failing := genID(time.Now(), 4)
	if _, err := s.LinkCarrier(ctx, linked(failing, "G2")); err == nil {
		t.Fatal("the link was answered OK though neither the log nor bbolt took it")
	}
	img := crashImage(t, s, dir)
	_ = s.Close() // its final apply fails: the crash image is what counts
	walApplyErr = nil
	r, err := OpenBolt(img, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	if _, err := r.GetMessage(ctx, failing); err == nil {
		t.Error("a link whose caller was told it failed is back after the crash")
	}
	if left, err := r.TakeOrphan(ctx, "mobile", "G2"); err != nil || string(left) != "receipt" {
		t.Errorf("the receipt the failed link would have taken: %q, %v; want it still stashed", left, err)
	}
	mustGet(t, r, first)
	mustGet(t, r, second)
}
