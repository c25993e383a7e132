package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a configuration file.
//
// Msg never contains a password (nor a PIN): messages about secrets name the
// key, the environment variable or the file, never the value.
type Problem struct {
	// File is the name the configuration was loaded from.
	File string
	// Key is the key path, e.g. "carriers[1].response_timeout"; empty for a
	// problem with the file as a whole (a YAML syntax error).
	Key string
	// Line is the 1-based line in File, 0 when unknown (e.g. a missing key
	// whose parent has no line either).
	Line int
	// Msg says what is wrong.
	Msg string
}

// String formats the problem as "<file>:<line>: <key>: <msg>", leaving out the
// line when it is unknown and the key when there is none.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Errors is every problem found in one configuration file. Load and Parse
// return it (as error) whenever the file is not usable; callers print
// Problems one per line.
type Errors struct {
	// File is the name the configuration was loaded from.
	File string
	// Problems are sorted by line; problems without a line come last.
	Problems []Problem
}

// Error lists every problem, one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}
