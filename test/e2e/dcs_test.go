package e2e

import (
	"bytes"
	"testing"
	"unicode/utf16"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// A class 0 ("flash") message is sent with a 3GPP TS 23.038 §4 data coding
// scheme as data_coding: 0x18 is UCS2 class 0, 0x10 GSM 7-bit class 0. It
// reaches the carrier byte for byte, and when the carrier fails it goes out
// of a modem with the same TP-DCS, so the handset still shows it as flash.
func TestDCSFlashRelayAndModem(t *testing.T) {
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	// 1381... fails with ESME_RSYSERR at every carrier: failover to the modem.
	for _, s := range e.smscs {
		s.SetBehaviour(smscsim.StatusByPrefix(map[string]uint32{"1381": 0x08}))
	}
	c := e.dial("platform", "secret", platform.BindTRX)
	const text = "紧急：变电站故障，请立即处理"
	ud := utf16be(text)

	r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Raw: ud, DataCoding: 0x18})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit 0x18 to a carrier: %v 0x%X", err, r.Status)
	}
	mobile := e.smscs["mobile"]
	if err := mobile.WaitFor(e.ctx, 1); err != nil {
		t.Fatal(err)
	}
	got := mobile.Received()[0]
	if got.DataCoding != 0x18 || got.ESMClass != 0 || !bytes.Equal(got.ShortMessage, ud) || got.Dest != "13800138000" {
		t.Fatalf("carrier got data_coding 0x%02X esm_class 0x%02X short_message % X, want 0x18 0x00 % X",
			got.DataCoding, got.ESMClass, got.ShortMessage, ud)
	}

	for _, m := range []struct {
		dc   byte
		raw  []byte
		text string
	}{{0x18, ud, text}, {0x10, []byte("Call the control room"), "Call the control room"}} {
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13812345678", Raw: m.raw, DataCoding: m.dc})
		if err != nil || r.Status != 0 {
			t.Fatalf("submit 0x%02X for the modem: %v 0x%X", m.dc, err, r.Status)
		}
	}
	sent, err := sims[0].WaitSent(e.ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	byText := map[string]byte{}
	for _, s := range sent {
		byText[s.Text] = s.DCS
	}
	if dcs, ok := byText[text]; !ok || dcs != 0x18 {
		t.Fatalf("modem sent %+v, want %q with TP-DCS 0x18", sent, text)
	}
	if dcs, ok := byText["Call the control room"]; !ok || dcs != 0x10 {
		t.Fatalf("modem sent %+v, want the GSM flash text with TP-DCS 0x10", sent)
	}
}

func utf16be(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u>>8), byte(u))
	}
	return b
}
