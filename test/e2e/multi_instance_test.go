package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// Two gateways on one redis-server and the same SMSC simulators: what one
// acknowledged, the pair delivers exactly once (store/claims.go).

// multiFailoverYAML is failoverYAML with a short receipt timer, so that a
// status report lost with a killed gateway still ends in a receipt soon.
const multiFailoverYAML = failoverYAML + "  modem_receipt_timeout: 5s\n"

// namedModems starts n emulated modems named prefix0.. and returns them with
// their YAML; each gateway needs its own (a device has one owner).
func namedModems(t *testing.T, prefix string, n int, o modemsim.Options) ([]*modemsim.Sim, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var sims []*modemsim.Sim
	var y strings.Builder
	y.WriteString("modems:\n")
	for i := range n {
		o := o
		o.Name = fmt.Sprintf("%s%d", prefix, i)
		s, err := modemsim.Start(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		sims = append(sims, s)
		fmt.Fprintf(&y, "  - { name: %s, device: %q, max_per_minute: 100000 }\n", o.Name, s.Path())
	}
	return sims, y.String()
}

// secondGateway starts another gateway on e's config (same store, same
// carriers, same accounts) with extra in place of the first one's extra
// YAML aExtra (its modems, for one).
func secondGateway(t *testing.T, e *env, aExtra, extra string) *proxy.Gateway {
	t.Helper()
	base, ok := strings.CutSuffix(e.cfgYAML, aExtra)
	if !ok {
		t.Fatal("the first gateway's config does not end with its extra YAML")
	}
	cfg, err := config.Parse([]byte(base+extra), "e2e-b.yaml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	gw, err := proxy.NewGateway(e.ctx, cfg, proxy.GatewayOptions{Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("b")})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		gw.Shutdown(sctx)
	})
	return gw
}

