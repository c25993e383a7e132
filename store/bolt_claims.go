package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt bucket of the claims, created on first use:
//
//	dl  account -> lease end ms(8), worker   the account's delivery lease
var bDelivLease = []byte("dl")

// ClaimDeliveries implements Claims in one write transaction.
func (s *Bolt) ClaimDeliveries(ctx context.Context, account, worker string, max int, lease time.Duration) ([]*Delivery, error) {
	if max <= 0 || max > maxClaim {
		max = maxClaim
	}
	var out []*Delivery
	var leased bool
	err := s.batch(ctx, "claim deliveries of "+account, func(tx *bolt.Tx) error {
		out, leased = nil, false // the transaction may run fn again
		leases, err := tx.CreateBucketIfNotExists(bDelivLease)
		if err != nil {
			return err
		}
		now := msU64(time.Now())
		if l := leases.Get([]byte(account)); len(l) >= 8 && binary.BigEndian.Uint64(l) > now && string(l[8:]) != worker {
			leased = true
			return nil
		}
		if list := tx.Bucket(bDeliv).Bucket([]byte(account)); list != nil {
			c := list.Cursor()
			for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
				d, err := decodeDelivery(v)
				if err != nil {
					return err
				}
				out = append(out, d)
			}
		}
		if len(out) == 0 {
			return leases.Delete([]byte(account))
		}
		return leases.Put([]byte(account), append(u64(now+uint64(leaseMS(lease))), worker...))
	})
	if err != nil {
		return nil, err
	}
	if leased {
		return nil, ErrLeased
	}
	return out, nil
}

// ReleaseDeliveries implements Claims.
func (s *Bolt) ReleaseDeliveries(ctx context.Context, account, worker string) error {
	return s.batch(ctx, "release deliveries of "+account, func(tx *bolt.Tx) error {
		leases := tx.Bucket(bDelivLease)
		if leases == nil {
			return nil
		}
		if l := leases.Get([]byte(account)); len(l) >= 8 && string(l[8:]) == worker {
			return leases.Delete([]byte(account))
		}
		return nil
	})
}

// FinishMessage implements Claims in one write transaction.
func (s *Bolt) FinishMessage(ctx context.Context, from []State, m *Message, d *Delivery) (bool, error) {
	menc := encodeMessage(m)
	exp := s.expiry()
	var ok, absent bool
	var id string
	err := s.batch(ctx, "finish message "+m.ID, func(tx *bolt.Tx) error {
		ok, id = false, ""
		var err error
		if ok, absent, err = casMessageTx(tx, from, m, menc, exp); err != nil || !ok {
			ok = false
			return err
		}
		if d != nil {
			if id, err = addDeliveryTx(tx, d); err != nil {
				return err
			}
		}
		ok = true
		return nil
	})
	switch {
	case err != nil:
		return false, err
	case absent:
		return false, ErrNotFound
	}
	if ok && d != nil {
		d.ID = id
	}
	return ok, nil
}

// casMessageTx writes m over the record of its id when that record's state
// is one of from (ok); absent: there is no record. The compare-and-set
// step of FinishMessage and QueueMessage.
func casMessageTx(tx *bolt.Tx, from []State, m *Message, menc []byte, exp uint64) (ok, absent bool, err error) {
	v := getExpiring(tx, bMsg, []byte(m.ID), msU64(time.Now()))
	if v == nil {
		return false, true, nil
	}
	cur, err := decodeMessage(v)
	if err != nil {
		return false, false, err
	}
	if !slices.Contains(from, cur.State) {
		return false, false, nil
	}
	return true, false, putMessageTx(tx, m, menc, exp)
}

// QueueMessage implements Claims in one write transaction.
func (s *Bolt) QueueMessage(ctx context.Context, from []State, m *Message, due time.Time) (bool, error) {
	menc := encodeMessage(m)
	exp := s.expiry()
	now := msU64(time.Now())
	var ok, absent bool
	err := s.batch(ctx, "queue message "+m.ID, func(tx *bolt.Tx) error {
		ok = false
		var err error
		if ok, absent, err = casMessageTx(tx, from, m, menc, exp); err != nil || !ok {
			ok = false
			return err
		}
		ok = false // until the queue entry is written too
		if _, err := removeQueued(tx, []byte(m.ID)); err != nil {
			return err
		}
		if err := putQueued(tx, []byte(m.ID), queueKey(m.Priority, now, m.ID), msU64(due)); err != nil {
			return err
		}
		ok = true
		return nil
	})
	switch {
	case err != nil:
		return false, err
	case absent:
		return false, ErrNotFound
	}
	return ok, nil
}

// addDeliveryTx appends d to its account's deliveries as AddDelivery does
// (an empty d.ID gets the next number; a pending id keeps its place) and
// returns its id. d is not changed.
func addDeliveryTx(tx *bolt.Tx, d *Delivery) (string, error) {
	root := tx.Bucket(bDeliv)
	list, err := root.CreateBucketIfNotExists([]byte(d.Account))
	if err != nil {
		return "", err
	}
	idx, err := tx.Bucket(bDelivIdx).CreateBucketIfNotExists([]byte(d.Account))
	if err != nil {
		return "", err
	}
	id := d.ID
	var seqKey []byte
	if id != "" {
		seqKey = idx.Get([]byte(id))
	}
	if seqKey == nil {
		seq, err := root.NextSequence()
		if err != nil {
			return "", err
		}
		if id == "" {
			id = strconv.FormatUint(seq, 10)
		}
		seqKey = u64(seq)
		if err := idx.Put([]byte(id), seqKey); err != nil {
			return "", err
		}
	}
	stored := *d
	stored.ID = id
	return id, list.Put(bytes.Clone(seqKey), encodeDelivery(&stored))
}
