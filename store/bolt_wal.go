package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// The links of the embedded store go through a write-ahead log (wal.go).
//
// A batch of the group-commit writer (bolt_write.go) that holds only links
// (LinkCarrier, TryLinkCarrier) is not committed to bbolt: the writer
// decides each link's orphan take (the orphan stashed in bbolt for its key,
// unless a link still in the overlay took it already), appends the batch's
// records to the log in one write, fdatasyncs it, puts the records in the
// overlay and only then answers the batch. One write and one fdatasync per
// batch instead of a bbolt commit (B+tree node copies, page writes, two
// fsyncs).
//
// The overlay holds the logged links not yet in bbolt: each message record
// by id and each link by carrier key (the newest of each), and the orphan
// keys taken. GetMessage and FindByCarrierID look in it first.
//
// The log file has two halves. The writer logs into one; once it holds
// walApplyRecords records or walApplyBytes octets or is walApplyAge old,
// the writer freezes its links and an applier goroutine applies them to
// bbolt in one transaction, in log order, that also writes their last
// sequence number to bbolt's meta bucket (walseq), while the writer goes on
// logging from the start of the other half. When the applier's commit is
// done the writer takes the frozen links out of the overlay; the half they
// were logged in is free again. One apply runs at a time: a half that fills
// up before the other is free waits for the apply.
//
// Every other bbolt write (FinishMessage, AddDelivery, PutMessage,
// StashOrphan, TakeOrphan, claims, timers, the sweep, a batch that mixes
// links with other writes) waits for a running apply and then applies what
// is left of the overlay first thing in its own transaction, writing
// walseq = the last number issued: it sees bbolt exactly as if each link
// had been committed to it, and both halves are free after it. Close does
// the same.
//
// OpenBolt replays the records numbered above walseq, from both halves in
// number order, before anything else runs, so a store reopened after a
// crash answers as it did before: every answered link was fsynced in the
// log, and each half's end (zeros, a torn or CRC-bad record, a record of an
// older pass) comes after the last record answered in it.
//
// A batch whose log write fails (the write, or its fdatasync) is not
// answered from the log: before any of its callers hears anything it goes
// through the bbolt commit path like any other batch, whose transaction
// applies the overlay and writes a walseq past the failed records' numbers,
// and its callers get that commit's outcome. So a record of the failed
// write, even if its octets reached the disk, is never replayed once a
// caller was answered (answered an error, it would otherwise come back
// after a crash, with the orphan it took deleted and delivered to nobody).
// From then on, and after an apply that fails, every batch goes to bbolt
// (applying the overlay first) until an apply commits, and the log is not
// written for walRetryLog. A failed apply is tried again after a delay
// that doubles, from walApplyAge up to walRetryMax, with one log line per
// try.
var (
	walApplyRecords       = 8192
	walApplyBytes   int64 = 512 << 10
	walApplyAge           = 200 * time.Millisecond
	// walRetryLog is how long batches go to bbolt after a failed log write.
	walRetryLog = time.Second
	// walRetryMax bounds the delay before a failed apply is tried again.
	walRetryMax = 10 * time.Second
	// walApplyErr, when set (tests), makes an apply of the overlay (not the
	// replay) fail with its error.
	walApplyErr func() error
	// walAppliedHook, when set (tests), runs on the writer between the
	// commit of a transaction that applied the overlay and the overlay's
	// clearing.
	walAppliedHook func()
	// walApplyHook, when set (tests), runs on the applier goroutine before
	// its transaction.
	walApplyHook func()
)

// walMeta is the key in bMeta of the last log sequence number applied.
var walMeta = []byte("walseq")

// walEntry is one logged link in the overlay: the linkOp it was logged
// from, which does not change once logged.
type walEntry = linkOp

