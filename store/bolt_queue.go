package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ModemQueueHead implements Store. The queue bucket is ordered by
// priority first; the oldest entries of all priorities are merged from one
// cursor per priority.
func (s *Bolt) ModemQueueHead(ctx context.Context, max int) ([]QueueEntry, error) {
	var out []QueueEntry
	err := s.view("modem queue head", func(tx *bolt.Tx) error {
		out = nil
		now := msU64(time.Now())
		leases := tx.Bucket(bLease)
		type head struct {
			c    *bolt.Cursor
			k, v []byte
		}
		var heads []*head
		for p := byte(0); p <= 3; p++ {
			c := tx.Bucket(bQueue).Cursor()
			if k, v := c.Seek([]byte{p}); len(k) >= 9 && k[0] == p {
				heads = append(heads, &head{c, k, v})
			}
		}
		for len(out) < max && len(heads) > 0 {
			bi := 0
			for i, h := range heads { // the oldest enqueue time, then the smallest id
				if bytes.Compare(h.k[1:], heads[bi].k[1:]) < 0 {
					bi = i
				}
			}
			h := heads[bi]
			e := QueueEntry{ID: string(h.k[9:]), Priority: 3 - h.k[0],
				Enqueued: time.UnixMilli(int64(binary.BigEndian.Uint64(h.k[1:9])))}
			if len(h.v) >= 8 {
				if due := binary.BigEndian.Uint64(h.v); due > now {
					e.Due = time.UnixMilli(int64(due))
				}
			}
			if l := leases.Get(h.k[9:]); len(l) >= 8 && binary.BigEndian.Uint64(l) > now {
				e.Claimed = true
			}
			out = append(out, e)
			if k, v := h.c.Next(); len(k) >= 9 && k[0] == h.k[0] {
				h.k, h.v = k, v
			} else {
				heads = slices.Delete(heads, bi, bi+1)
			}
		}
		return nil
	})
	return out, err
}
