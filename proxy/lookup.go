package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spareline/spareline/store"
)

// Looking up one message: GET /message, and the status page's "Find a
// message" form (statuspage.go), for the operator who hears "message X never
// arrived" (X the message_id the platform got from us) or whose carrier's
// support quotes its own message id. Both show the message records as the
// store holds them, without the text, the destination masked (the HTTP
// endpoint has no authentication). Records live for store.ttl after their
// last write.

const (
	// lookupMaxLen bounds each query value in octets: no id of ours, no
	// SMPP message_id (64 octets and its NUL) and no carrier name is longer.
	lookupMaxLen = 64
	// lookupPartGap is how many missing destinations in a row end the
	// probe of a submit_multi's destinations (ID-1, ID-2, ...): a
	// destination refused before a carrier saw it (no route for its
	// number, a DL name) has no record, so a gap is normal, but an id that
	// is no submit_multi's must not cost 253 reads.
	lookupPartGap = 16
	// lookupTimeout bounds the store reads of one lookup, as for /readyz.
	lookupTimeout = 2 * time.Second
	// maxLookups bounds the lookups running at once: one costs up to 255
	// store reads (a submit_multi's destinations), and the endpoint has no
	// login; the next one is answered 503 at once.
	maxLookups = 4
)

// MessageView is one message record as /message and the status page show
// it: where it is and what happened to it, never its text. To is masked
// (maskNumber), and Source too when it looks like a phone number (11
// digits or more); short codes and service numbers are shown as they are.
type MessageView struct {
	ID        string `json:"id"`         // our id; "<group>-<n>" for the n-th destination of a submit_multi
	Account   string `json:"account"`    // the platform account (system_id)
	Carrier   string `json:"carrier"`    // the routed carrier; "" = no carrier for the number (modem pool)
	CarrierID string `json:"carrier_id"` // the carrier's id as the index keeps it (see canonicalCarrierID); "" before it accepted
	To        string `json:"to"`         // destination, middle digits masked
	Source    string `json:"source"`     // source_addr, masked when it is a phone number
	// State is store.State's word: accepted, carrier, sent, queued, modem,
	// modemsent, done, failed.
	State              string    `json:"state"`
	Attempts           int       `json:"attempts"`         // sends so far, carrier and modem
	Created            time.Time `json:"created"`          // when the platform submitted it
	Expires            time.Time `json:"expires,omitzero"` // validity end; left out when none
	Note               string    `json:"note"`             // last error or outcome, for people
	Modem              string    `json:"modem"`            // the modem that sent it
	FinalStat          string    `json:"final_stat"`       // final outcome in receipt words (DELIVRD, UNDELIV...); "" while not final
	FinalErr           string    `json:"final_err"`        // the final receipt's err: code
	Done               time.Time `json:"done,omitzero"`    // when it reached its final state; left out while not final
	Priority           byte      `json:"priority"`         // priority_flag
	RegisteredDelivery byte      `json:"registered_delivery"`
}

// viewMessage is m as MessageView shows it.
func viewMessage(m *store.Message) MessageView {
	return MessageView{ID: m.ID, Account: m.Account, Carrier: m.Carrier, CarrierID: m.CarrierID,
		To: maskNumber(m.Dest), Source: maskSource(m.Source), State: string(m.State), Attempts: m.Attempts,
		Created: m.Created, Expires: m.Expires, Note: m.Note, Modem: m.Modem, FinalStat: m.FinalStat,
		FinalErr: m.FinalErr, Done: m.Done, Priority: m.Priority, RegisteredDelivery: m.RegDeliv}
}

// maskSource masks a source_addr that looks like a person's phone number
// (11 digits or more, a leading + allowed); a short code, a service number
// or an alphanumeric sender is no one's private number and is kept.
func maskSource(s string) string {
	if d := strings.TrimPrefix(s, "+"); len(d) >= 11 && isDigits(d) {
		return maskNumber(s)
	}
	return s
}

// MessageQuery is what /message looks up: our id, or a carrier's name and
// that carrier's id for the message.
type MessageQuery struct {
	ID        string // ours: a message, a submit_multi (with its destinations) or one destination ("<id>-<n>")
	Carrier   string // a configured carrier's name, with
	CarrierID string // that carrier's message id, as its submit_sm_resp or its receipt wrote it
}

// Empty reports whether nothing was asked.
func (q MessageQuery) Empty() bool { return q.ID == "" && q.Carrier == "" && q.CarrierID == "" }

// lookupError is a lookup that has an HTTP answer other than 503: a
// malformed query (400), an unknown carrier (400), nothing found (404).
type lookupError struct {
	status int
	msg    string
}

func (e *lookupError) Error() string { return e.msg }

