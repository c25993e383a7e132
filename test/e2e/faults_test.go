package e2e

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/faultnet"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// Network, carrier and disk faults on a real gateway. Each test states the
// promise it checks. Modem faults (garbage, a hang inside AT+CMGS) are tested
// on the pool over real ptys in modem/faults_test.go: the gateway's modem
// send timeout (60 s per part) is not a config key.

// withRelay puts a faultnet relay in front of the named carrier's simulator.
func withRelay(t *testing.T, name string, out **faultnet.Relay) envOption {
	return func(o *envOpts) {
		o.carrierAddr = func(n, addr string) string {
			if n != name {
				return addr
			}
			r, err := faultnet.Start(addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			*out = r
			return r.Addr()
		}
	}
}

// carrierBindLen is the length of spareline's bind_transceiver to a carrier
// of carrierSetups (system_id ent01, password pw-xxx, SMPP 3.4 §4.1.5).
func carrierBindLen(name string) int64 {
	return int64(16 + len("ent01") + 1 + len("pw-"+name[:3]) + 1 + 1 + 4)
}

func waitState(t *testing.T, e *env, carrier string, want proxy.CarrierState) {
	t.Helper()
	for e.gw.Health.State(carrier) != want { // polled: health changes have no event to await
		select {
		case <-e.ctx.Done():
			t.Fatalf("%s never became %v (now %v)", carrier, want, e.gw.Health.State(carrier))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The carrier's network resets every connection right after the bind PDU is
// forwarded. Promise: spareline retries with a jittered exponential backoff
// (1 s doubling; so after T seconds at most about 1+log2(2T+1) attempts per
// bind, counted at the relay), never crashes, and the carrier's traffic goes
// to the modems meanwhile; once the network heals the binds come back and
// traffic returns to the carrier.
func TestFaultCarrierResetsDuringBind(t *testing.T) {
	var relay *faultnet.Relay
	sims, my := startModems(t, 1)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML), withRelay(t, "unicom", &relay))
	c := e.dial("platform", "secret", platform.BindTRX)

	relay.ResetAfter(faultnet.Upstream, carrierBindLen("unicom"))
	before := relay.Stats().Accepted
	start := time.Now()
	relay.ResetAll()
	waitState(t, e, "unicom", proxy.StateDown)
	// Three attempts per bind after the reset: at least two backoff rounds.
	if err := relay.WaitUntil(e.ctx, func(s faultnet.Stats) bool { return s.Accepted-before >= 6 && s.Resets >= 8 }); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	for i := range 3 {
		txt := fmt.Sprintf("reset-%d", i)
		if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: txt}); err != nil || r.Status != 0 {
			t.Fatalf("submit while the carrier's binds are reset: %v 0x%X, want OK by modem", err, r.Status)
		}
	}
	got := waitDelivered(t, e, sims, []string{"reset-0", "reset-1", "reset-2"})
	attempts := relay.Stats().Accepted - before
	bound := 2 * (1 + int(math.Ceil(math.Log2(2*time.Since(start).Seconds()+1))))
	if attempts > bound {
		t.Fatalf("%d bind attempts in %v: more than the backoff allows (%d)", attempts, time.Since(start), bound)
	}
	for _, txt := range []string{"reset-0", "reset-1", "reset-2"} {
		if got[txt] != 1 {
			t.Fatalf("%s delivered %d times", txt, got[txt])
		}
	}
	t.Logf("binds reset after the bind PDU: %d attempts in %v (first 6 in %v), bound %d", attempts, time.Since(start), elapsed, bound)

	if err := relay.Heal(); err != nil {
		t.Fatal(err)
	}
	for e.gw.Carrier("unicom").Bound() < 2 || e.gw.Health.State("unicom") != proxy.StateUp {
		select {
		case <-e.ctx.Done():
			t.Fatalf("unicom did not come back: %d bound, %v", e.gw.Carrier("unicom").Bound(), e.gw.Health.State("unicom"))
		case <-time.After(20 * time.Millisecond):
		}
	}
	n := e.smscs["unicom"].Stats().Submits
	if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: "after-heal"}); err != nil || r.Status != 0 {
		t.Fatalf("submit after heal: %v 0x%X", err, r.Status)
	}
	if err := e.smscs["unicom"].WaitUntil(e.ctx, func(s smscsim.Stats) bool { return s.Submits > n }); err != nil {
		t.Fatalf("traffic did not return to the carrier: %v", err)
	}
	if s := sims[0].Sent(); len(s) != 3 {
		t.Fatalf("the modem sent %d messages, want only the 3 sent while the carrier was down", len(s))
	}
}

