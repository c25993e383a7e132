package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// multiBody is a submit_multi body built by gosmpp (an encoder written by
// others): SME addresses for each of smes, then the distribution lists.
func multiBody(t testing.TB, text string, smes []string, dls ...string) []byte {
	t.Helper()
	sm := pdu.NewSubmitMulti().(*pdu.SubmitMulti)
	_ = sm.SourceAddr.SetAddress("10690001")
	for _, n := range smes {
		a := pdu.NewAddressWithTonNpi(1, 1)
		if err := a.SetAddress(n); err != nil {
			t.Fatal(err)
		}
		d := pdu.NewDestinationAddress()
		d.SetAddress(a)
		sm.DestAddrs.Add(d)
	}
	for _, n := range dls {
		l, err := pdu.NewDistributionList(n)
		if err != nil {
			t.Fatal(err)
		}
		d := pdu.NewDestinationAddress()
		d.SetDistributionList(l)
		sm.DestAddrs.Add(d)
	}
	sm.RegisteredDelivery = 1
	sm.PriorityFlag = 2
	if err := sm.Message.SetMessageWithEncoding(text, data.UCS2); err != nil {
		t.Fatal(err)
	}
	b := pdu.NewBuffer(nil)
	sm.Marshal(b)
	return b.Bytes()[headerLen:]
}

// Each destination's submit_sm is what the platform would have sent for that
// number alone: gosmpp's own submit_sm with the same fields, octet for octet.
func TestSubmitMultiPartsAreTheSubmitsThePlatformWouldSend(t *testing.T) {
	body := multiBody(t, "停电通知", []string{"8613800138000", "8613012345678"}, "duty")
	m, err := ParseSubmitMulti(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Dests) != 3 || !m.Dests[2].dl || m.Dests[2].addr != "duty" || m.Dests[0].dl {
		t.Fatalf("destinations %+v", m.Dests)
	}
	for i, n := range []string{"8613800138000", "8613012345678"} {
		want := pdu.NewSubmitSM().(*pdu.SubmitSM)
		_ = want.SourceAddr.SetAddress("10690001")
		want.DestAddr = pdu.NewAddressWithTonNpi(1, 1)
		_ = want.DestAddr.SetAddress(n)
		want.RegisteredDelivery = 1
		want.PriorityFlag = 2
		_ = want.Message.SetMessageWithEncoding("停电通知", data.UCS2)
		b := pdu.NewBuffer(nil)
		want.Marshal(b)
		if got := m.partBody(m.Dests[i]); !bytes.Equal(got, b.Bytes()[headerLen:]) {
			t.Errorf("destination %s:\n got % x\nwant % x", n, got, b.Bytes()[headerLen:])
		}
	}
	if m.shared.RegisteredDelivery != 1 || m.shared.Priority != 2 || m.shared.DataCoding != 8 {
		t.Errorf("shared fields %+v", m.shared)
	}
}

func TestParseSubmitMultiRefusals(t *testing.T) {
	good := multiBody(t, "hi", []string{"13800138000"})
	head := len("\x00") + 2 + len("10690001\x00") // service_type, ton, npi, source_addr
	withDests := func(n byte, dests ...[]byte) []byte {
		b := slices.Clone(good[:head])
		b = append(b, n)
		for _, d := range dests {
			b = append(b, d...)
		}
		return append(b, good[head+1+3+len("13800138000\x00"):]...)
	}
	sme := []byte("\x01\x01\x0113800138000\x00")
	many := make([][]byte, 255)
	for i := range many {
		many[i] = sme
	}
	cases := []struct {
		name   string
		body   []byte
		status data.CommandStatusType
	}{
		{"no destinations", withDests(0), data.ESME_RINVNUMDESTS},
		{"255 destinations", withDests(255, many...), data.ESME_RINVNUMDESTS},
		{"dest_flag 3", withDests(1, []byte("\x03\x01\x0113800138000\x00")), data.ESME_RINVDESTFLAG},
		{"address of 21 octets", withDests(1, []byte("\x01\x01\x01123456789012345678901\x00")), data.ESME_RINVDSTADR},
		{"dl_name of 21 octets", withDests(1, []byte("\x02123456789012345678901\x00")), data.ESME_RINVDLNAME},
		{"cut in a destination", good[:head+4], data.ESME_RINVMSGLEN},
		{"cut before the destinations", good[:head], data.ESME_RINVMSGLEN},
		{"cut after them", good[:head+1+len(sme)], data.ESME_RINVMSGLEN},
		{"bad source", []byte("\x00\x01\x01" + "1234567890123456789012345\x00"), data.ESME_RINVSRCADR},
		{"broken TLV", append(slices.Clone(good), 0x04, 0x24, 0x00), data.ESME_RINVOPTPARSTREAM},
	}
	for _, c := range cases {
		_, err := ParseSubmitMulti(c.body)
		var be *BodyError
		if !errors.As(err, &be) || be.Status != uint32(c.status) {
			t.Errorf("%s: %v, want %v", c.name, err, c.status)
		}
	}
	if m, err := ParseSubmitMulti(withDests(254, many[:254]...)); err != nil || len(m.Dests) != 254 {
		t.Errorf("254 destinations: %v", err)
	}
}

