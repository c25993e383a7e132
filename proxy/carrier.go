package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// Carrier channels: spareline as the ESME of an operator's SMSC.
//
// Each carrier has `binds` transceiver connections, each owned by one
// goroutine that dials (with connect_timeout), binds, serves until the
// connection ends, and dials again after a jittered exponential backoff
// (1 s doubling to 60 s, reset after a bind that stayed up 30 s). A bind
// refused with ESME_RINVPASWD, ESME_RINVSYSID or ESME_RINVSYSTYP is not
// retried at that pace: hammering a carrier with bad credentials gets
// accounts locked, so the bind logs an error and the carrier's binds try
// again only after authRetry (5 minutes, jittered), one bind at a time
// until one gets in, or at once on a config reload. The slow
// retry is for the carrier that refused by mistake (an SMSC whose own
// account backend was down, a password changed on both sides out of step):
// it comes back by itself, not only when someone reloads at 3 a.m. Any other
// refusal of a bind by the SMSC (a bind_resp with an error status, such as
// ESME_RBINDFAIL, which many SMSCs answer for wrong credentials or an address
// not on the allow-list, or ESME_RALYBND; or a generic_nack: a
// *BindRefusedError) holds the carrier's binds off the same way, one bind at a
// time asking, for a wait that grows with each refusal in a row (refuseRetry:
// 10 s doubling to 5 minutes, ±25%) until a bind gets in, or at once on a
// reload; a bind whose own session had been up may ask again at once, alone.
// A failed dial or TLS handshake, or a bind never answered, is not a refusal:
// the bind's own backoff applies. On shutdown
// and reload every bind is unbound (SMPP 3.4 §4.2) before the socket closes.
//
// Submits go to the bound connection with the most free window, paced by
// max_tps (shared by the carrier's binds: at most max_tps in any one second,
// tpsWindow). A bind whose submits go unanswered while the carrier's other
// binds answer is reconnected (recycle.go), and so is one whose probe
// submits go unanswered while the carrier is down by timeouts; one
// reconnected again before it answered anything waits longer before it
// dials.
//
// Over TLS (tls: true) the carrier's certificate is verified against tls_ca
// (else the system roots) for tls_server_name (else the host of address),
// unless tls_insecure. A certificate that does not verify is a *TLSError
// with Verification set, logged as an error on every attempt; the bind keeps
// retrying with backoff like an unreachable carrier (the carrier may be
// mid-rotation), so it stays down and its traffic goes by modem. A reload
// that changes any TLS setting, the CA bundle's content included, reconnects.

// ErrCarrierDown means no bind of the carrier is bound.
var ErrCarrierDown = errors.New("carrier: no bind is up")

// authRetry is how long a bind refused for credentials waits before it
// tries again (a reload retries at once).
var authRetry = 5 * time.Minute

// refuseRetry and refuseRetryMax: after the n-th refusal of a bind in a
// row (BindRefusedError) the carrier's binds wait refuseRetry doubled n-1
// times, at most refuseRetryMax, ±25% (refuseHold).
var (
	refuseRetry    = 10 * time.Second
	refuseRetryMax = 5 * time.Minute
)

// throttlePause is how long a carrier takes no submit after it answered
// one with ESME_RTHROTTLED.
var throttlePause = 200 * time.Millisecond

// AuthError is a bind refused for credentials; the bind waits authRetry
// before it tries again.
type AuthError struct{ Status uint32 }

func (e *AuthError) Error() string { return "carrier refused the bind: " + StatusString(e.Status) }

// BindRefusedError is a bind the SMSC refused for a reason other than the
// credentials (AuthError): a bind_resp with an error status, or a
// generic_nack (Nack). The carrier's binds wait refuseHold, one asking at a
// time. Hint is advice appended to the message (bind_mode).
type BindRefusedError struct {
	Status uint32
	Nack   bool
	Hint   string
}

func (e *BindRefusedError) Error() string {
	if e.Nack {
		return "bind refused: generic_nack " + StatusString(e.Status) + e.Hint
	}
	return "bind refused: " + StatusString(e.Status) + e.Hint
}

// Carrier is one operator SMSC with its binds.
type Carrier struct {
	Name string
	cfg  atomic.Pointer[config.Carrier]
	// optRefusedLogged: the SMPP 3.3 hint was logged (noteOptionalRefused).
	optRefusedLogged atomic.Bool
	log              *zap.Logger
	// onDeliver handles deliver_sm from the carrier (receipts and MO); it
	// answers the request itself once the content is durable.
	onDeliver func(c *Carrier, s *Session, f Frame)
	// onLateAccept handles a submit_sm_resp OK that came after the
	// submit's response_timeout (late.go); set by the dispatcher.
	onLateAccept func(c *Carrier, id string, res SubmitResult)
	health       *Health

	limiter atomic.Pointer[tpsWindow]
	// binds is replaced whole when a reload changes binds or bind_mode
	// (resize); readers take the slice they load.
	binds atomic.Pointer[[]*carrierBind]
	bound atomic.Int32
	rr    atomic.Uint32
	// pausedUntil (Unix nanoseconds): no submit goes out before it, set
	// when the carrier throttles (throttled).
	pausedUntil atomic.Int64
	// authUntil (Unix nanoseconds, 0 = none): after a refusal of the
	// credentials no bind dials before it, then one bind at a time
	// (authProbing) asks again (authHold).
	authUntil   atomic.Int64
	authProbing atomic.Bool
	// refusedHold: the hold (authUntil) is for a refusal other than the
	// credentials (the binds show "refused", not "auth_failed"); refusals
	// counts those in a row, until a bind gets in (refuseHold).
	refusedHold atomic.Bool
	refusals    atomic.Int32
	// connGen counts reloads that changed connection settings; a bind
	// that was connecting under older settings unbinds once it is up.
	connGen atomic.Uint64
	// trialGen counts reloads; a trial of new connection settings
	// (trialThenReconnect) ends when a later reload comes (trialCancel,
	// under mu, ends its wait at once).
	trialGen    atomic.Uint64
	trialCancel context.CancelFunc
	// trialKick wakes a trial waiting to try again (kickTrial).
	trialKick chan struct{}
	// bridge is the session of a trial bind that got in, kept while
	// reconnectRolling moves a carrier with one bind bound (the usual
	// binds: 1) to the new login: it takes submits, receipts and MO, and
	// counts as a bound bind, so that a planned change of login never
	// leaves the carrier without a bind (down, then probation, its traffic
	// on the modems meanwhile). The bind that comes to dial with its login
	// takes the session as its own (takeBridge) rather than binding a
	// second time (an SMSC that allows one bind per system_id answers
	// that with ESME_RALYBND). Whoever swaps it to nil owns its count:
	// takeBridge (the count passes to the bind), closeBridge, checkBound
	// (endBridge), or the watch that sees the SMSC end it (openBridge).
	bridge atomic.Pointer[bridgeSession]
	// reloadRefused says why the carrier refused the address or login of
	// the last reload (its trial bind), while its binds go on with the
	// previous ones; "" otherwise (ReloadRefused). Guarded by mu.
	reloadRefused string
	// firstTried is closed once the first bind's first attempt has an
	// outcome (bound, or failed); the other binds wait for it at start
	// (waitFirstTry).
	firstTried     chan struct{}
	firstTriedOnce sync.Once
	// live is the login the binds' sessions were made with: the start's,
	// then each reconnect's. A reload back to it (after a refused trial of
	// a typo) has nothing to try and nothing to reconnect.
	live   atomic.Pointer[carrierLogin]
	dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// trace is config trace, shared by the carrier's sessions (trace.go).
	trace atomic.Bool

	wg     sync.WaitGroup
	mu     sync.Mutex // Start, Stop and resize
	ctx    context.Context
	cancel context.CancelFunc

	// Cached metric children of the accepted submit (metrics.go).
	mSubmitsOK, mStatusOK lazyCounter
	// mReceiptsAsked is receipts_requested_total of the carrier.
	mReceiptsAsked prometheus.Counter
	// lastReceipt (Unix nanoseconds; 0 = none since the start) is when the
	// carrier last sent a receipt; askedSince counts the acceptances that
	// asked for one since then (noteAccepted, noteReceipt).
	lastReceipt, askedSince atomic.Int64
	// noID: the warning of acceptances without a message_id (noid.go).
	noID noIDWarning
	// answers counts the submits the carrier answered on sessions that
	// were answering (none that ended a run of timeouts of its own);
	// suspects the sessions waiting for such an answer to be recycled
	// (recycle.go).
	answers  atomic.Uint64
	suspects atomic.Int32
	// subs counts the submits to the carrier not settled yet, and when
	// the last one started (idreuse.go).
	subs submitsInFlight
}

