package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linxGnu/gosmpp/pdu"
	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// The northbound server: spareline as the SMSC of the enterprise platform.
//
// A connection must bind (bind_transmitter, bind_receiver or
// bind_transceiver, SMPP 3.4 §4.1) within BindTimeout. The system_id must name
// an account (else ESME_RINVSYSID), the password must match (compared in
// constant time; else ESME_RINVPASWD) and the peer address must be in the
// account's allow list (else ESME_RBINDFAIL); a system_type over 12 octets
// is refused ESME_RINVSYSTYP, an address_range over 40 ESME_RINVPARLEN
// (SMPP 3.4 §4.1.1). A failed bind is answered,
// delayed by the number of recent failures from that address, and the
// connection is closed. An account may hold any number of sessions.
//
// A bound transmitter or transceiver may have Window submit_sm unanswered at
// once; they are answered as they complete, in any order. Beyond the window,
// or beyond the account's max_tps, spareline answers ESME_RTHROTTLED. Receipts
// and MO messages go out on the account's receiver and transceiver sessions.

// Account is a platform login, as the server checks it.
type Account struct {
	SystemID string
	pwHash   [32]byte
	Allow    []*net.IPNet
	MaxTPS   int
	MO       bool
	Trace    bool // config trace
	limiter  *rateLimiter
	// trace is the account's PDU trace switch, shared by its sessions and
	// kept across reloads (SetAccounts), set to Trace.
	trace *atomic.Bool
	// mSubmitsOK caches northbound_submits_total{status="ESME_ROK"}.
	mSubmitsOK lazyCounter
}

// NewAccounts builds the server's account table from the config.
func NewAccounts(cfg []config.Account) (map[string]*Account, error) {
	out := make(map[string]*Account, len(cfg))
	for i, a := range cfg {
		acct := &Account{SystemID: a.SystemID, pwHash: sha256.Sum256([]byte(a.Password)), MaxTPS: a.MaxTPS, MO: a.MO,
			Trace: a.Trace, limiter: newRateLimiter(a.MaxTPS), trace: new(atomic.Bool)}
		acct.trace.Store(a.Trace)
		for _, cidr := range a.Allow {
			_, n, err := net.ParseCIDR(cidr)
			if err != nil {
				ip := net.ParseIP(cidr)
				if ip == nil {
					return nil, fmt.Errorf("accounts[%d].allow: %q is not a CIDR", i, cidr)
				}
				bits := 32
				if ip.To4() == nil {
					bits = 128
				}
				n = &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}
			}
			acct.Allow = append(acct.Allow, n)
		}
		out[a.SystemID] = acct
	}
	return out, nil
}

func (a *Account) passwordOK(pw string) bool {
	h := sha256.Sum256([]byte(pw))
	return subtle.ConstantTimeCompare(h[:], a.pwHash[:]) == 1
}

func (a *Account) allowed(addr net.Addr) bool {
	if len(a.Allow) == 0 {
		return true
	}
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	for _, n := range a.Allow {
		if n.Contains(ta.IP) {
			return true
		}
	}
	return false
}

// ServerConfig tunes the northbound server.
type ServerConfig struct {
	Window           int
	EnquireLink      time.Duration
	IdleTimeout      time.Duration
	ResponseTimeout  time.Duration
	MaxCommandLength int
	BindTimeout      time.Duration
	// BodyTimeout bounds how long a started PDU may take to arrive
	// (slowloris); 0 means the session default (10s). Not a config key yet.
	BodyTimeout time.Duration
	Log         *zap.Logger
}

// ServerConfigFrom reads the smpp section.
func ServerConfigFrom(c config.SMPP, log *zap.Logger) ServerConfig {
	return ServerConfig{Window: c.Window, EnquireLink: c.EnquireLink.D(), IdleTimeout: c.IdleTimeout.D(),
		ResponseTimeout: c.ResponseTimeout.D(), MaxCommandLength: c.MaxCommandLength, BindTimeout: c.BindTimeout.D(), Log: log}
}

