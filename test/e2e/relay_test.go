package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// A platform repointed at spareline reaches the right operator by number
// segment, its submit_sm arrives byte for byte (TLVs in order included), and
// it gets spareline's own ids, unique across carriers.
func TestRelayRoutesByOperatorByteForByte(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		c := e.dial("platform", "secret", platform.BindTRX)
		cases := []struct{ dest, carrier string }{
			{"13800138000", "mobile"},
			{"+86 139-1234-5678", "mobile"},
			{"17031234567", "mobile"}, // 1703 virtual-operator block
			{"13012345678", "unicom"},
			{"008618612345678", "unicom"},
			{"13312345678", "telecom"},
			{"8619912345678", "telecom"},
		}
		ids := map[string]bool{}
		for i, tc := range cases {
			sm := platform.Submit{Src: "10690001", Dest: tc.dest, Text: "alarm " + tc.dest, RegisteredDelivery: 0,
				ESMClass: 0x03, Priority: 2,
				TLVs: []platform.TLV{{Tag: 0x0204, Value: []byte{0, byte(i)}}, {Tag: 0x1400, Value: []byte("vendor")}, {Tag: 0x020A, Value: []byte{0x12, 0x34}}}}
			res, err := c.Submit(e.ctx, sm)
			if err != nil || res.Status != 0 {
				t.Fatalf("%s: submit: %v status 0x%X", tc.dest, err, res.Status)
			}
			if ids[res.MessageID] {
				t.Fatalf("message id %s given twice", res.MessageID)
			}
			ids[res.MessageID] = true
			s := e.smscs[tc.carrier]
			if err := s.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return int(st.Submits) >= countFor(cases[:i+1], tc.carrier) }); err != nil {
				t.Fatalf("%s never reached %s", tc.dest, tc.carrier)
			}
			got := s.Received()
			m := got[len(got)-1]
			if m.Dest != tc.dest {
				t.Fatalf("%s: %s received dest %q", tc.dest, tc.carrier, m.Dest)
			}
			if res.MessageID == m.ID {
				t.Fatalf("platform got the carrier's id %q, not spareline's", m.ID)
			}
			if m.ESMClass != 0x03 || m.Priority != 2 || len(m.TLVs) != 3 || m.TLVs[1].Tag != 0x1400 ||
				!bytes.Equal(m.TLVs[1].Value, []byte("vendor")) || m.TLVs[0].Tag != 0x0204 || m.TLVs[2].Tag != 0x020A {
				t.Fatalf("%s: fields or TLVs not carried over: %+v", tc.dest, m)
			}
		}
		for name, s := range e.smscs {
			if want := countFor(cases, name); len(s.Received()) != want {
				t.Errorf("%s received %d messages, want %d", name, len(s.Received()), want)
			}
		}
	})
}

func countFor(cases []struct{ dest, carrier string }, carrier string) int {
	n := 0
	for _, c := range cases {
		if c.carrier == carrier {
			n++
		}
	}
	return n
}

// Receipts come back with spareline's id, in the text and in the TLV, for
// carriers that write receipt ids as in submit_sm_resp, in hex, or in decimal.
func TestReceiptsCarryOurIDs(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		c := e.dial("platform", "secret", platform.BindTRX)
		want := map[string]string{}
		for _, cs := range carrierSetups {
			for i := 0; i < 5; i++ {
				res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: cs.sample, Text: "receipt please", RegisteredDelivery: 1})
				if err != nil || res.Status != 0 {
					t.Fatalf("%s: %v 0x%X", cs.name, err, res.Status)
				}
				want[res.MessageID] = cs.name
			}
		}
		for range len(want) {
			r := e.nextReceipt(c)
			if _, ok := want[r.ID]; !ok {
				t.Fatalf("receipt with id %q (TLV %q): not one of ours", r.ID, r.TLVID)
			}
			if r.TLVID != r.ID {
				t.Fatalf("receipted_message_id %q differs from the text's id %q", r.TLVID, r.ID)
			}
			if r.Stat != "DELIVRD" {
				t.Fatalf("stat %q", r.Stat)
			}
			delete(want, r.ID)
		}
		if len(want) != 0 {
			t.Fatalf("no receipt for %v", want)
		}
	})
}

