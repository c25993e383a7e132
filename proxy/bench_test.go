package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// The codec's per-PDU costs, with allocations:
//
//	go test -run '^$' -bench . -benchtime 2000x ./proxy/

// benchSubmitBody is a typical submit_sm body: GSM 7-bit text of 60
// characters, receipt requested.
func benchSubmitBody(b *testing.B) []byte {
	b.Helper()
	p := pdu.NewSubmitSM().(*pdu.SubmitSM)
	var err error
	if p.SourceAddr, err = pdu.NewAddressWithTonNpiAddr(5, 0, "10690001"); err != nil {
		b.Fatal(err)
	}
	if p.DestAddr, err = pdu.NewAddressWithTonNpiAddr(1, 1, "8613800138000"); err != nil {
		b.Fatal(err)
	}
	p.RegisteredDelivery = 1
	if err := p.Message.SetMessageWithEncoding("Substation 3 fault alarm: dispatch crew now, report at 14:00.", data.GSM7BIT); err != nil {
		b.Fatal(err)
	}
	return marshalBody(p)
}

// benchReceiptBody is a carrier's receipt: deliver_sm with esm_class 0x04,
// the Appendix B text and the receipted_message_id and message_state TLVs.
func benchReceiptBody(b *testing.B) []byte {
	b.Helper()
	p := pdu.NewDeliverSM().(*pdu.DeliverSM)
	var err error
	if p.SourceAddr, err = pdu.NewAddressWithTonNpiAddr(1, 1, "8613800138000"); err != nil {
		b.Fatal(err)
	}
	if p.DestAddr, err = pdu.NewAddressWithTonNpiAddr(5, 0, "10690001"); err != nil {
		b.Fatal(err)
	}
	p.EsmClass = 0x04
	text := "id:1234567890 sub:001 dlvrd:001 submit date:2611251800 done date:2611251801 stat:DELIVRD err:000 text:Substation 3"
	if err := p.Message.SetMessageWithEncoding(text, data.GSM7BIT); err != nil {
		b.Fatal(err)
	}
	body := marshalBody(p)
	tlv := func(tag uint16, v []byte) {
		body = binary.BigEndian.AppendUint16(body, tag)
		body = binary.BigEndian.AppendUint16(body, uint16(len(v)))
		body = append(body, v...)
	}
	tlv(tagReceiptedMessageID, []byte("1234567890\x00"))
	tlv(0x0427, []byte{2}) // message_state DELIVERED
	return body
}

func BenchmarkParseShortMessage(b *testing.B) {
	body := benchSubmitBody(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseShortMessage(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadFrame(b *testing.B) {
	frame := appendFrame(nil, 0x00000004, 0, 7, benchSubmitBody(b))
	var r bytes.Reader
	var hdr [headerLen]byte
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		r.Reset(frame)
		if _, err := readFrame(&r, 4096, &hdr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	body := benchSubmitBody(b)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(headerLen + len(body)))
	for b.Loop() {
		buf = appendFrame(buf[:0], 0x00000004, 0, 7, body)
	}
}

// BenchmarkReceiptRewrite is the receipt path's codec work: parse the
// carrier's deliver_sm, find its carrier id, write our id into the text and
// the TLV.
func BenchmarkReceiptRewrite(b *testing.B) {
	body := benchReceiptBody(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		sm, err := ParseShortMessage(body)
		if err != nil {
			b.Fatal(err)
		}
		if id, _, _ := receiptID(sm); id != "1234567890" {
			b.Fatalf("carrier id %q", id)
		}
		out := rewriteReceipt(sm, body, "SL0123456789abcdef")
		if len(out) == 0 {
			b.Fatal("empty body")
		}
	}
}

// BenchmarkWriteFrame is the writer's encoding of a relayed submit_sm and
// of a submit_sm_resp into its buffer: no allocation.
func BenchmarkWriteFrame(b *testing.B) {
	body := benchSubmitBody(b)
	w := bufio.NewWriterSize(io.Discard, writeBufSize)
	req := outFrame{id: cmdSubmitSM, seq: 7, body: body}
	resp := outFrame{id: cmdSubmitSMResp, seq: 7, cstr: true, str: "0123456789abcdef0123"}
	b.ReportAllocs()
	b.SetBytes(int64(req.size() + resp.size()))
	for b.Loop() {
		if writeFrame(w, &req) != nil || writeFrame(w, &resp) != nil {
			b.Fatal("write")
		}
	}
}

// benchCall is one request of BenchmarkSessionRelay: its call and where
// its outcome goes, in one allocation (as asyncSubmit keeps them).
type benchCall struct {
	call call
	done chan<- error
}

func (c *benchCall) requestDone(_ Frame, err error) { c.done <- err }

// BenchmarkSessionRelay is the session engine's share of a relayed
// message, over loopback TCP: a submit_sm sent with requestAsync (window
// 64), read and answered with tryRespondID by a second session (the
// SMSC), the response matched back. Per op: both sessions' reads,
// writes, framing and request table; the allocations are the request's
// own (benchCall) and the body the answering side reads.
//
//	go test -run '^$' -bench SessionRelay -benchtime 200000x ./proxy/
func BenchmarkSessionRelay(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	sc, ok := <-accepted
	if !ok {
		b.Fatal("accept failed")
	}
	const window = 64
	smsc := NewSession(sc, SessionConfig{Window: window, Handler: func(s *Session, f Frame) {
		if !s.tryRespondID(f, statusOK, "0123456789") {
			s.respondID(f, statusOK, "0123456789")
		}
	}}).Start()
	esme := NewSession(cc, SessionConfig{Window: window}).Start()
	defer func() {
		esme.Close()
		smsc.Close()
		esme.Wait()
		smsc.Wait()
	}()
	body := benchSubmitBody(b)
	done := make(chan error, window)
	b.ReportAllocs()
	b.ResetTimer()
	inflight := 0
	for i := 0; i < b.N; i++ {
		bc := &benchCall{done: done}
		bc.call.h = bc
		for !esme.requestAsync(cmdSubmitSM, body, time.Now().Add(time.Minute), &bc.call) {
			// The window is full: wait for an answer.
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			inflight--
		}
		inflight++
	}
	for ; inflight > 0; inflight-- {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}
