package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/smscsim"
)

// lookupEnv is a started gateway with two carriers on simulators, its HTTP
// endpoint on loopback and a platform bound as a transceiver: "mobile"
// (receipt_id as_is; its receipts pad the id with zeros, "0000001000" for a
// submit_sm_resp of "1000") and "unicom" (receipt_id hex: decimal in
// submit_sm_resp, hex in receipts). No modems: a number of the preset's
// telecom segments has no route and is refused, with no record.
type lookupEnv struct {
	t        *testing.T
	g        *Gateway
	smscs    map[string]*smscsim.SMSC
	p        *peer
	seq      uint32
	receipts int // receipts (deliver_sm) the platform got and answered
}

func startLookupEnv(t *testing.T) *lookupEnv {
	t.Helper()
	e := &lookupEnv{t: t, smscs: map[string]*smscsim.SMSC{}}
	for name, o := range map[string]smscsim.Options{
		"mobile": {IDFormat: smscsim.IDDecimal, ReceiptIDFormat: smscsim.ReceiptPadded, FirstID: 1000},
		"unicom": {IDFormat: smscsim.IDDecimal, ReceiptIDFormat: smscsim.ReceiptHex, FirstID: 900000},
	} {
		o.Name = name
		s, err := smscsim.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		e.smscs[name] = s
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers:
  - { name: mobile, address: %q, system_id: ent01, password: pw, binds: 1, receipt_id: as_is }
  - { name: unicom, address: %q, system_id: ent01, password: pw, binds: 1, receipt_id: hex }
routing: { country_code: "86", preset: cn }
`, t.TempDir(), e.smscs["mobile"].Addr(), e.smscs["unicom"].Addr())), "lookup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e.g = startTestGateway(t, cfg, GatewayOptions{}, "mobile", "unicom")
	conn, err := net.Dial("tcp", e.g.SMPPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e.p = &peer{t: t, conn: conn}
	if f := e.request(cmdBindTransceiver, bindBody("platform", "secret")); f.Status != statusOK {
		t.Fatalf("bind answered 0x%X", f.Status)
	}
	return e
}

// startTestGateway starts a gateway and waits for the carriers named up
// (health's change events).
func startTestGateway(t *testing.T, cfg *config.Config, opts GatewayOptions, up ...string) *Gateway {
	t.Helper()
	g, err := NewGateway(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ups := make(chan string, 16)
	g.Health.OnChange = func(carrier string, _, to CarrierState, _ string) {
		if to == StateUp {
			ups <- carrier
		}
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	for len(up) > 0 {
		select {
		case c := <-ups:
			up = slices.DeleteFunc(up, func(n string) bool { return n == c })
		case <-time.After(hangGuard):
			t.Fatalf("carriers %v never came up", up)
		}
	}
	return g
}

// handle answers what the gateway sends unasked: receipts and enquire_links.
func (e *lookupEnv) handle(f Frame) bool {
	switch f.ID {
	case cmdDeliverSM:
		e.p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
		e.receipts++
		return true
	case cmdEnquireLink:
		e.p.write(cmdEnquireLinkResp, statusOK, f.Seq, nil)
		return true
	}
	return false
}

// request sends a request and returns its answer.
func (e *lookupEnv) request(cmd uint32, body []byte) Frame {
	e.t.Helper()
	e.seq++
	e.p.write(cmd, 0, e.seq, body)
	for {
		f := e.p.read()
		if e.handle(f) {
			continue
		}
		if f.ID != cmd|cmdRespBit || f.Seq != e.seq {
			e.t.Fatalf("got %+v waiting for the answer to 0x%X seq %d", f.Header, cmd, e.seq)
		}
		return f
	}
}

// submit sends a submit_sm and returns our message id.
func (e *lookupEnv) submit(src, dest, text string) string {
	e.t.Helper()
	sm := pdu.NewSubmitSM().(*pdu.SubmitSM)
	sm.SourceAddr = pdu.NewAddressWithTonNpi(1, 1)
	sm.DestAddr = pdu.NewAddressWithTonNpi(1, 1)
	if err := sm.SourceAddr.SetAddress(src); err != nil {
		e.t.Fatal(err)
	}
	if err := sm.DestAddr.SetAddress(dest); err != nil {
		e.t.Fatal(err)
	}
	sm.RegisteredDelivery, sm.PriorityFlag = 1, 1
	if err := sm.Message.SetMessageWithEncoding(text, data.GSM7BIT); err != nil {
		e.t.Fatal(err)
	}
	b := pdu.NewBuffer(nil)
	sm.Marshal(b)
	f := e.request(cmdSubmitSM, b.Bytes()[headerLen:])
	id, _, _ := bytes.Cut(f.Body, []byte{0})
	if f.Status != statusOK || len(id) == 0 {
		e.t.Fatalf("submit_sm to %s answered 0x%X id %q", dest, f.Status, id)
	}
	return string(id)
}

// awaitReceipts reads until the platform has had n receipts.
func (e *lookupEnv) awaitReceipts(n int) {
	e.t.Helper()
	for e.receipts < n {
		if f := e.p.read(); !e.handle(f) {
			e.t.Fatalf("unexpected %+v waiting for receipts", f.Header)
		}
	}
}

// lookupAnswer is /message's answer, with its raw bytes.
type lookupAnswer struct {
	status   int
	header   http.Header
	raw      []byte
	Messages []MessageView `json:"messages"`
	Error    string        `json:"error"`
}

// httpGet asks the gateway's HTTP endpoint.
func httpGet(t *testing.T, g *Gateway, method, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.HTTPAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func lookup(t *testing.T, g *Gateway, query string) lookupAnswer {
	t.Helper()
	var a lookupAnswer
	a.status, a.header, a.raw = httpGet(t, g, "GET", "/message?"+query)
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/message?%s: Content-Type %q", query, ct)
	}
	if err := json.Unmarshal(a.raw, &a); err != nil {
		t.Fatalf("/message?%s: %v in %q", query, err, a.raw)
	}
	if a.Messages == nil {
		t.Errorf("/message?%s: messages is not a list: %s", query, a.raw)
	}
	return a
}

// ids are the ids of the messages in a.
func (a lookupAnswer) ids() []string {
	var out []string
	for _, m := range a.Messages {
		out = append(out, m.ID)
	}
	return out
}

// A message relayed to a carrier and finished by its receipt is found by our
// id and by the carrier's id, in the form its submit_sm_resp gave and in the
// form its receipt wrote: with receipt_id as_is, a receipt that pads the id
// with zeros; with receipt_id hex, a receipt in hex (either case). The
// destination is masked, a phone-number source too, a short code is not;
// the text is never in the answer.
func TestLookupRelayedMessageByOurIDAndCarrierID(t *testing.T) {
	e := startLookupEnv(t)
	const textMobile, textUnicom = "lookup secret text one", "lookup secret text two"
	idMobile := e.submit("8613912345678", "13800138000", textMobile)
	idUnicom := e.submit("10690001", "13012345678", textUnicom)
	e.awaitReceipts(2) // the records are finished before their receipts go out

	rm, ru := e.smscs["mobile"].Received(), e.smscs["unicom"].Received()
	if len(rm) != 1 || len(ru) != 1 {
		t.Fatalf("the carriers got %d and %d submits, want 1 each", len(rm), len(ru))
	}
	// The simulators' ids, as this test means them.
	if rm[0].ID != "1000" || rm[0].ReceiptID != "0000001000" || ru[0].ID != "900000" || ru[0].ReceiptID != "DBBA0" {
		t.Fatalf("carrier ids %q/%q and %q/%q", rm[0].ID, rm[0].ReceiptID, ru[0].ID, ru[0].ReceiptID)
	}

	a := lookup(t, e.g, "id="+idMobile)
	if a.status != http.StatusOK || len(a.Messages) != 1 {
		t.Fatalf("by our id: %d %s", a.status, a.raw)
	}
	m := a.Messages[0]
	want := MessageView{ID: idMobile, Account: "platform", Carrier: "mobile", CarrierID: "1000", To: "138****8000",
		Source: "861******5678", State: "done", Attempts: 1, FinalStat: "DELIVRD", FinalErr: "000", Priority: 1,
		RegisteredDelivery: 1, Created: m.Created, Done: m.Done, Note: m.Note}
	if m != want {
		t.Errorf("by our id:\n got %+v\nwant %+v", m, want)
	}
	if m.Created.IsZero() || m.Done.Before(m.Created) || time.Since(m.Created) > time.Minute {
		t.Errorf("created %v, done %v", m.Created, m.Done)
	}
	if !m.Expires.IsZero() || bytes.Contains(a.raw, []byte(`"expires"`)) {
		t.Errorf("a message without validity shows expires: %s", a.raw)
	}
	for _, q := range []string{"carrier=mobile&carrier_id=1000", "carrier=mobile&carrier_id=0000001000",
		"carrier=mobile&carrier_id=+1000+"} {
		if a := lookup(t, e.g, q); a.status != http.StatusOK || !slices.Equal(a.ids(), []string{idMobile}) {
			t.Errorf("%s: %d %s, want %s", q, a.status, a.raw, idMobile)
		}
	}

	u := lookup(t, e.g, "id="+idUnicom)
	if u.status != http.StatusOK || len(u.Messages) != 1 {
		t.Fatalf("unicom by our id: %d %s", u.status, u.raw)
	}
	if m := u.Messages[0]; m.Carrier != "unicom" || m.CarrierID != "900000" || m.Source != "10690001" ||
		m.State != "done" || m.To != "130****5678" {
		t.Errorf("unicom's message: %+v (a short code source is shown as is)", m)
	}
	for _, q := range []string{"carrier=unicom&carrier_id=900000", "carrier=unicom&carrier_id=DBBA0", "carrier=unicom&carrier_id=dbba0"} {
		if a := lookup(t, e.g, q); a.status != http.StatusOK || !slices.Equal(a.ids(), []string{idUnicom}) {
			t.Errorf("%s: %d %s, want %s", q, a.status, a.raw, idUnicom)
		}
	}
	// A carrier's id is the carrier's: mobile's id is not unicom's.
	if a := lookup(t, e.g, "carrier=unicom&carrier_id=1000"); a.status != http.StatusNotFound {
		t.Errorf("mobile's carrier id under unicom: %d %s", a.status, a.raw)
	}

	// Never the text, never the whole numbers, never the raw record.
	var all []byte
	for _, q := range []string{"id=" + idMobile, "id=" + idUnicom, "carrier=unicom&carrier_id=DBBA0"} {
		all = append(all, lookup(t, e.g, q).raw...)
	}
	for _, secret := range []string{textMobile, textUnicom, "secret", "13800138000", "8613912345678", "13012345678", `"body"`} {
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("/message shows %q: %s", secret, all)
		}
	}
}

// multiSubmit sends a submit_multi and returns its id and how many
// destinations it refused.
func (e *lookupEnv) multiSubmit(text string, dests ...string) (string, int) {
	e.t.Helper()
	f := e.request(cmdSubmitMulti, multiBody(e.t, text, dests))
	id, rest, _ := bytes.Cut(f.Body, []byte{0})
	if f.Status != statusOK || len(id) == 0 || len(rest) == 0 {
		e.t.Fatalf("submit_multi answered 0x%X body % x", f.Status, f.Body)
	}
	return string(id), int(rest[0])
}

// A submit_multi's id lists the records of its destinations, in order, the
// refused ones (no route here) missing: the first destination's among
// them, so the id's own record is missing too. A destination's id
// ("<id>-<n>") gives that destination only; a refused one's, 404.
func TestLookupSubmitMultiListsItsDestinations(t *testing.T) {
	e := startLookupEnv(t)
	group, refused := e.multiSubmit("lookup multi text",
		"13312345678", "13800138000", "13312345679", "13012345678") // telecom has no route: refused
	if refused != 2 {
		t.Fatalf("submit_multi refused %d destinations, want the 2 telecom ones", refused)
	}
	e.awaitReceipts(2)

	a := lookup(t, e.g, "id="+group)
	if want := []string{group + "-1", group + "-3"}; a.status != http.StatusOK || !slices.Equal(a.ids(), want) {
		t.Fatalf("submit_multi %s: %d ids %v, want %v: %s", group, a.status, a.ids(), want, a.raw)
	}
	if a.Messages[0].Carrier != "mobile" || a.Messages[0].To != "138****8000" || a.Messages[1].Carrier != "unicom" ||
		a.Messages[1].To != "130****5678" || a.Messages[0].State != "done" || a.Messages[1].State != "done" {
		t.Errorf("destinations %+v", a.Messages)
	}
	if bytes.Contains(a.raw, []byte("lookup multi text")) {
		t.Errorf("the text is shown: %s", a.raw)
	}
	if p := lookup(t, e.g, "id="+group+"-3"); p.status != http.StatusOK || !slices.Equal(p.ids(), []string{group + "-3"}) {
		t.Errorf("one destination: %d %s", p.status, p.raw)
	}
	for _, id := range []string{group, group + "-2"} { // the 1st and the 3rd destination were refused
		if _, err := e.g.Store.GetMessage(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("refused destination %s has a record: %v", id, err)
		}
	}
	if p := lookup(t, e.g, "id="+group+"-2"); p.status != http.StatusNotFound || len(p.Messages) != 0 ||
		!strings.Contains(p.Error, "no message with id "+group+"-2") {
		t.Errorf("a refused destination: %d %s", p.status, p.raw)
	}
}

// lookupGateway is a gateway on a bolt store with carriers that never
// bind (only the store matters), its HTTP endpoint on loopback.
func lookupGateway(t *testing.T, st store.Store, redis string) *Gateway {
	t.Helper()
	storeYAML := fmt.Sprintf("{ path: %q }", t.TempDir())
	if redis != "" {
		storeYAML = fmt.Sprintf("{ redis: %q }", redis)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "127.0.0.1:0" }
store: %s
accounts: [ { system_id: platform, password: secret } ]
carriers:
  - { name: mobile, address: "127.0.0.1:1", system_id: ent01, password: pw }
  - { name: unicom, address: "127.0.0.1:1", system_id: ent01, password: pw, receipt_id: hex }
routing: { country_code: "86", preset: cn }
`, storeYAML)), "lookup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return startTestGateway(t, cfg, GatewayOptions{Store: st})
}

