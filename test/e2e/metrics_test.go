package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// designMetrics are the metrics DESIGN.md promises, with their labels.
var designMetrics = map[string][]string{
	"spareline_carrier_up":               {"carrier"},
	"spareline_carrier_binds":            {"carrier"},
	"spareline_submits_total":            {"carrier", "result"},
	"spareline_submit_resp_status_total": {"carrier", "status"},
	"spareline_failovers_total":          {"carrier", "reason"},
	"spareline_modem_up":                 {"modem"},
	"spareline_modem_signal_dbm":         {"modem"},
	"spareline_modem_sends_total":        {"modem", "result"},
	"spareline_modem_queue_depth":        nil,
	"spareline_receipts_total":           {"source", "stat"},
	"spareline_northbound_sessions":      {"account", "bind"},
	"spareline_submit_latency_seconds":   {"path"},
}

// After a carrier fails mid-bulk with modems present, /metrics tells an
// operator exactly what happened: which carrier is down, how many messages
// each carrier and modem took, why messages failed over, the modems' health
// and signal, the receipts by source and the bound platform. The collectors
// are process-wide (several gateways run in this binary), so counters are
// compared as differences across the scenario.
func TestMetricsAfterFailover(t *testing.T) {
	storeKinds(t, testMetricsAfterFailover)
}

