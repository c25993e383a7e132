package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/spareline/spareline/test/smscsim"
)

// A platform hands spareline one message and its recipient list (seed
// patent [0019]) as a submit_multi, here from gosmpp's client: spareline
// splits it by operator, each carrier gets an ordinary submit_sm for its own
// numbers only, the submit_multi_resp names the destinations that were not
// taken (a number the carrier refuses, a distribution list) with their
// statuses, and every delivered destination's receipt comes back under the
// one id the platform was given.
func TestSubmitMultiSplitsByOperator(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		const refused = "13012345679" // unicom refuses it: a number error, no failover
		e.smscs["unicom"].SetBehaviour(func(m smscsim.Message, _ int) smscsim.Reply {
			if m.Dest == refused {
				return smscsim.Reply{Status: uint32(data.ESME_RINVDSTADR)}
			}
			return smscsim.Reply{}
		})
		var (
			resp     *pdu.SubmitMultiResp
			receipts = map[string][]string{} // receipted id -> the handsets they came from
		)
		g := dialGosmpp(t, e, time.Second, func(p pdu.PDU) string {
			switch pd := p.(type) {
			case *pdu.SubmitMultiResp:
				resp = pd
			case *pdu.DeliverSM:
				id, _ := receiptFields(pd)
				receipts[id] = append(receipts[id], pd.SourceAddr.Address())
			}
			return ""
		})

		sm := pdu.NewSubmitMulti().(*pdu.SubmitMulti)
		_ = sm.SourceAddr.SetAddress("10690001")
		delivered := []string{"13800138000", "13012345678", "13312345678"} // one per operator
		for _, n := range append(slices.Clone(delivered), refused) {
			a := pdu.NewAddress()
			a.SetTon(0)
			a.SetNpi(1)
			_ = a.SetAddress(n)
			d := pdu.NewDestinationAddress()
			d.SetAddress(a)
			sm.DestAddrs.Add(d)
		}
		dl := pdu.NewDestinationAddress()
		list, _ := pdu.NewDistributionList("duty-roster")
		dl.SetDistributionList(list)
		sm.DestAddrs.Add(dl)
		sm.RegisteredDelivery = 1
		const text = "紧急通知：220kV变电站故障，请值班人员立即到岗。"
		if err := sm.Message.SetMessageWithEncoding(text, data.UCS2); err != nil {
			t.Fatal(err)
		}
		if err := g.sess.Transceiver().Submit(sm); err != nil {
			t.Fatal(err)
		}
		g.waitUntil(t, func() bool {
			return resp != nil && (resp.CommandStatus != data.ESME_ROK || len(receipts[resp.MessageID]) == len(delivered))
		}, func() string { return fmt.Sprintf("resp %+v, receipts %v", resp, receipts) })
		g.mu.Lock()
		defer g.mu.Unlock()
		if resp.CommandStatus != data.ESME_ROK || resp.MessageID == "" {
			t.Errorf("submit_multi_resp: status %v, id %q", resp.CommandStatus, resp.MessageID)
			return
		}
		unsuccess := map[string]data.CommandStatusType{}
		for _, u := range resp.UnsuccessSMEs.Get() {
			unsuccess[u.Address.Address()] = u.ErrorStatusCode()
		}
		want := map[string]data.CommandStatusType{refused: data.ESME_RINVDSTADR, "duty-roster": data.ESME_RCNTSUBDL}
		if len(unsuccess) != len(want) || unsuccess[refused] != want[refused] || unsuccess["duty-roster"] != want["duty-roster"] {
			t.Errorf("unsuccessful destinations %v, want %v", unsuccess, want)
		}
		if got := receipts[resp.MessageID]; !sameSet(got, delivered) {
			t.Errorf("receipts under %s came from %q, want one from each of %q (all receipts: %v)", resp.MessageID, got, delivered, receipts)
		}
		if len(receipts) != 1 {
			t.Errorf("receipts under %d ids, want only the submit_multi's: %v", len(receipts), receipts)
		}
		if len(g.problems) != 0 {
			t.Errorf("gosmpp session problems: %q", g.problems)
		}

		// Each carrier saw an ordinary submit_sm for its own numbers, with
		// the platform's text and source.
		for name, dests := range map[string][]string{
			"mobile": {"13800138000"}, "unicom": {"13012345678", refused}, "telecom": {"13312345678"},
		} {
			var got []string
			for _, m := range e.smscs[name].Received() {
				got = append(got, m.Dest)
				if txt, err := m.Text(); err != nil || txt != text || m.Source != "10690001" || m.RegisteredDelivery != 1 {
					t.Errorf("%s got %q from %q (registered_delivery %d, err %v)", name, txt, m.Source, m.RegisteredDelivery, err)
				}
			}
			if !sameSet(got, dests) {
				t.Errorf("carrier %s got submits for %q, want %q", name, got, dests)
			}
		}
	})
}

