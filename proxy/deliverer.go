package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Deliverers: one goroutine per account sends the account's stored
// deliver_sm (receipts and MO) to its bound receiver and transceiver
// sessions, oldest first, and removes each only when the platform answered
// it with deliver_sm_resp OK. A timeout, or a status that says "later"
// (ESME_RX_T_APPN, ESME_RTHROTTLED, ESME_RMSGQFUL, ESME_RSYSERR, in a
// deliver_sm_resp or a generic_nack), leaves it for the next round
// (retried after a pause), without limit; ESME_RX_P_APPN / ESME_RX_R_APPN
// mean the platform will never take it: it is dropped and logged. Any other
// refusal (a deliver_sm_resp with another status, such as ESME_RINVSRCADR,
// or a generic_nack with one) is retried too, but at most maxRefusals
// times in all, then dropped and logged: sent again without end, a delivery
// the platform cannot take would come back every round, and deliverBatch
// of them would hold back every later receipt of the account. Deliveries
// wait in the store, without limit of time, while no receiver is bound.
//
// Several gateways on one store: a deliverer sends only while it holds the
// account's delivery lease (store.ClaimDeliveries, claims.go), so one
// gateway at a time delivers an account's held deliveries, in order, over
// its own bound receivers; each delivery reaches the platform once. The
// lease is taken when this gateway has a receiver of the account and there
// is something to send, renewed while a batch is in flight, and handed back
// (ReleaseDeliveries) when the account has nothing more to send now, when
// no receiver is left, or at shutdown. A gateway killed while holding it
// blocks the account for at most deliveryLease; then another gateway's
// deliverer (polling every deliverPoll) sends what the dead one never saw
// acknowledged: at least once, never lost. Trade-off: while one gateway
// holds an account, the receivers bound to the other gateways stay idle.

const deliverBatch = 128

// maxRefusals is how many times a delivery is sent to a platform that
// refuses it neither for now nor for good (see above) before it is dropped;
// a refusal counts only refusalSpacing after the one counted before, so
// that a platform refusing everything for a moment (rounds follow each
// other at once while others are taken) loses nothing: dropping takes
// (maxRefusals-1) x refusalSpacing of refusals at least. Counted in memory:
// a restart starts the count again.
const maxRefusals = 5

var refusalSpacing = 5 * time.Second // a variable for tests

// deliveryLease is how long a claim on an account's deliveries lasts
// without renewal: the longest a killed gateway holds up the account.
// A round renews it every deliveryLease/4.
const deliveryLease = 15 * time.Second

// deliverPoll is how often a deliverer looks for deliveries written, or
// released, by other gateway instances.
const deliverPoll = 2 * time.Second

type deliverer struct {
	d       *Dispatcher
	account string
	worker  string // this deliverer's name in the account lease: the instance's (SetInstance), so a restart takes its leases back
	kick    chan struct{}
	counted time.Time // when spareline_deliveries_pending was last set from the store

	refusedMu sync.Mutex
	refused   map[string]refusals // by delivery id (maxRefusals)
}

// refusals are a delivery's counted refusals, the last counted at last.
type refusals struct {
	n    int
	last time.Time
}

// refusal counts one refusal of a delivery and reports whether it was the
// last one allowed (the delivery is to be dropped).
func (dl *deliverer) refusal(id string) bool {
	dl.refusedMu.Lock()
	defer dl.refusedMu.Unlock()
	if dl.refused == nil || len(dl.refused) > 4*deliverBatch {
		// Entries of deliveries that another gateway sent, or that were
		// taken later, are forgotten with the rest: at worst a delivery
		// gets maxRefusals more tries.
		dl.refused = map[string]refusals{}
	}
	r, now := dl.refused[id], time.Now()
	if r.n > 0 && now.Sub(r.last) < refusalSpacing {
		return false // too soon after the last counted one
	}
	r.n, r.last = r.n+1, now
	if r.n >= maxRefusals {
		delete(dl.refused, id)
		return true
	}
	dl.refused[id] = r
	return false
}

// settled forgets a delivery's refusals once it left the store.
func (dl *deliverer) settled(id string) {
	dl.refusedMu.Lock()
	delete(dl.refused, id)
	dl.refusedMu.Unlock()
}

