package bench

import (
	"errors"
	"testing"
)

func TestParseInfoInt(t *testing.T) {
	info := "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n"
	if n, err := parseInfoInt(info, "used_memory"); err != nil || n != 1048576 {
		t.Fatalf("used_memory = %d, %v; want 1048576", n, err)
	}
	var pe *ParseError
	if _, err := parseInfoInt(info, "used_memory_rss"); !errors.As(err, &pe) || pe.Text != "" {
		t.Fatalf("missing field: %v, want a ParseError without text", err)
	}
	if _, err := parseInfoInt(info, "used_memory_human"); !errors.As(err, &pe) || pe.Field != "used_memory_human" {
		t.Fatalf("non-numeric field: %v, want a ParseError naming it", err)
	}
}

func TestParseStatusKB(t *testing.T) {
	st := "Name:\tbench\nVmRSS:\t   20480 kB\nThreads:\t7\n"
	if n, err := parseStatusKB(st, "VmRSS"); err != nil || n != 20480*1024 {
		t.Fatalf("VmRSS = %d, %v", n, err)
	}
	if _, err := parseStatusKB(st, "Threads"); err == nil {
		t.Fatal("a field without kB was read as a size")
	}
	if got := cpuModel("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n"); got != "Intel(R) Xeon(R) CPU @ 2.20GHz" {
		t.Fatalf("cpuModel = %q", got)
	}
}

// FuzzParsers feeds arbitrary text to the report parsers: they must not
// panic, and a success must be a non-negative size.
func FuzzParsers(f *testing.F) {
	f.Add("used_memory:123\r\n")
	f.Add("VmRSS:\t 12 kB\n")
	f.Add("model name : x\n")
	f.Add("used_memory:-\r\nVmRSS: kB kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseInfoInt(s, "used_memory")
		if n, err := parseStatusKB(s, "VmRSS"); err == nil && n < 0 {
			t.Fatalf("negative size %d", n)
		}
		_ = cpuModel(s)
	})
}
