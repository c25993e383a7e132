package store

import (
	"context"
	"errors"
	"time"
)

// ErrClaimed is returned by ExtendModem when another worker claimed the
// entry since the caller did.
var ErrClaimed = errors.New("store: modem queue entry claimed by another worker")

// Timers are durable due times and lease renewal, for work that must happen
// even if the process that scheduled it is killed.
//
// A timer is a message id with a due time. SetTimer schedules (or moves) it;
// ClearTimer removes it once its work is done. ClaimTimers returns the ids
// whose due time has passed and, in the same atomic step, moves each one
// lease into the future: the caller that claimed it does the work and then
// clears it; if that caller dies first, the timer comes due again when the
// lease passes and another caller (or the restarted one) claims it. A timer
// therefore fires at least once: its work must be idempotent (the failover
// path re-reads the message and acts only on the state it expects).
//
// Timers never expire; they leave only by ClearTimer. One id has at most one
// timer. As for the modem queue, due times are judged by the clock of the
// calling process.
//
// ExtendModem renews the lease of a modem queue entry that worker claimed,
// so that leases can be short (a killed worker's entries come back soon)
// while a long modem send keeps its entry. Both stores judge it the same
// way, by who claimed the entry last:
//   - claimed last by worker: renewed, even when the renewal comes after the
//     lease passed (a stalled renewer): nobody else claimed the entry since,
//     so it is still the worker's, and renewing closes the window in which
//     another worker would take it and send it again;
//   - claimed since by another worker: ErrClaimed, and the other worker's
//     lease is left alone (the caller should expect a duplicate);
//   - not claimed (acked, released, never claimed): a no-op.
//
// worker is the claim name given to ClaimModem (one per gateway instance).
type Timers interface {
	// SetTimer schedules id's timer at due, replacing an earlier one.
	SetTimer(ctx context.Context, id string, due time.Time) error
	// ClearTimer removes id's timer; clearing an absent timer is not an error.
	ClearTimer(ctx context.Context, id string) error
	// ClaimTimers returns up to limit ids whose timers are due, each moved to
	// now+lease in the same atomic step.
	ClaimTimers(ctx context.Context, lease time.Duration, limit int) ([]string, error)
	// PendingTimers lists up to limit ids that have a timer, due or not,
	// the latest due first; it claims and moves nothing. The modem path
	// reads it to find the message a status report is about when the
	// process that sent it is gone (a restart): every message a modem sent
	// that still waits for its report has a receipt timer, and the latest
	// due are the newest sends.
	PendingTimers(ctx context.Context, limit int) ([]string, error)
	// ExtendModem moves the lease end of a modem queue entry claimed last
	// by worker to now+lease; ErrClaimed when another worker claimed it
	// since; a no-op when it is not claimed.
	ExtendModem(ctx context.Context, id, worker string, lease time.Duration) error
}
