package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

var _ Store = (*Redis)(nil)

// ErrClosed is returned by calls made on (or waiting in) a closed store.
var ErrClosed = errors.New("store: closed")

// Every key starts with keyPrefix; the {sl} hash tag puts them all in one
// Cluster slot, so that every script and MULTI may touch any of them.
const keyPrefix = "spareline:{sl}:"

// Redis keys (all under keyPrefix):
//
//	m:<id>                  string  encoded Message                     TTL
//	c:<len>:<carrier>:<cid> string  our id                              TTL
//	o:<len>:<carrier>:<cid> string  orphan receipt body                 TTL
//	d:<account>             list    delivery ids in arrival order       none
//	dh:<account>            hash    delivery id -> encoded Delivery     none
//	dseq                    string  delivery id counter                 none
//	q:e                     zset    every queued id, score enq_ms*4+pri  none
//	q:r                     zset    due ids, score (3-pri)*1e13+enq_ms   none
//	q:w                     zset    not-yet-due ids, score due_ms        none
//	q:l                     zset    leased ids, score lease end ms       none
//	q:o                     hash    queued id -> worker that claimed it last  none
//	probe                   string  ProbeWrite's key                     10 s
//	marker                  string  the store's identity (CheckData)     none
//
// The carrier name is length-prefixed so that no carrier name or id can
// make two (carrier, id) pairs share a key.
func msgKey(id string) string { return keyPrefix + "m:" + id }
func carrierKey(kind, carrier, cid string) string {
	return keyPrefix + kind + ":" + strconv.Itoa(len(carrier)) + ":" + carrier + ":" + cid
}
func delivListKey(account string) string { return keyPrefix + "d:" + account }
func delivHashKey(account string) string { return keyPrefix + "dh:" + account }

const (
	delivSeqKey  = keyPrefix + "dseq"
	qAllKey      = keyPrefix + "q:e"
	qReadyKey    = keyPrefix + "q:r"
	qWaitKey     = keyPrefix + "q:w"
	qLeaseKey    = keyPrefix + "q:l"
	qOwnerKey    = keyPrefix + "q:o" // hash, not a zset: never in qKeys' ZREM loops
	probeKey     = keyPrefix + "probe"
	maxPending   = 1000 // PendingDeliveries' largest page (Lua unpack limit)
	promoteLimit = 1000 // entries moved to ready per claim, to bound the script's run time
)

// readyScore orders due entries: higher priority first, then older.
func readyScore(pri byte, enqMS int64) float64 { return float64(3-int64(pri))*1e13 + float64(enqMS) }

// allScore orders all entries by enqueue time and carries the priority.
func allScore(pri byte, enqMS int64) float64 { return float64(enqMS*4 + int64(pri)) }

func clampPriority(p byte) byte { return min(p, 3) }

var (
	// KEYS: list, hash, seq [, msg [, index]]; ARGV: id, delivery, msg, ttl ms, msg id
	addDeliveryScript = redis.NewScript(`
local id = ARGV[1]
if id == '' then id = tostring(redis.call('INCR', KEYS[3])) end
if redis.call('HSET', KEYS[2], id, ARGV[2]) == 1 then redis.call('RPUSH', KEYS[1], id) end
local px = tonumber(ARGV[4])
if #KEYS >= 4 then
  if px > 0 then redis.call('SET', KEYS[4], ARGV[3], 'PX', px) else redis.call('SET', KEYS[4], ARGV[3]) end
end
if #KEYS >= 5 then
  if px > 0 then redis.call('SET', KEYS[5], ARGV[5], 'PX', px) else redis.call('SET', KEYS[5], ARGV[5]) end
end
return id`)

	// KEYS: list, hash; ARGV: max. Returns id, value, id, value...
	pendingScript = redis.NewScript(`
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {} end
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = vals[i]
end
return out`)

	// KEYS: index; ARGV: message key prefix. The message key is built in
	// the script; it carries the same hash tag as KEYS[1], so it is in the
	// same Cluster slot.
	findScript = redis.NewScript(`
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)`)

	// KEYS: index, orphan; ARGV: message key prefix, receipt body, TTL in
	// ms (0 = none), "1" for a final receipt. findScript, and when it
	// finds nothing, the orphan set in the same step: a link (LinkCarrier's
	// transaction, which takes the orphan) is either before it, and found,
	// or after it, and takes it. An intermediate receipt never replaces a
	// stashed one (it may be the final: one orphan per carrier id).
	findOrStashScript = redis.NewScript(`
local id = redis.call('GET', KEYS[1])
if id then
  local rec = redis.call('GET', ARGV[1] .. id)
  if rec then return rec end
end
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return false end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
return false`)

	// KEYS: all, ready, wait, lease; ARGV: id, all score, ready score, due ms or '' when due now.
	enqueueScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
if ARGV[4] == '' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) else redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
return 1`)

	// KEYS: all, ready, wait, lease, owners; ARGV: now ms, lease end ms,
	// promote limit, worker. A passed lease moves its entry back to ready
	// but keeps its owner, so that a late ExtendModem by that owner finds
	// it (timers.go).
	claimScript = redis.NewScript(`
