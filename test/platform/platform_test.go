package platform_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func startSMSC(t testing.TB, o smscsim.Options) *smscsim.SMSC {
	t.Helper()
	if o.SystemID == "" {
		o.SystemID, o.Password = "ent01", "pw"
	}
	s, err := smscsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dial(t testing.TB, s *smscsim.SMSC, o platform.Options) *platform.Client {
	t.Helper()
	c, err := platform.Dial(ctxT(t), s.Addr(), "ent01", "pw", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func nextReceipt(t *testing.T, c *platform.Client) platform.Receipt {
	t.Helper()
	select {
	case r, ok := <-c.Receipts():
		if !ok {
			t.Fatal("receipt channel closed")
		}
		return r
	case <-ctxT(t).Done():
		t.Fatal("no receipt")
	}
	return platform.Receipt{}
}

func TestReceiptCarriesIDInEachFormat(t *testing.T) {
	cases := []struct {
		idf        smscsim.IDFormat
		rf         smscsim.ReceiptIDFormat
		first      uint64
		resp, rcpt string
	}{
		{smscsim.IDDecimal, smscsim.ReceiptSame, 1000, "1000", "1000"},
		{smscsim.IDHex, smscsim.ReceiptSame, 1000, "3E8", "3E8"},
		{smscsim.IDDecimal, smscsim.ReceiptHex, 1000, "1000", "3E8"},
		{smscsim.IDHex, smscsim.ReceiptDecimal, 1000, "3E8", "1000"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s-%s", tc.idf, tc.rf), func(t *testing.T) {
			s := startSMSC(t, smscsim.Options{IDFormat: tc.idf, ReceiptIDFormat: tc.rf, FirstID: tc.first})
			c := dial(t, s, platform.Options{})
			res, err := c.Submit(ctxT(t), platform.Submit{Src: "10690001", Dest: "8613800138000", Text: "hello receipt", RegisteredDelivery: 1})
			if err != nil || res.Status != 0 {
				t.Fatalf("submit: %+v %v", res, err)
			}
			if res.MessageID != tc.resp {
				t.Fatalf("submit_sm_resp id %q, want %q", res.MessageID, tc.resp)
			}
			r := nextReceipt(t, c)
			if r.ID != tc.rcpt || r.TLVID != tc.rcpt {
				t.Fatalf("receipt ids text %q TLV %q, want %q", r.ID, r.TLVID, tc.rcpt)
			}
			if r.Stat != "DELIVRD" || r.Err != "000" || r.Dlvrd != "001" || r.State != 2 {
				t.Fatalf("receipt %+v", r.ReceiptFields)
			}
			if r.Src != "8613800138000" || r.Dest != "10690001" || r.Deliver.ESMClass != 0x04 {
				t.Fatalf("receipt addressed %s -> %s esm 0x%02X", r.Src, r.Dest, r.Deliver.ESMClass)
			}
			if r.Text != "hello receipt" {
				t.Fatalf("receipt text %q", r.Text)
			}
			if err := s.WaitUntil(ctxT(t), func(st smscsim.Stats) bool { return st.ReceiptsAcked == 1 }); err != nil {
				t.Fatal(err)
			}
			if m := s.Received()[0]; m.ID != tc.resp || m.ReceiptID != tc.rcpt {
				t.Fatalf("SMSC recorded ids %q/%q", m.ID, m.ReceiptID)
			}
		})
	}
}

func TestWrongCredentialsRefused(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	for _, tc := range []struct {
		sys, pw string
		status  uint32
	}{
		{"ent01", "nope", platform.StatusInvPaswd},
		{"other", "pw", platform.StatusInvSysID},
	} {
		_, err := platform.Dial(ctxT(t), s.Addr(), tc.sys, tc.pw, platform.Options{})
		var be *platform.BindError
		if !errors.As(err, &be) || be.Status != tc.status {
			t.Fatalf("bind %s/%s: %v, want status 0x%X", tc.sys, tc.pw, err, tc.status)
		}
		if strings.Contains(err.Error(), tc.pw) {
			t.Fatalf("error shows the password: %v", err)
		}
	}
	if st := s.Stats(); st.BindsRefused != 2 || st.Binds != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestChineseUCS2ByteExact(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{})
	text := "您好，验证码是 123456。"
	res, err := c.Submit(ctxT(t), platform.Submit{Src: "10690001", Dest: "8613800138000", Text: text, Priority: 1, RegisteredDelivery: 1})
	if err != nil || res.Status != 0 {
		t.Fatal(res, err)
	}
	ucs2 := []byte{}
	for _, r := range text { // all in the BMP
		ucs2 = append(ucs2, byte(r>>8), byte(r))
	}
	// SMPP 3.4 4.4.1 submit_sm body, field by field.
	want := []byte{0x00} // service_type ""
	want = append(want, 0, 0)
	want = append(want, "10690001\x00"...)
	want = append(want, 0, 0)
	want = append(want, "8613800138000\x00"...)
	want = append(want, 0x00, 0x00, 0x01) // esm_class, protocol_id, priority_flag
	want = append(want, 0x00, 0x00)       // schedule_delivery_time, validity_period
	want = append(want, 0x01, 0x00)       // registered_delivery, replace_if_present
	want = append(want, 0x08, 0x00, byte(len(ucs2)))
	want = append(want, ucs2...)
	m := s.Received()[0]
	if !bytes.Equal(m.Raw, want) {
		t.Fatalf("body\n got % X\nwant % X", m.Raw, want)
	}
	if !bytes.Equal(m.ShortMessage, ucs2) || m.DataCoding != 8 {
		t.Fatalf("short_message % X dc %d", m.ShortMessage, m.DataCoding)
	}
	if got, err := m.Text(); err != nil || got != text {
		t.Fatalf("Text() = %q, %v", got, err)
	}
}

func TestConcatenatedThreeParts(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{})
	text := strings.Repeat("0123456789", 40) // 400 GSM characters: 153+153+94
	res, err := c.SubmitLong(ctxT(t), platform.Submit{Src: "1069", Dest: "8613800138000", Text: text})
	if err != nil || len(res) != 3 {
		t.Fatalf("%d parts, %v", len(res), err)
	}
	got := s.Received()
	var joined []byte
	ref0 := -1
	for i, m := range got {
		ref, total, seq, ok := m.Concat()
		if !ok || total != 3 || seq != i+1 || m.ESMClass&0x40 == 0 {
			t.Fatalf("part %d: concat %v %d/%d esm 0x%02X", i, ok, seq, total, m.ESMClass)
		}
		if ref0 >= 0 && ref != ref0 {
			t.Fatalf("part %d ref %d, want %d", i, ref, ref0)
		}
		ref0 = ref
		joined = append(joined, m.UserData()...)
	}
	if string(joined) != text {
		t.Fatalf("joined %q", joined)
	}
	// UCS2: 150 Chinese characters -> 67+67+16
	long := strings.Repeat("中", 150)
	res, err = c.SubmitLong(ctxT(t), platform.Submit{Src: "1069", Dest: "8613800138000", Text: long})
	if err != nil || len(res) != 3 {
		t.Fatalf("ucs2: %d parts, %v", len(res), err)
	}
	var sb strings.Builder
	for _, m := range s.Received()[3:] {
		part, err := smscsim.DecodeText(m.DataCoding, m.UserData())
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(part)
	}
	if sb.String() != long {
		t.Fatalf("ucs2 joined %q", sb.String())
	}
}

func TestBulkThousandWindowed(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{Window: 64})
	msgs := make([]platform.Submit, 1000)
	for i := range msgs {
		msgs[i] = platform.Submit{Src: "1069", Dest: fmt.Sprintf("86138%08d", i), Text: fmt.Sprintf("bulk %d", i)}
	}
	res := c.Bulk(ctxT(t), msgs, 64)
	ids := map[string]bool{}
	for i, r := range res {
		if r.Err != nil || r.Status != 0 || r.MessageID == "" || ids[r.MessageID] {
			t.Fatalf("msg %d: %+v", i, r)
		}
		ids[r.MessageID] = true
	}
	if err := s.WaitFor(ctxT(t), 1000); err != nil {
		t.Fatal(err)
	}
	if n := len(c.History().Submits); n != 1000 {
		t.Fatalf("history has %d submits", n)
	}
}

