package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys of the claims (under keyPrefix, so in the {sl} slot):
//
//	dl:<account>  string  the worker holding the account's deliveries   PX lease
func delivLeaseKey(account string) string { return keyPrefix + "dl:" + account }

var (
	// KEYS: list, hash, lease; ARGV: max, worker, lease ms.
	// Returns {'leased', holder} or {'ok', id, value, id, value...}.
	claimDeliveriesScript = redis.NewScript(`
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[2] then return {'leased', holder} end
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then
  redis.call('DEL', KEYS[3])
  return {'ok'}
end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {'ok'}
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = vals[i]
end
return out`)

	// KEYS: lease; ARGV: worker.
	releaseDeliveriesScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

	// KEYS: msg, index, list, hash, seq.
	// ARGV: msg record, ttl ms, index value ('' = no index), delivery id
	// ('' = assign), delivery record ('' = no delivery), from states...
	// Returns {1, delivery id}, {0, stored state}, {-1} absent, {-2} corrupt.
	//
	// The state is read from the stored record (codec.go, version 1): after
	// the version octet come six length-prefixed fields (ID, Account,
	// Carrier, Source, Dest, Body), two octets (RegDeliv, Priority), then
	// the State string. Lengths are uvarints.
	finishScript = redis.NewScript(casPrelude(6) + casWrite + `
local id = ARGV[4]
if ARGV[5] ~= '' then
  if id == '' then id = tostring(redis.call('INCR', KEYS[5])) end
  if redis.call('HSET', KEYS[4], id, ARGV[5]) == 1 then redis.call('RPUSH', KEYS[3], id) end
end
return {1, id}`)

	// KEYS: msg, index, then the queue's all, ready, wait, lease, owners.
	// ARGV: msg record, ttl ms, index value ('' = no index), message id,
	// all score, ready score, due ms ('' = due now), from states...
	// Returns {1}, {0, stored state}, {-1} absent, {-2} corrupt. The
	// message is written as by finishScript and its id enqueued as by
	// enqueueScript, in the same step.
	queueMessageScript = redis.NewScript(casPrelude(8) + casWrite + `
local id = ARGV[4]
redis.call('ZADD', KEYS[3], ARGV[5], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
redis.call('ZREM', KEYS[6], id)
redis.call('HDEL', KEYS[7], id)
if ARGV[7] == '' then redis.call('ZADD', KEYS[4], ARGV[6], id) else redis.call('ZADD', KEYS[5], ARGV[7], id) end
return {1}`)
)

// casWrite is the write of a compare-and-set script that passed its check
// (casPrelude): the message record (KEYS[1] = ARGV[1]) and, when ARGV[3]
// is not empty, its carrier-id index (KEYS[2] = ARGV[3]), both expiring
// after ARGV[2] ms (0: never).
const casWrite = `local px = tonumber(ARGV[2])
if px > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', px) else redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[3] ~= '' then
  if px > 0 then redis.call('SET', KEYS[2], ARGV[3], 'PX', px) else redis.call('SET', KEYS[2], ARGV[3]) end
end
`

// casPrelude is the start of a compare-and-set script on a message's
// state (finishScript, queueMessageScript): KEYS[1] is the message, the
// states to compare with are ARGV[first] to the last. It returns {-1} when
// the record is absent, {-2} when it is unreadable, {0, stored state} when
// its state is not one of them, and otherwise goes on.
func casPrelude(first int) string {
	return strings.Replace(casPreludeLua, "FIRST", strconv.Itoa(first), 1)
}

const casPreludeLua = `local rec = redis.call('GET', KEYS[1])
if not rec then return {-1} end
local function uvarint(pos)
  local v, mul = 0, 1
  while true do
    local b = string.byte(rec, pos)
    if not b or mul > 2^49 then return nil end
    pos = pos + 1
    v = v + (b % 128) * mul
    if b < 128 then return v, pos end
    mul = mul * 128
  end
end
if string.byte(rec, 1) ~= 1 then return {-2} end
local pos = 2
for _ = 1, 6 do
  local n
  n, pos = uvarint(pos)
  if not n then return {-2} end
  pos = pos + n
end
local n
n, pos = uvarint(pos + 2)
if not n or pos + n - 1 > #rec then return {-2} end
local state = string.sub(rec, pos, pos + n - 1)
local match = false
for i = FIRST, #ARGV do
  if ARGV[i] == state then match = true end
end
if not match then return {0, state} end
`

