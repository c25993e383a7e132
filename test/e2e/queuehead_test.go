package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
)

// An operator looking at a growing modem queue sees what is in it: the
// oldest messages first, whose account, which carrier failed them and why,
// which are being sent and which wait, with the destination masked (the
// status page has no authentication). Every carrier refuses binds; one slow
// modem and its three queue workers (modems + 2) hold the three oldest.
func TestStatusListsTheModemQueue(t *testing.T) {
	sctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sim, err := modemsim.Start(sctx, modemsim.Options{Name: "slowq", SendDelay: 3 * time.Second, ReportDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	modems := fmt.Sprintf("modems:\n  - { name: slowq, device: %q, max_per_minute: 100000 }\n", sim.Path())
	e := startEnv(t, "bolt", withYAML(modems), withYAML(failoverYAML), withHTTP())
	for _, s := range e.smscs {
		s.RefuseBinds(0x0D) // ESME_RBINDFAIL
		s.CloseAll()
	}
	pollUntil(t, e, "every carrier down and the modem up", func() bool {
		for _, cs := range carrierSetups {
			if e.gw.Health.State(cs.name) != proxy.StateDown {
				return false
			}
		}
		st := e.gw.Pool.Status()
		return len(st) == 1 && st[0].State == modem.StateUp
	})

	c := e.dial("platform", "secret", platform.BindTRX)
	const n = 6
	var ids []string
	for i := range n {
		r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprint("queued ", i)})
		if err != nil || r.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, r.Status)
		}
		ids = append(ids, r.MessageID)
	}
	var head []proxy.QueuedMessage
	pollUntil(t, e, "six queued, the three oldest being sent", func() bool {
		head = e.gw.Snapshot(e.ctx).Queue.Head
		sending := 0
		for _, q := range head {
			if q.Sending {
				sending++
			}
		}
		return len(head) == n && sending == 3
	})
	for i, q := range head {
		if q.ID != ids[i] {
			t.Errorf("head[%d] is %s, want %s (oldest first)", i, q.ID, ids[i])
		}
		if q.Sending != (i < 3) {
			t.Errorf("head[%d] sending %v", i, q.Sending)
		}
		if q.Account != "platform" || q.Carrier != "mobile" || q.To != "138****8000" || q.Note != "down" {
			t.Errorf("head[%d] = %+v, want account platform, carrier mobile, to 138****8000, note down", i, q)
		}
	}

	// The page and /status.json show the same, never the whole number.
	get := func(path string) string {
		_, b := httpGet(t, e, path)
		return string(b)
	}
	page := get("/status")
	for _, want := range []string{ids[0], ids[5], "138****8000", "sending", "waiting"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	var js struct {
		Queue struct {
			Depth  int                   `json:"depth"`
			Oldest *time.Time            `json:"oldest"`
			Head   []proxy.QueuedMessage `json:"head"`
		} `json:"modem_queue"`
	}
	raw := get("/status.json")
	if err := json.Unmarshal([]byte(raw), &js); err != nil {
		t.Fatalf("/status.json: %v", err)
	}
	if js.Queue.Depth != n || len(js.Queue.Head) != n || js.Queue.Head[0].ID != ids[0] {
		t.Errorf("/status.json modem_queue: depth %d, head %+v", js.Queue.Depth, js.Queue.Head)
	}
	if o := js.Queue.Oldest; o == nil || o.IsZero() || time.Since(*o) > time.Minute {
		t.Errorf("/status.json modem_queue.oldest = %v with %d waiting, want when the first was queued", o, js.Queue.Depth)
	}
	if strings.Contains(page+raw, "13800138000") {
		t.Error("the status page or /status.json shows a whole destination number")
	}
}
