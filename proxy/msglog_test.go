package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// event is one line of the message log.
type event map[string]any

func (e event) str(k string) string { s, _ := e[k].(string); return s }

// readEvents parses every line of the message log at path; a line that is
// not a JSON object fails the test.
func readEvents(t *testing.T, path string) []event {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("%s: line %q is not JSON: %v", path, sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// findEvent returns the first event of that name whose fields have the
// given values (pairs of key, value), or nil.
func findEvent(events []event, name string, kv ...string) event {
next:
	for _, e := range events {
		if e.str("event") != name {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if e.str(kv[i]) != kv[i+1] {
				continue next
			}
		}
		return e
	}
	return nil
}

// waitEvent flushes the message log of d and reads path until the event
// is there.
func waitEvent(t *testing.T, d *Dispatcher, path, name string, kv ...string) event {
	t.Helper()
	var found event
	waitCond(t, fmt.Sprintf("event %s %v in %s", name, kv, path), func() bool {
		if ml := d.mlog(); ml != nil {
			_ = ml.Sync()
		}
		found = findEvent(readEvents(t, path), name, kv...)
		return found != nil
	})
	return found
}

// wantFields checks fields of an event.
func wantFields(t *testing.T, e event, kv ...any) {
	t.Helper()
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if got := e[k]; fmt.Sprint(got) != fmt.Sprint(kv[i+1]) {
			t.Errorf("%s: %s = %v, want %v (line %v)", e.str("event"), k, got, kv[i+1], e)
		}
	}
}

// noPort opens no modem: the modem path queues, nothing is sent.
func noPort(context.Context, modem.Config) (io.ReadWriteCloser, error) {
	return nil, errors.New("no such port")
}

// msgLogGateway is a gateway with one carrier (mobile, on a simulator),
// a modem that never opens (so failovers queue and stay queued) and the
// message log at logPath.
func msgLogGateway(t *testing.T, logPath string) (*Gateway, *smscsim.SMSC, *config.Config) {
	t.Helper()
	smsc, err := smscsim.Start(smscsim.Options{Name: "mobile"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smsc.Close() })
	cfg, err := config.Parse(fmt.Appendf(nil, `smpp: { listen: "127.0.0.1:0" }
http: { listen: "" }
store: { path: %q }
accounts: [ { system_id: platform, password: secret } ]
carriers: [ { name: mobile, address: %q, system_id: ent01, password: pw-cm, response_timeout: 2s } ]
routing: { country_code: "86", preset: cn }
modems: [ { name: m1, device: /dev/spareline-test-m1 } ]
log: { messages: %q }
`, t.TempDir(), smsc.Addr(), logPath), "msglog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGateway(context.Background(), cfg, GatewayOptions{Log: zap.NewNop(), ModemOpener: noPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	waitCond(t, "carrier mobile up", func() bool { return g.Health.State("mobile") == StateUp })
	return g, smsc, cfg
}

// A submit relayed by its carrier, its receipt and the platform's answer
// to it, and a submit the carrier failed (to the modem queue), each give
// their lines: found by id, with the destination masked, a long source
// masked, a short code as sent, and neither the text nor a password
// anywhere in the file.
func TestMessageLogRelayFailoverReceipt(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "messages.log")
	g, smsc, _ := msgLogGateway(t, logPath)
	const text = "meet at the north gate 0214"
	smsc.SetBehaviour(func(m smscsim.Message, _ int) smscsim.Reply {
		if strings.HasSuffix(m.Dest, "8001") {
			return smscsim.Reply{Status: statusSysErr} // transient: to the modems
		}
		return smscsim.Reply{ReceiptStat: "DELIVRD"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := platform.Dial(ctx, g.SMPPAddr().String(), "platform", "secret", platform.Options{BindType: platform.BindTRX})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	relayed, err := c.Submit(ctx, platform.Submit{Src: "10690001", Dest: "+8613800138000", Text: text, RegisteredDelivery: 1})
	if err != nil || relayed.Status != statusOK {
		t.Fatalf("relayed submit: %+v, %v", relayed, err)
	}
	select {
	case r := <-c.Receipts():
		if r.ID != relayed.MessageID {
			t.Fatalf("receipt for %s, want %s", r.ID, relayed.MessageID)
		}
	case <-ctx.Done():
		t.Fatal("no receipt")
	}
	failed, err := c.Submit(ctx, platform.Submit{Src: "13900139000", Dest: "13800138001", Text: text, RegisteredDelivery: 1})
	if err != nil || failed.Status != statusOK {
		t.Fatalf("failed-over submit: %+v, %v", failed, err)
	}

	id := relayed.MessageID
	delivered := waitEvent(t, g.Disp, logPath, "receipt_delivered", "id", id)
	wantFields(t, delivered, "account", "platform", "status", "ESME_ROK")
	events := readEvents(t, logPath)
	sub := findEvent(events, "submit", "id", id)
	if sub == nil {
		t.Fatalf("no submit line for %s in %v", id, events)
	}
	wantFields(t, sub, "account", "platform", "status", "ESME_ROK", "to", "138****8000", "from", "10690001",
		"carrier", "mobile", "path", "carrier")
	carrierID := sub.str("carrier_id")
	if carrierID == "" {
		t.Errorf("submit line without the carrier's id: %v", sub)
	}
	rc := findEvent(events, "receipt", "id", id)
	if rc == nil {
		t.Fatalf("no receipt line for %s in %v", id, events)
	}
	wantFields(t, rc, "account", "platform", "carrier", "mobile", "carrier_id", carrierID, "stat", "DELIVRD", "final", true)

	fid := failed.MessageID
	fo := waitEvent(t, g.Disp, logPath, "failover", "id", fid)
	wantFields(t, fo, "account", "platform", "carrier", "mobile", "reason", "transient", "to", "138****8001")
	fsub := waitEvent(t, g.Disp, logPath, "submit", "id", fid)
	wantFields(t, fsub, "status", "ESME_ROK", "from", "139****9000", "carrier", "mobile", "path", "modem")
	if _, ok := fsub["carrier_id"]; ok {
		t.Errorf("a message the carrier refused has a carrier_id: %v", fsub)
	}

	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{text, "north gate", "13800138000", "13800138001", "13900139000", "secret", "pw-cm"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the message log contains %q:\n%s", secret, raw)
		}
	}
	if fi, err := os.Stat(logPath); err != nil || fi.Mode().Perm()&0o007 != 0 {
		t.Errorf("message log mode %v (%v): want no access for others (0640)", fi.Mode(), err)
	}
}

// A submit_multi gives one submit line per destination, under the id the
// platform got, each with its part id; its failovers name the part too.
func TestMessageLogSubmitMultiOneLinePerDestination(t *testing.T) {
	ts, logPath := msgLogServer(t)
	// A failover whose workers do not run: the destinations (routed to
	// carriers the dispatcher does not have) are queued for the modems and
	// stay there.
	NewFailover(ts.disp, &fakePool{}, FailoverConfig{}, zap.NewNop())
	p := bound(t, ts, cmdBindTransmitter)
	p.write(cmdSubmitMulti, 0, 2, multiBody(t, "停电通知 secret words", []string{"8613800138000", "8613012345678"}))
	f := p.read()
	if f.ID != cmdSubmitMulti|cmdRespBit || f.Status != statusOK {
		t.Fatalf("submit_multi answered %+v", f.Header)
	}
	group := string(bytes.TrimRight(f.Body[:bytes.IndexByte(f.Body, 0)], "\x00"))
	for i, dest := range []struct{ to, carrier string }{{"138****8000", "mobile"}, {"130****5678", "unicom"}} {
		part := partID(group, i)
		e := waitEvent(t, ts.disp, logPath, "submit", "part", part)
		wantFields(t, e, "id", group, "account", "platform", "status", "ESME_ROK", "to", dest.to, "from", "10690001",
			"carrier", dest.carrier, "path", "modem", "dests", 2)
		// The first destination's store id is the group's: no part of its own.
		foPart := part
		if i == 0 {
			foPart = ""
		}
		fo := waitEvent(t, ts.disp, logPath, "failover", "id", group, "part", foPart)
		wantFields(t, fo, "reason", "route", "to", dest.to, "carrier", dest.carrier)
	}
	if raw, _ := os.ReadFile(logPath); bytes.Contains(raw, []byte("secret words")) {
		t.Errorf("the message log contains the text:\n%s", raw)
	}
}

// Refusals are logged with the status and the account, and id "".
func TestMessageLogRefusal(t *testing.T) {
	ts, logPath := msgLogServer(t)
	p := bound(t, ts, cmdBindTransmitter)
	// No carrier and no modem for the number: ESME_RINVDSTADR.
	p.write(cmdSubmitSM, 0, 2, goldenSubmit(t, "02 4F60", ""))
	if f := p.read(); f.Status != statusInvDstAdr {
		t.Fatalf("submit answered %+v", f.Header)
	}
	e := waitEvent(t, ts.disp, logPath, "submit", "status", "ESME_RINVDSTADR")
	wantFields(t, e, "id", "", "account", "platform", "path", "error")
	// A malformed body: refused before any message is made.
	p.write(cmdSubmitSM, 0, 3, []byte{0})
	if f := p.read(); f.Status == statusOK {
		t.Fatalf("malformed submit answered %+v", f.Header)
	}
	e = waitEvent(t, ts.disp, logPath, "submit", "path", "error", "to", "")
	wantFields(t, e, "id", "", "account", "platform")
}

// SIGHUP's reload reopens the file: after logrotate renamed it, the next
// lines go to a new file at the configured path and none to the old one;
// a changed path switches files; "" turns the log off and a path turns it
// on again; a path that cannot be opened refuses the reload and the log
// goes on where it was. A refused config still reopens the file.
func TestMessageLogReopenedByReload(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "messages.log")
	g, _, cfg := msgLogGateway(t, logPath)
	d := g.Disp
	line := func(account string) {
		t.Helper()
		ml := d.mlog()
		if ml == nil {
			t.Fatal("message log off")
		}
		ml.refused(account, statusThrottled)
	}
	accounts := func(path string) []string {
		t.Helper()
		var out []string
		for _, e := range readEvents(t, path) {
			out = append(out, e.str("account"))
		}
		return out
	}
	wantAccounts := func(path string, want ...string) {
		t.Helper()
		if got := accounts(path); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s has lines of %v, want %v", filepath.Base(path), got, want)
		}
	}
	reload := func(messages string) error {
		t.Helper()
		c := *cfg
		c.Log.Messages = messages
		return g.Reload(&c)
	}

	line("a")
	if err := os.Rename(logPath, logPath+".1"); err != nil { // logrotate
		t.Fatal(err)
	}
	line("b") // buffered: written to the renamed file by the reopen
	if err := reload(logPath); err != nil {
		t.Fatal(err)
	}
	line("c")
	_ = d.mlog().Sync()
	wantAccounts(logPath+".1", "a", "b")
	wantAccounts(logPath, "c")

	other := filepath.Join(dir, "other.log")
	if err := reload(other); err != nil {
		t.Fatal(err)
	}
	line("d")
	_ = d.mlog().Sync()
	wantAccounts(logPath, "c")
	wantAccounts(other, "d")

	if err := reload(filepath.Join(dir, "gone", "messages.log")); err == nil || !strings.Contains(err.Error(), "log.messages") {
		t.Errorf("reload to a directory that does not exist: %v, want an error naming log.messages", err)
	}
	line("e")
	_ = d.mlog().Sync()
	wantAccounts(other, "d", "e")

	if err := os.Rename(other, other+".1"); err != nil {
		t.Fatal(err)
	}
	g.ReopenMessageLog() // a reload whose file was refused
	line("f")
	_ = d.mlog().Sync()
	wantAccounts(other+".1", "d", "e")
	wantAccounts(other, "f")

	off := d.mlog()
	if err := reload(""); err != nil {
		t.Fatal(err)
	}
	if d.mlog() != nil {
		t.Fatal("log.messages \"\" left the message log on")
	}
	off.Close() // as the retirement does a moment later
	wantAccounts(other, "f")
	if err := reload(logPath); err != nil {
		t.Fatal(err)
	}
	line("g")
	_ = d.mlog().Sync()
	wantAccounts(logPath, "c", "g")
}

// A failed write is counted and reported on the main log once a minute;
// the write after it is tried again (not refused for good), and a cut line
// does not spoil the next one.
func TestMessageLogWriteErrors(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	core, logs := observer.New(zap.InfoLevel)
	ml := newMessageLog(full, "/dev/full", zap.New(core))
	defer ml.Close()
	before := testutil.ToFloat64(metricMessageLogErrors)
	ml.refused("a", statusOK)
	_ = ml.Sync()
	ml.refused("b", statusOK)
	_ = ml.Sync()
	if n := testutil.ToFloat64(metricMessageLogErrors) - before; n != 2 {
		t.Errorf("spareline_message_log_errors_total grew by %v, want 2 (one per failed write)", n)
	}
	reports := logs.FilterMessageSnippet("message log write failed").All()
	if len(reports) != 1 {
		t.Fatalf("%d reports on the main log, want 1 (at most one a minute)", len(reports))
	}
	if p := reports[0].ContextMap()["path"]; p != "/dev/full" {
		t.Errorf("report names path %v", p)
	}

	// The file works again: the next write goes through, whole.
	good := filepath.Join(t.TempDir(), "m.log")
	f, err := openLogFile(good)
	if err != nil {
		t.Fatal(err)
	}
	ml.out.swap(f, good)
	if _, err := f.Write([]byte(`{"event":"submit","id":"cut`)); err != nil {
		t.Fatal(err)
	}
	ml.out.cut = true // as after a write cut mid-line
	ml.refused("c", statusOK)
	_ = ml.Sync()
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var e event
	if len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &e) != nil || e.str("account") != "c" {
		t.Errorf("after the failures and a cut line, the file is %q; want the cut line, then a whole line of c", b)
	}
}

