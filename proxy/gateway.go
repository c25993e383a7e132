package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/routing"
	"github.com/spareline/spareline/store"
)

// Gateway is the whole SMPP side assembled from a config: the store, the
// carriers, the dispatcher, the northbound server and the HTTP endpoint.
type Gateway struct {
	log    *zap.Logger
	Store  store.Store
	Health *Health
	Disp   *Dispatcher
	Server *Server
	// Pool and Failover exist when modems are configured.
	Pool     *modem.Pool
	Failover *Failover

	mu       sync.Mutex
	cfg      *config.Config
	carriers map[string]*Carrier

	ctx       context.Context
	cancel    context.CancelFunc
	listeners []net.Listener
	httpSrv   *http.Server
	httpLn    net.Listener
	wg        sync.WaitGroup
	ownStore  bool
	started   time.Time     // Start
	version   string        // GatewayOptions.Version
	lookups   chan struct{} // /message and the status page's lookups running (lookup.go)
	// storeCalls: the status page's store reads and /readyz's pings still
	// running (boundedStoreCall, storestate.go).
	storeCalls chan struct{}
	// reloadMu guards reloadSt, the last reload's outcome for the status
	// page (ConfigStatus).
	reloadMu sync.Mutex
	reloadSt ConfigStatus

	// sendCtx runs the modem pool and bounds the modem sends: it outlives
	// ctx at Shutdown until the sends on a modem are recorded, or the
	// drain deadline (Failover.RunDraining). failoverDone is closed when
	// Failover.RunDraining returns; modemsRun says Start started them.
	sendCtx      context.Context
	sendCancel   context.CancelFunc
	failoverDone chan struct{}
	modemsRun    bool
}

// ConfigStatus is the outcome of the last config reload (SIGHUP), for the
// status page and /status.json: a refused one stays shown until a reload
// is applied, as spareline_config_last_reload_successful stays 0.
type ConfigStatus struct {
	// LastReload is when the last reload was asked; null when none was
	// since the start.
	LastReload *time.Time `json:"last_reload"`
	// LastReloadOK is false while the last reload was refused.
	LastReloadOK bool `json:"last_reload_ok"`
	// LastReloadError is why it was refused ("" when it was applied).
	LastReloadError string `json:"last_reload_error,omitempty"`
	// RestartPending names the changes of the last applied reload that
	// take effect only at a restart (spareline_config_restart_pending).
	RestartPending []string `json:"restart_pending"`
}

// noteReload records a reload's outcome: err nil when it was applied, with
// the changes that wait for a restart.
func (g *Gateway) noteReload(err error, restart []string) {
	now := time.Now()
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	g.reloadSt.LastReload = &now
	if err != nil {
		g.reloadSt.LastReloadOK, g.reloadSt.LastReloadError = false, err.Error()
		return
	}
	g.reloadSt.LastReloadOK, g.reloadSt.LastReloadError = true, ""
	g.reloadSt.RestartPending = append([]string{}, restart...) // replaced, never changed: Snapshot shares it
}

// GatewayOptions are the parts a caller may supply.
type GatewayOptions struct {
	Log *zap.Logger
	// Store, when set, is used instead of opening the configured one.
	Store store.Store
	// ModemOpener opens modem ports; default modem.SerialOpener.
	ModemOpener modem.Opener
	// Version is the build's version, shown on the status page and in
	// spareline_build_info; "" reads as "dev".
	Version string
}

// OpenStore opens the configured store: Redis when store.redis is set, else
// the embedded store at store.path.
func OpenStore(ctx context.Context, c config.Store, log *zap.Logger) (store.Store, error) {
	if c.Redis != "" {
		r, err := store.NewRedis(ctx, c.Redis, c.TTL.D(), log)
		if err != nil {
			return nil, err
		}
		if w := r.CheckPersistence(ctx); w != "" {
			log.Warn(w)
		}
		return r, nil
	}
	return store.OpenBolt(c.Path, c.TTL.D(), log)
}

