package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// drainGateway is a started gateway with one carrier (mobile, on a
// simulator) and one modem (m0, on sim), its store at storeDir (so that a
// second one can start on it) and its message log at logPath; its log is
// observed. Dest 130... (China Unicom, no carrier configured for it) goes
// to the modem pool.
type drainGateway struct {
	g    *Gateway
	logs *observer.ObservedLogs

	mu    sync.Mutex
	lines map[string]chan struct{} // logged: closed at the first line with this message
}

func startDrainGateway(t *testing.T, storeDir, logPath string, sim *modemsim.Sim) *drainGateway {
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
modems: [ { name: m0, device: %q, max_per_minute: 600 } ]
log: { messages: %q }
`, storeDir, smsc.Addr(), sim.Path(), logPath), "drain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dg := &drainGateway{lines: map[string]chan struct{}{}}
	core, logs := observer.New(zap.InfoLevel)
	dg.logs = logs
	log := zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		dg.mu.Lock()
		defer dg.mu.Unlock()
		if ch := dg.lines[e.Message]; ch != nil {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
		return nil
	}))
	g, err := NewGateway(context.Background(), cfg, GatewayOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	dg.g = g
	return dg
}

// logged returns a channel closed once a line with message msg is logged
// (asked before the line can come).
func (dg *drainGateway) logged(msg string) <-chan struct{} {
	dg.mu.Lock()
	defer dg.mu.Unlock()
	if dg.lines[msg] == nil {
		dg.lines[msg] = make(chan struct{})
	}
	return dg.lines[msg]
}

// shutdown runs Shutdown(ctx) and returns a channel closed when it returned.
func (dg *drainGateway) shutdown(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		dg.g.Shutdown(ctx)
	}()
	return done
}

// submitToModem submits one message that goes to the modem pool and
// returns its id.
func submitToModem(ctx context.Context, t *testing.T, g *Gateway, dest, text string) string {
	t.Helper()
	c, err := platform.Dial(ctx, g.SMPPAddr().String(), "platform", "secret", platform.Options{BindType: platform.BindTRX})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Submit(ctx, platform.Submit{Src: "10690000", Dest: dest, Text: text, RegisteredDelivery: 1})
	if err != nil || res.Status != statusOK {
		t.Fatalf("submit to %s: %+v, %v; want OK (queued for the modems)", dest, res, err)
	}
	return res.MessageID
}

func readStored(ctx context.Context, t *testing.T, storeDir, id string) (*store.Message, int) {
	t.Helper()
	st, err := store.OpenBolt(storeDir, time.Hour, nil)
	if err != nil {
		t.Fatalf("open the store after the shutdown: %v", err)
	}
	defer st.Close()
	m, err := st.GetMessage(ctx, id)
	if err != nil {
		t.Fatalf("message %s after the shutdown: %v", id, err)
	}
	depth, _, err := st.ModemQueue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m, depth
}

const drainWaitLine = "stopping: waiting for the modem sends in progress"

// A shutdown that begins while the modem is in AT+CMGS lets the send
// finish (within the drain deadline) and records it as sent by that modem,
// as a reload that removes the modem does: it is not queued again, and the
// next start on the same store does not send it again (nor count it as a
// possible duplicate).
func TestShutdownLetsAModemSendInProgressFinish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim, err := modemsim.Start(ctx, modemsim.Options{Name: "drain"})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	storeDir, logPath := t.TempDir(), filepath.Join(t.TempDir(), "messages.log")
	inDoubt := testutil.ToFloat64(metricModemResendsInDoubt)

	dg := startDrainGateway(t, storeDir, logPath, sim)
	sim.HoldSends(true) // the send stays in AT+CMGS until released
	id := submitToModem(ctx, t, dg.g, "13012345670", "on the modem at the stop")
	if err := sim.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	waiting := dg.logged(drainWaitLine)
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	done := dg.shutdown(dctx)
	select {
	case <-waiting:
	case <-done:
		t.Fatal("Shutdown returned while a modem send was in progress (cut short)")
	case <-ctx.Done():
		t.Fatal("Shutdown never said it waits for the modem send")
	}
	sim.HoldSends(false)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Shutdown did not return once the modem send ended")
	}
	if n := len(sim.Sent()); n != 1 {
		t.Fatalf("the modem sent %d messages, want the one in progress at the stop", n)
	}
	m, depth := readStored(ctx, t, storeDir, id)
	// Sent by m0: its status report, when it came before the stop, was
	// handled too (DELIVRD).
	if m.Modem != "m0" || (m.State != store.StateModemSent && (m.State != store.StateDone || m.FinalStat != "DELIVRD")) {
		t.Errorf("message after the shutdown: state %q stat %q modem %q note %q; want sent on m0", m.State, m.FinalStat, m.Modem, m.Note)
	}
	if depth != 0 {
		t.Errorf("modem queue after the shutdown: %d, want 0 (the message was sent)", depth)
	}

	// The next start: a new message goes out, the first is not sent again.
	dg2 := startDrainGateway(t, storeDir, logPath, sim)
	defer dg2.g.Shutdown(context.Background())
	submitToModem(ctx, t, dg2.g, "13012345671", "after the restart")
	sent, err := sim.WaitSent(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 || !strings.HasSuffix(sent[1].Dest, "13012345671") {
		t.Errorf("sent after the restart: %+v; want only the new message", sent)
	}
	if n := testutil.ToFloat64(metricModemResendsInDoubt) - inDoubt; n != 0 {
		t.Errorf("spareline_modem_possible_duplicates_total grew by %v, want 0", n)
	}
}

// A shutdown whose drain deadline comes while the modem is still in
// AT+CMGS cuts the send short; the record says it may have gone out
// (state modem, as a killed worker's), the message log's modem_failed
// names the modem, and the next start's send of it is counted in
// spareline_modem_possible_duplicates_total and warned.
func TestShutdownDeadlineLeavesModemSendInDoubt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim, err := modemsim.Start(ctx, modemsim.Options{Name: "cut"})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	storeDir, logPath := t.TempDir(), filepath.Join(t.TempDir(), "messages.log")
	inDoubt := testutil.ToFloat64(metricModemResendsInDoubt)

	dg := startDrainGateway(t, storeDir, logPath, sim)
	sim.HoldSends(true)
	id := submitToModem(ctx, t, dg.g, "13012345670", "cut at the stop")
	if err := sim.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	waiting := dg.logged(drainWaitLine)
	dctx, deadline := context.WithCancel(ctx) // its end is the drain deadline
	done := dg.shutdown(dctx)
	select {
	case <-waiting:
	case <-done:
		t.Fatal("Shutdown returned while a modem send was in progress, before its deadline")
	case <-ctx.Done():
		t.Fatal("Shutdown never said it waits for the modem send")
	}
	deadline()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("Shutdown did not return at its deadline")
	}
	m, depth := readStored(ctx, t, storeDir, id)
	if m.State != store.StateModem || m.Modem != "m0" {
		t.Errorf("message after the cut: state %q modem %q note %q; want modem (in doubt) on m0", m.State, m.Modem, m.Note)
	}
	if depth != 1 {
		t.Errorf("modem queue after the cut: %d, want 1", depth)
	}
	failed := false
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["event"] == "modem_failed" {
			failed = true
			if e["modem"] != "m0" {
				t.Errorf("modem_failed line names modem %q, want m0: %s", e["modem"], line)
			}
		}
	}
	if !failed {
		t.Errorf("no modem_failed line in the message log:\n%s", b)
	}

	// The cut send went out after all (the modem had the PDU).
	sim.HoldSends(false)
	if _, err := sim.WaitSent(ctx, 1); err != nil {
		t.Fatal(err)
	}
	dg2 := startDrainGateway(t, storeDir, logPath, sim)
	defer dg2.g.Shutdown(context.Background())
	if _, err := sim.WaitSent(ctx, 2); err != nil {
		t.Fatalf("the next start did not send the message again: %v", err)
	}
	if n := testutil.ToFloat64(metricModemResendsInDoubt) - inDoubt; n != 1 {
		t.Errorf("spareline_modem_possible_duplicates_total grew by %v, want 1", n)
	}
	warned := dg2.logs.FilterMessageSnippet("sending again a message whose last modem send may have gone out").
		FilterField(zap.String("id", id)).Len()
	if warned != 1 {
		t.Errorf("possible-duplicate warnings for %s: %d, want 1", id, warned)
	}
}
