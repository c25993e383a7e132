package e2e

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// A carrier built on SMPP 3.3 (carriers[].interface_version "3.3"), whose
// SMSC refuses any submit_sm with optional parameters, gets every message in
// the 3.3 form: bound with interface_version 0x33, sar_* segments as
// concatenation UDHs, message_payload as short_message, and a message too
// long for one 3.3 submit_sm goes by modem, whole. A platform that binds
// with 3.4 and uses optional parameters needs no change.
func TestSMPP33CarrierGetsNoOptionalParameters(t *testing.T) {
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML),
		func(o *envOpts) {
			o.smscMutate = func(name string, so *smscsim.Options) { so.SMPP33 = name == "mobile" }
			o.carrierYAML = func(name string) string {
				if name == "mobile" {
					return "\n    interface_version: \"3.3\""
				}
				return ""
			}
		})
	c := e.dial("platform", "secret", platform.BindTRX)
	const dest = "8613800138000" // China Mobile
	ucs2 := func(s string) []byte { b, _, _ := platform.EncodeText(s); return b }

	// Two segments described by sar_* (reference 300: the 16-bit form).
	segs := []string{"第一段：变电站告警，", "第二段：请立即处理。"}
	for i, s := range segs {
		r, err := c.Submit(e.ctx, platform.Submit{Dest: dest, Text: s, TLVs: []platform.TLV{
			{Tag: 0x020C, Value: []byte{0x01, 0x2C}},
			{Tag: 0x020E, Value: []byte{2}},
			{Tag: 0x020F, Value: []byte{byte(i + 1)}},
		}})
		if err != nil || r.Status != 0 {
			t.Fatalf("segment %d: %v 0x%X", i+1, err, r.Status)
		}
	}
	// Content in message_payload, with another optional parameter.
	short := "馈线12过载"
	r, err := c.Submit(e.ctx, platform.Submit{Dest: dest, Raw: []byte{}, DataCoding: 8, TLVs: []platform.TLV{
		{Tag: 0x0424, Value: ucs2(short)},
		{Tag: 0x0204, Value: []byte{0, 42}}, // user_message_reference
	}})
	if err != nil || r.Status != 0 {
		t.Fatalf("message_payload submit: %v 0x%X", err, r.Status)
	}
	// 150 Chinese characters: 300 octets, more than one 3.3 short_message.
	long := strings.Repeat("停电通知", 37) + "结束"
	r, err = c.Submit(e.ctx, platform.Submit{Dest: dest, Raw: []byte{}, DataCoding: 8, RegisteredDelivery: 1,
		TLVs: []platform.TLV{{Tag: 0x0424, Value: ucs2(long)}}})
	if err != nil || r.Status != 0 {
		t.Fatalf("long message_payload submit: %v 0x%X (it should go by modem)", err, r.Status)
	}

	got := e.smscs["mobile"].Received()
	if len(got) != 3 {
		t.Fatalf("the 3.3 carrier got %d submits, want 3 (the two segments and the short payload)", len(got))
	}
	for i, m := range got {
		if m.InterfaceVersion != 0x33 {
			t.Errorf("submit %d came on a bind with interface_version 0x%02X, want 0x33", i, m.InterfaceVersion)
		}
		if m.Status != 0 || len(m.TLVs) != 0 {
			t.Errorf("submit %d: status 0x%X, optional parameters %v", i, m.Status, m.TLVs)
		}
	}
	for i := range segs {
		m := got[i]
		wantUDH := []byte{6, 8, 4, 0x01, 0x2C, 2, byte(i + 1)}
		if m.ESMClass&0x40 == 0 || !bytes.Equal(m.UDH(), wantUDH) {
			t.Errorf("segment %d: esm_class 0x%02X UDH % X, want UDHI and % X", i+1, m.ESMClass, m.UDH(), wantUDH)
		}
		if txt, _ := m.Text(); txt != segs[i] {
			t.Errorf("segment %d text %q, want %q", i+1, txt, segs[i])
		}
	}
	if txt, _ := got[2].Text(); txt != short || got[2].DataCoding != 8 {
		t.Errorf("payload submit: %q data_coding %d, want %q in short_message, UCS2", txt, got[2].DataCoding, short)
	}
	sent, err := sims[0].WaitSent(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if sent[0].Text != long || sent[0].Parts < 3 {
		t.Fatalf("the modem sent %q in %d parts, want the long message whole as a concatenated SMS", sent[0].Text, sent[0].Parts)
	}
	if rc := e.nextReceipt(c); rc.ID != r.MessageID {
		t.Fatalf("receipt for %q, want one for the long message %q", rc.ID, r.MessageID)
	}
}

// An operator finds the carrier refusing every submit with optional
// parameters (ESME_RINVCMDLEN, an SMPP 3.3 SMSC) and sets interface_version
// "3.3" by a reload: the carrier's binds reconnect as 3.3, and the same
// submit goes through, without its optional parameters.
func TestReloadToSMPP33Rebinds(t *testing.T) {
	e := startEnv(t, "bolt", func(o *envOpts) {
		o.smscMutate = func(name string, so *smscsim.Options) { so.SMPP33 = name == "mobile" }
	})
	c := e.dial("platform", "secret", platform.BindTRX)
	sub := platform.Submit{Dest: "13800138000", Text: "feeder 12 overload", TLVs: []platform.TLV{{Tag: 0x0204, Value: []byte{0, 7}}}}
	if r, err := c.Submit(e.ctx, sub); err != nil || r.Status == 0 {
		t.Fatalf("submit with an optional parameter to the 3.3 SMSC bound as 3.4: %v 0x%X, want a refusal", err, r.Status)
	}
	cfg, err := config.Parse([]byte(e.cfgYAML), "e2e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Carriers {
		if cfg.Carriers[i].Name == "mobile" {
			cfg.Carriers[i].InterfaceVersion = "3.3"
		}
	}
	if err := e.gw.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	mobile := e.smscs["mobile"]
	if err := mobile.WaitUntil(e.ctx, func(s smscsim.Stats) bool { return s.Bound == e.binds && s.Bound33 == e.binds }); err != nil {
		t.Fatalf("mobile's binds never all rebound as SMPP 3.3: %+v", mobile.Stats())
	}
	waitHealth(e.ctx, t, e.gw, "mobile", proxy.StateUp)
	r, err := c.Submit(e.ctx, sub)
	if err != nil || r.Status != 0 {
		t.Fatalf("the same submit after the reload: %v 0x%X", err, r.Status)
	}
	got := mobile.Received()
	if last := got[len(got)-1]; last.Status != 0 || len(last.TLVs) != 0 || last.InterfaceVersion != 0x33 {
		t.Fatalf("after the reload the carrier got status 0x%X, TLVs %v, on a 0x%02X bind", last.Status, last.TLVs, last.InterfaceVersion)
	}
}