// NewGateway assembles a gateway; Start runs it.
func NewGateway(ctx context.Context, cfg *config.Config, opts GatewayOptions) (*Gateway, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	g := &Gateway{log: log, cfg: cfg, carriers: map[string]*Carrier{}, version: cmp.Or(opts.Version, "dev"),
		reloadSt: ConfigStatus{LastReloadOK: true, RestartPending: []string{}},
		lookups:  make(chan struct{}, maxLookups), storeCalls: make(chan struct{}, maxStoreCalls)}
	metricBuildInfo.WithLabelValues(g.version, runtime.Version()).Set(1)
	seedGatewayMetrics()
	seedStoreMetrics()
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.sendCtx, g.sendCancel = context.WithCancel(context.Background())
	g.failoverDone = make(chan struct{})
	st := opts.Store
	if st == nil {
		var err error
		st, err = OpenStore(ctx, cfg.Store, log)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		g.ownStore = true
	}
	g.Store = st
	table, err := routingTable(cfg)
	if err != nil {
		g.closeStore()
		return nil, err
	}
	accounts, err := NewAccounts(cfg.Accounts)
	if err != nil {
		g.closeStore()
		return nil, err
	}
	g.Health = NewHealth(cfg.Failover.DownAfterTimeouts, cfg.Failover.UpAfter.D(), log)
	var list []*Carrier
	for _, cc := range cfg.Carriers {
		c := NewCarrier(cc, g.Health, log)
		g.Health.Attach(c)
		g.carriers[c.Name] = c
		list = append(list, c)
		seedCarrierMetrics(c.Name)
	}
	for _, a := range cfg.Accounts {
		seedAccountMetrics(a.SystemID)
	}
	g.Disp = NewDispatcher(g.ctx, DispatcherConfig{Store: st, Router: table, Carriers: list, Health: g.Health,
		MOAccount: moAccount(cfg), Log: log})
	if err := g.Disp.openMessageLog(cfg.Log.Messages); err != nil {
		g.closeStore()
		return nil, err
	}
	g.Server = NewServer(ServerConfigFrom(cfg.SMPP, log), accounts, g.Disp)
	if len(cfg.Modems) > 0 {
		open := opts.ModemOpener
		if open == nil {
			open = modem.SerialOpener
		}
		mods := modemConfigs(cfg.Modems)
		g.Pool = modem.NewPool(mods, open, modem.PoolOptions{Logger: log.With(zap.String("side", "modem"))})
		g.Failover = NewFailover(g.Disp, g.Pool, failoverConfig(cfg, len(mods)), log.With(zap.String("side", "failover")))
		seedModemPathMetrics()
	}
	return g, nil
}

func modemConfigs(cms []config.Modem) []modem.Config {
	var mods []modem.Config
	for _, mc := range cms {
		mods = append(mods, modem.Config{Name: mc.Name, Device: mc.Device, Baud: mc.Baud, PIN: mc.PIN, MaxPerMinute: mc.MaxPerMinute,
			SendTimeout: mc.SendTimeout.D()})
	}
	return mods
}

func failoverConfig(cfg *config.Config, modems int) FailoverConfig {
	fc := FailoverConfig{CountryCode: cfg.Routing.CountryCode, OnUnknown: cfg.Failover.OnUnknown,
		HoldFor: cfg.Failover.HoldFor.D(), ModemReceiptTimeout: cfg.Failover.ModemReceiptTimeout.D(),
		ResendFailedReceipts: cfg.Failover.ResendFailedReceipts == nil || *cfg.Failover.ResendFailedReceipts,
		Workers:              modems + 2}
	for _, m := range cfg.Modems {
		if m.Number != "" {
			if fc.ModemNumbers == nil {
				fc.ModemNumbers = map[string]string{}
			}
			fc.ModemNumbers[m.Name] = m.Number
		}
	}
	return fc
}

