// Package store holds spareline's in-flight state behind one interface, with
// two implementations: Redis (go-redis v9 UniversalClient: single node,
// Sentinel or Cluster) and an embedded file store (bbolt) used when no Redis is
// configured. One contract test suite (contract_test.go) runs against both.
//
// What lives here:
//   - messages: every submit_sm the platform got an answer for, keyed by our
//     message id, with the raw submit_sm body as the platform sent it;
//   - the carrier id index: (carrier, carrier message id) -> our id, so that
//     receipts can be rewritten;
//   - orphan receipts: receipts that arrived before their carrier id was
//     linked (a fast carrier), taken back when the link is written;
//   - deliveries: deliver_sm PDUs waiting for an account's receiver session,
//     in arrival order per account;
//   - the modem queue: message ids waiting for the modem pool, highest
//     priority first then oldest, claimed with a lease so that a crashed
//     worker's entries are claimed again.
//
// Every write returns only once it is durable (Redis: acknowledged by the
// server, whose persistence is the operator's choice, see README; bbolt: fsync).
// Records expire after the store's TTL.
//
// # Expiry
//
// Message records, carrier id index entries and orphans expire after the
// store's TTL, counted from their last write. Pending deliveries and modem
// queue entries never expire: they leave only by AckDelivery and AckModem.
// Redis expires keys itself; bbolt checks the expiry on every read and a
// sweeper deletes expired records in the background.
//
// # Modem queue
//
// Entries are ordered by priority_flag (3 first; values above 3 count as 3),
// then by enqueue time (ReleaseModem keeps it; EnqueueModem resets it), then
// by id. ClaimModem leases the best entry that is due and not leased; a
// lease that passes (a crashed worker) makes the entry claimable again.
// Due times and leases are judged by the clock of the process calling the
// store, so gateways sharing a Redis need synchronised clocks (NTP).
//
// # Several gateways on one store
//
// ClaimDeliveries leases an account's held deliveries to one gateway at a
// time (an account lease, renewed while it delivers, dropped when it has
// nothing left, passing by itself when its holder dies), so each receipt is
// sent once and an account's receipts keep their order; the cost is that
// only the holder's receivers of that account are used, and a killed
// holder delays the account by one lease. FinishMessage is a
// compare-and-set on a message's state, so that of two gateways racing for
// one message (a worker and a cancel, a status report and a receipt timer)
// exactly one wins. See claims.go.
//
// # Redis
//
// NewRedis accepts these URL forms:
//
//	redis://[user:password@]host:port[/db][?options]      one server (go-redis ParseURL options)
//	rediss://[user:password@]host:port[/db][?options]     the same over TLS
//	redis-sentinel://[user:password@]host1:port,host2:port/master_name[?db=N&sentinel_password=P]
//	redis-cluster://[user:password@]host1:port,host2:port
//
// In the Sentinel form the password authenticates to the master and
// replicas; sentinel_password, when set, to the sentinels. Errors about a
// URL (*URLError) never show its password.
//
// Every key starts with "spareline:{sl}:". The {sl} hash tag puts all of
// them in one Cluster slot, so each multi-key step (a Lua script or
// MULTI/EXEC) is atomic on Cluster as on one server. The cost: on Cluster
// the whole data set lives on one shard, so Cluster gives failover, not
// write scaling. The in-flight state is small (about 300 octets of Redis
// memory per message) and one Redis primary takes far more writes than the
// SMPP side can produce.
//
// PutMessage and LinkCarrier go through a batching writer: concurrent
// calls are gathered (what is waiting when a writer is free, up to
// RedisOptions.BatchMax, or for BatchWindow) and sent as one MULTI/EXEC
// pipeline; each call returns when its own write is acknowledged.
// Nothing acknowledged is lost if the Redis server runs with appendonly
// yes and appendfsync everysec (at most one second of writes on a power
// loss of the Redis host) or always; CheckPersistence says when it does
// not. A Redis that lost its data all the same (restarted without
// persistence, flushed, failed over to a replica that had not synced) is
// told by its marker key: CheckData (redis_marker.go).
//
// Every call ends when its context's deadline passes, also mid-command
// against a Redis that hangs (go-redis's ContextTimeoutEnabled, see
// redisConfig.client); a command cut short may or may not have run.
//
// # Embedded store
//
// OpenBolt keeps everything in one bbolt file, dir/spareline.db, and a
// write-ahead log of links, dir/spareline.wal. Every write is answered only
// once it is fsynced. One writer goroutine takes all the writes waiting at
// the time (group commit, bolt_write.go), so a write waits for at most the
// batch in progress and its own (a write other than a link also for the rest
// of 2 ms after the previous bbolt commit began, and for a running apply of
// the log, below). A batch of only links
// (LinkCarrier, TryLinkCarrier: the carrier path's one store step per
// message) is appended to the log with one write and one fdatasync, and
// kept in an in-memory overlay that GetMessage and FindByCarrierID read
// first; any other batch is one bbolt transaction that first applies the
// overlay, so every other write sees the store as if each link had been
// committed to bbolt. The overlay is also applied in large batches (by
// count, size or age) by an applier goroutine while the writer goes on
// logging, and at Close; OpenBolt replays what a crash left in the log
// before anything else (bolt_wal.go).
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned when a record does not exist (or has expired).
var ErrNotFound = errors.New("store: not found")