// walState is the log and the overlay. The writer goroutine owns it; the
// applier reads the frozen links it is given. The overlay's maps change
// only on the writer goroutine, under mu; readers hold mu's read lock.
type walState struct {
	file   *walFile
	half   int64  // the size of each half of the file
	region int    // the half being written (0 or 1)
	off    int64  // where the next batch goes in it
	next   uint64 // the next sequence number
	// applied is the last sequence number known applied to bbolt
	// (walseq); next-1 > applied while records wait (or failed writes
	// were numbered).
	applied uint64
	// ok is false after a failed log write or apply: batches go to bbolt
	// until an apply commits.
	ok      bool
	retryAt time.Time // when the writer tries a failed apply again
	// retryDelay is the delay before the next try of a failed apply
	// (doubling up to walRetryMax; zero: none failed since the last commit).
	retryDelay time.Duration
	// logAfter is when the log may be written again after a failed write
	// (retryLog later).
	logAfter time.Time
	retryLog time.Duration
	recs     []*walEntry // logged in the half being written, in log order
	since    time.Time   // when the first of recs was answered
	// frozen are the links of the other half, being applied (applying
	// non-nil: the applier's outcome comes on it) or whose apply failed;
	// frozenLast is their last sequence number.
	frozen     []*walEntry
	frozenLast uint64
	applying   chan error
	buf        []byte          // the batch being written
	took       map[string]bool // orphan keys taken by the batch being written

	// When the writer applies the overlay by itself (walApply* when the
	// store opened).
	applyRecords int
	applyBytes   int64
	applyAge     time.Duration

	mu    sync.RWMutex
	msgs  map[string]*walEntry // by message id, the newest
	links map[string]*walEntry // by string(key), the newest
	taken map[string]*walEntry // orphan keys taken, by the link that took it
}

func newWALState(f *walFile, next, applied uint64) *walState {
	return &walState{
		file: f, half: f.size / 2, next: next, applied: applied, ok: true, took: map[string]bool{},
		applyRecords: walApplyRecords, applyBytes: walApplyBytes, applyAge: walApplyAge, retryLog: walRetryLog,
		msgs: map[string]*walEntry{}, links: map[string]*walEntry{}, taken: map[string]*walEntry{},
	}
}

// pending reports whether an apply has something to do.
func (w *walState) pending() bool { return w.next-1 > w.applied }

// due reports whether the writer should freeze the links logged and
// apply them.
func (w *walState) due() bool {
	return len(w.recs) >= w.applyRecords || w.off >= w.applyBytes ||
		(len(w.recs) > 0 && time.Since(w.since) >= w.applyAge)
}

// canFreeze reports whether the writer may start an apply now.
func (w *walState) canFreeze() bool {
	return w.ok && w.applying == nil && len(w.frozen) == 0 && len(w.recs) > 0
}

// timer is when the writer should next look at the log by itself (an
// apply due by age, a failed apply to try again), or zero.
func (w *walState) timer() time.Time {
	switch {
	case w.applying != nil:
		return time.Time{} // its outcome wakes the writer
	case !w.ok && w.pending():
		return w.retryAt
	case w.canFreeze():
		return w.since.Add(w.applyAge)
	}
	return time.Time{}
}

// linkOp is a link waiting for the writer: LinkCarrier's arguments and
// its result.
type linkOp struct {
	id     string
	enc    []byte // the encoded Message
	exp    uint64
	key    []byte
	orphan []byte // set by the writer before the answer
	took   bool   // logged, it took the orphan stashed for key
}

// tx runs the link in a bbolt transaction (a batch that goes to bbolt).
func (op *linkOp) tx(tx *bolt.Tx) error {
	var err error
	op.orphan, err = linkTx(tx, op.id, op.enc, op.exp, op.key)
	return err
}

// walBatch reports whether the writer logs batch: the log works, the
// batch holds only links, and it fits in the half being written (or in
// the other, once free).
func (s *Bolt) walBatch(batch []*writeReq) bool {
	w := s.wal
	if w == nil || !w.ok || len(batch) == 0 {
		return false
	}
	if !w.logAfter.IsZero() {
		if time.Now().Before(w.logAfter) {
			return false
		}
		w.logAfter = time.Time{}
	}
	size := int64(0)
	for _, r := range batch {
		if r.link == nil {
			return false
		}
		size += walHeader + 32 + int64(len(r.link.id)+len(r.link.key)+len(r.link.enc))
	}
	if w.off+size <= w.half {
		return true
	}
	s.waitApply()
	if w.canFreeze() {
		s.startApply()
	}
	return w.ok && w.off+size <= w.half
}

