package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/redisserver"
	"github.com/spareline/spareline/test/smscsim"
)

// statusJSON is what these tests read of /status.json: the store section,
// and the parts read from the store raw (null when unknown).
type statusJSON struct {
	Store        proxy.StoreStatus `json:"store"`
	ReceiptsHeld json.RawMessage   `json:"receipts_held"`
	Queue        struct {
		Depth json.RawMessage `json:"depth"`
		Head  json.RawMessage `json:"head"`
	} `json:"modem_queue"`
}

// held is receipts_held[account], -1 when receipts_held is null.
func (s statusJSON) held(account string) int {
	var m map[string]int
	if err := json.Unmarshal(s.ReceiptsHeld, &m); err != nil || m == nil {
		return -1
	}
	return m[account]
}

// timedGet is httpGet, and how long the answer took.
func timedGet(t *testing.T, e *env, path string) (int, []byte, time.Duration) {
	t.Helper()
	start := time.Now()
	code, body := httpGet(t, e, path)
	return code, body, time.Since(start)
}

func readStatus(t *testing.T, e *env) (statusJSON, time.Duration) {
	t.Helper()
	code, body, took := timedGet(t, e, "/status.json")
	var st statusJSON
	if code != http.StatusOK {
		t.Fatalf("/status.json: %d %s", code, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status.json: %v\n%s", err, body)
	}
	return st, took
}

// waitStatus reads /status.json until ok holds (bounded by the test's
// context): what the gateway shows is the event these tests wait for.
func waitStatus(t *testing.T, e *env, what string, ok func(statusJSON) bool) statusJSON {
	t.Helper()
	for {
		st, _ := readStatus(t, e)
		if ok(st) {
			return st
		}
		select {
		case <-e.ctx.Done():
			t.Fatalf("/status.json never showed %s; last: %+v", what, st)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// heldReceipts submits n messages asking for receipts from a transmitter
// (no receiver is bound: their receipts are held in the store) and waits
// until the status page counts them.
func heldReceipts(t *testing.T, e *env, c *platform.Client, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprintf("held %d", i), RegisteredDelivery: 1})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit %d: %+v %v", i, res, err)
		}
		ids = append(ids, res.MessageID)
	}
	waitStatus(t, e, fmt.Sprintf("%d receipts held", n), func(st statusJSON) bool { return st.held("platform") == n })
	return ids
}

// unknown reports whether a raw JSON value is null.
func unknown(raw json.RawMessage) bool { return string(raw) == "null" }