func TestCloseAllDropsClients(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{})
	s.CloseAll()
	select {
	case <-c.Done():
	case <-ctxT(t).Done():
		t.Fatal("client did not see the drop")
	}
	if _, err := c.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "2", Text: "x"}); !errors.Is(err, platform.ErrConnClosed) {
		t.Fatalf("submit after drop: %v", err)
	}
	if err := s.WaitUntil(ctxT(t), func(st smscsim.Stats) bool { return st.Conns == 0 }); err != nil {
		t.Fatal(err)
	}
	// the listener is still up
	dial(t, s, platform.Options{})
}

func TestSilentAnswersNothing(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{ResponseTimeout: 300 * time.Millisecond})
	s.SetSilent(true)
	_, err := c.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "2", Text: "x"})
	var te *platform.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("submit while silent: %v", err)
	}
	if err := c.EnquireLink(ctxT(t)); !errors.As(err, &te) {
		t.Fatalf("enquire_link while silent: %v", err)
	}
	if err := s.WaitFor(ctxT(t), 1); err != nil { // received, recorded, unanswered
		t.Fatal(err)
	}
	if m := s.Received()[0]; !m.Silent {
		t.Fatalf("not marked silent: %+v", m)
	}
	select {
	case <-c.Done():
		t.Fatal("TCP closed while silent")
	default:
	}
	s.SetSilent(false)
	if r, err := c.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "2", Text: "y"}); err != nil || r.Status != 0 {
		t.Fatal(r, err)
	}
}