// logBatch logs a batch of links (see the top of this file) and answers
// each, or reports false having answered none when the log write failed:
// the caller then commits the batch to bbolt (s.commit), whose walseq
// covers the failed records.
func (s *Bolt) logBatch(batch []*writeReq) bool {
	w := s.wal
	var later []*writeReq
	defer func() { s.handOver(later) }()
	now := msU64(time.Now())
	b := w.buf[:0]
	clear(w.took)
	err := s.db.View(func(tx *bolt.Tx) error {
		orphans := tx.Bucket(bOrphan)
		for i, r := range batch {
			op := r.link
			op.orphan = nil
			// An orphan taken by a link of the overlay is still in bbolt
			// until that link is applied (and then no longer in taken).
			if w.taken[string(op.key)] == nil && !w.took[string(op.key)] {
				if v := orphans.Get(op.key); len(v) >= 8 && !expired(binary.BigEndian.Uint64(v), now) {
					op.orphan = bytes.Clone(v[8:])
					w.took[string(op.key)] = true
				}
			}
			b = appendWALRecord(b, w.next+uint64(i), op.orphan != nil, op.exp, op.id, op.key, op.enc)
		}
		return nil
	})
	w.buf = b
	if err == nil {
		err = w.file.write(b, int64(w.region)*w.half+w.off)
		if err != nil && !errors.Is(err, errWALFull) {
			if zerr := w.file.unwrite(len(b), int64(w.region)*w.half+w.off); zerr != nil {
				s.log.Error("store: write-ahead log: could not clear a failed write", zap.Error(zerr))
			}
		}
	}
	w.next += uint64(len(batch)) // numbered even if not written: the next apply's walseq covers them
	if err != nil {
		w.ok = false
		w.retryAt = time.Now()
		w.logAfter = w.retryAt.Add(w.retryLog)
		s.log.Error("store: write-ahead log write failed; the batch and the writes after it go to bbolt for a while", zap.Error(err), zap.Duration("for", w.retryLog))
		for _, r := range batch {
			r.link.orphan = nil // the bbolt transaction decides it again
		}
		return false
	}
	w.off += int64(len(b))
	if len(w.recs) == 0 {
		w.since = time.Now()
	}
	w.mu.Lock()
	for _, r := range batch {
		op := r.link
		e := op
		e.took = op.orphan != nil
		w.recs = append(w.recs, e)
		w.msgs[e.id] = e
		w.links[string(e.key)] = e
		if e.took {
			w.taken[string(e.key)] = e
		}
	}
	w.mu.Unlock()
	for _, r := range batch {
		r.answer(nil, &later)
	}
	return true
}

// startApply freezes the links of the half being written and starts their
// apply on a goroutine; the writer goes on in the other half (w.canFreeze
// holds: that half's links are applied).
func (s *Bolt) startApply() {
	w := s.wal
	w.frozen, w.recs = w.recs, w.frozen[:0]
	w.frozenLast = w.next - 1
	w.region, w.off = 1-w.region, 0
	ch := make(chan error, 1)
	w.applying = ch
	frozen, last := w.frozen, w.frozenLast
	go func() {
		if walApplyHook != nil {
			walApplyHook()
		}
		ch <- s.db.Update(func(tx *bolt.Tx) error { return applyLinksTx(tx, last, frozen) })
	}()
}

// waitApply waits for the running apply, if any, and takes its outcome.
func (s *Bolt) waitApply() {
	if w := s.wal; w != nil && w.applying != nil {
		s.applyEnded(<-w.applying)
	}
}

// pollApply takes the outcome of the running apply if it is there.
func (s *Bolt) pollApply() {
	if w := s.wal; w != nil && w.applying != nil {
		select {
		case err := <-w.applying:
			s.applyEnded(err)
		default:
		}
	}
}

// applyEnded takes the outcome of the applier's transaction: committed,
// the frozen links leave the overlay (unless a later link replaced them
// there already) and their half is free; failed, they stay, and batches go
// to bbolt until an apply commits.
func (s *Bolt) applyEnded(err error) {
	w := s.wal
	w.applying = nil
	if err != nil {
		s.applyFailed(err)
		return
	}
	w.retryDelay = 0
	w.applied = max(w.applied, w.frozenLast)
	w.mu.Lock()
	for _, e := range w.frozen {
		if w.msgs[e.id] == e {
			delete(w.msgs, e.id)
		}
		if w.links[string(e.key)] == e {
			delete(w.links, string(e.key))
		}
		if e.took && w.taken[string(e.key)] == e {
			delete(w.taken, string(e.key))
		}
	}
	w.mu.Unlock()
	clear(w.frozen)
	w.frozen = w.frozen[:0]
}

