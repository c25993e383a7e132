package smscsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawPeer is a hand-driven SMPP peer for protocol edge cases.
type rawPeer struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func rawDial(t *testing.T, s *SMSC) *rawPeer {
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &rawPeer{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (p *rawPeer) write(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) read() (header, []byte) {
	p.t.Helper()
	h, full, err := readFrame(p.r)
	if err != nil {
		p.t.Fatal(err)
	}
	return h, full
}

func (p *rawPeer) bind(kind pdu.BindingType, seq uint32) {
	p.t.Helper()
	req := pdu.NewBindRequest(kind)
	req.SystemID, req.Password = "ent01", "pw"
	p.write(encode(req, 0, seq, nil))
	if h, _ := p.read(); h.Seq != seq || h.Status != 0 {
		p.t.Fatalf("bind answered %+v", h)
	}
}

func submitPDU(seq uint32, dest string, rd byte) []byte {
	p := pdu.NewSubmitSM().(*pdu.SubmitSM)
	p.SourceAddr, _ = pdu.NewAddressWithAddr("1069")
	p.DestAddr, _ = pdu.NewAddressWithAddr(dest)
	p.RegisteredDelivery = rd
	p.Message, _ = pdu.NewShortMessage("hi")
	return encode(p, 0, seq, nil)
}

func start(t *testing.T, o Options) *SMSC {
	o.SystemID, o.Password = "ent01", "pw"
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestProtocolEdges(t *testing.T) {
	s := start(t, Options{})
	p := rawDial(t, s)

	// submit_sm before bind: ESME_RINVBNDSTS, no body (SMPP 3.4 4.4.2)
	p.write(submitPDU(7, "8613800000000", 0))
	if h, full := p.read(); h.ID != cmdSubmitSMResp || h.Status != 0x04 || h.Seq != 7 || len(full) != headerLen {
		t.Fatalf("submit before bind: %+v len %d", h, len(full))
	}
	p.bind(pdu.Transceiver, 8)
	// a second bind: ESME_RALYBND
	req := pdu.NewBindRequest(pdu.Transceiver)
	p.write(encode(req, 0, 9, nil))
	if h, _ := p.read(); h.Status != 0x05 || h.ID != 0x80000009 {
		t.Fatalf("second bind: %+v", h)
	}
	// unknown command id: generic_nack ESME_RINVCMDID
	p.write(headerOnly(0x00000103, 0, 10)) // data_sm, unsupported
	if h, _ := p.read(); h.ID != cmdGenericNack || h.Status != 0x03 || h.Seq != 10 {
		t.Fatalf("unknown command: %+v", h)
	}
	// enquire_link
	p.write(headerOnly(0x15, 0, 11))
	if h, _ := p.read(); h.ID != 0x80000015 || h.Seq != 11 {
		t.Fatalf("enquire_link: %+v", h)
	}
	// truncated submit_sm body: answered, connection kept
	p.write(headerOnly(0x04, 0, 12))
	if h, _ := p.read(); h.ID != cmdSubmitSMResp || h.Status != 0x02 {
		t.Fatalf("empty submit_sm: %+v", h)
	}
	// bad command_length: generic_nack then close
	bad := headerOnly(0x04, 0, 13)
	binary.BigEndian.PutUint32(bad, 8)
	p.write(bad)
	if h, _ := p.read(); h.ID != cmdGenericNack || h.Status != 0x02 {
		t.Fatalf("bad length: %+v", h)
	}
	if _, _, err := readFrame(p.r); err == nil {
		t.Fatal("connection still open after a bad command_length")
	}
}

func TestUnackedReceiptResentOnNextBind(t *testing.T) {
	s := start(t, Options{})
	tx := rawDial(t, s)
	tx.bind(pdu.Transmitter, 1)
	rx := rawDial(t, s)
	rx.bind(pdu.Receiver, 1)
	tx.write(submitPDU(2, "8613800000000", 1))
	h, full := tx.read()
	if h.Status != 0 {
		t.Fatalf("%+v", h)
	}
	id := string(bytes.TrimRight(full[headerLen:], "\x00"))
	h, first := rx.read()
	if h.ID != 0x05 {
		t.Fatalf("want deliver_sm, got %+v", h)
	}
	rx.nc.Close() // no deliver_sm_resp
	if err := s.WaitUntil(ctxT(t), func(st Stats) bool { return st.ReceiptsHeld == 1 }); err != nil {
		t.Fatal(err)
	}
	rx2 := rawDial(t, s)
	rx2.bind(pdu.Receiver, 1)
	h2, again := rx2.read()
	if !bytes.Equal(first[headerLen:], again[headerLen:]) {
		t.Fatalf("resent receipt differs:\n% X\n% X", first, again)
	}
	d, err := pdu.Parse(bytes.NewReader(again))
	if err != nil {
		t.Fatal(err)
	}
	dm := d.(*pdu.DeliverSM)
	if tlv := dm.OptionalParameters[pdu.TagReceiptedMessageID]; string(tlv.Data) != id+"\x00" {
		t.Fatalf("receipted_message_id % X for %q", tlv.Data, id)
	}
	rx2.write(headerOnly(0x80000005, 0, h2.Seq))
	if err := s.WaitUntil(ctxT(t), func(st Stats) bool { return st.ReceiptsAcked == 1 && st.ReceiptsSent == 2 }); err != nil {
		t.Fatal(err, s.Stats())
	}
}

func TestThrottleDelayAnswersAll(t *testing.T) {
	s := start(t, Options{MaxTPSPerBind: 200, Throttle: ThrottleDelay})
	p := rawDial(t, s)
	p.bind(pdu.Transmitter, 1)
	for i := uint32(0); i < 20; i++ {
		p.write(submitPDU(10+i, "8613800000000", 0))
	}
	seen := map[uint32]bool{} // answers held to the rate may come in any order
	for i := 0; i < 20; i++ {
		h, _ := p.read()
		if h.Status != 0 || h.Seq < 10 || h.Seq >= 30 || seen[h.Seq] {
			t.Fatalf("answer %d: %+v", i, h)
		}
		seen[h.Seq] = true
	}
	if st := s.Stats(); st.Throttled != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestReceiptText(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 0, 0, time.UTC)
	got := ReceiptText("3E8", "UNDELIV", "", at, at.Add(time.Minute), "hello")
	want := "id:3E8 sub:001 dlvrd:000 submit date:2503040506 done date:2503040507 stat:UNDELIV err:000 text:hello"
	if got != want {
		t.Fatalf("\n got %q\nwant %q", got, want)
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, o := range []Options{{IDFormat: "octal"}, {ReceiptIDFormat: "x"}, {Throttle: "drop"}} {
		if _, err := Start(o); err == nil {
			t.Fatalf("%+v accepted", o)
		}
	}
}

func FuzzParseSubmitBody(f *testing.F) {
	f.Add(submitPDU(1, "8613800000000", 1)[headerLen:])
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 8, 0, 6, 5, 0, 3, 1, 2, 1, 0x04, 0x24, 0, 1, 9})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseSubmitBody(b)
		if err != nil {
			return
		}
		_ = m.UDH()
		_ = m.UserData()
		m.Concat()
		_, _ = m.Text()
		_ = receiptSnippet(m)
	})
}

