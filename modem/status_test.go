package modem_test

import (
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/test/modemsim"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// waitState polls the status API (there is no event to await) until the
// modem is in state st.
func waitState(t *testing.T, p *modem.Pool, name string, st modem.State, deadline time.Duration) modem.ModemStatus {
	t.Helper()
	ctx := testCtx(t, deadline)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s := modemState(p, name); s.State == st {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never %s: %+v", name, st, modemState(p, name))
		case <-tick.C:
		}
	}
}

// Log lines name their modem once (JSON logs with a duplicate "modem" key
// are invalid for many parsers); an unknown signal (+CSQ: 99) is left out
// of "modem initialised", not logged as 0 dBm; and a modem up again after
// an unplug shows no last error.
func TestModemLogsAndStatusAfterRecovery(t *testing.T) {
	sim := startSim(t, "s", modemsim.Options{Signal: 99, Refuse: []string{"+CMEE=1", "+CNMI=2,1,0,1,0"}})
	core, logs := observer.New(zapcore.DebugLevel)
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.Logger = zap.New(core) })
	ctx := testCtx(t, 10*time.Second)
	waitUp(t, ctx, p, "m0")
	sim.Unplug()
	if s := waitState(t, p, "m0", modem.StateDown, 10*time.Second); s.LastError == "" {
		t.Fatalf("unplugged modem without a last error: %+v", s)
	}
	if err := sim.Replug(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, ctx, p, "m0")
	if s := modemState(p, "m0"); s.LastError != "" {
		t.Errorf("modem up again still shows last error %q", s.LastError)
	}
	seen := map[string]bool{}
	for _, e := range logs.All() {
		keys := map[string]int{}
		for _, f := range e.Context {
			keys[f.Key]++
		}
		for k, n := range keys {
			if n > 1 {
				t.Errorf("log %q has the key %q %d times", e.Message, k, n)
			}
		}
		if e.Message == "modem initialised" {
			seen[e.Message] = true
			if _, ok := e.ContextMap()["signal_dbm"]; ok {
				t.Errorf("modem initialised logs signal_dbm %v for +CSQ: 99", e.ContextMap()["signal_dbm"])
			}
		}
		if e.Message == "modem takes AT+CNMI=1,1,0,1,0" {
			seen[e.Message] = true
		}
	}
	if len(seen) != 2 {
		t.Fatalf("logs seen: %v", seen)
	}
}
