package proxy

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/smscsim"
)

// failingPool is a modem pool whose one modem is up but cannot send: every
// send fails with a temporary error (+CMS ERROR: 331, no network service).
type failingPool struct {
	fakePool
	sends atomic.Int32
}

func (p *failingPool) Send(context.Context, string, sms.Submit) (*modem.Sent, error) {
	p.sends.Add(1)
	return nil, &modem.SendError{Code: 331, Err: errors.New("at: +CMS ERROR: 331 (no network service)")}
}

// A message queued because its carrier was down, whose modem send then
// failed with a temporary error, goes back to its carrier at the next
// attempt once the carrier is up again: it is not retried on the modem
// until the modem can send. The failed send must not erase why it was
// queued.
func TestModemFailedMessageReturnsToRecoveredCarrier(t *testing.T) {
	smsc, err := smscsim.Start(smscsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	st := openTestBolt(t)
	health := NewHealth(3, time.Hour, zap.NewNop())
	up := make(chan struct{})
	health.OnChange = func(carrier string, _, to CarrierState, _ string) {
		if carrier == "cm" && to != StateDown {
			close(up) // once: the carrier is started once and never goes down here
		}
	}
	c := NewCarrier(config.Carrier{Name: "cm", Address: smsc.Addr(), Binds: 1, Window: 8,
		EnquireLink:     config.Duration(10 * time.Second),
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		health, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: st, Carriers: []*Carrier{c}, Health: health})
	t.Cleanup(func() { cancel(); c.Stop(); d.Wait() })
	pool := &failingPool{}
	fo := NewFailover(d, pool, FailoverConfig{}, zap.NewNop())

	// The carrier is down (not started): the worker tries the modem, which fails.
	m, id := queuedForModem(t, st, d, fo)
	fo.process(ctx, id)
	if n := pool.sends.Load(); n != 1 {
		t.Fatalf("modem sends %d, want 1 while the carrier is down", n)
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateQueued {
		t.Fatalf("record after the failed send: %+v, %v; want queued", got, err)
	}
	if !strings.Contains(got.Note, "331") {
		t.Errorf("note %q: want the modem's error kept for people", got.Note)
	}

	// The carrier comes back; the entry comes due again.
	c.Start(ctx)
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		t.Fatal("carrier never bound")
	}
	if err := st.ReleaseModem(ctx, id, time.Now()); err != nil {
		t.Fatal(err)
	}
	again, err := st.ClaimModem(ctx, fo.config().Worker, time.Minute)
	if err != nil || again != id {
		t.Fatalf("ClaimModem = %q, %v; want %s", again, err, id)
	}
	fo.process(ctx, again)

	if n := smsc.Stats().Submits; n != 1 {
		t.Fatalf("carrier got %d submits, want 1: the message goes back to its recovered carrier", n)
	}
	if n := pool.sends.Load(); n != 1 {
		t.Fatalf("modem sends %d, want still 1: a message its carrier took is not sent by modem", n)
	}
	got, err = st.GetMessage(ctx, m.ID)
	// sent, or done already if the simulator's receipt came first.
	if err != nil || (got.State != store.StateSent && got.State != store.StateDone) || got.CarrierID == "" {
		t.Fatalf("record %+v, %v; want sent with the carrier's id (or done by its receipt)", got, err)
	}
	if depth, _, err := st.ModemQueue(ctx); err != nil || depth != 0 {
		t.Fatalf("modem queue depth %d, %v; want 0 (acked)", depth, err)
	}
}

// The queue reason survives any number of failed modem sends, and only
// "down" and "route" send a message back to its carrier.
func TestQueueReasonSurvivesModemErrors(t *testing.T) {
	for _, tc := range []struct {
		reason string
		back   bool
	}{
		{"down", true},
		{"route", true},
		{"timeout, possible duplicate", false},
		{"timeout, held", false},
		{"lost, possible duplicate", false},
		{"carrier receipt UNDELIV", false},
	} {
		note := tc.reason
		for i := range 3 {
			if got := returnsToCarrier(note); got != tc.back {
				t.Errorf("reason %q after %d modem errors (note %q): returnsToCarrier = %v, want %v",
					tc.reason, i, note, got, tc.back)
			}
			note = modemFailedNote(note, errors.New("modem pool: temporary send failure: +CMS ERROR: 331"))
		}
		if queueReason(note) != tc.reason || strings.Count(note, lastModemError) != 1 {
			t.Errorf("note %q: want reason %q and one last modem error", note, tc.reason)
		}
	}
}