// applyFailed notes an apply of the overlay that failed: batches go to
// bbolt until an apply commits, and the writer tries again after a delay
// that doubles from applyAge up to walRetryMax (one log line a try).
func (s *Bolt) applyFailed(err error) {
	w := s.wal
	w.ok = false
	w.retryDelay = min(max(2*w.retryDelay, w.applyAge), max(walRetryMax, w.applyAge))
	w.retryAt = time.Now().Add(w.retryDelay)
	s.log.Error("store: applying the write-ahead log to bbolt failed; writes go to bbolt until an apply commits",
		zap.Error(err), zap.Duration("retry in", w.retryDelay))
}

// applyLinksTx applies links, in log order, and sets walseq to last.
func applyLinksTx(tx *bolt.Tx, last uint64, links ...[]*walEntry) error {
	if walApplyErr != nil {
		if err := walApplyErr(); err != nil {
			return err
		}
	}
	// Message ids of IDGen's form grow: a record appended to the last
	// leaf fills it instead of splitting it at half (bbolt's default
	// FillPercent), so fewer pages are written and read.
	tx.Bucket(bMsg).FillPercent = 0.9
	for _, l := range links {
		for _, e := range l {
			if err := applyLinkTx(tx, []byte(e.id), e.enc, e.exp, e.key, e.took); err != nil {
				return err
			}
		}
	}
	meta, err := tx.CreateBucketIfNotExists(bMeta)
	if err != nil {
		return err
	}
	return meta.Put(walMeta, u64(last))
}

// applyTx applies what is left of the overlay to bbolt in tx (the frozen
// links if their apply failed, then the others) and sets walseq to the
// last number issued. It runs first in every bbolt write transaction of
// the writer, after waitApply.
func (s *Bolt) applyTx(tx *bolt.Tx) error {
	w := s.wal
	if w == nil || !w.pending() {
		return nil
	}
	return applyLinksTx(tx, w.next-1, w.frozen, w.recs)
}

// applyLinkTx writes one logged link to bbolt: as linkTx, with the orphan
// take decided when it was logged.
func applyLinkTx(tx *bolt.Tx, id, enc []byte, exp uint64, key []byte, took bool) error {
	if err := linkWriteTx(tx, id, enc, exp, key); err != nil {
		return err
	}
	if took {
		return tx.Bucket(bOrphan).Delete(key)
	}
	return nil
}

// applied notes that a transaction that ran applyTx committed: the
// overlay is in bbolt, and both halves of the log are free. Under w.mu's
// write lock when the overlay had work (update).
func (s *Bolt) applied() {
	w := s.wal
	if w == nil {
		return
	}
	w.ok = true
	w.retryDelay = 0
	if !w.pending() {
		return
	}
	w.applied = w.next - 1
	clear(w.msgs)
	clear(w.links)
	clear(w.taken)
	clear(w.recs)
	w.recs = w.recs[:0]
	clear(w.frozen)
	w.frozen = w.frozen[:0]
	w.off = 0
}

// update runs fn in a bbolt write transaction after the overlay's apply
// (the writer has waited for a running apply).
//
// When the overlay has links to apply, the overlay's write lock is held
// from before the transaction until the overlay is cleared after its
// commit: readers (readMessages) hold the read lock across their own
// transaction, so they see the overlay and bbolt either both before or
// both after the commit, never the overlay's older record next to what fn
// wrote (a FinishMessage's record, say) in bbolt.
func (s *Bolt) update(fn func(*bolt.Tx) error) error {
	if w := s.wal; w != nil && w.pending() {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.applyTx(tx); err != nil {
			return err
		}
		return fn(tx)
	})
	if err == nil {
		if walAppliedHook != nil {
			walAppliedHook()
		}
		s.applied()
	}
	return err
}

// applyNow applies the whole overlay in a transaction of its own (a
// failed apply tried again, Close) and returns the outcome.
func (s *Bolt) applyNow() error {
	s.waitApply()
	if s.wal == nil || !s.wal.pending() {
		return nil
	}
	err := s.update(func(*bolt.Tx) error { return nil })
	if err != nil {
		s.applyFailed(err)
	}
	return err
}

// walTick is the writer's look at the log when its timer fires.
func (s *Bolt) walTick() {
	w := s.wal
	switch {
	case w.applying != nil:
	case !w.ok:
		_ = s.applyNow() // a failure is logged and tried again later
	case w.canFreeze() && w.due():
		s.startApply()
	}
}

