package bench

import (
	"os"
	"testing"
	"time"
)

func TestStatCPU(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (redis-server ) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 5 0 100 0 0"
	if got, want := statCPU(line), 325*clockTick; got != want {
		t.Fatalf("statCPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "4242 redis-server S 1", "4242 (x) S 1 2 3"} {
		if got := statCPU(bad); got != 0 {
			t.Errorf("statCPU(%q) = %v, want 0", bad, got)
		}
	}
}

var spin int

func TestPidCPUGrowsWithWork(t *testing.T) {
	before := PidCPU(os.Getpid())
	deadline := time.Now().Add(5 * time.Second)
	for PidCPU(os.Getpid()) < before+3*clockTick && time.Now().Before(deadline) {
		for i := 0; i < 1e6; i++ {
			spin += i
		}
	}
	if after := PidCPU(os.Getpid()); after < before+3*clockTick {
		t.Fatalf("our own CPU time read from /proc went from %v to %v while spinning", before, after)
	}
	if PidCPU(0) != 0 {
		t.Fatal("pid 0 must read as no CPU")
	}
}