// FuzzSession feeds arbitrary bytes to a live simulator after a bind; it
// must neither panic nor hang.
func FuzzSession(f *testing.F) {
	f.Add(submitPDU(2, "8613800000000", 1))
	f.Add(headerOnly(0x15, 0, 3))
	f.Add(headerOnly(0x06, 0, 4))
	f.Add(headerOnly(0x80000005, 0, 1))
	f.Add([]byte{0, 0, 0, 8})
	s, err := Start(Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		req := pdu.NewBindRequest(pdu.Transceiver)
		_, _ = nc.Write(encode(req, 0, 1, nil))
		_, _ = nc.Write(b)
		_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		r := bufio.NewReader(nc)
		for {
			if _, _, err := readFrame(r); err != nil {
				return
			}
		}
	})
}

func TestRecordLimitKeepsLatest(t *testing.T) {
	s := start(t, Options{RecordLimit: 3})
	p := rawDial(t, s)
	p.bind(pdu.Transmitter, 1)
	for i := uint32(0); i < 10; i++ {
		p.write(submitPDU(10+i, "8613800000000", 0))
		p.read()
	}
	got := s.Received()
	if len(got) != 3 || got[2].Seq != 19 || got[0].Seq != 17 || s.Stats().Submits != 10 {
		t.Fatalf("%d kept, last seq %d, stats %+v", len(got), got[len(got)-1].Seq, s.Stats())
	}
}

// MaxBindsPerSystemID refuses a bind beyond the limit with ESME_RALYBND,
// and takes one again once a bound connection of that system_id has gone.
func TestMaxBindsPerSystemID(t *testing.T) {
	s := start(t, Options{MaxBindsPerSystemID: 1})
	a := rawDial(t, s)
	a.bind(pdu.Transceiver, 1)
	b := rawDial(t, s)
	req := pdu.NewBindRequest(pdu.Transceiver)
	req.SystemID, req.Password = "ent01", "pw"
	b.write(encode(req, 0, 2, nil))
	if h, _ := b.read(); h.Seq != 2 || h.Status != uint32(data.ESME_RALYBND) {
		t.Fatalf("second bind of ent01 answered %+v, want ESME_RALYBND", h)
	}
	a.nc.Close()
	if err := s.WaitUntil(ctxT(t), func(st Stats) bool { return st.Conns == 1 }); err != nil {
		t.Fatal(err)
	}
	b.bind(pdu.Transceiver, 3)
}