// Server accepts platform sessions.
type Server struct {
	cfg      atomic.Pointer[ServerConfig]
	accounts atomic.Pointer[map[string]*Account]
	disp     *Dispatcher
	log      *zap.Logger

	mu        sync.Mutex
	sessions  map[*northSession]struct{}
	receivers map[string][]*northSession // account -> bound rx/trx sessions
	failures  map[string]*bindFailures   // by source IP
	closing   bool

	// workers run the submits (a submit waits for a carrier and the store,
	// so it cannot run on the session's reader).
	workers *workerPool
	run     func(func()) // workers.run, as a func value made once (not per submit)

	wg sync.WaitGroup
}

type bindFailures struct {
	n    int
	last time.Time
}

// NewServer makes a server; Serve starts it on a listener.
func NewServer(cfg ServerConfig, accounts map[string]*Account, disp *Dispatcher) *Server {
	if cfg.Window <= 0 {
		cfg.Window = 256
	}
	if cfg.BindTimeout <= 0 {
		cfg.BindTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	s := &Server{disp: disp, log: cfg.Log, sessions: map[*northSession]struct{}{},
		receivers: map[string][]*northSession{}, failures: map[string]*bindFailures{}, workers: newWorkerPool()}
	s.run = s.workers.run
	s.cfg.Store(&cfg)
	s.accounts.Store(&accounts)
	disp.setReceivers(s)
	return s
}

// SetAccounts replaces the account table (reload); bound sessions stay.
func (s *Server) SetAccounts(a map[string]*Account) {
	// The sessions bound under an account keep its trace switch: a reload
	// turns it on or off for them too (and off for a removed account's).
	if old := s.accounts.Load(); old != nil {
		for id, o := range *old {
			if n := a[id]; n != nil {
				o.trace.Store(n.Trace)
				n.trace = o.trace
			} else {
				o.trace.Store(false)
			}
		}
	}
	s.accounts.Store(&a)
}

// SetConfig replaces the session settings for new sessions (reload).
func (s *Server) SetConfig(c ServerConfig) {
	old := s.cfg.Load()
	if c.Window <= 0 {
		c.Window = old.Window
	}
	if c.BindTimeout <= 0 {
		c.BindTimeout = old.BindTimeout
	}
	if c.Log == nil {
		c.Log = old.Log
	}
	s.cfg.Store(&c)
}

// Serve accepts connections until ctx ends or ln fails. When ctx ends the
// listener is closed; sessions are unbound by Shutdown.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.accept(conn)
	}
}

func (s *Server) accept(conn net.Conn) {
	cfg := s.cfg.Load()
	n := &northSession{srv: s, window: int32(cfg.Window)}
	// The session is made before n is listed (Shutdown and Sessions read
	// n.sess of every listed session), and started after.
	n.sess = NewSession(conn, SessionConfig{
		MaxCommandLength: cfg.MaxCommandLength,
		Window:           cfg.Window,
		ResponseTimeout:  cfg.ResponseTimeout,
		EnquireLink:      cfg.EnquireLink,
		IdleTimeout:      cfg.IdleTimeout,
		BodyTimeout:      cfg.BodyTimeout,
		Handler:          n.handle,
		// No enquire_link to a connection that has not bound
		// (bind_timeout closes it).
		KeepAliveIf: func() bool { return n.account() != nil },
		// unbind is for a bound session (SMPP 3.4 §4.2).
		UnbindStatus: func(*Session) uint32 {
			if n.account() == nil {
				return statusInvBndSts
			}
			return statusOK
		},
		// SMPP 3.4 §4.2: answer the submits still in flight before unbind_resp,
		// so a platform that unbinds right after a burst loses no answers.
		// Deliveries stop at once: the platform is ending the session.
		OnUnbind: func(*Session) {
			s.detachReceiver(n)
			n.waitInflight(30 * time.Second)
		},
		Log:       s.log.With(zap.String("side", "platform")),
		LateGrace: lateGrace,
		OnLate:    n.late,
	})
	n.sess.Value = n
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = conn.Close()
		return
	}
	s.sessions[n] = struct{}{}
	s.mu.Unlock()
	n.sess.Start()
	s.log.Debug("platform connected", zap.String("session", n.sess.ID), zap.Stringer("peer", conn.RemoteAddr()))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(cfg.BindTimeout)
		defer t.Stop()
		select {
		case <-n.sess.Done():
		case <-t.C:
			if n.account() == nil {
				n.sess.log.Info("no bind within bind_timeout, closing")
				n.sess.Close()
			}
			<-n.sess.Done()
		}
		n.sess.Wait()
		n.inflight.Wait()
		s.removeSession(n)
	}()
}

