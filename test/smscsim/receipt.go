package smscsim

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// receipt is a delivery receipt to send (or resend).
type receipt struct {
	systemID  string
	msg       Message
	stat      string
	errCode   string
	submitted time.Time
	done      time.Time // set when first built, kept on resends
	text      []byte    // built once, identical on resends
	cancelled bool      // by a cancel_sm before it went out; guarded by SMSC.mu
}

// MessageState maps a receipt stat to the message_state TLV value
// (SMPP 3.4 5.2.28 and 5.3.2.35).
func MessageState(stat string) byte {
	switch stat {
	case "ENROUTE":
		return 1
	case "DELIVRD":
		return 2
	case "EXPIRED":
		return 3
	case "DELETED":
		return 4
	case "UNDELIV":
		return 5
	case "ACCEPTD":
		return 6
	case "REJECTD":
		return 8
	default:
		return 7 // UNKNOWN
	}
}

// ReceiptText formats the SMPP 3.4 Appendix B receipt text:
// "id:IIII sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm
// stat:DELIVRD err:000 text:first 20 characters".
func ReceiptText(id, stat, errCode string, submitted, done time.Time, text string) string {
	dlvrd := "000"
	if stat == "DELIVRD" {
		dlvrd = "001"
	}
	if errCode == "" {
		errCode = "000"
	}
	const layout = "0601021504" // YYMMDDhhmm
	return fmt.Sprintf("id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:%s",
		id, dlvrd, submitted.Format(layout), done.Format(layout), stat, errCode, text)
}