// laterStatus reports the deliver_sm_resp statuses by which a platform
// asks for the delivery again later: they are retried without limit.
func laterStatus(status uint32) bool {
	switch status {
	case statusRXTAppn, statusThrottled, statusMsgQFul, statusSysErr:
		return true
	}
	return false
}

// count sets spareline_deliveries_pending from the store, at most once a
// second: every held receipt of the account, whether or not a receiver is
// bound (SparelineReceiptsHeld fires when none is, for long).
func (dl *deliverer) count(ctx context.Context) {
	if time.Since(dl.counted) < time.Second {
		return
	}
	dl.counted = time.Now()
	if n, err := dl.d.store.CountDeliveries(ctx, dl.account); err == nil {
		metricDeliveriesPending.WithLabelValues(dl.account).Set(float64(n))
	}
}

// kickDeliveries wakes the account's deliverer (starting it if needed).
func (d *Dispatcher) kickDeliveries(account string) {
	d.deliverMu.Lock()
	dl := d.deliverers[account]
	if dl == nil {
		worker := "deliver-" + d.ids.Next()
		if inst, _ := d.instance.Load().(string); inst != "" {
			worker = "deliver/" + inst
		}
		dl = &deliverer{d: d, account: account, worker: worker, kick: make(chan struct{}, 1)}
		d.deliverers[account] = dl
		d.spawn(func() { dl.run(d.deliverCtx) }) // not after shutdown began (dispatcher.go)
	}
	d.deliverMu.Unlock()
	select {
	case dl.kick <- struct{}{}:
	default:
	}
}

// SetInstance names this gateway among those sharing the store (see
// instanceName); deliverers started after it hold account leases under it.
func (d *Dispatcher) SetInstance(name string) { d.instance.Store(name) }

// StartDeliverers starts a deliverer for each account so that deliveries
// held from before a restart go out as soon as a receiver binds.
func (d *Dispatcher) StartDeliverers(accounts []string) {
	for _, a := range accounts {
		d.kickDeliveries(a)
	}
}

func (dl *deliverer) run(ctx context.Context) {
	log := dl.d.log.With(zap.String("account", dl.account))
	// A slow poll covers deliveries written, or released, by other gateway
	// instances.
	poll := time.NewTicker(deliverPoll)
	defer poll.Stop()
	defer dl.release(ctx, log) // at shutdown, hand the account to the other instances now
	for {
		select {
		case <-ctx.Done():
			return
		case <-dl.kick:
		case <-poll.C:
		}
		for ctx.Err() == nil {
			progressed, more := dl.round(ctx, log)
			if !more {
				dl.release(ctx, log)
				break
			}
			if !progressed {
				// Everything failed this round: pause before retrying.
				t := time.NewTimer(time.Second)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
				break
			}
		}
	}
}