func (s *Server) removeSession(n *northSession) {
	s.mu.Lock()
	delete(s.sessions, n)
	s.detachReceiverLocked(n)
	s.mu.Unlock()
	acct, bt := n.boundAs()
	if acct != nil {
		metricNorthSessions.WithLabelValues(acct.SystemID, bt.String()).Dec()
		n.sess.log.Info("platform session ended", zap.String("account", acct.SystemID), zap.Error(n.sess.Err()))
	}
}

// detachReceiver takes n out of its account's receivers (no more
// deliveries go to it); a session that is not there is left alone.
func (s *Server) detachReceiver(n *northSession) {
	s.mu.Lock()
	s.detachReceiverLocked(n)
	s.mu.Unlock()
}

func (s *Server) detachReceiverLocked(n *northSession) {
	acct, bt := n.boundAs()
	if acct == nil || !bt.receives() {
		return
	}
	list := s.receivers[acct.SystemID]
	for i, r := range list {
		if r == n {
			s.receivers[acct.SystemID] = append(list[:i:i], list[i+1:]...)
			return
		}
	}
}

// receiversOf returns the bound receiver and transceiver sessions of an account.
func (s *Server) receiversOf(account string) []*Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.receivers[account]
	out := make([]*Session, 0, len(list))
	for _, n := range list {
		out = append(out, n.sess)
	}
	return out
}

// SessionInfo describes a bound platform session (status page).
type SessionInfo struct {
	Account string    `json:"account"`
	Bind    string    `json:"bind"`
	Peer    string    `json:"peer"`
	Since   time.Time `json:"since"`
}

// Sessions lists the bound platform sessions.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SessionInfo
	for n := range s.sessions {
		acct, bt := n.boundAs()
		if acct == nil {
			continue
		}
		out = append(out, SessionInfo{Account: acct.SystemID, Bind: bt.String(), Peer: n.sess.RemoteAddr().String(), Since: n.since})
	}
	return out
}

// Shutdown stops taking submits, lets in-flight ones finish (until ctx
// ends), then unbinds every session.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	list := make([]*northSession, 0, len(s.sessions))
	for n := range s.sessions {
		list = append(list, n)
	}
	s.mu.Unlock()
	for _, n := range list {
		n.mu.Lock() // see handleSubmit
		n.draining.Store(true)
		n.mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		for _, n := range list {
			n.inflight.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	var wg sync.WaitGroup
	for _, n := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.sess.Unbind(ctx)
		}()
	}
	wg.Wait()
	s.wg.Wait()
	s.workers.close()
}

type bindType int

const (
	bindNone bindType = iota
	bindTX
	bindRX
	bindTRX
)

func (b bindType) String() string {
	switch b {
	case bindTX:
		return "transmitter"
	case bindRX:
		return "receiver"
	case bindTRX:
		return "transceiver"
	}
	return "none"
}

func (b bindType) receives() bool  { return b == bindRX || b == bindTRX }
func (b bindType) transmits() bool { return b == bindTX || b == bindTRX }

// northSession is one platform connection. Its fields are written by the
// session's reader goroutine (bind) and read by others under mu.
type northSession struct {
	srv  *Server
	sess *Session

	mu    sync.Mutex
	acct  *Account
	bind  bindType
	since time.Time

	// legacy is set when the platform bound with interface_version below
	// 0x34 (SMPP 3.3): it gets no optional parameters (legacyBody).
	legacy atomic.Bool

	window   int32
	pending  atomic.Int32   // submits being processed
	inflight sync.WaitGroup // the same, to wait on at shutdown
	draining atomic.Bool
}

