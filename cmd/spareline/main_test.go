package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
	"github.com/spareline/spareline/test/modemsim"
)

// `spareline modem probe` against an emulated TC35i on a real pseudo-terminal.
func TestModemProbeAgainstEmulator(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim, err := modemsim.Start(ctx, modemsim.Options{Name: "probe", Signal: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	var out, errb bytes.Buffer
	if rc := run([]string{"modem", "probe", "--device", sim.Path()}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	for _, want := range []string{"SIEMENS", "TC35i", "READY", "registered, home network", "-73 dBm", "+8613800100500"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("probe output lacks %q:\n%s", want, out.String())
		}
	}
}

// A path that is not a modem gets a clear error, not a hang.
func TestModemProbeNotAModem(t *testing.T) {
	var out, errb bytes.Buffer
	missing := filepath.Join(t.TempDir(), "ttyUSB9")
	if rc := run([]string{"modem", "probe", "--device", missing}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "cannot open") {
		t.Fatalf("missing device: exit %d, %q", rc, errb.String())
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if rc := run([]string{"modem", "probe", "--device", f, "--timeout", "3s"}, &out, &errb); rc != 1 || errb.Len() == 0 {
		t.Fatalf("regular file: exit %d, %q", rc, errb.String())
	}
}

// `spareline check` prints one line per problem naming the key and line.
func TestCheckNamesKeyAndLine(t *testing.T) {
	f := filepath.Join(t.TempDir(), "bad.yaml")
	yml := "smpp: { listen: \"127.0.0.1:2775\" }\naccounts:\n  - { system_id: a, password: x }\n  - { system_id: a, password: y }\ncarriers:\n  - { name: mobile, address: \"127.0.0.1:1\", system_id: e, password: p, response_timeout: 5 }\nrouting: { prefixes: { \"1703\": cmcc } }\nbogus: 1\n"
	if err := os.WriteFile(f, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"check", "--config", f}, &out, &errb); rc != 1 {
		t.Fatalf("exit %d", rc)
	}
	if out.Len() != 0 {
		t.Errorf("problems wrote %q to stdout, want them on stderr only", out.String())
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	for _, want := range []string{"accounts[1].system_id", "carriers[0].response_timeout", "routing.prefixes.1703", "bogus"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, want) && strings.HasPrefix(l, f+":") {
				found = true
			}
		}
		if !found {
			t.Errorf("no line naming %s:\n%s", want, errb.String())
		}
	}
	errb.Reset()
	if rc := run([]string{"check", "--config", "../../examples/spareline.yaml"}, &out, &errb); rc != 0 {
		t.Fatalf("example config: %s", errb.String())
	}
	if out.String() != "../../examples/spareline.yaml: ok\n" || errb.Len() != 0 {
		t.Errorf("a good config: stdout %q, stderr %q; want FILE: ok on stdout only", out.String(), errb.String())
	}
}

// A second `spareline run` on the store another process holds exits 1 with
// one message that says who holds the store and what to do; the store's
// name is said once.
func TestRunOnHeldStoreSaysWhatToDo(t *testing.T) {
	bin := buildSpareline(t)
	dir := t.TempDir()
	held, err := store.OpenBolt(filepath.Join(dir, "data"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := filepath.Join(dir, "spareline.yaml")
	writeFile(t, cfg, testConfig(dir, "127.0.0.1:1", []account{{"platform", "secret"}}, ""))
	c := startChild(t, bin, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	l, err := c.waitLog(ctx, 0, `"start failed"`, msgIs("start failed"))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := l["error"].(string)
	for _, want := range []string{"store: embedded store " + filepath.Join(dir, "data", "spareline.db") + " is in use",
		"another spareline (or another process) holds it", "Stop that one", "store.path", "store.redis"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Count(msg, "store:") != 1 {
		t.Errorf("error %q: want one \"store:\" prefix", msg)
	}
	if code, err := c.wait(ctx); err != nil || code != 1 {
		t.Errorf("exit %d (%v), want 1", code, err)
	}
}

// Durations in the log are rounded for people: a jittered wait logs as
// "retry_in":"5m54s", not "5m54.273991733s", a short one as "722ms".
func TestLogDurationsRounded(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		var b bytes.Buffer
		log, err := newLogger(format, "info", &b)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", zap.Duration("retry_in", 5*time.Minute+54273991733*time.Nanosecond),
			zap.Duration("in", 722273991*time.Nanosecond), zap.Duration("tiny", 1234567*time.Nanosecond),
			zap.Duration("micro", 123456*time.Nanosecond))
		_ = log.Sync()
		out := b.String()
		for _, want := range []string{"5m54s", "722ms", "1ms", "123µs"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: %q lacks %s", format, out, want)
			}
		}
		if strings.Contains(out, "273991") || strings.Contains(out, "722.27") || strings.Contains(out, "1.23") {
			t.Errorf("%s: unrounded duration in %q", format, out)
		}
	}
}