func testMetricsAfterFailover(t *testing.T, kind string) {
	const csq = 17 // the emulated modems' AT+CSQ rssi: -113 + 2*17 = -79 dBm
	sims, my := startNamedModems(t, kind, 2, csq)
	e := startEnv(t, kind, withYAML(my), withYAML(failoverYAML), withHTTP())
	before := scrape(t, e)
	c := e.dial("platform", "secret", platform.BindTRX)
	rc := collectReceipts(e, c)

	msgs := bulk(300, func(i int) string { return carrierSetups[i%3].sample })
	mobile := e.smscs["mobile"]
	go func() {
		if mobile.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.Submits >= 40 }) == nil {
			mobile.Stop()
		}
	}()
	res := c.Bulk(e.ctx, msgs, 32)
	var okTexts []string
	okIDs := map[string]bool{}
	refused, unanswered := 0, 0
	for i, r := range res {
		switch {
		case r.Err != nil:
			unanswered++
		case r.Status == 0:
			okTexts = append(okTexts, msgs[i].Text)
			okIDs[r.MessageID] = true
		default:
			refused++
		}
	}
	if unanswered > 0 {
		t.Errorf("%d submits were never answered", unanswered)
	}
	waitDelivered(t, e, sims, okTexts)
	waitCarrierState(t, e, "mobile", proxy.StateDown)
	waitQueueEmpty(t, e)

	// Counters lag the events they count by a moment (an answer is
	// counted after it is written, a modem send after +CMGS): wait until
	// the totals are complete, then compare exactly.
	modemSent := map[string]int{}
	for i, s := range sims {
		modemSent[modemName(kind, i)] = len(s.Sent())
	}
	after := waitScrapeWhy(t, e, func(m metrics) string {
		n := 0.0
		for _, p := range []string{"carrier", "modem", "error"} {
			n += m.delta(before, "spareline_submit_latency_seconds_count", "path", p)
		}
		for name, sent := range modemSent {
			if got := m.delta(before, "spareline_modem_sends_total", "modem", name, "result", "ok"); got < float64(sent) {
				return fmt.Sprintf("modem %s: %v sends counted ok, the modem sent %d", name, got, sent)
			}
		}
		// A bind cut meanwhile (an enquire_link unanswered on a loaded
		// machine) is back within its reconnect backoff.
		for _, name := range []string{"unicom", "telecom"} {
			if v := m.get("spareline_carrier_binds", "carrier", name); v != 2 {
				return fmt.Sprintf("carrier_binds{%s} = %v (states %v), want 2", name, v, e.gw.Carrier(name).BindStates())
			}
		}
		// And the stopped carrier's last bind has seen its connection end
		// (it may be marked down by its timeouts first).
		if v := m.get("spareline_carrier_binds", "carrier", "mobile"); v != 0 {
			return fmt.Sprintf("carrier_binds{mobile} = %v (states %v), want 0", v, e.gw.Carrier("mobile").BindStates())
		}
		if n < float64(len(msgs)-unanswered) {
			return fmt.Sprintf("%v submit latencies observed, want %d", n, len(msgs)-unanswered)
		}
		if d := m.get("spareline_modem_queue_depth"); d != 0 {
			return fmt.Sprintf("modem_queue_depth %v", d)
		}
		return ""
	})

	// Carriers: mobile down with no bind, the others up with both.
	for _, cs := range carrierSetups {
		wantUp, wantBinds := 1.0, 2.0
		if cs.name == "mobile" {
			wantUp, wantBinds = 0, 0
		}
		if v := after.get("spareline_carrier_up", "carrier", cs.name); v != wantUp {
			t.Errorf("carrier_up{%s} = %v, want %v", cs.name, v, wantUp)
		}
		if v := after.get("spareline_carrier_binds", "carrier", cs.name); v != wantBinds {
			t.Errorf("carrier_binds{%s} = %v, want %v", cs.name, v, wantBinds)
		}
	}
	// Submits accepted by each carrier: what its SMSC received. On mobile,
	// submits in flight when it closed reached the SMSC without an answer:
	// they count as lost (or timed out), not ok.
	carrierOK := 0.0
	for _, cs := range carrierSetups {
		received := 0
		for _, m := range e.smscs[cs.name].Received() {
			if m.Status == 0 && !m.Silent {
				received++
			}
		}
		ok := after.delta(before, "spareline_submits_total", "carrier", cs.name, "result", "ok")
		carrierOK += ok
		if st := after.delta(before, "spareline_submit_resp_status_total", "carrier", cs.name, "status", "ESME_ROK"); st != ok {
			t.Errorf("submit_resp_status_total{%s,ESME_ROK} = %v, submits_total ok = %v", cs.name, st, ok)
		}
		failovers := after.sumDelta(before, "spareline_failovers_total", "carrier", cs.name)
		if cs.name != "mobile" {
			if ok != float64(received) {
				t.Errorf("submits_total{%s,ok} = %v, its SMSC received %d", cs.name, ok, received)
			}
			if failovers != 0 {
				t.Errorf("failovers_total{%s} = %v for a healthy carrier", cs.name, failovers)
			}
			continue
		}
		inFlight := after.delta(before, "spareline_submits_total", "carrier", cs.name, "result", "lost") +
			after.delta(before, "spareline_submits_total", "carrier", cs.name, "result", "timeout")
		if ok > float64(received) || float64(received) > ok+inFlight {
			t.Errorf("mobile: submits_total ok %v, lost+timeout %v; its SMSC received %d", ok, inFlight, received)
		}
		if failovers == 0 {
			t.Error("failovers_total{mobile} is 0 after it failed")
		}
		// Every message answered by way of the modems failed over once.
		if viaModem := after.delta(before, "spareline_submit_latency_seconds_count", "path", "modem"); failovers != viaModem {
			t.Errorf("failovers_total{mobile} = %v, submits answered by the modem path = %v", failovers, viaModem)
		}
		t.Logf("mobile: ok %v, lost/timeout %v, failed over %v (down %v, lost %v, timeout %v)", ok, inFlight, failovers,
			after.delta(before, "spareline_failovers_total", "carrier", "mobile", "reason", "down"),
			after.delta(before, "spareline_failovers_total", "carrier", "mobile", "reason", "lost"),
			after.delta(before, "spareline_failovers_total", "carrier", "mobile", "reason", "timeout"))
	}
	// Answers by path: through a carrier, queued for the modems, refused.
	viaCarrier := after.delta(before, "spareline_submit_latency_seconds_count", "path", "carrier")
	viaModem := after.delta(before, "spareline_submit_latency_seconds_count", "path", "modem")
	if viaCarrier != carrierOK {
		t.Errorf("submit_latency_seconds_count{carrier} = %v, carriers accepted %v", viaCarrier, carrierOK)
	}
	if viaCarrier+viaModem != float64(len(okTexts)) {
		t.Errorf("submit_latency_seconds_count carrier %v + modem %v, platform got %d OKs", viaCarrier, viaModem, len(okTexts))
	}
	if v := after.delta(before, "spareline_submit_latency_seconds_count", "path", "error"); v != float64(refused) {
		t.Errorf("submit_latency_seconds_count{error} = %v, platform got %d refusals", v, refused)
	}
	// Modems: up, their signal, and what they sent.
	for name, sent := range modemSent {
		if v := after.get("spareline_modem_up", "modem", name); v != 1 {
			t.Errorf("modem_up{%s} = %v, want 1", name, v)
		}
		if v := after.get("spareline_modem_signal_dbm", "modem", name); v != -113+2*csq {
			t.Errorf("modem_signal_dbm{%s} = %v, want %d (CSQ %d)", name, v, -113+2*csq, csq)
		}
		if v := after.delta(before, "spareline_modem_sends_total", "modem", name, "result", "ok"); v != float64(sent) {
			t.Errorf("modem_sends_total{%s,ok} = %v, the modem sent %d", name, v, sent)
		}
	}
	if sent := modemSent[modemName(kind, 0)] + modemSent[modemName(kind, 1)]; sent == 0 {
		t.Fatal("nothing went by modem")
	}
	if v := after.delta(before, "spareline_northbound_sessions", "account", "platform", "bind", "transceiver"); v != 1 {
		t.Errorf("northbound_sessions{platform,transceiver} rose by %v with one platform bound, want 1", v)
	}

	// The carrier comes back and delivers the receipts it owed: every
	// receipt the platform got is counted, by its source.
	if err := mobile.Restart(); err != nil {
		t.Fatal(err)
	}
	final := waitScrape(t, e, func(m metrics) bool {
		ids, n := rc.counts(okIDs)
		return ids == len(okIDs) && m.sumDelta(before, "spareline_receipts_total") == float64(n)
	})
	for _, src := range []string{"mobile", "unicom", "telecom", "modem"} {
		if v := final.delta(before, "spareline_receipts_total", "source", src, "stat", "DELIVRD"); v == 0 {
			t.Errorf("receipts_total{%s,DELIVRD} = 0", src)
		}
	}
	for _, src := range []string{"unicom", "telecom"} {
		if v, want := final.delta(before, "spareline_receipts_total", "source", src, "stat", "DELIVRD"),
			after.delta(before, "spareline_submits_total", "carrier", src, "result", "ok"); v != want {
			t.Errorf("receipts_total{%s,DELIVRD} = %v for %v messages it accepted", src, v, want)
		}
	}
	if d, all := final.delta(before, "spareline_receipts_total", "source", "modem", "stat", "DELIVRD"),
		final.sumDelta(before, "spareline_receipts_total", "source", "modem"); d != all {
		t.Errorf("modem receipts: %v DELIVRD of %v; the emulator reports every message delivered", d, all)
	}

	// The contract: every metric of DESIGN.md, with its labels and no more;
	// no label value is a phone number or a message id.
	dests := map[string]bool{}
	for _, cs := range carrierSetups {
		dests[cs.sample] = true
	}
	longDigits := regexp.MustCompile(`[0-9]{7,}`)
	for name, labels := range designMetrics {
		fam := final.fams[name]
		if fam == nil {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if name == "spareline_submit_latency_seconds" && fam.GetType() != dto.MetricType_HISTOGRAM {
			t.Errorf("%s is a %v, want a histogram", name, fam.GetType())
		}
		for _, m := range fam.GetMetric() {
			var got []string
			for _, lp := range m.GetLabel() {
				got = append(got, lp.GetName())
				if v := lp.GetValue(); dests[v] || okIDs[v] || longDigits.MatchString(v) {
					t.Errorf("%s label %s=%q looks like a number or a message id", name, lp.GetName(), v)
				}
			}
			want := append([]string(nil), labels...)
			sort.Strings(want)
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("%s has labels %v, want %v", name, got, want)
			}
		}
	}
	for name, fam := range final.fams {
		if !strings.HasPrefix(name, "spareline_") {
			continue
		}
		for _, m := range fam.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v := lp.GetValue(); dests[v] || okIDs[v] || longDigits.MatchString(v) {
					t.Errorf("%s label %s=%q looks like a number or a message id", name, lp.GetName(), v)
				}
			}
		}
	}
	if v := final.delta(before, "spareline_panics_total"); v != 0 {
		t.Errorf("spareline_panics_total rose by %v", v)
	}
	t.Logf("%d messages: %d via carriers, %d via modems (%v), %d refused; %v receipts",
		len(msgs), int(viaCarrier), int(viaModem), modemSent, refused, final.sumDelta(before, "spareline_receipts_total"))
}