// maskSource masks phone numbers of 11 digits or more only.
func TestMaskSource(t *testing.T) {
	for in, want := range map[string]string{
		"13900139000":    "139****9000",
		"+8613900139000": "+86*******9000",
		"10690001":       "10690001",
		"spareline":      "spareline",
		"":               "",
	} {
		if got := maskSource(in); got != want {
			t.Errorf("maskSource(%q) = %q, want %q", in, got, want)
		}
	}
}

// A receipt is logged once it is recorded: a carrier's resent final
// receipt and a late intermediate one, answered OK and dropped, write no
// line (before, each wrote a "receipt" line, as if the platform had got a
// second receipt).
func TestMessageLogOneReceiptLinePerRecordedReceipt(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	path, ml := attachMessageLog(t, d)
	c := NewCarrier(config.Carrier{Name: "cm"}, nil, zap.NewNop())
	m := sentMessage(t, st, d, "C9", 0x11)
	for _, stat := range []string{"ENROUTE", "DELIVRD", "DELIVRD", "ENROUTE"} {
		sm, body := carrierReceipt(t, "C9", stat)
		if s := d.carrierDeliver(context.Background(), c, sm, body); s != statusOK {
			t.Fatalf("%s receipt answered %s", stat, StatusString(s))
		}
	}
	if err := ml.Sync(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range readEvents(t, path) {
		if e.str("event") == "receipt" && e.str("id") == m.ID {
			got = append(got, fmt.Sprintf("%s/%v", e.str("stat"), e["final"]))
		}
	}
	if want := []string{"ENROUTE/false", "DELIVRD/true"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("receipt lines %v, want %v", got, want)
	}
}

// An event after Close (a log turned off by a reload, a second after; the
// shutdown) is counted as lost, not kept in the stopped buffer, where it
// was never written and started a flush goroutine nobody stopped.
func TestMessageLogEventAfterCloseIsCounted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.log")
	f, err := openLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ml := newMessageLog(f, path, zap.NewNop())
	ml.Close()
	before := testutil.ToFloat64(metricMessageLogErrors)
	ml.receipt(&store.Message{ID: "x", Account: "acct"}, "cm", "DELIVRD", true)
	if got := testutil.ToFloat64(metricMessageLogErrors) - before; got != 1 {
		t.Fatalf("%v errors counted for an event after Close, want 1", got)
	}
	if evs := readEvents(t, path); len(evs) != 0 {
		t.Fatalf("lines after Close: %v", evs)
	}
}

// Only a regular file is opened: a FIFO (created after the config check)
// would hang the reload that opens it, a device would be written to.
func TestMessageLogRefusesAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip(err)
	}
	if f, err := openLogFile(path); err == nil {
		_ = f.Close()
		t.Fatal("a FIFO was opened as the message log")
	}
}

// attachMessageLog makes d write a message log to a file of the test's;
// it returns the file's path and the log.
func attachMessageLog(t *testing.T, d *Dispatcher) (string, *MessageLog) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "messages.log")
	f, err := openLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ml := newMessageLog(f, path, zap.NewNop())
	t.Cleanup(ml.Close)
	d.msgLog.cur.Store(ml)
	return path, ml
}

// msgLogServer is a test server whose dispatcher writes its message log to
// a file of the test's: the server and the log's path.
func msgLogServer(t *testing.T) (*testServer, string) {
	t.Helper()
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	logPath := filepath.Join(t.TempDir(), "messages.log")
	if err := ts.disp.openMessageLog(logPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.disp.closeMessageLog)
	return ts, logPath
}
