package proxy

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/redisserver"
)

// Store writes in doubt: a Redis call cut short at its deadline (the
// bounded store step of a carrier's deliver_sm) that Redis applies all the
// same once it goes on. A real redis-server is stopped (SIGSTOP) as the
// write starts and continued once the call has returned its error.

// stallOnce stops Redis before the first armed write of the kind named.
type stallOnce struct {
	store.Store
	srv   *redisserver.Server
	armed atomic.Bool
}

func (s *stallOnce) stall() {
	if s.armed.CompareAndSwap(true, false) {
		s.srv.Pause()
	}
}

func (s *stallOnce) QueueMessage(ctx context.Context, from []store.State, m *store.Message, due time.Time) (bool, error) {
	s.stall()
	return s.Store.QueueMessage(ctx, from, m, due)
}

func (s *stallOnce) FinishMessage(ctx context.Context, from []store.State, m *store.Message, d *store.Delivery) (bool, error) {
	s.stall()
	return s.Store.FinishMessage(ctx, from, m, d)
}

func (s *stallOnce) AddDelivery(ctx context.Context, d *store.Delivery, m *store.Message) error {
	s.stall()
	return s.Store.AddDelivery(ctx, d, m)
}

func startDoubtRedis(t *testing.T) (*redisserver.Server, *store.Redis) {
	t.Helper()
	srv := redisserver.Start(t)
	rs, err := store.NewRedis(context.Background(), srv.URL(), 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	// Warm Redis's script cache, as a running gateway has it (EVALSHA:
	// a stalled EVALSHA of an unknown script would not be applied).
	ctx := context.Background()
	warm := &store.Message{ID: "warm", State: store.StateSent}
	if _, err := rs.FinishMessage(ctx, []store.State{store.StateSent}, warm, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := rs.QueueMessage(ctx, []store.State{store.StateSent}, warm, time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if err := rs.AddDelivery(ctx, &store.Delivery{Account: "warm", Body: []byte("x")}, &store.Message{ID: "warm2"}); err != nil {
		t.Fatal(err)
	}
	return srv, rs
}

// deliverBounded handles a carrier deliver_sm as handleCarrierDeliver
// does, its store step bounded.
func deliverBounded(d *Dispatcher, c *Carrier, sm *ShortMessage, body []byte) uint32 {
	ctx, cancel := context.WithTimeout(context.Background(), deliverStoreWait(c))
	defer cancel()
	return d.carrierDeliver(ctx, c, sm, body)
}

// A failed receipt whose sent -> queued write Redis applies after the call
// timed out: the carrier's resent receipt loses the compare-and-set; the
// message must still have its modem queue entry (it had none: never sent,
// no receipt for the platform).
func TestFailedReceiptWriteInDoubtKeepsTheQueueEntry(t *testing.T) {
	srv, rs := startDoubtRedis(t)
	st := &stallOnce{Store: rs, srv: srv}
	d := newTestDispatcher(t, st)
	NewFailover(d, &fakePool{}, FailoverConfig{ResendFailedReceipts: true}, zap.NewNop())
	c := NewCarrier(config.Carrier{Name: "cm", ResponseTimeout: config.Duration(time.Second)}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C9", 1)
	sm, body := carrierReceipt(t, "C9", "UNDELIV")

	st.armed.Store(true)
	if got := deliverBounded(d, c, sm, body); got != statusRXTAppn {
		t.Fatalf("first copy answered %s, want ESME_RX_T_APPN (the write timed out)", StatusString(got))
	}
	srv.Resume()
	// Redis goes on and applies the write it had read.
	waitCond(t, "the doubtful write applied", func() bool {
		rec, err := rs.GetMessage(context.Background(), m.ID)
		return err == nil && rec.State == store.StateQueued
	})
	// The carrier resends the receipt.
	if got := deliverBounded(d, c, sm, body); got != statusOK {
		t.Fatalf("second copy answered %s, want OK", StatusString(got))
	}
	depth, _, err := rs.ModemQueue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if depth != 1 {
		t.Fatalf("message %s is queued with %d modem queue entries, want 1: never sent by modem", m.ID, depth)
	}
	if _, ids := heldReceipts(t, rs, "acct"); len(ids) != 0 {
		t.Fatalf("receipts held: %v, want none (the modem's outcome goes to the platform)", ids)
	}
}

// An MO message whose write Redis applies after the call timed out: the
// SMSC's resend (it was answered ESME_RX_T_APPN) is answered OK without a
// second delivery, also once the platform has taken the first.
func TestMOWriteInDoubtIsNotDeliveredTwice(t *testing.T) {
	for _, taken := range []bool{false, true} {
		name := "pending"
		if taken {
			name = "taken by the platform"
		}
		t.Run(name, func(t *testing.T) {
			srv, rs := startDoubtRedis(t)
			st := &stallOnce{Store: rs, srv: srv}
			d := newTestDispatcher(t, st)
			d.SetMOAccount("mo")
			c := NewCarrier(config.Carrier{Name: "cm", ResponseTimeout: config.Duration(time.Second)}, nil, zap.NewNop())
			body := goldenSubmit(t, "02 4F60", "")
			sm, err := ParseShortMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			st.armed.Store(true)
			if got := deliverBounded(d, c, sm, body); got != statusRXTAppn {
				t.Fatalf("first copy answered %s, want ESME_RX_T_APPN (the write timed out)", StatusString(got))
			}
			srv.Resume()
			var first []*store.Delivery
			waitCond(t, "the doubtful write applied", func() bool {
				first, err = rs.PendingDeliveries(ctx, "mo", 10)
				return err == nil && len(first) == 1
			})
			if taken {
				if err := rs.AckDelivery(ctx, "mo", first[0].ID); err != nil {
					t.Fatal(err)
				}
			}
			if got := deliverBounded(d, c, sm, body); got != statusOK {
				t.Fatalf("second copy answered %s, want OK", StatusString(got))
			}
			n, err := rs.CountDeliveries(ctx, "mo")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{false: 1, true: 0}[taken]; n != want {
				t.Fatalf("the MO message is held %d times for the platform, want %d: delivered twice", n, want)
			}
			// Normal operation again: the same text sent again by the
			// handset is a new message, not merged.
			if got := deliverBounded(d, c, sm, body); got != statusOK {
				t.Fatalf("third copy answered %s", StatusString(got))
			}
			if n2, _ := rs.CountDeliveries(ctx, "mo"); n2 != n+1 {
				t.Fatalf("an identical MO message in normal operation held %d times, want %d", n2, n+1)
			}
		})
	}
}

// An MO message whose write failed and was not applied is written when the
// SMSC sends it again, once.
func TestMOWriteFailedIsWrittenOnResend(t *testing.T) {
	st := &faultStore{Store: openTestBolt(t)}
	var fail atomic.Bool
	fail.Store(true)
	st.add = func() error {
		if fail.CompareAndSwap(true, false) {
			return errInjected
		}
		return nil
	}
	d := newTestDispatcher(t, st)
	d.SetMOAccount("mo")
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	body := goldenSubmit(t, "02 4F60", "")
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := deliverBounded(d, c, sm, body); got != statusRXTAppn {
		t.Fatalf("first copy answered %s", StatusString(got))
	}
	if got := deliverBounded(d, c, sm, body); got != statusOK {
		t.Fatalf("second copy answered %s", StatusString(got))
	}
	if n, _ := st.CountDeliveries(context.Background(), "mo"); n != 1 {
		t.Fatalf("held %d times, want 1", n)
	}
}

// A Redis killed while nothing goes through the gateway is seen by the
// health check alone: after storeCheckFailsDown failed checks in a row the
// store is failing (spareline_store_up 0, the page); restarted, it is ok
// again (the outage probe's write).
func TestRedisKilledWithNoTrafficMarksTheStoreFailing(t *testing.T) {
	old := storeCheckEvery
	storeCheckEvery = 100 * time.Millisecond
	t.Cleanup(func() { storeCheckEvery = old })
	srv := redisserver.Start(t, redisserver.WithAOF())
	rs, err := store.NewRedis(context.Background(), srv.URL(), 0, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	cfg, err := config.Parse([]byte(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw, binds: 1 } ]
routing: { country_code: "86", preset: cn }
`), "dead.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg, GatewayOptions{Store: rs, Log: zap.NewNop()})
	up := func() float64 { return testutil.ToFloat64(metricStoreUp) }
	state := func() string { return g.storeStatus(statusReads{queueOK: true, heldOK: true}).State }
	waitCond(t, "the store ok at start", func() bool { return up() == 1 && state() == "ok" })

	srv.Kill()
	waitCond(t, "spareline_store_up 0 with no traffic", func() bool { return up() == 0 })
	if s := state(); s != "failing" {
		t.Fatalf("store state %q with Redis dead, want failing", s)
	}
	srv.Restart()
	waitCond(t, "spareline_store_up 1 after the restart", func() bool { return up() == 1 && state() == "ok" })
}