func modemName(kind string, i int) string { return fmt.Sprintf("met-%s-%d", kind, i) }

// startNamedModems starts n emulated modems reporting signal csq, named for
// this test so that their metrics are its own.
func startNamedModems(t *testing.T, kind string, n, csq int) ([]*modemsim.Sim, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var sims []*modemsim.Sim
	var y strings.Builder
	y.WriteString("modems:\n")
	for i := range n {
		s, err := modemsim.Start(ctx, modemsim.Options{Name: modemName(kind, i), SendDelay: 2 * time.Millisecond,
			ReportDelay: 5 * time.Millisecond, Signal: csq})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		sims = append(sims, s)
		fmt.Fprintf(&y, "  - { name: %s, device: %q, max_per_minute: 100000 }\n", modemName(kind, i), s.Path())
	}
	return sims, y.String()
}

// receiptCounter drains a platform's receipts.
type receiptCounter struct {
	mu  sync.Mutex
	n   int
	ids map[string]bool
}

func collectReceipts(e *env, c *platform.Client) *receiptCounter {
	rc := &receiptCounter{ids: map[string]bool{}}
	go func() {
		for {
			select {
			case r := <-c.Receipts():
				rc.mu.Lock()
				rc.n++
				rc.ids[r.ID] = true
				rc.mu.Unlock()
			case <-e.ctx.Done():
				return
			}
		}
	}()
	return rc
}