func routingTable(cfg *config.Config) (*routing.Table, error) {
	preset := "cn"
	if cfg.Routing.Preset != nil {
		preset = *cfg.Routing.Preset
	}
	t, err := routing.New(cfg.Routing.CountryCode, preset, cfg.Routing.Prefixes, cfg.Routing.Default)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	// Segments of a preset carrier that the config does not define take
	// routing.default (the modem pool when "").
	names := make([]string, 0, len(cfg.Carriers))
	for _, c := range cfg.Carriers {
		names = append(names, c.Name)
	}
	return t.Restrict(names).Redirect(cfg.Routing.Redirect), nil
}

func moAccount(cfg *config.Config) string {
	for _, a := range cfg.Accounts {
		if a.MO {
			return a.SystemID
		}
	}
	if len(cfg.Accounts) > 0 {
		return cfg.Accounts[0].SystemID
	}
	return ""
}

func (g *Gateway) closeStore() {
	if g.ownStore && g.Store != nil {
		_ = g.Store.Close()
	}
}

// Start opens the listeners and dials the carriers.
func (g *Gateway) Start() error {
	cfg := g.cfg
	g.started = time.Now()
	if cfg.SMPP.Listen != "" {
		ln, err := net.Listen("tcp", cfg.SMPP.Listen)
		if err != nil {
			return fmt.Errorf("smpp.listen: %w", err)
		}
		g.serve(ln)
	}
	if cfg.SMPP.TLSListen != "" {
		cert, err := tls.LoadX509KeyPair(cfg.SMPP.TLSCert, cfg.SMPP.TLSKey)
		if err != nil {
			g.closeListeners()
			return fmt.Errorf("smpp.tls_cert/tls_key: %w", err)
		}
		ln, err := tls.Listen("tcp", cfg.SMPP.TLSListen, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			g.closeListeners()
			return fmt.Errorf("smpp.tls_listen: %w", err)
		}
		g.serve(ln)
	}
	if cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			g.closeListeners()
			return fmt.Errorf("http.listen: %w", err)
		}
		g.httpLn = ln
		g.httpSrv = &http.Server{Handler: g.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = g.httpSrv.Serve(ln) }()
	}
	for _, c := range g.carriers {
		c.Start(g.ctx)
	}
	if g.Pool != nil {
		g.modemsRun = true
		g.wg.Add(2)
		go func() {
			defer g.wg.Done()
			if err := g.Pool.Run(g.sendCtx); err != nil && g.sendCtx.Err() == nil {
				g.log.Error("modem pool stopped", zap.Error(err))
			}
		}()
		go func() {
			defer g.wg.Done()
			defer close(g.failoverDone)
			g.Failover.RunDraining(g.ctx, g.sendCtx)
		}()
	}
	accts := make([]string, 0, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		accts = append(accts, a.SystemID)
	}
	if dc, ok := g.Store.(store.DataChecker); ok {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.watchStore(g.ctx, dc) // storestate.go
		}()
	}
	g.Disp.SetInstance(instanceName(cfg.Instance, g.listeners))
	g.Disp.StartDeliverers(accts)
	if g.Failover == nil {
		g.Disp.StartTimers() // else Failover.Run runs them
	}
	return nil
}

// instanceName names this process among the gateways sharing a store: the
// configured instance (config.Config.Instance) when set, else the host and
// the SMPP addresses it listens on. It is stable across restarts (a gateway
// started again after a crash takes back its own account leases at once
// instead of waiting for them to pass) and distinct between live gateways
// on distinct hosts (two cannot listen on the same host and port) — but not
// between replicas given the same fixed hostname, hence the config key.
func instanceName(configured string, lns []net.Listener) string {
	if configured != "" {
		return configured
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	name := host
	for _, ln := range lns {
		name += "/" + ln.Addr().String()
	}
	return name
}

func (g *Gateway) serve(ln net.Listener) {
	g.listeners = append(g.listeners, ln)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := g.Server.Serve(g.ctx, ln); err != nil {
			g.log.Error("SMPP listener failed", zap.Error(err))
		}
	}()
}

func (g *Gateway) closeListeners() {
	for _, ln := range g.listeners {
		_ = ln.Close()
	}
}

