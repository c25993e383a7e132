package config

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder walks a yaml.Node tree into the Config structs itself, instead of
// leaving it to yaml.v3's Decode, so that it can
//   - report every unknown and duplicate key (yaml.v3's KnownFields stops at
//     the first),
//   - remember the line of every key path for the validation that follows,
//   - know which keys were present, so that defaults apply to absent keys
//     only (`http.listen: ""` disables the endpoint; a missing key does not).
//
// A null value ("key:" or "key: ~") counts as absent.
//
// Aliases are followed; the walk is bounded by the shape of Config (no type in
// it nests sequences of sequences), so alias expansion cannot blow up beyond
// what the document's length allows. Merge keys ("<<") are not supported and
// are reported as such.
type decoder struct {
	file  string
	probs []Problem
	// lines maps a key path ("carriers[1].window") to the line of its key
	// (or, for sequence items, of the item).
	lines map[string]int
	// set holds the key paths that were present with a non-null value.
	set map[string]bool
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, lines: map[string]int{}, set: map[string]bool{}}
}

func (d *decoder) problem(key string, line int, format string, args ...any) {
	d.probs = append(d.probs, Problem{File: d.file, Key: key, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// line returns the line of path, or of its nearest ancestor that has one.
func (d *decoder) line(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		path = parentPath(path)
	}
	return 0
}

// parentPath strips the last ".key" or "[i]" from a key path.
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

var (
	durationType    = reflect.TypeOf(Duration(0))
	fieldCacheMu    sync.Mutex
	fieldCache      = map[reflect.Type]map[string]int{}
	maxAliasFollows = 64
)

// fields maps the yaml tag names of struct type t to field indexes.
func fields(t reflect.Type) map[string]int {
	fieldCacheMu.Lock()
	defer fieldCacheMu.Unlock()
	if m, ok := fieldCache[t]; ok {
		return m
	}
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		m[name] = i
	}
	fieldCache[t] = m
	return m
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.ScalarNode:
		return "a scalar"
	}
	return "something else"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// resolve follows aliases.
func (d *decoder) resolve(n *yaml.Node, path string) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i >= maxAliasFollows || n.Alias == nil {
			d.problem(path, n.Line, "alias cannot be resolved")
			return nil
		}
		n = n.Alias
	}
	return n
}

// value decodes node n into v, whose key path is path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = d.resolve(n, path)
	if n == nil || isNull(n) {
		return
	}
	// A key counts as set once its value decoded; a value that did not
	// decode is reported once and then takes the default, so that
	// validation does not report it a second time.
	switch v.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice, reflect.Pointer:
		d.set[path] = true
	}
	if v.Type() == durationType {
		var dur Duration
		if err := dur.UnmarshalYAML(n); err != nil {
			d.problem(path, n.Line, "%v", err)
			return
		}
		v.Set(reflect.ValueOf(dur))
		d.set[path] = true
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, path, func(key string, kn, vn *yaml.Node) {
			idx, ok := fields(v.Type())[key]
			if !ok {
				d.problem(join(path, key), kn.Line, "unknown key")
				return
			}
			d.value(vn, v.Field(idx), join(path, key))
		})
	case reflect.Map:
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		d.mapping(n, path, func(key string, kn, vn *yaml.Node) {
			elem := reflect.New(v.Type().Elem()).Elem()
			d.value(vn, elem, join(path, key))
			v.SetMapIndex(reflect.ValueOf(key), elem)
		})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, n.Line, "expected a sequence, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.value(item, s.Index(i), p)
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.problem(path, n.Line, "expected a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
		d.set[path] = true
	case reflect.Int:
		if n.Kind != yaml.ScalarNode {
			d.problem(path, n.Line, "expected an integer, got %s", kindName(n))
			return
		}
		var i int
		if err := n.Decode(&i); err != nil {
			d.problem(path, n.Line, "expected an integer, got %q", n.Value)
			return
		}
		v.SetInt(int64(i))
		d.set[path] = true
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode {
			d.problem(path, n.Line, "expected true or false, got %s", kindName(n))
			return
		}
		var b bool
		if n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.problem(path, n.Line, "expected true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
		d.set[path] = true
	default:
		// Only reachable if config.go grows a field of a new kind.
		d.problem(path, n.Line, "cannot decode into %s", v.Type())
	}
}

// mapping calls f for each key of mapping node n, reporting non-scalar,
// duplicate and merge keys.
func (d *decoder) mapping(n *yaml.Node, path string, f func(key string, kn, vn *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		d.problem(path, n.Line, "expected a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn := d.resolve(n.Content[i], path)
		vn := n.Content[i+1]
		if kn == nil {
			continue
		}
		if kn.Kind != yaml.ScalarNode {
			d.problem(path, kn.Line, "keys must be scalars, got %s", kindName(kn))
			continue
		}
		key := kn.Value
		p := join(path, key)
		if kn.ShortTag() == "!!merge" {
			d.problem(p, kn.Line, "merge keys (<<) are not supported")
			continue
		}
		if first, dup := seen[key]; dup {
			d.problem(p, kn.Line, "duplicate key (first at line %d)", first)
			continue
		}
		seen[key] = kn.Line
		d.lines[p] = kn.Line
		f(key, kn, vn)
	}
}

// UnmarshalYAML reads a Go duration string such as "5s", "1m30s" or "72h".
// A bare number is refused (it has no unit), as is a negative duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as \"5s\", got %s", kindName(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a Go duration such as \"5s\", \"1m30s\", \"72h\")", n.Value)
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// String returns the Go duration string, e.g. "5s".
func (d Duration) String() string { return time.Duration(d).String() }
