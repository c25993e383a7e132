package proxy

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// A carrier's MO messages from one handset are stored (and so delivered)
// in the order they came, even when the store write of the first is slow:
// each was handled in a goroutine of its own, and the second could be
// stored first.
func TestCarrierMOOfOneHandsetStoredInOrder(t *testing.T) {
	st := openTestBolt(t)
	entered, release, second := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	fs := &faultStore{Store: st, add: func() error {
		switch calls.Add(1) {
		case 1:
			close(entered)
			<-release
		case 2:
			close(second)
		}
		return nil
	}}
	d := newTestDispatcher(t, fs)
	d.SetMOAccount("mo")
	waiting := make(chan struct{}, 1)
	testHookMOWait = func() { waiting <- struct{}{} }
	t.Cleanup(func() { testHookMOWait = nil })
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	s, peer := newPair(t, SessionConfig{})
	first := deliverBody("13900000001", 0, []byte("STOP"), nil, "", "")
	next := deliverBody("13900000001", 0, []byte("START"), nil, "", "")
	d.handleCarrierDeliver(c, s, Frame{Header: Header{ID: cmdDeliverSM, Seq: 1}, Body: first})
	<-entered // the first is being written
	d.handleCarrierDeliver(c, s, Frame{Header: Header{ID: cmdDeliverSM, Seq: 2}, Body: next})
	select {
	case <-waiting: // the second waits for the first
	case <-second: // or is written alongside it
	}
	close(release)
	for range 2 {
		if f := peer.read(); f.ID != cmdDeliverSMResp || f.Status != statusOK {
			t.Fatalf("carrier got %+v, want deliver_sm_resp OK", f.Header)
		}
	}
	list, err := st.PendingDeliveries(context.Background(), "mo", 10)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, del := range list {
		sm, err := ParseShortMessage(del.Body)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(sm.Message))
	}
	if want := []string{"STOP", "START"}; !slices.Equal(texts, want) {
		t.Fatalf("MO messages stored in the order %v, want %v", texts, want)
	}
}
