package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// cmdDemo runs the whole system on one machine: three simulated operator
// SMSCs, two emulated TC35i modems on pseudo-terminals, the embedded store,
// and a simulated platform sending a bulk job; midway, one operator fails
// and its traffic moves to the modems.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "127.0.0.1:9090", "status page address")
	n := fs.Int("messages", 300, "messages in the bulk job")
	fail := fs.String("fail", "unicom", "operator to take down midway: mobile, unicom or telecom")
	exit := fs.Bool("exit", false, "exit when the job is done instead of waiting for Ctrl-C")
	sendDelay := fs.Duration("modem-delay", 200*time.Millisecond, "time an emulated modem takes per SMS")
	verbose := fs.Bool("log", false, "show the gateway's log (console format)")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	tty := isTerminal(stdout)

	dir, err := os.MkdirTemp("", "spareline-demo")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	names := []string{"mobile", "unicom", "telecom"}
	samples := map[string][]string{
		"mobile":  {"13800138000", "15912345678", "19812345678"},
		"unicom":  {"13012345678", "18612345678", "16612345678"},
		"telecom": {"13312345678", "18912345678", "19912345678"},
	}
	smscs := map[string]*smscsim.SMSC{}
	var carriers strings.Builder
	for _, name := range names {
		s, err := smscsim.Start(smscsim.Options{Name: name, SystemID: "ent01", Password: "pw", ReceiptDelay: 300 * time.Millisecond})
		if err != nil {
			fmt.Fprintln(stderr, "demo:", err)
			return 1
		}
		defer s.Close()
		smscs[name] = s
		fmt.Fprintf(&carriers, "  - { name: %s, address: %q, system_id: ent01, password: pw, binds: 2, response_timeout: 2s }\n", name, s.Addr())
		say("operator SMSC %-8s simulated on %s", name, s.Addr())
	}
	var modems strings.Builder
	var sims []*modemsim.Sim
	for i := range 2 {
		sim, err := modemsim.Start(ctx, modemsim.Options{Name: fmt.Sprintf("tc35i-%d", i), Dir: dir, SendDelay: *sendDelay,
			ReportDelay: time.Second})
		if err != nil {
			fmt.Fprintln(stderr, "demo: modem emulator:", err)
			return 1
		}
		defer sim.Close()
		sims = append(sims, sim)
		fmt.Fprintf(&modems, "  - { name: gsm%d, device: %q, max_per_minute: 600 }\n", i, sim.Path())
		say("GSM modem gsm%d (emulated Siemens TC35i) on pseudo-terminal %s", i, sim.Path())
	}
	yml := fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: %q }
store: { path: %q }
accounts:
  - { system_id: platform, password: secret }