// round sends one batch. more says there may be more to send now.
func (dl *deliverer) round(ctx context.Context, log *zap.Logger) (progressed, more bool) {
	d := dl.d
	dl.count(ctx)
	if d.recv == nil {
		return false, false
	}
	recv := d.recv.receiversOf(dl.account)
	if len(recv) == 0 {
		return false, false
	}
	list, err := d.store.ClaimDeliveries(ctx, dl.account, dl.worker, deliverBatch, deliveryLease)
	if errors.Is(err, store.ErrLeased) {
		return false, false // another gateway is delivering this account; the poll looks again
	}
	if err != nil {
		log.Warn("reading held deliveries failed", zap.Error(err))
		return false, true
	}
	if len(list) == 0 {
		metricDeliveriesPending.WithLabelValues(dl.account).Set(0)
		return false, false
	}
	defer dl.renew(ctx, log)()
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for i, group := range byMessage(list) {
		s := recv[i%len(recv)]
		// Prefer a session with room in its window.
		for _, r := range recv {
			if r.Free() > s.Free() {
				s = r
			}
		}
		wg.Add(1)
		go func(group []*store.Delivery, s *Session) {
			defer wg.Done()
			// One after the other, each once the one before was taken:
			// sent at once, an intermediate receipt could reach the
			// platform after the final one (or be refused for now and
			// come again after it), and leave the message ENROUTE there.
			for _, del := range group {
				if !dl.send(ctx, s, del, log) {
					return // the rest wait for the next round, behind it
				}
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}(group, s)
	}
	wg.Wait()
	return acked > 0, acked > 0 && len(list) == deliverBatch || acked > 0 && acked < len(list)
}

// byMessage groups deliveries (oldest first) by the message they are about,
// keeping their order within each group and the order of the groups' first
// deliveries; an MO message (no MsgID) is a group of its own.
func byMessage(list []*store.Delivery) [][]*store.Delivery {
	groups := make([][]*store.Delivery, 0, len(list))
	at := map[string]int{}
	for _, del := range list {
		if del.MsgID != "" {
			if i, ok := at[del.MsgID]; ok {
				groups[i] = append(groups[i], del)
				continue
			}
			at[del.MsgID] = len(groups)
		}
		groups = append(groups, []*store.Delivery{del})
	}
	return groups
}

// renew keeps the account lease while a batch is in flight; the returned
// function stops it. A claim renews the lease; max 1 keeps it cheap.
func (dl *deliverer) renew(ctx context.Context, log *zap.Logger) (stop func()) {
	return every(ctx, deliveryLease/4, func(ctx context.Context) {
		_, err := dl.d.store.ClaimDeliveries(ctx, dl.account, dl.worker, 1, deliveryLease)
		if err != nil && ctx.Err() == nil {
			log.Warn("renewing the delivery lease failed; another gateway may send this batch again",
				zap.Error(err))
		}
	})
}

// every runs renew every period until the returned stop is called (stop
// waits for a renewal in progress). Leases held while work runs use it.
func every(ctx context.Context, period time.Duration, renew func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				renew(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// release hands the account's delivery lease back, if this deliverer holds
// it, so that another gateway need not wait for it to pass.
func (dl *deliverer) release(ctx context.Context, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := dl.d.store.ReleaseDeliveries(ctx, dl.account, dl.worker); err != nil {
		log.Debug("releasing the delivery lease failed; it passes by itself", zap.Error(err))
	}
}

func (dl *deliverer) send(ctx context.Context, s *Session, del *store.Delivery, log *zap.Logger) bool {
	body := del.Body
	if n, ok := s.Value.(*northSession); ok && n.legacy.Load() {
		body = legacyBody(body)
	} else {
		body = platformBody(body)
	}
	f, err := s.Request(ctx, cmdDeliverSM, body)
	if err != nil {
		if !errors.Is(err, ErrNotSent) {
			log.Info("deliver_sm unanswered; will retry", zap.String("delivery", del.ID), zap.Error(err))
		}
		return false
	}
	if ml := dl.d.mlog(); ml != nil {
		ml.delivered(del, f.Status, f.ID != cmdDeliverSMResp)
	}
	switch {
	case f.ID == cmdDeliverSMResp && f.Status == statusOK:
	case f.ID == cmdDeliverSMResp && (f.Status == statusRXPAppn || f.Status == statusRXRAppn):
		log.Warn("platform rejected a deliver_sm permanently; dropped", zap.String("delivery", del.ID),
			zap.String("id", del.MsgID), zap.String("status", StatusString(f.Status)))
	case laterStatus(f.Status):
		// In a deliver_sm_resp or a generic_nack alike (some platforms
		// throttle with a generic_nack).
		log.Info("platform refused a deliver_sm for now; will retry", zap.String("delivery", del.ID),
			zap.String("command_id", fmt.Sprintf("0x%08X", f.ID)), zap.String("status", StatusString(f.Status)))
		return false
	default:
		// A generic_nack (SMPP 3.4 §4.3: the platform could not process
		// the PDU; whatever its status, some send ESME_ROK, it is no
		// acknowledgement), or a refusal that says neither "later" nor
		// "never": retried, at most maxRefusals times.
		what := "deliver_sm_resp"
		if f.ID != cmdDeliverSMResp {
			what = fmt.Sprintf("command_id 0x%08X", f.ID)
		}
		if !dl.refusal(del.ID) {
			log.Info("platform refused a deliver_sm; will retry", zap.String("delivery", del.ID),
				zap.String("answer", what), zap.String("status", StatusString(f.Status)))
			return false
		}
		log.Warn("platform refused a deliver_sm every time; dropped", zap.String("delivery", del.ID),
			zap.String("id", del.MsgID), zap.String("answer", what), zap.String("status", StatusString(f.Status)),
			zap.Int("tries", maxRefusals))
	}
	if err := dl.d.store.AckDelivery(ctx, dl.account, del.ID); err != nil {
		log.Warn("removing a delivered deliver_sm failed; it may be sent again", zap.Error(err))
		return false
	}
	dl.settled(del.ID)
	return true
}

// deliverSMTags are the optional parameters SMPP 3.4 §4.6.1 defines for
// deliver_sm, and ussd_service_op (§5.3.2.44), which USSD gateways send in
// deliver_sm and USSD platforms need.
var deliverSMTags = map[uint16]bool{
	0x0204: true, // user_message_reference
	0x020A: true, // source_port
	0x020B: true, // destination_port
	0x020C: true, // sar_msg_ref_num
	0x020E: true, // sar_total_segments
	0x020F: true, // sar_segment_seqnum
	0x0205: true, // user_response_code
	0x0201: true, // privacy_indicator
	0x0019: true, // payload_type
	0x0424: true, // message_payload
	0x0381: true, // callback_num
	0x0202: true, // source_subaddress
	0x0203: true, // dest_subaddress
	0x020D: true, // language_indicator
	0x1383: true, // its_session_info
	0x0423: true, // network_error_code
	0x0427: true, // message_state
	0x001E: true, // receipted_message_id
	0x0501: true, // ussd_service_op
}

// platformBody is the deliver_sm body an SMPP 3.4 platform gets for a held
// delivery (a 3.3 one gets legacyBody):
//
//   - only the optional parameters §4.6.1 defines for deliver_sm. A
//     carrier's own (vendor-specific tags, 0x1400-0x3FFF) mean something on
//     that carrier's interface only, and those of its data_sm that
//     deliver_sm has not (source_network_type, qos_time_to_live...) have no
//     place there; relayed, they made platforms whose decoder checks the
//     tags (Jasmin's) refuse the whole PDU, so the receipt never arrived.
//   - for a receipt, the receipted_message_id and message_state (SMPP 3.4
//     §5.3.2.12, §5.3.2.35) that its text says, when the carrier sent only
//     the text (Appendix B): platforms that match receipts by the optional
//     parameters alone would not find the id. The text's id is spareline's
//     already (rewriteReceipt).
//
// A body that does not parse is returned as it is.
func platformBody(body []byte) []byte {
	m, err := ParseShortMessage(body)
	if err != nil {
		return body
	}
	tlvs := make([]TLV, 0, len(m.TLVs)+2)
	for _, t := range m.TLVs {
		if deliverSMTags[t.Tag] {
			tlvs = append(tlvs, t)
		}
	}
	changed := len(tlvs) != len(m.TLVs)
	if m.IsReceipt() {
		n := len(tlvs)
		tlvs = appendReceiptTLVs(m, tlvs)
		changed = changed || len(tlvs) != n
	}
	if !changed {
		return body
	}
	return m.rebuildBody(body, m.Message, tlvs)
}

// appendReceiptTLVs appends to tlvs the receipted_message_id and
// message_state of receipt m that it lacks, from its text.
func appendReceiptTLVs(m *ShortMessage, tlvs []TLV) []TLV {
	_, hasID := m.TLV(tagReceiptedMessageID)
	_, hasState := m.TLV(tagMessageState)
	if hasID && hasState {
		return tlvs
	}
	id, stat, _ := receiptFields(m.Payload())
	if id == "" {
		return tlvs
	}
	if !hasID {
		tlvs = append(tlvs, TLV{Tag: tagReceiptedMessageID, Value: append([]byte(id), 0)})
	}
	if !hasState {
		state, ok := messageStates[stat]
		if !ok && intermediateStats[stat] {
			state, ok = messageStates["ENROUTE"], true
		}
		if ok {
			tlvs = append(tlvs, TLV{Tag: tagMessageState, Value: []byte{state}})
		}
	}
	return tlvs
}