// overlayMessage is the overlay's record of id, if it holds one: the
// encoded Message, and whether it is alive at now. Under w.mu's read lock.
func (w *walState) overlayMessage(id string, now uint64) (enc []byte, found bool) {
	if w == nil {
		return nil, false
	}
	e := w.msgs[id]
	if e == nil {
		return nil, false
	}
	if expired(e.exp, now) {
		return nil, true
	}
	return e.enc, true
}

// overlayLink is the overlay's newest link of key, or nil. Under w.mu's
// read lock.
func (w *walState) overlayLink(key []byte) *walEntry {
	if w == nil {
		return nil
	}
	return w.links[string(key)]
}

// readMessages runs fn in a read transaction with the overlay held still
// (no apply can empty it meanwhile; an apply empties it only after its
// commit, which a transaction begun after the overlay was read then sees).
func (s *Bolt) readMessages(op string, fn func(tx *bolt.Tx, w *walState) error) error {
	w := s.wal
	if w != nil {
		w.mu.RLock()
		defer w.mu.RUnlock()
	}
	return s.view(op, func(tx *bolt.Tx) error { return fn(tx, w) })
}

// replayWAL applies the log's records numbered above walseq to bbolt
// (OpenBolt, before anything else runs) and returns the walState to go on
// with.
func replayWAL(db *bolt.DB, f *walFile, data []byte, log *zap.Logger) (*walState, error) {
	var applied uint64
	if err := db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bMeta); meta != nil {
			if v := meta.Get(walMeta); len(v) == 8 {
				applied = binary.BigEndian.Uint64(v)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// The halves of the file as it was written (it may have been made
	// larger since, when walFileSize grew).
	half := len(data) / 2
	a, _ := scanWAL(data[:half])
	b, _ := scanWAL(data[half : 2*half])
	recs := slices.SortedFunc(slices.Values(append(a, b...)), func(x, y walRecord) int {
		return cmp.Compare(x.seq, y.seq)
	})
	last := applied
	var todo []walRecord
	for _, r := range recs {
		if r.seq <= applied {
			continue
		}
		if r.seq != last+1 {
			break // a gap: what follows was never answered
		}
		todo = append(todo, r)
		last = r.seq
	}
	// Numbers above any left in the file: records of a batch whose write
	// failed just before a crash may lie past a half's end, whole, with
	// numbers above the last replayed (at most one batch: no log write
	// follows a failed one until an apply commits). walseq says so at
	// once, so that the numbers skipped are no gap to a later replay.
	top := last
	for _, r := range recs {
		top = max(top, r.seq)
	}
	next := top + 1 + writeBatchMax
	skipped := 0
	err := db.Update(func(tx *bolt.Tx) error {
		skipped = 0
		for _, r := range todo {
			// A record bbolt would refuse (logged by a release that did
			// not check links before logging them) can never be applied:
			// stepped over, said, so that it does not keep the store from
			// opening nor the records after it from being replayed.
			if err := checkLink(string(r.id), r.key, r.enc); err != nil {
				log.Error("store: write-ahead log record cannot be applied to bbolt; stepped over (that link is lost)",
					zap.String("file", f.path), zap.Uint64("seq", r.seq), zap.ByteString("id", r.id), zap.Error(err))
				skipped++
				continue
			}
			if err := applyLinkTx(tx, r.id, r.enc, r.exp, r.key, r.took); err != nil {
				return fmt.Errorf("record %d (message %q) of %s: %w (if bbolt refuses that record for good, "+
					"moving %s aside opens the store without the log: the links logged after walseq %d, %d of them, are then lost)",
					r.seq, r.id, f.path, err, f.path, applied, len(todo))
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return err
		}
		return meta.Put(walMeta, u64(next-1))
	})
	if err != nil {
		return nil, fmt.Errorf("replay the write-ahead log: %w", err)
	}
	if len(todo) > 0 {
		log.Info("store: write-ahead log replayed", zap.Int("links", len(todo)-skipped), zap.Int("stepped over", skipped))
	}
	return newWALState(f, next, next-1), nil
}

// flushWAL applies the overlay through the writer (for tests that read
// bbolt itself).
func (s *Bolt) flushWAL() error {
	return s.write(context.Background(), func(*bolt.Tx) error { return nil })
}
