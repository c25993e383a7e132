package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
)

// Failover: the backup path of the seed patent ([0020]-[0026]).
//
// When a carrier cannot take a message, spareline answers the platform
// itself (OK and our id, once the message is durable in the store's modem
// queue) and the modem pool sends it by AT+CMGS:
//
//   - carrier down (no bind, or marked down by timeouts): queued at once;
//   - carrier on probation: new traffic is queued, queued traffic goes back
//     to the carrier (health.go);
//   - a transient error status (anything but a number error or a
//     throttle, status.go): queued;
//   - no answer within response_timeout, or the connection lost with the
//     submit in flight: the outcome is unknown, the carrier may have sent it.
//     on_unknown "resend" queues it now (a possible duplicate, counted in
//     spareline_possible_duplicates_total); "hold" queues it due after
//     hold_for, giving the carrier's own delivery a head start;
//   - a failed carrier receipt (UNDELIV, EXPIRED, REJECTD, DELETED, UNKNOWN)
//     with resend_failed_receipts: queued, and the platform gets only the
//     modem's outcome as its receipt.
//
// Queue workers take entries by priority_flag then age. Before sending by
// modem a worker checks: an expired validity_period gives an EXPIRED
// receipt; a carrier that is up (or on probation) again takes the message
// back; otherwise the attempt is recorded (state modem, attempts+1) and the
// pool sends it. Entries are leased: a worker that dies leaves them to be
// claimed again when the lease passes (queueLease).
//
// Receipts: a modem's +CDS status report becomes a DELIVRD or UNDELIV
// receipt with our id. Where no report comes within modem_receipt_timeout,
// the platform gets a receipt with stat ACCEPTD ("the network accepted it;
// final outcome unknown"), err:000. That timer lives in memory: after a
// restart, messages sent by modem before it get no timeout receipt (the
// report itself still maps while the pool remembers the send).

// ModemSender is the modem pool as the failover path uses it.
type ModemSender interface {
	Send(ctx context.Context, id string, s sms.Submit) (*modem.Sent, error)
	Reports() <-chan modem.Report
	Incoming() <-chan modem.Incoming
	Status() []modem.ModemStatus
}

var (
	metricQueueDepth = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_modem_queue_depth", Help: "Messages waiting in the modem queue.",
	})
	metricQueueOldest = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_modem_queue_oldest_seconds", Help: "Age of the oldest message in the modem queue.",
	})
	// possible duplicates: messages resent by modem whose carrier outcome was unknown.
	metricPossibleDup = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_possible_duplicates_total", Help: "Messages sent by modem after an unknown carrier outcome.",
	}, []string{"carrier"})
	// modem_path_total result: sent, expired, returned (back to carrier), failed, permanent.
	metricModemPath = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_modem_path_total", Help: "Queued messages by outcome.",
	}, []string{"result"})
)

// FailoverConfig is the failover policy.
type FailoverConfig struct {
	CountryCode          string
	OnUnknown            string // resend or hold
	HoldFor              time.Duration
	ModemReceiptTimeout  time.Duration
	ResendFailedReceipts bool
	Workers              int // concurrent queue workers; default modems+2
	Worker               string
}

const queueLease = 5 * time.Minute

type sendingState struct {
	early []modem.Report
}

// Failover is the modem path.
type Failover struct {
	d    *Dispatcher
	pool ModemSender
	log  *zap.Logger

	mu  sync.Mutex
	cfg FailoverConfig
	// awaiting: messages sent by modem waiting for a status report.
	awaiting map[string]*time.Timer
	// sending: messages inside pool.Send or not yet recorded as sent; a
	// status report that overtakes the record waits here.
	sending map[string]*sendingState
	// delivered: parts reported delivered, per message.
	delivered map[string]int

	kick chan struct{}
	wg   sync.WaitGroup
}

// NewFailover installs the modem path on the dispatcher.
func NewFailover(d *Dispatcher, pool ModemSender, cfg FailoverConfig, log *zap.Logger) *Failover {
	if cfg.Workers <= 0 {
		cfg.Workers = 3
	}
	if cfg.Worker == "" {
		cfg.Worker = "spareline-" + d.ids.Next()[16:]
	}
	f := &Failover{d: d, pool: pool, cfg: cfg, log: log, awaiting: map[string]*time.Timer{},
		sending: map[string]*sendingState{}, delivered: map[string]int{}, kick: make(chan struct{}, 1)}
	d.SetFailover(f)
	return f
}

// SetConfig changes the policy (reload).
func (f *Failover) SetConfig(cfg FailoverConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cfg.Workers, cfg.Worker = f.cfg.Workers, f.cfg.Worker
	f.cfg = cfg
}