carriers:
%smodems:
%sfailover: { up_after: 10s, down_after_timeouts: 3 }
`, *httpAddr, filepath.Join(dir, "store"), carriers.String(), modems.String())
	cfg, err := config.Parse([]byte(yml), "demo.yaml")
	if err != nil {
		printConfigErr(stderr, err)
		return 1
	}
	log := zap.NewNop()
	if *verbose {
		if log, err = newLogger("console", "info", stderr); err != nil {
			return 1
		}
	}
	gw, err := startGateway(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "demo: gateway:", err)
		if errors.Is(err, syscall.EADDRINUSE) && strings.HasPrefix(err.Error(), "http.listen") {
			fmt.Fprintf(stderr, "demo: the status page address %s is taken (another demo or spareline, or another program): "+
				"run spareline demo --http 127.0.0.1:9091 (any free port; --http 127.0.0.1:0 picks one)\n", *httpAddr)
		}
		return 1
	}
	defer func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		gw.Shutdown(sctx)
	}()
	say("spareline listening for SMPP on %s (embedded store in %s)", gw.SMPPAddr(), dir)
	if a := gw.HTTPAddr(); a != nil {
		say("status page:  http://%s/status   metrics: http://%s/metrics", a, a)
	}
	for _, name := range names {
		if err := smscs[name].WaitUntil(ctx, func(st smscsim.Stats) bool { return st.Bound >= 2 }); err != nil {
			fmt.Fprintln(stderr, "demo: carriers did not bind")
			return 1
		}
	}
	cli, err := platform.Dial(ctx, gw.SMPPAddr().String(), "platform", "secret", platform.Options{Window: 16})
	if err != nil {
		fmt.Fprintln(stderr, "demo: platform bind:", err)
		return 1
	}
	defer cli.Close()
	say("platform bound as 'platform'; sending %d messages (Chinese and English), then %s fails\n", *n, *fail)

	texts := []string{"Substation 3 fault alarm: dispatch crew now.", "紧急通知：变电站三号线路故障，请立即处理。",
		"Emergency drill at 14:00, all staff to assembly point.", "防汛应急演练将于今日14时开始，请做好准备。"}
	var receipts atomic.Int64
	go func() {
		for {
			select {
			case <-cli.Receipts():
				receipts.Add(1)
			case <-ctx.Done():
				return
			}
		}
	}()
	var ok, failed atomic.Int64
	failedAt := *n / 3
	done := make(chan struct{})
	go func() {
		defer close(done)
		jobs := make(chan int)
		for range 8 {
			go func() {
				for i := range jobs {
					carrier := names[i%3]
					sm := platform.Submit{Src: "10690001", Dest: samples[carrier][i%3], Text: fmt.Sprintf("[%d] %s", i, texts[i%len(texts)]),
						RegisteredDelivery: 1}
					if r, err := cli.Submit(ctx, sm); err == nil && r.Status == 0 {
						ok.Add(1)
					} else {
						failed.Add(1)
					}
				}
			}()
		}
		for i := range *n {
			if i == failedAt {
				smscs[*fail].Stop()
				flushDown := "\n"
				if !tty {
					flushDown = ""
				}
				fmt.Fprintf(stdout, "%s>>> operator %s is DOWN: its connections are closed; spareline moves its traffic to the modems\n", flushDown, *fail)
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				close(jobs)
				return
			}
		}
		close(jobs)
	}()
	// On a terminal the progress line is rewritten in place; into a pipe or
	// a file (CI logs) a line is written when the figures change, at most
	// every 2 s, so that the log reads line by line.
	var lastLine string
	var lastAt time.Time
	progress := func() {
		modemSent := 0
		for _, s := range sims {
			modemSent += len(s.Sent())
		}
		line := fmt.Sprintf("submitted %4d/%d ok %4d | mobile %4d  unicom %4d  telecom %4d | modems %4d | receipts %4d ",
			ok.Load()+failed.Load(), *n, ok.Load(), len(smscs["mobile"].Received()), len(smscs["unicom"].Received()),
			len(smscs["telecom"].Received()), modemSent, receipts.Load())
		switch {
		case tty:
			fmt.Fprint(stdout, "\r"+line)
		case line != lastLine && time.Since(lastAt) >= 2*time.Second:
			fmt.Fprintln(stdout, strings.TrimSpace(line))
			lastLine, lastAt = line, time.Now()
		}
	}
	// flush writes the last figures when they were not written yet.
	flush := func() {
		if !tty {
			lastAt = time.Time{}
		}
		progress()
		if tty {
			fmt.Fprintln(stdout)
		}
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	finished := false
	for !finished {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return 0
		case <-done:
			finished = ok.Load()+failed.Load() >= int64(*n)
			if !finished {
				done = nil
			}
		case <-tick.C:
			if ok.Load()+failed.Load() >= int64(*n) {
				finished = true
			}
		}
		progress()
	}
	// Wait for the modems to work through the backlog, then bring the
	// operator back: it takes new traffic after its probation, and the
	// receipts it still owed arrive.
	for ctx.Err() == nil {
		depth, _, _ := gw.Store.ModemQueue(ctx)
		progress()
		if depth == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	back := false
	if ctx.Err() == nil {
		if err := smscs[*fail].Restart(); err == nil {
			back = true
			flush()
			fmt.Fprintf(stdout, ">>> operator %s is back: spareline binds to it again (it redials with a backoff of up to a minute), then after probation traffic returns to it\n", *fail)
		}
	}
	// The summary tells what happened: every receipt in (at most 30 s)
	// and, when the operator came back, spareline bound to it again (at
	// most 75 s: the longest redial backoff, jittered, and the bind).
	rebound := func() bool { return !back || gw.Health.State(*fail) != proxy.StateDown }
	settle(ctx, tick.C, time.After(30*time.Second), time.After(75*time.Second),
		func() bool { return receipts.Load() >= ok.Load() }, rebound, progress)
	flush()
	if back && rebound() {
		fmt.Fprintf(stdout, ">>> spareline is bound to %s again: on probation for 10s (failover.up_after), then traffic returns to it\n", *fail)
	}
	st := gw.Snapshot(ctx)
	for _, c := range st.Carriers {
		note := ""
		if back && c.Name == *fail && c.State == "down" {
			note = "; the operator is back, spareline has not bound to it yet (it redials with backoff)"
		}
		say("carrier %-8s %-9s since %s (%s%s)", c.Name, c.State, c.Since.Format("15:04:05"), c.Reason, note)
	}
	say("done: %d acknowledged, %d refused, %d receipts; every acknowledged message was delivered by a carrier or a modem", ok.Load(), failed.Load(), receipts.Load())
	if *exit {
		return 0
	}
	if a := gw.HTTPAddr(); a != nil {
		say("status page stays up at http://%s/status — Ctrl-C to stop", a)
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping")
	return 0
}

// settle waits until every receipt is in (or receiptsBy fires) and the
// failed operator is bound again (or reboundBy fires), showing progress at
// each tick, so that the summary that follows tells what happened: an
// operator announced back is not summed up as down because its carrier was
// still in its redial backoff when the last receipt came.
func settle(ctx context.Context, tick <-chan time.Time, receiptsBy, reboundBy <-chan time.Time,
	receiptsIn, rebound func() bool, progress func()) {
	for ctx.Err() == nil {
		if (receiptsBy == nil || receiptsIn()) && (reboundBy == nil || rebound()) {
			return
		}
		progress()
		select {
		case <-ctx.Done():
		case <-receiptsBy:
			receiptsBy = nil
		case <-reboundBy:
			reboundBy = nil
		case <-tick:
		}
	}
}

// isTerminal reports whether w is a terminal (a character device), where a
// line can be rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
