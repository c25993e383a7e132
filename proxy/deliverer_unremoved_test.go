package proxy

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/routing"
	"github.com/spareline/spareline/store"
)

// ackFailStore fails AckDelivery while fails > 0 (each call counts one).
type ackFailStore struct {
	store.Store
	fails atomic.Int32
	acks  atomic.Int32
}

func (s *ackFailStore) AckDelivery(ctx context.Context, account, id string) error {
	s.acks.Add(1)
	if s.fails.Add(-1) >= 0 {
		return errors.New("OOM command not allowed when used memory > 'maxmemory'")
	}
	return s.Store.AckDelivery(ctx, account, id)
}

// A deliver_sm the platform took whose removal from the store fails (a
// Redis at its maxmemory refused the removal's transaction) is removed
// again, not sent again: the platform got one receipt up to 21 times.
func TestDeliveredButUnremovedIsNotSentAgain(t *testing.T) {
	old := deliveryRetryPause
	deliveryRetryPause = 50 * time.Millisecond
	t.Cleanup(func() { deliveryRetryPause = old })
	router, err := routing.New("86", "cn", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	accts, err := NewAccounts([]config.Account{{SystemID: "platform", Password: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	st := &ackFailStore{Store: openTestBolt(t)}
	st.fails.Store(4)
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st, Router: router})
	ts := &testServer{srv: NewServer(ServerConfig{}, accts, d), disp: d, cancel: cancel}
	t.Cleanup(ts.stop)
	del := hold(t, ts, deliverBody("13900000001", 0, []byte("held once"), nil, "", ""), "")
	p := boundTCP(t, ts, cmdBindReceiver)
	f := p.read()
	if f.ID != cmdDeliverSM {
		t.Fatalf("platform got %+v, want deliver_sm", f.Header)
	}
	p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	// The removal fails 4 times, then succeeds: the delivery leaves the
	// store, and the platform is sent nothing more meanwhile.
	for deadline := time.Now().Add(hangGuard); pendingHas(t, st, del.ID); {
		if time.Now().After(deadline) {
			t.Fatalf("delivery still held after %d removals", st.acks.Load())
		}
		_ = p.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		f, err := readFrame(p.conn, 1<<20, &p.hdr)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		t.Fatalf("platform got %+v, %v after it took the deliver_sm; want nothing more", f.Header, err)
	}
	if n := st.acks.Load(); n < 5 {
		t.Errorf("removal tried %d times, want 5 (4 failures, then the one that took)", n)
	}
}
