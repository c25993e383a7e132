package store

import (
	"context"
	"errors"
	"time"
)

// Claims let several gateway instances share one store without sending
// anything twice.
//
// # Held deliveries: one instance per account at a time
//
// ClaimDeliveries gives an account's pending deliveries (oldest first) to
// one worker at a time: the caller gets the account lease (until now+lease,
// renewed by every claim it makes) and the deliveries, in one atomic step;
// while the lease is another worker's it gets ErrLeased and nothing. A lease
// that passes (a killed instance) lets any worker claim the account, and so
// the deliveries its holder never acknowledged; ReleaseDeliveries hands the
// account back at once (a deliverer with no receiver left, or nothing left
// to send). AckDelivery removes a delivery as before.
//
// Why an account lease rather than a lease per delivery: the platform sees
// an account's receipts in the order they were produced, batch after batch,
// whichever instance sends them, and one claim renews everything it holds.
// The cost: while one instance holds an account, the others' receivers of
// that account stay idle (the holder spreads the deliveries over its own
// receivers), and when an instance dies its account waits out the lease. A
// holder that stalls past its lease (no renewal reached the store) may see
// its unacknowledged deliveries sent again by another instance: at least
// once, never lost. The Redis lease is judged by the Redis server's clock;
// the bbolt one by the process's (one process per file anyway).
//
// # Final states: compare-and-set
//
// FinishMessage writes a message (and, when d is not nil, appends its
// deliver_sm) only if the stored message is in one of the given states, in
// one atomic step (a Lua script in Redis, one transaction in bbolt). Every
// transition that two instances could race for goes through it: a queue
// worker taking a message (queued -> modem), cancel_sm (queued -> done), a
// final receipt (modemsent -> done, from a status report or the receipt
// timer; sent -> done, from a carrier's receipt). Exactly one of the racers wins; the others see ok false and leave
// the message alone.
type Claims interface {
	// ClaimDeliveries leases account to worker for lease and returns up to
	// max of its pending deliveries, oldest first (max <= 0 or above 1000
	// reads 1000). ErrLeased when another worker's lease has not passed.
	// With nothing pending the lease is dropped and the list is empty.
	ClaimDeliveries(ctx context.Context, account, worker string, max int, lease time.Duration) ([]*Delivery, error)
	// ReleaseDeliveries drops worker's lease on account; a no-op when the
	// lease is not worker's.
	ReleaseDeliveries(ctx context.Context, account, worker string) error
	// FinishMessage writes m, and appends d (when not nil; an empty d.ID is
	// assigned and set as by AddDelivery), only if the stored record of m.ID
	// is in one of from. ok reports whether it wrote. ErrNotFound when the
	// record does not exist (or expired).
	FinishMessage(ctx context.Context, from []State, m *Message, d *Delivery) (ok bool, err error)
	// QueueMessage writes m and puts m.ID on the modem queue (as
	// EnqueueModem(m.ID, m.Priority, due) does), only if the stored record
	// of m.ID is in one of from, in one atomic step: the winner of the
	// compare-and-set never leaves the message queued without its queue
	// entry, also when the call reports an error after the store applied
	// it (a Redis call cut short at its deadline). ok reports whether it
	// wrote; ErrNotFound when the record does not exist (or expired).
	QueueMessage(ctx context.Context, from []State, m *Message, due time.Time) (ok bool, err error)
}

// ErrLeased is returned by ClaimDeliveries while another worker holds the
// account.
var ErrLeased = errors.New("store: account leased by another worker")

// maxClaim is ClaimDeliveries' largest page.
const maxClaim = 1000

// leaseMS is a lease in whole milliseconds, at least one.
func leaseMS(lease time.Duration) int64 { return max(lease.Milliseconds(), 1) }