func TestBehaviourStatusByPrefixAndAttempts(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	s.SetBehaviour(smscsim.StatusByPrefix(map[string]uint32{"86170": platform.StatusInvDstAdr}))
	c := dial(t, s, platform.Options{})
	r, err := c.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "8617000000000", Text: "x", RegisteredDelivery: 1})
	if err != nil || r.Status != platform.StatusInvDstAdr || r.MessageID != "" {
		t.Fatalf("%+v %v", r, err)
	}
	s.SetBehaviour(smscsim.FailAttempts(1, platform.StatusMsgQFul))
	sm := platform.Submit{Src: "1", Dest: "8613800000000", Text: "retry me"}
	if r, _ := c.Submit(ctxT(t), sm); r.Status != platform.StatusMsgQFul {
		t.Fatalf("first attempt %+v", r)
	}
	if r, _ := c.Submit(ctxT(t), sm); r.Status != 0 {
		t.Fatalf("second attempt %+v", r)
	}
	if got := s.Received(); got[2].Attempt != 2 {
		t.Fatalf("attempt %d", got[2].Attempt)
	}
	s.SetBehaviour(smscsim.ReceiptStatByPrefix(map[string]string{"86139": "UNDELIV"}, "001"))
	if _, err := c.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "8613900000000", Text: "x", RegisteredDelivery: 1}); err != nil {
		t.Fatal(err)
	}
	rc := nextReceipt(t, c)
	if rc.Stat != "UNDELIV" || rc.Err != "001" || rc.Dlvrd != "000" || rc.State != 5 {
		t.Fatalf("%+v state %d", rc.ReceiptFields, rc.State)
	}
}

func TestReceiptHeldUntilReceiverBinds(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	tx := dial(t, s, platform.Options{BindType: platform.BindTX})
	r, err := tx.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "8613800000000", Text: "x", RegisteredDelivery: 1})
	if err != nil || r.Status != 0 {
		t.Fatal(r, err)
	}
	if err := s.WaitUntil(ctxT(t), func(st smscsim.Stats) bool { return st.ReceiptsHeld == 1 }); err != nil {
		t.Fatal(err)
	}
	rx := dial(t, s, platform.Options{BindType: platform.BindRX})
	if rc := nextReceipt(t, rx); rc.ID != r.MessageID {
		t.Fatalf("receipt %q for %q", rc.ID, r.MessageID)
	}
	if _, err := rx.Submit(ctxT(t), platform.Submit{Src: "1", Dest: "2", Text: "x"}); err != nil {
		t.Fatal(err)
	} else if got := rx.History().Submits[0].Result.Status; got != 0x04 { // ESME_RINVBNDSTS
		t.Fatalf("submit on rx bind: status 0x%X", got)
	}
}

