package modem_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
)

// portEvents opens real ports (modem.SerialOpener) and tells each open and
// close, by device path: "open <path>", "close <path>".
type portEvents chan string

func (ev portEvents) open(ctx context.Context, c modem.Config) (io.ReadWriteCloser, error) {
	rw, err := modem.SerialOpener(ctx, c)
	if err != nil {
		return nil, err
	}
	ev <- "open " + c.Device
	return &notedPort{ReadWriteCloser: rw, closed: func() { ev <- "close " + c.Device }}, nil
}

type notedPort struct {
	io.ReadWriteCloser
	closed func()
}

func (p *notedPort) Close() error {
	err := p.ReadWriteCloser.Close()
	p.closed()
	return err
}

// await reads events until want.
func (ev portEvents) await(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	for {
		select {
		case e := <-ev:
			if e == want {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no %q", want)
		}
	}
}

// startPoolEvents is startPoolConfigs with the ports' opens and closes told.
func startPoolEvents(t *testing.T, cfgs []modem.Config) (*modem.Pool, portEvents) {
	t.Helper()
	ev := make(portEvents, 1000)
	return runPoolWith(t, cfgs, ev.open), ev
}

// runPoolWith runs a pool of cfgs opening its ports with open, with the
// short timeouts of these tests, until the test ends.
func runPoolWith(t *testing.T, cfgs []modem.Config, open modem.Opener) *modem.Pool {
	t.Helper()
	p := modem.NewPool(cfgs, open, modem.PoolOptions{
		CommandTimeout: 2 * time.Second, SendTimeout: 30 * time.Second,
		ReprobeInterval: 50 * time.Millisecond, ReopenMin: 20 * time.Millisecond, ReopenMax: 100 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// series returns the value of gauge family{modem=name}, and whether the
// series exists.
func series(t *testing.T, family, name string) (float64, bool) {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "modem" && l.GetValue() == name {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// waitStatus polls Status until ok holds (there is no event to await).
func waitStatus(t *testing.T, ctx context.Context, p *modem.Pool, what string, ok func([]modem.ModemStatus) bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !ok(p.Status()) {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: status %+v", what, p.Status())
		case <-tick.C:
		}
	}
}

func names(st []modem.ModemStatus) []string {
	var out []string
	for _, s := range st {
		out = append(out, s.Name)
	}
	return out
}

// A modem added to a running pool is opened and takes sends.
func TestReconfigureAddsAModem(t *testing.T) {
	a, b := startSim(t, "a", modemsim.Options{}), startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	p, ev := startPoolEvents(t, []modem.Config{{Name: "add0", Device: a.Path()}})
	waitUp(t, ctx, p, "add0")
	if err := p.Reconfigure([]modem.Config{{Name: "add0", Device: a.Path()}, {Name: "add1", Device: b.Path()}}); err != nil {
		t.Fatal(err)
	}
	ev.await(t, ctx, "open "+b.Path())
	waitUp(t, ctx, p, "add0", "add1")
	if got := names(p.Status()); len(got) != 2 || got[0] != "add0" || got[1] != "add1" {
		t.Fatalf("status rows %q, want add0, add1", got)
	}
	// add0 is in the middle of a send: the next message takes add1.
	a.HoldSends(true)
	first := make(chan error, 1)
	go func() {
		_, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("x")})
		first <- err
	}()
	if err := a.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	sent, err := p.Send(ctx, "y", sms.Submit{Dest: "+8613800138000", Payload: []byte("y")})
	if err != nil || sent.Modem != "add1" {
		t.Fatalf("second send: %+v, %v; want it on the added modem", sent, err)
	}
	a.HoldSends(false)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := b.Sent(); len(got) != 1 || got[0].Text != "y" {
		t.Fatalf("added modem sent %+v", got)
	}
	if v, ok := series(t, "spareline_modem_up", "add1"); !ok || v != 1 {
		t.Errorf("spareline_modem_up{modem=add1} = %v (present %v), want 1", v, ok)
	}
}

// A modem removed in the middle of a send finishes that send (reported
// once, as a success on it), takes nothing more, then its port is closed and
// it leaves Status and the metrics.
func TestReconfigureRemovesAModemMidSend(t *testing.T) {
	a, b := startSim(t, "a", modemsim.Options{}), startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	p, ev := startPoolEvents(t, []modem.Config{{Name: "rm0", Device: a.Path()}})
	waitUp(t, ctx, p, "rm0")
	if _, ok := series(t, "spareline_modem_up", "rm0"); !ok {
		t.Fatal("no spareline_modem_up{modem=rm0} while it runs")
	}

	a.HoldSends(true)
	type result struct {
		sent *modem.Sent
		err  error
	}
	first := make(chan result, 1)
	go func() {
		sent, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("in flight")})
		first <- result{sent, err}
	}()
	if err := a.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	// rm0 is swapped for rm1 while its AT+CMGS waits for the answer.
	if err := p.Reconfigure([]modem.Config{{Name: "rm1", Device: b.Path()}}); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); len(st) != 2 || st[0].Name != "rm1" || st[1].Name != "rm0" || st[1].State != modem.StateClosing {
		t.Fatalf("status after the reload: %+v; want rm1, then rm0 closing", st)
	}
	// A message sent now waits for rm1: rm0 takes nothing new.
	sent, err := p.Send(ctx, "y", sms.Submit{Dest: "+8613800138000", Payload: []byte("after the reload")})
	if err != nil || sent.Modem != "rm1" {
		t.Fatalf("send after the reload: %+v, %v; want it on rm1", sent, err)
	}
	select {
	case e := <-ev:
		if e == "close "+a.Path() {
			t.Fatal("rm0's port closed in the middle of its send")
		}
	default:
	}
	a.HoldSends(false)
	r := <-first
	if r.err != nil || r.sent.Modem != "rm0" {
		t.Fatalf("the send in flight on the removed modem: %+v, %v; want its success on rm0", r.sent, r.err)
	}
	ev.await(t, ctx, "close "+a.Path())
	waitStatus(t, ctx, p, "rm0 leaves the status", func(st []modem.ModemStatus) bool {
		return len(st) == 1 && st[0].Name == "rm1"
	})
	for _, f := range []string{"spareline_modem_up", "spareline_modem_signal_dbm"} {
		if _, ok := series(t, f, "rm0"); ok {
			t.Errorf("%s{modem=rm0} still there after its removal", f)
		}
	}
	if _, err := p.Send(ctx, "z", sms.Submit{Dest: "+8613800138000", Payload: []byte("later")}); err != nil {
		t.Fatal(err)
	}
	if got := a.Sent(); len(got) != 1 || got[0].Text != "in flight" {
		t.Fatalf("removed modem sent %+v; want the message in flight, once", got)
	}
	if got := b.Sent(); len(got) != 2 {
		t.Fatalf("new modem sent %+v; want the two later messages", got)
	}
	if n := a.Count("+CMGS="); n != 1 {
		t.Fatalf("removed modem got %d AT+CMGS, want 1", n)
	}
}

