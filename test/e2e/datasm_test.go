package e2e

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// A platform that submits by data_sm (SMPP 3.4 §4.7; gosmpp's client here)
// gets data_sm_resp with an id, the carrier gets the ordinary submit_sm that
// carries the same message (the text in short_message, qos_time_to_live as
// the validity_period), and the receipt reaches the platform under that id.
func TestPlatformDataSM(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		var (
			resp     *pdu.DataSMResp
			receipts = map[string]string{}
		)
		g := dialGosmpp(t, e, time.Second, func(p pdu.PDU) string {
			switch pd := p.(type) {
			case *pdu.DataSMResp:
				resp = pd
			case *pdu.DeliverSM:
				id, stat := receiptFields(pd)
				receipts[id] = stat
			}
			return ""
		})

		const text = "Feeder 12 restored at 04:10"
		d := pdu.NewDataSM().(*pdu.DataSM)
		_ = d.SourceAddr.SetAddress("10690001")
		d.DestAddr.SetTon(1)
		d.DestAddr.SetNpi(1)
		_ = d.DestAddr.SetAddress("8613012345678")
		d.RegisteredDelivery = 1
		d.RegisterOptionalParam(pdu.Field{Tag: pdu.TagMessagePayload, Data: []byte(text)})
		d.RegisterOptionalParam(pdu.Field{Tag: pdu.TagQosTimeToLive, Data: binary.BigEndian.AppendUint32(nil, 7200)})
		if err := g.sess.Transceiver().Submit(d); err != nil {
			t.Fatal(err)
		}
		g.waitUntil(t, func() bool {
			return resp != nil && (resp.CommandStatus != data.ESME_ROK || receipts[resp.MessageID] != "")
		}, func() string { return fmt.Sprintf("resp %+v, receipts %v", resp, receipts) })
		g.mu.Lock()
		defer g.mu.Unlock()
		if resp.CommandStatus != data.ESME_ROK || resp.MessageID == "" {
			t.Errorf("data_sm_resp: status %v, id %q", resp.CommandStatus, resp.MessageID)
			return
		}
		if receipts[resp.MessageID] != "DELIVRD" {
			t.Errorf("receipts %v, want DELIVRD under %s", receipts, resp.MessageID)
		}
		if len(g.problems) != 0 {
			t.Errorf("gosmpp session problems: %q", g.problems)
		}
		got := e.smscs["unicom"].Received()
		if len(got) != 1 {
			t.Fatalf("carrier got %d submits, want 1", len(got))
		}
		m := got[0]
		if txt, err := m.Text(); err != nil || txt != text || m.Dest != "8613012345678" || m.RegisteredDelivery != 1 ||
			m.ValidityPeriod != "000000020000000R" {
			t.Errorf("carrier got %q (%v) to %q, registered_delivery %d, validity %q", txt, err, m.Dest, m.RegisteredDelivery, m.ValidityPeriod)
		}
	})
}
