package e2e

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/redisserver"
	"github.com/spareline/spareline/test/smscsim"
)

// Retryable refusals a gateway may answer while its store is down:
// ESME_RMSGQFUL (refused before the carrier saw it) and ESME_RSYSERR (the
// carrier took it but the link could not be made durable).
const (
	statusMsgQFul = 0x14
	statusSysErr  = 0x08
	statusXTAppn  = 0x64 // ESME_RX_T_APPN: the carrier should resend the deliver_sm
)

// outageFor is how long the test keeps submitting while Redis is down. The
// issue's scenario is 10 s; 2 s shows the same behaviour (the refusal comes
// from the store-down mark, and the probe keeps failing every 500 ms), in a
// fifth of the time.
const outageFor = 2 * time.Second

// Redis stops while a platform is bound and sending, and comes back:
//   - every submit during the outage is refused with a status platforms
//     retry, never OK: the first one, sent before any store write failed,
//     reaches the carrier and gets ESME_RSYSERR (the link could not be
//     made durable); later ones get ESME_RMSGQFUL and never reach the
//     carrier;
//   - receipts and MO messages the carrier sends during the outage are
//     answered with ESME_RX_T_APPN (never acknowledged before they are
//     durable), so the carrier sends them again;
//   - the platform session and the carrier binds stay up;
//   - once Redis is back, submits succeed again by themselves, every message
//     answered OK reached its carrier exactly once, and the platform gets
//     exactly one receipt, with our id, for each of them.
func TestRedisOutageRefusesThenRecovers(t *testing.T) {
	rs := redisserver.Start(t)
	e := startEnv(t, "redis", func(o *envOpts) {
		o.redis = rs
		o.smscMutate = func(_ string, so *smscsim.Options) { so.ReceiptRetry = 100 * time.Millisecond }
	})
	e.gw.Disp.SetMOAccount("platform")
	c := e.dial("platform", "secret", platform.BindTRX)
	smsc := e.smscs["mobile"]
	const dest = "13800138000"
	okIDs := map[string]string{} // our id -> text
	var okTexts []string
	submit := func(text string) platform.SubmitResult {
		t.Helper()
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: dest, Text: text, RegisteredDelivery: 1})
		if err != nil {
			t.Fatalf("submit %q: no answer: %v", text, err)
		}
		if res.Status == 0 {
			okIDs[res.MessageID] = text
			okTexts = append(okTexts, text)
		}
		return res
	}

	// Before: accepted, with their receipts held back at the SMSC so that
	// they arrive during the outage.
	smsc.HoldReceipts(true)
	const before = 10
	for i := range before {
		if res := submit(fmt.Sprintf("before %d", i)); res.Status != 0 {
			t.Fatalf("before the outage: status 0x%X", res.Status)
		}
	}
	if err := smsc.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.ReceiptsHeld == before }); err != nil {
		t.Fatalf("receipts never held: %v", err)
	}
	binds := map[string]uint64{}
	for name, s := range e.smscs {
		binds[name] = s.Stats().Binds
	}

	rs.Stop()

	// The first submit: no store write has failed yet, so the gateway cannot
	// know the store is down. The carrier takes it, the link write fails
	// (retried for a while), and the platform gets ESME_RSYSERR, not an OK
	// that is not durable. The carrier has it: the platform's resend will be
	// a duplicate, the documented cost.
	if res := submit("first after the stop"); res.Status != statusSysErr {
		t.Fatalf("first submit after Redis stopped: status 0x%X, want ESME_RSYSERR", res.Status)
	}

	// Receipts arriving now cannot be made durable: refused, resent.
	smsc.HoldReceipts(false)
	if err := smsc.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.ReceiptsNack >= before }); err != nil {
		t.Fatalf("receipts during the outage were not refused: %v", err)
	}
	var mo *smscsim.StatusError
	if err := smsc.SendMO(e.ctx, "13900000001", "10690001", "MO during the outage"); !errors.As(err, &mo) || mo.Status != statusXTAppn {
		t.Fatalf("MO during the outage: %v, want command_status ESME_RX_T_APPN", err)
	}

	// Submits during the outage: refused with a retryable status, never OK.
	refusedBefore := map[string]bool{} // texts answered ESME_RMSGQFUL
	sysErr := 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for end := time.Now().Add(outageFor); time.Now().Before(end); n++ {
		text := fmt.Sprintf("during %d", n)
		switch res := submit(text); res.Status {
		case statusMsgQFul:
			refusedBefore[text] = true
		case statusSysErr:
			sysErr++
		default:
			t.Fatalf("submit during the outage answered 0x%X, want ESME_RMSGQFUL or ESME_RSYSERR", res.Status)
		}
		<-tick.C
	}
	if len(refusedBefore) == 0 {
		t.Fatal("no submit was refused before reaching the carrier")
	}
	if st := smsc.Stats(); st.ReceiptsAcked != 0 {
		t.Fatalf("%d receipts acknowledged to the carrier while Redis was down", st.ReceiptsAcked)
	}
	t.Logf("outage: %d submits, %d ESME_RMSGQFUL, %d ESME_RSYSERR; %d receipt deliveries refused",
		n, len(refusedBefore), sysErr, smsc.Stats().ReceiptsNack)

	rs.Restart()

	// Submits succeed again by themselves (the store probe notices).
	for i := 0; ; i++ {
		res := submit(fmt.Sprintf("recovery %d", i))
		if res.Status == 0 {
			break
		}
		if res.Status != statusMsgQFul && res.Status != statusSysErr {
			t.Fatalf("submit after the outage answered 0x%X", res.Status)
		}
		select {
		case <-tick.C:
		case <-e.ctx.Done():
			t.Fatal("submits never succeeded again after Redis came back")
		}
	}
	const after = 10
	for i := range after {
		if res := submit(fmt.Sprintf("after %d", i)); res.Status != 0 {
			t.Fatalf("after the outage: status 0x%X", res.Status)
		}
	}
	if err := smsc.SendMO(e.ctx, "13900000001", "10690001", "MO after the outage"); err != nil {
		t.Fatalf("MO after the outage: %v", err)
	}

	// Every OK'd message reached the carrier exactly once; none refused
	// with ESME_RMSGQFUL reached it at all.
	if err := smsc.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return int(st.ReceiptsAcked) >= len(okIDs) }); err != nil {
		t.Fatalf("receipts never acknowledged after the outage: %v", err)
	}
	seen := map[string]int{}
	for _, m := range smsc.Received() {
		text, err := m.Text()
		if err != nil {
			t.Fatal(err)
		}
		seen[text]++
	}
	for _, text := range okTexts {
		if seen[text] != 1 {
			t.Errorf("%q answered OK reached the carrier %d times, want 1", text, seen[text])
		}
	}
	if seen["first after the stop"] != 1 {
		t.Errorf("the message answered ESME_RSYSERR reached the carrier %d times, want 1", seen["first after the stop"])
	}
	for text := range refusedBefore {
		if seen[text] != 0 {
			t.Errorf("%q answered ESME_RMSGQFUL reached the carrier", text)
		}
	}

	// The platform gets exactly one receipt with our id for each OK'd message.
	got := map[string]int{}
	for len(got) < len(okIDs) {
		r := e.nextReceipt(c)
		if _, ok := okIDs[r.TLVID]; !ok || r.ID != r.TLVID {
			t.Fatalf("receipt for an id the platform was not given: text id %q, TLV %q", r.ID, r.TLVID)
		}
		got[r.TLVID]++
		if got[r.TLVID] > 1 {
			t.Fatalf("two receipts for %s", r.TLVID)
		}
	}
	select {
	case mo := <-c.MOs():
		if mo.Text != "MO after the outage" {
			t.Errorf("MO text %q, want the one sent after the outage (the refused one is the SMSC's to resend)", mo.Text)
		}
	case <-e.ctx.Done():
		t.Fatal("the MO sent after the outage never reached the platform")
	}

	// Nothing was torn down: the platform session and every carrier bind
	// stayed up through the outage.
	select {
	case <-c.Done():
		t.Fatalf("platform session closed: %v", c.Err())
	default:
	}
	for name, s := range e.smscs {
		if st := s.Stats(); st.Binds != binds[name] || st.Bound < 2 {
			t.Errorf("%s: binds %d (was %d), bound now %d: a carrier bind went down", name, st.Binds, binds[name], st.Bound)
		}
	}
}
