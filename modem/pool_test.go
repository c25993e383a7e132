package modem_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
	"go.bug.st/serial"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func startSim(t testing.TB, name string, o modemsim.Options) *modemsim.Sim {
	t.Helper()
	o.Name = name
	s, err := modemsim.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// startPool runs a pool over real ptys opened with go.bug.st/serial.
func startPool(t testing.TB, sims []*modemsim.Sim, maxPerMinute int, tune func(*modem.PoolOptions)) *modem.Pool {
	t.Helper()
	var cfgs []modem.Config
	for i, s := range sims {
		cfgs = append(cfgs, modem.Config{Name: fmt.Sprintf("m%d", i), Device: s.Path(), Baud: 115200, MaxPerMinute: maxPerMinute})
	}
	return startPoolConfigs(t, cfgs, tune)
}

// startPoolConfigs runs a pool of the given modems (names m0, m1...).
func startPoolConfigs(t testing.TB, cfgs []modem.Config, tune func(*modem.PoolOptions)) *modem.Pool {
	t.Helper()
	o := modem.PoolOptions{
		CommandTimeout: 2 * time.Second, SendTimeout: 5 * time.Second,
		ReprobeInterval: 50 * time.Millisecond, ReopenMin: 20 * time.Millisecond, ReopenMax: 100 * time.Millisecond,
	}
	if tune != nil {
		tune(&o)
	}
	p := modem.NewPool(cfgs, modem.SerialOpener, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func text(dest, s string) sms.Submit {
	return sms.Submit{Dest: dest, DataCoding: 8, Payload: ucs2(s)}
}

// ucs2 encodes s as UTF-16BE, as an SMPP platform sends data_coding 8.
func ucs2(s string) []byte {
	var b []byte
	for _, r := range s {
		if r > 0xFFFF {
			r -= 0x10000
			hi, lo := 0xD800+(r>>10), 0xDC00+(r&0x3FF)
			b = append(b, byte(hi>>8), byte(hi), byte(lo>>8), byte(lo))
			continue
		}
		b = append(b, byte(r>>8), byte(r))
	}
	return b
}

func TestTextsArriveIntactAndInOrder(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	long := strings.Repeat("0123456789", 50)
	cases := []struct {
		s    sms.Submit
		want string
	}{
		{sms.Submit{Dest: "+8613800138000", DataCoding: 0, Payload: []byte("Hello from spareline")}, "Hello from spareline"},
		{text("+8613800138000", "€[]{} extension"), "€[]{} extension"},
		{text("13800138000", "你好，世界！备用通道"), "你好，世界！备用通道"},
		{text("+8613800138000", "emoji 😀 ok"), "emoji 😀 ok"},
		{sms.Submit{Dest: "+8613800138000", DataCoding: 0, Payload: []byte(long)}, long},
	}
	for i, c := range cases {
		if _, err := p.Send(ctx, fmt.Sprint("id", i), c.s); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	got, err := sim.WaitSent(ctx, len(cases))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if got[i].Text != c.want || got[i].Dest != c.s.Dest {
			t.Errorf("message %d arrived as %q to %q, want %q to %q", i, got[i].Text, got[i].Dest, c.want, c.s.Dest)
		}
	}
	if got[1].DCS != 0 || got[2].DCS != 8 {
		t.Errorf("€[]{} sent with DCS %#x (want GSM 7-bit 0), Chinese with %#x (want UCS2 8)", got[1].DCS, got[2].DCS)
	}
	if got[len(got)-1].Parts != 4 {
		t.Errorf("500 GSM characters sent in %d parts, want 4", got[len(got)-1].Parts)
	}
}

func TestUnpluggedModemMidBatchLosesNothing(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{SendDelay: 5 * time.Millisecond})
	b := startSim(t, "b", modemsim.Options{SendDelay: 5 * time.Millisecond})
	p := startPool(t, []*modemsim.Sim{a, b}, 0, nil)
	ctx := testCtx(t, 60*time.Second)
	waitUp(t, ctx, p, "m0", "m1")

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		if i == 6 {
			a.UnplugOnNextSend() // a vanishes with a PDU in flight
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Send(ctx, fmt.Sprint("id", i), sms.Submit{Dest: "+8613800138000", Payload: []byte(fmt.Sprintf("msg %02d", i))})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("send failed: %v", err)
		}
	}
	seen := map[string]int{}
	for _, m := range append(a.Sent(), b.Sent()...) {
		seen[m.Text]++
	}
	for i := 0; i < n; i++ {
		if c := seen[fmt.Sprintf("msg %02d", i)]; c != 1 {
			t.Errorf("msg %02d sent %d times", i, c)
		}
	}
	if err := a.Replug(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, ctx, p, "m0")
}

func waitUp(t *testing.T, ctx context.Context, p *modem.Pool, names ...string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond) // polling the status API: there is no event to await
	defer tick.Stop()
	for {
		st := p.Status()
		up := 0
		for _, n := range names {
			for _, s := range st {
				if s.Name == n && s.State == modem.StateUp {
					up++
				}
			}
		}
		if up == len(names) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("modems %v not up: %+v", names, st)
		case <-tick.C:
		}
	}
}