func TestSubmitMultiResp(t *testing.T) {
	m := &SubmitMulti{Dests: []multiDest{{ton: 1, npi: 1, addr: "8613800138000"}, {ton: 1, npi: 1, addr: "8613012345679"}, {dl: true, addr: "duty"}}}
	out := []SubmitOutcome{{ID: "a", Status: statusOK}, {Status: statusInvDstAdr}, {Status: statusCntSubDL}}
	if s := multiStatus(out); s != statusOK {
		t.Errorf("status %#x with one destination taken", s)
	}
	// What gosmpp's decoder reads from it.
	body := submitMultiResp("0123", m, out)
	full := binary.BigEndian.AppendUint32(nil, uint32(headerLen+len(body)))
	full = binary.BigEndian.AppendUint32(full, cmdSubmitMulti|cmdRespBit)
	full = binary.BigEndian.AppendUint32(full, 0)
	full = binary.BigEndian.AppendUint32(full, 7)
	p, err := pdu.Parse(bytes.NewReader(append(full, body...)))
	if err != nil {
		t.Fatal(err)
	}
	resp := p.(*pdu.SubmitMultiResp)
	us := resp.UnsuccessSMEs.Get()
	if resp.MessageID != "0123" || len(us) != 2 || us[0].Address.Address() != "8613012345679" || us[0].ErrorStatusCode() != data.ESME_RINVDSTADR ||
		us[1].Address.Address() != "duty" || us[1].ErrorStatusCode() != data.ESME_RCNTSUBDL {
		t.Errorf("decoded %+v", resp)
	}
	if s := multiStatus([]SubmitOutcome{{Status: statusInvDstAdr}, {Status: statusInvDstAdr}}); s != statusInvDstAdr {
		t.Errorf("status %#x when every destination got ESME_RINVDSTADR", s)
	}
	if s := multiStatus([]SubmitOutcome{{Status: statusInvDstAdr}, {Status: statusMsgQFul}}); s != statusSubmitFail {
		t.Errorf("status %#x when the destinations failed differently", s)
	}
}

func TestPlatformID(t *testing.T) {
	g := NewIDGen()
	id := g.Next()
	for in, want := range map[string]string{
		id: id, partID(id, 0): id, partID(id, 1): id, partID(id, 253): id,
		id + "-x": id + "-x", "abc-1": "abc-1", "carrier-17": "carrier-17", id + "-": id + "-",
	} {
		if got := platformID(in); got != want {
			t.Errorf("platformID(%q) = %q, want %q", in, got, want)
		}
	}
}

// A submit_multi to more destinations than max_tps passes when the bucket
// is full and leaves it in debt: the rate still holds over time.
func TestRateLimiterAllowN(t *testing.T) {
	l := newRateLimiter(10)
	if !l.AllowN(4) || !l.AllowN(6) || l.AllowN(1) {
		t.Fatal("a full bucket of 10 should give 4 then 6, then nothing")
	}
	l = newRateLimiter(10)
	if !l.AllowN(25) {
		t.Fatal("25 destinations refused with a full bucket of 10")
	}
	l.last = l.last.Add(-2 * time.Second) // 2 s later: 20 tokens back, 15 in debt was paid
	if !l.AllowN(5) || l.AllowN(1) {
		t.Fatalf("after the debt was repaid: tokens %v", l.tokens)
	}
	var none *rateLimiter
	if !none.AllowN(1000) {
		t.Error("no limit refused")
	}
}

func FuzzParseSubmitMulti(f *testing.F) {
	f.Add(multiBody(f, "hi", []string{"13800138000", "13012345678"}, "dl"))
	f.Add([]byte("\x00\x01\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseSubmitMulti(body)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) || be.Status == statusOK {
				t.Fatalf("error without a status: %v", err)
			}
			return
		}
		if len(m.Dests) == 0 || len(m.Dests) > maxMultiDests {
			t.Fatalf("%d destinations", len(m.Dests))
		}
		for _, d := range m.Dests {
			sm, err := ParseShortMessage(m.partBody(d))
			if err != nil {
				t.Fatalf("destination %q: its submit_sm does not parse: %v", d.addr, err)
			}
			if sm.Dest != d.addr || !bytes.Equal(sm.Message, m.shared.Message) {
				t.Fatalf("destination %q became %q", d.addr, sm.Dest)
			}
		}
	})
}
