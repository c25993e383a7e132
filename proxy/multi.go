package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// submit_multi (SMPP 3.4 §4.5): one message for up to 254 destinations.
// It is the platform handing over "the text and the recipient list" (seed
// patent [0019]): spareline splits it into one submit_sm per destination,
// each routed by its own number, so a list that spans the three operators
// goes to each operator's carrier (or to the modems for one that is down)
// exactly as if the platform had sent the submit_sms itself. The carriers
// see ordinary submit_sm traffic.
//
// The platform gets one message_id for the whole submit_multi, and the
// receipts of every destination carry that id (a receipt's source_addr
// tells the destinations apart, as from an SMSC). Each destination is
// stored as its own message: the first under that id, the n-th (from 0)
// under "<id>-<n>" (platformID maps it back), so query_sm and cancel_sm on
// the id act on the first destination.

const (
	statusInvNumDests = uint32(data.ESME_RINVNUMDESTS)
	statusInvDestFlag = uint32(data.ESME_RINVDESTFLAG)
	statusCntSubDL    = uint32(data.ESME_RCNTSUBDL)
	statusSubmitFail  = uint32(data.ESME_RSUBMITFAIL)
	maxMultiDests     = 254 // number_of_dests, §4.5.1
	destFlagSME       = 1   // dest_flag: SME address
	destFlagDL        = 2   // dest_flag: distribution list name
)

// multiDest is one dest_address of a submit_multi.
type multiDest struct {
	dl   bool // a distribution list name (spareline keeps no lists)
	ton  byte
	npi  byte
	addr string // destination_addr, or dl_name
}

// SubmitMulti is a parsed submit_multi body. The fields every destination
// shares are kept as on the wire, so that each destination's submit_sm
// body is the platform's octets with its one address in place.
type SubmitMulti struct {
	Dests []multiDest
	head  []byte // service_type .. source_addr
	tail  []byte // esm_class .. the end (short_message, TLVs)
	// shared is the submit_sm of an empty destination: the fields all
	// destinations share, parsed.
	shared *ShortMessage
}

// ParseSubmitMulti parses a submit_multi body. A field that does not parse
// gives a *BodyError with the status to answer; the fields after the
// destinations are checked by parsing the first destination's submit_sm.
func ParseSubmitMulti(body []byte) (*SubmitMulti, error) {
	r := &bodyReader{b: body}
	if err := r.skipSource(); err != nil {
		return nil, err
	}
	m := &SubmitMulti{head: body[:r.off]}
	at := r.off
	n, err := r.byte1("number_of_dests")
	if err != nil {
		return nil, err
	}
	if n == 0 || n > maxMultiDests {
		return nil, &BodyError{Status: statusInvNumDests, Field: "number_of_dests", Offset: at}
	}
	m.Dests = make([]multiDest, 0, n)
	for range n {
		at := r.off
		flag, err := r.byte1("dest_flag")
		if err != nil {
			return nil, err
		}
		var d multiDest
		switch flag {
		case destFlagSME:
			if d.ton, err = r.byte1("dest_addr_ton"); err != nil {
				return nil, err
			}
			if d.npi, err = r.byte1("dest_addr_npi"); err != nil {
				return nil, err
			}
			if d.addr, err = r.field(maxAddr, "destination_addr", statusInvDstAdr); err != nil {
				return nil, err
			}
		case destFlagDL:
			d.dl = true
			if d.addr, err = r.field(maxAddr, "dl_name", uint32(data.ESME_RINVDLNAME)); err != nil {
				return nil, err
			}
		default:
			return nil, &BodyError{Status: statusInvDestFlag, Field: "dest_flag", Offset: at}
		}
		m.Dests = append(m.Dests, d)
	}
	m.tail = body[r.off:]
	if m.shared, err = ParseShortMessage(m.partBody(multiDest{})); err != nil {
		var be *BodyError
		if errors.As(err, &be) {
			be.Offset += r.off - len(m.head) - 3 // as an offset in the submit_multi
		}
		return nil, err
	}
	return m, nil
}

// partBody is the submit_sm body for one destination.
func (m *SubmitMulti) partBody(d multiDest) []byte {
	b := make([]byte, 0, len(m.head)+3+len(d.addr)+len(m.tail))
	b = append(b, m.head...)
	b = append(b, d.ton, d.npi)
	b = cstring(b, d.addr)
	return append(b, m.tail...)
}

// partID is the store id of the i-th destination of the submit_multi the
// platform knows as group.
func partID(group string, i int) string {
	if i == 0 {
		return group
	}
	return group + "-" + strconv.Itoa(i)
}

// platformID is the id the platform knows a message by: its own, or for a
// destination of a submit_multi (partID), the submit_multi's.
func platformID(id string) string {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return id
	}
	if _, ok := store.TimeOfID(id[:i]); !ok || !isDigits(id[i+1:]) {
		return id
	}
	return id[:i]
}

