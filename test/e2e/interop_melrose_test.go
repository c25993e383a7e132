package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/test/platform"
)

// An SMSC written by others: Melrose Labs' SMSC simulator (C++, shipped in
// gosmpp's module as example/smsc_simulator/smsc.cpp), built from that
// source with g++ and run as the mobile carrier. It answers binds and
// enquire_link its own way, gives 64-character message ids, sends an MO
// message back for every submit and a delivery receipt (text and TLVs) 3
// to 12 s later. spareline must relay the submits, answer the platform
// with its own ids, and bring every receipt back under those ids, and the
// MO messages to the platform.
//
// g++ is installed by scripts/deps.sh; without it the test is skipped,
// unless SPARELINE_REQUIRE_THIRDPARTY is set (scripts/test.sh sets it).
func TestThirdPartySMSCMelrose(t *testing.T) {
	bin := buildMelroseSMSC(t)
	storeKinds(t, func(t *testing.T, kind string) {
		t.Parallel() // most of the time is the simulator's receipt delay
		smpp := startMelroseSMSC(t, bin)
		e := startEnv(t, kind, withCarrierElsewhere("mobile", smpp))
		c := e.dial("platform", "secret", platform.BindTRX)
		texts := []string{"Feeder 12 overload, shed load now", "紧急通知：变电站故障，请立即处理。", "drill at 15:00"}
		want := map[string]bool{}
		for _, txt := range texts {
			res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: txt, RegisteredDelivery: 1})
			if err != nil || res.Status != 0 {
				t.Fatalf("submit through the Melrose SMSC: %v 0x%X", err, res.Status)
			}
			if len(res.MessageID) == 64 {
				t.Fatalf("the platform got the carrier's id %q, not spareline's", res.MessageID)
			}
			want[res.MessageID] = true
		}
		// The simulator answers each submit with an MO message carrying its
		// text, from "FakeFrom".
		gotMO := map[string]bool{}
		for range texts {
			select {
			case mo := <-c.MOs():
				if mo.Src != "FakeFrom" {
					t.Errorf("MO from %q, want FakeFrom", mo.Src)
				}
				gotMO[mo.Text] = true
			case <-time.After(20 * time.Second):
				t.Fatalf("MO messages: got %d of %d", len(gotMO), len(texts))
			}
		}
		for _, txt := range texts {
			if !gotMO[txt] {
				t.Errorf("no MO message with text %q (got %v)", txt, gotMO)
			}
		}
		// Receipts, each under the id spareline gave.
		for range texts {
			var r platform.Receipt
			select {
			case r = <-c.Receipts():
			case <-time.After(30 * time.Second):
				t.Fatalf("receipts: %d still missing: %v", len(want), want)
			}
			if !want[r.ID] || r.TLVID != r.ID {
				t.Fatalf("receipt with id %q (TLV %q): not one spareline gave, or the two differ", r.ID, r.TLVID)
			}
			if r.Stat != "DELIVRD" {
				t.Errorf("receipt %s: stat %q", r.ID, r.Stat)
			}
			delete(want, r.ID)
		}
	})
}

// buildMelroseSMSC compiles the simulator's source from the module cache,
// changed only to listen on loopback ports the test chooses (argv[1] and
// argv[2]) instead of 0.0.0.0:2775 and 8775.
func buildMelroseSMSC(t *testing.T) string {
	t.Helper()
	cxx, err := exec.LookPath("g++")
	if err != nil {
		if os.Getenv("SPARELINE_REQUIRE_THIRDPARTY") != "" {
			t.Fatal("g++ not found (scripts/deps.sh installs it)")
		}
		t.Skip("g++ not found: run scripts/deps.sh")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/linxGnu/gosmpp").Output()
	if err != nil {
		t.Fatalf("locating gosmpp's module: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "example", "smsc_simulator", "smsc.cpp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]string{
		{"int portSMPP = 2775;", "int portSMPP = atoi(argv[1]);"},
		{"int portAdmin = 8775;", "int portAdmin = atoi(argv[2]);"},
		{"serv_addr.sin_addr.s_addr = INADDR_ANY;", "serv_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);"},
	} {
		if bytes.Count(src, []byte(r[0])) != 1 {
			t.Fatalf("the simulator's source changed: %q not found once", r[0])
		}
		src = bytes.Replace(src, []byte(r[0]), []byte(r[1]), 1)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "smsc.cpp"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "mlsmsc")
	if out, err := exec.Command(cxx, "-O1", "-w", "-o", bin, filepath.Join(dir, "smsc.cpp")).CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, out)
	}
	return bin
}

// startMelroseSMSC runs the simulator on two free loopback ports and
// returns its SMPP address once it says it listens on both. The ports are
// free when chosen, but another process (a parallel test's listener) may
// take one before the simulator binds it: then it exits, and it is started
// again on new ports. (Dialling the port would not tell: the other
// listener answers.)
func startMelroseSMSC(t *testing.T, bin string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 2) // SMPP, admin
		logs := &syncBuffer{}
		exited := runProcess(t, logs, bin, fmt.Sprint(ports[0]), fmt.Sprint(ports[1]))
		t.Cleanup(func() { // before runProcess's: the simulator still runs, its output may grow
			if t.Failed() {
				t.Logf("Melrose SMSC output (tail):\n%s", tail(logs.String(), 3000))
			}
		})
		err := waitOutput(logs, fmt.Sprintf("Listening for admin on port %d", ports[1]), exited)
		if err == nil {
			return fmt.Sprintf("127.0.0.1:%d", ports[0])
		}
		if attempt == 3 {
			t.Fatalf("the simulator: %v\n%s", err, logs.String())
		}
		t.Logf("the simulator did not start on ports %v (%v): new ports", ports, err)
	}
}

// waitOutput waits until a process's output holds line, for up to 10 s or
// until exited is closed.
func waitOutput(out *syncBuffer, line string, exited <-chan struct{}) error {
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond) // polling its output: there is no event to wait on
	defer tick.Stop()
	for {
		if strings.Contains(out.String(), line) {
			return nil
		}
		select {
		case <-exited:
			if strings.Contains(out.String(), line) {
				return nil
			}
			return errors.New("exited before it listened")
		case <-deadline.C:
			return fmt.Errorf("no %q within 10 s", line)
		case <-tick.C:
		}
	}
}

// waitListening waits until addr accepts a connection, for up to 10 s or
// until exited is closed (the process that should listen is gone).
func waitListening(ctx context.Context, addr string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-ctx.Done():
			return fmt.Errorf("never listened on %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond): // polling a port: no event to wait on
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
