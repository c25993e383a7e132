package smscsim

import (
	"github.com/linxGnu/gosmpp/data"
)

// Cancel is a cancel_sm the simulator received (SMPP 3.4 §4.9.1).
type Cancel struct {
	ServiceType          string
	MessageID            string
	SourceTON, SourceNPI byte
	Source               string
	DestTON, DestNPI     byte
	Dest                 string
	Status               uint32 // what it was answered
}

// Cancels returns the cancel_sm requests received so far, in order.
func (s *SMSC) Cancels() []Cancel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Cancel(nil), s.cancels...)
}

// parseCancelBody decodes a cancel_sm body.
func parseCancelBody(body []byte) (Cancel, error) {
	r := &bodyReader{b: body}
	var c Cancel
	var err error
	for _, step := range []func() error{
		func() (e error) { c.ServiceType, e = r.cstring("service_type", 6); return },
		func() (e error) { c.MessageID, e = r.cstring("message_id", 65); return },
		func() (e error) { c.SourceTON, e = r.byte1("source_addr_ton"); return },
		func() (e error) { c.SourceNPI, e = r.byte1("source_addr_npi"); return },
		func() (e error) { c.Source, e = r.cstring("source_addr", 21); return },
		func() (e error) { c.DestTON, e = r.byte1("dest_addr_ton"); return },
		func() (e error) { c.DestNPI, e = r.byte1("dest_addr_npi"); return },
		func() (e error) { c.Dest, e = r.cstring("destination_addr", 21); return },
	} {
		if err = step(); err != nil {
			return Cancel{}, err
		}
	}
	if r.off != len(body) {
		return Cancel{}, &BodyError{Field: "end", Offset: r.off}
	}
	return c, nil
}

// handleCancel answers a cancel_sm as an SMSC holding scheduled messages
// does, with the simulator's notion of "not delivered yet": a message it
// accepted under that message_id, from that source_addr (and to that
// destination_addr when one is given), whose receipt has not gone out
// (held, or within ReceiptDelay), is cancelled (its receipt is never sent)
// and answered OK; any other gets ESME_RCANCELFAIL.
func (c *conn) handleCancel(h header, full []byte) {
	s := c.s
	const respID = uint32(0x80000008)
	s.mu.Lock()
	bound, kind, silent := c.bound, c.kind, s.silent
	s.mu.Unlock()
	if silent {
		return
	}
	if !bound || !kind.canSubmit() {
		c.send(headerOnly(respID, uint32(data.ESME_RINVBNDSTS), h.Seq))
		return
	}
	req, err := parseCancelBody(full[headerLen:])
	if err != nil {
		c.send(headerOnly(respID, uint32(data.ESME_RINVCMDLEN), h.Seq))
		return
	}
	req.Status = uint32(data.ESME_RCANCELFAIL)
	s.mu.Lock()
	var deleted *receipt
	if rc := s.pending[req.MessageID]; rc != nil && rc.msg.Source == req.Source && (req.Dest == "" || rc.msg.Dest == req.Dest) {
		rc.cancelled = true
		delete(s.pending, req.MessageID)
		req.Status = 0
		if s.opts.DeletedReceiptOnCancel {
			deleted = &receipt{systemID: rc.systemID, msg: rc.msg, stat: "DELETED", submitted: rc.submitted}
		}
	}
	s.cancels = append(s.cancels, req)
	s.notifyLocked()
	s.mu.Unlock()
	if deleted != nil {
		s.sendReceipt(deleted) // before the answer, on the wire
	}
	c.send(headerOnly(respID, req.Status, h.Seq))
}
