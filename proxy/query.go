package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// query_sm and cancel_sm from the platform (SMPP 3.4 §4.8, §4.9).
//
// spareline gives the platform its own message ids, so it answers both from
// the store itself; nothing is relayed to a carrier.
//
// query_sm: a transmitter or transceiver session asks about one of its
// account's messages. The answer is the message_state (§5.2.28) the store
// knows: ENROUTE while the message is anywhere on its way (with a carrier,
// in the modem queue, on a modem, waiting for a status report); once a final
// receipt was produced, the state of its stat (DELIVRD -> DELIVERED,
// UNDELIV -> UNDELIVERABLE, EXPIRED, DELETED, REJECTD -> REJECTED, ACCEPTD ->
// ACCEPTED, anything else UNKNOWN), final_date the time spareline recorded
// that outcome (§7.1.1, UTC) and error_code the receipt's err: value when it
// is a decimal number up to 255 (else 0). A message a modem sent without a
// receipt asked is ACCEPTED (the network took it; no outcome will come); a
// message its carrier took without a receipt asked stays ENROUTE, since no
// outcome ever comes back. A message refused at submit (its id was never
// given out) is REJECTED.
//
// An id that is unknown, expired from the store, or another account's, and
// a source_addr that is set but differs from the message's (TON and NPI are
// not compared), all get ESME_RQUERYFAIL: the answer never tells whether
// another account's message exists.
//
// cancel_sm: a message its carrier accepted and has not reported final on
// (a scheduled message, say) is cancelled at the carrier: the cancel_sm is
// relayed on one of its binds with the carrier's own message_id, and the
// platform gets the carrier's answer (cancelAtCarrier). A message still
// waiting in the modem queue, and not held by a queue worker of this
// process at that moment, is cancelled here: marked DELETED, taken out of
// the queue, and the answer is OK; it is never sent. Either way a cancelled
// message gets its final receipt, stat DELETED, when registered_delivery
// asked for one (platforms close their records on the final receipt; §4.9
// leaves this open). Any other message (on a modem, finished), an unknown
// id or another account's, a source_addr or destination_addr that is set
// and differs, and a cancel_sm without a message_id (cancel all from source
// to destination, §4.9.1: there is no index to find them) get
// ESME_RCANCELFAIL. Gateways sharing one Redis: the modem queue's cancel is a compare-and-set
// (store.FinishMessage, queued -> done) and a queue worker of any gateway
// takes a message only by its own compare-and-set from queued (failover.go),
// so exactly one of them wins: a cancelled message is never sent, and a
// message a worker took is never reported cancelled.
//
// Malformed bodies are answered with the field's status (ESME_RINVMSGLEN
// when a field runs past the end or octets are left over, ESME_RINVMSGID,
// ESME_RINVSRCADR, ESME_RINVDSTADR or ESME_RINVSERTYP for an over-long
// field); the session lives on. replace_sm, submit_multi and data_sm stay
// ESME_RINVCMDID (server.go).

// Command statuses of query_sm and cancel_sm (SMPP 3.4 §5.1.3).
const (
	statusQueryFail  = uint32(data.ESME_RQUERYFAIL)
	statusCancelFail = uint32(data.ESME_RCANCELFAIL)
	statusInvMsgID   = uint32(data.ESME_RINVMSGID)
	statusInvSrcAdr  = uint32(data.ESME_RINVSRCADR)
	statusInvSerTyp  = uint32(data.ESME_RINVSERTYP)
)

// northbound_queries_total command: query_sm, cancel_sm; status: ESME_*
// names of statusNames, or "other".
var metricNorthQueries = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "spareline_northbound_queries_total", Help: "query_sm and cancel_sm from platforms, by the status answered.",
}, []string{"account", "command", "status"})

// queryStatusName is a bounded label for the statuses query_sm and
// cancel_sm are answered with.
func queryStatusName(status uint32) string {
	switch status {
	case statusQueryFail:
		return "ESME_RQUERYFAIL"
	case statusCancelFail:
		return "ESME_RCANCELFAIL"
	case statusInvMsgID:
		return "ESME_RINVMSGID"
	}
	return statusName(status)
}

// maxMessageID is the longest message_id C-Octet String with its NUL
// (SMPP 3.4 §4.8.1).
const maxMessageID = 65

// queryTimeout bounds the store work behind one query_sm or cancel_sm.
const queryTimeout = 10 * time.Second

