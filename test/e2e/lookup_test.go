package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/redisserver"
)

// An operator told "message X never arrived" looks X up over HTTP: a
// message sent through a real SMPP session to each of the three carriers
// (receipt ids as in submit_sm_resp, in hex, in decimal) is found by our id
// and by the carrier's id in both of the carrier's forms, done with its
// receipt's outcome, the destination masked and the text nowhere. With
// Redis down the lookup is 503 with the store's error, not the Redis URL.
func TestLookupMessageOverHTTPAfterItsReceipt(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		var rs *redisserver.Server
		opts := []envOption{withHTTP()}
		if kind == "redis" {
			rs = redisserver.Start(t)
			opts = append(opts, func(o *envOpts) { o.redis = rs })
		}
		e := startEnv(t, kind, opts...)
		c := e.dial("platform", "secret", platform.BindTRX)
		get := func(path string) (int, []byte) { return httpGet(t, e, path) }
		type answer struct {
			Messages []proxy.MessageView `json:"messages"`
			Error    string              `json:"error"`
		}
		lookup := func(q url.Values) (int, answer, []byte) {
			t.Helper()
			status, raw := get("/message?" + q.Encode())
			var a answer
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatalf("/message?%s: %v in %q", q.Encode(), err, raw)
			}
			return status, a, raw
		}

		const text = "where is my lookup message"
		ours := map[string]string{} // carrier -> our id
		for _, cs := range carrierSetups {
			res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: cs.sample, Text: text, RegisteredDelivery: 1})
			if err != nil || res.Status != 0 {
				t.Fatalf("submit to %s: %v 0x%X", cs.name, err, res.Status)
			}
			ours[cs.name] = res.MessageID
		}
		// Each receipt reaches the platform after its message is finished.
		got := map[string]bool{}
		for range carrierSetups {
			r := e.nextReceipt(c)
			if r.Stat != "DELIVRD" {
				t.Fatalf("receipt %+v", r.ReceiptFields)
			}
			got[r.ID] = true
		}

		var raws []byte
		for _, cs := range carrierSetups {
			id := ours[cs.name]
			if !got[id] {
				t.Fatalf("no receipt for %s's message %s", cs.name, id)
			}
			status, a, raw := lookup(url.Values{"id": {id}})
			raws = append(raws, raw...)
			masked := cs.sample[:3] + "****" + cs.sample[7:]
			if status != http.StatusOK || len(a.Messages) != 1 {
				t.Fatalf("%s: /message?id=%s: %d %s", cs.name, id, status, raw)
			}
			m := a.Messages[0]
			if m.ID != id || m.Account != "platform" || m.Carrier != cs.name || m.To != masked || m.Source != "10690001" ||
				m.State != "done" || m.FinalStat != "DELIVRD" || m.Attempts != 1 || m.RegisteredDelivery != 1 || m.Done.IsZero() {
				t.Errorf("%s: %+v, want done with DELIVRD, to %s", cs.name, m, masked)
			}
			// The carrier's support may quote the id of its submit_sm_resp or of its receipt.
			var sent []string
			for _, r := range e.smscs[cs.name].Received() {
				sent = append(sent, r.ID, r.ReceiptID)
			}
			if len(sent) != 2 {
				t.Fatalf("%s got %d submits, want 1", cs.name, len(sent)/2)
			}
			for _, cid := range sent {
				status, a, raw := lookup(url.Values{"carrier": {cs.name}, "carrier_id": {cid}})
				raws = append(raws, raw...)
				if status != http.StatusOK || len(a.Messages) != 1 || a.Messages[0].ID != id || a.Messages[0].State != "done" {
					t.Errorf("%s carrier id %s: %d %s, want %s", cs.name, cid, status, raw, id)
				}
			}
		}
		if strings.Contains(string(raws), text) || strings.Contains(string(raws), "13800138000") {
			t.Errorf("/message shows the text or a whole number: %s", raws)
		}
		// The status page's form asks the same.
		status, page := get("/status?id=" + ours["mobile"])
		if status != http.StatusOK || !strings.Contains(string(page), "138****8000") || !strings.Contains(string(page), "DELIVRD") ||
			strings.Contains(string(page), text) {
			t.Errorf("/status?id=%s: %d, want the message done with DELIVRD, masked, without its text", ours["mobile"], status)
		}

		if rs == nil {
			return
		}
		rs.Stop()
		status, a, raw := lookup(url.Values{"id": {ours["mobile"]}})
		if status != http.StatusServiceUnavailable || !strings.HasPrefix(a.Error, "store: ") || strings.Contains(string(raw), rs.URL()) {
			t.Errorf("with Redis down: %d %s, want 503 with the store's error and not its URL", status, raw)
		}
		rs.Restart()
	})
}

