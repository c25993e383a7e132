package proxy

import (
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spareline/spareline/modem"
)

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"join": func(s []string) string { return strings.Join(s, ", ") },
	"pct":  func(f float64) float64 { return 100 * f },
	// when is a time of day today, with its date otherwise (a carrier down
	// since yesterday must not read as down since this afternoon).
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		if y, m, d := t.Date(); y == time.Now().Year() && m == time.Now().Month() && d == time.Now().Day() {
			return t.Format("15:04:05")
		}
		return t.Format("2006-01-02 15:04:05")
	},
	// whenp is when for a time that may be unknown (nil): the store
	// section's.
	"whenp": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		if y, m, d := t.Date(); y == time.Now().Year() && m == time.Now().Month() && d == time.Now().Day() {
			return t.Format("15:04:05")
		}
		return t.Format("2006-01-02 15:04:05")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return time.Since(t).Round(time.Second).String()
	},
}).Parse(statusHTML))

// serveStatus renders /status: a self-refreshing page with no external
// assets, readable on a phone.
func (g *Gateway) serveStatus(w http.ResponseWriter, r *http.Request) {
	// One bound for the page's store reads and its lookup: the page
	// answers within about statusStoreWait whatever the store does.
	ctx, cancel := context.WithTimeout(r.Context(), statusStoreWait)
	defer cancel()
	r = r.WithContext(ctx)
	st := g.Snapshot(ctx)
	var mods []modem.ModemStatus
	if g.Pool != nil {
		mods = g.Pool.Status()
	}
	age := ""
	if st.Queue.Oldest != nil {
		age = time.Since(*st.Queue.Oldest).Round(time.Second).String()
	}
	find := g.findOnPage(r, st)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	depth := 0
	if st.Queue.Depth != nil {
		depth = *st.Queue.Depth
	}
	_ = statusTmpl.Execute(w, map[string]any{"S": st, "Modems": mods, "Now": time.Now().Format(time.RFC3339), "OldestAge": age,
		"Find": find, "QueueKnown": st.Queue.Depth != nil, "QueueDepth": depth, "HeldKnown": st.ReceiptsHeld != nil})
}

// findView is the status page's "Find a message" section.
type findView struct {
	Asked    bool         // the page was asked a lookup (its forms were sent)
	Q        MessageQuery // what was asked, to fill the forms again
	Carriers []string     // the carrier form's choices
	Messages []MessageView
	Error    string // why nothing is listed: a bad query, none found, the store failing
	JSON     string // the same lookup at /message
}

// findOnPage runs the lookup the page's forms ask (/status?id=... or
// /status?carrier=...&carrier_id=...) as /message does; the page shows it
// on every reload, so a message's state is followed live.
func (g *Gateway) findOnPage(r *http.Request, st Status) findView {
	f := findView{}
	for _, c := range st.Carriers {
		f.Carriers = append(f.Carriers, c.Name)
	}
	v := r.URL.Query()
	if !v.Has("id") && !v.Has("carrier") && !v.Has("carrier_id") {
		return f
	}
	f.Asked = true
	f.Q = MessageQuery{ID: strings.TrimSpace(v.Get("id")), Carrier: strings.TrimSpace(v.Get("carrier")),
		CarrierID: strings.TrimSpace(v.Get("carrier_id"))}
	q, err := parseMessageQuery(r.URL.RawQuery)
	if err != nil {
		f.Error = err.Error()
		return f
	}
	jq := url.Values{}
	if q.ID != "" {
		jq.Set("id", q.ID)
	} else {
		jq.Set("carrier", q.Carrier)
		jq.Set("carrier_id", q.CarrierID)
	}
	f.JSON = "/message?" + jq.Encode()
	f.Messages, _, f.Error = g.lookup(r.Context(), q)
	return f
}
