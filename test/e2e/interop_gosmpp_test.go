package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp"
	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/spareline/spareline/test/smscsim"
)

// A platform written by others: gosmpp's own client session (bind, submit
// window, enquire_link, automatic deliver_sm_resp), not our test client,
// binds to spareline as its SMSC. Its submits (GSM 7-bit, UCS2 Chinese, a
// long message split by gosmpp into UDH parts) reach the carrier with their
// text intact, each submit_sm_resp carries an id, every receipt comes back
// on the same bind with the id the platform was given, and its
// enquire_links are answered while it stays bound.
func TestThirdPartyClientGosmpp(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		var (
			ids      = map[int32]string{} // submit sequence -> message_id answered
			statuses = map[int32]data.CommandStatusType{}
			receipts = map[string]string{} // receipted id -> stat
			links    int                   // enquire_link_resp received
		)
		g := dialGosmpp(t, e, 200*time.Millisecond, func(p pdu.PDU) string {
			switch pd := p.(type) {
			case *pdu.SubmitSMResp:
				ids[pd.SequenceNumber] = pd.MessageID
				statuses[pd.SequenceNumber] = pd.CommandStatus
			case *pdu.DeliverSM:
				id, stat := receiptFields(pd)
				if id == "" {
					return "deliver_sm without a receipt id"
				}
				receipts[id] = stat
			case *pdu.EnquireLinkResp:
				links++
			}
			return ""
		})

		long := strings.Repeat("电网应急演练通知，请各单位按预案执行。", 8) // 152 characters: 3 UCS2 parts
		texts := []struct {
			text string
			enc  data.Encoding
		}{
			{"Substation 7 alarm: breaker tripped @ 03:12, call duty {ops}", data.GSM7BIT},
			{"紧急通知：变电站故障，请立即处理。", data.UCS2},
			{long, data.UCS2},
		}
		var sent []*pdu.SubmitSM
		for _, tx := range texts {
			sm := pdu.NewSubmitSM().(*pdu.SubmitSM)
			_ = sm.SourceAddr.SetAddress("10690001")
			sm.DestAddr.SetTon(1)
			sm.DestAddr.SetNpi(1)
			_ = sm.DestAddr.SetAddress("8613800138000")
			sm.RegisteredDelivery = 1
			if err := sm.Message.SetLongMessageWithEnc(tx.text, tx.enc); err != nil {
				t.Fatal(err)
			}
			parts, err := sm.Split()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range parts {
				p.AssignSequenceNumber() // gosmpp's Split gives every part the original's
				sent = append(sent, p)
			}
		}
		if len(sent) != 5 {
			t.Fatalf("gosmpp made %d submit_sm, want 5 (1 + 1 + 3 parts)", len(sent))
		}
		for _, p := range sent {
			if err := g.sess.Transceiver().Submit(p); err != nil {
				t.Fatal(err)
			}
		}
		g.waitUntil(t, func() bool { return len(ids) == len(sent) && len(receipts) == len(sent) && links >= 2 }, func() string {
			return fmt.Sprintf("%d of %d submit_sm_resp, %d receipts, %d enquire_link_resp", len(ids), len(sent), len(receipts), links)
		})

		g.mu.Lock()
		defer g.mu.Unlock()
		for _, p := range sent {
			seq := p.SequenceNumber
			if statuses[seq] != data.ESME_ROK || ids[seq] == "" {
				t.Errorf("submit seq %d: status %v, id %q", seq, statuses[seq], ids[seq])
				continue
			}
			if stat, ok := receipts[ids[seq]]; !ok || stat != "DELIVRD" {
				t.Errorf("message %s: receipt %q (found %v), want DELIVRD under the id the platform was given", ids[seq], stat, ok)
			}
		}
		if len(g.problems) != 0 {
			t.Errorf("gosmpp session problems: %q", g.problems)
		}

		// The carrier got the texts intact (the long one as UDH parts that
		// reassemble to it), whichever of its binds each came on.
		got := e.smscs["mobile"].Received()
		if len(got) != len(sent) {
			t.Fatalf("carrier got %d submits, want %d", len(got), len(sent))
		}
		parts := make([][]byte, 3)
		var whole []string
		for _, m := range got {
			if _, total, seq, ok := m.Concat(); ok {
				if total != 3 || seq < 1 || seq > 3 || m.DataCoding != 8 {
					t.Fatalf("part %d/%d (dc %d)", seq, total, m.DataCoding)
				}
				parts[seq-1] = m.UserData()
				continue
			}
			txt, err := m.Text()
			if err != nil {
				t.Fatal(err)
			}
			whole = append(whole, txt)
		}
		if len(whole) != 2 || !slices.Contains(whole, texts[0].text) || !slices.Contains(whole, texts[1].text) {
			t.Errorf("short texts arrived as %q, want %q and %q", whole, texts[0].text, texts[1].text)
		}
		if txt, _ := smscsim.DecodeText(8, slices.Concat(parts...)); txt != long {
			t.Errorf("long message reassembled as %q", txt)
		}
	})
}