func badLookup(format string, args ...any) error {
	return &lookupError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// parseMessageQuery reads id, or carrier and carrier_id, from a query
// string. Values are trimmed (ids pasted from a ticket bring spaces); an
// empty value counts as absent.
func parseMessageQuery(raw string) (MessageQuery, error) {
	v, err := url.ParseQuery(raw)
	if err != nil {
		return MessageQuery{}, badLookup("malformed query: %v", err)
	}
	var q MessageQuery
	for _, f := range []struct {
		key string
		to  *string
	}{{"id", &q.ID}, {"carrier", &q.Carrier}, {"carrier_id", &q.CarrierID}} {
		vals := v[f.key]
		if len(vals) > 1 {
			return MessageQuery{}, badLookup("%s given %d times: give it once", f.key, len(vals))
		}
		if len(vals) == 1 {
			*f.to = strings.TrimSpace(vals[0])
		}
		if len(*f.to) > lookupMaxLen {
			return MessageQuery{}, badLookup("%s is %d octets long: at most %d", f.key, len(*f.to), lookupMaxLen)
		}
	}
	switch {
	case q.ID != "" && (q.Carrier != "" || q.CarrierID != ""):
		return MessageQuery{}, badLookup("give either id, or carrier and carrier_id, not both")
	case q.ID != "":
	case q.Carrier == "" && q.CarrierID == "":
		return MessageQuery{}, badLookup("give id=<our message id>, or carrier=<name>&carrier_id=<the carrier's message id>")
	case q.Carrier == "":
		return MessageQuery{}, badLookup("carrier_id needs carrier=<name>: carriers' ids collide")
	case q.CarrierID == "":
		return MessageQuery{}, badLookup("carrier needs carrier_id=<the carrier's message id>")
	}
	return q, nil
}

// LookupMessages finds the records q names, oldest id first: by id, the
// message itself, and for a submit_multi's id also its destinations' records
// (ID-1, ID-2, ... up to the 254th destination; the probe stops at
// lookupPartGap missing in a row, so destinations after that many refused
// ones in a row are not listed); by an id with "-<n>", that destination
// only; by carrier id, the one message the carrier's id is linked to. An
// error is a *lookupError (nothing found, an unknown carrier) or the
// store's.
func (g *Gateway) LookupMessages(ctx context.Context, q MessageQuery) ([]MessageView, error) {
	var found []*store.Message
	var err error
	if q.ID != "" {
		found, err = g.messagesByID(ctx, q.ID)
	} else {
		found, err = g.messageByCarrierID(ctx, q.Carrier, q.CarrierID)
	}
	if err != nil {
		return nil, err
	}
	out := make([]MessageView, 0, len(found))
	for _, m := range found {
		out = append(out, viewMessage(m))
	}
	return out, nil
}

func (g *Gateway) messagesByID(ctx context.Context, id string) ([]*store.Message, error) {
	var found []*store.Message
	m, err := g.Store.GetMessage(ctx, id)
	switch {
	case err == nil:
		found = append(found, m)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	// A submit_multi's destinations: only an id of ours that is not itself
	// a destination's. The group's own record may be missing (its first
	// destination refused) while later ones exist.
	if _, ours := store.TimeOfID(id); ours && platformID(id) == id {
		// Read lookupPartGap destinations at a time (one store read each).
		missing := 0
		for from := 1; from < maxMultiDests && missing < lookupPartGap; from += lookupPartGap {
			ids := make([]string, 0, lookupPartGap)
			for i := from; i < min(from+lookupPartGap, maxMultiDests); i++ {
				ids = append(ids, partID(id, i))
			}
			ms, err := g.Store.GetMessages(ctx, ids)
			if err != nil {
				return nil, err
			}
			for _, m := range ms {
				if missing >= lookupPartGap {
					break
				}
				if m == nil {
					missing++
					continue
				}
				found, missing = append(found, m), 0
			}
		}
	}
	if len(found) == 0 {
		return nil, &lookupError{status: http.StatusNotFound, msg: fmt.Sprintf("no message with id %s (never accepted, or older than store.ttl)", id)}
	}
	return found, nil
}

// messageByCarrierID resolves a carrier's id through the carrier id index,
// with the carrier's receipt_id normalisation: first as its
// submit_sm_resp writes ids (what its support usually quotes), then as its
// receipts write them. With receipt_id hex, an id that reads both ways
// ("1000") is taken as the submit_sm_resp's decimal first.
func (g *Gateway) messageByCarrierID(ctx context.Context, carrier, carrierID string) ([]*store.Message, error) {
	c := g.Carrier(carrier)
	if c == nil {
		return nil, badLookup("unknown carrier %q: the configured carriers are %s", carrier, strings.Join(g.carrierNames(), ", "))
	}
	mode := c.Config().ReceiptID
	keys := []string{canonicalCarrierID(mode, carrierID, false)}
	for _, k := range []string{canonicalCarrierID(mode, carrierID, true), verbatimCarrierID(mode, carrierID, false)} {
		if !slices.Contains(keys, k) {
			keys = append(keys, k) // as its receipts write it; as links before hex ids were folded
		}
	}
	for _, k := range keys {
		m, err := g.Store.FindByCarrierID(ctx, carrier, k)
		switch {
		case err == nil:
			return []*store.Message{m}, nil
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
	}
	return nil, &lookupError{status: http.StatusNotFound, msg: fmt.Sprintf("no message of carrier %s with carrier id %s (looked up as %s; never accepted by it, or older than store.ttl)",
		carrier, carrierID, strings.Join(keys, " and "))}
}

// carrierNames are the configured carriers, in config order.
func (g *Gateway) carrierNames() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, 0, len(g.cfg.Carriers))
	for _, cc := range g.cfg.Carriers {
		names = append(names, cc.Name)
	}
	return names
}

// lookup runs LookupMessages within lookupTimeout: the
// records, or the HTTP status and the text to say.
func (g *Gateway) lookup(ctx context.Context, q MessageQuery) ([]MessageView, int, string) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	// On a goroutine of its own (boundedStoreCall, storestate.go): the
	// answer comes at lookupTimeout whatever the store does (a Redis call
	// ends at its deadline; a bbolt read on a stalled disk would not). The
	// lookup keeps its slot until it ends.
	type result struct {
		list []MessageView
		err  error
	}
	res, berr := boundedStoreCall(ctx, g.lookups, func(ctx context.Context) result {
		list, err := g.LookupMessages(ctx, q)
		return result{list, err}
	})
	switch {
	case errors.Is(berr, errStoreCallsBusy):
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("%d lookups are running already; try again", maxLookups)
	case berr != nil:
		return nil, http.StatusServiceUnavailable, g.storeErrorText(fmt.Errorf("store: no answer in time (%w)", berr))
	}
	list, err := res.list, res.err
	if err == nil {
		return list, http.StatusOK, ""
	}
	var le *lookupError
	if errors.As(err, &le) {
		return nil, le.status, le.msg
	}
	return nil, http.StatusServiceUnavailable, g.storeErrorText(err)
}

