package proxy

import (
	"bytes"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// deliver_sm_resp and data_sm_resp carry message_id (SMPP 3.4 §4.6.2,
// §4.7.2): unused, a single NUL. Unlike submit_sm_resp (§4.4.2), nothing
// says the body goes when command_status is not 0, and SMSCs whose decoders
// read the field unconditionally (Kannel, for one, always writes it) take
// a 16-octet answer for a malformed PDU: the refusal that asks them to
// send the receipt again (ESME_RX_T_APPN) would be lost with it. Every
// answer to the carrier's deliver_sm and data_sm has the NUL, whatever its
// status.
func TestCarrierDeliverAnswersAlwaysCarryMessageID(t *testing.T) {
	addr, conns := fakeSMSC(t)
	d := newTestDispatcher(t, openTestBolt(t))
	c := NewCarrier(config.Carrier{Name: "cm", Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		NewHealth(3, 0, zap.NewNop()), zap.NewNop())
	d.SetCarriers([]*Carrier{c})
	runCarrier(t, c)
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)

	good := goldenSubmit(t, "02 4F60", "")
	cases := []struct {
		name   string
		id     uint32
		body   []byte
		status uint32
	}{
		{"malformed deliver_sm", cmdDeliverSM, good[:5], statusInvMsgLen},
		{"malformed data_sm", cmdDataSM, good[:5], statusInvMsgLen},
		{"deliver_sm taken", cmdDeliverSM, good, statusOK},
	}
	for i, tc := range cases {
		seq := uint32(100 + i)
		p.write(tc.id, 0, seq, tc.body)
		f := p.read()
		if f.ID != tc.id|cmdRespBit || f.Seq != seq || f.Status != tc.status || !bytes.Equal(f.Body, []byte{0}) {
			t.Errorf("%s: answered %+v body %q, want status 0x%X, seq %d and body one NUL", tc.name, f.Header, f.Body,
				tc.status, seq)
		}
	}
}