// A send that fails on a modem removed meanwhile is retried on another.
func TestReconfigureFailedSendOnRemovedModemIsRetried(t *testing.T) {
	a, b := startSim(t, "a", modemsim.Options{}), startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	p, ev := startPoolEvents(t, []modem.Config{{Name: "rt0", Device: a.Path()}})
	waitUp(t, ctx, p, "rt0")
	a.HoldSends(true)
	a.FailNext(42, 1) // congestion: temporary
	first := make(chan error, 1)
	var sent *modem.Sent
	go func() {
		var err error
		sent, err = p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("retried")})
		first <- err
	}()
	if err := a.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Reconfigure([]modem.Config{{Name: "rt1", Device: b.Path()}}); err != nil {
		t.Fatal(err)
	}
	a.HoldSends(false)
	if err := <-first; err != nil || sent.Modem != "rt1" {
		t.Fatalf("send failed on the removed modem: %+v, %v; want it retried on rt1", sent, err)
	}
	ev.await(t, ctx, "close "+a.Path())
	if len(a.Sent()) != 0 || len(b.Sent()) != 1 {
		t.Fatalf("sent %+v on the removed modem, %+v on the new one", a.Sent(), b.Sent())
	}
}

// A modem whose device path changes (the same name) has its old port
// closed and the new one opened; Status and the metrics follow. Its
// max_per_minute alone changes in place, without closing the port.
func TestReconfigureChangesAModemsDevice(t *testing.T) {
	a, b := startSim(t, "a", modemsim.Options{}), startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	p, ev := startPoolEvents(t, []modem.Config{{Name: "ch0", Device: a.Path(), MaxPerMinute: 5}})
	waitUp(t, ctx, p, "ch0")
	ev.await(t, ctx, "open "+a.Path())
	if err := p.Reconfigure([]modem.Config{{Name: "ch0", Device: a.Path(), MaxPerMinute: 7}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Reconfigure([]modem.Config{{Name: "ch0", Device: b.Path(), MaxPerMinute: 7}}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-ev:
		if e != "close "+a.Path() { // the max_per_minute change did not reopen it
			t.Fatalf("after the reloads: %q, want the old port closed first", e)
		}
	case <-ctx.Done():
		t.Fatal("the old port was not closed")
	}
	ev.await(t, ctx, "open "+b.Path())
	waitStatus(t, ctx, p, "ch0 up on the new device", func(st []modem.ModemStatus) bool {
		return len(st) == 1 && st[0].Name == "ch0" && st[0].Device == b.Path() && st[0].State == modem.StateUp
	})
	if v, ok := series(t, "spareline_modem_up", "ch0"); !ok || v != 1 {
		t.Errorf("spareline_modem_up{modem=ch0} = %v (present %v), want 1", v, ok)
	}
	sent, err := p.Send(ctx, "x", sms.Submit{Dest: "+8613800138000", Payload: []byte("x")})
	if err != nil || sent.Modem != "ch0" {
		t.Fatalf("send: %+v, %v", sent, err)
	}
	if len(a.Sent()) != 0 || len(b.Sent()) != 1 {
		t.Fatalf("sent %+v on the old device, %+v on the new one", a.Sent(), b.Sent())
	}
}

// exclusivePorts opens real ports (modem.SerialOpener), tells each open
// and close by device path as portEvents does, and notes every open of a
// device path another handle still holds (two owners of one tty).
type exclusivePorts struct {
	ev portEvents

	mu      sync.Mutex
	held    map[string]string // device path -> the modem holding it
	doubles []string
}

func newExclusivePorts() *exclusivePorts {
	return &exclusivePorts{ev: make(portEvents, 1000), held: map[string]string{}}
}

func (x *exclusivePorts) open(ctx context.Context, c modem.Config) (io.ReadWriteCloser, error) {
	x.mu.Lock()
	if h, ok := x.held[c.Device]; ok {
		x.doubles = append(x.doubles, fmt.Sprintf("%s opened %s while %s held it", c.Name, c.Device, h))
	}
	x.mu.Unlock()
	rw, err := modem.SerialOpener(ctx, c)
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	x.held[c.Device] = c.Name
	x.mu.Unlock()
	x.ev <- "open " + c.Device
	return &notedPort{ReadWriteCloser: rw, closed: func() {
		x.mu.Lock()
		if x.held[c.Device] == c.Name {
			delete(x.held, c.Device)
		}
		x.mu.Unlock()
		x.ev <- "close " + c.Device
	}}, nil
}

func (x *exclusivePorts) check(t *testing.T) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.doubles) > 0 {
		t.Fatalf("a device opened twice at once: %q", x.doubles)
	}
}