// A carrier that sends its receipts by data_sm (SMPP 3.4 §4.7) instead of
// deliver_sm: spareline answers data_sm_resp, and the platform gets an
// ordinary deliver_sm receipt with spareline's id in the TLV and the text.
func TestReceiptsByDataSM(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind, func(o *envOpts) {
			o.smscMutate = func(_ string, so *smscsim.Options) { so.ReceiptsByDataSM = true }
		})
		c := e.dial("platform", "secret", platform.BindTRX)
		want := map[string]bool{}
		for _, cs := range carrierSetups {
			res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: cs.sample, Text: "receipt by data_sm", RegisteredDelivery: 1})
			if err != nil || res.Status != 0 {
				t.Fatalf("%s: %v 0x%X", cs.name, err, res.Status)
			}
			want[res.MessageID] = true
		}
		for range len(want) {
			r := e.nextReceipt(c)
			if !want[r.ID] || r.TLVID != r.ID || r.Stat != "DELIVRD" {
				t.Fatalf("receipt id %q, TLV id %q, stat %q: want one of ours, DELIVRD", r.ID, r.TLVID, r.Stat)
			}
			delete(want, r.ID)
		}
		for _, cs := range carrierSetups {
			s := e.smscs[cs.name]
			if err := s.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.ReceiptsAcked == 1 }); err != nil {
				t.Fatalf("%s: its data_sm receipt was not acknowledged with data_sm_resp OK: %v (%+v)", cs.name, err, s.Stats())
			}
		}
	})
}

// An SMPP 3.3 platform (interface_version 0x33) knows no optional
// parameters: its receipts come without them, with spareline's id in the
// text, also when the carrier sent the receipt by data_sm with the text in
// message_payload.
func TestSMPP33PlatformGetsReceiptsWithoutTLVs(t *testing.T) {
	e := startEnv(t, "bolt", func(o *envOpts) {
		o.smscMutate = func(name string, so *smscsim.Options) { so.ReceiptsByDataSM = name == "telecom" }
	})
	c, err := platform.Dial(e.ctx, e.gw.SMPPAddr().String(), "platform", "secret",
		platform.Options{BindType: platform.BindTRX, InterfaceVersion: 0x33})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	want := map[string]bool{}
	for _, cs := range carrierSetups {
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: cs.sample, Text: "legacy platform", RegisteredDelivery: 1})
		if err != nil || res.Status != 0 {
			t.Fatalf("%s: %v 0x%X", cs.name, err, res.Status)
		}
		want[res.MessageID] = true
	}
	for range len(want) {
		r := e.nextReceipt(c)
		if !want[r.ID] || r.Stat != "DELIVRD" {
			t.Fatalf("receipt text id %q stat %q: want one of ours, DELIVRD", r.ID, r.Stat)
		}
		if r.TLVID != "" || len(r.Deliver.TLVs) != 0 {
			t.Fatalf("an SMPP 3.3 platform got optional parameters: %+v", r.Deliver.TLVs)
		}
		delete(want, r.ID)
	}
}

// A carrier that pads the id in its receipts ("id:0000000042" for a
// submit_sm_resp of "42"), with receipt_id as_is: the receipts still match.
func TestReceiptsWithPaddedIDs(t *testing.T) {
	e := startEnv(t, "bolt", func(o *envOpts) {
		o.smscMutate = func(name string, so *smscsim.Options) {
			if name == "mobile" {
				so.ReceiptIDFormat = smscsim.ReceiptPadded
			}
		}
	})
	c := e.dial("platform", "secret", platform.BindTRX)
	res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "padded", RegisteredDelivery: 1})
	if err != nil || res.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, res.Status)
	}
	if r := e.nextReceipt(c); r.ID != res.MessageID || r.TLVID != res.MessageID {
		t.Fatalf("receipt ids %q / %q, want %q", r.ID, r.TLVID, res.MessageID)
	}
}