// A person on a phone finds a message with the status page's forms: types
// the carrier's id, and the page does not reload under their fingers
// (without scripts it would, every 3 s), then sends it and reads the
// message in a table that fits the phone; then the same by our id.
func TestStatusPageFindsAMessageInBrowser(t *testing.T) {
	wd := startBrowser(t)
	e := startEnv(t, "bolt", withHTTP())
	c := e.dial("platform", "secret", platform.BindTRX)
	const text = "browser lookup text"
	res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: text, RegisteredDelivery: 1})
	if err != nil || res.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, res.Status)
	}
	if r := e.nextReceipt(c); r.ID != res.MessageID {
		t.Fatalf("receipt for %s, want %s", r.ID, res.MessageID)
	}
	sent := e.smscs["mobile"].Received()
	if len(sent) != 1 {
		t.Fatalf("mobile got %d submits", len(sent))
	}

	wd.navigate(e.ctx, fmt.Sprintf("http://%s/status", e.gw.HTTPAddr()))
	// mobile is the carrier form's first choice, so chosen already.
	wd.typeInto(e.ctx, `input[name="carrier_id"]`, sent[0].ID)
	typed := wd.pageClock(e.ctx)
	for {
		now := wd.pageClock(e.ctx)
		if now.Origin != typed.Origin || now.Value != sent[0].ID {
			t.Fatalf("the page reloaded while someone typed in the find form (%+v, then %+v)", typed, now)
		}
		if now.Now-typed.Now > 4500 { // past a reload's 3 s
			break
		}
		select {
		case <-e.ctx.Done():
			t.Fatal("the page's clock never moved on")
		case <-time.After(200 * time.Millisecond):
		}
	}
	wd.typeInto(e.ctx, `input[name="carrier_id"]`, "\uE007") // Enter
	p := wd.awaitFound(e, "carrier_id=")
	for _, want := range []string{res.MessageID, "to\t138****8000", "state\tdone: DELIVRD (err 000)", "carrier\tmobile, its id " + sent[0].ID} {
		if !strings.Contains(p.Text, want) {
			t.Errorf("the found message lacks %q; the page reads:\n%s", want, p.Text)
		}
	}
	if strings.Contains(p.Text, text) || strings.Contains(p.Text, "13800138000") {
		t.Errorf("the page shows the text or the whole number:\n%s", p.Text)
	}
	if p.ScrollWidth > p.InnerWidth || len(p.Overflowing) > 0 {
		t.Errorf("the found message overflows the %d px phone: page %d px, %v", p.InnerWidth, p.ScrollWidth, p.Overflowing)
	}

	wd.typeInto(e.ctx, `input[name="id"]`, res.MessageID+"\uE007")
	p = wd.awaitFound(e, "?id=")
	if !strings.Contains(p.Text, res.MessageID) || !strings.Contains(p.Text, "DELIVRD") {
		t.Errorf("by our id, the page reads:\n%s", p.Text)
	}
}

// typeInto types text into the element css names, again if a reload of
// the page took the element away meanwhile.
func (wd *webDriver) typeInto(ctx context.Context, css, text string) {
	wd.t.Helper()
	for {
		raw, err := wd.cmd(ctx, "POST", "/element", map[string]any{"using": "css selector", "value": css})
		if err == nil {
			var el map[string]string
			if err = json.Unmarshal(raw, &el); err == nil {
				for _, id := range el { // {"element-6066-11e4-a52f-4a6c4f8d6b1a": id}
					if _, err = wd.cmd(ctx, "POST", "/element/"+id+"/value", map[string]any{"text": text}); err == nil {
						return
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			wd.t.Fatalf("typing into %s: %v", css, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pageClock is the page's load (its time origin), its clock and the carrier
// id typed in it.
type pageClock struct {
	Origin float64 `json:"origin"`
	Now    float64 `json:"now"`
	Value  string  `json:"value"`
}

func (wd *webDriver) pageClock(ctx context.Context) pageClock {
	wd.t.Helper()
	raw, err := wd.cmd(ctx, "POST", "/execute/sync", map[string]any{"args": []any{}, "script": `return {origin: performance.timeOrigin,
now: performance.now(), value: document.querySelector('input[name="carrier_id"]').value};`})
	var c pageClock
	if err == nil {
		err = json.Unmarshal(raw, &c)
	}
	if err != nil {
		wd.t.Fatalf("reading the page's clock: %v", err)
	}
	return c
}

// awaitFound waits for the page a find form sent (its URL has query) to
// show its lookup.
func (wd *webDriver) awaitFound(e *env, query string) statusPage {
	wd.t.Helper()
	for {
		p := wd.page(e.ctx)
		if strings.Contains(p.URL, query) && strings.Contains(p.Text, "record(s)") {
			return p
		}
		select {
		case <-e.ctx.Done():
			wd.t.Fatalf("the lookup never showed; the page reads:\n%s", p.Text)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
