package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Bolt buckets. Values that expire start with their expiry, unix ms
// big-endian (0 = never).
//
//	m   id -> exp, encoded Message
//	c   <len>:<carrier>:<cid> -> exp, our id
//	o   <len>:<carrier>:<cid> -> exp, receipt body
//	x   exp(8) kind(1) key -> nil      expiry index for the sweep (kind 'm', 'c' or 'o')
//	d   account -> bucket of seq(8) -> encoded Delivery; d's own sequence numbers deliveries
//	di  account -> bucket of delivery id -> seq(8)
//	q   (3-pri)(1) enq ms(8) id -> due ms(8)   modem queue, best first
//	qi  id -> its q key
//	ql  id -> lease end ms(8), worker
//
// A message's first write by LinkCarrier (the carrier path's one store step
// per message) writes m and c without entries in x, when the id is one of
// proxy.IDGen's: the sweep finds those records by walking m in id order
// (sweepByID), which is the order the messages were made. Two B+tree
// insertions fewer per relayed message (issue 6). Every other write indexes
// its expiry in x, as does a LinkCarrier that replaces an earlier link.
var (
	bMsg      = []byte("m")
	bCarrier  = []byte("c")
	bOrphan   = []byte("o")
	bExpiry   = []byte("x")
	bDeliv    = []byte("d")
	bDelivIdx = []byte("di")
	bQueue    = []byte("q")
	bQueueIdx = []byte("qi")
	bLease    = []byte("ql")
)

var _ Store = (*Bolt)(nil)

// sweepMax bounds the records the sweep deletes in one transaction (a
// variable for the tests).
var sweepMax = 10000

// Bolt is the embedded store: one bbolt file and a write-ahead log of
// links, written by one writer goroutine that makes every write waiting for
// it durable together (group commit, bolt_write.go; the log, bolt_wal.go).
type Bolt struct {
	db     *bolt.DB
	ttl    time.Duration // read-only
	log    *zap.Logger
	writes chan *writeReq // callers send; the writer receives. Its capacity is the backpressure bound
	stop   chan struct{}  // closed by Close: ends the sweeper, makes the writer drain and exit
	done   chan struct{}  // closed by the sweeper when it exits
	wdone  chan struct{}  // closed by the writer when it exits, after answering every write it took
	// callbacks carries tryWrite's answered writes to the completer, a
	// batch at a time; cdone is closed when the completer has run them all.
	callbacks chan []*writeReq
	cdone     chan struct{}
	once      sync.Once
	// asyncClosed refuses tryWrite once Close began (see tryWrite).
	asyncMu     sync.RWMutex
	asyncClosed bool
	// sweepFrom is where the next sweepByID round goes on (nil: the
	// start); only sweep uses it, and sets it once the round committed.
	sweepFrom []byte
	// wal is the write-ahead log of links and its overlay (bolt_wal.go);
	// nil when boltWAL is off.
	wal *walState
	// closeErr is the outcome of the writer's last apply of the overlay,
	// at Close (written by the writer before wdone is closed).
	closeErr error
}

// boltWAL turns the write-ahead log of links on (a variable for the tests
// and benchmarks that compare).
var boltWAL = true

