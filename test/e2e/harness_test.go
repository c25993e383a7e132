// Package e2e runs spareline end to end: real TCP SMPP sessions between a
// simulated platform, the gateway and three simulated operator SMSCs, with
// the real stores (a redis-server started on a free loopback port, and the
// embedded bbolt store).
package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/redisserver"
	"github.com/spareline/spareline/test/smscsim"
)

// The three carriers write receipt ids three ways, as real ones do.
var carrierSetups = []struct {
	name   string
	opts   smscsim.Options
	mode   string // receipt_id setting in spareline's config
	sample string // a number of this operator
}{
	{"mobile", smscsim.Options{IDFormat: smscsim.IDDecimal, ReceiptIDFormat: smscsim.ReceiptSame}, "as_is", "13800138000"},
	{"unicom", smscsim.Options{IDFormat: smscsim.IDDecimal, ReceiptIDFormat: smscsim.ReceiptHex, FirstID: 900000}, "hex", "13012345678"},
	{"telecom", smscsim.Options{IDFormat: smscsim.IDHex, ReceiptIDFormat: smscsim.ReceiptDecimal, FirstID: 0xABC000}, "decimal", "13312345678"},
}

type env struct {
	t       testing.TB
	ctx     context.Context
	smscs   map[string]*smscsim.SMSC
	gw      *proxy.Gateway
	cfgYAML string
	store   store.Store
	kind    string
	binds   int // each carrier's
}

// storeKinds runs f with each store.
func storeKinds(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range []string{"bolt", "redis"} {
		t.Run(kind, func(t *testing.T) { f(t, kind) })
	}
}

type envOption func(*envOpts)

type envOpts struct {
	extraYAML   string
	failoverYML string
	smscMutate  func(name string, o *smscsim.Options)
	// redis, for kind "redis": use this server, not a new one.
	redis       *redisserver.Server
	carrierAddr func(name, addr string) string // e.g. a faultnet relay in front of the simulator
	carrierYAML func(name string) string       // extra keys of a carrier's entry ("\n    key: value" lines)
	httpListen  string
	smppWindow  int // smpp.window; 0: the default
	binds       int // of each carrier; default 2
	window      int // of each carrier bind; default 32
	// elsewhere names a carrier whose SMSC is not its simulator (see
	// withCarrierElsewhere), and elseAddr that SMSC's address.
	elsewhere, elseAddr string
	// logTee, when set, also gets the gateway's log lines (withLogTee).
	logTee zapcore.Core
}

// withLogTee sends the gateway's log lines (info and above, as the core
// takes them) to core too, besides the test log.
func withLogTee(core zapcore.Core) envOption { return func(o *envOpts) { o.logTee = core } }

// withCarrierElsewhere points carrier name at an SMSC at addr that is not
// its simulator; startEnv then waits for the gateway's bind to it (the
// carrier's health going up) instead of the simulator's binds.
func withCarrierElsewhere(name, addr string) envOption {
	return func(o *envOpts) { o.elsewhere, o.elseAddr = name, addr }
}

// withCarrierBinds sets each carrier's binds and their window.
func withCarrierBinds(binds, window int) envOption {
	return func(o *envOpts) { o.binds, o.window = binds, window }
}

func withYAML(s string) envOption { return func(o *envOpts) { o.extraYAML += s } }

// withHTTP turns on the HTTP endpoint (/status, /metrics) on a free loopback
// port; Gateway.HTTPAddr tells which.
// withSMPPWindow sets smpp.window, the platform sessions' window.
func withSMPPWindow(n int) envOption { return func(o *envOpts) { o.smppWindow = n } }

func withHTTP() envOption { return func(o *envOpts) { o.httpListen = "127.0.0.1:0" } }

