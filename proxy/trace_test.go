package proxy

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
)

// pduLines are the trace lines logged so far, as "dir command status".
func pduLines(logs *observer.ObservedLogs) (lines []string, hexes []string) {
	for _, e := range logs.FilterMessage("pdu").All() {
		m := e.ContextMap()
		lines = append(lines, m["dir"].(string)+" "+m["command"].(string)+" "+m["status"].(string))
		hexes = append(hexes, m["hex"].(string))
	}
	return lines, hexes
}

// carriers[].trace: the carrier's engineer sees every PDU of its sessions
// in the log, the bind's password blanked; a reload turns it off.
func TestCarrierTraceLogsPDUs(t *testing.T) {
	addr, conns := fakeSMSC(t)
	core, logs := observer.New(zap.InfoLevel)
	cfg := config.Carrier{Name: "cm", Address: addr, SystemID: "ent01", Password: "s3cret", Binds: 1, Window: 8, Trace: true,
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)}
	c := NewCarrier(cfg, NewHealth(3, 0, zap.NewNop()), zap.New(core))
	runCarrier(t, c)
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)
	submitOnKeptBind(t, c, p, "the bind")

	waitCond(t, "four PDUs traced", func() bool { l, _ := pduLines(logs); return len(l) >= 4 })
	lines, hexes := pduLines(logs)
	want := []string{"out bind_transceiver ESME_ROK(0x00000000)", "in bind_transceiver_resp ESME_ROK(0x00000000)", "out submit_sm ESME_ROK(0x00000000)", "in submit_sm_resp ESME_ROK(0x00000000)"}
	if strings.Join(lines[:4], "|") != strings.Join(want, "|") {
		t.Fatalf("traced %q, want %q", lines, want)
	}
	bind, _ := hex.DecodeString(hexes[0])
	if strings.Contains(string(bind), "s3cret") || !strings.Contains(string(bind), "ent01\x00******\x00") {
		t.Fatalf("traced bind %q: want the password blanked, the system_id kept", bind)
	}
	sub, _ := hex.DecodeString(hexes[2])
	if len(sub) < headerLen || int(sub[3]) != len(sub) {
		t.Fatalf("traced submit %x: want the whole PDU, its length first", sub)
	}

	off := cfg
	off.Trace = false
	c.Reconfigure(off)
	n := logs.FilterMessage("pdu").Len()
	submitOnKeptBind(t, c, p, "the reload")
	if got := logs.FilterMessage("pdu").Len(); got != n {
		t.Fatalf("%d PDUs traced after the reload turned the trace off", got-n)
	}
}

// accounts[].trace: a platform's sessions are traced from the bind's
// answer on; a reload turns it off for the sessions already bound.
func TestAccountTraceLogsPDUs(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ts := newTestServer(t, ServerConfig{Log: zap.New(core)})
	t.Cleanup(ts.cancel)
	on, err := NewAccounts([]config.Account{{SystemID: "platform", Password: "secret", Trace: true}})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.SetAccounts(on)
	p := boundTCP(t, ts, cmdBindTransceiver)
	p.write(cmdEnquireLink, 0, 2, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp {
		t.Fatalf("answer %+v", f.Header)
	}
	waitCond(t, "three PDUs traced", func() bool { l, _ := pduLines(logs); return len(l) >= 3 })
	lines, _ := pduLines(logs)
	want := []string{"out bind_transceiver_resp ESME_ROK(0x00000000)", "in enquire_link ESME_ROK(0x00000000)", "out enquire_link_resp ESME_ROK(0x00000000)"}
	if strings.Join(lines[:3], "|") != strings.Join(want, "|") {
		t.Fatalf("traced %q, want %q", lines, want)
	}

	offAccts, err := NewAccounts([]config.Account{{SystemID: "platform", Password: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.SetAccounts(offAccts)
	n := logs.FilterMessage("pdu").Len()
	p.write(cmdEnquireLink, 0, 3, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp {
		t.Fatalf("answer %+v", f.Header)
	}
	if got := logs.FilterMessage("pdu").Len(); got != n {
		t.Fatalf("%d PDUs traced after the reload turned the trace off", got-n)
	}
}
