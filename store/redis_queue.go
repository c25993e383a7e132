package store

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// ModemQueueHead implements Store: the first max of the all-entries zset
// (scored by enqueue time and priority), with each one's due time and
// lease from the waiting and leased zsets, in one pipeline.
func (r *Redis) ModemQueueHead(ctx context.Context, max int) ([]QueueEntry, error) {
	if max <= 0 {
		return nil, nil
	}
	zs, err := r.rdb.ZRangeWithScores(ctx, qAllKey, 0, int64(max-1)).Result()
	if err != nil {
		return nil, wrapRedis("modem queue head", err)
	}
	if len(zs) == 0 {
		return nil, nil
	}
	waits := make([]*redis.FloatCmd, len(zs))
	leases := make([]*redis.FloatCmd, len(zs))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			id, _ := z.Member.(string)
			waits[i] = p.ZScore(ctx, qWaitKey, id)
			leases[i] = p.ZScore(ctx, qLeaseKey, id)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrapRedis("modem queue head", err)
	}
	now := nowMS()
	out := make([]QueueEntry, 0, len(zs))
	for i, z := range zs {
		id, _ := z.Member.(string)
		score := int64(z.Score)
		e := QueueEntry{ID: id, Priority: byte(score % 4), Enqueued: time.UnixMilli(int64(math.Floor(z.Score / 4)))}
		if due, err := waits[i].Result(); err == nil && int64(due) > now {
			e.Due = time.UnixMilli(int64(due))
		}
		if until, err := leases[i].Result(); err == nil && int64(until) > now {
			e.Claimed = true
		}
		out = append(out, e)
	}
	return out, nil
}
