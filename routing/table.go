// Package routing picks the carrier for a destination number.
//
// Policy:
//   - The destination is first normalised to a national number (see
//     Normalize); international numbers of other countries stay "+<digits>".
//   - The table is the preset's segments (the "cn" preset lists every Chinese
//     mobile segment by operator: mobile, unicom, telecom) overlaid with the
//     configuration's prefixes: an override of the same prefix replaces the
//     preset's entry, a longer one is more specific.
//   - The longest matching prefix wins. A number with no match, a number that
//     is not all digits, and every international number take the default.
//   - The carrier "" means the modem pool, both as a prefix's carrier and as
//     the default.
//
// A Table is immutable after New and safe for concurrent use. Route is
// allocation-free for an already normalised destination: the prefixes are a
// trie over decimal digits.
package routing

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// ErrUnknownPreset is returned (wrapped) by New for a preset it does not know.
var ErrUnknownPreset = errors.New("unknown routing preset")

// ErrBadPrefix is returned (wrapped) by New for a prefix that is not digits.
var ErrBadPrefix = errors.New("routing prefix is not digits")

// ErrBadCountryCode is returned (wrapped) by New for a country code that is
// not 1 to 3 digits.
var ErrBadCountryCode = errors.New("bad country code")

// node is one trie node; next[d] is the index of the child for digit d, 0 for
// none (the root, index 0, is nobody's child).
type node struct {
	next    [10]int32
	carrier int32 // index into Table.names; -1: no prefix ends here
}

// Table maps national number prefixes to carriers.
type Table struct {
	cc      string
	nodes   []node
	names   []string          // carrier names referenced by nodes
	def     string            // carrier when nothing matches; "" = modem pool
	entries map[string]string // prefix -> carrier, preset plus overrides
}

// New builds a table for country code countryCode (e.g. "86") from a preset
// ("cn", or "" for none), overridden and extended by prefixes (national
// prefix -> carrier name; "" = modem pool), with def as the carrier for
// numbers no prefix matches ("" = modem pool).
func New(countryCode string, preset string, prefixes map[string]string, def string) (*Table, error) {
	if countryCode == "" || len(countryCode) > 3 || !allDigits(countryCode) {
		return nil, fmt.Errorf("%w: %q (want 1 to 3 digits, e.g. \"86\")", ErrBadCountryCode, countryCode)
	}
	segs, ok := presets[preset]
	if !ok {
		return nil, fmt.Errorf("%w: %q (known: \"cn\", or \"\" for none)", ErrUnknownPreset, preset)
	}
	entries := make(map[string]string, len(segs)+len(prefixes))
	for _, s := range segs {
		entries[s.prefix] = s.carrier
	}
	for p, c := range prefixes {
		if p == "" || !allDigits(p) {
			return nil, fmt.Errorf("%w: %q", ErrBadPrefix, p)
		}
		entries[p] = c
	}
	return build(countryCode, entries, def), nil
}

func build(cc string, entries map[string]string, def string) *Table {
	t := &Table{cc: cc, def: def, entries: entries, nodes: []node{{carrier: -1}}}
	index := map[string]int32{}
	// Sorted so that names and node order do not depend on map order.
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		c := entries[p]
		ci, ok := index[c]
		if !ok {
			ci = int32(len(t.names))
			t.names = append(t.names, c)
			index[c] = ci
		}
		n := int32(0)
		for i := 0; i < len(p); i++ {
			d := p[i] - '0'
			if t.nodes[n].next[d] == 0 {
				t.nodes = append(t.nodes, node{carrier: -1})
				t.nodes[n].next[d] = int32(len(t.nodes) - 1)
			}
			n = t.nodes[n].next[d]
		}
		t.nodes[n].carrier = ci
	}
	return t
}

// Route returns the carrier for dest ("" = the modem pool) and dest
// normalised (see Normalize), which is what the carrier should be sent.
func (t *Table) Route(dest string) (carrier, normalized string) {
	normalized = Normalize(dest, t.cc)
	return t.lookup(normalized), normalized
}

// lookup finds the longest prefix of national number n.
func (t *Table) lookup(n string) string {
	if !allDigits(n) || n == "" {
		return t.def
	}
	best := int32(-1)
	cur := int32(0)
	for i := 0; i < len(n); i++ {
		cur = t.nodes[cur].next[n[i]-'0']
		if cur == 0 {
			break
		}
		if c := t.nodes[cur].carrier; c >= 0 {
			best = c
		}
	}
	if best < 0 {
		return t.def
	}
	return t.names[best]
}

// Carriers returns the sorted names of the carriers the table can route to,
// the default included; "" (the modem pool) is not a carrier and is left out.
func (t *Table) Carriers() []string {
	set := map[string]bool{}
	for _, c := range t.entries {
		set[c] = true
	}
	set[t.def] = true
	delete(set, "")
	return slices.Sorted(maps.Keys(set))
}

// Restrict returns a copy of the table that routes only to the given
// carriers: every prefix whose carrier is not among them is removed (its
// numbers fall through to a shorter prefix or the default), and a default
// not among them becomes "" (the modem pool). Use it with the configured
// carrier names, so that a preset's segment for an operator the deployment
// has no contract with takes routing.default instead of naming a carrier
// that does not exist.
func (t *Table) Restrict(carriers []string) *Table {
	known := map[string]bool{"": true}
	for _, c := range carriers {
		known[c] = true
	}
	entries := make(map[string]string, len(t.entries))
	for p, c := range t.entries {
		if known[c] {
			entries[p] = c
		}
	}
	def := t.def
	if !known[def] {
		def = ""
	}
	return build(t.cc, entries, def)
}

// Redirect returns a copy of the table in which the numbers routed to a
// carrier that is a key of to go to its value instead (another carrier, or
// "" for the modem pool): every prefix and the default that name it. A
// target is not itself redirected (one step only). Carriers reports the
// carriers routed to after it.
func (t *Table) Redirect(to map[string]string) *Table {
	if len(to) == 0 {
		return t
	}
	entries := make(map[string]string, len(t.entries))
	for p, c := range t.entries {
		if r, ok := to[c]; ok && c != "" {
			c = r
		}
		entries[p] = c
	}
	def := t.def
	if r, ok := to[def]; ok && def != "" {
		def = r
	}
	return build(t.cc, entries, def)
}

// Default returns the carrier for numbers no prefix matches ("" = modem pool).
func (t *Table) Default() string { return t.def }

// CountryCode returns the country code numbers are normalised against.
func (t *Table) CountryCode() string { return t.cc }

// PresetCarriers returns the sorted carrier names a preset routes to (nil
// for "" or an unknown preset). A configuration's carrier that has none of
// these names is reached only through routing.prefixes or routing.default.
func PresetCarriers(preset string) []string {
	set := map[string]bool{}
	for _, s := range presets[preset] {
		set[s.carrier] = true
	}
	if len(set) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(set))
}
