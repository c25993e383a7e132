package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap/zaptest"
)

// noAutoApply keeps the writer from applying the write-ahead log by
// itself in the stores opened until the test ends: links stay in the log
// and the overlay until another write, Close or a flush applies them.
func noAutoApply(t *testing.T) {
	r, b, a := walApplyRecords, walApplyBytes, walApplyAge
	walApplyRecords, walApplyBytes, walApplyAge = 1<<30, 1<<40, time.Hour
	t.Cleanup(func() { walApplyRecords, walApplyBytes, walApplyAge = r, b, a })
}

// holdApplies makes every apply of the log wait, once it has begun, until
// gate is closed; entered gets a value as each begins.
func holdApplies(t *testing.T) (gate, entered chan struct{}) {
	gate, entered = make(chan struct{}), make(chan struct{}, 10)
	hook := walApplyHook
	walApplyHook = func() { entered <- struct{}{}; <-gate }
	t.Cleanup(func() { walApplyHook = hook })
	return gate, entered
}

// openNoApply opens a store in a new directory with the log applied only
// when a test asks (noAutoApply).
func openNoApply(t *testing.T) (context.Context, string, *Bolt) {
	t.Helper()
	noAutoApply(t)
	dir := t.TempDir()
	s, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	return context.Background(), dir, s
}

// crashImage copies the store's files as a kill -9 would leave them now,
// to a new directory: the store must have no write in progress (the copy
// is then what the disk holds: every write answered was fsynced).
func crashImage(t *testing.T, s *Bolt, from string) string {
	t.Helper()
	to := t.TempDir()
	// A write through the writer (that writes nothing) would apply the
	// overlay: read under the overlay's lock instead, which no apply can
	// pass while the files are copied.
	s.wal.mu.RLock()
	defer s.wal.mu.RUnlock()
	for _, name := range []string{"spareline.db", walName} {
		in, err := os.Open(filepath.Join(from, name))
		must(t, err)
		out, err := os.Create(filepath.Join(to, name))
		must(t, err)
		_, err = io.Copy(out, in)
		must(t, err)
		must(t, in.Close())
		must(t, out.Close())
	}
	return to
}

// rawMessage reads id from bbolt itself, not through the overlay.
func rawMessage(t *testing.T, s *Bolt, id string) []byte {
	t.Helper()
	var v []byte
	must(t, s.db.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bMsg).Get([]byte(id)))
		return nil
	}))
	return v
}

func overlayLen(s *Bolt) int {
	s.wal.mu.RLock()
	defer s.wal.mu.RUnlock()
	return len(s.wal.msgs)
}

func linked(id, cid string) *Message {
	m := testMessage(id)
	m.CarrierID, m.State = cid, StateSent
	return m
}

// A link is answered once it is in the log, before bbolt has it, and the
// store reads it back (GetMessage, FindByCarrierID) from the overlay.
func TestWALReadYourWrites(t *testing.T) {
	ctx, _, s := openNoApply(t)
	defer s.Close()
	id := genID(time.Now(), 1)
	must(t, s.PutMessage(ctx, testMessage(id))) // accepted, in bbolt
	m := linked(id, "RYW1")
	if _, err := s.LinkCarrier(ctx, m); err != nil {
		t.Fatal(err)
	}
	if overlayLen(s) != 1 {
		t.Fatal("the link did not go through the log")
	}
	if raw, err := decodeMessage(rawMessage(t, s, id)[8:]); err != nil || raw.State != StateAccepted {
		t.Fatalf("bbolt holds %+v, %v; want the accepted record (the link not applied yet)", raw, err)
	}
	if got := mustGet(t, s, id); got.State != StateSent || got.CarrierID != "RYW1" {
		t.Errorf("GetMessage = %s %q, want the link's record", got.State, got.CarrierID)
	}
	if got, err := s.FindByCarrierID(ctx, "mobile", "RYW1"); err != nil || got.ID != id || got.State != StateSent {
		t.Errorf("FindByCarrierID = %+v, %v", got, err)
	}
	// A relink to another carrier id, still in the overlay: both ids find
	// the newest record; the old one's link stays, as in bbolt.
	m2 := linked(id, "RYW2")
	m2.Attempts = 2
	if _, err := s.LinkCarrier(ctx, m2); err != nil {
		t.Fatal(err)
	}
	for _, cid := range []string{"RYW1", "RYW2"} {
		if got, err := s.FindByCarrierID(ctx, "mobile", cid); err != nil || got.Attempts != 2 {
			t.Errorf("FindByCarrierID(%s) = %+v, %v; want the relinked record", cid, got, err)
		}
	}
	if _, err := s.FindByCarrierID(ctx, "unicom", "RYW2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another carrier's id: %v, want ErrNotFound", err)
	}
	// Expired in the overlay: gone, as in bbolt.
	s.wal.mu.Lock()
	s.wal.msgs[id].exp, s.wal.links[string(boltCarrierKey("mobile", "RYW2"))].exp = 1, 1
	s.wal.mu.Unlock()
	if _, err := s.GetMessage(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired overlay record: %v, want ErrNotFound", err)
	}
	if _, err := s.FindByCarrierID(ctx, "mobile", "RYW2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired overlay link: %v, want ErrNotFound", err)
	}
}