// message_state values (SMPP 3.4 §5.2.28).
const (
	stateEnroute       = byte(1)
	stateDelivered     = byte(2)
	stateExpired       = byte(3)
	stateDeleted       = byte(4)
	stateUndeliverable = byte(5)
	stateAccepted      = byte(6)
	stateUnknown       = byte(7)
	stateRejected      = byte(8)
)

// QueryRequest is a query_sm body (SMPP 3.4 §4.8.1).
type QueryRequest struct {
	MessageID string
	SourceTON byte
	SourceNPI byte
	Source    string
}

// CancelRequest is a cancel_sm body (SMPP 3.4 §4.9.1).
type CancelRequest struct {
	ServiceType string
	MessageID   string
	SourceTON   byte
	SourceNPI   byte
	Source      string
	DestTON     byte
	DestNPI     byte
	Dest        string
}

// end fails when octets are left after the last mandatory field: neither
// PDU has optional parameters in SMPP 3.4.
func (r *bodyReader) end() error {
	if r.off != len(r.b) {
		return &BodyError{Status: statusInvMsgLen, Field: fmt.Sprintf("%d octets after the last field", len(r.b)-r.off), Offset: r.off}
	}
	return nil
}

// ParseQuerySM parses a query_sm body; errors are *BodyError.
func ParseQuerySM(body []byte) (*QueryRequest, error) {
	r := &bodyReader{b: body}
	q := &QueryRequest{}
	var err error
	if q.MessageID, err = r.field(maxMessageID, "message_id", statusInvMsgID); err != nil {
		return nil, err
	}
	if q.SourceTON, err = r.byte1("source_addr_ton"); err != nil {
		return nil, err
	}
	if q.SourceNPI, err = r.byte1("source_addr_npi"); err != nil {
		return nil, err
	}
	if q.Source, err = r.field(maxAddr, "source_addr", statusInvSrcAdr); err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return q, nil
}

// ParseCancelSM parses a cancel_sm body; errors are *BodyError.
func ParseCancelSM(body []byte) (*CancelRequest, error) {
	r := &bodyReader{b: body}
	c := &CancelRequest{}
	var err error
	if c.ServiceType, err = r.field(maxServiceType, "service_type", statusInvSerTyp); err != nil {
		return nil, err
	}
	if c.MessageID, err = r.field(maxMessageID, "message_id", statusInvMsgID); err != nil {
		return nil, err
	}
	if c.SourceTON, err = r.byte1("source_addr_ton"); err != nil {
		return nil, err
	}
	if c.SourceNPI, err = r.byte1("source_addr_npi"); err != nil {
		return nil, err
	}
	if c.Source, err = r.field(maxAddr, "source_addr", statusInvSrcAdr); err != nil {
		return nil, err
	}
	if c.DestTON, err = r.byte1("dest_addr_ton"); err != nil {
		return nil, err
	}
	if c.DestNPI, err = r.byte1("dest_addr_npi"); err != nil {
		return nil, err
	}
	if c.Dest, err = r.field(maxAddr, "destination_addr", statusInvDstAdr); err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// QueryResult is what query_sm_resp reports (SMPP 3.4 §4.8.2).
type QueryResult struct {
	State     byte      // message_state (§5.2.28)
	FinalDate time.Time // zero while the state is not final
	ErrorCode byte
}

// queryResult reads a message record as query_sm_resp reports it.
func queryResult(m *store.Message) QueryResult {
	switch m.State {
	case store.StateDone:
		r := QueryResult{State: finalState(m.FinalStat), FinalDate: m.Done, ErrorCode: errorCode(m.FinalErr)}
		if m.FinalStat == "" {
			r.State = stateAccepted // done before spareline kept the outcome: it left us, no more is known
		}
		if r.State == stateEnroute {
			r.FinalDate = time.Time{} // an intermediate notification is not final
		}
		return r
	case store.StateFailed:
		// Refused at submit time; the refusal was the submit_sm_resp.
		return QueryResult{State: stateRejected, FinalDate: m.Created}
	default: // accepted, carrier, sent, queued, modem, modemsent
		return QueryResult{State: stateEnroute}
	}
}

// finalState maps a receipt stat (SMPP 3.4 Appendix B) to message_state.
func finalState(stat string) byte {
	switch stat {
	case "ENROUTE":
		return stateEnroute
	case "DELIVRD":
		return stateDelivered
	case "EXPIRED":
		return stateExpired
	case "DELETED":
		return stateDeleted
	case "UNDELIV":
		return stateUndeliverable
	case "ACCEPTD":
		return stateAccepted
	case "REJECTD":
		return stateRejected
	}
	return stateUnknown
}

// errorCode reads a receipt's err: value as query_sm_resp's one-octet
// error_code: a decimal number up to 255, else 0.
func errorCode(s string) byte {
	v, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0
	}
	return byte(v)
}