// storeErrorText is a store error as /message says it. Store errors carry
// no password (go-redis's never quote the URL, and the store's own URL
// errors hide it); the configured store.redis URL and its secrets are cut
// out all the same, should an error ever quote them.
func (g *Gateway) storeErrorText(err error) string {
	text := err.Error()
	if !strings.HasPrefix(text, "store") {
		text = "store: " + text
	}
	g.mu.Lock()
	redis := g.cfg.Store.Redis
	g.mu.Unlock()
	if redis == "" {
		return text
	}
	text = strings.ReplaceAll(text, redis, "<store.redis>")
	for _, s := range urlSecrets(redis) {
		text = strings.ReplaceAll(text, s, "<secret>")
	}
	return text
}

// urlSecrets are the passwords in a store.redis URL: the userinfo's and
// sentinel_password's. It parses by hand: url.Parse refuses the Sentinel
// and Cluster forms' lists of hosts.
func urlSecrets(u string) []string {
	var out []string
	rest := u
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	hostPart, query, _ := strings.Cut(rest, "?")
	hostPart, _, _ = strings.Cut(hostPart, "/")
	if at := strings.LastIndexByte(hostPart, '@'); at >= 0 {
		if _, pw, ok := strings.Cut(hostPart[:at], ":"); ok && pw != "" {
			out = append(out, pw)
			if dec, err := url.PathUnescape(pw); err == nil && dec != pw {
				out = append(out, dec)
			}
		}
	}
	if v, err := url.ParseQuery(query); err == nil {
		if pw := v.Get("sentinel_password"); pw != "" {
			out = append(out, pw)
		}
	}
	return out
}

// messageResponse is /message's answer.
type messageResponse struct {
	Messages []MessageView `json:"messages"`
	Error    string        `json:"error,omitempty"`
}

// serveMessage answers GET /message?id=ID and
// GET /message?carrier=NAME&carrier_id=CID with {"messages":[...]}: 404 when
// none is found, 400 for a malformed query or an unknown carrier, 503 when
// the store fails, each with "error".
func (g *Gateway) serveMessage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	answer := func(status int, list []MessageView, msg string) {
		if list == nil {
			list = []MessageView{}
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(messageResponse{Messages: list, Error: msg})
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		answer(http.StatusMethodNotAllowed, nil, "method "+r.Method+" not allowed: GET or HEAD")
		return
	}
	q, err := parseMessageQuery(r.URL.RawQuery)
	if err != nil {
		answer(http.StatusBadRequest, nil, err.Error())
		return
	}
	list, status, msg := g.lookup(r.Context(), q)
	answer(status, list, msg)
}
