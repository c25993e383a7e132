package e2e

import (
	"bytes"
	"testing"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
)

// A binary message (data_coding 4, esm_class UDHI) whose header is a 16-bit
// application port address (WAP push, TS 23.040 §9.2.3.24.4) and whose 307
// octets of data, in message_payload, do not fit in one SMS is sent by a
// modem as a concatenated series: every part carries the port element and
// a concatenation element (§9.2.3.24, WAP WDP over SMS), the parts join to
// the data, and the platform gets DELIVRD.
func TestPortAddressedLongBinaryByModem(t *testing.T) {
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML))
	e.smscs["mobile"].Stop()
	waitHealth(e.ctx, t, e.gw, "mobile", proxy.StateDown)
	c := e.dial("platform", "secret", platform.BindTRX)
	port := []byte{0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0}
	data := make([]byte, 307)
	for i := range data {
		data[i] = byte(i)
	}
	payload := append(append([]byte{byte(len(port))}, port...), data...)
	r, err := c.Submit(e.ctx, platform.Submit{Dest: "8613800138000", Raw: []byte{}, DataCoding: 4, ESMClass: 0x40,
		RegisteredDelivery: 1, TLVs: []platform.TLV{{Tag: 0x0424, Value: payload}}})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, r.Status)
	}
	rc := e.nextReceipt(c)
	if rc.ID != r.MessageID || rc.Stat != "DELIVRD" {
		t.Fatalf("receipt %+v for %s", rc.ReceiptFields, r.MessageID)
	}
	got, err := sims[0].WaitSent(e.ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := got[0]
	if m.Parts != 3 || !bytes.Equal(m.Data, data) || m.DCS != 0x04 {
		t.Fatalf("the modem sent %d part(s), DCS %02X, %d octets joined, want 3 parts of the 307 octets", m.Parts, m.DCS, len(m.Data))
	}
	for i, h := range m.UDHs {
		if !bytes.HasPrefix(h, port) || len(h) != len(port)+5 || h[len(port)] != 0x00 || h[len(h)-2] != 3 || h[len(h)-1] != byte(i+1) {
			t.Fatalf("part %d: UDH % X, want the port element then an 8-bit reference concatenation element", i+1, h)
		}
	}
}