// waitInflight waits, at most d, for the session's submits to be answered.
func (n *northSession) waitInflight(d time.Duration) {
	done := make(chan struct{})
	go func() {
		n.inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (n *northSession) account() *Account {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.acct
}

func (n *northSession) boundAs() (*Account, bindType) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.acct, n.bind
}

func (n *northSession) handle(s *Session, f Frame) {
	defer func() {
		if r := recover(); r != nil {
			metricPanics.Inc()
			s.log.Error("panic in platform handler", zap.Any("panic", r), zap.Stack("stack"))
			s.GenericNack(f.Seq, statusSysErr)
		}
	}()
	switch f.ID {
	case cmdBindTransmitter, cmdBindReceiver, cmdBindTransceiver:
		n.handleBind(f)
	case cmdSubmitSM:
		n.handleSubmit(f)
	case cmdQuerySM:
		n.handleQuery(f) // query.go
	case cmdCancelSM:
		n.handleCancel(f) // query.go
	case cmdSubmitMulti:
		n.handleSubmitMulti(f) // multi.go
	case cmdDataSM:
		n.handleDataSM(f) // datasm.go
	case cmdReplaceSM:
		if acct, _ := n.boundAs(); acct == nil {
			s.Respond(f, statusInvBndSts, nil)
			return
		}
		// Valid SMPP 3.4 operations that spareline does not relay (yet): the
		// platform learns it at once instead of waiting for a timeout.
		s.Respond(f, statusInvCmdID, nil)
	case cmdDeliverSM:
		// An ESME does not send deliver_sm to its SMSC.
		s.Respond(f, statusInvBndSts, nil)
	default:
		// Unknown command ids, outbind and alert_notification from an
		// ESME: generic_nack (SMPP 3.4 §4.3.1); the session lives on.
		s.GenericNack(f.Seq, statusInvCmdID)
	}
}

// The longest system_type and address_range of a bind, in octets (SMPP 3.4
// §4.1.1: C-Octet Strings of at most 13 and 41 octets with their NUL).
const (
	maxSystemType   = 12
	maxAddressRange = 40
)

func (n *northSession) handleBind(f Frame) {
	s := n.sess
	if acct, _ := n.boundAs(); acct != nil {
		s.Respond(f, statusAlyBnd, nil)
		return
	}
	p, err := parsePDU(f)
	if err != nil {
		s.Respond(f, statusInvMsgLen, nil)
		return
	}
	req, ok := p.(*pdu.BindRequest)
	if !ok {
		s.GenericNack(f.Seq, statusSysErr)
		return
	}
	var bt bindType
	switch f.ID {
	case cmdBindTransmitter:
		bt = bindTX
	case cmdBindReceiver:
		bt = bindRX
	default:
		bt = bindTRX
	}
	accounts := *n.srv.accounts.Load()
	acct := accounts[req.SystemID]
	status, result := statusOK, "ok"
	switch {
	case len(req.SystemType) > maxSystemType:
		status, result = statusInvSysTyp, "system_type"
	case len(req.AddressRange.AddressRange) > maxAddressRange:
		// No status names address_range; ESME_RINVPARLEN (Invalid
		// Parameter Length, §5.1.3) says what is wrong with it.
		status, result = statusInvParLen, "address_range"
	case acct == nil:
		status, result = statusInvSysID, "system_id"
	case !acct.passwordOK(req.Password):
		status, result = statusInvPaswd, "password"
	case !acct.allowed(s.RemoteAddr()):
		status, result = statusBindFail, "address"
	}
	metricNorthBinds.WithLabelValues(result).Inc()
	if status != statusOK {
		delay := n.srv.noteBindFailure(s.RemoteAddr())
		// Never log the password; the system_id is not a secret.
		s.log.Warn("platform bind refused", zap.String("system_id", req.SystemID), zap.String("reason", result),
			zap.String("bind", bt.String()), zap.Duration("delay", delay))
		go func() {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-s.Done():
				return
			}
			s.Respond(f, status, nil)
			s.flushAndClose(errors.New("bind refused"))
		}()
		return
	}
	n.mu.Lock()
	n.acct, n.bind, n.since = acct, bt, time.Now()
	n.mu.Unlock()
	s.SetTrace(acct.trace) // from the bind's answer on
	body := cstring(nil, "spareline")
	if req.InterfaceVersion < 0x34 {
		// An SMPP 3.3 ESME knows no optional parameters: none in the
		// bind response nor in what it receives (legacyBody).
		n.legacy.Store(true)
	} else {
		// sc_interface_version (SMPP 3.4 §5.3.2.25): we speak 3.4.
		body = append(body, byte(tagSCInterfaceVersion>>8), byte(tagSCInterfaceVersion&0xFF), 0, 1, 0x34)
	}
	s.Respond(f, statusOK, body)
	metricNorthSessions.WithLabelValues(acct.SystemID, bt.String()).Inc()
	s.log.Info("platform bound", zap.String("account", acct.SystemID), zap.String("bind", bt.String()))
	if bt.receives() {
		n.srv.mu.Lock()
		n.srv.receivers[acct.SystemID] = append(n.srv.receivers[acct.SystemID], n)
		n.srv.mu.Unlock()
		n.srv.disp.kickDeliveries(acct.SystemID)
	}
}