func (f *Failover) config() FailoverConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

// Run runs the queue workers and the report and MO readers until ctx ends.
func (f *Failover) Run(ctx context.Context) {
	for range f.cfg.Workers {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.worker(ctx)
		}()
	}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		f.reports(ctx)
	}()
	go func() {
		defer f.wg.Done()
		f.gauges(ctx)
	}()
	<-ctx.Done()
	f.wg.Wait()
	f.mu.Lock()
	for _, t := range f.awaiting {
		t.Stop()
	}
	f.mu.Unlock()
}

func (f *Failover) kickWorkers() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *Failover) probeEvery(c *Carrier) time.Duration {
	return max(2*c.Config().ResponseTimeout.D(), time.Second)
}

func (f *Failover) anyModemUp() bool {
	for _, s := range f.pool.Status() {
		if s.State == modem.StateUp {
			return true
		}
	}
	return false
}

func (f *Failover) modemStatus() any { return f.pool.Status() }

// queue makes a new message durable in the modem queue and answers OK.
func (f *Failover) queue(ctx context.Context, m *store.Message, reason string, log *zap.Logger) SubmitOutcome {
	if err := f.enqueue(ctx, m, reason, time.Now()); err != nil {
		log.Error("store write failed; refusing the submit", zap.Error(err))
		return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
	}
	log.Debug("queued for the modem pool", zap.String("reason", reason))
	return SubmitOutcome{ID: m.ID, Status: statusOK, Path: pathModem}
}

func (f *Failover) enqueue(ctx context.Context, m *store.Message, reason string, due time.Time) error {
	m.State = store.StateQueued
	m.Note = reason
	if err := f.d.store.PutMessage(ctx, m); err != nil {
		return err
	}
	if err := f.d.store.EnqueueModem(ctx, m.ID, m.Priority, due); err != nil {
		return err
	}
	f.kickWorkers()
	return nil
}

// afterCarrierFailure queues a message its carrier did not take.
func (f *Failover) afterCarrierFailure(ctx context.Context, m *store.Message, reason string, mayHave bool, log *zap.Logger) SubmitOutcome {
	due := time.Now()
	cfg := f.config()
	if mayHave {
		if cfg.OnUnknown == "hold" {
			due = due.Add(cfg.HoldFor)
			reason += ", held"
		} else {
			reason += ", possible duplicate"
			metricPossibleDup.WithLabelValues(m.Carrier).Inc()
		}
	}
	if err := f.enqueue(ctx, m, reason, due); err != nil {
		log.Error("store write failed; refusing the submit", zap.Error(err))
		if mayHave {
			return SubmitOutcome{Status: statusSysErr, Path: pathError}
		}
		return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
	}
	return SubmitOutcome{ID: m.ID, Status: statusOK, Path: pathModem}
}

var failedStats = map[string]bool{"UNDELIV": true, "EXPIRED": true, "REJECTD": true, "DELETED": true, "UNKNOWN": true}

// onFailedReceipt resends by modem a message whose carrier receipt failed.
func (f *Failover) onFailedReceipt(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, stat string) (bool, error) {
	if !f.config().ResendFailedReceipts || !failedStats[stat] || m.State != store.StateSent {
		return false, nil
	}
	metricFailovers.WithLabelValues(c.Name, "receipt").Inc()
	f.log.Info("carrier receipt failed; resending by modem", zap.String("msg", m.ID), zap.String("carrier", c.Name),
		zap.String("stat", stat))
	return true, f.enqueue(ctx, m, "carrier receipt "+stat, time.Now())
}

func (f *Failover) worker(ctx context.Context) {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for ctx.Err() == nil {
		id, err := f.d.store.ClaimModem(ctx, f.cfg.Worker, queueLease)
		if err != nil {
			if !errors.Is(err, store.ErrEmpty) && ctx.Err() == nil {
				f.log.Warn("modem queue unreadable", zap.Error(err))
			}
			select {
			case <-ctx.Done():
			case <-f.kick:
			case <-poll.C:
			}
			continue
		}
		f.process(ctx, id)
	}
}