// ClaimDeliveries implements Claims in one script; the lease is a key
// with a PX expiry, judged by the Redis server's clock.
func (r *Redis) ClaimDeliveries(ctx context.Context, account, worker string, max int, lease time.Duration) ([]*Delivery, error) {
	if max <= 0 || max > maxClaim {
		max = maxClaim
	}
	keys := []string{delivListKey(account), delivHashKey(account), delivLeaseKey(account)}
	vals, err := claimDeliveriesScript.Run(ctx, r.rdb, keys, max, worker, leaseMS(lease)).Slice()
	if err != nil {
		return nil, wrapRedis("claim deliveries of "+account, err)
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf("store: redis claim deliveries of %s: empty script reply", account)
	}
	if tag, _ := vals[0].(string); tag == "leased" {
		return nil, ErrLeased
	}
	return decodeDeliveryPairs(vals[1:])
}

// ReleaseDeliveries implements Claims.
func (r *Redis) ReleaseDeliveries(ctx context.Context, account, worker string) error {
	err := releaseDeliveriesScript.Run(ctx, r.rdb, []string{delivLeaseKey(account)}, worker).Err()
	return wrapRedis("release deliveries of "+account, err)
}

// FinishMessage implements Claims in one script.
func (r *Redis) FinishMessage(ctx context.Context, from []State, m *Message, d *Delivery) (bool, error) {
	acct := m.Account
	if d != nil {
		acct = d.Account
	}
	idx, idxVal := msgKey(m.ID), "" // a key of the same slot when unused
	if m.CarrierID != "" {
		idx, idxVal = carrierKey("c", m.Carrier, m.CarrierID), m.ID
	}
	keys := []string{msgKey(m.ID), idx, delivListKey(acct), delivHashKey(acct), delivSeqKey}
	args := make([]any, 0, 5+len(from))
	args = append(args, encodeMessage(m), r.ttlMS(), idxVal)
	if d != nil {
		stored := *d
		stored.ID = "" // the id is the hash field
		args = append(args, d.ID, encodeDelivery(&stored))
	} else {
		args = append(args, "", "")
	}
	for _, s := range from {
		args = append(args, string(s))
	}
	vals, err := finishScript.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil {
		return false, wrapRedis("finish message "+m.ID, err)
	}
	ok, err := casOutcome(vals, m.ID)
	if ok && d != nil && len(vals) > 1 {
		id, _ := vals[1].(string)
		d.ID = id
	}
	return ok, err
}

// casOutcome reads the first value of a compare-and-set script's answer
// (finishScript, queueMessageScript): 1 done, 0 another state, -1 no such
// record, -2 a record whose state cannot be read.
func casOutcome(vals []any, id string) (bool, error) {
	code, _ := vals[0].(int64)
	switch code {
	case 1:
		return true, nil
	case 0:
		return false, nil
	case -1:
		return false, ErrNotFound
	default:
		return false, &CorruptError{Record: "message", Field: "state", Reason: "unreadable in redis record " + id}
	}
}

// QueueMessage implements Claims in one script.
func (r *Redis) QueueMessage(ctx context.Context, from []State, m *Message, due time.Time) (bool, error) {
	idx, idxVal := msgKey(m.ID), "" // a key of the same slot when unused
	if m.CarrierID != "" {
		idx, idxVal = carrierKey("c", m.Carrier, m.CarrierID), m.ID
	}
	keys := append([]string{msgKey(m.ID), idx}, qOwnKeys...)
	pri := clampPriority(m.Priority)
	now := nowMS()
	dueArg := ""
	if d := due.UnixMilli(); d > now {
		dueArg = strconv.FormatInt(d, 10)
	}
	args := make([]any, 0, 7+len(from))
	args = append(args, encodeMessage(m), r.ttlMS(), idxVal, m.ID,
		strconv.FormatFloat(allScore(pri, now), 'f', 0, 64),
		strconv.FormatFloat(readyScore(pri, now), 'f', 0, 64), dueArg)
	for _, s := range from {
		args = append(args, string(s))
	}
	vals, err := queueMessageScript.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil {
		return false, wrapRedis("queue message "+m.ID, err)
	}
	return casOutcome(vals, m.ID)
}