// An SMSC that takes no bind_transceiver (generic_nack ESME_RINVCMDID), with
// bind_mode transmitter_receiver: spareline binds a transmitter and a
// receiver per bind; submits go over the transmitters, receipts come over
// the receivers and reach the platform with spareline's id.
func TestCarrierTransmitterReceiverBinds(t *testing.T) {
	e := startEnv(t, "bolt", func(o *envOpts) {
		o.smscMutate = func(name string, so *smscsim.Options) { so.NoTransceiver = name == "mobile" }
		o.carrierYAML = func(name string) string {
			if name == "mobile" {
				return "\n    bind_mode: transmitter_receiver"
			}
			return ""
		}
	})
	mobile := e.smscs["mobile"]
	if err := mobile.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.Bound == 4 }); err != nil {
		t.Fatalf("mobile: want 2 transmitters and 2 receivers bound: %v", err)
	}
	c := e.dial("platform", "secret", platform.BindTRX)
	want := map[string]bool{}
	for i := range 4 {
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprintf("tx/rx %d", i), RegisteredDelivery: 1})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, res.Status)
		}
		want[res.MessageID] = true
	}
	for range len(want) {
		r := e.nextReceipt(c)
		if !want[r.ID] || r.TLVID != r.ID {
			t.Fatalf("receipt ids %q / %q: not one of ours", r.ID, r.TLVID)
		}
		delete(want, r.ID)
	}
	var states []string
	for _, cs := range e.gw.Snapshot(e.ctx).Carriers {
		if cs.Name == "mobile" {
			states = cs.Binds
		}
	}
	if fmt.Sprint(states) != "[bound rx:bound bound rx:bound]" {
		t.Fatalf("mobile's bind states %v, want two transmitters and two receivers bound", states)
	}
}

// A carrier that accepts with an empty message_id (it issues no receipts):
// the platform gets OK with spareline's id, not an error.
func TestCarrierAcceptsWithoutMessageID(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		e.smscs["mobile"].SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{NoID: true} })
		c := e.dial("platform", "secret", platform.BindTRX)
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "no id back"})
		if err != nil || res.Status != 0 || res.MessageID == "" {
			t.Fatalf("submit: %v, status 0x%X, id %q: want OK with our id", err, res.Status, res.MessageID)
		}
		if got := e.smscs["mobile"].Received(); len(got) != 1 || got[0].ID != "" {
			t.Fatalf("the carrier got %d messages (first id %q)", len(got), got[0].ID)
		}
	})
}

// Chinese UCS2 text and a 3-part concatenated message arrive byte for byte.
func TestUCS2AndConcatenatedByteExact(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		c := e.dial("platform", "secret", platform.BindTX)
		res, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: "紧急通知：变电站故障，请立即处理。"})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, res.Status)
		}
		long := ""
		for len([]rune(long)) < 180 {
			long += "电网应急演练通知，请各单位按预案执行。"
		}
		parts, err := c.SubmitLong(e.ctx, platform.Submit{Dest: "13800138000", Text: long})
		if err != nil || len(parts) != 3 {
			t.Fatalf("long submit: %v, %d parts", err, len(parts))
		}
		s := e.smscs["mobile"]
		if err := s.WaitFor(e.ctx, 4); err != nil {
			t.Fatal(err)
		}
		got := s.Received()
		if txt, _ := got[0].Text(); txt != "紧急通知：变电站故障，请立即处理。" || got[0].DataCoding != 8 {
			t.Fatalf("UCS2 text arrived as %q (dc %d)", txt, got[0].DataCoding)
		}
		var joined []byte
		for i, m := range got[1:] {
			ref, total, seq, ok := m.Concat()
			if !ok || total != 3 || seq != i+1 || m.ESMClass&0x40 == 0 {
				t.Fatalf("part %d: concat %v %d/%d ref %d", i, ok, seq, total, ref)
			}
			joined = append(joined, m.UserData()...)
		}
		want, _, _ := platform.SplitText(long)
		var wantUD []byte
		for _, p := range want {
			wantUD = append(wantUD, p...)
		}
		if !bytes.Equal(joined, wantUD) {
			t.Fatalf("concatenated user data differs")
		}
		if txt, _ := smscsim.DecodeText(8, joined); txt != long {
			t.Fatalf("reassembled text differs")
		}
	})
}

