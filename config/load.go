package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Load reads and parses the configuration file at path. It returns an
// *Errors listing every problem when the file is not usable, or the error
// of reading the file when it cannot be read at all.
//
// Relative paths inside the file (tls_cert, tls_key, tls_ca, password_file,
// store.path) are relative to the process's working directory, not to the
// file's directory; Load leaves them as written.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse decodes, defaults, resolves (password_env, password_file) and
// validates a configuration. name is used in problem messages only. On any
// problem it returns nil and an *Errors with every problem found.
func Parse(data []byte, name string) (*Config, error) {
	d := newDecoder(name)
	cfg := &Config{}
	root, ok := d.parseYAML(data)
	if ok && root != nil {
		d.value(root, reflectValue(cfg), "")
	}
	if ok {
		applyDefaults(cfg, d)
		resolvePasswords(cfg, d)
		validate(cfg, d)
	}
	if len(d.probs) > 0 {
		sortProblems(d.probs)
		return nil, &Errors{File: name, Problems: d.probs}
	}
	return cfg, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses data into its single document's root node (nil for an
// empty file). ok is false after a syntax error.
func (d *decoder) parseYAML(data []byte) (root *yaml.Node, ok bool) {
	defer func() {
		// yaml.v3 reports errors by panicking internally and recovering; a
		// panic escaping it is a bug there, reported here as a problem so
		// that a hostile file cannot crash `spareline check`.
		if r := recover(); r != nil {
			d.problem("", 0, "YAML parser failed: %v", r)
			root, ok = nil, false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true
		}
		d.syntaxProblem(err, data)
		return nil, false
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntaxProblem(err, data)
		return nil, false
	default:
		d.problem("", extra.Line, "a second YAML document; the file must hold exactly one")
		return nil, false
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, true
	}
	root = doc.Content[0]
	if r := d.resolve(root, ""); r != nil && r.Kind != yaml.MappingNode && !isNull(r) {
		d.problem("", r.Line, "the file must be a mapping of sections (smpp, carriers, ...), got %s", kindName(r))
		return nil, false
	}
	return root, true
}

func (d *decoder) syntaxProblem(err error, data []byte) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if l := syntaxLine(data); l > 0 {
			line = l
		}
		d.problem("", line, "YAML syntax: %s", m[2])
		return
	}
	d.problem("", 0, "YAML syntax: %s", msg)
}

// syntaxLineMax bounds the files syntaxLine looks into (it parses each
// prefix: quadratic in the lines).
const syntaxLineMax = 1000

// syntaxBytesMax bounds them by size too: a file of long lines with an
// unclosed quote near the top makes every prefix parse to its end (1,000
// lines of 2 KB took 11 s), and a reload waits for it.
const syntaxBytesMax = 64 << 10

// syntaxLine is the line a YAML syntax error is on: the line after the
// longest run of first lines that parses. yaml.v3 names another: for an
// error in a block or a flow collection, the line before the one that
// opens it (an unclosed "[" on line 20 of a carrier's entry that starts on
// line 14 was reported at line 13). A file whose every prefix fails (its
// first line is the error) gives 1; one over syntaxLineMax lines or
// syntaxBytesMax bytes gives 0: yaml.v3's line is kept.
func syntaxLine(data []byte) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > syntaxLineMax || len(data) > syntaxBytesMax {
		return 0
	}
	parses := func(b []byte) bool {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var n yaml.Node
			switch err := dec.Decode(&n); {
			case errors.Is(err, io.EOF):
				return true
			case err != nil:
				return false
			}
		}
	}
	for k := len(lines) - 1; k >= 1; k-- {
		if parses(bytes.Join(lines[:k], nil)) {
			return k + 1
		}
	}
	return 1
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		li, lj := ps[i].Line, ps[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
}

// Redacted returns a deep copy of c in which every password (accounts and
// carriers), SIM PIN and the password of the Redis URL are replaced by "***",
// for logging. Empty secrets stay empty, so that the copy still shows which
// ones are unset.
func (c *Config) Redacted() *Config {
	if c == nil {
		return nil
	}
	r := *c
	r.Store.Redis = redactURL(c.Store.Redis)
	r.Accounts = make([]Account, len(c.Accounts))
	for i, a := range c.Accounts {
		a.Password = redact(a.Password)
		a.Allow = append([]string(nil), a.Allow...)
		r.Accounts[i] = a
	}
	r.Carriers = make([]Carrier, len(c.Carriers))
	for i, ca := range c.Carriers {
		ca.Password = redact(ca.Password)
		r.Carriers[i] = ca
	}
	r.Modems = make([]Modem, len(c.Modems))
	for i, m := range c.Modems {
		m.PIN = redact(m.PIN)
		r.Modems[i] = m
	}
	if c.Routing.Preset != nil {
		p := *c.Routing.Preset
		r.Routing.Preset = &p
	}
	if c.Routing.Prefixes != nil {
		r.Routing.Prefixes = make(map[string]string, len(c.Routing.Prefixes))
		for k, v := range c.Routing.Prefixes {
			r.Routing.Prefixes[k] = v
		}
	}
	if c.Failover.ResendFailedReceipts != nil {
		b := *c.Failover.ResendFailedReceipts
		r.Failover.ResendFailedReceipts = &b
	}
	return &r
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}

// String renders the redacted configuration as YAML, for logging.
func (c *Config) String() string {
	b, err := yaml.Marshal(c.Redacted())
	if err != nil {
		return fmt.Sprintf("config: %v", err)
	}
	return string(b)
}