type carrierBind struct {
	c     *Carrier
	index int
	kind  bindType // bindTRX; bindTX and bindRX with bind_mode transmitter_receiver
	sess  atomic.Pointer[Session]
	login atomic.Pointer[carrierLogin] // the login sess was bound with
	// dialled is the login of the bind's last attempt (connectAndServe).
	dialled atomic.Pointer[carrierLogin]
	state   atomic.Value  // string: connecting, bound, backoff, auth_failed, stopped
	retry   chan struct{} // kicked by reload to retry after auth failure
	// cancel ends this bind alone (a reload that takes it away).
	cancel context.CancelFunc
	// up is closed when the bind is first bound.
	up     chan struct{}
	upOnce sync.Once
	// recycles counts the bind's recycles in a row: those with no
	// submit answered on its sessions in between (recycle.go);
	// recyclePause (nanoseconds) is the least wait before the bind dials
	// again after its last session ended (the session's redialIn, set by
	// connectAndServe), taken by run.
	recycles     atomic.Int32
	recyclePause atomic.Int64
}

func newCarrierBind(c *Carrier, index int, kind bindType) *carrierBind {
	b := &carrierBind{c: c, index: index, kind: kind, retry: make(chan struct{}, 1), up: make(chan struct{})}
	b.state.Store("stopped")
	return b
}

// bindKinds are the binds of each of a carrier's connections for a
// bind_mode.
func bindKinds(mode string) []bindType {
	if mode == "transmitter_receiver" {
		return []bindType{bindTX, bindRX}
	}
	return []bindType{bindTRX}
}

// bindList is the carrier's binds now.
func (c *Carrier) bindList() []*carrierBind { return *c.binds.Load() }

// NewCarrier makes a carrier; Start dials its binds.
func NewCarrier(cfg config.Carrier, health *Health, log *zap.Logger) *Carrier {
	c := &Carrier{Name: cfg.Name, log: log.With(zap.String("carrier", cfg.Name)), health: health,
		trialKick: make(chan struct{}, 1), firstTried: make(chan struct{})}
	c.cfg.Store(&cfg)
	c.live.Store(loginOf(&cfg))
	c.trace.Store(cfg.Trace)
	if l := newTPSWindow(cfg.MaxTPS); l != nil {
		c.limiter.Store(l)
	}
	d := &net.Dialer{}
	c.dialer = d.DialContext
	var list []*carrierBind
	for i := range max(cfg.Binds, 1) {
		for _, k := range bindKinds(cfg.BindMode) {
			list = append(list, newCarrierBind(c, i, k))
		}
	}
	c.binds.Store(&list)
	metricCarrierBinds.WithLabelValues(c.Name).Set(0)
	metricCarrierReloadRefused.WithLabelValues(c.Name).Set(0)
	c.mReceiptsAsked = metricReceiptsRequested.WithLabelValues(c.Name) // at 0 from the start
	return c
}

// noteAccepted counts a submit the carrier accepted that asked for a
// receipt whatever the outcome (registered_delivery bits 0-1: 1, or 3,
// SMPP 5.0's "on success"; 2 asks on failure only, and most such messages
// get none): the receipts the carrier owes.
func (c *Carrier) noteAccepted(regDeliv byte) {
	if w := regDeliv & 0x03; w == 1 || w == 3 {
		c.mReceiptsAsked.Inc()
		c.askedSince.Add(1)
	}
}

// noteReceipt notes a receipt from the carrier (matched or not).
func (c *Carrier) noteReceipt() {
	c.lastReceipt.Store(time.Now().UnixNano())
	c.askedSince.Store(0)
}

// Receipts is when the carrier last sent a receipt (zero: none since the
// start) and how many accepted submits asked for one since.
func (c *Carrier) Receipts() (last time.Time, askedSince int64) {
	if n := c.lastReceipt.Load(); n != 0 {
		last = time.Unix(0, n)
	}
	return last, c.askedSince.Load()
}

// ReloadRefused says, for the status page, that the carrier refused (or
// could not be reached with) the address or login of the last reload and
// why, or "": its binds run on the previous ones, which a restart would not
// use.
func (c *Carrier) ReloadRefused() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloadRefused
}

// setReloadRefused records why the trial of reload gen was refused (""
// clears it); the trial of an earlier reload changes nothing. c.mu is
// held.
func (c *Carrier) setReloadRefused(gen uint64, why string) {
	if c.trialGen.Load() != gen {
		return
	}
	c.reloadRefused = why
	v := 0.0
	if why != "" {
		v = 1
	}
	metricCarrierReloadRefused.WithLabelValues(c.Name).Set(v)
}

// Config is the carrier's current settings.
func (c *Carrier) Config() config.Carrier { return *c.cfg.Load() }

// Start dials every bind; they run until Stop.
func (c *Carrier) Start(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx != nil {
		return // started already
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	for _, b := range c.bindList() {
		c.startBind(b)
	}
}

// startBind runs b until its own cancel or the carrier's; c.mu is held.
func (c *Carrier) startBind(b *carrierBind) {
	ctx, cancel := context.WithCancel(c.ctx)
	b.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		b.run(ctx)
	}()
}

// Stop unbinds every bind and waits for them to end.
func (c *Carrier) Stop() {
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// Retire takes the carrier out of service: each bind leaves once the
// submits in flight on it are answered (at most wait), then Stop.
func (c *Carrier) Retire(wait time.Duration) {
	// No bind is picked from now on (a submit that loaded the carrier set
	// before the reload finds none free and goes the way of a carrier
	// without binds).
	old := c.bindList()
	c.binds.Store(&[]*carrierBind{})
	drainAll(old, wait, func(*carrierBind) {})
	c.Stop()
}

// drainAll drains every bind at once (each at most wait) and calls then
// for each as its drain ends; it returns when all have.
func drainAll(binds []*carrierBind, wait time.Duration, then func(*carrierBind)) {
	var wg sync.WaitGroup
	for _, b := range binds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.drain(wait)
			then(b)
		}()
	}
	wg.Wait()
}

// drain waits, at most wait, until no submit is in flight on b's session.
// b is no longer in the carrier's list, so none is added meanwhile.
func (b *carrierBind) drain(wait time.Duration) {
	if s := b.sess.Load(); s != nil {
		drainSession(s, wait)
	}
}