// Malformed submit_multi bodies get a submit_multi_resp with the status
// naming the problem, and the session lives on.
func TestSubmitMultiMalformed(t *testing.T) {
	e := startEnv(t, "bolt")
	r := e.rawDial(t)
	r.bind(idBindTRX)
	head := []byte{0, 0, 0} // service_type "", source ton, npi
	head = append(head, "10690001\x00"...)
	tail := submitBody("", 0, 0, 5, []byte("hello"))[15:] // esm_class onwards (after "", 1, 1, "10690001", 1, 1, "")
	sme := func(n string) []byte { return append([]byte{1, 0, 1}, n+"\x00"...) }
	cases := []struct {
		name   string
		body   []byte
		status uint32
	}{
		{"no destinations", slices.Concat(head, []byte{0}, tail), uint32(data.ESME_RINVNUMDESTS)},
		{"bad dest_flag", slices.Concat(head, []byte{1, 3, 0, 1}, []byte("13800138000\x00"), tail), uint32(data.ESME_RINVDESTFLAG)},
		{"fewer destinations than announced", slices.Concat(head, []byte{3}, sme("13800138000"), sme("13012345678")), uint32(data.ESME_RINVMSGLEN)},
		{"overlong address", slices.Concat(head, []byte{1}, sme("138001380001380013800138"), tail), uint32(data.ESME_RINVDSTADR)},
	}
	for i, c := range cases {
		seq := uint32(100 + i)
		r.send(idSubmitMulti, seq, c.body)
		r.expect(idSubmitMulti|respBit, c.status, seq)
		if t.Failed() {
			t.Fatalf("case %q", c.name)
		}
	}
	r.alive(200)
	// And a good one still goes through.
	r.send(idSubmitMulti, 300, slices.Concat(head, []byte{1}, sme("13800138000"), tail))
	p := r.expect(idSubmitMulti|respBit, 0, 300)
	if len(p.Body) < 3 || p.Body[len(p.Body)-1] != 0 || p.Body[0] == 0 {
		t.Fatalf("submit_multi_resp body % x: want an id and no_unsuccess 0", p.Body)
	}
}

const idSubmitMulti = uint32(0x00000021)

// sameSet reports whether a and b hold the same strings, counting repeats.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Each destination of a submit_multi in flight takes a slot of the
// session's window: with a window of 4 and three destinations still at the
// carrier, a submit_multi to two more is ESME_RTHROTTLED, while one more
// submit_sm fits; and a list longer than the window passes when nothing
// else is in flight.
func TestSubmitMultiTakesAWindowSlotPerDestination(t *testing.T) {
	e := startEnv(t, "bolt", withSMPPWindow(4))
	e.smscs["mobile"].SetBehaviour(func(smscsim.Message, int) smscsim.Reply {
		return smscsim.Reply{Delay: time.Second} // the three stay in flight meanwhile
	})
	r := e.rawDial(t)
	r.bind(idBindTRX)
	head := append([]byte{0, 0, 0}, "10690001\x00"...)
	tail := submitBody("", 0, 0, 5, []byte("hello"))[15:]
	sme := func(n string) []byte { return append([]byte{1, 0, 1}, n+"\x00"...) }
	r.send(idSubmitMulti, 10, slices.Concat(head, []byte{3}, sme("13800138000"), sme("13800138001"), sme("13800138002"), tail))
	r.send(idSubmitMulti, 11, slices.Concat(head, []byte{2}, sme("13012345678"), sme("13312345678"), tail))
	r.expect(idSubmitMulti|respBit, uint32(data.ESME_RTHROTTLED), 11)
	r.send(idSubmitSM, 12, submitBody("13012345678", 0, 0, 5, []byte("hello")))
	r.expect(idSubmitSM|respBit, 0, 12)
	r.expect(idSubmitMulti|respBit, 0, 10)
	six := slices.Concat(head, []byte{6}, sme("13012345671"), sme("13012345672"), sme("13012345673"),
		sme("13012345674"), sme("13012345675"), sme("13012345676"), tail)
	r.send(idSubmitMulti, 13, six)
	r.expect(idSubmitMulti|respBit, 0, 13)
}