// The carrier accepts the bind and then its network carries nothing back
// (the relay stalls downstream). Promise: after failover.down_after_timeouts
// unanswered submits the carrier is down; every message gets OK and goes by
// modem exactly once. The carrier did receive the unanswered ones (their
// outcome is unknown; on_unknown: resend sends them by modem as well: the
// documented at-least-once).
func TestFaultCarrierStallsAfterBind(t *testing.T) {
	var relay *faultnet.Relay
	sims, my := startModems(t, 2)
	e := startEnv(t, "bolt", withYAML(my), withYAML(failoverYAML), withRelay(t, "unicom", &relay))
	c := e.dial("platform", "secret", platform.BindTRX)
	relay.SetStall(faultnet.Downstream, true)
	var texts []string
	for i := range 5 {
		txt := fmt.Sprintf("stalled-%d", i)
		texts = append(texts, txt)
		if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13012345678", Text: txt}); err != nil || r.Status != 0 {
			t.Fatalf("submit %d to a stalled carrier: %v 0x%X, want OK", i, err, r.Status)
		}
		if i == 2 {
			if st := e.gw.Health.State("unicom"); st != proxy.StateDown {
				t.Fatalf("unicom is %v after 3 unanswered submits, want down", st)
			}
		}
	}
	waitDelivered(t, e, sims, texts)
	byModem := map[string]int{}
	for _, s := range sims {
		for _, m := range s.Sent() {
			byModem[m.Text]++
		}
	}
	for _, txt := range texts {
		if byModem[txt] != 1 {
			t.Fatalf("%s sent %d times by modem, want exactly once", txt, byModem[txt])
		}
	}
	if st := relay.Stats(); st.Upstream == 0 {
		t.Fatalf("relay %+v", st)
	}
	t.Logf("carrier received %d of the submits whose answers never came back", e.smscs["unicom"].Stats().Submits)
}

// boltFile finds the embedded store's bbolt file of e, spareline.db (by
// name: the write-ahead log beside it, preallocated, is larger).
func boltFile(t *testing.T, e *env) string {
	t.Helper()
	m := regexp.MustCompile(`store: \{ path: "([^"]+)" \}`).FindStringSubmatch(e.cfgYAML)
	if m == nil {
		t.Fatal("no store path in the config")
	}
	var file string
	_ = filepath.Walk(m[1], func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Name() == "spareline.db" {
			file = p
		}
		return nil
	})
	if file == "" {
		t.Fatal("no store file")
	}
	return file
}

// The disk under the embedded store fills up. Simulated without root by
// lowering this process's RLIMIT_FSIZE to the store file's current size: the
// file cannot grow (EFBIG; Go ignores SIGXFSZ), as on a full disk. Promise:
// submits are refused with a status platforms retry (ESME_RMSGQFUL or
// ESME_RSYSERR), never OK'd, the session stays up, the process lives, and
// when space returns submits are accepted again.
func TestFaultStoreDiskFull(t *testing.T) {
	e := startEnv(t, "bolt")
	c := e.dial("platform", "secret", platform.BindTRX)
	if r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: "before"}); err != nil || r.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, r.Status)
	}
	file := boltFile(t, e)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	restore := sync.OnceFunc(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Errorf("restore RLIMIT_FSIZE: %v", err)
		}
	})
	t.Cleanup(restore)
	// The limit is the whole process's: the test binary's own log of the
	// files and environment it used (go test's -test.testlogfile, for its
	// cache) must still be able to grow meanwhile, or the run fails on
	// "file too large" after every test passed. So the limit sits a margin
	// above that log when the log is the larger file (the store then fills
	// up to the limit instead of its own size).
	limit := uint64(fi.Size())
	if lf := flag.Lookup("test.testlogfile"); lf != nil && lf.Value.String() != "" {
		if li, err := os.Stat(lf.Value.String()); err == nil {
			limit = max(limit, uint64(li.Size())+256<<10)
		}
	}
	full := syscall.Rlimit{Cur: limit, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}
	refusedAt, status := -1, uint32(0)
	var okTexts []string
	for i := range 20000 {
		txt := fmt.Sprintf("fill-%05d", i)
		r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: txt + " padding the store with a longer text"})
		if err != nil {
			restore()
			t.Fatalf("submit %d on a full disk: %v (the session must stay up)", i, err)
		}
		if r.Status != 0 {
			refusedAt, status = i, r.Status
			break
		}
		okTexts = append(okTexts, txt)
	}
	if refusedAt < 0 {
		restore()
		t.Fatal("20000 submits accepted with a store file that cannot grow")
	}
	if status != stMsgQFul && status != stSysErr {
		restore()
		t.Fatalf("full store answered 0x%X, want ESME_RMSGQFUL or ESME_RSYSERR", status)
	}
	// Still full: refused again, the session answers, nothing OK'd.
	for i := range 3 {
		r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: fmt.Sprintf("while-full-%d", i)})
		if err != nil || (r.Status != stMsgQFul && r.Status != stSysErr) {
			restore()
			t.Fatalf("submit while full: %v 0x%X, want a retryable refusal", err, r.Status)
		}
	}
	if err := c.EnquireLink(e.ctx); err != nil {
		restore()
		t.Fatalf("session not alive on a full disk: %v", err)
	}
	restore()
	// Space is back: the store probe clears the outage; the platform retries.
	for {
		r, err := c.Submit(e.ctx, platform.Submit{Dest: "13800138000", Text: "after-space"})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == 0 {
			break
		}
		if r.Status != stMsgQFul && r.Status != stSysErr {
			t.Fatalf("after space returned: 0x%X", r.Status)
		}
		select {
		case <-e.ctx.Done():
			t.Fatal("submits never accepted again after space returned")
		case <-time.After(50 * time.Millisecond): // the platform's retry interval
		}
	}
	t.Logf("store file %d bytes, limit %d: %d submits accepted before the first refusal (0x%X)", fi.Size(), limit, refusedAt, status)
	e.assertRelays(t)
}

