package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt buckets of the timers, created on first use:
//
//	t   due ms(8) id -> nil   timers, earliest first
//	ti  id -> due ms(8)       each id's timer key
var (
	bTimer    = []byte("t")
	bTimerIdx = []byte("ti")
)

func timerBuckets(tx *bolt.Tx) (byDue, byID *bolt.Bucket, err error) {
	if byDue, err = tx.CreateBucketIfNotExists(bTimer); err != nil {
		return nil, nil, err
	}
	byID, err = tx.CreateBucketIfNotExists(bTimerIdx)
	return byDue, byID, err
}

// putTimerTx sets id's timer at due (unix ms), removing the old one.
func putTimerTx(tx *bolt.Tx, id []byte, due uint64) error {
	byDue, byID, err := timerBuckets(tx)
	if err != nil {
		return err
	}
	if old := byID.Get(id); len(old) == 8 {
		if err := byDue.Delete(append(bytes.Clone(old), id...)); err != nil {
			return err
		}
	}
	if err := byDue.Put(append(u64(due), id...), nil); err != nil {
		return err
	}
	return byID.Put(id, u64(due))
}

// SetTimer implements Timers.
func (s *Bolt) SetTimer(ctx context.Context, id string, due time.Time) error {
	return s.batch(ctx, "set timer "+id, func(tx *bolt.Tx) error { return putTimerTx(tx, []byte(id), msU64(due)) })
}

// ClearTimer implements Timers.
func (s *Bolt) ClearTimer(ctx context.Context, id string) error {
	return s.batch(ctx, "clear timer "+id, func(tx *bolt.Tx) error {
		byDue, byID, err := timerBuckets(tx)
		if err != nil {
			return err
		}
		old := byID.Get([]byte(id))
		if len(old) != 8 {
			return nil
		}
		if err := byDue.Delete(append(bytes.Clone(old), id...)); err != nil {
			return err
		}
		return byID.Delete([]byte(id))
	})
}

// ClaimTimers implements Timers: the earliest due timers, moved to now+lease
// in the same transaction.
func (s *Bolt) ClaimTimers(ctx context.Context, lease time.Duration, limit int) ([]string, error) {
	var ids []string
	err := s.batch(ctx, "claim timers", func(tx *bolt.Tx) error {
		ids = ids[:0] // Batch may run fn again
		byDue, _, err := timerBuckets(tx)
		if err != nil {
			return err
		}
		now := msU64(time.Now())
		c := byDue.Cursor()
		for k, _ := c.First(); k != nil && len(ids) < limit; k, _ = c.Next() {
			if len(k) < 8 || binary.BigEndian.Uint64(k[:8]) > now {
				break
			}
			ids = append(ids, string(k[8:]))
		}
		until := now + uint64(max(lease.Milliseconds(), 0))
		for _, id := range ids { // not while the cursor walks: Put moves keys
			if err := putTimerTx(tx, []byte(id), until); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// PendingTimers implements Timers: the timers by due time, walked from the
// latest, in a read transaction.
func (s *Bolt) PendingTimers(ctx context.Context, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ids []string
	err := s.view("pending timers", func(tx *bolt.Tx) error {
		ids = nil
		byDue := tx.Bucket(bTimer)
		if byDue == nil {
			return nil // no timer was ever set
		}
		c := byDue.Cursor()
		for k, _ := c.Last(); k != nil && len(ids) < limit; k, _ = c.Prev() {
			if len(k) > 8 {
				ids = append(ids, string(k[8:]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// ExtendModem implements Timers: the lease record (lease end, worker) is
// kept until the entry is acked, released or claimed again, so a late
// renewal by the worker that claimed it last still finds it.
func (s *Bolt) ExtendModem(ctx context.Context, id, worker string, lease time.Duration) error {
	return s.batch(ctx, "extend lease "+id, func(tx *bolt.Tx) error {
		leases := tx.Bucket(bLease)
		l := leases.Get([]byte(id))
		if len(l) < 8 || tx.Bucket(bQueueIdx).Get([]byte(id)) == nil {
			return nil // not claimed
		}
		if string(l[8:]) != worker {
			return ErrClaimed // claimed since by another worker
		}
		val := append(u64(msU64(time.Now())+uint64(max(lease.Milliseconds(), 1))), worker...)
		return leases.Put([]byte(id), val)
	})
}