// process handles one claimed queue entry.
func (f *Failover) process(ctx context.Context, id string) {
	st := f.d.store
	log := f.log.With(zap.String("msg", id))
	m, err := st.GetMessage(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		log.Warn("queued message has no record (expired); dropped")
		_ = st.AckModem(ctx, id)
		return
	}
	if err != nil {
		log.Warn("store read failed; retrying later", zap.Error(err))
		_ = st.ReleaseModem(ctx, id, time.Now().Add(5*time.Second))
		return
	}
	if m.State == store.StateDone || m.State == store.StateFailed {
		_ = st.AckModem(ctx, id)
		return
	}
	sm, err := ParseShortMessage(m.Body)
	if err != nil { // cannot happen: it was parsed when submitted
		log.Error("stored body unparseable; dropped", zap.Error(err))
		_ = st.AckModem(ctx, id)
		return
	}
	now := time.Now()
	if !m.Expires.IsZero() && now.After(m.Expires) {
		metricModemPath.WithLabelValues("expired").Inc()
		f.finish(ctx, m, sm, "EXPIRED", "000", "validity period passed in the modem queue")
		_ = st.AckModem(ctx, id)
		return
	}
	// The original carrier is back: it is fast, the modem is not.
	// Only messages queued because their carrier was down go back: one that
	// its carrier just failed (an error, a timeout, a failed receipt) goes by
	// modem, not through the same carrier again.
	if c := (*f.d.carriers.Load())[m.Carrier]; c != nil && f.d.health.State(c.Name) != StateDown &&
		(m.Note == "down" || m.Note == "route") {
		if f.backToCarrier(ctx, c, m, sm, log) {
			_ = st.AckModem(ctx, id)
			return
		}
	}
	if !f.anyModemUp() {
		// Nothing can send now: leave it queued (a carrier may come back first).
		_ = st.ReleaseModem(ctx, id, time.Now().Add(time.Second))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	m.State = store.StateModem
	m.Attempts++
	if err := st.PutMessage(ctx, m); err != nil { // the attempt is recorded before it is made
		log.Warn("store write failed; retrying later", zap.Error(err))
		_ = st.ReleaseModem(ctx, id, time.Now().Add(5*time.Second))
		return
	}
	sub := sms.Submit{Dest: f.modemDest(m.Dest), DataCoding: sm.DataCoding, UDHI: sm.UDHI(), Payload: sm.Payload(),
		StatusReport: m.RegDeliv&0x03 != 0}
	if !m.Expires.IsZero() {
		sub.Validity = time.Until(m.Expires)
	}
	f.mu.Lock()
	f.sending[m.ID] = &sendingState{}
	f.mu.Unlock()
	defer f.recorded(ctx, m.ID)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	sent, err := f.pool.Send(sctx, m.ID, sub)
	cancel()
	if err != nil {
		var se *modem.SendError
		if errors.As(err, &se) && se.Permanent {
			metricModemPath.WithLabelValues("permanent").Inc()
			log.Info("modem send failed permanently", zap.Error(err))
			stat := "UNDELIV"
			if se.NumberError {
				stat = "REJECTD"
			}
			f.finish(ctx, m, sm, stat, fmt.Sprintf("%03d", se.Code%1000), err.Error())
			_ = st.AckModem(ctx, id)
			return
		}
		metricModemPath.WithLabelValues("failed").Inc()
		log.Warn("modem send failed; will retry", zap.Error(err))
		m.State, m.Note = store.StateQueued, err.Error()
		_ = st.PutMessage(context.WithoutCancel(ctx), m)
		_ = st.ReleaseModem(context.WithoutCancel(ctx), id, time.Now().Add(2*time.Second))
		return
	}
	metricModemPath.WithLabelValues("sent").Inc()
	m.State, m.Modem, m.ModemRefs, m.Note = store.StateModemSent, sent.Modem, sent.Refs, "sent by modem"
	if m.RegDeliv&0x03 == 0 {
		m.State = store.StateDone
	}
	if err := st.PutMessage(context.WithoutCancel(ctx), m); err != nil {
		log.Warn("store write after a modem send failed", zap.Error(err))
	}
	_ = st.AckModem(context.WithoutCancel(ctx), id)
	log.Debug("sent by modem", zap.String("modem", sent.Modem), zap.Ints("refs", sent.Refs))
	if m.State == store.StateModemSent {
		f.awaitReport(m.ID)
	}
}

// recorded ends a send: reports that arrived before the record are handled now.
func (f *Failover) recorded(ctx context.Context, id string) {
	f.mu.Lock()
	st := f.sending[id]
	delete(f.sending, id)
	f.mu.Unlock()
	if st != nil {
		for _, r := range st.early {
			f.handleReport(context.WithoutCancel(ctx), r)
		}
	}
}

// backToCarrier tries the message on its recovered carrier. It reports
// whether the message is finished with (accepted, or refused for its number).
func (f *Failover) backToCarrier(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, log *zap.Logger) bool {
	res, err := c.Submit(ctx, m.Body)
	if err != nil {
		if errors.Is(err, ErrResponseTimeout) {
			f.d.health.Note(c.Name, OutcomeTimeout)
		}
		return false
	}
	switch Classify(res.Status) {
	case ClassOK:
		f.d.health.Note(c.Name, OutcomeAnswered)
		m.CarrierID = canonicalCarrierID(c.Config().ReceiptID, res.MessageID, false)
		m.State, m.Note = store.StateSent, "returned to carrier"
		m.Attempts++
		if err := f.d.store.PutMessage(ctx, m); err == nil {
			f.d.adoptOrphan(ctx, c, m)
		}
		metricModemPath.WithLabelValues("returned").Inc()
		log.Debug("queued message went back to its carrier")
		return true
	case ClassNumber:
		f.d.health.Note(c.Name, OutcomeAnswered)
		f.finish(ctx, m, sm, "REJECTD", "000", "carrier refused the number: "+StatusString(res.Status))
		return true
	default:
		return false
	}
}

// modemDest writes a normalised destination for TP-DA: national numbers in
// international form (the modem's SIM may roam), others as they are.
func (f *Failover) modemDest(dest string) string {
	if strings.HasPrefix(dest, "+") {
		return dest
	}
	cc := f.config().CountryCode
	if cc != "" && len(dest) == 11 && dest[0] == '1' {
		return "+" + cc + dest
	}
	return dest
}

func (f *Failover) awaitReport(id string) {
	timeout := f.config().ModemReceiptTimeout
	if timeout <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.awaiting[id]; old != nil {
		old.Stop()
	}
	f.awaiting[id] = time.AfterFunc(timeout, func() {
		f.mu.Lock()
		delete(f.awaiting, id)
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := f.d.store.GetMessage(ctx, id)
		if err != nil || m.State != store.StateModemSent {
			return
		}
		sm, err := ParseShortMessage(m.Body)
		if err != nil {
			return
		}
		f.finish(ctx, m, sm, "ACCEPTD", "000", "no status report from the network in time")
	})
}

// reports turns the pool's status reports and incoming messages into
// deliveries for the platform.
func (f *Failover) reports(ctx context.Context) {
	// Reports of multi-part messages: the receipt waits for every part, or
	// goes out at the first part that failed.
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-f.pool.Reports():
			if r.ID == "" || r.Status == nil || r.Status.Temporary() {
				continue
			}
			f.mu.Lock()
			if st := f.sending[r.ID]; st != nil {
				st.early = append(st.early, r) // the send is not recorded yet
				f.mu.Unlock()
				continue
			}
			f.mu.Unlock()
			f.handleReport(ctx, r)
		case in := <-f.pool.Incoming():
			f.incoming(ctx, in)
		}
	}
}

