package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// statusGateway is a gateway with one carrier, mobile, on a simulator
// that takes the password pw-cm and answers every submit with status (0 =
// OK), the HTTP endpoint on and no modems; extra is more YAML (a
// failover: block, or ""). reload reloads the same config with the
// carrier's password replaced.
func statusGateway(t *testing.T, status *atomic.Uint32, extra string) (g *Gateway, smsc *smscsim.SMSC, reload func(password string)) {
	t.Helper()
	smsc, err := smscsim.Start(smscsim.Options{Name: "mobile", SystemID: "ent01", Password: "pw-cm"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	smsc.SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{Status: status.Load()} })
	dir := t.TempDir()
	cfgWith := func(password string) *config.Config {
		cfg, err := config.Parse(fmt.Appendf(nil, `smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: %q, system_id: ent01, password: %q, binds: 1, response_timeout: 5s } ]
routing: { country_code: "86", preset: cn }
%s`, dir, smsc.Addr(), password, extra), "status.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	g = startTestGateway(t, cfgWith("pw-cm"), GatewayOptions{}, "mobile")
	reload = func(password string) {
		t.Helper()
		if err := g.Reload(cfgWith(password)); err != nil {
			t.Fatal(err)
		}
	}
	return g, smsc, reload
}

// carrierStatusJSON reads /status.json's entry of carrier name.
func carrierStatusJSON(t *testing.T, g *Gateway, name string) map[string]any {
	t.Helper()
	code, _, body := httpGet(t, g, "GET", "/status.json")
	if code != http.StatusOK {
		t.Fatalf("/status.json: %d", code)
	}
	var st struct {
		Carriers []map[string]any `json:"carriers"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status.json: %v\n%s", err, body)
	}
	for _, c := range st.Carriers {
		if c["name"] == name {
			return c
		}
	}
	t.Fatalf("/status.json has no carrier %s: %s", name, body)
	return nil
}

// The status page's traffic figures of a carrier count as
// spareline_submits_total does: a try the carrier answered ESME_RTHROTTLED
// or ESME_RMSGQFUL and that was sent again is throttled, the message it
// still refused after the retries is failed (the platform got the
// carrier's refusal), and error_rate shows it. Before, every answer of the
// carrier counted as ok: a carrier refusing everything read "ok: 9,
// failed: 0, error_rate: 0".
func TestStatusCountsThrottledTriesAndFinalRefusals(t *testing.T) {
	var status atomic.Uint32
	status.Store(statusThrottled)
	g, smsc, _ := statusGateway(t, &status, "")
	g.Disp.throttleMax = 2 // three tries a message: 2 throttled, the last refused
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := platform.Dial(ctx, g.SMPPAddr().String(), "platform", "secret", platform.Options{BindType: platform.BindTX})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	submit := func(want uint32) {
		t.Helper()
		r, err := p.Submit(ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "hi", RegisteredDelivery: 1})
		if err != nil || r.Status != want {
			t.Fatalf("submit answered %+v, %v; want %s", r, err, StatusString(want))
		}
	}
	submit(statusThrottled)
	status.Store(statusMsgQFul)
	submit(statusMsgQFul)
	status.Store(statusOK)
	submit(statusOK)
	if n := smsc.Stats().Submits; n != 7 {
		t.Fatalf("the carrier got %d submits, want 3 + 3 + 1", n)
	}
	// The rates count whole seconds before now: read them a second on.
	g.Health.mu.Lock()
	g.Health.now = func() time.Time { return time.Now().Add(time.Second) }
	g.Health.mu.Unlock()
	c := carrierStatusJSON(t, g, "mobile")
	for k, want := range map[string]float64{"ok": 1, "throttled": 4, "failed": 2, "error_rate": 2.0 / 3, "throttle_rate": 4.0 / 7} {
		if got, ok := c[k].(float64); !ok || got != want {
			t.Errorf("/status.json carrier %s = %v, want %v (%v)", k, c[k], want, c)
		}
	}
	code, _, page := httpGet(t, g, "GET", "/status")
	if code != http.StatusOK {
		t.Fatalf("/status: %d", code)
	}
	for _, want := range []string{"66.7 % failed, 57.1 % throttled", "(1 ok, 4 throttled, 2 failed since start)"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("/status lacks %q", want)
		}
	}
}

// A reload with a password the carrier refuses keeps the binds on the
// previous one (the trial bind was refused), and says so where an
// operator looks: the carrier's entry on the status page and in
// /status.json (reload_refused: refused, why, on the previous login, a
// restart would use the new one) and spareline_carrier_reload_refused, 1
// until a reload the carrier takes. Before, only one log line said it:
// the reload counted as applied, the carrier read "up, first bind up".
func TestStatusSaysTheCarrierRefusedTheReloadedLogin(t *testing.T) {
	old := authRetry
	authRetry = time.Hour // one trial per reload
	t.Cleanup(func() { authRetry = old })
	var status atomic.Uint32
	g, smsc, reload := statusGateway(t, &status, "")
	c := g.Carrier("mobile")
	gauge := func() float64 { return testutil.ToFloat64(metricCarrierReloadRefused.WithLabelValues("mobile")) }
	if v := gauge(); v != 0 {
		t.Fatalf("spareline_carrier_reload_refused %v at start, want 0", v)
	}
	if e := carrierStatusJSON(t, g, "mobile"); e["reload_refused"] != "" {
		t.Fatalf("reload_refused %q at start, want \"\"", e["reload_refused"])
	}

	reload("pw-typo")
	waitCond(t, "the trial's refusal", func() bool { return c.ReloadRefused() != "" })
	if n := smsc.Stats().BindsRefused; n != 1 {
		t.Errorf("the SMSC refused %d binds, want the trial's", n)
	}
	e := carrierStatusJSON(t, g, "mobile")
	note, _ := e["reload_refused"].(string)
	for _, want := range []string{"refused the login of the last config reload", "ESME_RINVPASWD", "previous address and login",
		"a restart would use the reloaded ones"} {
		if !strings.Contains(note, want) {
			t.Errorf("reload_refused %q does not say %q", note, want)
		}
	}
	if strings.Contains(note, "pw-typo") || strings.Contains(note, "pw-cm") {
		t.Errorf("reload_refused shows a password: %q", note)
	}
	if e["state"] != "up" {
		t.Errorf("state %v, want up: the binds kept their session", e["state"])
	}
	if v := gauge(); v != 1 {
		t.Errorf("spareline_carrier_reload_refused %v after the refused trial, want 1", v)
	}
	_, _, page := httpGet(t, g, "GET", "/status")
	if !strings.Contains(string(page), "the carrier refused the login of the last config reload") {
		t.Error("/status does not show the refused reload")
	}

	reload("pw-cm") // the fix: back to the login the binds use
	if c.ReloadRefused() != "" || gauge() != 0 {
		t.Errorf("after the fix: reload_refused %q, gauge %v; want cleared", c.ReloadRefused(), gauge())
	}
}

// A carrier's receipts on the status page: when it last sent one, and how
// many of the submits it accepted since asked for one (registered_delivery
// 1 or 3; 0 and 2 owe none), as spareline_receipts_requested_total counts
// them. A carrier that stopped sending receipts shows a last receipt that
// stays and a count that grows. Before, nothing but a flat
// receipts_total{source} said so.
func TestStatusShowsACarriersLastReceipt(t *testing.T) {
	var status atomic.Uint32
	g, smsc, _ := statusGateway(t, &status, "")
	asked := func() float64 { return testutil.ToFloat64(metricReceiptsRequested.WithLabelValues("mobile")) }
	asked0 := asked()
	e := carrierStatusJSON(t, g, "mobile")
	if e["last_receipt"] != nil || e["receipts_asked_since"] != float64(0) {
		t.Fatalf("at start: last_receipt %v, receipts_asked_since %v; want null and 0", e["last_receipt"], e["receipts_asked_since"])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := platform.Dial(ctx, g.SMPPAddr().String(), "platform", "secret", platform.Options{BindType: platform.BindTRX})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	submit := func(regDeliv byte) {
		t.Helper()
		r, err := p.Submit(ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "hi", RegisteredDelivery: regDeliv})
		if err != nil || r.Status != statusOK {
			t.Fatalf("submit answered %+v, %v", r, err)
		}
	}

	smsc.SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{NoReceipt: true} })
	for _, rd := range []byte{1, 1, 3, 0, 2} {
		submit(rd)
	}
	e = carrierStatusJSON(t, g, "mobile")
	if e["last_receipt"] != nil || e["receipts_asked_since"] != float64(3) {
		t.Errorf("no receipt yet: last_receipt %v, receipts_asked_since %v; want null and 3", e["last_receipt"], e["receipts_asked_since"])
	}
	if n := asked() - asked0; n != 3 {
		t.Errorf("spareline_receipts_requested_total{carrier=\"mobile\"} rose by %v, want 3", n)
	}
	_, _, page := httpGet(t, g, "GET", "/status")
	if want := "receipts: none since start; 3 accepted asking for one since"; !strings.Contains(string(page), want) {
		t.Errorf("/status lacks %q", want)
	}

	smsc.SetBehaviour(func(smscsim.Message, int) smscsim.Reply { return smscsim.Reply{ReceiptStat: "DELIVRD"} })
	before := time.Now()
	submit(1)
	select {
	case <-p.Receipts():
	case <-ctx.Done():
		t.Fatal("no receipt reached the platform")
	}
	e = carrierStatusJSON(t, g, "mobile")
	last, _ := e["last_receipt"].(string)
	if at, err := time.Parse(time.RFC3339Nano, last); err != nil || at.Before(before) {
		t.Errorf("last_receipt %q (%v), want the receipt's time, after %s", last, err, before)
	}
	if e["receipts_asked_since"] != float64(0) {
		t.Errorf("receipts_asked_since %v after the receipt, want 0", e["receipts_asked_since"])
	}
	_, _, page = httpGet(t, g, "GET", "/status")
	if !strings.Contains(string(page), "receipts: last ") {
		t.Error("/status does not show the last receipt's time")
	}
}