// receiptFields reads a delivery receipt as a platform would: the
// receipted_message_id TLV, else the id: field of the text; and the stat:
// field.
func receiptFields(d *pdu.DeliverSM) (id, stat string) {
	txt, _ := d.Message.GetMessage()
	for _, f := range strings.Fields(txt) {
		if v, ok := strings.CutPrefix(f, "id:"); ok && id == "" {
			id = v
		}
		if v, ok := strings.CutPrefix(f, "stat:"); ok {
			stat = v
		}
	}
	if tlv, ok := d.OptionalParameters[pdu.TagReceiptedMessageID]; ok {
		if v := strings.TrimRight(string(tlv.Data), "\x00"); v != "" {
			id = v
		}
	}
	return id, stat
}

// gosmppPlatform is gosmpp's own client session (not our test client) bound
// to the gateway as a transceiver. Every PDU it receives is handed to the
// test's onPDU with mu held (a problem it returns is noted); generic_nacks,
// receive and submit errors and a close are noted in problems.
type gosmppPlatform struct {
	mu       sync.Mutex
	problems []string
	changed  chan struct{}
	sess     *gosmpp.Session
}

func dialGosmpp(t *testing.T, e *env, enquireLink time.Duration, onPDU func(pdu.PDU) (problem string)) *gosmppPlatform {
	t.Helper()
	g := &gosmppPlatform{changed: make(chan struct{}, 1)}
	note := func(problem string) {
		g.mu.Lock()
		g.problems = append(g.problems, problem)
		g.mu.Unlock()
	}
	sess, err := gosmpp.NewSession(
		gosmpp.TRXConnector(gosmpp.NonTLSDialer, gosmpp.Auth{
			SMSC: e.gw.SMPPAddr().String(), SystemID: "platform", Password: "secret",
		}),
		gosmpp.Settings{
			EnquireLink: enquireLink,
			ReadTimeout: 10 * time.Second,
			OnPDU: func(p pdu.PDU, _ bool) {
				g.mu.Lock()
				if _, nack := p.(*pdu.GenericNack); nack {
					g.problems = append(g.problems, "generic_nack")
				} else if problem := onPDU(p); problem != "" {
					g.problems = append(g.problems, problem)
				}
				g.mu.Unlock()
				select {
				case g.changed <- struct{}{}:
				default:
				}
			},
			OnReceivingError: func(err error) { note("receiving: " + err.Error()) },
			OnSubmitError:    func(_ pdu.PDU, err error) { note("submit: " + err.Error()) },
			OnClosed:         func(st gosmpp.State) { note("closed: " + st.String()) },
		}, 5*time.Second)
	if err != nil {
		t.Fatalf("gosmpp bind: %v", err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	g.sess = sess
	return g
}

// waitUntil waits, 30 s at most, until done (called with mu held) holds;
// else the test fails with state (called with mu held) and the problems.
func (g *gosmppPlatform) waitUntil(t *testing.T, done func() bool, state func() string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		g.mu.Lock()
		ok := done()
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-g.changed:
		case <-deadline:
			g.mu.Lock()
			msg := fmt.Sprintf("after 30 s: %s; problems %q", state(), g.problems)
			g.mu.Unlock() // the session's OnClosed takes mu as it closes
			t.Fatal(msg)
		}
	}
}
