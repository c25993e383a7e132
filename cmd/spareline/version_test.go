package main

import (
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
)

// `spareline version` without -X main.version tells the build Go recorded.
func TestBuildVersion(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "869200e26980a4737734ecb294366c59d613d5aa"
	for _, tt := range []struct {
		name string
		v    string
		bi   *debug.BuildInfo
		want string
	}{
		{"set by -ldflags", "v1.2.0", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-x"}}, "v1.2.0"},
		{"no build info", "dev", nil, "dev"},
		{"go build in a checkout", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261126110346-869200e26980"}, Settings: vcs(rev, "false")},
			"v0.0.0-20261126110346-869200e26980"},
		{"go build with changes", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261126110346-869200e26980+dirty"}, Settings: vcs(rev, "true")},
			"v0.0.0-20261126110346-869200e26980+dirty"},
		{"tagged", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v1.3.0"}, Settings: vcs(rev, "false")}, "v1.3.0"},
		{"revision only", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")}, "dev+869200e26980+dirty"},
		{"nothing recorded (go run, -buildvcs=false)", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
	} {
		if got := buildVersion(tt.v, tt.bi); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// The real binary prints what its build information holds (go version -m):
// the module version or the commit when Go recorded them, else "dev".
func TestVersionCommandMatchesBuildInfo(t *testing.T) {
	bin := buildSpareline(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(out))
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "spareline dev"
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/spareline/spareline" && f[2] != "(devel)":
			want = "spareline " + f[2]
		case len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision=") && want == "spareline dev":
			want = "spareline dev+" + strings.TrimPrefix(f[1], "vcs.revision=")[:12]
		}
	}
	if !strings.HasPrefix(got, want) {
		t.Errorf("spareline version printed %q, want %q (from go version -m)\n%s", got, want, info)
	}
	t.Logf("%s (build info: %s)", got, want)
}
