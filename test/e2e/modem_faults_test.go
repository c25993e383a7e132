package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
)

// Modem faults at the gateway: every carrier is down, so the platform's
// messages go by modem, and one of the two modems is faulty inside AT+CMGS
// (it gives the "> " prompt, takes the PDU, then never answers, or answers
// noise). Its modems[].send_timeout (1s here; 60s by default) ends each
// stuck send; the pool retries the message on the healthy modem and takes
// the faulty one out after three consecutive failures (modem package,
// "Failure policy"). The promise: every message the platform got OK for is
// sent, a DELIVRD receipt reaches the platform for each, and the faulty modem
// is shown down (spareline_modem_up 0, the pool's status).
//
// Duplicates (modem package, "Duplicates"): a send that timed out after the
// PDU was written may have been transmitted by a real modem, so its retry is
// a possible duplicate (at-least-once). The emulated faults never transmit,
// so here each message is sent exactly once, by the healthy modem.

// startFaultModems starts a faulty and a healthy emulated modem named for
// the test (their metrics are theirs alone). The faulty one has the short
// send_timeout; the healthy one keeps the default, and sends slowly enough
// (200 ms a part) that queued messages remain while the faulty one fails
// three sends in a row.
func startFaultModems(t *testing.T, prefix string) (bad, good *modemsim.Sim, badName, goodName, yaml string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	badName, goodName = prefix+"-bad", prefix+"-good"
	start := func(name string, delay time.Duration) *modemsim.Sim {
		s, err := modemsim.Start(ctx, modemsim.Options{Name: name, SendDelay: delay, ReportDelay: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	bad, good = start(badName, 2*time.Millisecond), start(goodName, 200*time.Millisecond)
	yaml = fmt.Sprintf(`modems:
  - { name: %s, device: %q, max_per_minute: 100000, send_timeout: 1s }
  - { name: %s, device: %q, max_per_minute: 100000 }
`, badName, bad.Path(), goodName, good.Path())
	return bad, good, badName, goodName, yaml
}

// modemState is the pool's state of the named modem.
func modemState(e *env, name string) (modem.ModemStatus, bool) {
	for _, st := range e.gw.Pool.Status() {
		if st.Name == name {
			return st, true
		}
	}
	return modem.ModemStatus{}, false
}

// waitModem waits until the named modem is in (or, with up false, out of)
// the pool.
func waitModem(t *testing.T, e *env, name string, up bool) modem.ModemStatus {
	t.Helper()
	for {
		st, ok := modemState(e, name)
		if ok && (st.State == modem.StateUp) == up {
			return st
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("modem %s never %s: %+v", name, map[bool]string{true: "up", false: "out"}[up], st)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func testModemFault(t *testing.T, fault func(*modemsim.Sim)) {
	prefix := "mf-" + strings.ToLower(strings.TrimPrefix(t.Name(), "TestModemFault"))
	bad, good, badName, goodName, my := startFaultModems(t, prefix)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML), withHTTP())
	for _, s := range e.smscs {
		s.Stop()
	}
	for _, cs := range carrierSetups {
		for e.gw.Health.State(cs.name) != proxy.StateDown {
			select {
			case <-e.ctx.Done():
				t.Fatal("carrier never marked down")
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitModem(t, e, badName, true)
	waitModem(t, e, goodName, true)
	before := scrape(t, e)
	fault(bad)

	c := e.dial("platform", "secret", platform.BindTRX)
	const n = 30
	msgs := bulk(n, func(i int) string { return carrierSetups[i%3].sample })
	for i := range msgs {
		msgs[i].Text = fmt.Sprintf("%s-%02d", prefix, i)
	}
	ids := map[string]bool{}
	var texts []string
	for i, r := range c.Bulk(e.ctx, msgs, 16) {
		if r.Err != nil || r.Status != 0 {
			t.Fatalf("message %d: %v 0x%X", i, r.Err, r.Status)
		}
		ids[r.MessageID] = true
		texts = append(texts, msgs[i].Text)
	}

	// Every message sent exactly once, by the healthy modem.
	got := waitDelivered(t, e, []*modemsim.Sim{bad, good}, texts)
	for _, txt := range texts {
		if got[txt] != 1 {
			t.Errorf("%s sent %d times, want exactly once", txt, got[txt])
		}
	}
	if sent := bad.Sent(); len(sent) != 0 {
		t.Errorf("the faulty modem sent %d messages", len(sent))
	}
	// A DELIVRD receipt with our id for each.
	for range texts {
		r := e.nextReceipt(c)
		if r.Stat != "DELIVRD" || !ids[r.ID] {
			t.Fatalf("receipt %+v", r.ReceiptFields)
		}
		delete(ids, r.ID)
	}

	// The faulty modem is out of the pool, and says why; the healthy one
	// is in. (A re-probe, every 30 s, may bring the faulty one back for
	// another try; the test is long done by then.)
	st := waitModem(t, e, badName, false)
	if st.LastError == "" {
		t.Errorf("faulty modem out without a reason: %+v", st)
	}
	if st, _ := modemState(e, goodName); st.State != modem.StateUp {
		t.Errorf("healthy modem %+v", st)
	}
	m := waitScrape(t, e, func(m metrics) bool { return m.get("spareline_modem_up", "modem", badName) == 0 })
	if v := m.get("spareline_modem_up", "modem", goodName); v != 1 {
		t.Errorf("spareline_modem_up{modem=%q} = %v", goodName, v)
	}
	failed := m.delta(before, "spareline_modem_sends_total", "modem", badName, "result", "error")
	okBad := m.delta(before, "spareline_modem_sends_total", "modem", badName, "result", "ok")
	okGood := m.delta(before, "spareline_modem_sends_total", "modem", goodName, "result", "ok")
	if failed < 3 || okBad != 0 || okGood != n {
		t.Errorf("sends: faulty %v failed, %v ok; healthy %v ok; want ≥3, 0, %d", failed, okBad, okGood, n)
	}
	t.Logf("%d messages: %d sent once each by %s; %s failed %v sends (send_timeout 1s) and was taken out: %s",
		n, n, goodName, badName, failed, st.LastError)
}

// A modem that takes the PDU and never answers AT+CMGS.
func TestModemFaultHang(t *testing.T) {
	testModemFault(t, func(s *modemsim.Sim) { s.Hang(true) })
}

// A modem that answers AT+CMGS with binary junk and malformed lines and no
// final result code.
func TestModemFaultGarbage(t *testing.T) {
	testModemFault(t, func(s *modemsim.Sim) { s.SetGarbageOnSend(true) })
}
