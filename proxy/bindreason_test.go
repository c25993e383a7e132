package proxy

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/test/smscsim"
)

// A carrier that never came up says why on /status and /status.json: the
// last bind attempt's error (the refusal's status, the bind_mode hint for
// an SMSC that takes no transceiver), never the password. Before, the
// reason read "not bound yet" and the cause was only in the log.
func TestStatusShowsWhyACarrierNeverBound(t *testing.T) {
	pw, err := smscsim.Start(smscsim.Options{Name: "pwco", SystemID: "ent01", Password: "rightpw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pw.Close() })
	trx, err := smscsim.Start(smscsim.Options{Name: "trxco", NoTransceiver: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trx.Close() })
	const wrong = "wr0ng7c1"
	cfg, err := config.Parse([]byte(fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers:
  - { name: mobile, address: %q, system_id: ent01, password: %q, binds: 1 }
  - { name: unicom, address: %q, system_id: ent01, password: %q, binds: 1 }
routing: { country_code: "86", preset: cn }
`, t.TempDir(), pw.Addr(), wrong, trx.Addr(), wrong)), "bindreason.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := startTestGateway(t, cfg, GatewayOptions{})
	want := map[string][]string{
		"mobile": {"ESME_RINVPASWD"},
		"unicom": {"ESME_RINVCMDID", "set this carrier's bind_mode: transmitter_receiver"},
	}
	reasons := func() map[string]string {
		_, _, body := httpGet(t, g, "GET", "/status.json")
		var st struct {
			Carriers []struct {
				Name   string `json:"name"`
				State  string `json:"state"`
				Reason string `json:"reason"`
			} `json:"carriers"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("/status.json: %v\n%s", err, body)
		}
		out := map[string]string{}
		for _, c := range st.Carriers {
			out[c.Name] = c.Reason
		}
		return out
	}
	shown := func(r map[string]string) bool {
		for name, ws := range want {
			for _, w := range ws {
				if !strings.Contains(r[name], w) {
					return false
				}
			}
		}
		return true
	}
	deadline := time.NewTimer(hangGuard)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond) // no event for a failed bind attempt: /status.json is polled
	defer tick.Stop()
	r := reasons()
	for !shown(r) {
		select {
		case <-deadline.C:
			t.Fatalf("/status.json reasons %q, want them to name %q", r, want)
		case <-tick.C:
		}
		r = reasons()
	}
	code, _, page := httpGet(t, g, "GET", "/status")
	if code != http.StatusOK {
		t.Fatalf("/status: %d", code)
	}
	text := html.UnescapeString(string(page))
	for name, ws := range want {
		for _, w := range ws {
			if !strings.Contains(text, w) {
				t.Errorf("/status lacks %q for %s", w, name)
			}
		}
	}
	_, _, js := httpGet(t, g, "GET", "/status.json")
	if strings.Contains(text, wrong) || strings.Contains(string(js), wrong) {
		t.Error("the status page shows the carrier's password")
	}
}
