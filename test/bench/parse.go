package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ParseError says which field of a text report could not be read.
type ParseError struct {
	Field string
	Text  string // the offending line, or "" when the field is missing
}

func (e *ParseError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("bench: no %s field", e.Field)
	}
	return fmt.Sprintf("bench: %s: cannot read %q", e.Field, e.Text)
}

// parseInfoInt reads an integer field of Redis INFO output ("name:value"
// lines, CRLF separated; https://redis.io/commands/info).
func parseInfoInt(info, field string) (int64, error) {
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok || k != field {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, &ParseError{Field: field, Text: line}
		}
		return n, nil
	}
	return 0, &ParseError{Field: field}
}

// parseStatusKB reads a "Name:   1234 kB" field of /proc/<pid>/status
// (proc(5)) and returns it in bytes.
func parseStatusKB(status, field string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, &ParseError{Field: field, Text: line}
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return 0, &ParseError{Field: field, Text: line}
		}
		return n * 1024, nil
	}
	return 0, &ParseError{Field: field}
}

// vmRSS is this process's resident set size in bytes.
func vmRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return parseStatusKB(string(b), "VmRSS")
}

// cpuModel is the first "model name" of /proc/cpuinfo, "" if none.
func cpuModel(cpuinfo string) string {
	for line := range strings.SplitSeq(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