// ErrEmpty is returned by ClaimModem when no entry is due.
var ErrEmpty = errors.New("store: queue empty")

// ErrNoCarrierID is returned by LinkCarrier for a message without a
// carrier id (a caller's mistake: there is nothing to link).
var ErrNoCarrierID = errors.New("store: link: the message has no carrier id")

// State is where a message is in its life.
type State string

// The states of a message.
const (
	StateAccepted  State = "accepted"  // durable, not yet sent anywhere
	StateCarrier   State = "carrier"   // submitted to a carrier, waiting for its answer
	StateSent      State = "sent"      // the carrier accepted it (CarrierID set)
	StateQueued    State = "queued"    // waiting in the modem queue
	StateModem     State = "modem"     // being sent by a modem
	StateModemSent State = "modemsent" // a modem sent it, waiting for a status report
	StateDone      State = "done"      // final receipt produced (or none asked)
	StateFailed    State = "failed"    // rejected with an error status
)

// Message is one platform submit_sm.
type Message struct {
	ID        string    `json:"id"`              // our message id, given to the platform
	Account   string    `json:"acct"`            // the platform account (system_id)
	Carrier   string    `json:"car,omitempty"`   // routed carrier; "" = modem pool
	Source    string    `json:"src,omitempty"`   // source_addr as sent
	Dest      string    `json:"dst"`             // normalised destination
	Body      []byte    `json:"body"`            // submit_sm body (after the 16-octet header), byte for byte
	RegDeliv  byte      `json:"rd,omitempty"`    // registered_delivery
	Priority  byte      `json:"pri,omitempty"`   // priority_flag
	State     State     `json:"st"`              // see State
	CarrierID string    `json:"cid,omitempty"`   // the carrier's message id once accepted
	Attempts  int       `json:"att,omitempty"`   // send attempts so far (carrier and modem)
	Created   time.Time `json:"t"`               // when the platform submitted it
	Expires   time.Time `json:"exp,omitempty"`   // validity end; zero = none
	Note      string    `json:"note,omitempty"`  // last error or outcome, for people
	Modem     string    `json:"modem,omitempty"` // modem that sent it
	ModemRefs []int     `json:"mrs,omitempty"`   // TP-MRs of the parts a modem sent
	FinalStat string    `json:"fst,omitempty"`   // final outcome in receipt words (DELIVRD, UNDELIV, DELETED...); "" while not final
	FinalErr  string    `json:"fer,omitempty"`   // the final outcome's err: code, as the receipt wrote it
	Done      time.Time `json:"done,omitempty"`  // when it reached its final state; zero while not final
	// CarrierMsgID is the carrier's message_id exactly as its
	// submit_sm_resp wrote it, when that differs from CarrierID (the form
	// receipts are matched by: a decimal id without leading zeros, or
	// converted by the carrier's receipt_id): what a cancel_sm relayed to
	// the carrier names. "" when it is CarrierID.
	CarrierMsgID string `json:"cmid,omitempty"`
}

