package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
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
// keys taken. GetMessage and FindByCarrierID look in it first. It is
// applied to bbolt, in log order, in the same transaction as anything else
// written to bbolt, before that write's own function runs: every other
// write (FinishMessage, AddDelivery, PutMessage, StashOrphan, TakeOrphan,
// claims, timers, the sweep, a batch that mixes links with other writes)
// sees bbolt exactly as if each link had been committed to it. The
// writer applies it also on its own once it holds walApplyRecords records
// or walApplyBytes octets or is walApplyAge old, and at Close. The apply
// writes the last sequence number issued to bbolt's meta bucket (walseq)
// in the same transaction; once it commits, the overlay is emptied and the
// log is written again from offset 0.
//
// OpenBolt replays the log's records numbered above walseq before anything
// else runs (each record as the apply does), so a store reopened after a
// crash answers as it did before: every answered link was fsynced in the
// log, and the log's end (zeros, a torn or CRC-bad record, a record of an
// older pass) comes after the last record answered.
//
// A log write that fails fails its batch's callers. From then on, and after
// an apply that fails, every batch goes to bbolt (applying the overlay
// first) until an apply commits: that apply's walseq covers the failed
// records too, so they are never replayed after it.
var (
	walApplyRecords       = 8192
	walApplyBytes   int64 = 1 << 20
	walApplyAge           = 200 * time.Millisecond
)

// walMeta is the key in bMeta of the last log sequence number applied.
var walMeta = []byte("walseq")

// walEntry is one logged link in the overlay.
type walEntry struct {
	id   string
	key  []byte
	enc  []byte // the encoded Message
	exp  uint64
	took bool
}

// walState is the log and the overlay. The writer goroutine owns
// everything but the overlay's maps, which it changes under mu (readers
// hold mu's read lock).
type walState struct {
	file *walFile
	off  int64  // where the next batch goes
	next uint64 // the next sequence number
	// applied is the last sequence number applied to bbolt (walseq);
	// next-1 > applied while records wait (or failed writes were numbered).
	applied uint64
	// ok is false after a failed log write or apply: batches go to bbolt
	// until an apply commits.
	ok    bool
	recs  []*walEntry // waiting to be applied, in log order
	since time.Time   // when the first of recs was answered
	buf   []byte      // the batch being written
	took  map[string]bool

	// When the writer applies the overlay by itself (walApply* when the
	// store opened).
	applyRecords int
	applyBytes   int64
	applyAge     time.Duration

	mu    sync.RWMutex
	msgs  map[string]*walEntry // by message id
	links map[string]*walEntry // by string(key)
	taken map[string]bool      // orphan keys taken by links of recs
}

func newWALState(f *walFile, next, applied uint64) *walState {
	return &walState{
		file: f, next: next, applied: applied, ok: true, took: map[string]bool{},
		applyRecords: walApplyRecords, applyBytes: walApplyBytes, applyAge: walApplyAge,
		msgs: map[string]*walEntry{}, links: map[string]*walEntry{}, taken: map[string]bool{},
	}
}

// pending reports whether an apply has something to do.
func (w *walState) pending() bool { return w.next-1 > w.applied }

// due reports whether the writer should apply the overlay now.
func (w *walState) due() bool {
	return len(w.recs) >= w.applyRecords || w.off >= w.applyBytes ||
		(len(w.recs) > 0 && time.Since(w.since) >= w.applyAge)
}

// linkOp is a link waiting for the writer: LinkCarrier's arguments and
// its result.
type linkOp struct {
	id     string
	enc    []byte
	exp    uint64
	key    []byte
	orphan []byte // set by the writer before the answer
}

// tx runs the link in a bbolt transaction (a batch that goes to bbolt).
func (op *linkOp) tx(tx *bolt.Tx) error {
	var err error
	op.orphan, err = linkTx(tx, op.id, op.enc, op.exp, op.key)
	return err
}

// walBatch reports whether the writer logs batch: the log works, the
// batch holds only links, and it fits in the log file.
func (s *Bolt) walBatch(batch []*writeReq) bool {
	w := s.wal
	if w == nil || !w.ok || len(batch) == 0 {
		return false
	}
	size := int64(0)
	for _, r := range batch {
		if r.link == nil {
			return false
		}
		size += walHeader + 32 + int64(len(r.link.id)+len(r.link.key)+len(r.link.enc))
	}
	return w.off+size <= w.file.size
}

