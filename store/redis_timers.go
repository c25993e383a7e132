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

// ExtendModem implements Timers: ZADD XX changes the lease end only while
// the entry is in the lease set.
func (r *Redis) ExtendModem(ctx context.Context, id string, lease time.Duration) error {
	until := nowMS() + max(lease.Milliseconds(), 1)
	return wrapRedis("extend lease "+id, r.rdb.ZAddXX(ctx, qLeaseKey, redis.Z{Score: float64(until), Member: id}).Err())
}
