package proxy

import (
	"reflect"
	"slices"

	"github.com/spareline/spareline/config"
)

// reloadChanges names what a reload changes that takes effect at once, for
// the "config reloaded" log line: the operator who sent SIGHUP at 3 a.m.
// sees whether the file said what they meant ("account acme added",
// "carrier telecom changed", "routing changed"). Only names: no value is
// logged (passwords are part of what changes).
func reloadChanges(old, cfg *config.Config) []string {
	var out []string
	out = append(out, namedChanges("account", old.Accounts, cfg.Accounts, func(a config.Account) string { return a.SystemID })...)
	out = append(out, namedChanges("carrier", old.Carriers, cfg.Carriers, func(c config.Carrier) string { return c.Name })...)
	smpp, oldSMPP := cfg.SMPP, old.SMPP
	// Listeners and TLS files are restart-only (reported apart).
	smpp.Listen, smpp.TLSListen, smpp.TLSCert, smpp.TLSKey = oldSMPP.Listen, oldSMPP.TLSListen, oldSMPP.TLSCert, oldSMPP.TLSKey
	if !reflect.DeepEqual(smpp, oldSMPP) {
		out = append(out, "smpp settings changed")
	}
	if !reflect.DeepEqual(cfg.Routing, old.Routing) {
		out = append(out, "routing changed")
	}
	if !reflect.DeepEqual(cfg.Failover, old.Failover) {
		out = append(out, "failover changed")
	}
	if cfg.Log.Messages != old.Log.Messages {
		switch {
		case old.Log.Messages == "":
			out = append(out, "message log turned on")
		case cfg.Log.Messages == "":
			out = append(out, "message log turned off")
		default:
			out = append(out, "message log moved")
		}
	}
	return out
}

// modemChanges names the modems a reload added, removed or changed
// ("modem gsm2 added"); Reload lists them when it applied them (not when the
// change is restart-only: none to some, some to none).
func modemChanges(old, cur []config.Modem) []string {
	return namedChanges("modem", old, cur, func(m config.Modem) string { return m.Name })
}

// namedChanges lists the entries of a config list added, removed or
// changed between old and cur, by their names, in the new file's order
// (removed ones last, in the old order).
func namedChanges[T any](kind string, old, cur []T, name func(T) string) []string {
	var out []string
	for _, c := range cur {
		i := slices.IndexFunc(old, func(o T) bool { return name(o) == name(c) })
		switch {
		case i < 0:
			out = append(out, kind+" "+name(c)+" added")
		case !reflect.DeepEqual(old[i], c):
			out = append(out, kind+" "+name(c)+" changed")
		}
	}
	for _, o := range old {
		if !slices.ContainsFunc(cur, func(c T) bool { return name(c) == name(o) }) {
			out = append(out, kind+" "+name(o)+" removed")
		}
	}
	return out
}