var (
	stMsgQFul = uint32(0x14) // ESME_RMSGQFUL
	stSysErr  = uint32(0x08) // ESME_RSYSERR
	stSubFail = uint32(0x45) // ESME_RSUBMITFAIL
)

// Hostile-input gaps (see hostile_test.go for the rest).
func TestHostileGaps(t *testing.T) {
	e := startEnv(t, "bolt")
	cases := []struct {
		name string
		run  func(t *testing.T, r *rawConn)
	}{
		// A data_coding reserved both in SMPP 3.4 §5.2.19 and in 3GPP TS
		// 23.038 §4 (groups 0x80-0xBF, alphabet 11: 0x0C, 0x1C), or
		// compressed (0x3F, 0x7F), is refused with ESME_RSUBMITFAIL, the
		// session lives; TS 23.038 values platforms send (0x10 GSM class 0
		// "flash", 0x11, 0xD0 message waiting, 0xF1 GSM class 1) relay.
		{"reserved data_coding", func(t *testing.T, r *rawConn) {
			r.bind(idBindTX)
			for i, dc := range []byte{0x0C, 0x1C, 0x3F, 0x7F, 0x80, 0xBF} {
				seq := uint32(2 + i)
				r.send(idSubmitSM, seq, submitBody("13800138000", 0, dc, 5, []byte("hello")))
				r.expect(idSubmitSM|respBit, stSubFail, seq)
			}
			r.alive(20)
			for i, dc := range []byte{0x10, 0x11, 0xD0, 0xF1} {
				seq := uint32(21 + i)
				r.send(idSubmitSM, seq, submitBody("13800138000", 0, dc, 5, []byte("hello")))
				r.expect(idSubmitSM|respBit, 0, seq)
			}
		}},
		// Beyond smpp.max_command_length (default 65536): generic_nack
		// ESME_RINVCMDLEN, then the gateway closes (it cannot resync).
		{"command_length beyond max_command_length", func(t *testing.T, r *rawConn) { badLength(r, 65537) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, e.rawDial(t))
			e.assertRelays(t)
		})
	}
}

// 200 bound connections each hold a half-sent submit_sm announcing the
// largest allowed PDU. Promise: the gateway's heap stays bounded and a
// normal client keeps relaying meanwhile. A body grows with the octets that
// arrive (proxy/smpp.go readBody), so a session costs its buffers (about
// 45 KiB measured), not the announced 64 KiB: the bound is twice the
// announced total (200 × 64 KiB = 12.5 MiB), room for the race detector.
func TestHostileHalfPDUsMemoryBounded(t *testing.T) {
	e := startEnv(t, "bolt")
	e.assertRelays(t)
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	const n = 200
	conns := make([]*rawConn, n)
	for i := range conns {
		r := e.rawDial(t)
		r.bind(idBindTX)
		h := binary.BigEndian.AppendUint32(nil, 65536)
		h = binary.BigEndian.AppendUint32(h, idSubmitSM)
		h = binary.BigEndian.AppendUint32(h, 0)
		h = binary.BigEndian.AppendUint32(h, 2)
		r.writeRaw(append(h, make([]byte, 1000)...))
		conns[i] = r
	}
	e.assertRelays(t)
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(base.HeapInuse)
	t.Logf("heap in use: %d KiB before, %d KiB with %d half PDUs (+%d KiB)", base.HeapInuse>>10, after.HeapInuse>>10, n, grew>>10)
	if grew > 2*n*65536 {
		t.Fatalf("heap grew by %d MiB with %d half PDUs held", grew>>20, n)
	}
}