// startPoolExclusive is startPoolEvents over exclusivePorts.
func startPoolExclusive(t *testing.T, cfgs []modem.Config) (*modem.Pool, *exclusivePorts) {
	t.Helper()
	x := newExclusivePorts()
	return runPoolWith(t, cfgs, x.open), x
}

type sendResult struct {
	sent *modem.Sent
	err  error
}

func sendAsync(ctx context.Context, p *modem.Pool, id, text string) chan sendResult {
	r := make(chan sendResult, 1)
	go func() {
		sent, err := p.Send(ctx, id, sms.Submit{Dest: "+8613800138000", Payload: []byte(text)})
		r <- sendResult{sent, err}
	}()
	return r
}

func awaitResult(t *testing.T, ctx context.Context, r chan sendResult) sendResult {
	t.Helper()
	select {
	case v := <-r:
		return v
	case <-ctx.Done():
		t.Fatal("no answer to the send")
		return sendResult{}
	}
}

// A modem renamed by a reload keeping its device, in the middle of a send:
// the new name opens the device only once the send has ended and the old
// owner has closed the port (never two owners of one tty, whose commands
// would land in the held AT+CMGS); the send is reported once.
func TestReconfigureRenameKeepingTheDeviceMidSend(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	p, x := startPoolExclusive(t, []modem.Config{{Name: "rn0", Device: a.Path()}})
	waitUp(t, ctx, p, "rn0")
	x.ev.await(t, ctx, "open "+a.Path())

	a.HoldSends(true)
	first := sendAsync(ctx, p, "x", "in flight")
	if err := a.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Reconfigure([]modem.Config{{Name: "rn1", Device: a.Path()}}); err != nil {
		t.Fatal(err)
	}
	a.HoldSends(false)
	r := awaitResult(t, ctx, first)
	if r.err != nil || r.sent.Modem != "rn0" {
		t.Fatalf("the send in flight: %+v, %v; want its success on rn0", r.sent, r.err)
	}
	x.ev.await(t, ctx, "close "+a.Path())
	x.ev.await(t, ctx, "open "+a.Path())
	waitUp(t, ctx, p, "rn1")
	x.check(t)
	sent, err := p.Send(ctx, "y", sms.Submit{Dest: "+8613800138000", Payload: []byte("after")})
	if err != nil || sent.Modem != "rn1" {
		t.Fatalf("send after the rename: %+v, %v; want it on rn1", sent, err)
	}
	if got := a.Sent(); len(got) != 2 || got[0].Text != "in flight" || got[1].Text != "after" {
		t.Fatalf("sent %+v; want the message in flight once, then the later one", got)
	}
	if n := a.Count("+CMGS="); n != 2 {
		t.Fatalf("%d AT+CMGS, want 2", n)
	}
	x.check(t)
}

