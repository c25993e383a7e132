package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/faultnet"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/redisserver"
	"github.com/spareline/spareline/test/smscsim"
)

// Store kinds.
const (
	StoreRedis = "redis" // redis-server on a free loopback port, appendonly yes, appendfsync everysec
	StoreBolt  = "bolt"  // the embedded store (bbolt, fsync per write)
)

// samples are numbers of each carrier in the cn preset.
var samples = map[string]string{"mobile": "13800138000", "unicom": "13012345678", "telecom": "13312345678"}

// carrierNames are the preset's carriers, in the order scenarios use them.
var carrierNames = []string{"mobile", "unicom", "telecom"}

// envSpec describes one environment: simulators, modems, store, gateway.
type envSpec struct {
	store           string
	carriers        int           // 1..3, named from carrierNames
	binds           int           // per carrier
	window          int           // per carrier bind
	responseTimeout time.Duration // carrier response_timeout; default 5s
	smsc            smscsim.Options
	modems          int
	modemSend       time.Duration
	modemReport     time.Duration
	modemPerMinute  int
	failoverYAML    string
	downAtStart     bool // carriers stopped before the gateway starts (all traffic to the modems)
	relays          bool // each carrier behind a faultnet relay (env.relays), for latency and stalls
	// onHealth, when set, is the gateway's Health.OnChange (set before the
	// carriers start, so that no change is missed).
	onHealth func(carrier string, from, to proxy.CarrierState, reason string)
}