// SMPPAddr is the plain SMPP listener's address (nil if none).
func (g *Gateway) SMPPAddr() net.Addr {
	if len(g.listeners) == 0 {
		return nil
	}
	return g.listeners[0].Addr()
}

// HTTPAddr is the HTTP listener's address (nil if none).
func (g *Gateway) HTTPAddr() net.Addr {
	if g.httpLn == nil {
		return nil
	}
	return g.httpLn.Addr()
}

// Carrier returns a carrier by name.
func (g *Gateway) Carrier(name string) *Carrier {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.carriers[name]
}

// Reload applies a new config without dropping sessions: accounts, routing,
// carriers (settings, binds and bind_mode, carriers added or removed),
// failover policy and modems (added, removed or changed: modem.Pool.Reconfigure;
// the failover workers follow the number of modems). Listener, store and
// instance changes need a restart (they are reported), and so do modems going
// from none to some or from some to none: the modem pool and the failover
// path exist only in a gateway started with modems.
//
// A new carrier joins before the routing that names it and starts dialing
// (down until its first bind is up, so its first messages may go by modem);
// a removed carrier leaves the routing first, then each of its binds
// unbinds once the submits in flight on it are answered (at most its
// response_timeout); its receipts still to come are lost with its binds
// (messages queued for the modems with it go by modem).
//
// The message log (log.messages) is closed and reopened at every reload,
// at its new path if it changed; a file that cannot be opened refuses the
// reload.
func (g *Gateway) Reload(cfg *config.Config) error {
	table, err := routingTable(cfg)
	if err != nil {
		g.NoteReloadRefused(err)
		return err
	}
	if g.Pool == nil {
		// Modems added by this reload come into service at a restart
		// only: redirected to them now, the carrier's numbers would be
		// refused (ESME_RINVDSTADR) until then. The operator restarts
		// instead.
		for _, from := range slices.Sorted(maps.Keys(cfg.Routing.Redirect)) {
			if cfg.Routing.Redirect[from] == "" {
				err := fmt.Errorf("routing.redirect.%s: redirected to the modem pool, which this process runs without (modems come into service at a start only): restart spareline to apply it, or redirect %s to a carrier", from, from)
				g.NoteReloadRefused(err)
				return err
			}
		}
	}
	accounts, err := NewAccounts(cfg.Accounts)
	if err != nil {
		g.NoteReloadRefused(err)
		return err
	}
	msgLog, err := prepareMessageLog(cfg.Log.Messages) // msglog.go
	if err != nil {
		g.NoteReloadRefused(err)
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	changes := reloadChanges(g.cfg, cfg)
	var restart []string
	var added, removed []*Carrier
	named := make(map[string]bool, len(cfg.Carriers))
	for _, cc := range cfg.Carriers {
		named[cc.Name] = true
		if c := g.carriers[cc.Name]; c != nil {
			c.Reconfigure(cc)
			continue
		}
		c := NewCarrier(cc, g.Health, g.log)
		g.Health.Attach(c)
		g.carriers[c.Name] = c
		added = append(added, c)
		seedCarrierMetrics(c.Name)
	}
	for name, c := range g.carriers {
		if !named[name] {
			removed = append(removed, c)
			delete(g.carriers, name)
		}
	}
	if len(added)+len(removed) > 0 {
		// Both sets while the routing changes: no message is routed to a
		// carrier the dispatcher does not know.
		g.Disp.SetCarriers(append(g.carrierList(), removed...))
		for _, c := range added {
			g.log.Info("carrier added by a reload", zap.String("carrier", c.Name))
			c.Start(g.ctx)
		}
	}
	if cfg.SMPP.Listen != g.cfg.SMPP.Listen || cfg.SMPP.TLSListen != g.cfg.SMPP.TLSListen ||
		cfg.SMPP.TLSCert != g.cfg.SMPP.TLSCert || cfg.SMPP.TLSKey != g.cfg.SMPP.TLSKey {
		restart = append(restart, "smpp.listen / smpp.tls_listen / smpp.tls_cert / smpp.tls_key")
	}
	if cfg.HTTP.Listen != g.cfg.HTTP.Listen {
		restart = append(restart, "http.listen")
	}
	if cfg.Store != g.cfg.Store {
		restart = append(restart, "store")
	}
	if cfg.Instance != g.cfg.Instance {
		restart = append(restart, "instance")
	}
	runningModems := g.cfg.Modems
	switch {
	case slices.Equal(cfg.Modems, g.cfg.Modems):
	case g.Pool == nil || len(cfg.Modems) == 0:
		restart = append(restart, "modems (from none to some, or to none: the failover path is set up at start only)")
	default:
		if err := g.Pool.Reconfigure(modemConfigs(cfg.Modems)); err != nil {
			restart = append(restart, "modems ("+err.Error()+")")
			break
		}
		changes = append(changes, modemChanges(g.cfg.Modems, cfg.Modems)...)
		runningModems = cfg.Modems
	}
	g.Server.SetAccounts(accounts)
	g.Server.SetConfig(ServerConfigFrom(cfg.SMPP, g.log))
	g.Disp.SetRouter(table)
	g.Disp.applyMessageLog(msgLog)
	if len(removed) > 0 {
		g.Disp.SetCarriers(g.carrierList())
	}
	for _, c := range removed {
		g.log.Info("carrier removed by a reload; unbinding it", zap.String("carrier", c.Name))
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			c.Retire(c.Config().ResponseTimeout.D())
			g.mu.Lock()
			if g.carriers[c.Name] == nil { // not added back meanwhile
				g.Health.Forget(c.Name)
			}
			g.mu.Unlock()
		}()
	}
	g.Disp.SetMOAccount(moAccount(cfg))
	g.Health.SetPolicy(cfg.Failover.DownAfterTimeouts, cfg.Failover.UpAfter.D())
	if g.Failover != nil {
		g.Failover.SetConfig(failoverConfig(cfg, len(runningModems)))
	}
	// What runs is the new config but for the parts a restart applies: they
	// keep their running values, so that the next reload compares with what
	// runs (a file put back says nothing; a change still pending is said
	// again).
	running := *cfg
	running.SMPP.Listen, running.SMPP.TLSListen = g.cfg.SMPP.Listen, g.cfg.SMPP.TLSListen
	running.SMPP.TLSCert, running.SMPP.TLSKey = g.cfg.SMPP.TLSCert, g.cfg.SMPP.TLSKey
	running.HTTP.Listen, running.Store, running.Instance, running.Modems = g.cfg.HTTP.Listen, g.cfg.Store, g.cfg.Instance, runningModems
	g.cfg = &running
	for _, a := range cfg.Accounts {
		g.Disp.kickDeliveries(a.SystemID)
		seedAccountMetrics(a.SystemID)
	}
	metricReloads.WithLabelValues("applied").Inc()
	metricLastReloadOK.Set(1)
	metricRestartPending.Set(float64(min(len(restart), 1)))
	g.noteReload(nil, restart)
	switch {
	case len(restart) > 0:
		g.log.Warn("config reloaded; some changes take effect only after a restart",
			zap.Strings("applied", changes), zap.Strings("changes", restart))
	case len(changes) == 0:
		g.log.Info("config reloaded; nothing changed")
	default:
		g.log.Info("config reloaded", zap.Strings("applied", changes))
	}
	return nil
}