// OpenBolt opens (creating it and dir if needed) the store file
// dir/spareline.db. Records expire after ttl (0 = never); a sweeper deletes
// expired ones until Close.
func OpenBolt(dir string, ttl time.Duration, log *zap.Logger) (*Bolt, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded store: create directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, "spareline.db")
	db, err := bolt.Open(path, 0o600, boltOpenOptions())
	if errors.Is(err, bolt.ErrTimeout) {
		// No "store: " prefix: the gateway adds one to every error of
		// opening the store, and an operator reads this line as it is.
		return nil, fmt.Errorf("embedded store %s is in use: another spareline (or another process) holds it. "+
			"Stop that one, give this one its own store.path, or set store.redis on both to share one Redis store", path)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMsg, bCarrier, bOrphan, bExpiry, bDeliv, bDelivIdx, bQueue, bQueueIdx, bLease} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded store: initialise %s: %w", path, err)
	}
	var wal *walState
	if boltWAL {
		f, data, err := openWALFile(dir)
		if err != nil {
			_ = db.Close()
			return nil, err
		}
		if wal, err = replayWAL(db, f, data, log); err != nil {
			_ = f.close()
			_ = db.Close()
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
		// Only now that the replay committed (see openWALFile).
		if err := f.enlarge(); err != nil {
			_ = f.close()
			_ = db.Close()
			return nil, err
		}
		wal.half = f.size / 2
	}
	s := &Bolt{
		db: db, ttl: ttl, log: log.With(zap.String("store", path)), wal: wal,
		writes: make(chan *writeReq, writeQueueMax),
		stop:   make(chan struct{}), done: make(chan struct{}), wdone: make(chan struct{}),
		callbacks: make(chan []*writeReq, 16), cdone: make(chan struct{}),
	}
	go s.writer()
	go s.completer()
	if ttl > 0 {
		go s.sweeper(min(max(ttl/4, 50*time.Millisecond), time.Minute))
	} else {
		close(s.done)
	}
	return s, nil
}

// DB returns the underlying bbolt database, for tests that inspect the
// stored state, after applying the links still in the write-ahead log's
// overlay (while the store is open).
func (s *Bolt) DB() *bolt.DB {
	_ = s.flushWAL()
	return s.db
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func msU64(t time.Time) uint64 { return uint64(max(t.UnixMilli(), 0)) }

// expiry is the unix ms a record written now expires at, 0 = never.
func (s *Bolt) expiry() uint64 {
	if s.ttl <= 0 {
		return 0
	}
	return msU64(time.Now().Add(s.ttl))
}

func expired(exp uint64, now uint64) bool { return exp != 0 && exp <= now }

func boltCarrierKey(carrier, cid string) []byte {
	return []byte(strconv.Itoa(len(carrier)) + ":" + carrier + ":" + cid)
}

// withExpiry is a stored value: exp, then val.
func withExpiry(exp uint64, val []byte) []byte {
	v := make([]byte, 8, 8+len(val))
	binary.BigEndian.PutUint64(v, exp)
	return append(v, val...)
}

// indexReplacedLink indexes the expiry of the carrier id link of a record
// (old, as stored) that a new link (newKey) replaces: the link may have
// been written without an index entry (linkTx), and once its record names
// another carrier id sweepByID no longer finds it.
func indexReplacedLink(tx *bolt.Tx, old, newKey []byte) error {
	if len(old) < 8 {
		return nil
	}
	om, err := decodeMessage(old[8:])
	if err != nil || om.CarrierID == "" {
		return nil // nothing to find it by; an unreadable record is reported where it is read
	}
	oldKey := boltCarrierKey(om.Carrier, om.CarrierID)
	if bytes.Equal(oldKey, newKey) {
		return nil
	}
	v := tx.Bucket(bCarrier).Get(oldKey)
	if len(v) < 8 || binary.BigEndian.Uint64(v) == 0 {
		return nil
	}
	return tx.Bucket(bExpiry).Put(append(append(u64(binary.BigEndian.Uint64(v)), 'c'), oldKey...), nil)
}

// putExpiring writes exp+val under key in bucket b and indexes the expiry.
func putExpiring(tx *bolt.Tx, b []byte, kind byte, key, val []byte, exp uint64) error {
	v := withExpiry(exp, val)
	if err := tx.Bucket(b).Put(key, v); err != nil {
		return err
	}
	if exp == 0 {
		return nil
	}
	x := append(append(u64(exp), kind), key...)
	return tx.Bucket(bExpiry).Put(x, nil)
}

// getExpiring reads a value written by putExpiring; nil if absent or
// expired. The slice is valid only within tx.
func getExpiring(tx *bolt.Tx, b, key []byte, now uint64) []byte {
	v := tx.Bucket(b).Get(key)
	if len(v) < 8 || expired(binary.BigEndian.Uint64(v), now) {
		return nil
	}
	return v[8:]
}

func putMessageTx(tx *bolt.Tx, m *Message, enc []byte, exp uint64) error {
	if err := putExpiring(tx, bMsg, 'm', []byte(m.ID), enc, exp); err != nil {
		return err
	}
	if m.CarrierID != "" {
		return putExpiring(tx, bCarrier, 'c', boltCarrierKey(m.Carrier, m.CarrierID), []byte(m.ID), exp)
	}
	return nil
}

// batch runs fn in a write transaction shared with the other writes
// waiting at the time, after the links of the write-ahead log are applied,
// committed (fsynced) before it returns nil (group commit, bolt_write.go). fn may run more than once and must set its
// results afresh each time. If ctx ends before fn is taken into a
// transaction, batch returns ctx.Err() and fn never runs.
func (s *Bolt) batch(ctx context.Context, op string, fn func(tx *bolt.Tx) error) error {
	return boltWriteErr(op, s.write(ctx, fn))
}

// boltWriteErr is the error a caller of batch gets for a write's outcome.
func boltWriteErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, bolt.ErrDatabaseNotOpen) || errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("store: bolt %s: %w", op, err)
}