// Every other write sees the links of the log applied first, in its own
// transaction: FinishMessage's compare-and-set finds the linked state, and
// bbolt holds the link once it is answered.
func TestWALApplyBeforeOtherWrite(t *testing.T) {
	ctx, _, s := openNoApply(t)
	defer s.Close()
	id := genID(time.Now(), 1)
	if _, err := s.LinkCarrier(ctx, linked(id, "AB1")); err != nil {
		t.Fatal(err)
	}
	if rawMessage(t, s, id) != nil {
		t.Fatal("the link is in bbolt already: nothing tested")
	}
	done := testMessage(id)
	done.CarrierID, done.State = "AB1", StateDone
	won, err := s.FinishMessage(ctx, []State{StateSent}, done, &Delivery{Account: "acme", Body: []byte("dr")})
	if err != nil || !won {
		t.Fatalf("FinishMessage from sent = %v, %v; want won (the link applied before it)", won, err)
	}
	if overlayLen(s) != 0 {
		t.Error("the overlay still holds links after a write applied them")
	}
	if raw, err := decodeMessage(rawMessage(t, s, id)[8:]); err != nil || raw.State != StateDone {
		t.Errorf("bbolt holds %+v, %v; want the finished record", raw, err)
	}
	// The link's record first, then a write over it in the same batch: the
	// later write wins.
	id2 := genID(time.Now(), 2)
	if _, err := s.LinkCarrier(ctx, linked(id2, "AB2")); err != nil {
		t.Fatal(err)
	}
	failed := testMessage(id2)
	failed.State = StateFailed
	must(t, s.PutMessage(ctx, failed))
	if got := mustGet(t, s, id2); got.State != StateFailed {
		t.Errorf("after PutMessage over a logged link: %s, want failed", got.State)
	}
	// The sweep too: a logged link is applied before it looks.
	if _, err := s.LinkCarrier(ctx, linked(genID(time.Now(), 3), "AB3")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sweep(); err != nil {
		t.Fatal(err)
	}
	if overlayLen(s) != 0 {
		t.Error("the sweep ran without applying the log first")
	}
}

// A crash after the log's fsync and before the apply: the reopened store
// replays the log and answers as before the crash (records, links, orphans
// taken), and a relink replays over its first link in order.
func TestWALCrashBeforeApply(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	defer s.Close()
	must(t, s.StashOrphan(ctx, "mobile", "C1", []byte("early receipt")))
	must(t, s.StashOrphan(ctx, "mobile", "Z9", []byte("nobody's")))
	var ids []string
	for i := range 50 {
		id := genID(time.Now(), uint64(i))
		ids = append(ids, id)
		orphan, err := s.LinkCarrier(ctx, linked(id, "C"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		if (i == 1) != (orphan != nil) {
			t.Errorf("link %d took orphan %q", i, orphan)
		}
	}
	relinked := linked(ids[0], "C0b")
	relinked.Attempts = 7
	if _, err := s.LinkCarrier(ctx, relinked); err != nil {
		t.Fatal(err)
	}
	if overlayLen(s) != 50 || rawMessage(t, s, ids[0]) != nil {
		t.Fatal("the links were applied: nothing tested")
	}
	img := crashImage(t, s, dir)

	r, err := OpenBolt(img, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	if overlayLen(r) != 0 {
		t.Error("the reopened store has an overlay: the replay goes to bbolt")
	}
	for i, id := range ids {
		raw := rawMessage(t, r, id)
		if raw == nil {
			t.Fatalf("%s (link %d, answered) lost in the crash", id, i)
		}
		got := mustGet(t, r, id)
		want := "C" + strconv.Itoa(i)
		if i == 0 {
			want = "C0b"
		}
		if got.CarrierID != want {
			t.Errorf("%s: carrier id %q, want %q", id, got.CarrierID, want)
		}
		if f, err := r.FindByCarrierID(ctx, "mobile", want); err != nil || f.ID != id {
			t.Errorf("FindByCarrierID(%s) = %v, %v", want, f, err)
		}
	}
	if _, err := r.TakeOrphan(ctx, "mobile", "C1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the orphan the link took is back after the crash: %v", err)
	}
	if o, err := r.TakeOrphan(ctx, "mobile", "Z9"); err != nil || string(o) != "nobody's" {
		t.Errorf("an orphan no link took: %q, %v", o, err)
	}
	// Replayed once: the store goes on logging and a second crash image
	// replays only what came after.
	id := genID(time.Now(), 99)
	if _, err := r.LinkCarrier(ctx, linked(id, "C99")); err != nil {
		t.Fatal(err)
	}
	img2 := crashImage(t, r, img)
	r2, err := OpenBolt(img2, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r2.Close()
	if got := mustGet(t, r2, id); got.CarrierID != "C99" {
		t.Errorf("after a second crash: %q", got.CarrierID)
	}
	if got := mustGet(t, r2, ids[0]); got.Attempts != 7 {
		t.Errorf("the first crash's relink, replayed again over: attempts %d", got.Attempts)
	}
	// The first store, untouched by all this, applies at Close.
	must(t, s.Close())
	s3, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer s3.Close()
	if rawMessage(t, s3, ids[49]) == nil {
		t.Error("Close did not apply the log")
	}
}

// A torn or corrupt record ends the log: the records before it are
// replayed, it and those after it are not (they were never answered: the
// batch's fsync had not returned).
func TestWALTornTail(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	defer s.Close()
	var ids []string
	for i := range 5 {
		id := genID(time.Now(), uint64(i))
		ids = append(ids, id)
		if _, err := s.LinkCarrier(ctx, linked(id, "T"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	img := crashImage(t, s, dir)
	data, err := os.ReadFile(filepath.Join(img, walName))
	must(t, err)
	recs, end := scanWAL(data)
	if len(recs) != 5 {
		t.Fatalf("%d records in the log, want 5", len(recs))
	}
	// Offsets of the records.
	var offs []int
	for off := 0; off < end; {
		_, n, _ := parseWALRecord(data[off:])
		offs = append(offs, off)
		off += n
	}
	for _, c := range []struct {
		name  string
		harm  func(b []byte)
		alive int
	}{
		{"torn last record", func(b []byte) { clear(b[offs[4]+walHeader+3 : end]) }, 4},
		{"bit flip in the fourth", func(b []byte) { b[offs[3]+walHeader+20] ^= 0x40 }, 3},
		{"length beyond the file", func(b []byte) { binary.LittleEndian.PutUint32(b[offs[2]:], 1<<31) }, 2},
		{"a record of an older pass after the second", func(b []byte) {
			binary.LittleEndian.PutUint64(b[offs[2]+8:], binary.LittleEndian.Uint64(b[offs[2]+8:])-5)
			binary.LittleEndian.PutUint32(b[offs[2]+4:], walSum(b[offs[2]:offs[3]]))
		}, 2},
		{"intact", func([]byte) {}, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			db, err := os.ReadFile(filepath.Join(img, "spareline.db"))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(d, "spareline.db"), db, 0o600))
			b := slices.Clone(data)
			c.harm(b)
			must(t, os.WriteFile(filepath.Join(d, walName), b, 0o600))
			r, err := OpenBolt(d, longTTL, zaptest.NewLogger(t))
			must(t, err)
			defer r.Close()
			for i, id := range ids {
				_, err := r.GetMessage(ctx, id)
				if i < c.alive && err != nil {
					t.Errorf("record %d before the damage: %v", i, err)
				}
				if i >= c.alive && !errors.Is(err, ErrNotFound) {
					t.Errorf("record %d at or after the damage: %v, want ErrNotFound", i, err)
				}
			}
			// The store goes on: a new link and a reopen keep both.
			id := genID(time.Now(), 50)
			if _, err := r.LinkCarrier(ctx, linked(id, "T50")); err != nil {
				t.Fatal(err)
			}
			must(t, r.Close())
			r2, err := OpenBolt(d, longTTL, zaptest.NewLogger(t))
			must(t, err)
			defer r2.Close()
			mustGet(t, r2, id)
			if c.alive > 0 {
				mustGet(t, r2, ids[c.alive-1])
			}
		})
	}
}

// After the apply, the log is written again from its start over the
// older pass's records; a crash image then replays the new pass only.
func TestWALNewPassOverOld(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	defer s.Close()
	old := genID(time.Now(), 1)
	for i := range 20 {
		if _, err := s.LinkCarrier(ctx, linked(genID(time.Now(), uint64(100+i)), "P"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.LinkCarrier(ctx, linked(old, "OLD")); err != nil {
		t.Fatal(err)
	}
	must(t, s.flushWAL())
	// Overwritten since by a write that is not a link: replaying the
	// older pass would bring the link's state back.
	fin := testMessage(old)
	fin.State = StateDone
	must(t, s.PutMessage(ctx, fin))
	if _, err := s.LinkCarrier(ctx, linked(genID(time.Now(), 2), "NEW")); err != nil {
		t.Fatal(err)
	}
	r, err := OpenBolt(crashImage(t, s, dir), longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	if got := mustGet(t, r, old); got.State != StateDone {
		t.Errorf("an older pass's record was replayed over a later write: %s", got.State)
	}
	if got, err := r.FindByCarrierID(ctx, "mobile", "NEW"); err != nil || got.State != StateSent {
		t.Errorf("the new pass's link: %v, %v", got, err)
	}
}

// The orphan take of a logged link is atomic with StashOrphan and
// TakeOrphan: a receipt stashed before the link is taken by the link,
// once, even while the link is only in the overlay; a take by the receipt
// side after the link finds nothing.
func TestWALOrphanRace(t *testing.T) {
	ctx, _, s := openNoApply(t)
	defer s.Close()
	must(t, s.StashOrphan(ctx, "mobile", "O1", []byte("r1")))
	// Two links of the same carrier id in one batch, and then one more:
	// only the first takes the orphan.
	release := holdWriter(t, s)
	type res struct {
		orphan []byte
		err    error
	}
	ch := make(chan res, 2)
	for i := range 2 {
		m := linked(genID(time.Now(), uint64(i+1)), "O1")
		if !s.TryLinkCarrier(ctx, m, func(o []byte, err error) { ch <- res{o, err} }) {
			t.Fatal("TryLinkCarrier refused")
		}
	}
	waitQueued(t, s, 2)
	must(t, release())
	got := 0
	for range 2 {
		r := <-ch
		must(t, r.err)
		if r.orphan != nil {
			got++
		}
	}
	if got != 1 {
		t.Fatalf("%d links of one batch took the orphan, want 1", got)
	}
	// held wrote a key: a write, so the log was applied before it; link
	// again so that the overlay holds the take.
	must(t, s.StashOrphan(ctx, "mobile", "O2", []byte("r2")))
	if o, err := s.LinkCarrier(ctx, linked(genID(time.Now(), 3), "O2")); err != nil || string(o) != "r2" {
		t.Fatalf("link over a stashed orphan: %q, %v", o, err)
	}
	if overlayLen(s) != 1 {
		t.Fatal("the link is not in the overlay: nothing tested")
	}
	if o, err := s.LinkCarrier(ctx, linked(genID(time.Now(), 4), "O2")); err != nil || o != nil {
		t.Errorf("a second link of the id took %q, %v; the first took it already", o, err)
	}
	if _, err := s.TakeOrphan(ctx, "mobile", "O2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("TakeOrphan after a logged link took it: %v", err)
	}

	// Concurrently, receipt side against logged links: each receipt is
	// taken by exactly one side.
	const n = 300
	var wg sync.WaitGroup
	var byLink, byRcpt sync.Map
	for i := range n {
		cid := "OR" + strconv.Itoa(i)
		wg.Go(func() {
			o, err := s.LinkCarrier(ctx, linked(genID(time.Now(), uint64(1000+i)), cid))
			if err != nil {
				t.Error(err)
			}
			if o != nil {
				byLink.Store(cid, true)
			}
		})
		wg.Go(func() {
			if _, err := s.FindByCarrierID(ctx, "mobile", cid); err == nil {
				byRcpt.Store(cid, true)
				return
			}
			must(t, s.StashOrphan(ctx, "mobile", cid, []byte("x")))
			if _, err := s.FindByCarrierID(ctx, "mobile", cid); errors.Is(err, ErrNotFound) {
				return // the link takes it
			}
			if _, err := s.TakeOrphan(ctx, "mobile", cid); err == nil {
				byRcpt.Store(cid, true)
			}
		})
	}
	wg.Wait()
	for i := range n {
		cid := "OR" + strconv.Itoa(i)
		_, l := byLink.Load(cid)
		_, r := byRcpt.Load(cid)
		if l == r {
			t.Errorf("%s: by link %v, by receipt side %v; want exactly one", cid, l, r)
		}
	}
}

// A batch whose log write fails goes to bbolt and is answered from there,
// and the writes after it go to bbolt for a while; then the log is used
// again.
func TestWALWriteError(t *testing.T) {
	ctx, dir, s := openNoApply(t)
	defer s.Close()
	if _, err := s.LinkCarrier(ctx, linked(genID(time.Now(), 1), "E1")); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(filepath.Join(dir, walName))
	must(t, err)
	var good *os.File
	swap := func(f *os.File) {
		must(t, s.write(ctx, func(*bolt.Tx) error { // on the writer goroutine
			good, s.wal.file.f = s.wal.file.f, f
			return nil
		}))
	}
	swap(ro) // writes fail (EBADF)
	if overlayLen(s) != 0 {
		t.Fatal("the swap's write did not apply the overlay")
	}
	must(t, s.write(ctx, func(*bolt.Tx) error { s.wal.retryLog = time.Hour; return nil }))
	// Its log write failed: the batch goes to bbolt and is answered from
	// there.
	failed := genID(time.Now(), 2)
	if _, err := s.LinkCarrier(ctx, linked(failed, "E2")); err != nil {
		t.Fatalf("a link whose log write failed, committed to bbolt: %v", err)
	}
	if rawMessage(t, s, failed) == nil {
		t.Error("the link whose log write failed is not in bbolt")
	}
	// To bbolt: answered, and in bbolt at once.
	next := genID(time.Now(), 3)
	if _, err := s.LinkCarrier(ctx, linked(next, "E3")); err != nil {
		t.Fatal(err)
	}
	if rawMessage(t, s, next) == nil {
		t.Error("a link after the failure did not go to bbolt")
	}
	swap(good)
	must(t, ro.Close())
	must(t, s.write(ctx, func(*bolt.Tx) error { s.wal.logAfter = time.Now(); return nil }))
	last := genID(time.Now(), 4)
	if _, err := s.LinkCarrier(ctx, linked(last, "E4")); err != nil {
		t.Fatal(err)
	}
	if overlayLen(s) != 1 {
		t.Error("the log is not used again once its pause ended")
	}
	// The failed record, numbered, is covered by the bbolt commit's
	// walseq: a crash image does not replay it even if its octets were
	// written; the link is there, from bbolt.
	r, err := OpenBolt(crashImage(t, s, dir), longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	mustGet(t, r, failed)
	mustGet(t, r, last)
	mustGet(t, r, next)
}

func FuzzWALRecord(f *testing.F) {
	m := encodeMessage(testMessage(genID(time.Now(), 1)))
	one := appendWALRecord(nil, 7, true, 123, "id1", []byte("6:mobile:x"), m)
	f.Add(one)
	f.Add(appendWALRecord(slices.Clone(one), 8, false, 0, genID(time.Now(), 2), []byte("1:a:b"), nil))
	f.Add(make([]byte, 40))
	f.Add(one[:len(one)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, ok := parseWALRecord(b)
		if ok {
			if n < walHeader || n > len(b) {
				t.Fatalf("size %d of %d octets", n, len(b))
			}
			again := appendWALRecord(nil, r.seq, r.took, r.exp, string(r.id), r.key, r.enc)
			if !bytes.Equal(again, b[:n]) {
				t.Fatalf("record %+v does not encode back to its octets", r)
			}
		}
		recs, end := scanWAL(b)
		if end > len(b) || (len(recs) == 0) != (end == 0) {
			t.Fatalf("scan: %d records, end %d of %d", len(recs), end, len(b))
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].seq != recs[i-1].seq+1 {
				t.Fatalf("scan: seq %d after %d", recs[i].seq, recs[i-1].seq)
			}
		}
	})
}

// The applier applies the links of one half while the writer logs into
// the other: reads see both, a crash meanwhile replays both halves in
// order, the end of the apply leaves the newer links in the overlay, and
// any other write waits for the apply and applies the rest first.
func TestWALApplyWhileLogging(t *testing.T) {
	noAutoApply(t)
	walApplyRecords = 5
	gate, entered := holdApplies(t)
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer s.Close()
	defer close(gate) // lets any apply still held go (before Close)
	waitEntered := func() {
		t.Helper()
		select {
		case <-entered:
		case <-time.After(30 * time.Second):
			t.Fatal("no apply started")
		}
	}

	must(t, s.StashOrphan(ctx, "mobile", "W7", []byte("late link's receipt")))
	var ids []string
	link := func(i int, cid string, attempts int) []byte {
		t.Helper()
		if i == len(ids) {
			ids = append(ids, genID(time.Now(), uint64(i)))
		}
		m := linked(ids[i], cid)
		m.Attempts = attempts
		o, err := s.LinkCarrier(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	for i := range 5 {
		link(i, "W"+strconv.Itoa(i), 1)
	}
	waitEntered()
	// The apply of the first five is held: these go to the other half.
	link(0, "W0b", 3)
	for i := 5; i < 8; i++ {
		if o := link(i, "W"+strconv.Itoa(i), 1); (i == 7) != (o != nil) {
			t.Errorf("link %d took %q", i, o)
		}
	}
	if got := mustGet(t, s, ids[0]); got.Attempts != 3 {
		t.Errorf("read while applying: attempts %d, want the relink's", got.Attempts)
	}
	if got, err := s.FindByCarrierID(ctx, "mobile", "W3"); err != nil || got.ID != ids[3] {
		t.Errorf("frozen link: %v, %v", got, err)
	}

	// A crash now: bbolt has neither half; the replay takes both.
	img := crashImage(t, s, dir)

	// The apply ends: the overlay keeps the second half's links (the
	// relink among them), bbolt has the first half's.
	gate <- struct{}{}
	for deadline := time.Now().Add(30 * time.Second); overlayLen(s) != 4; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("overlay holds %d records after the apply, want 4", overlayLen(s))
		}
	}
	if got := mustGet(t, s, ids[0]); got.Attempts != 3 {
		t.Errorf("after the apply: attempts %d, want the relink's", got.Attempts)
	}
	if got, err := s.FindByCarrierID(ctx, "mobile", "W3"); err != nil || got.ID != ids[3] || rawMessage(t, s, ids[3]) == nil {
		t.Errorf("applied link: %v, %v", got, err)
	}

	// The second half fills up: its apply is held, and another write
	// waits for it.
	link(8, "W8", 1)
	waitEntered()
	fin := make(chan error, 1)
	go func() {
		done := testMessage(ids[6])
		done.CarrierID, done.State = "W6", StateDone
		won, err := s.FinishMessage(ctx, []State{StateSent}, done, nil)
		if err == nil && !won {
			err = errors.New("FinishMessage lost: the link was not applied before it")
		}
		fin <- err
	}()
	select {
	case err := <-fin:
		t.Fatalf("FinishMessage did not wait for the running apply: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	gate <- struct{}{}
	must(t, <-fin)
	if overlayLen(s) != 0 {
		t.Errorf("%d records left in the overlay after a write", overlayLen(s))
	}

	r, err := OpenBolt(img, longTTL, zaptest.NewLogger(t))
	must(t, err)
	defer r.Close()
	for i, id := range ids[:8] {
		got, err := r.GetMessage(ctx, id)
		if err != nil {
			t.Fatalf("link %d lost in the crash: %v", i, err)
		}
		if i == 0 && (got.Attempts != 3 || got.CarrierID != "W0b") {
			t.Errorf("relink replayed out of order: %+v", got)
		}
	}
	if _, err := r.TakeOrphan(ctx, "mobile", "W7"); !errors.Is(err, ErrNotFound) {
		t.Errorf("orphan taken before the crash is back: %v", err)
	}
}