func TestPermanentCMSErrorIsReportedAsPermanent(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0")
	sim.FailNext(28, 1) // unidentified subscriber
	_, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800000000", Payload: []byte("hi")})
	var se *modem.SendError
	if !errors.As(err, &se) || !se.Permanent || !se.NumberError || se.Code != 28 {
		t.Fatalf("want permanent number error 28, got %#v", err)
	}
	sim.FailNext(42, 1) // congestion: temporary, retried
	if _, err := p.Send(ctx, "y", sms.Submit{Dest: "+8613800000000", Payload: []byte("hi")}); err != nil {
		t.Fatalf("temporary error not retried: %v", err)
	}
	if got := sim.Sent(); len(got) != 1 || got[0].Text != "hi" {
		t.Fatalf("sim sent %+v", got)
	}
}

func TestStatusReportMappedToCallerID(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{ReportStatus: 0})
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	sent, err := p.Send(ctx, "our-42", sms.Submit{Dest: "+8613800138000", Payload: []byte("receipt please"), StatusReport: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-p.Reports():
		if r.ID != "our-42" || r.Part != 1 || r.Parts != 1 || r.Modem != sent.Modem || !r.Status.Delivered() || r.Status.MR != sent.Refs[0] {
			t.Fatalf("report %+v (status %+v) for %+v", r, r.Status, sent)
		}
	case <-ctx.Done():
		t.Fatal("no status report")
	}
}

func TestIncomingMessagesDeliveredAndDeleted(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	// One message waits in the SIM before the pool starts (AT+CMGL at start-up).
	if err := sim.Deliver("+8613900000001", "while you were down"); err != nil {
		t.Fatal(err)
	}
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	next := func() modem.Incoming { return takeIncoming(t, ctx, p) }
	if in := next(); in.Text != "while you were down" || in.From != "+8613900000001" || in.Modem != "m0" {
		t.Fatalf("got %+v", in)
	}
	waitUp(t, ctx, p, "m0")
	long := strings.Repeat("长消息分段测试。", 20) // 160 UCS2 characters: 3 parts
	if err := sim.Deliver("+8613900000002", long); err != nil {
		t.Fatal(err)
	}
	if in := next(); in.Text != long || in.From != "+8613900000002" {
		t.Fatalf("concatenated message arrived as %q", in.Text)
	}
	// The parts were deleted from the SIM (AT+CMGD after each AT+CMGR).
	if _, err := p.Send(ctx, "sync", sms.Submit{Dest: "+1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left in the SIM", n)
	}
}