// smppTime writes an absolute time in SMPP format, "YYMMDDhhmmsstnnp"
// (SMPP 3.4 §7.1.1), in UTC ("00+"); "" for the zero time.
func smppTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	t = t.UTC()
	return fmt.Sprintf("%02d%02d%02d%02d%02d%02d%d00+", t.Year()%100, int(t.Month()), t.Day(), t.Hour(), t.Minute(),
		t.Second(), t.Nanosecond()/100_000_000)
}

// queryRespBody is the body of a query_sm_resp (SMPP 3.4 §4.8.2).
func queryRespBody(id string, r QueryResult) []byte {
	b := cstring(make([]byte, 0, len(id)+21), id)
	b = cstring(b, smppTime(r.FinalDate))
	return append(b, r.State, r.ErrorCode)
}

// lookupOwn reads a message of account; ErrNotFound for another account's,
// so that callers cannot tell the two apart.
func lookupOwn(ctx context.Context, st store.Store, account, id string) (*store.Message, error) {
	if id == "" {
		return nil, store.ErrNotFound
	}
	m, err := st.GetMessage(ctx, id)
	if err != nil {
		return nil, err
	}
	if m.Account != account {
		return nil, store.ErrNotFound
	}
	return m, nil
}

// requestStarted admits a query_sm or cancel_sm: bound as a transmitter or
// transceiver (SMPP 3.4 §2.3), and within the session's window, which it
// shares with submit_sm; refused with ESME_RSYSERR while the server shuts
// down. It returns the account, or nil after answering.
func (n *northSession) requestStarted(f Frame) *Account {
	acct, bt := n.boundAs()
	if acct == nil || !bt.transmits() {
		n.sess.Respond(f, statusInvBndSts, nil)
		return nil
	}
	if n.pending.Load() >= n.window {
		n.sess.Respond(f, statusThrottled, nil)
		return nil
	}
	if !n.enter(f, statusSysErr) { // shutting down: ask again (another instance, or after the restart)
		return nil
	}
	return acct
}

func (n *northSession) requestDone() { n.leave(1) }

// leave undoes enterN.
func (n *northSession) leave(slots int) {
	n.release(slots)
	n.inflight.Done()
}

// release frees a request's window slots. It comes before the answer is
// queued: a platform that keeps its window full sends its next request the
// moment it reads an answer, and must not find the slot still taken (a
// spurious ESME_RTHROTTLED). The drain count (inflight) is left after the
// answer, so that a shutdown waits for the answer to be written.
func (n *northSession) release(slots int) { n.pending.Add(-int32(slots)) }

// bodyStatus is the status that answers a body parse error.
func bodyStatus(err error) uint32 {
	var be *BodyError
	if errors.As(err, &be) {
		return be.Status
	}
	return statusInvMsgLen
}

// handleQuery answers a query_sm (SMPP 3.4 §4.8) from the store. It runs on
// the session's reader goroutine and answers from its own.
func (n *northSession) handleQuery(f Frame) {
	serveStoreRequest(n, f, "query_sm", ParseQuerySM, n.query)
}