// NoteReloadRefused counts a reload whose file was refused, err saying
// why (the running config stays): spareline_config_reloads_total{result=
// "refused"}, spareline_config_last_reload_successful 0 until a reload is
// applied, and the status page's config line.
func (g *Gateway) NoteReloadRefused(err error) {
	metricReloads.WithLabelValues("refused").Inc()
	metricLastReloadOK.Set(0)
	g.noteReload(err, nil)
}

// carrierList is the carriers now; g.mu is held.
func (g *Gateway) carrierList() []*Carrier {
	list := make([]*Carrier, 0, len(g.carriers))
	for _, c := range g.carriers {
		list = append(list, c)
	}
	return list
}

// Shutdown stops accepting, lets in-flight submits finish until ctx ends,
// unbinds everything and closes the store. What was acknowledged and not yet
// delivered stays in the store for the next start. A modem send already on
// a modem is let finish, and recorded, until ctx ends too; one cut short
// then is left in doubt: its next send counts as a possible duplicate
// (Failover.RunDraining).
func (g *Gateway) Shutdown(ctx context.Context) {
	g.closeListeners()
	g.Server.Shutdown(ctx)
	if g.httpSrv != nil {
		_ = g.httpSrv.Shutdown(ctx)
	}
	g.cancel()
	g.Health.Close()
	g.mu.Lock()
	carriers := g.carrierList()
	g.mu.Unlock()
	for _, c := range carriers {
		c.Stop()
	}
	g.drainModemSends(ctx)
	g.wg.Wait()
	g.Disp.Wait()
	fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
	g.Disp.FlushUnmatched(fctx)
	fcancel()
	g.Disp.closeMessageLog()
	g.closeStore()
}

