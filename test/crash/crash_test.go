package crash

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/redisserver"
	"github.com/spareline/spareline/test/smscsim"
)

// binary is the spareline binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spareline-crash")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "spareline")
	build := exec.Command("go", "build", "-o", binary, "github.com/spareline/spareline/cmd/spareline")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "crash: go build ./cmd/spareline:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The three carriers write receipt ids three ways, as real ones do.
var carriers = []struct {
	name   string
	opts   smscsim.Options
	mode   string // receipt_id setting
	sample string // a number of this operator
}{
	{"mobile", smscsim.Options{IDFormat: smscsim.IDDecimal, ReceiptIDFormat: smscsim.ReceiptSame}, "as_is", "13800138000"},
	{"unicom", smscsim.Options{IDFormat: smscsim.IDDecimal, ReceiptIDFormat: smscsim.ReceiptHex, FirstID: 900000}, "hex", "13012345678"},
	{"telecom", smscsim.Options{IDFormat: smscsim.IDHex, ReceiptIDFormat: smscsim.ReceiptDecimal, FirstID: 0xABC000}, "decimal", "13312345678"},
}

const (
	newPerCycle = 60                    // new messages in each cycle's bulk, at most
	pace        = 15 * time.Millisecond // between two submits of a bulk: the bulk spans the kill window
	window      = 8                     // submits outstanding at once
	killWithin  = time.Second           // the kill comes at a random moment this long after the platform bound
	settleLimit = 3 * time.Minute       // the final check's bound (the queue lease is 20s, the timer lease 15s)
)

// world is everything that survives the kills.
type world struct {
	t       *testing.T
	ctx     context.Context
	kind    string
	rng     *rand.Rand
	smscs   map[string]*smscsim.SMSC
	modems  []*modemsim.Sim
	cfgPath string
	addr    string // spareline's SMPP address, the same across restarts
	storeAt string // the Redis URL or the bbolt directory, for the diagnosis of a failure

	children []*child // every run, for the diagnosis of a failure

	mu       sync.Mutex
	submits  []Submit
	receipts []Receipt
	pending  []platform.Submit // sent without an OK: the platform sends them again
	next     int               // next new message number
	kills    int
}

func cycles(t *testing.T) int {
	n := 50
	if v := os.Getenv("SPARELINE_CRASH_CYCLES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("SPARELINE_CRASH_CYCLES=%q: want a positive integer", v)
		}
	}
	return n
}

func seed(t *testing.T) int64 {
	if v := os.Getenv("SPARELINE_CRASH_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("SPARELINE_CRASH_SEED=%q: want an integer", v)
		}
		return s
	}
	return time.Now().UnixNano()
}