func (s *Bolt) view(op string, fn func(tx *bolt.Tx) error) error {
	if err := s.db.View(fn); err != nil {
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return ErrClosed
		}
		var ce *CorruptError
		if errors.As(err, &ce) || errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("store: bolt %s: %w", op, err)
	}
	return nil
}

// PutMessage implements Store.
func (s *Bolt) PutMessage(ctx context.Context, m *Message) error {
	enc := encodeMessage(m)
	exp := s.expiry()
	return s.batch(ctx, "put message "+m.ID, func(tx *bolt.Tx) error { return putMessageTx(tx, m, enc, exp) })
}

// GetMessage implements Store.
func (s *Bolt) GetMessage(ctx context.Context, id string) (*Message, error) {
	var m *Message
	err := s.readMessages("get message "+id, func(tx *bolt.Tx, w *walState) error {
		now := msU64(time.Now())
		v, found := w.overlayMessage(id, now)
		if !found {
			v = getExpiring(tx, bMsg, []byte(id), now)
		}
		if v == nil {
			return ErrNotFound
		}
		var err error
		m, err = decodeMessage(v)
		return err
	})
	return m, err
}

// GetMessages implements Store in one read transaction.
func (s *Bolt) GetMessages(ctx context.Context, ids []string) ([]*Message, error) {
	out := make([]*Message, len(ids))
	err := s.readMessages("get messages", func(tx *bolt.Tx, w *walState) error {
		now := msU64(time.Now())
		for i, id := range ids {
			v, found := w.overlayMessage(id, now)
			if !found {
				v = getExpiring(tx, bMsg, []byte(id), now)
			}
			if v == nil {
				out[i] = nil
				continue
			}
			m, err := decodeMessage(v)
			if err != nil {
				return err
			}
			out[i] = m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// FindByCarrierID implements Store.
func (s *Bolt) FindByCarrierID(ctx context.Context, carrier, carrierID string) (*Message, error) {
	var m *Message
	err := s.readMessages("find carrier id", func(tx *bolt.Tx, w *walState) error {
		now := msU64(time.Now())
		key := boltCarrierKey(carrier, carrierID)
		var id []byte
		if e := w.overlayLink(key); e != nil {
			if !expired(e.exp, now) {
				id = []byte(e.id)
			}
		} else {
			id = getExpiring(tx, bCarrier, key, now)
		}
		if id == nil {
			return ErrNotFound
		}
		v, found := w.overlayMessage(string(id), now)
		if !found {
			v = getExpiring(tx, bMsg, id, now)
		}
		if v == nil {
			return ErrNotFound
		}
		var err error
		m, err = decodeMessage(v)
		return err
	})
	return m, err
}

// LinkCarrier implements Store: through the write-ahead log when its
// batch holds only links, else in one bbolt transaction (bolt_wal.go).
func (s *Bolt) LinkCarrier(ctx context.Context, m *Message) ([]byte, error) {
	if m.CarrierID == "" {
		return nil, ErrNoCarrierID
	}
	op, err := s.linkOp(m)
	if err != nil {
		return nil, err
	}
	if err := boltWriteErr("link carrier id", s.writeReq(ctx, &writeReq{ctx: ctx, link: op, done: make(chan error, 1)})); err != nil {
		return nil, err
	}
	return op.orphan, nil
}

// linkOp prepares a link for the writer, or refuses one that bbolt would
// refuse (checkLink): answered OK from the log, it could then never be
// applied, and every apply after it would fail.
func (s *Bolt) linkOp(m *Message) (*linkOp, error) {
	op := &linkOp{id: m.ID, enc: encodeMessage(m), exp: s.expiry(), key: boltCarrierKey(m.Carrier, m.CarrierID)}
	if err := checkLink(op.id, op.key, op.enc); err != nil {
		return nil, err
	}
	return op, nil
}

// linkKeyMax bounds a carrier id key: bbolt's key limit less the expiry
// index entry's prefix (8 octets of expiry and a kind octet) that
// putExpiring puts before it.
const linkKeyMax = bolt.MaxKeySize - 9

// checkLink reports why bbolt would refuse the link (id, carrier key,
// encoded record), or nil: an empty id, an id or key too long for a bbolt
// key (with the expiry index's prefix), a record (with its expiry) too
// large for a bbolt value.
func checkLink(id string, key, enc []byte) error {
	switch {
	case id == "":
		return errors.New("store: link carrier id: the message has no id")
	case len(id) > linkKeyMax:
		return fmt.Errorf("store: link carrier id: message id of %d octets (at most %d)", len(id), linkKeyMax)
	case len(key) == 0 || len(key) > linkKeyMax:
		return fmt.Errorf("store: link carrier id: carrier id key of %d octets (at most %d)", len(key), linkKeyMax)
	case int64(len(enc))+8 > bolt.MaxValueSize:
		return fmt.Errorf("store: link carrier id: message record of %d octets (at most %d)", len(enc), bolt.MaxValueSize-8)
	}
	return nil
}

// TryLinkCarrier implements AsyncLinker: LinkCarrier through the group
// commit without waiting for it.
func (s *Bolt) TryLinkCarrier(ctx context.Context, m *Message, done func(orphan []byte, err error)) bool {
	if m.CarrierID == "" {
		return false
	}
	op, err := s.linkOp(m) // op.orphan is written on the writer goroutine, read by the callback after the answer
	if err != nil {
		return false // LinkCarrier, which the caller falls back to, returns the error
	}
	return s.tryWriteReq(&writeReq{ctx: ctx, link: op, cb: func(err error) {
		if err = boltWriteErr("link carrier id", err); err != nil {
			done(nil, err)
			return
		}
		done(op.orphan, nil)
	}})
}

// linkTx is LinkCarrier's transaction: the record, the link and the
// orphan taken.
func linkTx(tx *bolt.Tx, id string, enc []byte, exp uint64, key []byte) ([]byte, error) {
	if err := linkWriteTx(tx, []byte(id), enc, exp, key); err != nil {
		return nil, err
	}
	v := getExpiring(tx, bOrphan, key, msU64(time.Now()))
	if v == nil {
		return nil, nil
	}
	orphan := bytes.Clone(v)
	return orphan, tx.Bucket(bOrphan).Delete(key)
}

// linkWriteTx writes a link's record and carrier id link. The first write
// of a message with an IDGen id leaves its expiry to sweepByID (see the
// bucket list at the top of this file).
func linkWriteTx(tx *bolt.Tx, id, enc []byte, exp uint64, key []byte) error {
	old := tx.Bucket(bMsg).Get(id)
	_, genID := idMillis(id)
	if exp != 0 && old == nil && genID {
		if err := tx.Bucket(bMsg).Put(id, withExpiry(exp, enc)); err != nil {
			return err
		}
		return tx.Bucket(bCarrier).Put(key, withExpiry(exp, id))
	}
	if old != nil {
		if err := indexReplacedLink(tx, old, key); err != nil {
			return err
		}
	}
	if err := putExpiring(tx, bMsg, 'm', id, enc, exp); err != nil {
		return err
	}
	return putExpiring(tx, bCarrier, 'c', key, id, exp)
}

// FindOrStash implements Store: a read first (the usual case, the link is
// there: no write); when it finds nothing, the look-up again and the stash
// in one write transaction of the writer, which applies the write-ahead
// log's links first, so a link is either in it, and found, or after it,
// and takes the stash.
func (s *Bolt) FindOrStash(ctx context.Context, carrier, carrierID string, body []byte, final bool) (*Message, error) {
	m, err := s.FindByCarrierID(ctx, carrier, carrierID)
	if !errors.Is(err, ErrNotFound) {
		return m, err
	}
	key := boltCarrierKey(carrier, carrierID)
	exp := s.expiry()
	err = s.batch(ctx, "find carrier id or stash orphan", func(tx *bolt.Tx) error {
		m = nil // fn may run again (a batch retried alone)
		now := msU64(time.Now())
		if id := getExpiring(tx, bCarrier, key, now); id != nil {
			if v := getExpiring(tx, bMsg, id, now); v != nil {
				var err error
				m, err = decodeMessage(v)
				return err
			}
		}
		if !final && getExpiring(tx, bOrphan, key, now) != nil {
			return nil // an intermediate receipt never replaces a stashed one (it may be the final)
		}
		return putExpiring(tx, bOrphan, 'o', key, body, exp)
	})
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, ErrNotFound
	}
	return m, nil
}

// StashOrphan implements Store.
func (s *Bolt) StashOrphan(ctx context.Context, carrier, carrierID string, body []byte) error {
	exp := s.expiry()
	return s.batch(ctx, "stash orphan", func(tx *bolt.Tx) error {
		return putExpiring(tx, bOrphan, 'o', boltCarrierKey(carrier, carrierID), body, exp)
	})
}

// TakeOrphan implements Store.
func (s *Bolt) TakeOrphan(ctx context.Context, carrier, carrierID string) ([]byte, error) {
	key := boltCarrierKey(carrier, carrierID)
	var body []byte
	err := s.batch(ctx, "take orphan", func(tx *bolt.Tx) error {
		body = nil
		v := getExpiring(tx, bOrphan, key, msU64(time.Now()))
		if v == nil {
			return nil
		}
		body = append([]byte{}, v...)
		return tx.Bucket(bOrphan).Delete(key)
	})
	if err == nil && body == nil {
		err = ErrNotFound
	}
	return body, err
}

// AddDelivery implements Store. When d.ID is empty the store assigns one (a
// decimal counter shared by all accounts) and sets d.ID. Adding an id that
// is already pending replaces its body and keeps its place.
func (s *Bolt) AddDelivery(ctx context.Context, d *Delivery, m *Message) error {
	var menc []byte
	exp := s.expiry()
	if m != nil {
		menc = encodeMessage(m)
	}
	var id string
	err := s.batch(ctx, "add delivery for "+d.Account, func(tx *bolt.Tx) error {
		root := tx.Bucket(bDeliv)
		list, err := root.CreateBucketIfNotExists([]byte(d.Account))
		if err != nil {
			return err
		}
		idx, err := tx.Bucket(bDelivIdx).CreateBucketIfNotExists([]byte(d.Account))
		if err != nil {
			return err
		}
		id = d.ID
		var seqKey []byte
		if id != "" {
			seqKey = idx.Get([]byte(id))
		}
		if seqKey == nil {
			seq, err := root.NextSequence()
			if err != nil {
				return err
			}
			if id == "" {
				id = strconv.FormatUint(seq, 10)
			}
			seqKey = u64(seq)
			if err := idx.Put([]byte(id), seqKey); err != nil {
				return err
			}
		}
		stored := *d
		stored.ID = id
		if err := list.Put(bytes.Clone(seqKey), encodeDelivery(&stored)); err != nil {
			return err
		}
		if m != nil {
			return putMessageTx(tx, m, menc, exp)
		}
		return nil
	})
	if err == nil {
		d.ID = id
	}
	return err
}

// PendingDeliveries implements Store; max <= 0 reads all.
func (s *Bolt) PendingDeliveries(ctx context.Context, account string, max int) ([]*Delivery, error) {
	var out []*Delivery
	err := s.view("pending deliveries for "+account, func(tx *bolt.Tx) error {
		out = nil
		list := tx.Bucket(bDeliv).Bucket([]byte(account))
		if list == nil {
			return nil
		}
		c := list.Cursor()
		for k, v := c.First(); k != nil && (max <= 0 || len(out) < max); k, v = c.Next() {
			d, err := decodeDelivery(v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// CountDeliveries implements Store.
func (s *Bolt) CountDeliveries(ctx context.Context, account string) (int, error) {
	n := 0
	err := s.view("count deliveries for "+account, func(tx *bolt.Tx) error {
		n = 0
		if idx := tx.Bucket(bDelivIdx).Bucket([]byte(account)); idx != nil {
			n = idx.Stats().KeyN
		}
		return nil
	})
	return n, err
}

// AckDelivery implements Store; acking an unknown id is not an error.
func (s *Bolt) AckDelivery(ctx context.Context, account, id string) error {
	return s.batch(ctx, "ack delivery "+id, func(tx *bolt.Tx) error {
		idx := tx.Bucket(bDelivIdx).Bucket([]byte(account))
		if idx == nil {
			return nil
		}
		seq := idx.Get([]byte(id))
		if seq == nil {
			return nil
		}
		seq = bytes.Clone(seq)
		if err := idx.Delete([]byte(id)); err != nil {
			return err
		}
		return tx.Bucket(bDeliv).Bucket([]byte(account)).Delete(seq)
	})
}

func queueKey(pri byte, enqMS uint64, id string) []byte {
	k := make([]byte, 0, 9+len(id))
	k = append(k, 3-clampPriority(pri))
	k = binary.BigEndian.AppendUint64(k, enqMS)
	return append(k, id...)
}

// removeQueued deletes id from the queue buckets; it returns id's old
// queue key (nil if it was not queued), valid after tx.
func removeQueued(tx *bolt.Tx, id []byte) ([]byte, error) {
	qk := tx.Bucket(bQueueIdx).Get(id)
	if qk == nil {
		return nil, nil
	}
	qk = bytes.Clone(qk)
	for _, err := range []error{
		tx.Bucket(bQueue).Delete(qk),
		tx.Bucket(bQueueIdx).Delete(id),
		tx.Bucket(bLease).Delete(id),
	} {
		if err != nil {
			return nil, err
		}
	}
	return qk, nil
}

func putQueued(tx *bolt.Tx, id, qk []byte, due uint64) error {
	if err := tx.Bucket(bQueue).Put(qk, u64(due)); err != nil {
		return err
	}
	return tx.Bucket(bQueueIdx).Put(id, qk)
}

// EnqueueModem implements Store. Enqueueing an id already queued (or
// claimed) puts it back as new.
func (s *Bolt) EnqueueModem(ctx context.Context, id string, priority byte, due time.Time) error {
	now := msU64(time.Now())
	return s.batch(ctx, "enqueue "+id, func(tx *bolt.Tx) error {
		if _, err := removeQueued(tx, []byte(id)); err != nil {
			return err
		}
		return putQueued(tx, []byte(id), queueKey(priority, now, id), msU64(due))
	})
}

// ClaimModem implements Store: it walks the queue from the best entry and
// leases the first one that is due and not leased (or whose lease passed).
func (s *Bolt) ClaimModem(ctx context.Context, worker string, lease time.Duration) (string, error) {
	var id string
	err := s.batch(ctx, "claim for "+worker, func(tx *bolt.Tx) error {
		id = ""
		now := msU64(time.Now())
		leases := tx.Bucket(bLease)
		c := tx.Bucket(bQueue).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) < 9 || len(v) < 8 || binary.BigEndian.Uint64(v) > now {
				continue
			}
			cand := k[9:]
			if l := leases.Get(cand); len(l) >= 8 && binary.BigEndian.Uint64(l) > now {
				continue
			}
			val := append(u64(now+uint64(max(lease.Milliseconds(), 1))), worker...)
			id = string(cand)
			return leases.Put([]byte(id), val)
		}
		return nil
	})
	if err == nil && id == "" {
		err = ErrEmpty
	}
	return id, err
}

// AckModem implements Store; acking an unknown id is not an error.
func (s *Bolt) AckModem(ctx context.Context, id string) error {
	return s.batch(ctx, "ack modem "+id, func(tx *bolt.Tx) error {
		_, err := removeQueued(tx, []byte(id))
		return err
	})
}

// ReleaseModem implements Store; ErrNotFound if id is not queued. The entry
// keeps its priority and age.
func (s *Bolt) ReleaseModem(ctx context.Context, id string, due time.Time) error {
	var found bool
	err := s.batch(ctx, "release "+id, func(tx *bolt.Tx) error {
		qk, err := removeQueued(tx, []byte(id))
		found = qk != nil
		if qk == nil || err != nil {
			return err
		}
		return putQueued(tx, []byte(id), qk, msU64(due))
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return err
}

// ModemQueue implements Store.
func (s *Bolt) ModemQueue(ctx context.Context) (int, time.Time, error) {
	var depth int
	var oldest uint64
	err := s.view("modem queue", func(tx *bolt.Tx) error {
		depth = tx.Bucket(bQueueIdx).Stats().KeyN
		oldest = 0
		c := tx.Bucket(bQueue).Cursor()
		for p := byte(0); p <= 3; p++ { // the oldest of each priority's first entry
			k, _ := c.Seek([]byte{p})
			if len(k) >= 9 && k[0] == p {
				if t := binary.BigEndian.Uint64(k[1:9]); oldest == 0 || t < oldest {
					oldest = t
				}
			}
		}
		return nil
	})
	if err != nil || oldest == 0 {
		return depth, time.Time{}, err
	}
	return depth, time.UnixMilli(int64(oldest)), nil
}

// Ping implements Store.
func (s *Bolt) Ping(ctx context.Context) error {
	return s.view("ping", func(tx *bolt.Tx) error { return nil })
}

// Bolt meta bucket (created on first use): "probe" -> unix ms of the last
// ProbeWrite.
var (
	bMeta     = []byte("meta")
	metaProbe = []byte("probe")
)

// ProbeWrite implements Store: an update of one fixed key through the
// group-commit writer, answered once committed and fsynced like every
// write.
func (s *Bolt) ProbeWrite(ctx context.Context) error {
	return s.batch(ctx, "probe write", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return err
		}
		return b.Put(metaProbe, u64(msU64(time.Now())))
	})
}

// Close stops the sweeper, commits the writes already queued (later ones
// get ErrClosed) and closes the file.
func (s *Bolt) Close() error {
	var err error
	s.once.Do(func() {
		s.asyncMu.Lock()
		s.asyncClosed = true
		s.asyncMu.Unlock()
		close(s.stop)
		<-s.done
		<-s.wdone
		<-s.cdone
		err = s.closeErr // the final apply's
		if s.wal != nil {
			if cerr := s.wal.file.close(); err == nil {
				err = cerr
			}
		}
		if cerr := s.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// sweepByID deletes, up to max, the expired message records in m (with
// their carrier id links) that have IDGen ids, walking m in id order from
// from (nil: the first key). It stops at the first id made less than the
// TTL ago: every record from there on expires later (a record's expiry is
// its last write's time plus the TTL, and no write precedes the making of
// its message). Records still alive before that point (rewritten later)
// are stepped over; the walk looks at no more than 4*max of them in one
// round and returns where the next round goes on (nil: from the start).
func sweepByID(tx *bolt.Tx, now, ttl uint64, max int, from []byte) (int, []byte, error) {
	c := tx.Bucket(bMsg).Cursor()
	k, v := c.First()
	if from != nil {
		k, v = c.Seek(from)
	}
	var dead, links [][]byte
	var next []byte
	for looked := 0; k != nil; k, v = c.Next() {
		if looked++; looked > 4*max || len(dead) >= max {
			next = bytes.Clone(k)
			break
		}
		made, ok := idMillis(k)
		if !ok {
			continue // indexed in x
		}
		if made+ttl > now {
			break
		}
		if len(v) < 8 || !expired(binary.BigEndian.Uint64(v), now) {
			continue
		}
		dead = append(dead, bytes.Clone(k))
		if m, err := decodeMessage(v[8:]); err == nil && m.CarrierID != "" {
			links = append(links, boltCarrierKey(m.Carrier, m.CarrierID))
		}
	}
	mb, cb := tx.Bucket(bMsg), tx.Bucket(bCarrier)
	for _, k := range dead {
		if err := mb.Delete(k); err != nil {
			return 0, from, err
		}
	}
	for _, k := range links {
		// Only if expired: the carrier may have reused the id for a newer
		// message, whose link is still alive.
		if v := cb.Get(k); len(v) >= 8 && expired(binary.BigEndian.Uint64(v), now) {
			if err := cb.Delete(k); err != nil {
				return 0, from, err
			}
		}
	}
	return len(dead), next, nil
}

// sweeper deletes expired records every interval until Close.
func (s *Bolt) sweeper(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if n, err := s.sweep(); err != nil && !errors.Is(err, ErrClosed) {
				s.log.Warn("expiry sweep failed", zap.Error(err))
			} else if n > 0 {
				s.log.Debug("expiry sweep", zap.Int("deleted", n))
			}
		}
	}
}

// sweep deletes up to sweepMax expired records and reports how many:
// those indexed in x, then those found by sweepByID. It goes through the
// writer, so it sees the links of the write-ahead log applied first.
func (s *Bolt) sweep() (int, error) {
	n := 0
	// The write function may run more than once (a batch rolled back and
	// run again) or be rolled back: where the next round goes on is kept
	// only once the round committed, else records would be stepped over.
	from, next := s.sweepFrom, s.sweepFrom
	err := s.batch(context.Background(), "expiry sweep", func(tx *bolt.Tx) error {
		n, next = 0, from
		now := msU64(time.Now())
		x := tx.Bucket(bExpiry)
		c := x.Cursor()
		for k, _ := c.First(); k != nil && n < sweepMax; k, _ = c.First() {
			if len(k) < 9 {
				if err := c.Delete(); err != nil {
					return err
				}
				continue
			}
			if binary.BigEndian.Uint64(k[:8]) > now {
				break
			}
			var b []byte
			switch k[8] {
			case 'm':
				b = bMsg
			case 'c':
				b = bCarrier
			case 'o':
				b = bOrphan
			}
			if b != nil {
				key := k[9:]
				// The record may have been rewritten with a later expiry.
				if v := tx.Bucket(b).Get(key); len(v) >= 8 && expired(binary.BigEndian.Uint64(v), now) {
					if err := tx.Bucket(b).Delete(bytes.Clone(key)); err != nil {
						return err
					}
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		if n >= sweepMax || s.ttl <= 0 {
			return nil
		}
		m, after, err := sweepByID(tx, now, uint64(s.ttl.Milliseconds()), sweepMax-n, from)
		n += m
		if err == nil {
			next = after
		}
		return err
	})
	if err == nil {
		s.sweepFrom = next
	}
	return n, err
}