// dialGateway binds a platform client to gw.
func dialGateway(t *testing.T, e *env, gw *proxy.Gateway, bt platform.BindType) *platform.Client {
	t.Helper()
	c, err := platform.Dial(e.ctx, gw.SMPPAddr().String(), "platform", "secret", platform.Options{BindType: bt, Window: 64})
	if err != nil {
		t.Fatalf("bind: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// receiptsExactlyOnce reads receipts from the clients until every id in
// ids has one, failing on a second receipt for any id or on an unknown id,
// then checks that the store holds no delivery left to send.
func receiptsExactlyOnce(t *testing.T, e *env, ids map[string]bool, clients ...*platform.Client) {
	t.Helper()
	seen := map[string]int{}
	got := make(chan platform.Receipt, 64)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	for _, c := range clients {
		go func() {
			for {
				select {
				case r := <-c.Receipts():
					select {
					case got <- r:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for len(seen) < len(ids) {
		select {
		case r := <-got:
			if !ids[r.ID] {
				t.Fatalf("receipt for an unknown id %q", r.ID)
			}
			if seen[r.ID]++; seen[r.ID] > 1 {
				t.Fatalf("receipt for %s delivered %d times", r.ID, seen[r.ID])
			}
		case <-e.ctx.Done():
			t.Fatalf("%d of %d receipts arrived", len(seen), len(ids))
		}
	}
	// Every receipt was acknowledged by the platform and removed: none is
	// left for a second delivery.
	pollUntil(t, e, "held deliveries emptied", func() bool {
		p, err := e.store.PendingDeliveries(e.ctx, "platform", 0)
		return err == nil && len(p) == 0
	})
	cancel()
	for _, c := range clients {
		select {
		case r := <-c.Receipts():
			t.Fatalf("an extra receipt %s (%s)", r.ID, r.Stat)
		default:
		}
	}
}

// Receipts held while the platform has no receiver, then receivers bound to
// both gateways at once: each receipt reaches the platform exactly once.
func TestMultiInstanceHeldReceiptsExactlyOnce(t *testing.T) {
	e := startEnv(t, "redis")
	gwB := secondGateway(t, e, "", "")
	for name, s := range e.smscs {
		if err := s.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.Bound >= 4 }); err != nil {
			t.Fatalf("%s: the second gateway never bound: %v", name, err)
		}
	}
	tx := e.dial("platform", "secret", platform.BindTX)
	msgs := bulk(60, func(i int) string { return carrierSetups[i%3].sample })
	ids := map[string]bool{}
	for i, r := range tx.Bulk(e.ctx, msgs, 16) {
		if r.Err != nil || r.Status != 0 {
			t.Fatalf("message %d: %v 0x%X", i, r.Err, r.Status)
		}
		ids[r.MessageID] = true
	}
	for name, s := range e.smscs {
		if err := s.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.ReceiptsAcked == st.Submits }); err != nil {
			t.Fatalf("%s: receipts not acknowledged: %v", name, err)
		}
	}
	_ = tx.Close()
	rxA := e.dial("platform", "secret", platform.BindRX)
	rxB := dialGateway(t, e, gwB, platform.BindRX)
	receiptsExactlyOnce(t, e, ids, rxA, rxB)
}

// stopCarriers stops every simulator and waits until the gateways mark
// every carrier down.
func stopCarriers(t *testing.T, e *env, gws ...*proxy.Gateway) {
	t.Helper()
	for _, s := range e.smscs {
		s.Stop()
	}
	for _, gw := range gws {
		for _, cs := range carrierSetups {
			pollUntil(t, e, cs.name+" marked down", func() bool { return gw.Health.State(cs.name) == proxy.StateDown })
		}
	}
}

// sentOnce checks that every text went out by exactly one modem of sims,
// once.
func sentOnce(t *testing.T, e *env, sims []*modemsim.Sim, texts []string) {
	t.Helper()
	got := waitDelivered(t, e, sims, texts)
	for _, txt := range texts {
		if got[txt] != 1 {
			t.Fatalf("%s sent %d times", txt, got[txt])
		}
	}
}

// All carriers down, each gateway with its own modem: a bulk submitted to
// one gateway is sent by both gateways' modems, each message once, with one
// final receipt each.
func TestMultiInstanceAllCarriersDownModemsExactlyOnce(t *testing.T) {
	opts := modemsim.Options{SendDelay: 20 * time.Millisecond, ReportDelay: 5 * time.Millisecond}
	simsA, yA := namedModems(t, "gsma", 1, opts)
	simsB, yB := namedModems(t, "gsmb", 1, opts)
	e := startEnv(t, "redis", withYAML(yA+multiFailoverYAML))
	gwB := secondGateway(t, e, yA+multiFailoverYAML, yB+multiFailoverYAML)
	stopCarriers(t, e, e.gw, gwB)
	tx := e.dial("platform", "secret", platform.BindTX)
	rxA := e.dial("platform", "secret", platform.BindRX)
	rxB := dialGateway(t, e, gwB, platform.BindRX)
	msgs := bulk(80, func(i int) string { return carrierSetups[i%3].sample })
	ids := map[string]bool{}
	var texts []string
	for i, r := range tx.Bulk(e.ctx, msgs, 16) {
		if r.Err != nil || r.Status != 0 {
			t.Fatalf("message %d: %v 0x%X", i, r.Err, r.Status)
		}
		ids[r.MessageID] = true
		texts = append(texts, msgs[i].Text)
	}
	sims := append(append([]*modemsim.Sim{}, simsA...), simsB...)
	sentOnce(t, e, sims, texts)
	if len(simsA[0].Sent()) == 0 || len(simsB[0].Sent()) == 0 {
		t.Fatalf("the work was not shared: gateway A's modem sent %d, B's %d", len(simsA[0].Sent()), len(simsB[0].Sent()))
	}
	t.Logf("gateway A's modem sent %d, B's %d", len(simsA[0].Sent()), len(simsB[0].Sent()))
	receiptsExactlyOnce(t, e, ids, rxA, rxB)
}

// Gateway A dies (its store connection gone, as in a kill) while its
// modem sends hang: gateway B takes the entries A held once their lease
// passes, and every message is sent exactly once, with one final receipt.
func TestMultiInstanceKilledGatewayWorkTakenOver(t *testing.T) {
	simsA, yA := namedModems(t, "gsma", 1, modemsim.Options{SendDelay: 20 * time.Millisecond, ReportDelay: 5 * time.Millisecond})
	simsB, yB := namedModems(t, "gsmb", 1, modemsim.Options{SendDelay: 20 * time.Millisecond, ReportDelay: 5 * time.Millisecond})
	e := startEnv(t, "redis", withYAML(yA+multiFailoverYAML))
	gwB := secondGateway(t, e, yA+multiFailoverYAML, yB+multiFailoverYAML)
	stopCarriers(t, e, e.gw, gwB)
	simsB[0].SetRegistered(false) // B cannot send yet: A's workers take the bulk
	tx := e.dial("platform", "secret", platform.BindTX)
	rxB := dialGateway(t, e, gwB, platform.BindRX)
	msgs := bulk(30, func(i int) string { return carrierSetups[i%3].sample })
	ids := map[string]bool{}
	var order []string
	var texts []string
	for i, r := range tx.Bulk(e.ctx, msgs, 16) {
		if r.Err != nil || r.Status != 0 {
			t.Fatalf("message %d: %v 0x%X", i, r.Err, r.Status)
		}
		ids[r.MessageID] = true
		order = append(order, r.MessageID)
		texts = append(texts, msgs[i].Text)
	}
	if _, err := simsA[0].WaitSent(e.ctx, 5); err != nil {
		t.Fatal(err)
	}
	// A's modem stops answering: A's workers hold their entries (leased,
	// state modem) in sends that never end.
	simsA[0].Hang(true)
	// Wait until A holds a hanging send and has recorded every send its
	// modem answered (a kill between a modem's answer and its record is the
	// one window that may send a message twice; it is not this test's).
	idOf := map[string]string{}
	for i, id := range order {
		idOf[texts[i]] = id
	}
	pollUntil(t, e, "a send of gateway A hanging, the others recorded", func() bool {
		for _, sm := range simsA[0].Sent() {
			m, err := e.store.GetMessage(e.ctx, idOf[sm.Text])
			if err != nil || (m.State != store.StateModemSent && m.State != store.StateDone) {
				return false
			}
		}
		for _, id := range order {
			if m, err := e.store.GetMessage(e.ctx, id); err == nil && m.State == store.StateModem {
				return true
			}
		}
		return false
	})
	// Kill A: from now on nothing A does reaches the store (its leases stay
	// until they pass, as after kill -9).
	if err := e.gw.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.Store.GetMessage(e.ctx, order[0]); !errors.Is(err, store.ErrClosed) && err == nil {
		t.Fatal("gateway A's store still answers after Close")
	}
	e.store = gwB.Store
	simsB[0].SetRegistered(true)
	sentOnce(t, e, append(append([]*modemsim.Sim{}, simsA...), simsB...), texts)
	receiptsExactlyOnce(t, e, ids, rxB)
	for _, id := range order {
		m, err := gwB.Store.GetMessage(e.ctx, id)
		if err != nil || m.State != store.StateDone || m.FinalStat == "" {
			t.Fatalf("%s after the takeover: %+v %v", id, m, err)
		}
	}
}
