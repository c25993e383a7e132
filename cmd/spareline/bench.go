package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/spareline/spareline/test/bench"
)

// cmdBench measures spareline on this machine (test/bench): throughput
// relayed vs direct, added latency, failover times, modem pool use and
// memory, against the floors and targets; and, when named, a soak
// with latency spikes (false downs, detection, lost messages). Progress
// goes to stderr, the results to stdout (a table, or JSON with --format
// json) and to --json FILE.
func cmdBench(args []string, stdout, stderr io.Writer) int {
	d := bench.DefaultOptions()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenarios := fs.String("scenario", "all", "scenarios, comma separated: "+strings.Join(bench.Scenarios, ", ")+", or all (which leaves out the long ones: "+
		strings.Join(bench.LongScenarios, ", ")+")")
	stores := fs.String("store", strings.Join(d.Stores, ","), "stores, comma separated: redis, bolt")
	fs.IntVar(&d.Messages, "messages", 0, "messages per load phase at most (0 = bounded by --duration)")
	fs.DurationVar(&d.Duration, "duration", d.Duration, "length of each load phase at most")
	rates := fs.String("rates", "1500,5000", "realistic: offered msg/s, comma separated")
	fs.IntVar(&d.SMSCRate, "smsc-rate", d.SMSCRate, "realistic: simulator cap per bind, msg/s")
	fs.Float64Var(&d.LatencyRate, "latency-rate", d.LatencyRate, "latency: offered msg/s")
	fs.IntVar(&d.Modems, "modems", d.Modems, "modems: emulated modems")
	fs.DurationVar(&d.ModemSend, "modem-send", d.ModemSend, "modems: time an emulated modem takes per send")
	fs.IntVar(&d.ModemPerMinute, "modem-per-minute", d.ModemPerMinute, "modems: max_per_minute of each modem")
	fs.DurationVar(&d.ModemWindow, "modem-window", d.ModemWindow, "modems: measurement window from the first send")
	fs.IntVar(&d.Backlog, "backlog", d.Backlog, "memory: messages held in flight; drain: receipts held for the platform")
	fs.IntVar(&d.Sessions, "sessions", d.Sessions, "memory: platform sessions to bind")
	fs.DurationVar(&d.Soak, "soak", d.Soak, "soak: length of the load (the issue's figure is 1h)")
	fs.Float64Var(&d.SoakRate, "soak-rate", d.SoakRate, "soak: offered msg/s over the three carriers")
	fs.DurationVar(&d.SoakSpikeMax, "soak-spike-max", d.SoakSpikeMax, "soak: highest latency of a spike (spikes are 50ms to this)")
	fs.Int64Var(&d.Seed, "seed", 0, "soak: seed of the latency spike schedule (0 = from the clock; the run prints it)")
	jsonFile := fs.String("json", "", "also write the results as JSON to this file")
	format := fs.String("format", "table", "stdout format: table or json")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	fs.StringVar(&d.HeapProfile, "memprofile", "", "memory scenario: write a heap profile while the platform sessions are bound")
	verbose := fs.Bool("log", false, "show the gateway's warnings and errors (console format, stderr)")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "bench: --format %q: want table or json\n", *format)
		return 2
	}
	if *scenarios != "all" {
		d.Scenarios = splitList(*scenarios)
	}
	d.Stores = splitList(*stores)
	d.RealisticRates = nil
	for _, s := range splitList(*rates) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f <= 0 {
			fmt.Fprintf(stderr, "bench: --rates: %q is not a positive rate\n", s)
			return 2
		}
		d.RealisticRates = append(d.RealisticRates, f)
	}
	if err := d.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	d.Progress = stderr
	if *verbose {
		log, err := newLogger("console", "warn", stderr)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		d.Log = log
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench: cpu profile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, d)
	if rep == nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench: stopped early:", err)
	}
	if *jsonFile != "" {
		f, ferr := os.Create(*jsonFile)
		if ferr == nil {
			ferr = rep.WriteJSON(f)
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
		}
		if ferr != nil {
			fmt.Fprintln(stderr, "bench: --json:", ferr)
			return 1
		}
	}
	if *format == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	if len(rep.Failures) > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