// Delivery is a deliver_sm waiting for an account's receiver session.
type Delivery struct {
	ID      string    `json:"id"`   // unique delivery id (ordered by creation within an account)
	Account string    `json:"acct"` // the account that receives it
	Body    []byte    `json:"body"` // deliver_sm body, already rewritten to our ids
	MsgID   string    `json:"mid,omitempty"`
	Created time.Time `json:"t"`
}

// QueueEntry is one entry of the modem queue (ModemQueueHead).
type QueueEntry struct {
	ID       string
	Priority byte      // 0-3, as EnqueueModem clamped it
	Enqueued time.Time // when it was queued (ReleaseModem keeps it)
	Due      time.Time // not claimable before; zero when due now
	Claimed  bool      // a worker holds it (being sent, or waiting for a modem)
}

// AsyncLinker is implemented by the stores (both of this package) that can
// also take LinkCarrier without making the caller wait: the gateway's
// carrier path calls it where a carrier session's reader goroutine handles
// the submit_sm_resp, which must not block (issue 6: no goroutine waits
// per relayed message).
type AsyncLinker interface {
	// TryLinkCarrier queues LinkCarrier(ctx, m) and reports true, or
	// reports false at once having done nothing (the write queue full, the
	// store closing, batching off). When it reports true, done is called
	// exactly once with what LinkCarrier would have returned, on a
	// goroutine of the store, after the write is durable (or failed), or
	// with ctx.Err() when LinkCarrier would have returned that; done must
	// not block, and m must not change until it is called.
	TryLinkCarrier(ctx context.Context, m *Message, done func(orphan []byte, err error)) bool
}