// handleReport turns a status report into the message's receipt: it waits
// for every part to be delivered, or goes out at the first failed part.
func (f *Failover) handleReport(ctx context.Context, r modem.Report) {
	m, err := f.d.store.GetMessage(ctx, r.ID)
	if err != nil || m.State != store.StateModemSent {
		return
	}
	f.mu.Lock()
	if r.Status.Delivered() {
		f.delivered[r.ID]++
		if f.delivered[r.ID] < max(r.Parts, 1) {
			f.mu.Unlock()
			return
		}
	}
	delete(f.delivered, r.ID)
	if t := f.awaiting[r.ID]; t != nil {
		t.Stop()
		delete(f.awaiting, r.ID)
	}
	f.mu.Unlock()
	sm, err := ParseShortMessage(m.Body)
	if err != nil {
		return
	}
	stat := "DELIVRD"
	if !r.Status.Delivered() {
		stat = "UNDELIV"
	}
	f.finish(ctx, m, sm, stat, fmt.Sprintf("%03d", r.Status.Status), "status report from "+r.Modem)
}

// finish records the final outcome and, when the platform asked, a receipt.
func (f *Failover) finish(ctx context.Context, m *store.Message, sm *ShortMessage, stat, errCode, note string) {
	m.State, m.Note = store.StateDone, note
	ctx = context.WithoutCancel(ctx)
	want := m.RegDeliv & 0x03
	// SMPP 3.4 §5.2.17: 1 = receipt on success or failure, 2 = on failure.
	if want == 0 || (want == 2 && stat == "DELIVRD") {
		_ = f.d.store.PutMessage(ctx, m)
		return
	}
	body := buildReceipt(m, sm, stat, errCode, time.Now())
	del := &store.Delivery{ID: f.d.ids.Next(), Account: m.Account, Body: body, MsgID: m.ID, Created: time.Now()}
	if err := f.d.store.AddDelivery(ctx, del, m); err != nil {
		f.log.Error("store write of a modem receipt failed", zap.String("msg", m.ID), zap.Error(err))
		return
	}
	metricReceipts.WithLabelValues("modem", statLabel(stat)).Inc()
	f.d.kickDeliveries(m.Account)
}