// A Redis that hangs (SIGSTOP: it accepts connections and answers
// nothing) under a running gateway:
//   - /status and /status.json answer within about a second, showing the
//     store "not answering" and what they could not read from it (the modem
//     queue, the receipts held) as unknown (null), not 0;
//   - /readyz and /message answer 503 within the 2 s docs/operations.md
//     promises (go-redis's own read timeout was 5 s);
//   - a carrier's receipt is answered ESME_RX_T_APPN within its bound (half
//     the carrier's response_timeout: 1 s here), so the SMSC keeps it and
//     sends it again, instead of waiting for its own timer;
//   - that failed store call marks the store failing: the page says so,
//     /readyz says so at once, and submits are refused;
//   - when Redis continues, all is well again by itself.
func TestRedisHangKeepsStatusAndReceiptsAnswering(t *testing.T) {
	rs := redisserver.Start(t)
	e := startEnv(t, "redis", withHTTP(), func(o *envOpts) { o.redis = rs })
	c := e.dial("platform", "secret", platform.BindTX)
	ids := heldReceipts(t, e, c, 3)
	if st, _ := readStatus(t, e); st.Store.State != "ok" || st.Store.Kind != "redis" || unknown(st.Queue.Depth) {
		t.Fatalf("before the hang: store %+v, depth %s", st.Store, st.Queue.Depth)
	}

	rs.Pause()

	st, took := readStatus(t, e)
	t.Logf("Redis hung: /status.json in %v", took)
	if took > 1500*time.Millisecond {
		t.Errorf("/status.json took %v with Redis hung; want about a second at most", took)
	}
	if st.Store.State != "not_answering" || !unknown(st.ReceiptsHeld) || !unknown(st.Queue.Depth) ||
		strings.Join(st.Store.Unread, ",") != "modem_queue,receipts_held" || st.Store.ReadError == "" {
		t.Errorf("/status.json with Redis hung: store %+v, receipts_held %s, modem_queue.depth %s; want not_answering, both unknown (null)",
			st.Store, st.ReceiptsHeld, st.Queue.Depth)
	}
	code, page, took := timedGet(t, e, "/status")
	t.Logf("Redis hung: /status in %v", took)
	if code != http.StatusOK || took > 1500*time.Millisecond {
		t.Errorf("/status with Redis hung: %d after %v; want 200 within about a second", code, took)
	}
	for _, want := range []string{`id="store-alert"`, "not answering", "unknown: the store did not answer"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("/status with Redis hung lacks %q", want)
		}
	}
	for _, path := range []string{"/readyz", "/message?id=" + ids[0]} {
		code, body, took := timedGet(t, e, path)
		t.Logf("Redis hung: %s %d in %v", path, code, took)
		if code != http.StatusServiceUnavailable || took > 2500*time.Millisecond {
			t.Errorf("%s with Redis hung: %d %q after %v; want 503 within 2 s", path, code, body, took)
		}
	}

	// A receipt from the carrier: not acknowledged (nothing durable), and
	// not left unanswered either.
	smsc := e.smscs["mobile"]
	start := time.Now()
	err := smsc.SendReceipt(e.ctx, "4711", "13800138000", "10690001", "DELIVRD")
	took = time.Since(start)
	t.Logf("Redis hung: a carrier's receipt answered %v in %v", err, took)
	var se *smscsim.StatusError
	if !errors.As(err, &se) || se.Status != statusXTAppn || took > 2*time.Second {
		t.Errorf("receipt with Redis hung: %v after %v; want ESME_RX_T_APPN within about 1 s", err, took)
	}
	st, took = readStatus(t, e)
	if st.Store.State != "failing" || !st.Store.RefusingSubmits || st.Store.Since == nil || st.Store.LastError == "" || took > 1500*time.Millisecond {
		t.Errorf("/status.json after a failed store call: store %+v after %v; want failing, refusing submits, with since and the error", st.Store, took)
	}
	if code, body, took := timedGet(t, e, "/readyz"); code != http.StatusServiceUnavailable || took > 500*time.Millisecond ||
		!strings.Contains(string(body), "store") {
		t.Errorf("/readyz with the store failing: %d %q after %v; want 503 at once, naming the store", code, body, took)
	}
	res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "while hung"})
	if err != nil || res.Status != statusMsgQFul {
		t.Errorf("submit with the store failing: %+v %v; want ESME_RMSGQFUL", res, err)
	}

	rs.Resume()
	st = waitStatus(t, e, "the store ok again", func(st statusJSON) bool { return st.Store.State == "ok" && st.held("platform") == 3 })
	if st.Store.RefusingSubmits || len(st.Store.Unread) != 0 {
		t.Errorf("/status.json once Redis continued: %+v", st.Store)
	}
}

// Redis killed under a running gateway with receipts held: /status.json
// shows the store failing (since when, the error, submits refused), the
// receipts held and the modem queue as unknown (null) rather than {} and
// 0; /metrics has spareline_store_up 0 and the failed calls; once Redis is
// back (its AOF kept everything) the page shows the held receipts again
// and no data loss.
func TestRedisDownShowsOnStatusAndMetrics(t *testing.T) {
	rs := redisserver.Start(t)
	e := startEnv(t, "redis", withHTTP(), func(o *envOpts) { o.redis = rs })
	c := e.dial("platform", "secret", platform.BindTX)
	heldReceipts(t, e, c, 3)
	before := scrape(t, e)
	if v := before.get("spareline_store_up"); v != 1 {
		t.Fatalf("spareline_store_up = %v before the outage, want 1", v)
	}

	rs.Kill()
	// The first submit may reach the carrier before any store write failed
	// (ESME_RSYSERR); the next ones are refused before it.
	for i := 0; ; i++ {
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprintf("down %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == statusMsgQFul {
			break
		}
		if res.Status != statusSysErr || i > 3 {
			t.Fatalf("submit %d with Redis down: 0x%X", i, res.Status)
		}
	}
	st, _ := readStatus(t, e)
	if st.Store.State != "failing" || !st.Store.RefusingSubmits || st.Store.Since == nil || st.Store.LastError == "" ||
		st.Store.LastErrorAt == nil || st.Store.Kind != "redis" {
		t.Errorf("/status.json with Redis down: store %+v; want failing, refusing submits, since, the last error", st.Store)
	}
	if !unknown(st.ReceiptsHeld) || !unknown(st.Queue.Depth) || !unknown(st.Queue.Head) {
		t.Errorf("/status.json with Redis down: receipts_held %s, modem_queue depth %s head %s; want null (unknown), not {} or 0",
			st.ReceiptsHeld, st.Queue.Depth, st.Queue.Head)
	}
	_, page := httpGet(t, e, "/status")
	for _, want := range []string{`id="store-alert"`, "is failing since", "Submits are refused", `id="store-state">failing`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("/status with Redis down lacks %q", want)
		}
	}
	m := scrape(t, e)
	if v := m.get("spareline_store_up"); v != 0 {
		t.Errorf("spareline_store_up = %v with Redis down, want 0", v)
	}
	if d := m.sumDelta(before, "spareline_store_errors_total", "op", "submit"); d < 1 {
		t.Errorf("spareline_store_errors_total{op=submit} rose by %v, want at least 1", d)
	}

	rs.Restart()
	waitStatus(t, e, "the store ok again with its 3 receipts", func(st statusJSON) bool {
		return st.Store.State == "ok" && st.held("platform") == 3
	})
	m = scrape(t, e)
	if v := m.get("spareline_store_up"); v != 1 {
		t.Errorf("spareline_store_up = %v once Redis is back, want 1", v)
	}
	if d := m.sumDelta(before, "spareline_store_data_lost_total"); d != 0 {
		t.Errorf("spareline_store_data_lost_total rose by %v over a restart that kept the data, want 0", d)
	}
}

