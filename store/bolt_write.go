package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit of the embedded store.
//
// Every bolt write goes through the writer: the caller queues its request
// (write, tryWrite, or a link) and waits or is called back; one writer
// goroutine takes the first waiting request, then every other one already
// waiting (up to writeBatchMax), makes the batch durable, answers each, and
// loops. Under load the batch grows by itself while the previous one's
// fsync runs. A link batch goes out at once; a bbolt commit waits until
// commitGap (2 ms) after the start of the previous one, gathering what
// arrives meanwhile (at low load there is no previous commit that recent,
// and nothing waits). Nothing is answered before it is fsynced.
//
// A batch holds only links (LinkCarrier, TryLinkCarrier) most of the time
// at saturation: the writer appends it to the write-ahead log (one write,
// one fdatasync) and puts it in the overlay (bolt_wal.go). Any other batch
// waits for a running apply of the overlay, then runs in one db.Update (one
// transaction, bbolt's fsyncs) that first applies what is left of the
// overlay; so does a batch of links when the log cannot take it (after a
// failed log write or apply, until an apply commits; no room left in the
// log file). When the links logged are many or old enough, the writer
// hands them to an applier goroutine, which applies them in a transaction
// of its own while the writer goes on logging; Close applies the rest.
//
// A failing function does not sink the others (as in bbolt's DB.Batch): the
// transaction is rolled back, the failing function is taken out, the rest
// run again in a new transaction, and the failing one then runs alone in
// its own transaction, whose result its caller gets. So a function may run
// more than once and must set its results afresh on each run. A failing
// apply of the overlay or a failing commit fails the whole batch; a batch
// whose log write fails is committed to bbolt instead (bolt_wal.go).
//
// A write whose ctx ends before the writer takes it into a batch is
// not applied and its caller gets ctx.Err(); once taken it runs to the end.
// The queue holds writeQueueMax writes; callers beyond that wait for room
// (or their ctx). Close commits the writes already queued, applies the
// overlay, and refuses new writes with ErrClosed.

const (
	// commitGap is the least time between the starts of two bbolt
	// commits: a write that finds the previous commit younger waits for the
	// rest of the gap, and the writes arriving meanwhile join its commit.
	// Each commit costs two fdatasyncs and a meta page write whatever it
	// holds (about 150 µs of kernel CPU each on the machine of
	// BENCHMARKS.md); with receipts flowing, a commit per write or two
	// made the store the gateway's largest cost (a receipt takes three to
	// four writes). Links do not wait: they go to the write-ahead log,
	// unless a held write is ahead of them in the queue.
	commitGap = 2 * time.Millisecond
	// writeBatchMax bounds the writes in one transaction, as bbolt's
	// DefaultMaxBatchSize. The writes of this store are small (a message
	// record of a few hundred octets and its index entries), so the count
	// also bounds the octets (about 1 MB at most).
	writeBatchMax = 1000
	// writeQueueMax bounds the writes waiting for the writer.
	writeQueueMax = 2 * writeBatchMax
)

// The state of a writeReq, moved on by compare-and-swap so that the writer
// and a caller whose ctx ended agree on whether the write runs.
const (
	reqQueued    int32 = iota
	reqStarted         // taken into a transaction by the writer: it will be answered
	reqAbandoned       // not to be run: its ctx ended or the store closed first
)

// commitStartHook, when set (tests), is called by the writer as a held
// batch's bbolt commit starts, with the batch's size.
var commitStartHook func(n int)

// writeReq is one caller's write waiting for the writer.
type writeReq struct {
	ctx context.Context
	fn  func(*bolt.Tx) error
	// link, instead of fn, is a link (LinkCarrier): logged when its batch
	// holds only links, else run in the transaction (bolt_wal.go).
	link  *linkOp
	state atomic.Int32
	done  chan error // capacity 1: the writer's one answer, sent without blocking
	// cb replaces done for tryWrite: called with the answer by the
	// completer goroutine, off the writer's critical path.
	cb  func(error)
	err error // the answer, for the completer
}

// answer gives r its outcome (once). The callbacks of tryWrite's writes
// are collected in *later and run by the completer after the batch, so that
// the writer goes on to the next commit at once (at saturation a batch
// holds a hundred writes, and their callbacks answer the platform).
func (r *writeReq) answer(err error, later *[]*writeReq) {
	if r.cb != nil {
		r.err = err
		*later = append(*later, r)
		return
	}
	r.done <- err
}