// message_state values (SMPP 3.4 §5.2.28).
var messageStates = map[string]byte{"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5,
	"ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8}

// buildReceipt writes a delivery receipt deliver_sm body (SMPP 3.4 §4.6.1,
// Appendix B text) from the handset back to the message's source.
func buildReceipt(m *store.Message, sm *ShortMessage, stat, errCode string, done time.Time) []byte {
	dlvrd := "000"
	if stat == "DELIVRD" {
		dlvrd = "001"
	}
	sample := sm.Payload()
	if sm.UDHI() && len(sample) > 0 && int(sample[0])+1 <= len(sample) {
		sample = sample[int(sample[0])+1:]
	}
	if sm.DataCoding != 0 && sm.DataCoding != 1 && sm.DataCoding != 3 {
		sample = nil // only plain text is quoted
	}
	if len(sample) > 20 {
		sample = sample[:20]
	}
	text := fmt.Sprintf("id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:%s",
		m.ID, dlvrd, m.Created.Format("0601021504"), done.Format("0601021504"), stat, errCode, sample)
	b := cstring(nil, "")                     // service_type
	b = append(b, sm.DestTON, sm.DestNPI)     // source = the handset
	b = cstring(b, sm.Dest)                   //
	b = append(b, sm.SourceTON, sm.SourceNPI) // dest = the platform's source
	b = cstring(b, sm.Source)                 //
	b = append(b, 0x04, 0, 0)                 // esm_class receipt, protocol_id, priority
	b = cstring(b, "")                        // schedule_delivery_time
	b = cstring(b, "")                        // validity_period
	b = append(b, 0, 0, 0, 0)                 // registered_delivery, replace, data_coding, default_msg_id
	b = append(b, byte(len(text)))            // sm_length
	b = append(b, text...)                    //
	b = appendTLV(b, tagReceiptedMessageID, append([]byte(m.ID), 0))
	b = appendTLV(b, tagMessageState, []byte{messageStates[stat]})
	return b
}

func appendTLV(b []byte, tag uint16, v []byte) []byte {
	b = append(b, byte(tag>>8), byte(tag), byte(len(v)>>8), byte(len(v)))
	return append(b, v...)
}

// incoming delivers a modem's MO message to the MO account as deliver_sm.
func (f *Failover) incoming(ctx context.Context, in modem.Incoming) {
	acct := f.d.moAccount.Load().(string)
	if acct == "" {
		f.log.Warn("MO message on a modem dropped: no account receives MO", zap.String("modem", in.Modem))
		return
	}
	from := in.From
	cc := "+" + f.config().CountryCode
	if cc != "+" && strings.HasPrefix(from, cc) {
		from = from[len(cc):]
	}
	dc, payload := byte(0), []byte(in.Text)
	for _, r := range in.Text {
		if r > 0x7F {
			dc = 8
			break
		}
	}
	if dc == 8 {
		u := utf16.Encode([]rune(in.Text))
		payload = make([]byte, 0, 2*len(u))
		for _, c := range u {
			payload = append(payload, byte(c>>8), byte(c))
		}
	}
	b := cstring(nil, "")
	b = append(b, 0, 0)
	b = cstring(b, from)
	b = append(b, 0, 0)
	b = cstring(b, "")
	b = append(b, 0, 0, 0)
	b = cstring(b, "")
	b = cstring(b, "")
	b = append(b, 0, 0, dc, 0)
	if len(payload) <= 254 {
		b = append(b, byte(len(payload)))
		b = append(b, payload...)
	} else {
		b = append(b, 0)
		b = appendTLV(b, tagMessagePayload, payload)
	}
	del := &store.Delivery{ID: f.d.ids.Next(), Account: acct, Body: b, Created: time.Now()}
	if err := f.d.store.AddDelivery(context.WithoutCancel(ctx), del, nil); err != nil {
		f.log.Error("store write of a modem MO failed; message lost", zap.Error(err))
		return
	}
	f.d.kickDeliveries(acct)
}

func (f *Failover) gauges(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		depth, oldest, err := f.d.store.ModemQueue(ctx)
		if err == nil {
			metricQueueDepth.Set(float64(depth))
			if oldest.IsZero() {
				metricQueueOldest.Set(0)
			} else {
				metricQueueOldest.Set(time.Since(oldest).Seconds())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