// serveStoreRequest answers a request that is served from the store
// (query_sm, cancel_sm): counted in the session's window like a submit,
// parsed on the reader goroutine (a malformed body is answered at once),
// then answered from its own goroutine within queryTimeout. No body goes
// with a status other than 0 (§4.4.2, §4.8.2, §4.9.2).
func serveStoreRequest[R any](n *northSession, f Frame, command string, parse func([]byte) (R, error),
	serve func(context.Context, *Account, R) (uint32, []byte)) {
	s := n.sess
	acct := n.requestStarted(f)
	if acct == nil {
		return
	}
	req, err := parse(f.Body)
	if err != nil {
		n.requestDone()
		s.log.Info("malformed "+command, zap.Error(err), zap.String("account", acct.SystemID))
		s.Respond(f, bodyStatus(err), nil)
		return
	}
	go func() {
		released := false
		defer func() {
			if !released {
				n.release(1)
			}
			n.inflight.Done()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
		defer cancel()
		status, body := serve(ctx, acct, req)
		n.release(1)
		released = true
		s.Respond(f, status, body)
		metricNorthQueries.WithLabelValues(acct.SystemID, command, queryStatusName(status)).Inc()
	}()
}

func (n *northSession) query(ctx context.Context, acct *Account, q *QueryRequest) (uint32, []byte) {
	d := n.srv.disp
	m, err := lookupOwn(ctx, d.store, acct.SystemID, q.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		return statusQueryFail, nil
	}
	if err != nil {
		d.storeError(storeOpQuery, n.sess.log, "store read for query_sm failed", err)
		return statusSysErr, nil
	}
	// §4.8.1: source_addr is the original message's; an ESME may leave it
	// empty. TON and NPI are not compared (platforms fill them loosely).
	if q.Source != "" && q.Source != m.Source {
		return statusQueryFail, nil
	}
	return statusOK, queryRespBody(q.MessageID, queryResult(m))
}

// handleCancel answers a cancel_sm (SMPP 3.4 §4.9).
func (n *northSession) handleCancel(f Frame) {
	// cancel_sm_resp has no body (§4.9.2).
	serveStoreRequest(n, f, "cancel_sm", ParseCancelSM, func(ctx context.Context, acct *Account, c *CancelRequest) (uint32, []byte) {
		return n.cancel(ctx, acct, c), nil
	})
}

func (n *northSession) cancel(ctx context.Context, acct *Account, c *CancelRequest) uint32 {
	d := n.srv.disp
	if c.MessageID == "" {
		return statusCancelFail // cancel-all by source and destination: there is no index to find them
	}
	m, err := lookupOwn(ctx, d.store, acct.SystemID, c.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		return statusCancelFail
	}
	if err != nil {
		d.storeError(storeOpQuery, n.sess.log, "store read for cancel_sm failed", err)
		return statusSysErr
	}
	var status uint32
	fo := d.failover.Load()
	switch {
	case m.State == store.StateSent && m.Carrier != "":
		status = d.cancelAtCarrier(ctx, m, c, n.sess.log)
	case m.State == store.StateQueued && fo != nil:
		status = fo.cancelQueued(ctx, acct.SystemID, c)
	default:
		status = statusCancelFail // on a modem now, or finished
	}
	if status == statusOK {
		n.sess.log.Info("message cancelled by the platform", zap.String("id", c.MessageID),
			zap.String("account", acct.SystemID), zap.String("carrier", m.Carrier))
	}
	return status
}

// cancelMatches applies §4.9.1 to a cancel_sm of m (sm its submit):
// source_addr, when given, must be the original's; destination_addr is
// optional with a message_id. TON and NPI are not compared.
func cancelMatches(c *CancelRequest, m *store.Message, sm *ShortMessage) bool {
	return (c.Source == "" || c.Source == m.Source) && (c.Dest == "" || c.Dest == sm.Dest || c.Dest == m.Dest)
}

// cancelAtCarrier relays a platform's cancel_sm of m, which its carrier
// accepted and has not reported final on, to that carrier, naming the
// carrier's own message_id (as its submit_sm_resp wrote it) and the
// original submit's service_type and addresses (§4.9.1), on one of its
// binds within response_timeout. The platform gets the carrier's answer:
// OK, and then m is finished DELETED (its final receipt, stat DELETED, goes
// to the platform when registered_delivery asked for one, as for a
// message cancelled in the modem queue; a receipt the carrier sends
// afterwards, or before the answer, finishes it DELETED once: DELETED is
// never resent by modem, failedStats); ESME_RCANCELFAIL when the carrier
// refuses, has no bind up, does not answer in time, does not know
// cancel_sm (generic_nack), or gave the message no id.
func (d *Dispatcher) cancelAtCarrier(ctx context.Context, m *store.Message, c *CancelRequest, log *zap.Logger) uint32 {
	sm, err := ParseShortMessage(m.Body)
	if err != nil || !cancelMatches(c, m, sm) {
		return statusCancelFail
	}
	car := (*d.carriers.Load())[m.Carrier]
	if car == nil {
		return statusCancelFail // a reload removed the carrier
	}
	id := m.CarrierMsgID
	if id == "" {
		id = m.CarrierID
	}
	if id == "" {
		// The carrier accepted it without an id: a cancel_sm without one
		// would be §4.9.1's "cancel all from this source to this
		// destination", other messages and accounts' included.
		return statusCancelFail
	}
	log = log.With(zap.String("id", m.ID), zap.String("carrier", m.Carrier), zap.String("carrier_id", id))
	f, s, err := car.request(ctx, cmdCancelSM, cancelSMBody(sm, id), nil)
	if err == nil {
		car.checkBound(s, f.Status) // an SMSC that lost the bind refuses this too
	}
	switch {
	case err != nil:
		log.Warn("cancel_sm relayed to the carrier got no answer; the platform is told it failed", zap.Error(err))
		return statusCancelFail
	case f.ID == cmdGenericNack:
		log.Warn("the carrier does not take cancel_sm (generic_nack); the platform is told it failed",
			zap.String("status", StatusString(f.Status)))
		return statusCancelFail
	case f.Status != statusOK:
		// The carrier's refusal (ESME_RCANCELFAIL, or a status about its
		// own id or its link) is the platform's ESME_RCANCELFAIL: a link
		// status such as ESME_RINVBNDSTS would tell the platform its own
		// bind is wrong.
		log.Info("carrier refused the relayed cancel_sm", zap.String("status", StatusString(f.Status)))
		return statusCancelFail
	}
	if _, err := d.finishOwn(ctx, m, sm, []store.State{store.StateSent}, "DELETED", "000",
		"cancelled by the platform (cancel_sm), confirmed by the carrier", m.Carrier, log); err != nil {
		// The carrier cancelled it: that is the platform's answer. The
		// record stays "sent"; a DELETED receipt from the carrier still
		// finishes it.
		log.Error("store write of a cancelled message failed; the carrier did cancel it", zap.Error(err))
	}
	return statusOK
}

// cancelSMBody is a cancel_sm body (§4.9.1) for the message sm submitted,
// known to its carrier as id.
func cancelSMBody(sm *ShortMessage, id string) []byte {
	b := make([]byte, 0, 16+len(sm.ServiceType)+len(id)+len(sm.Source)+len(sm.Dest))
	b = append(append(b, sm.ServiceType...), 0)
	b = append(append(b, id...), 0)
	b = append(append(append(b, sm.SourceTON, sm.SourceNPI), sm.Source...), 0)
	return append(append(append(b, sm.DestTON, sm.DestNPI), sm.Dest...), 0)
}

// processClaimed processes a claimed queue entry, marked as held by this
// process so that cancel_sm leaves it alone.
func (f *Failover) processClaimed(ctx context.Context, id string) {
	f.cancelMu.Lock()
	if f.claimed == nil {
		f.claimed = map[string]int{}
	}
	f.claimed[id]++
	f.cancelMu.Unlock()
	wait := f.processWait(ctx, id)
	f.cancelMu.Lock()
	if f.claimed[id]--; f.claimed[id] <= 0 {
		delete(f.claimed, id)
	}
	f.cancelMu.Unlock()
	if wait > 0 {
		_ = sleepCtx(ctx, wait) // the entry is back in the queue: not ours while we wait
	}
}

// cancelQueued cancels a message of account waiting in the modem queue.
// Under cancelMu no worker of this process can start on the entry: one that
// claims it after the record says DELETED acks it unsent (process).
func (f *Failover) cancelQueued(ctx context.Context, account string, c *CancelRequest) uint32 {
	f.cancelMu.Lock()
	defer f.cancelMu.Unlock()
	st := f.d.store
	m, err := lookupOwn(ctx, st, account, c.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		return statusCancelFail
	}
	if err != nil {
		f.d.storeError(storeOpQuery, f.log, "store read for cancel_sm failed", err)
		return statusSysErr
	}
	if m.State != store.StateQueued || f.claimed[m.ID] > 0 {
		return statusCancelFail
	}
	sm, err := ParseShortMessage(m.Body)
	if err != nil { // cannot happen: it was parsed when submitted
		return statusCancelFail
	}
	if !cancelMatches(c, m, sm) {
		return statusCancelFail
	}
	won, err := f.finish(ctx, m, sm, []store.State{store.StateQueued}, "DELETED", "000", "cancelled by the platform (cancel_sm)")
	if err != nil {
		return statusSysErr
	}
	if !won { // a worker (of any gateway) took it first
		return statusCancelFail
	}
	// The record says DELETED: a worker that claims the entry before it is
	// gone acks it unsent (its compare-and-set from queued fails), so a
	// failed ack here costs nothing but a claim.
	if err := st.AckModem(context.WithoutCancel(ctx), m.ID); err != nil {
		f.log.Warn("store write removing a cancelled message from the modem queue failed", zap.String("id", m.ID),
			zap.Error(err))
	}
	return statusOK
}