// env is a running environment. close stops everything, in reverse order.
type env struct {
	spec    envSpec
	smscs   map[string]*smscsim.SMSC
	relays  map[string]*faultnet.Relay // with envSpec.relays: the gateway's way to each carrier
	names   []string
	sims    []*modemsim.Sim
	redis   *redisserver.Server
	gw      *proxy.Gateway
	closers []func()
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// startEnv starts the simulators, the store and the gateway and waits until
// every carrier bind is bound.
func (r *runner) startEnv(ctx context.Context, spec envSpec) (_ *env, err error) {
	if spec.binds <= 0 {
		spec.binds = 1
	}
	if spec.window <= 0 {
		spec.window = 10
	}
	if spec.responseTimeout <= 0 {
		spec.responseTimeout = 5 * time.Second
	}
	e := &env{spec: spec, smscs: map[string]*smscsim.SMSC{}, relays: map[string]*faultnet.Relay{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	dir, err := os.MkdirTemp(r.opts.Dir, "spareline-bench")
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { _ = os.RemoveAll(dir) })

	var carriers strings.Builder
	for i := range spec.carriers {
		name := carrierNames[i]
		o := spec.smsc
		// Any system_id binds: the gateway binds as ent01, the direct load
		// generator as "direct", so that each gets only its own receipts.
		o.Name, o.SystemID, o.Password = name, "", ""
		if o.RecordLimit == 0 {
			o.RecordLimit = 16 // keep the simulator's memory flat
		}
		s, err := smscsim.Start(o)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() { _ = s.Close() })
		e.smscs[name] = s
		e.names = append(e.names, name)
		addr := s.Addr()
		if spec.relays {
			rl, err := faultnet.Start(addr)
			if err != nil {
				return nil, err
			}
			e.closers = append(e.closers, func() { _ = rl.Close() })
			e.relays[name] = rl
			addr = rl.Addr()
		}
		fmt.Fprintf(&carriers, "  - { name: %s, address: %q, system_id: ent01, password: pw, binds: %d, window: %d, response_timeout: %s, enquire_link: 30s }\n",
			name, addr, spec.binds, spec.window, spec.responseTimeout)
		if spec.downAtStart {
			s.Stop()
		}
	}
	var modems strings.Builder
	if spec.modems > 0 {
		modems.WriteString("modems:\n")
		perMinute := spec.modemPerMinute
		if perMinute <= 0 {
			perMinute = 1000000
		}
		for i := range spec.modems {
			sim, err := modemsim.Start(context.Background(), modemsim.Options{Name: fmt.Sprintf("gsm%d", i), Dir: dir,
				SendDelay: spec.modemSend, ReportDelay: spec.modemReport})
			if err != nil {
				return nil, fmt.Errorf("modem emulator: %w", err)
			}
			e.closers = append(e.closers, func() { _ = sim.Close() })
			e.sims = append(e.sims, sim)
			fmt.Fprintf(&modems, "  - { name: gsm%d, device: %q, max_per_minute: %d }\n", i, sim.Path(), perMinute)
		}
	}
	storeYAML := fmt.Sprintf("store: { path: %q }\n", filepath.Join(dir, "store"))
	if spec.store == StoreRedis {
		rdir := filepath.Join(dir, "redis")
		if err := os.Mkdir(rdir, 0o700); err != nil {
			return nil, err
		}
		rs, err := redisserver.Run(rdir, redisserver.WithAOF())
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, rs.Stop, func() { r.redis.CompareAndSwap(rs, nil) })
		e.redis = rs
		r.redis.Store(rs)
		storeYAML = fmt.Sprintf("store: { redis: %q }\n", rs.URL())
	}
	yml := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0", window: 512 }
http: { listen: "" }
%saccounts:
  - { system_id: platform, password: secret }
carriers:
%s%srouting: { country_code: "86", preset: cn }
%s`, storeYAML, carriers.String(), modems.String(), spec.failoverYAML)
	cfg, err := config.Parse([]byte(yml), "bench.yaml")
	if err != nil {
		return nil, fmt.Errorf("bench config: %w\n%s", err, yml)
	}
	gw, err := proxy.NewGateway(ctx, cfg, proxy.GatewayOptions{Log: r.opts.Log})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if spec.onHealth != nil {
		gw.Health.OnChange = spec.onHealth
	}
	if err := gw.Start(); err != nil {
		gw.Shutdown(ctx)
		return nil, fmt.Errorf("gateway: %w", err)
	}
	e.closers = append(e.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		gw.Shutdown(sctx)
	})
	e.gw = gw
	if !spec.downAtStart {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for _, name := range e.names {
			if err := e.smscs[name].WaitUntil(wctx, func(st smscsim.Stats) bool { return st.Bound >= spec.binds }); err != nil {
				return nil, fmt.Errorf("carrier %s: %d binds not bound: %w", name, spec.binds, err)
			}
		}
	}
	return e, nil
}

// dialDirect binds n clients straight to the simulators, spread over them
// (client i to carrier i mod carriers), as the gateway's carrier binds are.
func (e *env) dialDirect(ctx context.Context, n, window int, bt platform.BindType) ([]*platform.Client, []string, error) {
	var cs []*platform.Client
	var dests []string
	for i := range n {
		name := e.names[i%len(e.names)]
		c, err := platform.Dial(ctx, e.smscs[name].Addr(), "direct", "pw", platform.Options{BindType: bt, Window: window, NoHistory: true})
		if err != nil {
			closeAll(cs)
			return nil, nil, err
		}
		cs = append(cs, c)
		dests = append(dests, samples[name])
	}
	return cs, dests, nil
}

// dialVia binds n clients to addr (a relay in front of the first
// simulator) with the simulators' credentials.
func (e *env) dialVia(ctx context.Context, addr string, n, window int, bt platform.BindType) ([]*platform.Client, []string, error) {
	var cs []*platform.Client
	var dests []string
	for range n {
		c, err := platform.Dial(ctx, addr, "direct", "pw", platform.Options{BindType: bt, Window: window, NoHistory: true})
		if err != nil {
			closeAll(cs)
			return nil, nil, err
		}
		cs = append(cs, c)
		dests = append(dests, samples[e.names[0]])
	}
	return cs, dests, nil
}

// dialRelay binds n platform sessions to the gateway; client i sends to the
// carriers in turn, so that the load spreads as in dialDirect.
func (e *env) dialRelay(ctx context.Context, n, window int, bt platform.BindType) ([]*platform.Client, []string, error) {
	var cs []*platform.Client
	var dests []string
	for i := range n {
		c, err := platform.Dial(ctx, e.gw.SMPPAddr().String(), "platform", "secret", platform.Options{BindType: bt, Window: window, NoHistory: true})
		if err != nil {
			closeAll(cs)
			return nil, nil, err
		}
		cs = append(cs, c)
		dests = append(dests, samples[e.names[i%len(e.names)]])
	}
	return cs, dests, nil
}

func closeAll(cs []*platform.Client) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// redisUsedMemory reads used_memory from INFO memory.
func (e *env) redisUsedMemory(ctx context.Context) (int64, error) {
	if e.redis == nil {
		return 0, fmt.Errorf("no redis in this environment")
	}
	c := redis.NewClient(&redis.Options{Addr: e.redis.Addr()})
	defer c.Close()
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO memory: %w", err)
	}
	return parseInfoInt(info, "used_memory")
}

// failovers sums spareline_failovers_total over its labels (the process's
// default Prometheus registry, where the gateway's metrics live).
func failovers() float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "spareline_failovers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// modemSent counts the messages every emulated modem has sent.
func (e *env) modemSent() int {
	n := 0
	for _, s := range e.sims {
		n += len(s.Sent())
	}
	return n
}
