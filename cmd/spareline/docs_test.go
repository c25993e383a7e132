package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The grace a service manager gives a stop is said in three places; they
// agree, and leave room for the drain (--drain 30s) and the unbinds after it
// (2 s for the platforms, 2 s for the carriers: proxy Session.Unbind).
func TestDocsStopGraceAgrees(t *testing.T) {
	found := map[string]int{}
	for _, f := range []struct{ file, re string }{
		{"Dockerfile", `docker stop -t (\d+)`},
		{"docs/operations.md", `docker stop -t (\d+)`},
		{"docs/operations.md", `stop_grace_period: (\d+)s`},
		{"deploy/spareline.service", `TimeoutStopSec=(\d+)s`},
	} {
		ms := regexp.MustCompile(f.re).FindAllStringSubmatch(readRepoFile(t, f.file), -1)
		if len(ms) == 0 {
			t.Errorf("%s: no %s", f.file, f.re)
		}
		for _, m := range ms {
			n, _ := strconv.Atoi(m[1])
			found[f.file+": "+m[0]] = n
		}
	}
	want := found["deploy/spareline.service: TimeoutStopSec=45s"]
	if want < 30+2+2 {
		t.Fatalf("TimeoutStopSec %ds leaves no room after the 30 s drain and the unbinds", want)
	}
	for where, n := range found {
		if n != want {
			t.Errorf("%s: %d s, but deploy/spareline.service says %d s", where, n, want)
		}
	}
}

// docs/operations.md says what the code does: a reload applies modems
// (proxy Gateway.Reload: Pool.Reconfigure), and a bind refused for
// credentials waits authRetry*3/4 plus up to authRetry/2 (proxy/carrier.go,
// authRetry 5 minutes): 3m45s to 6m15s.
func TestDocsOperationsMatchCode(t *testing.T) {
	ops := readRepoFile(t, "docs/operations.md")
	for _, wrong := range []string{"Changes to `modems` take effect at the next start", "(4-6, jittered)"} {
		if strings.Contains(ops, wrong) {
			t.Errorf("docs/operations.md says %q", wrong)
		}
	}
	if n := strings.Count(ops, "3m45s to 6m15s"); n < 3 {
		t.Errorf("docs/operations.md gives the credentials retry as 3m45s to 6m15s %d times, want 3 (troubleshooting, status page, reload)", n)
	}
}

// The README's command table says where spareline check writes (problems
// on stderr, "FILE: ok" on stdout: TestCheckNamesKeyAndLine), so that a
// script capturing its stdout is not surprised.
func TestDocsCheckSaysWhereItWrites(t *testing.T) {
	readme := readRepoFile(t, "README.md")
	i := strings.Index(readme, "| `spareline check --config FILE` |")
	if i < 0 {
		t.Fatal("README has no row for spareline check")
	}
	row := readme[i : i+strings.Index(readme[i:], "\n")]
	if !strings.Contains(row, "`FILE: ok` on stdout") || !strings.Contains(row, "on stderr") {
		t.Errorf("README's check row does not say FILE: ok goes to stdout and problems to stderr: %s", row)
	}
}