func TestMO(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{})
	if err := s.SendMO(ctxT(t), "8613800138000", "10690001", "退订 TD"); err != nil {
		t.Fatal(err)
	}
	select {
	case mo := <-c.MOs():
		if mo.Text != "退订 TD" || mo.Src != "8613800138000" || mo.Dest != "10690001" || mo.DataCoding != 8 {
			t.Fatalf("%+v", mo)
		}
	case <-ctxT(t).Done():
		t.Fatal("no MO")
	}
	if st := s.Stats(); st.MOAcked != 1 {
		t.Fatalf("%+v", st)
	}
	c.SetDeliverStatus(platform.StatusXTAppn)
	var se *smscsim.StatusError
	if err := s.SendMO(ctxT(t), "1", "2", "x"); !errors.As(err, &se) || se.Status != platform.StatusXTAppn {
		t.Fatalf("refused MO: %v", err)
	}
}

func TestStopRestartRefuse(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c := dial(t, s, platform.Options{})
	s.Stop()
	<-c.Done()
	if _, err := platform.Dial(ctxT(t), s.Addr(), "ent01", "pw", platform.Options{}); err == nil {
		t.Fatal("dial succeeded while stopped")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	s.RefuseBinds(0x0D) // ESME_RBINDFAIL
	var be *platform.BindError
	if _, err := platform.Dial(ctxT(t), s.Addr(), "ent01", "pw", platform.Options{}); !errors.As(err, &be) || be.Status != 0x0D {
		t.Fatalf("refused bind: %v", err)
	}
	s.RefuseBinds(0)
	dial(t, s, platform.Options{})
}

func TestThrottleReject(t *testing.T) {
	s := startSMSC(t, smscsim.Options{MaxTPSPerBind: 5})
	c := dial(t, s, platform.Options{})
	msgs := make([]platform.Submit, 40)
	for i := range msgs {
		msgs[i] = platform.Submit{Src: "1", Dest: "2", Text: fmt.Sprint(i)}
	}
	res := c.Bulk(ctxT(t), msgs, 10)
	throttled := 0
	for _, r := range res {
		if r.Status == platform.StatusThrottled {
			throttled++
		}
	}
	if throttled == 0 || uint64(throttled) != s.Stats().Throttled {
		t.Fatalf("throttled %d, stats %+v", throttled, s.Stats())
	}
}

func TestEnquireLinkAndUnbind(t *testing.T) {
	s := startSMSC(t, smscsim.Options{})
	c, err := platform.Dial(ctxT(t), s.Addr(), "ent01", "pw", platform.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnquireLink(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Unbind(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := s.WaitUntil(ctxT(t), func(st smscsim.Stats) bool { return st.Conns == 0 }); err != nil {
		t.Fatal(err)
	}
}

func benchWindow(b *testing.B, window int) {
	s := startSMSC(b, smscsim.Options{})
	c := dial(b, s, platform.Options{Window: window})
	msgs := make([]platform.Submit, b.N)
	for i := range msgs {
		msgs[i] = platform.Submit{Src: "1069", Dest: "8613800138000", Text: "benchmark message"}
	}
	b.ResetTimer()
	start := time.Now()
	res := c.Bulk(context.Background(), msgs, window)
	el := time.Since(start)
	b.StopTimer()
	for _, r := range res {
		if r.Err != nil || r.Status != 0 {
			b.Fatal(r)
		}
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "msg/s")
}

func BenchmarkSubmitWindow10(b *testing.B) { benchWindow(b, 10) }
func BenchmarkSubmitWindow64(b *testing.B) { benchWindow(b, 64) }