// noteBindFailure counts a failed bind from addr's IP and returns how long
// to delay the answer: 0 for the first, then growing to 5 s, forgotten after
// a quiet minute.
func (s *Server) noteBindFailure(addr net.Addr) time.Duration {
	host, _, _ := net.SplitHostPort(addr.String())
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) > 10000 { // bounded memory under a flood from many sources
		for k, v := range s.failures {
			if now.Sub(v.last) > time.Minute {
				delete(s.failures, k)
			}
		}
		if len(s.failures) > 10000 {
			s.failures = map[string]*bindFailures{}
		}
	}
	bf := s.failures[host]
	if bf == nil || now.Sub(bf.last) > time.Minute {
		bf = &bindFailures{}
		s.failures[host] = bf
	}
	bf.n++
	bf.last = now
	d := time.Duration(bf.n-1) * 250 * time.Millisecond
	return min(d, 5*time.Second)
}

func (n *northSession) handleSubmit(f Frame) { n.submit(f, nil) }

// handleDataSM takes a platform's data_sm (§4.7) as the submit_sm it stands
// for (dataSMAsSubmit) and answers data_sm_resp.
func (n *northSession) handleDataSM(f Frame) { n.submit(f, dataSMAsSubmit) }

// admitSubmit answers a submit that cannot be taken whatever its body (no
// transmitting bind, draining, the window full) and returns nil; else the
// account.
func (n *northSession) admitSubmit(f Frame) *Account {
	s := n.sess
	acct, bt := n.boundAs()
	switch {
	case acct == nil || !bt.transmits():
		s.Respond(f, statusInvBndSts, nil)
	case n.draining.Load():
		n.logRefused(acct, statusMsgQFul)
		s.Respond(f, statusMsgQFul, nil)
	case n.pending.Load() >= n.window:
		n.throttled(f, acct)
	default:
		return acct
	}
	return nil
}

// throttled answers ESME_RTHROTTLED (the window or max_tps).
func (n *northSession) throttled(f Frame, acct *Account) {
	metricNorthSubmits.WithLabelValues(acct.SystemID, "ESME_RTHROTTLED").Inc()
	n.logRefused(acct, statusThrottled)
	n.sess.Respond(f, statusThrottled, nil)
}

// refuseSubmit answers a submit whose body was refused.
func (n *northSession) refuseSubmit(f Frame, acct *Account, what string, status uint32, err error) {
	n.sess.log.Info(what, zap.Error(err), zap.String("account", acct.SystemID))
	metricNorthSubmits.WithLabelValues(acct.SystemID, statusName(status)).Inc()
	n.logRefused(acct, status)
	n.sess.Respond(f, status, nil)
}

// logRefused writes a submit refused before any message was made to the
// message log (id "").
func (n *northSession) logRefused(acct *Account, status uint32) {
	if ml := n.srv.disp.mlog(); ml != nil {
		ml.refused(acct.SystemID, status)
	}
}

// enter counts a request in the window and the drain, or answers
// whenDraining and reports false when the drain began meanwhile. Checked
// under mu together with the Add: Shutdown sets draining under mu before it
// Waits, so no request slips in after the Wait began (and Add never races
// Wait, which sync.WaitGroup forbids). requestDone undoes it.
func (n *northSession) enter(f Frame, whenDraining uint32) bool {
	return n.enterN(f, whenDraining, 1)
}

// enterN is enter for a request that takes slots window slots (a
// submit_multi: one per destination); leave(slots) undoes it.
func (n *northSession) enterN(f Frame, whenDraining uint32, slots int) bool {
	n.mu.Lock()
	if n.draining.Load() {
		n.mu.Unlock() // Respond may wait on a peer that does not read
		n.sess.Respond(f, whenDraining, nil)
		return false
	}
	n.pending.Add(int32(slots))
	n.inflight.Add(1)
	n.mu.Unlock()
	return true
}

