package proxy

import (
	_ "embed"
	"html/template"
	"net/http"
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
	st := g.Snapshot(r.Context())
	var mods []modem.ModemStatus
	if g.Pool != nil {
		mods = g.Pool.Status()
	}
	age := ""
	if !st.Queue.Oldest.IsZero() {
		age = time.Since(st.Queue.Oldest).Round(time.Second).String()
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusTmpl.Execute(w, map[string]any{"S": st, "Modems": mods, "Now": time.Now().Format(time.RFC3339), "OldestAge": age})
}