func TestModemWithoutNetworkIsTakenOutAndComesBack(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	a.SetRegistered(false)
	p := startPool(t, []*modemsim.Sim{a}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	sendCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := p.Send(sendCtx, "x", sms.Submit{Dest: "+1", Payload: []byte("x")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send on an unregistered modem: %v", err)
	}
	a.SetRegistered(true)
	if _, err := p.Send(ctx, "y", sms.Submit{Dest: "+1", Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	if got := a.Sent(); len(got) != 1 || got[0].Text != "y" {
		t.Fatalf("sent %+v", got)
	}
}

func TestProbeOverPty(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	port, err := serial.Open(sim.Path(), &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	r, err := modem.Probe(testCtx(t, 10*time.Second), port)
	if err != nil {
		t.Fatal(err)
	}
	if r.Manufacturer != "SIEMENS" || r.Model != "TC35i" || r.SIM != "READY" || !r.Registered || r.SignalDBm != -73 || r.SMSC != "+8613800100500" {
		t.Fatalf("probe: %+v", r)
	}
}

// A status report names the submit by TP-MR and recipient (23.040
// §9.2.2.3). TP-MR is one octet per modem and wraps after 256 sends; a
// late report (of a send before the wrap, or of another process) with the
// same TP-MR but another recipient is not this message's receipt. The
// recipient may come back in another format (national, no '+').
func TestStatusReportMatchedByMRAndRecipient(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 10*time.Second)
	sent, err := p.Send(ctx, "our-1", sms.Submit{Dest: "+8613800138000", Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	mr := sent.Refs[0]
	if err := sim.InjectReport(mr, "+8613911112222", 0); err != nil {
		t.Fatal(err)
	}
	if err := sim.InjectReport(mr, "13800138000", 0); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"", "our-1"} {
		select {
		case r := <-p.Reports():
			if r.ID != want || r.Status.MR != mr {
				t.Fatalf("report %d (recipient %s) mapped to %q, want %q", i, r.Status.Recipient, r.ID, want)
			}
		case <-ctx.Done():
			t.Fatal("no status report")
		}
	}
}

// +CREG <stat> (27.007 §7.2): home (1), roaming (5), and the LTE
// registrations for SMS (6/7 "SMS only", 9/10 "CSFB not preferred", home
// and roaming) can send; not searching (0), searching (2), denied (3) and
// unknown (4) cannot.
func TestRegistrationStates(t *testing.T) {
	for _, tc := range []struct {
		stat int
		up   bool
	}{{1, true}, {5, true}, {6, true}, {7, true}, {9, true}, {10, true}, {0, false}, {2, false}, {3, false}, {4, false}} {
		t.Run(fmt.Sprint(tc.stat), func(t *testing.T) {
			sim := startSim(t, "a", modemsim.Options{})
			sim.SetRegStat(tc.stat)
			p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
			ctx := testCtx(t, 10*time.Second)
			if !tc.up {
				waitDown(t, ctx, p, "m0", "not registered")
				return
			}
			waitUp(t, ctx, p, "m0")
			if st := p.Status()[0]; st.Registration != tc.stat {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// The parts of a long message the platform segmented itself (its own
// concatenation UDH) go out on one modem, though the pool would otherwise
// take the other, least recently used one for the second: a handset joins
// parts only from one sender.
func TestPartsOfOneMessageGoOutOnOneModem(t *testing.T) {
	a, b := startSim(t, "a", modemsim.Options{}), startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 10*time.Second)
	p := startPool(t, []*modemsim.Sim{a, b}, 0, nil)
	waitUp(t, ctx, p, "m0", "m1")
	for i, text := range []string{"Breaker 7 tripped, ", "call the duty officer"} {
		payload := append([]byte{5, 0, 3, 0x2A, 2, byte(i + 1)}, text...)
		if _, err := p.Send(ctx, fmt.Sprint("part", i), sms.Submit{Dest: "+8613800138000", UDHI: true, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	var joined []modemsim.Message
	for _, s := range []*modemsim.Sim{a, b} {
		for _, m := range s.Sent() {
			if m.Dest == "+8613800138000" {
				joined = append(joined, m)
			}
		}
	}
	if len(joined) != 1 || joined[0].Parts != 2 || joined[0].Text != "Breaker 7 tripped, call the duty officer" {
		t.Fatalf("the handset got %+v, want the two parts joined from one modem", joined)
	}
}

// A delete refused while the pool empties the SIM at start-up: the
// messages deleted are delivered at once (before and after the refused one:
// they are no longer stored and would be lost), and the one whose delete was
// refused is read again at the next probe and delivered, once.
func TestStoredMessagesAroundARefusedDeleteAreDelivered(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	for _, txt := range []string{"first", "second", "third"} {
		if err := sim.Deliver("+8613900000001", txt); err != nil {
			t.Fatal(err)
		}
	}
	sim.FailCommand("+CMGD=2") // the second stored message (the SIM indexes from 1)
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.ReprobeInterval = 50 * time.Millisecond })
	ctx := testCtx(t, 30*time.Second)
	var got []string
	for len(got) < 3 {
		select {
		case in := <-p.Incoming():
			got = append(got, in.Text)
		case <-ctx.Done():
			t.Fatalf("delivered %q; want first, third, then second at the next probe", got)
		}
	}
	if !slices.Equal(got, []string{"first", "third", "second"}) {
		t.Fatalf("delivered %q, want first and third, then second", got)
	}
	if _, err := p.Send(ctx, "sync", sms.Submit{Dest: "+1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if n := sim.Stored(); n != 0 {
		t.Fatalf("%d messages left in the SIM", n)
	}
}

// A modem that loses its network leaves the pool with a warning: at
// --log-level warn an operator sees the backup path shrink.
func TestModemTakenOutOfServiceIsAWarning(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	core, logs := observer.New(zap.WarnLevel)
	p := startPool(t, []*modemsim.Sim{a}, 0, func(o *modem.PoolOptions) { o.Logger = zap.New(core) })
	ctx := testCtx(t, 30*time.Second)
	if _, err := p.Send(ctx, "x", sms.Submit{Dest: "+1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	a.SetRegistered(false)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for logs.FilterMessage("modem taken out of service").Len() == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("no warning when the modem lost its network; warnings: %v", logs.All())
		case <-tick.C:
		}
	}
	e := logs.FilterMessage("modem taken out of service").All()[0]
	if e.Level != zap.WarnLevel || e.ContextMap()["modem"] != "m0" {
		t.Errorf("logged %v %v, want a warning naming modem m0", e.Level, e.ContextMap())
	}
}
