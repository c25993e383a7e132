package store

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keys of the timers (under keyPrefix, so in the {sl} slot):
//
//	t    zset    timer ids, score due ms          none
const timerKey = keyPrefix + "t"

var (
	// KEYS: timers; ARGV: now ms, lease end ms, max.
	claimTimersScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids`)

	// KEYS: all, ready, wait, lease, owners; ARGV: id, worker, lease end ms.
	// 1 renewed, 0 not claimed, -1 claimed by another worker.
	extendScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local owner = redis.call('HGET', KEYS[5], ARGV[1])
if not owner then return 0 end
if owner ~= ARGV[2] then return -1 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1`)
)

// SetTimer implements Timers.
func (r *Redis) SetTimer(ctx context.Context, id string, due time.Time) error {
	return wrapRedis("set timer "+id, r.rdb.ZAdd(ctx, timerKey, redis.Z{Score: float64(due.UnixMilli()), Member: id}).Err())
}

// ClearTimer implements Timers.
func (r *Redis) ClearTimer(ctx context.Context, id string) error {
	return wrapRedis("clear timer "+id, r.rdb.ZRem(ctx, timerKey, id).Err())
}

// ClaimTimers implements Timers in one script.
func (r *Redis) ClaimTimers(ctx context.Context, lease time.Duration, limit int) ([]string, error) {
	now := nowMS()
	until := now + lease.Milliseconds()
	ids, err := claimTimersScript.Run(ctx, r.rdb, []string{timerKey},
		strconv.FormatInt(now, 10), strconv.FormatInt(until, 10), strconv.Itoa(limit)).StringSlice()
	if err != nil {
		return nil, wrapRedis("claim timers", err)
	}
	return ids, nil
}

// PendingTimers implements Timers: the timers' sorted set, highest score
// (latest due) first.
func (r *Redis) PendingTimers(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	ids, err := r.rdb.ZRevRange(ctx, timerKey, 0, int64(limit-1)).Result()
	if err != nil {
		return nil, wrapRedis("pending timers", err)
	}
	return ids, nil
}

// ExtendModem implements Timers in one script: the entry must still be
// queued and claimed last by worker (q:o); it goes (back) to the lease set
// with the new lease end, also when its lease passed and a claim moved it
// to ready meanwhile.
func (r *Redis) ExtendModem(ctx context.Context, id, worker string, lease time.Duration) error {
	until := nowMS() + max(lease.Milliseconds(), 1)
	n, err := extendScript.Run(ctx, r.rdb, qOwnKeys, id, worker, strconv.FormatInt(until, 10)).Int()
	if err != nil {
		return wrapRedis("extend lease "+id, err)
	}
	if n < 0 {
		return ErrClaimed
	}
	return nil
}
