// Command spareline is an SMPP gateway with a GSM-modem backup channel.
//
//	spareline run --config FILE        the gateway
//	spareline check --config FILE      validate a config, one line per problem
//	spareline demo                     the whole system on one machine
//	spareline bench                    measure throughput, latency, failover, memory (BENCHMARKS.md)
//	spareline modem probe --device P   ask a modem who and how it is
//	spareline version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
)

// version is set at build time with -ldflags "-X main.version=..."; left at
// "dev", it comes from the build information Go embeds (see buildVersion).
var version = "dev"

func init() {
	bi, _ := debug.ReadBuildInfo()
	version = buildVersion(version, bi)
}

// buildVersion is the version to print: v when the build set one (-ldflags
// "-X main.version=v1.2.0"); else the module version Go recorded (`go
// build` in a git checkout records a pseudo-version such as
// v0.0.0-20261126110346-869200e26980, with +dirty for uncommitted changes),
// or "dev+" and the commit when only vcs.revision is known; "dev" when the
// binary knows nothing (go run, go test, a copy without .git, or
// -buildvcs=false).
func buildVersion(v string, bi *debug.BuildInfo) string {
	if v != "dev" || bi == nil {
		return v
	}
	var rev string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	out := bi.Main.Version
	if out == "" || out == "(devel)" {
		if rev == "" {
			return v
		}
		out = "dev+" + rev[:min(len(rev), 12)]
	}
	if modified && !strings.HasSuffix(out, "+dirty") {
		out += "+dirty"
	}
	return out
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: spareline <command> [flags]

commands:
  run --config FILE [--log-format json|console] [--log-level info] [--drain 30s]
                                                                      run the gateway
  check --config FILE                                                 validate a config file
  demo [--http 127.0.0.1:9090] [--messages N] [--fail unicom] [--exit] [--modem-delay D] [--log]
                                                                      the whole system on one machine
  bench [--scenario NAMES] [--store redis,bolt] [--json FILE] [--cpuprofile FILE]
                                                                      measure throughput, latency, failover, memory
  modem probe --device PATH [--baud N] [--timeout D]                  query a GSM modem
  version                                                             print the version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "modem":
		return cmdModem(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "spareline", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "spareline: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

// roundedDurationEncoder writes a duration for people, as a Go duration
// rounded to the millisecond below 10 s ("722ms", "1.5s"), to the second
// above ("6m7s"), and to the microsecond below a millisecond: the
// nanoseconds of a jittered wait ("6m6.985729733s") say nothing.
func roundedDurationEncoder(d time.Duration, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(roundForLog(d).String())
}

func roundForLog(d time.Duration) time.Duration {
	switch a := d.Abs(); {
	case a < time.Millisecond:
		return d.Round(time.Microsecond)
	case a < 10*time.Second:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// newLogger builds the zap logger: JSON lines (or console) to w, sampled so
// that a flood of identical errors cannot fill a disk.
func newLogger(format, level string, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = roundedDurationEncoder // "5m54s", not a bare 354.3 whose unit a reader must guess
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("--log-format: %q is not json or console", format)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), lvl)
	// First 20 identical messages a second, then one in 100.
	core = zapcore.NewSamplerWithOptions(core, time.Second, 20, 100)
	return zap.New(core), nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "spareline.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	_, err := config.Load(*path)
	if err != nil {
		var ce *config.Errors
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintln(stderr, p.String())
			}
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "spareline.yaml", "config file")
	format := fs.String("log-format", "json", "log format: json or console")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	drain := fs.Duration("drain", 30*time.Second, "on SIGTERM, how long in-flight work may take to finish")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	log, err := newLogger(*format, *level, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErr(stderr, err)
		return 1
	}
	ctx := context.Background()
	gw, err := startGateway(ctx, cfg, log)
	if err != nil {
		log.Error("start failed", zap.Error(err))
		return 1
	}
	log.Info("spareline running", zap.String("version", version), zap.Stringer("smpp", addrOrNone(gw.SMPPAddr())),
		zap.Stringer("http", addrOrNone(gw.HTTPAddr())))

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			ncfg, err := config.Load(*path)
			if err != nil {
				// The message log is reopened all the same (logrotate's
				// postrotate signal gets its new file), before the refusal
				// is logged: once it is, the reopen is done.
				gw.ReopenMessageLog()
				log.Error("reload refused: the new config has problems; the running config stays", zap.Error(err))
				gw.NoteReloadRefused(err)
				continue
			}
			if err := gw.Reload(ncfg); err != nil {
				gw.ReopenMessageLog()
				log.Error("reload refused; the running config stays", zap.Error(err))
			}
			continue
		}
		log.Info("stopping: draining in-flight work", zap.Duration("deadline", *drain))
		dctx, cancel := context.WithTimeout(ctx, *drain)
		gw.Shutdown(dctx)
		cancel()
		log.Info("stopped")
		return 0
	}
	return 0
}

func printConfigErr(w io.Writer, err error) {
	var ce *config.Errors
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			fmt.Fprintln(w, p.String())
		}
		return
	}
	fmt.Fprintln(w, err)
}

type addrString string

func (a addrString) String() string { return string(a) }

func addrOrNone(a fmt.Stringer) fmt.Stringer {
	if a == nil || (fmt.Sprint(a) == "<nil>") {
		return addrString("none")
	}
	return a
}

// startGateway builds and starts the gateway for a config.
func startGateway(ctx context.Context, cfg *config.Config, log *zap.Logger) (*proxy.Gateway, error) {
	gw, err := proxy.NewGateway(ctx, cfg, proxy.GatewayOptions{Log: log, Version: version})
	if err != nil {
		return nil, err
	}
	if err := gw.Start(); err != nil {
		gw.Shutdown(ctx)
		return nil, err
	}
	return gw, nil
}

// parseExit is the exit status after a command's flags did not parse: 0 for
// -h/--help (the usage was asked for and printed), 2 for a usage error.
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