// startEnv starts three SMSC simulators and a gateway on the given store.
func startEnv(t testing.TB, kind string, opts ...envOption) *env {
	t.Helper()
	var eo envOpts
	for _, o := range opts {
		o(&eo)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, smscs: map[string]*smscsim.SMSC{}, kind: kind}
	if eo.binds == 0 {
		eo.binds, eo.window = 2, 32
	}
	var carriers strings.Builder
	for _, cs := range carrierSetups {
		o := cs.opts
		o.Name = cs.name
		o.SystemID = "ent01"
		o.Password = "pw-" + cs.name[:3]
		if eo.smscMutate != nil {
			eo.smscMutate(cs.name, &o)
		}
		s, err := smscsim.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		e.smscs[cs.name] = s
		addr := s.Addr()
		if eo.carrierAddr != nil {
			addr = eo.carrierAddr(cs.name, addr)
		}
		if cs.name == eo.elsewhere {
			addr = eo.elseAddr
		}
		fmt.Fprintf(&carriers, `
  - name: %s
    address: %q
    system_id: ent01
    password: %q
    binds: %d
    window: %d
    response_timeout: 2s
    enquire_link: 5s
    receipt_id: %s`, cs.name, addr, o.Password, eo.binds, eo.window, cs.mode)
		if eo.carrierYAML != nil {
			carriers.WriteString(eo.carrierYAML(cs.name))
		}
	}
	storeYAML := fmt.Sprintf("store: { path: %q }\n", t.TempDir())
	if kind == "redis" {
		rs := eo.redis
		if rs == nil {
			rs = redisserver.Start(t)
		}
		storeYAML = fmt.Sprintf("store: { redis: %q }\n", rs.URL())
	}
	smppExtra := ""
	if eo.smppWindow > 0 {
		smppExtra = fmt.Sprintf(", window: %d", eo.smppWindow)
	}
	e.cfgYAML = fmt.Sprintf(`smpp: { listen: "127.0.0.1:0", enquire_link: 5s%s }
http: { listen: %q }
%saccounts:
  - { system_id: platform, password: secret, allow: ["127.0.0.0/8"] }
  - { system_id: other, password: pw2 }
carriers:%s
routing:
  country_code: "86"
  preset: cn
%s`, smppExtra, eo.httpListen, storeYAML, carriers.String(), eo.extraYAML)
	cfg, err := config.Parse([]byte(e.cfgYAML), "e2e.yaml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, e.cfgYAML)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	if eo.logTee != nil {
		log = zap.New(zapcore.NewTee(log.Core(), eo.logTee))
	}
	gw, err := proxy.NewGateway(ctx, cfg, proxy.GatewayOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	elseUp := make(chan struct{})
	if eo.elsewhere != "" {
		var once sync.Once
		gw.Health.OnChange = func(carrier string, _, to proxy.CarrierState, _ string) {
			if carrier == eo.elsewhere && to == proxy.StateUp {
				once.Do(func() { close(elseUp) })
			}
		}
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		gw.Shutdown(sctx)
	})
	e.gw = gw
	e.store = gw.Store
	e.binds = eo.binds
	if eo.elsewhere != "" {
		delete(e.smscs, eo.elsewhere) // its simulator takes no traffic
		select {
		case <-elseUp:
		case <-ctx.Done():
			t.Fatalf("carrier %s never bound to %s", eo.elsewhere, eo.elseAddr)
		}
	}
	e.waitCarriersBound()
	return e
}

// waitCarriersBound waits until every simulator has all its binds, then
// until the gateway has them too: every bind of every configured carrier
// bound on the gateway's side and the carrier's health up. The simulator
// counts a bind when it answers it; the gateway takes the bind a moment
// later, so a test starting on the simulator's count alone could meet a
// carrier the gateway still holds down.
func (e *env) waitCarriersBound() {
	e.t.Helper()
	for name, s := range e.smscs {
		if err := s.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.Bound >= e.binds }); err != nil {
			e.t.Fatalf("carrier %s never bound: %v", name, err)
		}
	}
	// The gateway has no event for a bind count: its state is polled.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for _, cs := range carrierSetups {
		c := e.gw.Carrier(cs.name)
		if c == nil {
			e.t.Fatalf("carrier %s not configured on the gateway", cs.name)
		}
		for !gatewayBound(e.gw, c) {
			select {
			case <-e.ctx.Done():
				e.t.Fatalf("carrier %s never bound on the gateway's side: binds %v, health %s",
					cs.name, c.BindStates(), e.gw.Health.State(cs.name))
			case <-tick.C:
			}
		}
	}
}

// gatewayBound reports whether every bind of c is bound and c's health is up.
func gatewayBound(gw *proxy.Gateway, c *proxy.Carrier) bool {
	for _, st := range c.BindStates() {
		if strings.TrimPrefix(st, "rx:") != "bound" {
			return false
		}
	}
	return gw.Health.State(c.Name) == proxy.StateUp
}

// dial binds a platform client.
func (e *env) dial(systemID, password string, bt platform.BindType) *platform.Client {
	e.t.Helper()
	c, err := platform.Dial(e.ctx, e.gw.SMPPAddr().String(), systemID, password, platform.Options{BindType: bt, Window: 64})
	if err != nil {
		e.t.Fatalf("bind as %s: %v", systemID, err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// nextReceipt waits for a receipt.
func (e *env) nextReceipt(c *platform.Client) platform.Receipt {
	e.t.Helper()
	select {
	case r := <-c.Receipts():
		return r
	case <-e.ctx.Done():
		e.t.Fatal("no receipt arrived")
	}
	return platform.Receipt{}
}