// receiptSnippet is the receipt's text: the first 20 characters of the
// message when it is plain GSM/ASCII text, else empty.
func receiptSnippet(m Message) string {
	if m.DataCoding != 0 && m.DataCoding != 1 {
		return ""
	}
	t, err := m.Text()
	if err != nil {
		return ""
	}
	var b strings.Builder
	n := 0
	for _, r := range t {
		if n == 20 {
			break
		}
		if r < 0x20 || r > 0x7E {
			r = '.'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// pickReceiverLocked chooses a bound receiver or transceiver (round robin),
// of the given system_id unless it is "".
func (s *SMSC) pickReceiverLocked(systemID string) *conn {
	var cands []*conn
	for c := range s.conns {
		if c.bound && !c.dead && c.kind.canReceive() && (systemID == "" || c.systemID == systemID) {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	sortConns(cands) // map order is random; order by id for a fair round robin
	s.rr++
	return cands[int(s.rr%uint64(len(cands)))]
}

func sortConns(cs []*conn) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].id < cs[j-1].id; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// sendReceipt writes the receipt on a receiver bind of its system_id, or
// holds it until one binds.
func (s *SMSC) sendReceipt(r *receipt) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if r.cancelled {
		s.mu.Unlock()
		return // cancelled (cancel_sm) before it went out
	}
	c := s.pickReceiverLocked(r.systemID)
	if c == nil || s.hold {
		s.held = append(s.held, r)
		s.notifyLocked()
		s.mu.Unlock()
		return
	}
	if r.text == nil {
		r.done = time.Now()
		r.text = []byte(ReceiptText(r.msg.ReceiptID, r.stat, r.errCode, r.submitted, r.done, receiptSnippet(r.msg)))
	}
	seq := c.nextSeqLocked()
	c.inflight[seq] = &delivery{rcpt: r}
	delete(s.pending, r.msg.ID)
	s.stats.ReceiptsSent++
	s.notifyLocked()
	s.mu.Unlock()

	m := r.msg
	if s.opts.ReceiptsByDataSM {
		d := pdu.NewDataSM().(*pdu.DataSM)
		d.SourceAddr = addr(m.DestTON, m.DestNPI, m.Dest)
		d.DestAddr = addr(m.SourceTON, m.SourceNPI, m.Source)
		d.EsmClass = data.SM_SMSC_DLV_RCPT_TYPE
		c.send(encode(d, 0, seq, []TLV{
			{Tag: TagReceiptedMessageID, Value: append([]byte(m.ReceiptID), 0)},
			{Tag: TagMessageState, Value: []byte{MessageState(r.stat)}},
			{Tag: 0x0424, Value: r.text}, // message_payload: the receipt text
		}))
		return
	}
	d := pdu.NewDeliverSM().(*pdu.DeliverSM)
	// A receipt travels back: from the original destination to the original source.
	d.SourceAddr = addr(m.DestTON, m.DestNPI, m.Dest)
	d.DestAddr = addr(m.SourceTON, m.SourceNPI, m.Source)
	d.EsmClass = data.SM_SMSC_DLV_RCPT_TYPE // 0x04, SMPP 3.4 5.2.12
	_ = d.Message.SetMessageDataWithEncoding(r.text, data.GSM7BIT)
	tlvs := []TLV{
		{Tag: TagReceiptedMessageID, Value: append([]byte(m.ReceiptID), 0)}, // 5.3.2.12: C-Octet String
		{Tag: TagMessageState, Value: []byte{MessageState(r.stat)}},         // 5.3.2.35
	}
	c.send(encode(d, 0, seq, tlvs)) // if the conn is closing, close() gives r back to s.held
}

func addr(ton, npi byte, a string) pdu.Address {
	v := pdu.NewAddressWithTonNpi(ton, npi)
	_ = v.SetAddress(a) // addresses came from a parsed PDU, so they fit
	return v
}

// SendMO sends a mobile-originated deliver_sm (esm_class 0) from a handset
// number to a bound receiver or transceiver (preferring Options.SystemID's),
// and waits for its deliver_sm_resp. Text is GSM 7-bit when it can be, else UCS2.
func (s *SMSC) SendMO(ctx context.Context, from, to, text string) error {
	d := pdu.NewDeliverSM().(*pdu.DeliverSM)
	d.SourceAddr = addr(1, 1, from)
	d.DestAddr = addr(0, 0, to)
	enc := data.GSM7BIT
	if len(data.ValidateGSM7String(text)) > 0 {
		enc = data.UCS2
	}
	if err := d.Message.SetMessageWithEncoding(text, enc); err != nil {
		return fmt.Errorf("smscsim %s: MO text: %w", s.opts.Name, err)
	}
	return s.deliver(ctx, d, nil, &s.stats.MOSent)
}

// SendReceipt sends a delivery receipt (Appendix B text, receipted_message_id
// and message_state) for a message of id that this simulator never took
// through the binds it has: one a platform sent the carrier directly before
// it was repointed at the gateway. from is the handset, to the platform's
// source address. It waits for the deliver_sm_resp, as SendMO.
func (s *SMSC) SendReceipt(ctx context.Context, id, from, to, stat string) error {
	d := pdu.NewDeliverSM().(*pdu.DeliverSM)
	d.SourceAddr = addr(1, 1, from)
	d.DestAddr = addr(0, 0, to)
	d.EsmClass = data.SM_SMSC_DLV_RCPT_TYPE
	now := time.Now()
	if err := d.Message.SetMessageDataWithEncoding([]byte(ReceiptText(id, stat, "000", now, now, "")), data.GSM7BIT); err != nil {
		return fmt.Errorf("smscsim %s: receipt text: %w", s.opts.Name, err)
	}
	return s.deliver(ctx, d, []TLV{
		{Tag: TagReceiptedMessageID, Value: append([]byte(id), 0)},
		{Tag: TagMessageState, Value: []byte{MessageState(stat)}},
	}, &s.stats.ReceiptsSent)
}

// deliver sends d to a bound receiver or transceiver (preferring
// Options.SystemID's), counting it in *sent (a field of s.stats), and waits
// for its deliver_sm_resp.
func (s *SMSC) deliver(ctx context.Context, d *pdu.DeliverSM, tlvs []TLV, sent *uint64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	c := s.pickReceiverLocked(s.opts.SystemID)
	if c == nil {
		c = s.pickReceiverLocked("")
	}
	if c == nil {
		s.mu.Unlock()
		return ErrNoReceiver
	}
	seq := c.nextSeqLocked()
	wait := make(chan uint32, 1)
	c.inflight[seq] = &delivery{resp: wait}
	*sent++
	s.notifyLocked()
	s.mu.Unlock()
	if !c.send(encode(d, 0, seq, tlvs)) {
		return ErrConnClosed
	}
	select {
	case st, ok := <-wait:
		if !ok {
			return ErrConnClosed
		}
		if st != 0 {
			return &StatusError{Status: st}
		}
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(c.inflight, seq)
		s.mu.Unlock()
		return ctx.Err()
	}
}

// StatusByPrefix answers with the status of the longest destination prefix
// that matches (SMPP command_status, e.g. 0x0B ESME_RINVDSTADR), else OK.
func StatusByPrefix(statuses map[string]uint32) Behaviour {
	return func(m Message, _ int) Reply {
		best, st := -1, uint32(0)
		for p, v := range statuses {
			if strings.HasPrefix(m.Dest, p) && len(p) > best {
				best, st = len(p), v
			}
		}
		return Reply{Status: st}
	}
}

// ReceiptStatByPrefix accepts everything and gives the receipt the stat (and
// err) of the longest matching destination prefix, else DELIVRD.
func ReceiptStatByPrefix(stats map[string]string, errCode string) Behaviour {
	return func(m Message, _ int) Reply {
		best, st := -1, ""
		for p, v := range stats {
			if strings.HasPrefix(m.Dest, p) && len(p) > best {
				best, st = len(p), v
			}
		}
		r := Reply{ReceiptStat: st}
		if st != "" && st != "DELIVRD" {
			r.ReceiptErr = errCode
		}
		return r
	}
}

// FailAttempts answers status to the first n attempts of each message, then OK.
func FailAttempts(n int, status uint32) Behaviour {
	return func(_ Message, attempt int) Reply {
		if attempt <= n {
			return Reply{Status: status}
		}
		return Reply{}
	}
}
