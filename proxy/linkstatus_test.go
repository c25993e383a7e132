package proxy

import (
	"testing"

	"go.uber.org/zap"
)

// A carrier's answer that is about spareline's own session with it, not
// about the message (SMPP 3.4 §5.1.3: ESME_RINVBNDSTS, ESME_RINVCMDID,
// ESME_RINVCMDLEN in a generic_nack...), is not relayed to the platform,
// whose own session is fine and bound: a platform told ESME_RINVBNDSTS for
// a submit_sm rebinds or gives up on the message, one told ESME_RINVCMDID
// concludes submit_sm is not offered. Without modems it gets ESME_RSYSERR
// (the system failed; ask again). Statuses about the message are relayed
// as the carrier gave them.
func TestCarrierLinkStatusNotRelayed(t *testing.T) {
	addr, conns := fakeSMSC(t)
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	health := NewHealth(3, 0, zap.NewNop())
	ts.disp.health = health // before any session runs
	c := startTestCarrier(t, "mobile", addr)
	c.health = health
	ts.disp.SetCarriers([]*Carrier{c})
	smsc := nextConn(t, conns)
	f := smsc.read()
	smsc.write(f.ID|cmdRespBit, statusOK, f.Seq, cstring(nil, "smsc"))
	waitCond(t, "the carrier bound", func() bool { return c.Bound() == 1 })

	p := bound(t, ts, cmdBindTransmitter)
	cases := []struct {
		name         string
		id, status   uint32
		wantPlatform uint32
	}{
		{"generic_nack ESME_RINVCMDID", cmdGenericNack, statusInvCmdID, statusSysErr},
		{"generic_nack ESME_RINVCMDLEN", cmdGenericNack, statusInvCmdLen, statusSysErr},
		{"submit_sm_resp ESME_RINVSRCADR (the message's)", cmdSubmitSMResp, statusInvSrcAdr, statusInvSrcAdr},
		{"submit_sm_resp ESME_RINVDSTADR (the message's)", cmdSubmitSMResp, statusInvDstAdr, statusInvDstAdr},
		// Last: the bind then leaves and binds again (TestCarrierRebindsWhenSubmitAnsweredNotBound).
		{"submit_sm_resp ESME_RINVBNDSTS", cmdSubmitSMResp, statusInvBndSts, statusSysErr},
	}
	for i, tc := range cases {
		seq := uint32(i + 2)
		p.write(cmdSubmitSM, 0, seq, goldenSubmit(t, "02 4F60", ""))
		sub := smsc.read()
		if sub.ID != cmdSubmitSM {
			t.Fatalf("carrier got %+v, want submit_sm", sub.Header)
		}
		smsc.write(tc.id, tc.status, sub.Seq, nil)
		if f := p.read(); f.ID != cmdSubmitSMResp || f.Seq != seq || f.Status != tc.wantPlatform {
			t.Errorf("%s: platform got %+v, want status 0x%X", tc.name, f.Header, tc.wantPlatform)
		}
	}
}