// Two modems whose device paths a reload swaps ("ttyUSB0 and ttyUSB1 came
// up swapped"), one of them in the middle of a send: each device is opened
// by its new owner only after its old owner closed it.
func TestReconfigureSwapsDevicesMidSend(t *testing.T) {
	a, b := startSim(t, "a", modemsim.Options{}), startSim(t, "b", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	p, x := startPoolExclusive(t, []modem.Config{{Name: "sw0", Device: a.Path()}, {Name: "sw1", Device: b.Path()}})
	waitUp(t, ctx, p, "sw0", "sw1")

	a.HoldSends(true)
	first := sendAsync(ctx, p, "x", "in flight")
	if err := a.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	if err := p.Reconfigure([]modem.Config{{Name: "sw0", Device: b.Path()}, {Name: "sw1", Device: a.Path()}}); err != nil {
		t.Fatal(err)
	}
	// sw1 was idle: its port (b) closes at once and its successor (on a)
	// takes its row; a is still held by sw0, mid-send.
	waitStatus(t, ctx, p, "sw1 on its new device", func(st []modem.ModemStatus) bool {
		for _, s := range st {
			if s.Name == "sw1" && s.Device == a.Path() {
				return true
			}
		}
		return false
	})
	a.HoldSends(false)
	r := awaitResult(t, ctx, first)
	if r.err != nil || r.sent.Modem != "sw0" {
		t.Fatalf("the send in flight: %+v, %v; want its success on sw0", r.sent, r.err)
	}
	waitStatus(t, ctx, p, "both up on their new devices", func(st []modem.ModemStatus) bool {
		ok := 0
		for _, s := range st {
			if s.State == modem.StateUp && (s.Name == "sw0" && s.Device == b.Path() || s.Name == "sw1" && s.Device == a.Path()) {
				ok++
			}
		}
		return len(st) == 2 && ok == 2
	})
	x.check(t)
	if got := a.Sent(); len(got) != 1 || got[0].Text != "in flight" {
		t.Fatalf("a sent %+v; want the message in flight, once", got)
	}
	if n := a.Count("+CMGS="); n != 1 {
		t.Fatalf("a got %d AT+CMGS, want 1", n)
	}
	for _, id := range []string{"y", "z"} {
		if _, err := p.Send(ctx, id, sms.Submit{Dest: "+8613800138000", Payload: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	x.check(t)
}

// A modem removed right after it took an incoming message or a status
// report off the modem (deleted from the SIM, or acknowledged) still hands
// it over: the removal ends the modem's owner, not the delivery.
func TestReconfigureRemovalKeepsWhatTheModemTook(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	ctx := testCtx(t, 30*time.Second)
	taken, release := make(chan string), make(chan struct{})
	restore := modem.SetTakenHook(func(name string) {
		if name == "last" {
			return
		}
		taken <- name
		<-release
	})
	t.Cleanup(restore) // after the pool has stopped (cleanups run last first)
	p, ev := startPoolEvents(t, nil)
	// Each round, a modem on a takes one message; it is removed before it
	// hands it over. A loss is a coin toss: several rounds.
	const rounds = 8
	var wantTexts []string
	var wantMRs []int
	for i := range rounds {
		name := fmt.Sprintf("in%d", i)
		if err := p.Reconfigure([]modem.Config{{Name: name, Device: a.Path()}}); err != nil {
			t.Fatal(err)
		}
		waitUp(t, ctx, p, name)
		if i%2 == 0 {
			text := fmt.Sprintf("mo %d", i)
			wantTexts = append(wantTexts, text)
			if err := a.Deliver("+8613900139000", text); err != nil {
				t.Fatal(err)
			}
		} else {
			wantMRs = append(wantMRs, 100+i)
			if err := a.InjectReport(100+i, "+8613800138000", 0); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case got := <-taken:
			if got != name {
				t.Fatalf("taken by %s, want %s", got, name)
			}
		case <-ctx.Done():
			t.Fatalf("%s took nothing", name)
		}
		if err := p.Reconfigure(nil); err != nil { // ends the owner's context now
			t.Fatal(err)
		}
		release <- struct{}{}
		ev.await(t, ctx, "close "+a.Path())
	}
	// A last modem hands over one of each; everything before it must come
	// first, in order.
	if err := p.Reconfigure([]modem.Config{{Name: "last", Device: a.Path()}}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, ctx, p, "last")
	if err := a.Deliver("+8613900139000", "control"); err != nil {
		t.Fatal(err)
	}
	if err := a.InjectReport(200, "+8613800138000", 0); err != nil {
		t.Fatal(err)
	}
	wantTexts, wantMRs = append(wantTexts, "control"), append(wantMRs, 200)
	for _, want := range wantTexts {
		select {
		case in := <-p.Incoming():
			if in.Text != want {
				t.Fatalf("incoming %q, want %q (lost in a removal)", in.Text, want)
			}
		case <-ctx.Done():
			t.Fatalf("no incoming %q", want)
		}
	}
	for _, want := range wantMRs {
		select {
		case r := <-p.Reports():
			if r.Status.MR != want {
				t.Fatalf("status report for TP-MR %d, want %d (lost in a removal)", r.Status.MR, want)
			}
		case <-ctx.Done():
			t.Fatalf("no status report for TP-MR %d", want)
		}
	}
}