// submit handles a submit_sm, or with convert a request whose body convert
// turns into a submit_sm body (data_sm).
func (n *northSession) submit(f Frame, convert func([]byte) ([]byte, error)) {
	acct := n.admitSubmit(f)
	if acct == nil {
		return
	}
	if !acct.limiter.Allow() {
		n.throttled(f, acct)
		return
	}
	// One allocation holds the submit's state: the parsed message, the
	// answer's bookkeeping and the outcome's receiver (SubmitAsync).
	ns := &northSubmit{n: n, req: f.Header, acct: acct}
	body := f.Body
	var err error
	if convert != nil {
		body, err = convert(f.Body)
	}
	var sm ShortMessage // on the stack: SubmitAsync copies it when it keeps it
	if err == nil {
		err = parseShortMessage(&sm, body)
	}
	if err != nil {
		n.refuseSubmit(f, acct, "malformed "+submitName(f.ID), bodyStatus(err), err)
		return
	}
	if status, err := sm.validateContent(); err != nil {
		n.refuseSubmit(f, acct, "invalid "+submitName(f.ID)+" content", status, err)
		return
	}
	if !n.enter(f, statusMsgQFul) {
		n.logRefused(acct, statusMsgQFul)
		return
	}
	ns.start = time.Now()
	returned := false
	defer func() {
		// settled makes the answer and this panic guard exclusive: each
		// submit leaves the window and the drain exactly once.
		if !returned && ns.settled.CompareAndSwap(false, true) {
			// SubmitAsync panicked (handle recovers and nacks): this
			// submit gets no other answer, even if some part of it went on.
			n.requestDone()
		}
	}()
	// The answer is given where the outcome is known (a carrier session's
	// reader, a goroutine of the store, a worker: SubmitAsync), without waiting
	// there: a full write queue hands the answer to a worker.
	n.srv.disp.SubmitAsync(acct.SystemID, &sm, body, ns.start, n.srv.run, ns, &ns.relay)
	returned = true
}

// northSubmit is one submit of a platform session, from its reading to
// its answer.
type northSubmit struct {
	n       *northSession
	req     Header // of the submit (its answer needs no body)
	acct    *Account
	start   time.Time
	settled atomic.Bool // answered, or nacked after a panic
	relay   asyncSubmit // SubmitAsync's state, in the same allocation
}

// submitted answers the platform (SubmitAsync's outcome).
func (ns *northSubmit) submitted(res SubmitOutcome) {
	if !ns.settled.CompareAndSwap(false, true) {
		return // nacked after a panic
	}
	n, s := ns.n, ns.n.sess
	n.release(1)
	// The message log's line before the answer: once the platform has its
	// answer, the line is in the log's buffer (a SIGHUP's reopen after a
	// rotation writes it to the file it belongs to).
	if ml := n.srv.disp.mlog(); ml != nil {
		ml.submitted(ns.acct.SystemID, res, "", "", 0)
	}
	if res.Status == statusOK {
		if s.tryRespondID(Frame{Header: ns.req}, res.Status, res.ID) {
			n.submitAnswered(ns.acct, res, ns.start)
			return
		}
		n.srv.run(func() {
			s.respondID(Frame{Header: ns.req}, res.Status, res.ID)
			n.submitAnswered(ns.acct, res, ns.start)
		})
		return
	}
	// SMPP 3.4 §4.4.2: no body when command_status is not 0.
	if s.TryRespond(Frame{Header: ns.req}, res.Status, nil) {
		n.submitAnswered(ns.acct, res, ns.start)
		return
	}
	n.srv.run(func() {
		s.Respond(Frame{Header: ns.req}, res.Status, nil)
		n.submitAnswered(ns.acct, res, ns.start)
	})
}

// submitAnswered counts a submit answered (metrics, the drain; its window
// slot was released before the answer was queued).
func (n *northSession) submitAnswered(acct *Account, res SubmitOutcome, start time.Time) {
	if res.Status == statusOK {
		acct.mSubmitsOK.get(metricNorthSubmits, acct.SystemID, statusNameOK).Inc()
	} else {
		metricNorthSubmits.WithLabelValues(acct.SystemID, statusName(res.Status)).Inc()
	}
	observeSubmitLatency(res.Path, time.Since(start).Seconds())
	n.inflight.Done()
}