// Wrong credentials are refused with the SMPP status that says which.
func TestBindRefused(t *testing.T) {
	e := startEnv(t, "bolt")
	_, err := platform.Dial(e.ctx, e.gw.SMPPAddr().String(), "platform", "wrong", platform.Options{})
	var be *platform.BindError
	if !errors.As(err, &be) || be.Status != 0x0E {
		t.Fatalf("wrong password: %v, want ESME_RINVPASWD", err)
	}
	_, err = platform.Dial(e.ctx, e.gw.SMPPAddr().String(), "nobody", "secret", platform.Options{})
	if !errors.As(err, &be) || be.Status != 0x0F {
		t.Fatalf("unknown system_id: %v, want ESME_RINVSYSID", err)
	}
	// The right one still binds.
	e.dial("platform", "secret", platform.BindTRX)
}

// Receipts for a platform with no receiver bound are held durably and
// delivered when it binds again.
func TestHeldReceiptsDeliveredOnRebind(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		tx := e.dial("platform", "secret", platform.BindTX)
		ids := map[string]bool{}
		for i := 0; i < 10; i++ {
			res, err := tx.Submit(e.ctx, platform.Submit{Dest: carrierSetups[i%3].sample, Text: "held", RegisteredDelivery: 1})
			if err != nil || res.Status != 0 {
				t.Fatalf("submit: %v 0x%X", err, res.Status)
			}
			ids[res.MessageID] = true
		}
		// Every carrier's receipts were acknowledged: spareline holds them.
		for name, s := range e.smscs {
			if err := s.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.ReceiptsAcked == st.Submits }); err != nil {
				t.Fatalf("%s: receipts not acknowledged: %v", name, err)
			}
		}
		_ = tx.Close()
		rx := e.dial("platform", "secret", platform.BindRX)
		for range len(ids) {
			r := e.nextReceipt(rx)
			if !ids[r.ID] {
				t.Fatalf("unexpected receipt %q", r.ID)
			}
			delete(ids, r.ID)
		}
	})
}

// A carrier's error status reaches the platform unchanged (a number error:
// no failover, no retry).
func TestCarrierErrorPassedThrough(t *testing.T) {
	e := startEnv(t, "bolt")
	e.smscs["unicom"].SetBehaviour(smscsim.StatusByPrefix(map[string]uint32{"1301": 0x0B}))
	c := e.dial("platform", "secret", platform.BindTRX)
	res, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: "x"})
	if err != nil || res.Status != 0x0B {
		t.Fatalf("got %v 0x%X, want ESME_RINVDSTADR", err, res.Status)
	}
	if n := len(e.smscs["unicom"].Received()); n != 1 {
		t.Fatalf("carrier saw %d submits, want 1", n)
	}
}

// MO messages from a carrier reach the platform.
func TestMOReachesPlatform(t *testing.T) {
	e := startEnv(t, "bolt")
	c := e.dial("platform", "secret", platform.BindTRX)
	if err := e.smscs["telecom"].SendMO(e.ctx, "13312345678", "10690001", "收到，马上处理"); err != nil {
		t.Fatal(err)
	}
	select {
	case mo := <-c.MOs():
		if mo.Src != "13312345678" || mo.Text != "收到，马上处理" {
			t.Fatalf("MO %+v", mo)
		}
	case <-e.ctx.Done():
		t.Fatal("no MO")
	}
}
