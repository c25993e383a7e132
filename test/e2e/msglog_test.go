package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// logEvent is one line of the message log.
type logEvent map[string]any

func (e logEvent) str(k string) string { s, _ := e[k].(string); return s }

// messageLogEvents reads the message log at path after writing what the
// gateway buffered; every line must be a JSON object.
func (e *env) messageLogEvents(path string) []logEvent {
	e.t.Helper()
	if ml := e.gw.Disp.MessageLog(); ml != nil {
		_ = ml.Sync()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []logEvent
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var ev logEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.t.Fatalf("message log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

// waitMessageLog polls the message log until every event named in want
// (event name -> found) is there for id; the gateway writes its buffer
// every second, and this test flushes it at each look.
func (e *env) waitMessageLog(path, id string, want ...string) map[string]logEvent {
	e.t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		found := map[string]logEvent{}
		for _, ev := range e.messageLogEvents(path) {
			if ev.str("id") == id {
				if _, dup := found[ev.str("event")]; !dup {
					found[ev.str("event")] = ev
				}
			}
		}
		missing := ""
		for _, w := range want {
			if found[w] == nil {
				missing = w
			}
		}
		if missing == "" {
			return found
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("message log: no %s line for %s; the log has:\n%v", missing, id, e.messageLogEvents(path))
		case <-tick.C:
		}
	}
}

// The network team's question, "what happened to the message to
// 138xxxx8000?", answered from the message log: a message relayed over real
// TCP to a simulated SMSC, with a receipt the platform takes, leaves its
// submit, receipt and receipt_delivered lines under the id the platform got,
// with the carrier's id that links them, the destination masked and no text.
func TestMessageLogFindsMessageByID(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		path := filepath.Join(t.TempDir(), "messages.log")
		e := startEnv(t, kind, withYAML(fmt.Sprintf("log:\n  messages: %q\n", path)))
		c := e.dial("platform", "secret", platform.BindTRX)
		const text = "your code is 482913"
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: text, RegisteredDelivery: 1})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit: %v status 0x%X", err, res.Status)
		}
		if r := e.nextReceipt(c); r.ID != res.MessageID {
			t.Fatalf("receipt for %s, want %s", r.ID, res.MessageID)
		}
		got := e.waitMessageLog(path, res.MessageID, "submit", "receipt", "receipt_delivered")

		sub, rc, dl := got["submit"], got["receipt"], got["receipt_delivered"]
		smsc := e.smscs["mobile"]
		if err := smsc.WaitUntil(e.ctx, func(st smscsim.Stats) bool { return st.Submits >= 1 }); err != nil {
			t.Fatal(err)
		}
		carrierID := strings.TrimLeft(smsc.Received()[0].ID, "0")
		for k, want := range map[string]string{"account": "platform", "status": "ESME_ROK", "to": "138****8000",
			"from": "10690001", "carrier": "mobile", "carrier_id": carrierID, "path": "carrier"} {
			if sub.str(k) != want {
				t.Errorf("submit line %s = %q, want %q (%v)", k, sub.str(k), want, sub)
			}
		}
		for k, want := range map[string]string{"account": "platform", "carrier": "mobile", "carrier_id": carrierID,
			"stat": "DELIVRD"} {
			if rc.str(k) != want {
				t.Errorf("receipt line %s = %q, want %q (%v)", k, rc.str(k), want, rc)
			}
		}
		if rc["final"] != true {
			t.Errorf("receipt line final = %v, want true", rc["final"])
		}
		if dl.str("status") != "ESME_ROK" || dl.str("account") != "platform" {
			t.Errorf("receipt_delivered line %v, want status ESME_ROK for platform", dl)
		}
		for _, ev := range []logEvent{sub, rc, dl} {
			if _, err := time.Parse("2006-01-02T15:04:05.000Z0700", ev.str("ts")); err != nil {
				t.Errorf("%s line ts %q is not ISO 8601: %v", ev.str("event"), ev.str("ts"), err)
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{text, "482913", "13800138000", "secret", "pw-mob"} {
			if bytes.Contains(raw, []byte(secret)) {
				t.Errorf("the message log contains %q:\n%s", secret, raw)
			}
		}
	})
}