// Store is the in-flight state. All methods are safe for concurrent use.
type Store interface {
	// PutMessage writes (creates or replaces) a message record. When
	// m.CarrierID is set it also writes the (m.Carrier, m.CarrierID) -> m.ID
	// index entry in the same atomic step.
	PutMessage(ctx context.Context, m *Message) error
	// GetMessage reads a message by our id; ErrNotFound if absent.
	GetMessage(ctx context.Context, id string) (*Message, error)
	// GetMessages reads several messages at once (Redis: one MGET; bbolt:
	// one read transaction): out[i] is ids[i]'s record, nil when it has
	// none. For pages that list messages (the status page's queue head,
	// /message's submit_multi destinations).
	GetMessages(ctx context.Context, ids []string) ([]*Message, error)
	// FindByCarrierID resolves a carrier's message id to our message;
	// ErrNotFound if absent.
	FindByCarrierID(ctx context.Context, carrier, carrierID string) (*Message, error)

	// FindOrStash takes the receipt side of the orphan protocol in one
	// step: it resolves (carrier, carrierID) as FindByCarrierID does and,
	// when it is not linked yet, stashes body as StashOrphan does and
	// returns ErrNotFound; the link then takes the stash (LinkCarrier). As
	// with StashOrphan, then FindByCarrierID, then TakeOrphan, exactly one
	// side gets each receipt, whatever the order. Redis does it in one
	// script (one round trip instead of up to four when the receipt
	// overtakes its link, as it does from SMSCs that send ENROUTE or
	// ACCEPTD the moment they answer the submit). There is one stash per
	// carrier id: a final receipt (final) replaces what is stashed, an
	// intermediate one never does (it is dropped, answered all the same),
	// so a final receipt that overtook its link is never lost to an
	// intermediate one that came after it.
	FindOrStash(ctx context.Context, carrier, carrierID string, body []byte, final bool) (*Message, error)

	// LinkCarrier records that m's carrier accepted it, in one atomic step
	// (one Redis transaction through the batching writer; bbolt: one
	// record of its write-ahead log, or one transaction): it writes m, writes the (m.Carrier, m.CarrierID) -> m.ID
	// index entry, and takes (returns and deletes) the receipt stashed by
	// StashOrphan for that carrier id, if one overtook the link. orphan is
	// nil when none was stashed. m.CarrierID must be set.
	//
	// With the receipt side writing first and looking second (StashOrphan,
	// then FindByCarrierID, then TakeOrphan), exactly one side gets each
	// receipt, whatever the order.
	LinkCarrier(ctx context.Context, m *Message) (orphan []byte, err error)

	// StashOrphan keeps a receipt body whose carrier id is not linked yet,
	// in place of any kept before (the gateway stashes through
	// FindOrStash, which keeps a final receipt from being replaced).
	StashOrphan(ctx context.Context, carrier, carrierID string, body []byte) error
	// TakeOrphan returns and deletes a stashed receipt; ErrNotFound if none.
	TakeOrphan(ctx context.Context, carrier, carrierID string) ([]byte, error)

	// AddDelivery appends a deliver_sm for an account. If msgID is
	// non-empty and m is non-nil, the message record is written in the same
	// atomic step (a receipt and the message's final state go together).
	AddDelivery(ctx context.Context, d *Delivery, m *Message) error
	// PendingDeliveries returns up to max of an account's deliveries, oldest
	// first.
	PendingDeliveries(ctx context.Context, account string, max int) ([]*Delivery, error)
	// CountDeliveries is how many deliveries an account has pending.
	CountDeliveries(ctx context.Context, account string) (int, error)
	// AckDelivery removes a delivery once the platform answered it.
	AckDelivery(ctx context.Context, account, id string) error

	// EnqueueModem puts a message id on the modem queue with its priority
	// (SMPP priority_flag 0-3; higher first) and the time it becomes due.
	EnqueueModem(ctx context.Context, id string, priority byte, due time.Time) error
	// ClaimModem takes the best due entry (highest priority, then oldest) for
	// worker, leased for lease; a claimed entry whose lease has passed may be
	// claimed again. ErrEmpty when none is due.
	ClaimModem(ctx context.Context, worker string, lease time.Duration) (string, error)
	// AckModem removes a claimed entry.
	AckModem(ctx context.Context, id string) error
	// ReleaseModem gives a claimed entry back, due at due.
	ReleaseModem(ctx context.Context, id string, due time.Time) error
	// ModemQueue reports the queue's depth and its oldest entry's enqueue time
	// (zero when empty).
	ModemQueue(ctx context.Context) (depth int, oldest time.Time, err error)
	// ModemQueueHead lists up to max entries of the modem queue, oldest
	// first (by enqueue time, then id), claimed ones included: what an
	// operator looks at when the queue grows (the status page).
	ModemQueueHead(ctx context.Context, max int) ([]QueueEntry, error)

	// Ping checks that the store answers (a read: /readyz).
	Ping(ctx context.Context) error
	// ProbeWrite checks that the store takes writes, by a write of its own
	// through the normal write path (Redis: SET of a probe key with a short
	// TTL; bbolt: a tiny update of a fixed key in a meta bucket, committed
	// and fsynced by the group-commit writer). A store can answer Ping and
	// still refuse every write (Redis MISCONF on a full disk, READONLY after
	// a failover, a bbolt file whose commits fail): the dispatcher's outage
	// probe uses this, not Ping.
	ProbeWrite(ctx context.Context) error
	// Close releases the store.
	Close() error

	// Durable timers and lease renewal (timers.go).
	Timers
	// Delivery claims and compare-and-set of message states, for gateways
	// sharing one store (claims.go).
	Claims
}
