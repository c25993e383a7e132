package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--scenario", "speed"},
		{"bench", "--store", "mysql"},
		{"bench", "--format", "xml"},
		{"bench", "--rates", "fast"},
		{"bench", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errb.String())
		}
	}
}

// A tiny latency run writes its table to stdout, progress to stderr and the
// same figures as JSON to --json, and leaves a CPU profile.
func TestBenchTinyRun(t *testing.T) {
	dir := t.TempDir()
	js, prof := filepath.Join(dir, "bench.json"), filepath.Join(dir, "cpu.pprof")
	var out, errb bytes.Buffer
	code := run([]string{"bench", "--scenario", "latency", "--store", "bolt", "--messages", "50", "--latency-rate", "500",
		"--json", js, "--cpuprofile", prof}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "added latency p99") || !strings.Contains(errb.String(), "scenario latency") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Results []struct{ Metric string } `json:"results"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Results) != 3 {
		t.Fatalf("JSON: %v, %d results:\n%s", err, len(rep.Results), b)
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile: %v", err)
	}
}