// completer runs the callbacks of tryWrite's writes, a batch at a time,
// until the writer closes the channel.
func (s *Bolt) completer() {
	defer close(s.cdone)
	for batch := range s.callbacks {
		for _, r := range batch {
			r.cb(r.err)
		}
	}
}

// handOver gives the callbacks collected during a commit to the completer.
func (s *Bolt) handOver(later []*writeReq) {
	if len(later) > 0 {
		s.callbacks <- later
	}
}

// tryWrite queues fn for the writer without waiting: it reports false,
// having queued nothing, when the queue is full or the store is closing.
// Otherwise cb gets the write's outcome exactly once, on the completer
// goroutine, after the commit (a panic of fn comes as a writePanic error).
// As with write, if ctx ends before the writer takes fn into a transaction,
// fn never runs and cb gets ctx.Err(); once taken, it runs to the end.
func (s *Bolt) tryWrite(ctx context.Context, fn func(*bolt.Tx) error, cb func(error)) bool {
	return s.tryWriteReq(&writeReq{ctx: ctx, fn: fn, cb: cb})
}

// tryWriteReq is tryWrite of a prepared request (r.cb set).
func (s *Bolt) tryWriteReq(r *writeReq) bool {
	// Close sets asyncClosed before it stops the writer, so every write
	// queued here is queued before the writer's last look (it drains the
	// queue on Close): none is left unanswered.
	return offer(&s.asyncMu, &s.asyncClosed, s.writes, r)
}

// offer sends v on ch without waiting, unless *closed (read under mu's read
// lock; Close sets it under the write lock). It is how the stores queue the
// writes of callers that must not wait (AsyncLinker).
func offer[T any](mu *sync.RWMutex, closed *bool, ch chan<- T, v T) bool {
	mu.RLock()
	defer mu.RUnlock()
	if *closed {
		return false
	}
	select {
	case ch <- v:
		return true
	default:
		return false
	}
}

// writePanic carries a panic of a write function from the writer goroutine
// back to its caller, which panics with it again.
type writePanic struct{ v any }

func (p writePanic) Error() string {
	return fmt.Sprintf("store: bolt write function panicked: %v", p.v)
}

// write runs fn through the writer (see the comment at the top of this
// file) and returns when its transaction is committed and fsynced.
func (s *Bolt) write(ctx context.Context, fn func(*bolt.Tx) error) error {
	return s.writeReq(ctx, &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)})
}

// writeReq is write of a prepared request (r.done set).
func (s *Bolt) writeReq(ctx context.Context, r *writeReq) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.stop:
		return ErrClosed
	default:
	}
	select {
	case s.writes <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return ErrClosed
	}
	var err error
	select {
	case err = <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err() // the writer will skip it
		}
		err = <-r.done // started: wait for its outcome
	case <-s.wdone:
		// The writer answers every write it took before it exits; a write
		// queued after its last look at the queue was never taken.
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ErrClosed
		}
		err = <-r.done
	}
	if p, ok := err.(writePanic); ok {
		panic(p.v)
	}
	return err
}

// writer owns the write side of the database until Close: it commits the
// queued writes in groups (see the comment at the top of this file).
func (s *Bolt) writer() {
	defer func() {
		close(s.callbacks) // the completer runs what it holds, then exits
		close(s.wdone)
	}()
	batch := make([]*writeReq, 0, writeBatchMax)
	var solo []*writeReq
	// held: writes taken for the next bbolt commit, which waits until
	// commitGap after the previous one (see commitGap).
	held := make([]*writeReq, 0, writeBatchMax)
	var lastCommit time.Time
	holdT := time.NewTimer(time.Hour)
	holdT.Stop()
	defer holdT.Stop()
	var holdC <-chan time.Time
	commitHeld := func() {
		holdT.Stop()
		holdC = nil
		if len(held) == 0 { // every write taken had been abandoned
			return
		}
		if commitStartHook != nil {
			commitStartHook(len(held))
		}
		lastCommit = time.Now() // the gap runs from a commit's start
		solo = s.commit(held, solo[:0])
		clear(held)
		held = held[:0]
	}
	// walAt fires when the writer should look at the log by itself
	// (bolt_wal.go: an apply due by age, a failed apply to try again).
	walAt := time.NewTimer(time.Hour)
	walAt.Stop()
	defer walAt.Stop()
	for {
		batch = batch[:0]
		var timer <-chan time.Time
		var applied <-chan error
		if w := s.wal; w != nil {
			applied = w.applying // nil when no apply runs
			if at := w.timer(); !at.IsZero() {
				walAt.Reset(time.Until(at))
				timer = walAt.C
			}
		}
		select {
		case r := <-s.writes:
			batch = take(batch, r)
		case <-holdC:
			commitHeld()
			continue
		case err := <-applied:
			s.applyEnded(err)
			continue
		case <-timer:
			s.walTick()
			continue
		case <-s.stop:
			if len(held) > 0 {
				commitHeld()
			}
			s.drain(batch, solo)
			// What Close leaves in the log is replayed by the next
			// OpenBolt; Close returns the outcome.
			s.closeErr = s.applyNow()
			return
		}
	gather:
		for len(batch) < writeBatchMax-len(held) { // a commit holds writeBatchMax at most
			select {
			case r := <-s.writes:
				batch = take(batch, r)
			default:
				break gather
			}
		}
		if len(held) == 0 && s.walBatch(batch) && s.logBatch(batch) {
			s.pollApply()
			if w := s.wal; w.canFreeze() && w.due() {
				s.startApply()
			}
			clear(batch[:cap(batch)]) // let the answered writes go
			continue
		}
		// Not logged (a write other than a link, or behind one held:
		// the order of the queue is kept), or its log write failed
		// (answered by nobody yet): to bbolt, whose walseq then covers the
		// failed records.
		held = append(held, batch...)
		clear(batch[:cap(batch)])
		if len(held) == 0 {
			continue
		}
		if wait := commitGap - time.Since(lastCommit); wait > 0 && len(held) < writeBatchMax {
			if holdC == nil {
				holdT.Reset(wait)
				holdC = holdT.C
			}
			continue
		}
		commitHeld()
	}
}