// TestCrashKill9 kills spareline with SIGKILL at random moments of a bulk,
// SPARELINE_CRASH_CYCLES times (default 50) per store, Redis first, then the
// embedded store, and checks the history: nothing acknowledged is lost,
// every requested receipt arrives, duplicates are counted.
func TestCrashKill9(t *testing.T) {
	n := cycles(t)
	s := seed(t)
	t.Logf("seed %d (set SPARELINE_CRASH_SEED to replay the kill points), %d kills per store", s, n)
	var reports []Report
	for i, kind := range []string{"redis", "bolt"} {
		t.Run(kind, func(t *testing.T) {
			r := runCrash(t, kind, s+int64(i), n)
			reports = append(reports, r)
		})
	}
	if path := os.Getenv("SPARELINE_CRASH_REPORT"); path != "" {
		b, _ := json.MarshalIndent(reports, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
}

func runCrash(t *testing.T, kind string, seed int64, n int) Report {
	w := newWorld(t, kind, seed)
	telecom := w.smscs["telecom"]
	telecomDown := false
	for i := range n {
		// The telecom carrier is gone for two cycles out of four, so that
		// the modem path carries traffic (and is killed in the middle of it).
		if down := i%4 >= 2; down != telecomDown {
			if down {
				telecom.Stop()
			} else if err := telecom.Restart(); err != nil {
				t.Fatal(err)
			}
			telecomDown = down
		}
		w.cycle(i)
	}
	if telecomDown {
		if err := telecom.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	r := w.final()
	r.Store, r.Seed, r.Kills = kind, seed, w.kills
	t.Logf("%d kills on the %s store:\n%s", w.kills, kind, r.Table())
	if r.Lost > 0 || r.ReceiptsLost > 0 {
		w.diagnose(r)
	}
	if r.Lost > 0 {
		t.Errorf("%d acknowledged messages delivered nowhere: %v", r.Lost, first(r.LostTokens, 20))
	}
	if r.ReceiptsLost > 0 {
		t.Errorf("%d requested receipts never reached the platform: %v", r.ReceiptsLost, first(r.LostReceiptIDs, 20))
	}
	if r.BadReceipts > 0 {
		t.Errorf("%d receipts with the wrong id: %v", r.BadReceipts, first(r.BadReceiptNotes, 20))
	}
	if r.ByModem == 0 {
		t.Error("nothing went by modem: the modem path was not exercised")
	}
	if r.Acknowledged < n*newPerCycle/2 {
		t.Errorf("only %d messages acknowledged: the platform hardly got through", r.Acknowledged)
	}
	return r
}

func first(s []string, n int) []string { return s[:min(len(s), n)] }

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newWorld(t *testing.T, kind string, seed int64, redisOpts ...redisserver.Option) *world {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	w := &world{t: t, ctx: ctx, kind: kind, rng: rand.New(rand.NewPCG(uint64(seed), 7)), smscs: map[string]*smscsim.SMSC{},
		addr: freeAddr(t)}
	var y strings.Builder
	fmt.Fprintf(&y, "smpp: { listen: %q, enquire_link: 5s }\nhttp: { listen: \"\" }\n", w.addr)
	if kind == "redis" {
		rs := redisserver.Start(t, append([]redisserver.Option{redisserver.WithAOF()}, redisOpts...)...)
		w.storeAt = rs.URL()
		fmt.Fprintf(&y, "store: { redis: %q }\n", w.storeAt)
	} else {
		w.storeAt = filepath.Join(t.TempDir(), "data")
		fmt.Fprintf(&y, "store: { path: %q }\n", w.storeAt)
	}
	y.WriteString("accounts:\n  - { system_id: platform, password: secret }\ncarriers:\n")
	for _, c := range carriers {
		o := c.opts
		o.Name, o.SystemID, o.Password = c.name, "ent01", "pw-"+c.name[:3]
		o.ReceiptDelay = 20 * time.Millisecond // some receipts are in flight at the kill
		s, err := smscsim.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		w.smscs[c.name] = s
		fmt.Fprintf(&y, "  - { name: %s, address: %q, system_id: ent01, password: %q, binds: 2, window: 32, "+
			"response_timeout: 2s, enquire_link: 5s, receipt_id: %s }\n", c.name, s.Addr(), o.Password, c.mode)
	}
	y.WriteString("routing: { country_code: \"86\", preset: cn }\nmodems:\n")
	for i := range 2 {
		m, err := modemsim.Start(ctx, modemsim.Options{Name: fmt.Sprintf("gsm%d", i), SendDelay: 2 * time.Millisecond,
			ReportDelay: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		w.modems = append(w.modems, m)
		fmt.Fprintf(&y, "  - { name: gsm%d, device: %q, max_per_minute: 100000 }\n", i, m.Path())
	}
	y.WriteString("failover: { down_after_timeouts: 3, up_after: 1s, on_unknown: resend, modem_receipt_timeout: 2s }\n")
	w.cfgPath = filepath.Join(t.TempDir(), "spareline.yaml")
	if err := os.WriteFile(w.cfgPath, []byte(y.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// child is one run of the spareline binary.
type child struct {
	cmd    *exec.Cmd
	ready  chan struct{} // closed at the "spareline running" line
	exited chan struct{} // closed when the process is gone
	mu     sync.Mutex
	log    []string // every log line, for failures and checks
}

func (c *child) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

func (c *child) tail() string {
	l := c.lines()
	return strings.Join(l[max(0, len(l)-30):], "\n")
}

// start runs `spareline run --config F` and waits for its "spareline
// running" log line.
func start(ctx context.Context, t *testing.T, cfgPath string) *child {
	t.Helper()
	// Debug: each message's life is logged, for the diagnosis of a failure.
	cmd := exec.Command(binary, "run", "--config", cfgPath, "--log-level", "debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, ready: make(chan struct{}), exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start spareline: %v", err)
	}
	t.Cleanup(func() { c.kill() })
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.log = append(c.log, line)
			c.mu.Unlock()
			if strings.Contains(line, `"spareline running"`) {
				once.Do(func() { close(c.ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
		close(c.exited)
	}()
	select {
	case <-c.ready:
	case <-c.exited:
		t.Fatalf("spareline exited before it ran: %v\n%s", cmd.ProcessState, c.tail())
	case <-ctx.Done():
		t.Fatalf("spareline never logged that it runs\n%s", c.tail())
	}
	return c
}

// kill sends SIGKILL and waits until the process is gone.
func (c *child) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// dial binds the platform, retrying while spareline's listener comes up.
func (w *world) dial() *platform.Client {
	w.t.Helper()
	var last error
	for range 50 {
		dctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		c, err := platform.Dial(dctx, w.addr, "platform", "secret", platform.Options{BindType: platform.BindTRX,
			Window: 16, ResponseTimeout: 20 * time.Second})
		cancel()
		if err == nil {
			return c
		}
		last = err
		select {
		case <-w.ctx.Done():
			w.t.Fatalf("bind: %v", last)
		case <-time.After(20 * time.Millisecond): // the listener is coming up
		}
	}
	w.t.Fatalf("the platform cannot bind: %v", last)
	return nil
}

// batch is this cycle's bulk: what the platform must send again, then new
// messages. Every fifth message asks for no receipt.
func (w *world) batch(fresh int) []platform.Submit {
	w.mu.Lock()
	defer w.mu.Unlock()
	msgs := w.pending
	w.pending = nil
	for range fresh {
		i := w.next
		w.next++
		rd := byte(1)
		if i%5 == 4 {
			rd = 0
		}
		msgs = append(msgs, platform.Submit{Src: "10690001", Dest: carriers[i%3].sample, RegisteredDelivery: rd,
			Text: fmt.Sprintf("k9-%s-%06d", w.kind[:1], i)})
	}
	return msgs
}

// record adds a client's history and keeps what must be sent again.
func (w *world) record(msgs []platform.Submit, res []platform.SubmitResult, h platform.History) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, m := range msgs {
		r := res[i]
		if errors.Is(r.Err, errNotSent) {
			w.pending = append(w.pending, m)
			continue
		}
		answered := r.Err == nil
		if errors.Is(r.Err, context.Canceled) {
			answered = false
		}
		w.submits = append(w.submits, Submit{Token: m.Text, Receipt: m.RegisteredDelivery&3 != 0, Answered: answered,
			Status: r.Status, ID: r.MessageID})
		if !answered || r.Status != 0 {
			w.pending = append(w.pending, m)
		}
	}
	w.addReceipts(h.Receipts)
}

func (w *world) addReceipts(rs []platform.Receipt) {
	for _, rc := range rs {
		if rc.Status != 0 {
			continue // we refused it: spareline delivers it again
		}
		w.receipts = append(w.receipts, Receipt{ID: rc.ID, TLVID: rc.TLVID, Stat: rc.Stat, Text: rc.Text})
	}
}

// cycle starts spareline, sends a bulk and kills it at a random moment.
func (w *world) cycle(i int) {
	t := w.t
	c := start(w.ctx, t, w.cfgPath)
	w.children = append(w.children, c)
	pc := w.dial()
	msgs := w.batch(newPerCycle)
	killAt := time.Duration(w.rng.Int64N(int64(killWithin)))
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		select { // the fault's moment, chosen by the seed
		case <-time.After(killAt):
		case <-w.ctx.Done():
		}
		c.kill()
	}()
	res := w.send(pc, msgs)
	<-killed
	<-pc.Done()
	_ = pc.Close()
	w.record(msgs, res, pc.History())
	w.mu.Lock()
	w.kills++
	w.mu.Unlock()
	if c.cmd.ProcessState == nil || c.cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("cycle %d: spareline ended otherwise than by our SIGKILL: %v\n%s", i, c.cmd.ProcessState, c.tail())
	}
}

// send sends msgs as a platform's bulk: one submit every pace, window at
// once. Once the connection is gone the rest are not sent (Err set).
func (w *world) send(pc *platform.Client, msgs []platform.Submit) []platform.SubmitResult {
	res := make([]platform.SubmitResult, len(msgs))
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for i := range msgs {
		if i > 0 {
			select {
			case <-tick.C:
			case <-pc.Done():
			}
		}
		acquired := false
		select {
		case sem <- struct{}{}:
			acquired = true
		case <-pc.Done():
		}
		if !acquired || isDone(pc) { // the connection is gone: the rest wait for the next one
			if acquired {
				<-sem
			}
			for j := i; j < len(msgs); j++ {
				res[j].Err = errNotSent
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := pc.Submit(w.ctx, msgs[i])
			r.Err = err
			res[i] = r
		}()
	}
	wg.Wait()
	return res
}

// errNotSent marks a message of a bulk that was never written: the
// connection was gone before its turn.
var errNotSent = errors.New("crash: not sent, the connection was gone")

func isDone(pc *platform.Client) bool {
	select {
	case <-pc.Done():
		return true
	default:
		return false
	}
}

// history is the current history at the platform and the simulators.
func (w *world) history(extra []platform.Receipt) History {
	w.mu.Lock()
	h := History{Submits: append([]Submit(nil), w.submits...), Receipts: append([]Receipt(nil), w.receipts...)}
	w.mu.Unlock()
	for _, rc := range extra {
		if rc.Status == 0 {
			h.Receipts = append(h.Receipts, Receipt{ID: rc.ID, TLVID: rc.TLVID, Stat: rc.Stat, Text: rc.Text})
		}
	}
	for _, s := range w.smscs {
		for _, m := range s.Received() {
			if m.Status == 0 && !m.Silent {
				txt, _ := m.Text()
				h.Copies = append(h.Copies, Copy{Token: txt})
			}
		}
	}
	for _, m := range w.modems {
		for _, s := range m.Sent() {
			h.Copies = append(h.Copies, Copy{Token: s.Text, Modem: true})
		}
	}
	return h
}

// final restarts spareline for good, sends what still has no OK, waits
// (bounded) until every acknowledged message and requested receipt has
// arrived, stops spareline, and checks the history.
func (w *world) final() Report {
	t := w.t
	c := start(w.ctx, t, w.cfgPath)
	w.children = append(w.children, c)
	pc := w.dial()
	defer pc.Close()
	for round := 0; ; round++ {
		msgs := w.batch(0)
		if len(msgs) == 0 {
			break
		}
		if round == 20 {
			t.Fatalf("%d messages still without an OK after 20 rounds\n%s", len(msgs), c.tail())
		}
		res := w.send(pc, msgs)
		w.record(msgs, res, platform.History{})
	}
	deadline := time.NewTimer(settleLimit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var r Report
	for {
		r = Check(w.history(pc.History().Receipts))
		if r.Settled() {
			break
		}
		select {
		case <-tick.C:
			continue
		case <-deadline.C:
			t.Logf("not settled after %v; spareline's last log lines:\n%s", settleLimit, c.tail())
		case <-w.ctx.Done():
		}
		break
	}
	// A short grace for duplicate receipts still in flight is not needed:
	// duplicates are counted, not failed.
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	<-c.exited
	w.mu.Lock()
	w.addReceipts(pc.History().Receipts)
	w.mu.Unlock()
	return Check(w.history(nil))
}