// The probe of a submit_multi's destinations stops after lookupPartGap
// missing in a row (refused destinations have no record): a destination
// after 16 refused ones in a row is not listed, one after 15 is.
func TestLookupSubmitMultiProbeStopsAfterAGap(t *testing.T) {
	st := openTestBolt(t)
	g := lookupGateway(t, st, "")
	ids := NewIDGen()
	put := func(id string) {
		t.Helper()
		if err := st.PutMessage(context.Background(), &store.Message{ID: id, Account: "platform", Dest: "13800138000",
			State: store.StateSent, Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	group := ids.Next()
	put(group)
	put(partID(group, 16)) // 1..15 missing: found
	put(partID(group, 33)) // 17..32 missing: not looked for
	if a := lookup(t, g, "id="+group); !slices.Equal(a.ids(), []string{group, group + "-16"}) {
		t.Errorf("ids %v, want %s and its 16th destination only", a.ids(), group)
	}
	// An id that is not one of ours is no submit_multi's: no probe.
	put("carrier-0001")
	put("carrier-0001-1")
	if a := lookup(t, g, "id=carrier-0001"); !slices.Equal(a.ids(), []string{"carrier-0001"}) {
		t.Errorf("foreign id: %v", a.ids())
	}
}

// The malformed asks get 400 with what is wrong, an unknown carrier 400
// naming it, an unknown id 404, other methods than GET and HEAD 405; the
// answer is JSON with an empty list each time.
func TestLookupRefusals(t *testing.T) {
	g := lookupGateway(t, openTestBolt(t), "")
	long := strings.Repeat("1", 65)
	for _, c := range []struct {
		query  string
		status int
		says   string
	}{
		{"", 400, "give id="},
		{"id=", 400, "give id="},
		{"id=1&carrier=mobile&carrier_id=5", 400, "not both"},
		{"id=1&carrier_id=5", 400, "not both"},
		{"carrier=mobile", 400, "carrier needs carrier_id"},
		{"carrier_id=5", 400, "carrier_id needs carrier"},
		{"id=" + long, 400, "65 octets long: at most 64"},
		{"carrier=mobile&carrier_id=" + long, 400, "carrier_id is 65 octets"},
		{"id=1&id=2", 400, "id given 2 times"},
		{"id=%zz", 400, "malformed query"},
		{"carrier=vodafone&carrier_id=5", 400, `unknown carrier "vodafone": the configured carriers are mobile, unicom`},
		{"id=" + long[:64], 404, "no message with id " + long[:64]},
		{"id=" + url.QueryEscape("nope <b>"), 404, "no message with id nope <b>"},
		{"carrier=unicom&carrier_id=3E8", 404, "no message of carrier unicom with carrier id 3E8 (looked up as 1000;"},
	} {
		a := lookup(t, g, c.query)
		if a.status != c.status || !strings.Contains(a.Error, c.says) || len(a.Messages) != 0 ||
			!bytes.Contains(a.raw, []byte(`"messages":[]`)) {
			t.Errorf("/message?%s: %d %s, want %d saying %q", c.query, a.status, a.raw, c.status, c.says)
		}
	}
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		status, h, b := httpGet(t, g, method, "/message?id=1")
		if status != http.StatusMethodNotAllowed || h.Get("Allow") != "GET, HEAD" || !bytes.Contains(b, []byte(`"messages":[]`)) {
			t.Errorf("%s /message: %d Allow %q %s", method, status, h.Get("Allow"), b)
		}
	}
	if status, _, b := httpGet(t, g, "HEAD", "/message?id=1"); status != http.StatusNotFound || len(b) != 0 {
		t.Errorf("HEAD /message: %d %q, want 404 without a body", status, b)
	}
}

// getFailStore fails the reads a lookup makes, quoting the store URL as an
// error never should.
type getFailStore struct {
	store.Store
	err error
}

func (s *getFailStore) GetMessage(context.Context, string) (*store.Message, error) { return nil, s.err }
func (s *getFailStore) FindByCarrierID(context.Context, string, string) (*store.Message, error) {
	return nil, s.err
}

// A failing store is 503 with the store's error, with the configured Redis
// URL and its passwords cut out.
func TestLookupStoreFailureIs503WithoutSecrets(t *testing.T) {
	const redis = "redis-sentinel://ops:pa%24%24word@10.0.0.1:26379,10.0.0.2:26379/main?sentinel_password=sntl-secret"
	st := &getFailStore{Store: openTestBolt(t),
		err: errors.New("store: redis get message x: dial " + redis + " as pa$$word: i/o timeout (sntl-secret)")}
	g := lookupGateway(t, st, redis)
	for _, q := range []string{"id=x", "carrier=mobile&carrier_id=7"} {
		a := lookup(t, g, q)
		if a.status != http.StatusServiceUnavailable || !strings.HasPrefix(a.Error, "store: redis get message x: dial <store.redis> as <secret>: i/o timeout (<secret>)") {
			t.Errorf("%s: %d %s", q, a.status, a.raw)
		}
		for _, s := range []string{"pa%24%24word", "pa$$word", "sntl-secret", "10.0.0.1"} {
			if bytes.Contains(a.raw, []byte(s)) {
				t.Errorf("%s: the answer shows %q: %s", q, s, a.raw)
			}
		}
	}
	st.err = context.DeadlineExceeded
	if a := lookup(t, g, "id=x"); a.status != http.StatusServiceUnavailable || a.Error != "store: context deadline exceeded" {
		t.Errorf("a store timeout: %d %s", a.status, a.raw)
	}
}

// The status page finds a message too (its "Find a message" forms ask
// /status?id= or /status?carrier=&carrier_id=), in a table, escaped,
// masked and without the text; a bad ask shows why.
func TestStatusPageFindsAMessage(t *testing.T) {
	st := openTestBolt(t)
	g := lookupGateway(t, st, "")
	m := &store.Message{ID: NewIDGen().Next(), Account: "platform", Carrier: "unicom", CarrierID: "1000",
		Source: "8613912345678", Dest: "13800138000", Body: []byte("page secret text"), State: store.StateQueued,
		Attempts: 2, Created: time.Now(), Note: `<script>alert("x")</script>`}
	if err := st.PutMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"id=" + m.ID, "carrier=unicom&carrier_id=3E8"} {
		status, _, b := httpGet(t, g, "GET", "/status?"+q)
		page := string(b)
		if status != http.StatusOK {
			t.Fatalf("/status?%s: %d", q, status)
		}
		for _, want := range []string{m.ID, "<td>138****8000</td>", "<th>from</th><td class=\"wrap\">861******5678</td>", "<td class=\"wrap\">queued</td>", "unicom, its id 1000",
			`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`, "1 record(s)", `<option selected>unicom</option>`} {
			if want == `<option selected>unicom</option>` && strings.HasPrefix(q, "id=") {
				continue
			}
			if !strings.Contains(page, want) {
				t.Errorf("/status?%s lacks %q", q, want)
			}
		}
		for _, never := range []string{`<script>alert`, "page secret text", "13800138000", "8613912345678"} {
			if strings.Contains(page, never) {
				t.Errorf("/status?%s shows %q", q, never)
			}
		}
	}
	_, _, b := httpGet(t, g, "GET", "/status?id="+m.ID)
	if !strings.Contains(string(b), `href="/message?id=`+m.ID+`"`) {
		t.Errorf("the page's lookup does not link its JSON")
	}
	_, _, b = httpGet(t, g, "GET", "/status?carrier=unicom&carrier_id=")
	if !strings.Contains(string(b), "carrier needs carrier_id") {
		t.Errorf("a carrier form without an id does not say so")
	}
	_, _, b = httpGet(t, g, "GET", "/status")
	if page := string(b); strings.Contains(page, `id="found"`) || !strings.Contains(page, "Find a message") {
		t.Errorf("/status without a lookup: the form missing, or a result shown")
	}
}

// Lookups running at once are bounded (one may read 255 records, and the
// endpoint has no login): the next is answered 503 at once, and lookups
// go on once one ends.
func TestLookupsAtOnceAreBounded(t *testing.T) {
	g := lookupGateway(t, openTestBolt(t), "")
	for range maxLookups {
		g.lookups <- struct{}{} // lookups running
	}
	a := lookup(t, g, "id=nope")
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.Error, "lookups are running already") {
		t.Fatalf("a lookup past the bound: %d %q", a.status, a.Error)
	}
	<-g.lookups
	if a := lookup(t, g, "id=nope"); a.status != http.StatusNotFound {
		t.Fatalf("a lookup once one ended: %d %q", a.status, a.Error)
	}
}