// drain commits what is left in the queue after Close.
func (s *Bolt) drain(batch, solo []*writeReq) {
	for {
		batch = batch[:0]
	fill:
		for len(batch) < writeBatchMax {
			select {
			case r := <-s.writes:
				batch = take(batch, r)
			default:
				break fill
			}
		}
		if len(batch) == 0 {
			return
		}
		solo = s.commit(batch, solo[:0])
	}
}

// take appends r to batch and marks it started, unless its caller gave up
// or its ctx has ended (then it answers ctx.Err() and leaves it out).
func take(batch []*writeReq, r *writeReq) []*writeReq {
	if err := r.ctx.Err(); err != nil {
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			var later []*writeReq
			r.answer(err, &later)
			for _, r := range later { // not on the critical path: nothing was committed
				r.cb(r.err)
			}
		}
		return batch
	}
	if !r.state.CompareAndSwap(reqQueued, reqStarted) {
		return batch // abandoned by its caller
	}
	return append(batch, r)
}

// commit runs batch in one transaction and answers each write. A function
// that fails is taken out and the rest run again; the failed ones then run
// alone, each in its own transaction. solo is scratch space, returned for
// reuse.
func (s *Bolt) commit(batch, solo []*writeReq) []*writeReq {
	var later []*writeReq
	defer func() { s.handOver(later) }()
	s.waitApply() // the transaction applies what is left of the overlay first
	for len(batch) > 0 {
		failed := -1
		err := s.update(func(tx *bolt.Tx) error {
			for i, r := range batch {
				if err := call(r, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, r := range batch {
				r.answer(err, &later) // nil, or the commit's own error (disk, closed), for all
			}
			break
		}
		solo = append(solo, batch[failed])
		batch = append(batch[:failed], batch[failed+1:]...)
	}
	for _, r := range solo {
		r.answer(s.update(func(tx *bolt.Tx) error { return call(r, tx) }), &later)
	}
	return solo
}

// call runs r's function (or link) in tx, turning a panic into a
// writePanic for its caller.
func call(r *writeReq, tx *bolt.Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = writePanic{v}
		}
	}()
	if r.link != nil {
		return r.link.tx(tx)
	}
	return r.fn(tx)
}

// boltOpenOptions gives the bbolt options of OpenBolt (a variable for the
// benchmarks that compare options).
//
// The freelist (the pages free for reuse) is not written at each commit but
// rebuilt by a scan of the file when it opens, and kept in a hash map:
// etcd runs bbolt the same way. At relay saturation this cut the process's
// CPU per relayed message by about a fifth (the array freelist rewritten,
// and its pages written, at every group commit); the cost moves to the
// open, one scan of the file's pages, and to a commit that fails (a full
// disk, an I/O error), whose rollback rebuilds the freelist by the same
// scan (a write function that returns an error rolls back cheaply).
// Durability is unchanged: the pages a commit wrote are fsynced before it
// returns, and the freelist is derived from them.
var boltOpenOptions = func() *bolt.Options {
	return &bolt.Options{
		Timeout:        2 * time.Second, // another process holds the file lock
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	}
}