// logBatch logs a batch of links (see the top of this file) and answers
// each.
func (s *Bolt) logBatch(batch []*writeReq) {
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
			took := false
			if !w.taken[string(op.key)] && !w.took[string(op.key)] {
				if v := orphans.Get(op.key); len(v) >= 8 && !expired(binary.BigEndian.Uint64(v), now) {
					op.orphan, took = bytes.Clone(v[8:]), true
					w.took[string(op.key)] = true
				}
			}
			b = appendWALRecord(b, w.next+uint64(i), took, op.exp, op.id, op.key, op.enc)
		}
		return nil
	})
	w.buf = b
	if err == nil {
		err = w.file.write(b, w.off)
	}
	w.next += uint64(len(batch)) // numbered even if not written: the next apply's walseq covers them
	if err != nil {
		w.ok = false
		s.log.Error("store: write-ahead log write failed; writes go to bbolt until an apply commits", zap.Error(err))
		for _, r := range batch {
			r.link.orphan = nil
			r.answer(fmt.Errorf("wal write: %w", err), &later)
		}
		return
	}
	w.off += int64(len(b))
	if len(w.recs) == 0 {
		w.since = time.Now()
	}
	w.mu.Lock()
	for _, r := range batch {
		op := r.link
		e := &walEntry{id: op.id, key: op.key, enc: op.enc, exp: op.exp, took: op.orphan != nil}
		w.recs = append(w.recs, e)
		w.msgs[e.id] = e
		w.links[string(e.key)] = e
		if e.took {
			w.taken[string(e.key)] = true
		}
	}
	w.mu.Unlock()
	for _, r := range batch {
		r.answer(nil, &later)
	}
}

// applyTx applies the overlay to bbolt in tx: every logged link in log
// order, and walseq. It runs first in every bbolt write transaction of the
// writer.
func (s *Bolt) applyTx(tx *bolt.Tx) error {
	w := s.wal
	if w == nil || !w.pending() {
		return nil
	}
	// Message ids of IDGen's form grow: a record appended to the last
	// leaf fills it instead of splitting it at half (bbolt's default
	// FillPercent), so fewer pages are written and read.
	tx.Bucket(bMsg).FillPercent = 0.9
	for _, e := range w.recs {
		if err := applyLinkTx(tx, []byte(e.id), e.enc, e.exp, e.key, e.took); err != nil {
			return err
		}
	}
	meta, err := tx.CreateBucketIfNotExists(bMeta)
	if err != nil {
		return err
	}
	return meta.Put(walMeta, u64(w.next-1))
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
// overlay is in bbolt, and the log starts again from offset 0.
func (s *Bolt) applied() {
	w := s.wal
	if w == nil || !w.pending() {
		return
	}
	w.applied = w.next - 1
	w.mu.Lock()
	clear(w.msgs)
	clear(w.links)
	clear(w.taken)
	w.mu.Unlock()
	clear(w.recs)
	w.recs = w.recs[:0]
	w.off = 0
	w.ok = true
}

// update runs fn in a bbolt write transaction after the overlay's apply.
func (s *Bolt) update(fn func(*bolt.Tx) error) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := s.applyTx(tx); err != nil {
			return err
		}
		return fn(tx)
	})
	if err == nil {
		s.applied()
	}
	return err
}

// applyNow applies the overlay in a transaction of its own.
func (s *Bolt) applyNow() {
	if s.wal == nil || !s.wal.pending() {
		return
	}
	if err := s.update(func(*bolt.Tx) error { return nil }); err != nil {
		s.wal.ok = false
		s.log.Error("store: applying the write-ahead log to bbolt failed; writes go to bbolt until an apply commits", zap.Error(err))
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
	recs, _ := scanWAL(data)
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
	last := applied
	var todo []walRecord
	for _, r := range recs {
		if r.seq > applied {
			todo = append(todo, r)
		}
		last = max(last, r.seq)
	}
	if len(todo) > 0 {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, r := range todo {
				if err := applyLinkTx(tx, r.id, r.enc, r.exp, r.key, r.took); err != nil {
					return err
				}
			}
			meta, err := tx.CreateBucketIfNotExists(bMeta)
			if err != nil {
				return err
			}
			return meta.Put(walMeta, u64(last))
		})
		if err != nil {
			return nil, fmt.Errorf("replay the write-ahead log: %w", err)
		}
		log.Info("store: write-ahead log replayed", zap.Int("links", len(todo)))
	}
	return newWALState(f, last+1, last), nil
}

// flushWAL applies the overlay through the writer (for tests that read
// bbolt itself).
func (s *Bolt) flushWAL() error {
	return s.write(context.Background(), func(*bolt.Tx) error { return nil })
}