// drainModemSends waits, once the failover workers are told to stop, for
// the modem sends on a modem to end and be recorded, until ctx ends; then
// stops the modem pool, cutting short a send still running.
func (g *Gateway) drainModemSends(ctx context.Context) {
	defer g.sendCancel()
	if !g.modemsRun {
		return
	}
	select {
	case <-g.failoverDone:
		return
	default:
	}
	if n := g.Failover.sendingNow(); n > 0 {
		g.log.Info("stopping: waiting for the modem sends in progress", zap.Int("sending", n))
	}
	select {
	case <-g.failoverDone:
	case <-ctx.Done():
		g.log.Warn("stopping: the drain deadline passed with modem sends in progress; cut short, each is counted as a possible duplicate when it is sent again",
			zap.Int("sending", g.Failover.sendingNow()))
	}
}

// Ready reports whether the gateway can take traffic: the store answers and
// takes writes (not marked failing: submits are refused meanwhile), and at
// least one path (a carrier or a modem) is up. The store's ping ends when
// ctx does, whatever the store does.
func (g *Gateway) Ready(ctx context.Context) error {
	if g.Disp.storeDown.Load() {
		return errors.New("store: failing; submits are refused until it takes writes again")
	}
	if err, berr := boundedStoreCall(ctx, g.storeCalls, g.Store.Ping); berr != nil || err != nil {
		if err = cmp.Or(berr, err); strings.HasPrefix(err.Error(), "store") {
			return err // the store's own errors say "store: ..."
		}
		return fmt.Errorf("store: %w", err)
	}
	g.mu.Lock()
	carriers := g.carrierList()
	g.mu.Unlock()
	for _, c := range carriers {
		if !c.cfg.Load().ReceiveOnly && g.Health.State(c.Name) != StateDown {
			return nil
		}
	}
	if fo := g.Disp.failover.Load(); fo != nil && fo.anyModemUp() {
		return nil
	}
	return errors.New("no carrier and no modem is up")
}

// CarrierStatus is one carrier on the status page.
type CarrierStatus struct {
	Name  string   `json:"name"`
	Binds []string `json:"binds"`
	// ReloadRefused says that the carrier refused (or could not be
	// reached with) the address or login of the last reload, and why: its
	// binds run on the previous ones, a restart would use the refused
	// ones; "" otherwise (spareline_carrier_reload_refused).
	ReloadRefused string `json:"reload_refused"`
	// LastReceipt is when the carrier last sent a delivery receipt
	// (matched or not; null: none since the start); ReceiptsAskedSince
	// how many submits it accepted since then asked for one (registered_delivery
	// 1 or 3): a count that grows while LastReceipt stays is a carrier
	// that stopped sending receipts (SparelineCarrierNoReceipts).
	LastReceipt        *time.Time `json:"last_receipt"`
	ReceiptsAskedSince int64      `json:"receipts_asked_since"`
	// RedirectedTo is where routing.redirect sends the numbers routed to
	// this carrier: another carrier's name, or "modem pool"; "" when they
	// go to it. Its binds stay up for its receipts and MO messages.
	RedirectedTo string `json:"redirected_to"`
	CarrierHealthInfo
}