// drainSession waits, at most wait, until no request is in flight on s (or
// s ends); the caller made sure none is added.
func drainSession(s *Session, wait time.Duration) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond) // no event for an empty window; a reload is rare
	defer tick.Stop()
	for s.Outstanding() > 0 {
		select {
		case <-s.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// resize makes the binds match cfg's binds and bind_mode (a reload): binds
// that stay keep their connections, new ones dial, and the others leave
// once the submits in flight on them are answered (at most
// response_timeout), unbinding as on shutdown. When no bind that submits
// stays (bind_mode changed), the old ones leave only once a new one is
// bound, or connect_timeout has passed, so that the carrier does not count
// as down for the change.
func (c *Carrier) resize(cfg config.Carrier) {
	c.mu.Lock()
	defer c.mu.Unlock()
	type key struct {
		index int
		kind  bindType
	}
	old := c.bindList()
	have := make(map[key]*carrierBind, len(old))
	for _, b := range old {
		have[key{b.index, b.kind}] = b
	}
	var list, added []*carrierBind
	keptTX := false
	for i := range max(cfg.Binds, 1) {
		for _, k := range bindKinds(cfg.BindMode) {
			if b := have[key{i, k}]; b != nil {
				delete(have, key{i, k})
				list = append(list, b)
				keptTX = keptTX || k.transmits()
				continue
			}
			b := newCarrierBind(c, i, k)
			list = append(list, b)
			added = append(added, b)
		}
	}
	var retired []*carrierBind
	for _, b := range old {
		if have[key{b.index, b.kind}] == b {
			retired = append(retired, b)
		}
	}
	c.binds.Store(&list)
	c.log.Info("carrier binds changed by a reload", zap.Int("binds", len(list)), zap.Int("added", len(added)),
		zap.Int("leaving", len(retired)), zap.String("bind_mode", cfg.BindMode))
	if c.ctx == nil || c.ctx.Err() != nil {
		return // not running: the list is all there is
	}
	for _, b := range added {
		c.startBind(b)
	}
	if len(retired) == 0 {
		return
	}
	var firstUp <-chan struct{}
	waited := make(chan struct{}) // the watchers below end with the wait
	if !keptTX {
		up := make(chan struct{})
		var once sync.Once
		for _, b := range added {
			if b.kind.transmits() {
				go func() {
					select {
					case <-b.up:
						once.Do(func() { close(up) })
					case <-waited:
					}
				}()
			}
		}
		firstUp = up
	}
	ctx := c.ctx
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if firstUp != nil {
			t := time.NewTimer(cfg.ConnectTimeout.D() + cfg.ResponseTimeout.D())
			select {
			case <-firstUp:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		close(waited)
		drainAll(retired, cfg.ResponseTimeout.D(), func(b *carrierBind) { b.cancel() })
	}()
}

// Reconfigure applies new settings (reload). Connection settings take
// effect on the next connection: a new address or login once a trial bind
// shows that the carrier takes it (trialThenReconnect), new TLS settings at
// once; the bound binds then unbind and dial again. A bind stopped by an
// auth failure retries at once.
func (c *Carrier) Reconfigure(cfg config.Carrier) {
	old := c.cfg.Swap(&cfg)
	c.trace.Store(cfg.Trace)
	shape := max(cfg.Binds, 1) != max(old.Binds, 1) || cfg.BindMode != old.BindMode
	if shape {
		c.resize(cfg)
	}
	if cfg.MaxTPS != old.MaxTPS {
		// Kept otherwise: a new window would forget the last second's
		// sends and let max_tps more through in it.
		c.limiter.Store(newTPSWindow(cfg.MaxTPS))
	}
	// A change of trust (TLS on or off, the CA, the server name) applies
	// at once: a session verified under the trust the operator just
	// withdrew must not go on. So does a new login or address that comes
	// with new binds or a new bind_mode: the new binds dial with it anyway
	// (and on a bind_mode change the old ones leave), so a trial would
	// protect nothing.
	trust := old.TLS != cfg.TLS || old.TLSInsecure != cfg.TLSInsecure ||
		old.TLSServerName != cfg.TLSServerName || !bytes.Equal(old.TLSCAPEM, cfg.TLSCAPEM)
	reconnect := trust || old.Address != cfg.Address || old.SystemID != cfg.SystemID ||
		old.Password != cfg.Password || old.SystemType != cfg.SystemType ||
		old.InterfaceVersion != cfg.InterfaceVersion
	if reconnect && shape && !trust {
		c.log.Warn("reload changed this carrier's login or address together with its binds or bind_mode: the new settings are not tried first; the binds reconnect with them")
	}
	c.authUntil.Store(0) // a reload retries a refused login at once
	for _, b := range c.bindList() {
		select {
		case b.retry <- struct{}{}:
		default:
		}
	}
	if !reconnect {
		return
	}
	gen := c.trialGen.Add(1) // ends a trial of earlier connection settings
	c.mu.Lock()
	c.setReloadRefused(gen, "") // new settings: not refused (yet)
	if c.trialCancel != nil {
		c.trialCancel() // a trial of earlier settings, waiting to try again
		c.trialCancel = nil
	}
	if restored := loginOf(&cfg); !trust && !shape && *c.live.Load() == *restored {
		// Back to the login the sessions have (the usual fix of a typo
		// whose trial was refused): the trial above ended, and the binds
		// keep their sessions. Only a bind that reconnected meanwhile
		// with the settings in between (a session that dropped redials
		// with the file's) reconnects, and one connecting with them now
		// unbinds once up (connGen).
		c.connGen.Add(1)
		again := 0
		for _, b := range c.bindList() {
			if s, l := b.sess.Load(), b.login.Load(); s != nil && l != nil && *l != *restored {
				again++
				go s.Unbind(context.Background())
			}
		}
		c.mu.Unlock()
		c.log.Info("reload restored the address and login the binds are using; the trial of the settings in between stops",
			zap.Int("binds_reconnecting", again))
		return
	}
	if !trust && !shape && c.ctx != nil && c.ctx.Err() == nil && c.hasSession() {
		// Make before break: the binds keep the sessions they have until
		// a trial bind shows that the carrier takes the new settings.
		ctx, cancel := context.WithCancel(c.ctx)
		c.trialCancel = cancel
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer cancel()
			c.trialThenReconnect(ctx, gen)
		}()
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.reconnect()
}

// dialConfig is what a bind dials with: the carrier's settings, with the
// address and login the binds are using (live) in place of the file's
// while a trial of reloaded ones is pending (they differ only then: every
// other reload, and the trial's success, makes the file's live). A session
// that drops meanwhile comes back under the login the carrier takes, not
// the untried one: with a typo in the new password, it would stay down
// until the next reload, or for authRetry.
func (c *Carrier) dialConfig() *config.Carrier {
	cfg, live := c.cfg.Load(), c.live.Load()
	if *loginOf(cfg) == *live {
		return cfg
	}
	d := *cfg
	d.Address, d.SystemID, d.Password, d.SystemType = live.address, live.systemID, live.password, live.systemType
	d.InterfaceVersion = live.version
	return &d
}

// hasSession reports whether any bind has a session.
func (c *Carrier) hasSession() bool {
	for _, b := range c.bindList() {
		if b.sess.Load() != nil {
			return true
		}
	}
	return false
}

// reconnect makes every bind connect again with the current settings: the
// bound ones unbind (and reconnect), one connecting under older settings
// unbinds once it is up (connGen).
func (c *Carrier) reconnect() {
	c.live.Store(loginOf(c.cfg.Load()))
	c.connGen.Add(1)
	for _, b := range c.bindList() {
		if s := b.sess.Load(); s != nil {
			go s.Unbind(context.Background())
		}
	}
}

// reconnectRolling is reconnect for settings the carrier has just taken
// (a trial bind got in, its session trial): the binds unbind one at a
// time, each once the one before is bound again (or connect_timeout and
// the first backoff have passed), so that a carrier with two binds or more
// always has one: it does not count as down for a reload, nor send its new
// traffic to the modems for failover.up_after of probation. A carrier with
// fewer than two binds bound keeps the trial's session meanwhile as a
// bridge (Carrier.bridge): it carries the submits, takes receipts and MO,
// and counts as a bind; the first bind to dial with the new login once its
// old session has gone takes it over as its own session (takeBridge), so
// the carrier has a bound bind throughout and the SMSC sees no second bind
// with the new login (ESME_RALYBND from an SMSC that allows one per
// system_id). A bridge no bind took by the time the last bind has moved
// leaves as a bind does (the submits in flight answered, then unbind).
// Otherwise the trial unbinds first. A later reload (trialGen) or the end
// of ctx stops it; the binds not reached yet then reconnect as that reload
// decides (their login is not the live one).
func (c *Carrier) reconnectRolling(ctx context.Context, gen uint64, trial *bridgeSession) {
	if trial != nil {
		if c.Bound() >= 2 {
			trial.s.Unbind(ctx)
			trial.s.Wait()
		} else {
			c.openBridge(trial)
			defer c.closeBridge(ctx, trial)
		}
	}
	c.live.Store(loginOf(c.cfg.Load()))
	c.connGen.Add(1)
	// Binds held off by a refused login (the old one, refused since) dial
	// with the settings the trial showed the carrier takes, now.
	c.authUntil.Store(0)
	for _, b := range c.bindList() {
		select {
		case b.retry <- struct{}{}:
		default:
		}
	}
	tick := time.NewTicker(10 * time.Millisecond) // a reload is rare: polled
	defer tick.Stop()
	live := c.live.Load()
	for _, b := range c.bindList() {
		s := b.sess.Load()
		if s == nil {
			continue
		}
		if l := b.login.Load(); l != nil && *l == *live {
			continue // reconnected with the new settings meanwhile
		}
		// As checkBound: no new submit on s, those in flight answered
		// (at most response_timeout), then the unbind: a submit cut by it
		// would go to the modems, maybe a second time at the handset.
		if b.sess.CompareAndSwap(s, nil) {
			drainSession(s, c.cfg.Load().ResponseTimeout.D())
		}
		s.Unbind(context.WithoutCancel(ctx))
		deadline := time.NewTimer(c.cfg.Load().ConnectTimeout.D() + time.Second)
	wait:
		for {
			if ns := b.sess.Load(); ns != nil && ns != s {
				break
			}
			select {
			case <-ctx.Done():
				deadline.Stop()
				return
			case <-deadline.C:
				break wait
			case <-tick.C:
			}
			if c.trialGen.Load() != gen {
				deadline.Stop()
				return
			}
		}
		deadline.Stop()
		if trial == nil && b.sess.Load() == nil {
			// No trial showed the carrier takes the new settings (its
			// trial was one bind too many), and this bind is not back
			// with them: the binds not moved yet keep their sessions
			// under the previous ones, so that the carrier keeps a bind.
			c.log.Warn("a bind did not come back with the reloaded settings; the carrier's other binds keep theirs until they reconnect",
				zap.Int("bind", b.index))
			return
		}
	}
}

// isBindLimit reports whether err is a bind refused ESME_RALYBND (in a
// bind_resp or a generic_nack): the SMSC counts one bind too many for the
// account.
func isBindLimit(err error) bool {
	var br *BindRefusedError
	return errors.As(err, &br) && br.Status == statusAlyBnd
}

// bridgeSession is the carrier's bridge (Carrier.bridge): a trial bind's
// session s, bound as kind with login.
type bridgeSession struct {
	s     *Session
	login carrierLogin
	kind  bindType
	// refusing is the trial's refusal of deliveries (dialAndBind),
	// cleared when the trial becomes the bridge.
	refusing *atomic.Bool
}

// openBridge makes br (a trial bind's session) take submits, receipts and
// MO, and count as a bound bind (reconnectRolling), until a bind takes it
// over (takeBridge), it is closed (closeBridge, checkBound), or its
// session ends: then it counts no more, at once.
func (c *Carrier) openBridge(br *bridgeSession) {
	br.refusing.Store(false)
	n := c.bound.Add(1)
	c.bridge.Store(br)
	metricCarrierBinds.WithLabelValues(c.Name).Set(float64(n))
	c.health.noteBindUp(c)
	c.wg.Add(1) // the caller is a goroutine of c.wg: not at zero
	go func() {
		defer c.wg.Done()
		<-br.s.Done()
		if c.bridge.CompareAndSwap(br, nil) { // the SMSC ended it (or the connection dropped)
			c.bridgeGone(br)
		}
	}()
}

// takeBridge hands the bridge's session to a bind of kind about to dial
// with cfg, if the bridge is bound as kind with cfg's login and still up:
// the bind counts it from now on (the bridge's count passes to it), and
// receipts and MO on it go on being taken. nil otherwise.
func (c *Carrier) takeBridge(kind bindType, cfg *config.Carrier) *Session {
	br := c.bridge.Load()
	if !c.bridgeFits(br, kind, cfg) || !c.bridge.CompareAndSwap(br, nil) {
		return nil
	}
	return br.s
}

// bridgeFits reports whether a bind of kind dialling with cfg would take
// br over (takeBridge).
func (c *Carrier) bridgeFits(br *bridgeSession, kind bindType, cfg *config.Carrier) bool {
	if br == nil || br.kind != kind || br.login != *loginOf(cfg) || br.s.Ending() {
		return false
	}
	select {
	case <-br.s.Done():
		return false
	default:
		return true
	}
}

// closeBridge ends the bridge br unless a bind took it over or it ended
// already: no new submit on it, those in flight answered (at most
// response_timeout), then the unbind, and the bind it counted as is gone.
func (c *Carrier) closeBridge(ctx context.Context, br *bridgeSession) {
	if c.bridge.CompareAndSwap(br, nil) {
		c.endBridge(ctx, br)
	}
}

// endBridge is closeBridge for the caller that swapped br out of
// c.bridge.
func (c *Carrier) endBridge(ctx context.Context, br *bridgeSession) {
	drainSession(br.s, c.cfg.Load().ResponseTimeout.D())
	br.s.Unbind(context.WithoutCancel(ctx))
	br.s.Wait()
	c.bridgeGone(br)
}

// bridgeGone takes the bridge br, whose session has ended, out of the
// bound count.
func (c *Carrier) bridgeGone(br *bridgeSession) {
	c.endWatch(br.s)
	n := c.bound.Add(-1)
	metricCarrierBinds.WithLabelValues(c.Name).Set(float64(n))
	if c.ctx.Err() == nil { // as connectAndServe: a carrier stopping is no outage
		c.health.noteBindDown(c, br.s.Err())
	}
}

// staleConn reports whether a session a bind made with cfg, having read
// connGen as gen before it dialled, must go: a reload changed the
// connection settings meanwhile (connGen) and cfg is not what they are now
// (a bind that dialled with the settings a reload restored, or read the
// new ones just after the swap, stays).
func (c *Carrier) staleConn(gen uint64, cfg *config.Carrier) bool {
	if c.connGen.Load() == gen {
		return false
	}
	now := c.cfg.Load()
	return *loginOf(cfg) != *loginOf(now) || cfg.TLS != now.TLS || cfg.TLSInsecure != now.TLSInsecure ||
		cfg.TLSServerName != now.TLSServerName || !bytes.Equal(cfg.TLSCAPEM, now.TLSCAPEM)
}

// carrierLogin is what a trial bind tries: the address and the login,
// with the SMPP version the bind asks for (a carrier may refuse that too).
type carrierLogin struct {
	address, systemID, password, systemType, version string
}

func loginOf(cfg *config.Carrier) *carrierLogin {
	return &carrierLogin{cfg.Address, cfg.SystemID, cfg.Password, cfg.SystemType, cfg.InterfaceVersion}
}

// trialThenReconnect tries the carrier's new connection settings (a
// reload changed its address or login) on a bind of its own before
// the binds give up the sessions they have: a wrong password or address in
// the file must not take a working carrier down at 3 a.m. When the trial
// binds, every bind reconnects with the new settings (reconnectRolling: the
// trial unbinds first, or stays as the bridge a bind takes over). When
// the carrier refuses the credentials, or cannot be reached with the new
// address or TLS settings, the binds keep their sessions (a session that
// ends meanwhile reconnects with the address and login it had: dialConfig), the
// refusal is logged as an error, and the trial is tried again (credentials:
// after authRetry, jittered; else with backoff to a minute) until a later
// reload replaces it. Any other refusal of the trial bind (the carrier's
// limit on binds, an unknown command) proves nothing either way: the binds
// reconnect as before this check existed.
func (c *Carrier) trialThenReconnect(ctx context.Context, gen uint64) {
	log := c.log.With(zap.String("bind", "trial"))
	backoff := time.Second
	for {
		if c.trialGen.Load() != gen || ctx.Err() != nil {
			return
		}
		// Even with no session left (the carrier restarted), the binds
		// redial with the live login until the trial binds (dialConfig).
		cfg := c.cfg.Load()
		refusing := new(atomic.Bool)
		refusing.Store(true)
		kind := bindKinds(cfg.BindMode)[0]
		s, err := c.dialAndBind(ctx, cfg, kind, log, refusing)
		if err == nil {
			if c.trialGen.Load() != gen {
				s.Unbind(ctx)
				s.Wait()
				return
			}
			log.Info("carrier took the reloaded connection settings; its binds reconnect with them",
				zap.String("address", cfg.Address))
			c.mu.Lock()
			c.setReloadRefused(gen, "")
			c.mu.Unlock()
			c.reconnectRolling(ctx, gen, &bridgeSession{s: s, login: *loginOf(cfg), kind: kind, refusing: refusing})
			return
		}
		if ctx.Err() != nil {
			return
		}
		var ae *AuthError
		var ce *connectError
		wait := backoff/2 + rand.N(backoff/2+1)
		why := ""
		switch {
		case errors.As(err, &ae):
			wait = authRetry*3/4 + rand.N(authRetry/2+1)
			why = "the carrier refused the login of the last config reload (" + err.Error() + ")"
		case errors.As(err, &ce):
			backoff = min(backoff*2, time.Minute)
			why = "the carrier could not be reached, or did not answer the bind, with the address or login of the last config reload (" + err.Error() + ")"
		case isBindLimit(err):
			// The account is at its bind limit (the usual contract: as
			// many binds as configured): the trial says nothing of the
			// new settings. The binds move to them one at a time, each once
			// the one before is bound again, so that a carrier with two
			// binds or more is never without one (all at once, it went
			// down, then on probation, with its traffic on the modems).
			log.Info("carrier refused a trial bind with the reloaded settings as one bind too many (ESME_RALYBND: the account's bind limit); its binds move to them one at a time",
				zap.Error(err))
			c.mu.Lock()
			c.setReloadRefused(gen, "")
			c.mu.Unlock()
			c.reconnectRolling(ctx, gen, nil)
			return
		default:
			log.Warn("carrier refused a trial bind with the reloaded settings for a reason that says nothing about them; its binds reconnect with them",
				zap.Error(err))
			c.mu.Lock()
			c.setReloadRefused(gen, "") // an earlier try's refusal: the binds take the settings now
			c.mu.Unlock()
			c.reconnect()
			return
		}
		c.mu.Lock()
		c.setReloadRefused(gen, why+": its binds run on the previous address and login, but a restart would use the reloaded ones; fix the file and reload (tried again meanwhile)")
		c.mu.Unlock()
		log.Error("carrier refused the reloaded connection settings; its binds keep their sessions under the previous ones (fix the file and reload)",
			zap.Error(err), zap.String("address", cfg.Address), zap.Duration("retry_in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-c.trialKick:
		}
		t.Stop()
	}
}

// kickTrial makes a trial waiting to try again (trialThenReconnect) try
// now: a bind was refused the login it kept (the carrier may have applied
// the reloaded one since: a password rotated on both sides, the file
// first). If the trial binds, reconnectRolling moves the binds to it and
// wakes those held off; if not, the binds keep the login they have.
func (c *Carrier) kickTrial() {
	select {
	case c.trialKick <- struct{}{}:
	default:
	}
}

// Bound is the number of bound binds that can submit (transceivers, or
// transmitters with bind_mode transmitter_receiver).
func (c *Carrier) Bound() int { return int(c.bound.Load()) }

// BindStates lists each bind's state (status page); a receiver bind's state
// is prefixed "rx:".
func (c *Carrier) BindStates() []string {
	binds := c.bindList()
	out := make([]string, len(binds))
	for i, b := range binds {
		out[i] = b.state.Load().(string)
		if b.kind == bindRX {
			out[i] = "rx:" + out[i]
		}
	}
	return out
}

// pick returns the bound session with the most free window.
func (c *Carrier) pick() *Session {
	var best *Session
	start := int(c.rr.Add(1))
	binds := c.bindList()
	for i := range binds {
		b := binds[(start+i)%len(binds)]
		if !b.kind.transmits() {
			continue
		}
		s := b.sess.Load()
		if s == nil {
			continue
		}
		select {
		case <-s.Done():
			continue
		default:
		}
		if s.Ending() { // either side unbound it: takes nothing more
			continue
		}
		if best == nil || s.Free() > best.Free() {
			best = s
		}
	}
	if br := c.bridge.Load(); br != nil && !br.s.Ending() && (best == nil || br.s.Free() > best.Free()) {
		select {
		case <-br.s.Done():
		default:
			best = br.s
		}
	}
	return best
}

// SubmitResult is a carrier's answer to one submit_sm.
type SubmitResult struct {
	Status    uint32 // command_status (0 = accepted)
	MessageID string // the carrier's message_id when accepted
}

// Submit re-originates a submit_sm body on one of the carrier's binds and
// waits for the answer. Errors: ErrCarrierDown (nothing was sent),
// ErrNotSent, ErrResponseTimeout and ErrConnLost (the carrier may have it).
func (c *Carrier) Submit(ctx context.Context, body []byte) (SubmitResult, error) {
	return c.SubmitFor(ctx, "", body)
}

// SubmitFor is Submit for the message with our id: a late answer
// (lateGrace) is taken for it (late.go).
func (c *Carrier) SubmitFor(ctx context.Context, id string, body []byte) (SubmitResult, error) {
	if err := c.waitPause(ctx); err != nil {
		return SubmitResult{}, fmt.Errorf("%w: %v", ErrNotSent, err)
	}
	if c.legacy() {
		b, ok := legacySubmitBody(body)
		if !ok {
			return SubmitResult{}, fmt.Errorf("%w: %w", ErrNotSent, errTooLongFor33)
		}
		body = b
	}
	var tag any
	if id != "" {
		tag = id
	}
	f, s, err := c.request(ctx, cmdSubmitSM, body, tag)
	if err != nil {
		if errors.Is(err, ErrResponseTimeout) {
			c.noteSubmitTimeout(s)
			if isProbe(ctx) {
				c.noteProbeTimeout(s)
			}
		}
		return SubmitResult{}, err
	}
	res := submitResult(f)
	c.noteAnswer(s, res.Status)
	return res, nil
}

// legacy reports whether the carrier's binds are SMPP 3.3 ones
// (interface_version "3.3"): what it is sent carries no optional
// parameters (legacySubmitBody). It follows the version the binds use (a
// reload's is tried first, as a new login is: dialConfig).
func (c *Carrier) legacy() bool { return c.live.Load().version == "3.3" }

// errTooLongFor33 is why a message is not sent to an SMPP 3.3 carrier.
var errTooLongFor33 = errors.New("content longer than the 254 octets of an SMPP 3.3 short_message")

// noteAnswer acts on what a carrier's answer to a submit on s says about
// the link: s answers (noteSubmitAnswer), ESME_RINVBNDSTS (checkBound), or
// ESME_RTHROTTLED (throttled).
// ESME_RMSGQFUL does not pause the carrier: some SMSCs mean the queue of
// one handset (switched off), and a bulk to many such would stall the
// others; the message alone waits and is sent again (dispatcher).
func (c *Carrier) noteAnswer(s *Session, status uint32) {
	c.noteSubmitAnswer(s)
	if status == statusThrottled {
		c.throttled()
	}
	c.checkBound(s, status)
}

// throttled pauses the carrier's submits for throttlePause: the carrier
// answered ESME_RTHROTTLED, and asks for fewer submits, not for the one
// refused to be sent again among the others (SMSCs count the submits that
// ignore it, and some cut the bind). Kannel pauses a connection so after
// ESME_RTHROTTLED.
func (c *Carrier) throttled() {
	until := time.Now().Add(throttlePause).UnixNano()
	for {
		old := c.pausedUntil.Load()
		if old >= until || c.pausedUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// waitPause waits until the carrier's throttle pause is over.
func (c *Carrier) waitPause(ctx context.Context) error {
	for {
		d := time.Duration(c.pausedUntil.Load() - time.Now().UnixNano())
		if d <= 0 {
			return nil
		}
		if err := sleepCtx(ctx, d); err != nil {
			return err
		}
	}
}

// checkBound takes s out of service when the carrier answered a request on
// it with ESME_RINVBNDSTS: the SMSC no longer counts the session as bound
// (its session table lost it while TCP stayed up, say behind a proxy), and
// would refuse every later submit on it the same way, sending all traffic
// to the modems for as long as the connection lasts. The bind takes no new
// submit, unbinds once those in flight are answered (at most
// response_timeout) and binds again, as after a lost connection.
func (c *Carrier) checkBound(s *Session, status uint32) {
	if status != statusInvBndSts || s == nil {
		return
	}
	for _, b := range c.bindList() {
		if !b.sess.CompareAndSwap(s, nil) { // not picked from now on
			continue
		}
		c.log.Warn("carrier answered ESME_RINVBNDSTS: it no longer counts this bind as bound; binding again",
			zap.Int("bind", b.index))
		wait := c.cfg.Load().ResponseTimeout.D()
		go func() {
			drainSession(s, wait)
			s.Unbind(context.Background())
		}()
		return
	}
	// The bridge of a reload (reconnectRolling): it leaves as closeBridge
	// has it, and no bind takes it over; the binds dial.
	if br := c.bridge.Load(); br != nil && br.s == s && c.bridge.CompareAndSwap(br, nil) {
		c.log.Warn("carrier answered ESME_RINVBNDSTS on the reload's bridge session: it no longer counts it as bound; it leaves")
		go c.endBridge(context.Background(), br)
	}
}

// request sends one request (command id, body) on one of the carrier's
// binds, within its max_tps, and waits up to its response_timeout for the
// answer, which came on s. Errors as Submit's.
func (c *Carrier) request(ctx context.Context, id uint32, body []byte, tag any) (f Frame, s *Session, err error) {
	if err := c.limiter.Load().Wait(ctx); err != nil {
		return Frame{}, nil, fmt.Errorf("%w: %v", ErrNotSent, err)
	}
	if s = c.pick(); s == nil {
		return Frame{}, nil, ErrCarrierDown
	}
	f, err = s.RequestTagged(ctx, id, body, c.cfg.Load().ResponseTimeout.D(), tag)
	return f, s, err
}

// trySubmit is Submit for a caller that must not wait (a session's reader
// goroutine): it reports false at once, having sent nothing, when Submit
// would wait or fail before sending (no bind up, no free window slot on the
// bind it picks, the rate limit). Otherwise cl (a new call, with its
// asyncDone set) gets the outcome exactly once, where Session.requestAsync
// delivers it; that must not block. body is sent as is and must not change
// afterwards; now is the caller's clock reading, the start of the response
// timeout.
//
// *on is set to the session it sends on (for checkBound), before the
// outcome can arrive.
func (c *Carrier) trySubmit(body []byte, now time.Time, cl *call, on **Session) bool {
	if c.pausedUntil.Load() > now.UnixNano() {
		return false // throttled: Submit waits the pause out
	}
	if c.legacy() {
		b, ok := legacySubmitBody(body)
		if !ok {
			return false // the dispatcher's own path sends it elsewhere
		}
		body = b
	}
	s := c.pick()
	if s == nil || s.Free() == 0 {
		return false
	}
	*on = s
	l := c.limiter.Load()
	if !l.Allow() {
		return false
	}
	ok := s.requestAsync(cmdSubmitSM, body, now.Add(c.cfg.Load().ResponseTimeout.D()), cl)
	if !ok {
		l.giveBack()
	}
	return ok
}

// submitResult reads a carrier's answer to a submit_sm.
func submitResult(f Frame) SubmitResult {
	if f.ID == cmdGenericNack {
		st := f.Status
		if st == statusOK {
			st = statusSysErr
		}
		return SubmitResult{Status: st}
	}
	res := SubmitResult{Status: f.Status}
	if f.Status == statusOK {
		id := f.Body
		if i := bytes.IndexByte(id, 0); i >= 0 {
			id = id[:i]
		}
		res.MessageID = string(id)
	}
	return res
}

func (b *carrierBind) run(ctx context.Context) {
	c := b.c
	log := c.log.With(zap.Int("bind", b.index))
	if b.kind != bindTRX {
		log = log.With(zap.String("bind_type", b.kind.String()))
	}
	backoff := time.Second
	l := c.bindList()
	first := len(l) == 0 || l[0] == b
	// tried lets the other binds start once the first bind's first attempt
	// failed, after a refusal has set the auth hold (a bind closes it too,
	// when up).
	tried := func() {
		if first {
			c.firstTriedOnce.Do(func() { close(c.firstTried) })
		}
	}
	if !first {
		b.waitFirstTry(ctx)
	}
	// wasUp: the bind's session had been up and ended. Held off by
	// another bind's refusal (not of the credentials), it asks again at
	// once, alone: a carrier that refuses only the binds beyond its limit
	// must not keep a working bind down for the hold.
	wasUp := false
	for ctx.Err() == nil {
		wait, probe := c.authHold()
		if wait > 0 && wasUp && c.refusedHold.Load() && c.authProbing.CompareAndSwap(false, true) {
			wait, probe = 0, true
		}
		if wait > 0 {
			b.state.Store(c.holdState())
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-b.retry:
			}
			t.Stop()
			continue
		}
		b.state.Store("connecting")
		start := time.Now()
		err := b.connectAndServe(ctx, log)
		wasUp = b.state.Load() == "bound" // set by connectAndServe once bound, and only then
		// Recycled again with nothing answered since: a longer wait
		// (recycle.go).
		pause := time.Duration(b.recyclePause.Swap(0))
		if ctx.Err() != nil {
			if probe {
				c.authProbing.Store(false)
			}
			break
		}
		var ae *AuthError
		var re *BindRefusedError
		refused := errors.As(err, &re)
		if d := b.dialled.Load(); (errors.As(err, &ae) || refused) && d != nil && *d != *c.live.Load() {
			// Refused a login that is no longer the live one (a trial
			// succeeded meanwhile, and reconnectRolling moved the binds):
			// that refusal says nothing about the live login. Dial again.
			tried()
			if probe {
				c.authProbing.Store(false)
			}
			continue
		}
		if errors.As(err, &ae) {
			if *loginOf(c.cfg.Load()) != *c.live.Load() {
				c.kickTrial() // the kept login refused during a trial: try the reloaded one now
			}
			b.state.Store("auth_failed")
			wait := authRetry*3/4 + rand.N(authRetry/2+1)
			log.Error("carrier refused spareline's credentials; this bind tries again only after a config reload or a long wait",
				zap.String("status", StatusString(ae.Status)), zap.Duration("in", wait))
			c.health.noteBindDown(c, err)
			c.refusedHold.Store(false)
			c.holdAuth(wait) // before authProbing is cleared: no other bind asks meanwhile
			tried()
			if probe {
				c.authProbing.Store(false)
			}
			backoff = time.Second
			continue
		}
		if refused {
			// Not the credentials as such, but many SMSCs answer
			// ESME_RBINDFAIL for a wrong password or an address not on
			// the allow-list, and lock the account after a few: the
			// carrier's binds wait, one asking at a time (as above),
			// longer after each refusal in a row.
			n := c.refusals.Add(1)
			wait := refuseHold(n)
			b.state.Store("refused")
			log.Warn("carrier refused the bind; its binds ask again one at a time, after a wait that grows with each refusal (up to 5 minutes), or at once on a config reload",
				zap.Error(err), zap.Int32("refusals_in_a_row", n), zap.Duration("in", wait))
			c.refusedHold.Store(true)
			c.holdAuth(wait) // before authProbing is cleared: no other bind asks meanwhile
			tried()
			if probe {
				c.authProbing.Store(false)
			}
			backoff = time.Second
			continue
		}
		tried()
		if probe {
			c.authProbing.Store(false)
		}
		if time.Since(start) > 30*time.Second {
			backoff = time.Second
		}
		if c.bridgeFits(c.bridge.Load(), b.kind, c.dialConfig()) {
			// Its old session gone (a reload moving the binds): the
			// bridge carries the new login; take it over now.
			continue
		}
		if te := (*TLSError)(nil); errors.As(err, &te) && te.Verification {
			log.Error("carrier's TLS certificate refused; check carriers[].tls_ca and tls_server_name", zap.Error(err))
		}
		// Full jitter on [backoff/2, backoff): binds of many gateways that
		// lost a carrier at once do not return in step.
		wait = max(backoff/2+rand.N(backoff/2+1), pause)
		b.state.Store("backoff")
		log.Info("carrier bind down; reconnecting", zap.Error(err), zap.Duration("in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		case <-b.retry:
			t.Stop()
		}
		backoff = min(backoff*2, time.Minute)
	}
	b.state.Store("stopped")
}

// waitFirstTry holds a bind other than the first at start until the first
// bind's first attempt has an outcome (at most connect_timeout and a
// second): with a wrong password in the file, the carrier sees one
// refused login, then the auth hold keeps every bind off (authHold), not
// one refused login per bind at once (some SMSCs lock an account after
// three).
func (b *carrierBind) waitFirstTry(ctx context.Context) {
	t := time.NewTimer(b.c.cfg.Load().ConnectTimeout.D() + time.Second)
	defer t.Stop()
	select {
	case <-b.c.firstTried:
	case <-t.C:
	case <-ctx.Done():
	}
}

// authPoll is how often a bind held off by a refused login looks whether
// the bind asking again (authHold) got in.
const authPoll = time.Second

// authHold is how long a bind must wait before it dials, after the
// carrier refused the credentials: until authUntil, then while another
// bind asks again; probe is true for the one bind that may ask (it
// clears authProbing when its connection ends). A bind that gets in
// clears authUntil, and the others dial at their next look.
func (c *Carrier) authHold() (wait time.Duration, probe bool) {
	until := c.authUntil.Load()
	if until == 0 {
		return 0, false
	}
	if d := time.Duration(until - time.Now().UnixNano()); d > 0 {
		return d, false
	}
	if c.authProbing.CompareAndSwap(false, true) {
		return 0, true
	}
	return authPoll, false
}

// holdState is the state a bind held off by authHold shows: auth_failed
// after a refusal of the credentials, refused after another refusal.
func (c *Carrier) holdState() string {
	if c.refusedHold.Load() {
		return "refused"
	}
	return "auth_failed"
}

// refuseHold is how long the carrier's binds wait after the n-th refusal
// in a row of a bind (BindRefusedError): refuseRetry doubled n-1 times, at
// most refuseRetryMax, ±25% so that gateways refused together do not
// return in step.
func refuseHold(n int32) time.Duration {
	d := refuseRetry
	for i := int32(1); i < n && d < refuseRetryMax; i++ {
		d *= 2
	}
	d = min(d, refuseRetryMax)
	return d*3/4 + rand.N(d/2+1)
}

// holdAuth holds every bind of the carrier off for wait (a refused login):
// accounts get locked after a few failed logins, so one bind at a time
// asks again, at the pace of authRetry.
func (c *Carrier) holdAuth(wait time.Duration) {
	until := time.Now().Add(wait).UnixNano()
	for {
		old := c.authUntil.Load()
		if old >= until || c.authUntil.CompareAndSwap(old, until) {
			return
		}
	}
}

// TLSError is a failed TLS handshake with a carrier. Verification is
// true when the carrier's certificate was refused (unknown authority, wrong
// name, expired): an operator's configuration problem (tls_ca,
// tls_server_name), logged as such; the bind keeps retrying with backoff,
// as the carrier may be mid certificate rotation.
type TLSError struct {
	Address      string
	Verification bool
	Err          error
}

func (e *TLSError) Error() string {
	if e.Verification {
		return fmt.Sprintf("tls handshake with %s: certificate verification failed: %v", e.Address, e.Err)
	}
	return fmt.Sprintf("tls handshake with %s: %v", e.Address, e.Err)
}

func (e *TLSError) Unwrap() error { return e.Err }

// carrierTLSConfig is the client TLS configuration of a carrier: verified
// against tls_ca when set (else the system roots) for tls_server_name
// (else the host of address), or not verified with tls_insecure.
func carrierTLSConfig(cfg *config.Carrier) (*tls.Config, error) {
	name := cfg.TLSServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(cfg.Address)
	}
	tc := &tls.Config{ServerName: name, InsecureSkipVerify: cfg.TLSInsecure, MinVersion: tls.VersionTLS12} // #nosec G402 -- opt-in per carrier
	if len(cfg.TLSCAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.TLSCAPEM) {
			// config checked the bundle at load; this is a bug, not a
			// carrier fault.
			return nil, fmt.Errorf("carrier %s: tls_ca %s holds no certificate", cfg.Name, cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func (b *carrierBind) connectAndServe(ctx context.Context, log *zap.Logger) error {
	c := b.c
	gen := c.connGen.Load()
	cfg := c.dialConfig()
	b.dialled.Store(loginOf(cfg))
	// The bridge holds this login already (a reload moving the binds):
	// its session becomes this bind's, counted already.
	s := c.takeBridge(b.kind, cfg)
	adopted := s != nil
	if !adopted {
		var err error
		if s, err = c.dialAndBind(ctx, cfg, b.kind, log, nil); err != nil {
			if ctx.Err() == nil {
				c.health.noteBindError(c, err) // the status page's reason while no bind is up
			}
			return err
		}
	}
	if w := watchOf(s); w != nil {
		w.bind.Store(b) // its answers end the bind's recycles in a row (recycle.go)
	}
	b.login.Store(loginOf(cfg))
	b.sess.Store(s)
	b.state.Store("bound")
	c.firstTriedOnce.Do(func() { close(c.firstTried) })
	c.authUntil.Store(0) // the carrier takes the credentials: the binds held off dial
	c.refusals.Store(0)
	// A receiver bind brings receipts; it does not make the carrier able to
	// take submits, so health and the bound count ignore it.
	tx := b.kind.transmits()
	switch {
	case adopted: // a bridge is of a kind that transmits
		log.Info("carrier bound: the bind took over the reload's trial session, bound with its login already",
			zap.String("address", cfg.Address), zap.Int32("bound", c.bound.Load()))
		c.health.noteBindUp(c)
	case tx:
		n := c.bound.Add(1)
		metricCarrierBinds.WithLabelValues(c.Name).Set(float64(n))
		log.Info("carrier bound", zap.String("address", cfg.Address), zap.Int32("bound", n))
		c.health.noteBindUp(c)
	default:
		log.Info("carrier receiver bound", zap.String("address", cfg.Address))
	}
	// Only now, counted: a resize waiting for it (a bind_mode change)
	// unbinds the old binds, and the carrier must not count zero binds in
	// between.
	b.upOnce.Do(func() { close(b.up) })
	if c.staleConn(gen, cfg) {
		// Reconfigure changed the connection settings while this bind
		// connected under the old ones, and may not have seen the session.
		go s.Unbind(context.Background())
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		s.Unbind(context.Background())
	}
	b.sess.Store(nil)
	c.endWatch(s)
	b.recyclePause.Store(int64(redialIn(s)))
	if !tx {
		err := s.Err()
		s.Wait()
		return err
	}
	n := c.bound.Add(-1)
	metricCarrierBinds.WithLabelValues(c.Name).Set(float64(n))
	err := s.Err()
	if c.ctx.Err() == nil {
		// Not when the carrier stops (shutdown, or a reload removed it):
		// that is no outage, and logging one (at error level when it
		// was the last carrier) at every SIGTERM would cry wolf.
		c.health.noteBindDown(c, err)
	}
	s.Wait()
	return err
}

// connectError is a failure to reach the carrier at all (dial or TLS):
// on a trial of reloaded settings, the binds keep their sessions.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// dialAndBind connects to the carrier with cfg and binds as kind; the
// session it returns is bound (its deliver_sm go to c.onDeliver). A
// refusal for credentials is an *AuthError, a failure to connect (dial,
// TLS) a *connectError.
//
// A trial bind (trialThenReconnect; trial not nil) takes no delivery while
// trial is set: it may unbind at once, and an answer queued behind its
// unbind would be lost, the receipt then sent again and handled twice. It
// answers deliver_sm and data_sm with ESME_RX_T_APPN (a temporary refusal:
// the carrier sends it again, on a bind that stays). A trial kept as the
// bridge clears trial (openBridge) and takes them as a bind does.
func (c *Carrier) dialAndBind(ctx context.Context, cfg *config.Carrier, kind bindType, log *zap.Logger, trial *atomic.Bool) (*Session, error) {
	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout.D())
	defer cancel()
	conn, err := c.dialer(dctx, "tcp", cfg.Address)
	if err != nil {
		return nil, &connectError{fmt.Errorf("dial %s: %w", cfg.Address, err)}
	}
	if cfg.TLS {
		tcfg, err := carrierTLSConfig(cfg)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		tc := tls.Client(conn, tcfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			_ = conn.Close()
			var ve *tls.CertificateVerificationError
			return nil, &connectError{&TLSError{Address: cfg.Address, Verification: errors.As(err, &ve), Err: err}}
		}
		conn = tc
	}
	s := NewSession(conn, SessionConfig{
		Window:          max(cfg.Window, 1),
		ResponseTimeout: cfg.ResponseTimeout.D(),
		EnquireLink:     cfg.EnquireLink.D(),
		// Not before the bind_resp: a keep-alive of a session that is not
		// bound yet gets ESME_RINVBNDSTS, which ends the session.
		EnquireLinkAfterInput: true,
		Handler: func(s *Session, f Frame) {
			if trial != nil && trial.Load() && (f.ID == cmdDeliverSM || f.ID == cmdDataSM) {
				respondDeliver(s, f, statusRXTAppn)
				return
			}
			switch f.ID {
			case cmdDeliverSM:
				c.onDeliver(c, s, f)
			case cmdDataSM:
				// A receipt or an MO message by data_sm (SMPP 3.4 §4.7):
				// handled as the deliver_sm it stands for, answered with
				// data_sm_resp.
				body, err := dataSMAsDeliver(f.Body)
				if err != nil {
					status := statusInvMsgLen
					var be *BodyError
					if errors.As(err, &be) {
						status = be.Status
					}
					s.log.Warn("malformed data_sm from carrier", zap.Error(err))
					respondDeliver(s, f, status)
					return
				}
				f.Body = body
				c.onDeliver(c, s, f)
			case cmdAlertNotif:
				// No response (SMPP 3.4 §4.12).
			default:
				s.GenericNack(f.Seq, statusInvCmdID)
			}
		},
		Log:       log.With(zap.String("side", "carrier")),
		Trace:     &c.trace,
		LateGrace: lateGrace,
		OnLate:    c.late,
	})
	s.Value = &bindWatch{} // its submits' answers (recycle.go)
	s.Start()
	// bind_transceiver (SMPP 3.4 §4.1.5; bind_transmitter §4.1.1 and
	// bind_receiver §4.1.3 have the same body): system_id, password,
	// system_type, interface_version (0x34, or 0x33 for an SMPP 3.3
	// carrier), addr_ton, addr_npi, address_range.
	version := byte(0x34)
	if cfg.InterfaceVersion == "3.3" {
		version = 0x33
	}
	body := cstring(nil, cfg.SystemID)
	body = cstring(body, cfg.Password)
	body = cstring(body, cfg.SystemType)
	body = append(body, version, byte(cfg.AddrTON), byte(cfg.AddrNPI))
	body = cstring(body, cfg.AddressRange)
	cmd := cmdBindTransceiver
	switch kind {
	case bindTX:
		cmd = cmdBindTransmitter
	case bindRX:
		cmd = cmdBindReceiver
	}
	f, err := s.RequestTimeout(dctx, cmd, body, cfg.ConnectTimeout.D())
	if err != nil {
		s.Close()
		s.Wait()
		if dctx.Err() != nil && ctx.Err() == nil {
			// connect_timeout passed with no bind_resp: dctx (which also
			// bounded the dial) usually ends before the request's own
			// timer, and the session then reports the request as cut
			// (ErrConnLost); it is the SMSC that did not answer.
			err = ErrResponseTimeout
		}
		// No bind_resp (timed out, or the connection dropped: some SMSCs
		// close on a wrong password instead of answering it): on a trial,
		// as telling as a failed dial.
		return nil, &connectError{fmt.Errorf("bind: %w", err)}
	}
	if f.Status != statusOK || f.ID == cmdGenericNack {
		// A generic_nack is a refusal whatever its status (SMPP 3.4 §4.3;
		// some SMSCs send ESME_ROK in it).
		s.Close()
		s.Wait()
		switch f.Status {
		case statusInvPaswd, statusInvSysID, statusInvSysTyp:
			return nil, &AuthError{Status: f.Status}
		}
		hint := ""
		if kind == bindTRX && (f.ID == cmdGenericNack || f.Status == statusInvCmdID) {
			log.Error("carrier does not take bind_transceiver; set this carrier's bind_mode: transmitter_receiver",
				zap.String("status", StatusString(f.Status)))
			hint = "; set this carrier's bind_mode: transmitter_receiver"
		}
		return nil, &BindRefusedError{Status: f.Status, Nack: f.ID == cmdGenericNack, Hint: hint}
	}
	if v, ok := scInterfaceVersion(f.Body); ok && v < 0x34 && version >= 0x34 {
		// SMPP 3.4 §5.3.2.25: the SMSC says it speaks 3.3; optional
		// parameters in what spareline relays would be refused or misread.
		log.Warn("carrier says it speaks SMPP 3.3 (sc_interface_version in bind_resp); set this carrier's interface_version: 3.3",
			zap.String("sc_interface_version", fmt.Sprintf("0x%02X", v)))
	}
	return s, nil
}

// scInterfaceVersion reads the sc_interface_version parameter of a bind
// response body (system_id, then optional parameters: SMPP 3.4 §4.1.2).
func scInterfaceVersion(body []byte) (byte, bool) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return 0, false
	}
	for r := body[i+1:]; len(r) >= 4; {
		tag, l := binary.BigEndian.Uint16(r), int(binary.BigEndian.Uint16(r[2:]))
		if len(r) < 4+l {
			return 0, false
		}
		if tag == tagSCInterfaceVersion && l == 1 {
			return r[4], true
		}
		r = r[4+l:]
	}
	return 0, false
}
