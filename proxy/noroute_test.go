package proxy

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/routing"
)

// A number that routes to the modem pool when there is none is refused
// ESME_RINVDSTADR, and the operator is warned, once a second at most
// however many such submits come.
func TestNoRouteNoModemsWarnsRateLimited(t *testing.T) {
	table, err := routing.New("86", "", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: sharedBolt(t), Router: table, Log: zap.New(core)})
	t.Cleanup(func() { cancel(); d.Wait() })
	for range 50 {
		out := d.Submit(ctx, "acct", &ShortMessage{Source: "10690001", Dest: "13800138000", Message: []byte("hi")}, nil)
		if out.Status != statusInvDstAdr {
			t.Fatalf("status %#x, want ESME_RINVDSTADR", out.Status)
		}
	}
	lines := logs.FilterMessage("no route for destination and no modem pool").All()
	if len(lines) != 1 {
		t.Fatalf("%d log lines for 50 refusals in well under a second, want 1", len(lines))
	}
	if l := lines[0]; l.Level != zap.WarnLevel || l.ContextMap()["status"] != "ESME_RINVDSTADR" || l.ContextMap()["dest_prefix"] != "138" {
		t.Errorf("log line %s %v, want a warning naming ESME_RINVDSTADR and the prefix 138", l.Level, l.ContextMap())
	}
}