// Status is the gateway's state for /status.
type Status struct {
	Version  string          `json:"version"` // the build (spareline version)
	Started  time.Time       `json:"started"` // when this process started serving
	Carriers []CarrierStatus `json:"carriers"`
	// ReceiptsHeld counts, per account, the deliveries (receipts, MO) held
	// for its receivers; an account with none is left out.
	ReceiptsHeld map[string]int `json:"receipts_held"`
	Sessions     []SessionInfo  `json:"sessions"`
	Queue        struct {
		// Depth is how many wait; null when the store could not be read.
		Depth *int `json:"depth"`
		// Oldest is when the oldest waiting message was queued; null when
		// none waits.
		Oldest *time.Time `json:"oldest"`
		// Head is the oldest queueHeadMax messages waiting for the modems.
		Head []QueuedMessage `json:"head"`
	} `json:"modem_queue"`
	// Modems is each configured modem's state; [] when none is configured.
	Modems []modem.ModemStatus `json:"modems"`
	// Store is the store's health (storestate.go). The parts of the page
	// read from the store (modem_queue's depth, oldest and head, and
	// receipts_held) are null when it did not give them in time: unknown,
	// not 0.
	Store StoreStatus `json:"store"`
	// Config is the outcome of the last config reload.
	Config ConfigStatus `json:"config"`
}

// Snapshot returns the gateway's state. Its store reads take at most
// statusStoreWait, whatever the store does: what they did not give is null
// (unknown) and Store says why.
func (g *Gateway) Snapshot(ctx context.Context) Status {
	st := Status{Version: g.version, Started: g.started}
	g.reloadMu.Lock()
	st.Config = g.reloadSt
	g.reloadMu.Unlock()
	g.mu.Lock()
	accounts := make([]string, 0, len(g.cfg.Accounts))
	for _, a := range g.cfg.Accounts {
		accounts = append(accounts, a.SystemID)
	}
	for _, cc := range g.cfg.Carriers {
		c := g.carriers[cc.Name]
		if c == nil {
			continue
		}
		cs := CarrierStatus{Name: c.Name, Binds: c.BindStates(), ReloadRefused: c.ReloadRefused(),
			CarrierHealthInfo: g.Health.Info(c.Name)}
		if to, ok := g.cfg.Routing.Redirect[cc.Name]; ok {
			cs.RedirectedTo = cmp.Or(to, "modem pool")
		}
		var last time.Time
		if last, cs.ReceiptsAskedSince = c.Receipts(); !last.IsZero() {
			cs.LastReceipt = &last
		}
		st.Carriers = append(st.Carriers, cs)
	}
	g.mu.Unlock()
	st.Sessions = g.Server.Sessions()
	if st.Sessions == nil {
		st.Sessions = []SessionInfo{} // [] in /status.json, not null
	}
	read := g.readStatusFromStore(ctx, accounts) // storestate.go
	if read.queueOK {
		st.Queue.Depth, st.Queue.Head = &read.depth, read.head
		if !read.oldest.IsZero() {
			st.Queue.Oldest = &read.oldest
		}
	}
	if read.heldOK {
		st.ReceiptsHeld = read.held
	}
	st.Store = g.storeStatus(read)
	if fo := g.Disp.failover.Load(); fo != nil {
		st.Modems = fo.modemStatus()
	}
	if st.Modems == nil {
		st.Modems = []modem.ModemStatus{} // [] in /status.json, not null or missing
	}
	return st
}

func (g *Gateway) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := g.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/status", g.serveStatus)
	mux.HandleFunc("/status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(g.Snapshot(r.Context()))
	})
	mux.HandleFunc("/message", g.serveMessage) // lookup.go
	return mux
}