// counts returns how many of want have a receipt, and how many receipts came.
func (rc *receiptCounter) counts(want map[string]bool) (int, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	got := 0
	for id := range want {
		if rc.ids[id] {
			got++
		}
	}
	return got, rc.n
}

// httpGet asks the gateway's HTTP endpoint for path: the status code and
// the body.
func httpGet(t *testing.T, e *env, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, "GET", fmt.Sprintf("http://%s%s", e.gw.HTTPAddr(), path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// metrics is one scrape of /metrics.
type metrics struct {
	fams map[string]*dto.MetricFamily
}

// scrape reads /metrics over HTTP and parses the text exposition format.
func scrape(t *testing.T, e *env) metrics {
	t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, "GET", fmt.Sprintf("http://%s/metrics", e.gw.HTTPAddr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return metrics{fams: fams}
}

// waitScrape scrapes until ready holds (bounded by the test's context).
func waitScrape(t *testing.T, e *env, ready func(metrics) bool) metrics {
	t.Helper()
	return waitScrapeWhy(t, e, func(m metrics) string {
		if ready(m) {
			return ""
		}
		return "not there yet"
	})
}

// waitScrapeWhy scrapes until notYet says nothing is missing; on timeout the
// test fails with what it said last.
func waitScrapeWhy(t *testing.T, e *env, notYet func(metrics) string) metrics {
	t.Helper()
	for {
		m := scrape(t, e)
		why := notYet(m)
		if why == "" {
			return m
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("the metrics never reached the expected totals: %s", why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// get is the value of name with exactly these label pairs (0 if absent).
// A histogram's name_count and name_sum are read from its family.
func (m metrics) get(name string, labels ...string) float64 {
	v, _ := m.find(name, labels, true)
	return v
}

// sumDelta sums, over every series of name whose labels include these
// pairs, the value now minus the value in before.
func (m metrics) sumDelta(before metrics, name string, labels ...string) float64 {
	now, _ := m.find(name, labels, false)
	was, _ := before.find(name, labels, false)
	return now - was
}

func (m metrics) delta(before metrics, name string, labels ...string) float64 {
	return m.get(name, labels...) - before.get(name, labels...)
}

// find sums the series of name matching labels (exact: all labels equal;
// otherwise: these labels among others).
func (m metrics) find(name string, labels []string, exact bool) (float64, bool) {
	famName, part := name, ""
	if m.fams[name] == nil {
		for _, suf := range []string{"_count", "_sum"} {
			if strings.HasSuffix(name, suf) {
				famName, part = strings.TrimSuffix(name, suf), suf
			}
		}
	}
	fam := m.fams[famName]
	if fam == nil {
		return 0, false
	}
	sum, found := 0.0, false
	for _, s := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range s.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		if exact && len(have) != len(labels)/2 {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		switch {
		case s.Counter != nil:
			sum += s.Counter.GetValue()
		case s.Gauge != nil:
			sum += s.Gauge.GetValue()
		case s.Histogram != nil && part == "_count":
			sum += float64(s.Histogram.GetSampleCount())
		case s.Histogram != nil && part == "_sum":
			sum += s.Histogram.GetSampleSum()
		case s.Untyped != nil:
			sum += s.Untyped.GetValue()
		}
	}
	return sum, found
}

// Receipts held while the account has no receiver bound show in
// spareline_deliveries_pending (what SparelineReceiptsHeld watches), and the
// gauge falls to 0 once a receiver binds and takes them.
func TestHeldReceiptsAreCounted(t *testing.T) {
	e := startEnv(t, "bolt", withHTTP())
	tx := e.dial("platform", "secret", platform.BindTX)
	const n = 5
	for i := range n {
		if r, err := tx.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: fmt.Sprint("held ", i), RegisteredDelivery: 1}); err != nil || r.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, r.Status)
		}
	}
	waitScrape(t, e, func(m metrics) bool { return m.get("spareline_deliveries_pending", "account", "platform") == n })
	if held := e.gw.Snapshot(e.ctx).ReceiptsHeld["platform"]; held != n { // what /status and /status.json show
		t.Errorf("status page: %d receipts held, want %d", held, n)
	}
	rx := e.dial("platform", "secret", platform.BindRX)
	for range n {
		e.nextReceipt(rx)
	}
	waitScrape(t, e, func(m metrics) bool { return m.get("spareline_deliveries_pending", "account", "platform") == 0 })
	if held, ok := e.gw.Snapshot(e.ctx).ReceiptsHeld["platform"]; ok {
		t.Errorf("status page: %d receipts held after the receiver took them", held)
	}
}