// A Redis that restarts without its data (no persistence) under a running
// gateway: the health check notices, by itself with no traffic (within
// storeCheckEvery, 5 s) and at once when the store answers again after an
// outage; each loss is logged as an error with the persistence advice,
// counted, and shown on the page; the persistence warning is given again.
func TestRedisDataLossIsReported(t *testing.T) {
	rs := redisserver.Start(t, redisserver.WithoutAOF())
	core, logs := observer.New(zap.InfoLevel)
	e := startEnv(t, "redis", withHTTP(), withLogTee(core), func(o *envOpts) { o.redis = rs })
	c := e.dial("platform", "secret", platform.BindTRX)
	res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "before the loss"})
	if err != nil || res.Status != 0 {
		t.Fatalf("submit: %+v %v", res, err)
	}
	before := scrape(t, e)

	rs.Restart() // empty: no AOF, no RDB
	st := waitStatus(t, e, "a data loss", func(st statusJSON) bool { return st.Store.DataLost == 1 })
	if st.Store.DataLostAt == nil || !strings.Contains(st.Store.PersistenceWarning, "appendonly=no") {
		t.Errorf("/status.json after the loss: %+v; want when, and the persistence warning", st.Store)
	}
	if code, _ := httpGet(t, e, "/message?id="+res.MessageID); code != http.StatusNotFound {
		t.Errorf("/message of a message acknowledged before the loss: %d, want 404 (its record is gone)", code)
	}
	lost := logs.FilterMessageSnippet("the store lost its data").All()
	if len(lost) != 1 || lost[0].Level != zap.ErrorLevel || !strings.Contains(fmt.Sprint(lost[0].ContextMap()["advice"]), "appendonly") {
		t.Fatalf("log lines about the loss: %+v; want one error with the persistence advice", lost)
	}
	_, page := httpGet(t, e, "/status")
	if !strings.Contains(string(page), "The store lost its data 1 time(s)") {
		t.Error("/status does not show the data loss")
	}

	// Killed, found failing by a submit, restarted empty: found when it
	// answers again.
	rs.Kill()
	for i := 0; ; i++ {
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprintf("down %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == statusMsgQFul {
			break
		}
	}
	rs.Restart()
	waitStatus(t, e, "a second data loss, the store ok", func(st statusJSON) bool { return st.Store.DataLost == 2 && st.Store.State == "ok" })
	if d := scrape(t, e).sumDelta(before, "spareline_store_data_lost_total"); d != 2 {
		t.Errorf("spareline_store_data_lost_total rose by %v, want 2", d)
	}
	// The persistence warning: at start, and again after each loss.
	if n := logs.FilterMessageSnippet("appendonly=no").FilterLevelExact(zap.WarnLevel).Len(); n < 3 {
		t.Errorf("%d persistence warnings, want 3 (at start, after each loss)", n)
	}
}