// submitMultiResp builds a submit_multi_resp body (§4.5.2): the id (empty
// when no destination was taken) and the destinations not taken, each
// with the status it got.
func submitMultiResp(id string, m *SubmitMulti, out []SubmitOutcome) []byte {
	b := cstring(make([]byte, 0, len(id)+2), id)
	at := len(b)
	b = append(b, 0)
	failed := 0
	for i, o := range out {
		if o.Status == statusOK {
			continue
		}
		d := m.Dests[i]
		b = append(b, d.ton, d.npi)
		b = cstring(b, d.addr)
		b = binary.BigEndian.AppendUint32(b, o.Status)
		failed++
	}
	b[at] = byte(failed)
	return b
}

// multiStatus is the submit_multi_resp's command_status: OK when any
// destination was taken; else the destinations' common status, or
// ESME_RSUBMITFAIL when they differ.
func multiStatus(out []SubmitOutcome) uint32 {
	status := out[0].Status
	for _, o := range out {
		if o.Status == statusOK {
			return statusOK
		}
		if o.Status != status {
			status = statusSubmitFail
		}
	}
	return status
}

func (n *northSession) handleSubmitMulti(f Frame) {
	s := n.sess
	acct := n.admitSubmit(f)
	if acct == nil {
		return
	}
	m, err := ParseSubmitMulti(f.Body)
	if err != nil {
		n.refuseSubmit(f, acct, "malformed submit_multi", bodyStatus(err), err)
		return
	}
	if status, err := m.shared.validateContent(); err != nil {
		n.refuseSubmit(f, acct, "invalid submit_multi content", status, err)
		return
	}
	// Each destination is a message in flight: it takes a slot of the
	// session's window (a list longer than the window passes when nothing
	// else is in flight), and max_tps counts them all.
	slots := 0
	for _, d := range m.Dests {
		if !d.dl {
			slots++
		}
	}
	if p := int(n.pending.Load()); p > 0 && p+slots > int(n.window) {
		n.throttled(f, acct)
		return
	}
	if !acct.limiter.AllowN(len(m.Dests)) {
		n.throttled(f, acct)
		return
	}
	if !n.enterN(f, statusMsgQFul, slots) {
		n.logRefused(acct, statusMsgQFul)
		return
	}

	start := time.Now()
	group := n.srv.disp.IDs().Next()
	out := make([]SubmitOutcome, len(m.Dests))
	var left atomic.Int32
	left.Store(int32(len(m.Dests)))
	done := func() {
		if left.Add(-1) != 0 {
			return
		}
		status := multiStatus(out)
		id := ""
		if status == statusOK {
			id = group
		}
		body := submitMultiResp(id, m, out)
		// The message log's lines before the answer (as for submit_sm):
		// one per destination, under the id the platform gets.
		if ml := n.srv.disp.mlog(); ml != nil {
			for i, o := range out {
				part := ""
				if o.Status == statusOK {
					part = partID(group, i)
				}
				o.ID = id
				ml.submitted(acct.SystemID, o, m.Dests[i].addr, part, len(m.Dests))
			}
		}
		answered := func() {
			for _, o := range out {
				metricNorthSubmits.WithLabelValues(acct.SystemID, statusName(o.Status)).Inc()
				observeSubmitLatency(o.Path, time.Since(start).Seconds())
			}
			n.inflight.Done()
		}
		n.release(slots)
		if s.TryRespond(f, status, body) {
			answered()
			return
		}
		n.srv.workers.run(func() {
			s.Respond(f, status, body)
			answered()
		})
	}
	s.log.Debug("submit_multi split", zap.String("id", group), zap.Int("destinations", len(m.Dests)))
	for i, d := range m.Dests {
		if d.dl {
			out[i] = SubmitOutcome{Status: statusCntSubDL, Path: pathError}
			done()
			continue
		}
		n.srv.workers.run(func() {
			defer done()
			defer func() {
				if r := recover(); r != nil { // this destination fails; the others and the process go on
					metricPanics.Inc()
					s.log.Error("panic in a submit_multi destination", zap.Any("panic", r), zap.Stack("stack"))
					out[i] = SubmitOutcome{Status: statusSysErr, Path: pathError}
				}
			}()
			body := m.partBody(d)
			sm, err := ParseShortMessage(body)
			if err != nil { // cannot happen: the body parsed with another address of the same bounds
				out[i] = SubmitOutcome{Status: statusInvDstAdr, Path: pathError}
				return
			}
			out[i] = n.srv.disp.SubmitAs(context.Background(), partID(group, i), acct.SystemID, sm, body)
		})
	}
}
