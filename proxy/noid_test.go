package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/routing"
	"github.com/spareline/spareline/test/smscsim"
)

// noIDCarrier is a carrier "cm" bound to a simulator that accepts every
// submit with an empty message_id, routed for every number, with the
// carrier's log recorded.
func noIDCarrier(t *testing.T) (*Carrier, *Dispatcher, *smscsim.SMSC, *observer.ObservedLogs) {
	t.Helper()
	smsc, err := smscsim.Start(smscsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	smsc.SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{NoID: true} })
	table, err := routing.New("86", "", nil, "cm")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	health := NewHealth(3, 0, zap.NewNop())
	c := NewCarrier(config.Carrier{Name: "cm", Address: smsc.Addr(), Binds: 1, Window: 8,
		EnquireLink:     config.Duration(10 * time.Second),
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		health, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: openTestBolt(t), Router: table, Carriers: []*Carrier{c}, Health: health})
	t.Cleanup(func() { cancel(); c.Stop(); d.Wait() })
	c.Start(ctx)
	waitCond(t, "the carrier bound and up", func() bool { return c.Bound() == 1 && health.State("cm") != StateDown })
	return c, d, smsc, logs
}

const noIDLine = "carrier accepted a message without a message_id"

// A carrier that answers submit_sm_resp OK with no message_id: the platform
// still gets OK with our id, but its receipts can never be matched and
// cancel_sm cannot reach the message; nothing said so. The operator is
// warned, naming the carrier and what to check, at most once a minute
// however many such answers come, with the count since the last line.
func TestCarrierAcceptanceWithoutIDWarnsRateLimited(t *testing.T) {
	c, d, _, logs := noIDCarrier(t)
	ctx := context.Background()
	submit := func() string {
		t.Helper()
		out := d.Submit(ctx, "acct", &ShortMessage{Source: "10690001", Dest: "13800138000", Message: []byte("hi")},
			submitBody(t, "13800138000", 0, []byte("hi")))
		if out.Status != statusOK || out.ID == "" {
			t.Fatalf("submit answered %+v, want OK with our id", out)
		}
		return out.ID
	}
	first := submit()
	for range 4 {
		submit()
	}
	lines := logs.FilterMessageSnippet(noIDLine).All()
	if len(lines) != 1 {
		t.Fatalf("%d warnings for 5 acceptances without an id in well under a minute, want 1: %v", len(lines), logs.All())
	}
	l := lines[0]
	fields := l.ContextMap()
	if l.Level != zap.WarnLevel || fields["carrier"] != "cm" || fields["id"] != first || fields["without_id_since_last_line"] != int64(1) {
		t.Errorf("warning %s %v, want a warning naming carrier cm, message %s, count 1", l.Level, fields, first)
	}
	for _, w := range []string{"receipts cannot be matched", "cancel_sm", "receipt_id"} {
		if !strings.Contains(l.Message, w) {
			t.Errorf("warning %q does not say %q", l.Message, w)
		}
	}

	// A minute later (the last line moved back by one), the next one is
	// logged with the four not logged since and itself.
	c.noID.at.Add(-int64(noIDWarnEvery))
	last := submit()
	lines = logs.FilterMessageSnippet(noIDLine).All()
	if len(lines) != 2 {
		t.Fatalf("%d warnings after a minute, want 2", len(lines))
	}
	if f := lines[1].ContextMap(); f["id"] != last || f["without_id_since_last_line"] != int64(5) {
		t.Errorf("second warning %v, want message %s and 5 since the last line", f, last)
	}
}

// A queued message that goes back to its recovered carrier, accepted
// there without a message_id, is warned about too.
func TestReturnedToCarrierWithoutIDWarns(t *testing.T) {
	_, d, smsc, logs := noIDCarrier(t)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{}, zap.NewNop())
	m, id := queuedForModem(t, d.store, d, fo)
	fo.process(context.Background(), id)
	if n := smsc.Stats().Submits; n != 1 {
		t.Fatalf("carrier got %d submits, want the queued message back", n)
	}
	lines := logs.FilterMessageSnippet(noIDLine).All()
	if len(lines) != 1 || lines[0].ContextMap()["id"] != m.ID {
		t.Fatalf("warnings %v, want one for %s", lines, m.ID)
	}
}