local function ready(id)
  local s = redis.call('ZSCORE', KEYS[1], id)
  if not s then return end
  s = tonumber(s)
  local pri = s % 4
  local enq = (s - pri) / 4
  redis.call('ZADD', KEYS[2], string.format('%.0f', (3 - pri) * 1e13 + enq), id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  redis.call('ZREM', KEYS[3], id)
  ready(id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  redis.call('ZREM', KEYS[4], id)
  ready(id)
end
while true do
  local top = redis.call('ZPOPMIN', KEYS[2])
  if #top == 0 then return false end
  if redis.call('ZSCORE', KEYS[1], top[1]) then
    redis.call('ZADD', KEYS[4], ARGV[2], top[1])
    redis.call('HSET', KEYS[5], top[1], ARGV[4])
    return top[1]
  end
end`)

	// KEYS: all, ready, wait, lease, owners; ARGV: id, due ms or '' when due now.
	releaseScript = redis.NewScript(`
redis.call('HDEL', KEYS[5], ARGV[1])
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[2] == '' then
  s = tonumber(s)
  local pri = s % 4
  redis.call('ZADD', KEYS[2], string.format('%.0f', (3 - pri) * 1e13 + (s - pri) / 4), ARGV[1])
else
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
end
return 1`)
)

var qKeys = []string{qAllKey, qReadyKey, qWaitKey, qLeaseKey}

// qOwnKeys are qKeys and the claim owners (KEYS[5] of the queue scripts).
var qOwnKeys = []string{qAllKey, qReadyKey, qWaitKey, qLeaseKey, qOwnerKey}

// RedisOptions tunes a Redis store. The zero value is valid: no expiry,
// batching with the defaults.
type RedisOptions struct {
	// TTL is the life of message records, index entries and orphans; 0 =
	// they never expire.
	TTL time.Duration
	// NoBatch sends every PutMessage on its own instead of through the
	// batching writer.
	NoBatch bool
	// BatchWindow is how long the batching writer waits for more writes
	// after the first one of a batch; 0 = send what is already waiting,
	// without waiting. Default (negative): 0.
	BatchWindow time.Duration
	// BatchMax is the most writes in one pipeline. Default 128.
	BatchMax int
	// BatchWriters is how many pipelines may be in flight at once.
	// Default 4.
	BatchWriters int
}

// Redis is the Redis store. See the package doc for the URL forms.
type Redis struct {
	rdb  redis.UniversalClient // safe for concurrent use
	opts RedisOptions          // read-only after NewRedis
	log  *zap.Logger

	putc      chan *putReq // PutMessage -> batch writers
	asyncc    chan *putReq // TryLinkCarrier -> batch writers (buffered: its callers do not wait)
	asyncMu   sync.RWMutex // asyncDone is set under it by Close (see TryLinkCarrier)
	asyncDone bool
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // batch writers

	markerMu sync.Mutex // guards marker
	marker   string     // the store's marker as this process last read it (redis_marker.go)
}

// putReq is one PutMessage, LinkCarrier or AckDelivery waiting in the
// batching writer. done is buffered so that the writer never blocks on a
// caller that gave up. The writer sets cmds and take before it sends on
// done.
type putReq struct {
	key            string
	val            []byte
	idxKey, idxVal string // "" when no carrier id
	orphanKey      string // LinkCarrier: the orphan to take in the same transaction
	// AckDelivery (key, val and the others unused): the delivery ackID
	// leaves the account's list ackList and hash ackHash.
	ackList, ackHash, ackID string
	cmds                    [3]redis.Cmder
	n                       int              // commands queued in cmds
	take                    *redis.StringCmd // GETDEL of orphanKey
	done                    chan error
	cb                      func(error)     // replaces done for TryLinkCarrier
	ctx                     context.Context // TryLinkCarrier's: an ended one is not sent
}

// answer gives req its outcome (once).
func (req *putReq) answer(err error) {
	if req.cb != nil {
		req.cb(err)
		return
	}
	req.done <- err
}

// NewRedis connects to the Redis at url (see the package doc for the forms),
// checks that it answers and returns the store. Records expire after ttl
// (0 = never).
func NewRedis(ctx context.Context, url string, ttl time.Duration, log *zap.Logger) (*Redis, error) {
	return NewRedisWithOptions(ctx, url, RedisOptions{TTL: ttl, BatchWindow: -1}, log)
}

// NewRedisWithOptions is NewRedis with tuning options.
func NewRedisWithOptions(ctx context.Context, url string, o RedisOptions, log *zap.Logger) (*Redis, error) {
	cfg, err := parseRedisURL(url)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	if o.BatchWindow < 0 {
		o.BatchWindow = 0
	}
	if o.BatchMax <= 0 {
		o.BatchMax = 128
	}
	if o.BatchWriters <= 0 {
		o.BatchWriters = 4
	}
	// go-redis's own log lines (dial failures while Redis is down...) go to
	// our logger at debug level, not as plain text on stderr: spareline
	// logs the outage itself, once, in its log format.
	redis.SetLogger(redisLogger{log.With(zap.String("component", "go-redis"))})
	rdb := cfg.client()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("store: redis at %s does not answer: %w", strings.Join(cfg.addrs(), ","), err)
	}
	r := &Redis{
		rdb:    rdb,
		opts:   o,
		log:    log.With(zap.Strings("redis", cfg.addrs())),
		putc:   make(chan *putReq),
		asyncc: make(chan *putReq, asyncQueueLen),
		closed: make(chan struct{}),
	}
	// The store's marker, which later checks compare with (CheckData). A
	// failure here is not fatal: the next check takes the marker then.
	switch st, err := r.CheckData(ctx); {
	case err != nil:
		r.log.Warn("cannot read the store's marker; the check that the store keeps its data starts later", zap.Error(err))
	case st == DataNew:
		r.log.Info("redis holds no spareline marker yet: wrote one (a redis spareline had not used, or one that lost its data while no spareline ran)")
	}
	if !o.NoBatch {
		for range o.BatchWriters {
			r.wg.Add(1)
			go r.batchWriter()
		}
	}
	return r, nil
}

// Client returns the underlying go-redis client, for tests and tools that
// inspect the stored state.
func (r *Redis) Client() redis.UniversalClient { return r.rdb }

// ttlMS is the record TTL in milliseconds for scripts (0 = none).
func (r *Redis) ttlMS() string { return strconv.FormatInt(r.opts.TTL.Milliseconds(), 10) }

// PutMessage implements Store. With batching, the write joins the
// pipeline of concurrent writes; it returns when its own write is
// acknowledged. A cancelled ctx returns early, and the write may or may
// not have been applied.
func (r *Redis) PutMessage(ctx context.Context, m *Message) error {
	req := &putReq{key: msgKey(m.ID), val: encodeMessage(m)}
	if m.CarrierID != "" {
		req.idxKey, req.idxVal = carrierKey("c", m.Carrier, m.CarrierID), m.ID
	}
	if err := r.write(ctx, req); err != nil {
		return wrapRedis("put message "+m.ID, err)
	}
	return nil
}

// LinkCarrier implements Store: SET of the message, SET of the index entry
// and GETDEL of the orphan in one MULTI/EXEC, batched with concurrent
// writes. A cancelled ctx returns early: the link may then have been
// written and an orphan taken, which the caller never sees.
func (r *Redis) LinkCarrier(ctx context.Context, m *Message) ([]byte, error) {
	if m.CarrierID == "" {
		return nil, ErrNoCarrierID
	}
	req := &putReq{key: msgKey(m.ID), val: encodeMessage(m),
		idxKey: carrierKey("c", m.Carrier, m.CarrierID), idxVal: m.ID,
		orphanKey: carrierKey("o", m.Carrier, m.CarrierID)}
	if err := r.write(ctx, req); err != nil {
		return nil, wrapRedis("link "+m.ID+" to carrier id "+m.CarrierID, err)
	}
	b, err := req.take.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, wrapRedis("link carrier id", err)
}

// asyncQueueLen bounds the TryLinkCarrier writes waiting for a batch
// writer; beyond it TryLinkCarrier reports false (its caller then waits in
// LinkCarrier on a goroutine of its own).
const asyncQueueLen = 4096

// TryLinkCarrier implements AsyncLinker: LinkCarrier through the batching
// writers without waiting for them.
func (r *Redis) TryLinkCarrier(ctx context.Context, m *Message, done func(orphan []byte, err error)) bool {
	if m.CarrierID == "" || r.opts.NoBatch || ctx.Err() != nil {
		return false
	}
	req := &putReq{key: msgKey(m.ID), val: encodeMessage(m),
		idxKey: carrierKey("c", m.Carrier, m.CarrierID), idxVal: m.ID,
		orphanKey: carrierKey("o", m.Carrier, m.CarrierID), ctx: ctx}
	// One outcome: the transaction's, or ctx's end if that comes first (as
	// LinkCarrier returns ctx.Err() then; the write may still be applied).
	var answered atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		if answered.CompareAndSwap(false, true) {
			done(nil, ctx.Err())
		}
	})
	req.cb = func(err error) {
		stop()
		if !answered.CompareAndSwap(false, true) {
			return
		}
		if err != nil {
			done(nil, wrapRedis("link "+m.ID+" to carrier id "+m.CarrierID, err))
			return
		}
		b, err := req.take.Bytes()
		if errors.Is(err, redis.Nil) {
			done(nil, nil)
			return
		}
		done(b, wrapRedis("link carrier id", err))
	}
	// Close sets asyncDone, then answers whatever is still queued once the
	// writers have stopped: nothing queued here is left unanswered.
	if offer(&r.asyncMu, &r.asyncDone, r.asyncc, req) {
		return true
	}
	stop()
	// Refused, unless ctx ended meanwhile and its outcome was given.
	return !answered.CompareAndSwap(false, true)
}

// takeReq adds req to batch, unless it is TryLinkCarrier's and its ctx has
// ended (answered ctx.Err(), not sent).
func takeReq(batch []*putReq, req *putReq) []*putReq {
	if req.ctx != nil && req.ctx.Err() != nil {
		req.answer(req.ctx.Err())
		return batch
	}
	return append(batch, req)
}

// write sends req through the batching writer (or on its own with
// NoBatch) and waits for its own result.
func (r *Redis) write(ctx context.Context, req *putReq) error {
	if r.opts.NoBatch {
		_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			r.queuePut(ctx, p, req)
			return nil
		})
		return req.result(err)
	}
	req.done = make(chan error, 1)
	select {
	case r.putc <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closed:
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closed:
		return ErrClosed
	}
}

func (r *Redis) queuePut(ctx context.Context, p redis.Pipeliner, req *putReq) {
	req.n = 0
	if req.ackID != "" {
		req.cmds[0] = p.LRem(ctx, req.ackList, 1, req.ackID)
		req.cmds[1] = p.HDel(ctx, req.ackHash, req.ackID)
		req.n = 2
		return
	}
	req.cmds[req.n] = p.Set(ctx, req.key, req.val, r.opts.TTL)
	req.n++
	if req.idxKey != "" {
		req.cmds[req.n] = p.Set(ctx, req.idxKey, req.idxVal, r.opts.TTL)
		req.n++
	}
	if req.orphanKey != "" {
		req.take = p.GetDel(ctx, req.orphanKey)
		req.cmds[req.n] = req.take
		req.n++
	}
}

// result is the outcome of one request of a transaction whose
// TxPipelined error was txErr. A GETDEL finding nothing (redis.Nil) is not
// an error; any other transaction error fails every request of the batch,
// as the transaction may not have been applied.
func (req *putReq) result(txErr error) error {
	if txErr != nil && !errors.Is(txErr, redis.Nil) {
		return txErr
	}
	for _, c := range req.cmds[:req.n] {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// batchWriter owns one batch at a time: it takes a first write, gathers
// what else arrives within the window (or is already waiting) up to
// BatchMax, sends them all in one MULTI/EXEC and answers each caller.
func (r *Redis) batchWriter() {
	defer r.wg.Done()
	batch := make([]*putReq, 0, r.opts.BatchMax)
	var timer *time.Timer
	if r.opts.BatchWindow > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
	}
	for {
		select {
		case req := <-r.putc:
			batch = append(batch, req)
		case req := <-r.asyncc:
			batch = takeReq(batch, req)
		case <-r.closed:
			return
		}
		if timer != nil {
			timer.Reset(r.opts.BatchWindow)
		}
	gather:
		for len(batch) < r.opts.BatchMax {
			if timer == nil {
				select {
				case req := <-r.putc:
					batch = append(batch, req)
				case req := <-r.asyncc:
					batch = takeReq(batch, req)
				default:
					break gather
				}
				continue
			}
			select {
			case req := <-r.putc:
				batch = append(batch, req)
			case req := <-r.asyncc:
				batch = takeReq(batch, req)
			case <-timer.C:
				break gather
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if len(batch) > 0 {
			r.flush(batch)
		}
		clear(batch)
		batch = batch[:0]
	}
}

// flush sends a batch as one transaction and answers each caller with the
// result of its own commands.
func (r *Redis) flush(batch []*putReq) {
	// The callers' contexts differ; the batch has its own deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, req := range batch {
			r.queuePut(ctx, p, req)
		}
		return nil
	})
	if err != nil && strings.HasPrefix(err.Error(), "EXECABORT") {
		// Redis discarded the transaction (nothing of it applied) because
		// it refused a command: at its maxmemory (noeviction) it refuses
		// every command queued in a MULTI, but takes deletions outside
		// one. The acks of deliveries the platform already has go again
		// without a transaction (the body first: an id listed without one
		// is a half-done ack, which readers skip), so that a write refused
		// beside them, or Redis's memory, does not make their deliveries
		// go out again and again.
		var acks []*putReq
		for _, req := range batch {
			if req.ackID != "" {
				acks = append(acks, req)
			}
		}
		if len(acks) > 0 {
			_, aerr := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, req := range acks {
					req.cmds[0] = p.HDel(ctx, req.ackHash, req.ackID)
					req.cmds[1] = p.LRem(ctx, req.ackList, 1, req.ackID)
					req.n = 2
				}
				return nil
			})
			for _, req := range batch {
				if req.ackID != "" {
					req.answer(req.result(aerr))
				} else {
					req.answer(req.result(err))
				}
			}
			return
		}
	}
	for _, req := range batch {
		req.answer(req.result(err))
	}
}

// wrapRedis names the operation in a Redis error; nil stays nil.
func wrapRedis(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("store: redis %s: %w", op, err)
}

// GetMessage implements Store.
func (r *Redis) GetMessage(ctx context.Context, id string) (*Message, error) {
	b, err := r.rdb.Get(ctx, msgKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrapRedis("get message "+id, err)
	}
	return decodeMessage(b)
}

// GetMessages implements Store in one MGET (the keys share a Cluster slot:
// the {sl} hash tag).
func (r *Redis) GetMessages(ctx context.Context, ids []string) ([]*Message, error) {
	out := make([]*Message, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = msgKey(id)
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, wrapRedis("get messages", err)
	}
	for i, v := range vals {
		b, ok := v.(string)
		if !ok { // nil: no such key
			continue
		}
		m, err := decodeMessage([]byte(b))
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// FindByCarrierID implements Store in one round trip.
func (r *Redis) FindByCarrierID(ctx context.Context, carrier, carrierID string) (*Message, error) {
	v, err := findScript.Run(ctx, r.rdb, []string{carrierKey("c", carrier, carrierID)}, keyPrefix+"m:").Text()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrapRedis("find carrier id", err)
	}
	return decodeMessage([]byte(v))
}

// FindOrStash implements Store in one round trip.
func (r *Redis) FindOrStash(ctx context.Context, carrier, carrierID string, body []byte, final bool) (*Message, error) {
	fin := "0"
	if final {
		fin = "1"
	}
	v, err := findOrStashScript.Run(ctx, r.rdb,
		[]string{carrierKey("c", carrier, carrierID), carrierKey("o", carrier, carrierID)},
		keyPrefix+"m:", body, r.ttlMS(), fin).Text()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrapRedis("find carrier id or stash orphan", err)
	}
	return decodeMessage([]byte(v))
}

// StashOrphan implements Store.
func (r *Redis) StashOrphan(ctx context.Context, carrier, carrierID string, body []byte) error {
	return wrapRedis("stash orphan", r.rdb.Set(ctx, carrierKey("o", carrier, carrierID), body, r.opts.TTL).Err())
}

// TakeOrphan implements Store (GETDEL: Redis 6.2 or later).
func (r *Redis) TakeOrphan(ctx context.Context, carrier, carrierID string) ([]byte, error) {
	b, err := r.rdb.GetDel(ctx, carrierKey("o", carrier, carrierID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrapRedis("take orphan", err)
	}
	return b, nil
}

// AddDelivery implements Store in one script. When d.ID is empty the
// store assigns one (a decimal counter shared by all accounts) and sets
// d.ID. Adding an id that is already pending replaces its body and keeps
// its place.
func (r *Redis) AddDelivery(ctx context.Context, d *Delivery, m *Message) error {
	stored := *d
	stored.ID = "" // the id is the hash field
	keys := []string{delivListKey(d.Account), delivHashKey(d.Account), delivSeqKey}
	args := []any{d.ID, encodeDelivery(&stored), "", r.ttlMS(), ""}
	if m != nil {
		keys = append(keys, msgKey(m.ID))
		args[2] = encodeMessage(m)
		if m.CarrierID != "" {
			keys = append(keys, carrierKey("c", m.Carrier, m.CarrierID))
			args[4] = m.ID
		}
	}
	id, err := addDeliveryScript.Run(ctx, r.rdb, keys, args...).Text()
	if err != nil {
		return wrapRedis("add delivery for "+d.Account, err)
	}
	d.ID = id
	return nil
}

// PendingDeliveries implements Store; max <= 0 or above 1000 reads 1000.
func (r *Redis) PendingDeliveries(ctx context.Context, account string, max int) ([]*Delivery, error) {
	if max <= 0 || max > maxPending {
		max = maxPending
	}
	vals, err := pendingScript.Run(ctx, r.rdb, []string{delivListKey(account), delivHashKey(account)}, max).Slice()
	if err != nil {
		return nil, wrapRedis("pending deliveries for "+account, err)
	}
	return decodeDeliveryPairs(vals)
}

// CountDeliveries implements Store: the length of the account's list (an
// entry whose ack is half done counts until it is gone).
func (r *Redis) CountDeliveries(ctx context.Context, account string) (int, error) {
	n, err := r.rdb.LLen(ctx, delivListKey(account)).Result()
	return int(n), wrapRedis("count deliveries for "+account, err)
}

// decodeDeliveryPairs decodes a script's reply of id, body, id, body...
// An id listed with no body (a half-acked entry) is skipped.
func decodeDeliveryPairs(vals []any) ([]*Delivery, error) {
	out := make([]*Delivery, 0, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		id, _ := vals[i].(string)
		v, ok := vals[i+1].(string)
		if !ok {
			continue
		}
		d, err := decodeDelivery([]byte(v))
		if err != nil {
			return nil, err
		}
		d.ID = id
		out = append(out, d)
	}
	return out, nil
}

// AckDelivery implements Store; acking an unknown id is not an error.
// With batching on, it joins the transaction of the writes queued at the
// same moment (the acknowledgements of a batch of receipts answered
// together, the links of submits) instead of a round trip of its own.
func (r *Redis) AckDelivery(ctx context.Context, account, id string) error {
	err := r.write(ctx, &putReq{ackList: delivListKey(account), ackHash: delivHashKey(account), ackID: id})
	return wrapRedis("ack delivery "+id, err)
}

func nowMS() int64 { return time.Now().UnixMilli() }

// EnqueueModem implements Store. Enqueueing an id already queued (or
// claimed) puts it back as new.
func (r *Redis) EnqueueModem(ctx context.Context, id string, priority byte, due time.Time) error {
	pri := clampPriority(priority)
	now := nowMS()
	dueArg := ""
	if d := due.UnixMilli(); d > now {
		dueArg = strconv.FormatInt(d, 10)
	}
	err := enqueueScript.Run(ctx, r.rdb, qOwnKeys, id,
		strconv.FormatFloat(allScore(pri, now), 'f', 0, 64),
		strconv.FormatFloat(readyScore(pri, now), 'f', 0, 64), dueArg).Err()
	return wrapRedis("enqueue "+id, err)
}

// ClaimModem implements Store in one script.
func (r *Redis) ClaimModem(ctx context.Context, worker string, lease time.Duration) (string, error) {
	now := nowMS()
	until := now + max(lease.Milliseconds(), 1)
	id, err := claimScript.Run(ctx, r.rdb, qOwnKeys, now, until, promoteLimit, worker).Text()
	if errors.Is(err, redis.Nil) {
		return "", ErrEmpty
	}
	if err != nil {
		return "", wrapRedis("claim for "+worker, err)
	}
	return id, nil
}

// AckModem implements Store; acking an unknown id is not an error.
func (r *Redis) AckModem(ctx context.Context, id string) error {
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range qKeys {
			p.ZRem(ctx, k, id)
		}
		p.HDel(ctx, qOwnerKey, id)
		return nil
	})
	return wrapRedis("ack modem "+id, err)
}

// ReleaseModem implements Store; ErrNotFound if id is not queued.
func (r *Redis) ReleaseModem(ctx context.Context, id string, due time.Time) error {
	dueArg := ""
	if d := due.UnixMilli(); d > nowMS() {
		dueArg = strconv.FormatInt(d, 10)
	}
	n, err := releaseScript.Run(ctx, r.rdb, qOwnKeys, id, dueArg).Int()
	if err != nil {
		return wrapRedis("release "+id, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ModemQueue implements Store.
func (r *Redis) ModemQueue(ctx context.Context) (int, time.Time, error) {
	var card *redis.IntCmd
	var first *redis.ZSliceCmd
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.ZCard(ctx, qAllKey)
		first = p.ZRangeWithScores(ctx, qAllKey, 0, 0)
		return nil
	})
	if err != nil {
		return 0, time.Time{}, wrapRedis("modem queue", err)
	}
	zs := first.Val()
	if len(zs) == 0 {
		return int(card.Val()), time.Time{}, nil
	}
	return int(card.Val()), time.UnixMilli(int64(math.Floor(zs[0].Score / 4))), nil
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	return wrapRedis("ping", r.rdb.Ping(ctx).Err())
}

// probeTTL bounds the life of ProbeWrite's key.
const probeTTL = 10 * time.Second

// ProbeWrite implements Store: a SET with a short TTL, through the same
// client as every other write, so that MISCONF, READONLY or NOREPLICAS
// answers (Ping still answers) show as an error.
func (r *Redis) ProbeWrite(ctx context.Context) error {
	return wrapRedis("probe write", r.rdb.Set(ctx, probeKey, nowMS(), probeTTL).Err())
}

// Close stops the batching writers (writes still waiting get ErrClosed)
// and closes the client.
func (r *Redis) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.asyncMu.Lock()
		r.asyncDone = true
		r.asyncMu.Unlock()
		close(r.closed)
		r.wg.Wait()
		// The writers have stopped: what TryLinkCarrier queued and they
		// did not take is answered here, not left waiting.
		for {
			select {
			case req := <-r.asyncc:
				req.answer(ErrClosed)
				continue
			default:
			}
			break
		}
		err = r.rdb.Close()
	})
	return err
}

// CheckPersistence reads the server's AOF settings and returns a warning
// for people when an acknowledged write could be lost in a crash of the
// Redis host: AOF off, or appendfsync other than everysec or always. ""
// when the settings are safe or cannot be read (CONFIG disabled, as on
// some managed services).
func (r *Redis) CheckPersistence(ctx context.Context) (warning string) {
	cfg, err := r.rdb.ConfigGet(ctx, "append*").Result()
	if err != nil {
		r.log.Debug("cannot read redis persistence settings", zap.Error(err))
		return ""
	}
	aof, fsync := cfg["appendonly"], cfg["appendfsync"]
	switch {
	case aof == "" && fsync == "":
		return ""
	case aof != "yes":
		return "redis has appendonly=" + aof + ": messages acknowledged to the platform are lost if redis restarts; set appendonly yes and appendfsync everysec"
	case fsync != "everysec" && fsync != "always":
		return "redis has appendfsync=" + fsync + ": messages acknowledged to the platform may be lost if the redis host crashes; set appendfsync everysec"
	}
	return ""
}

// redisLogger routes go-redis's internal log lines to zap at debug level.
type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}
