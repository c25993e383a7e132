package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/spareline/spareline/config"
)

// /status.json of a gateway without modems and with nothing queued: the
// documented keys are there, modem_queue.oldest is null (not
// 0001-01-01T00:00:00Z) and modems is an empty list.
func TestStatusJSONEmptyQueueAndNoModems(t *testing.T) {
	cfg, err := config.Parse([]byte(fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw, binds: 1 } ]
routing: { country_code: "86", preset: cn }
`, t.TempDir())), "statusjson.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg, GatewayOptions{})
	code, hdr, body := httpGet(t, g, "GET", "/status.json")
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/status.json: %d %q", code, hdr.Get("Content-Type"))
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status.json: %v\n%s", err, body)
	}
	for _, k := range []string{"version", "started", "carriers", "receipts_held", "sessions", "modem_queue", "modems"} {
		if _, ok := st[k]; !ok {
			t.Errorf("/status.json lacks %q: %s", k, body)
		}
	}
	if m := string(st["modems"]); m != "[]" {
		t.Errorf("modems = %s, want [] with no modem configured", m)
	}
	var q map[string]json.RawMessage
	if err := json.Unmarshal(st["modem_queue"], &q); err != nil {
		t.Fatal(err)
	}
	if o, ok := q["oldest"]; !ok || string(o) != "null" {
		t.Errorf("modem_queue.oldest = %s (present %v), want null with the queue empty", o, ok)
	}
	if d := string(q["depth"]); d != "0" {
		t.Errorf("modem_queue.depth = %s", d)
	}
}
