package proxy

import (
	"slices"
	"strings"
	"testing"

	"github.com/spareline/spareline/config"
)

func TestReloadChangesNamesWhatChanged(t *testing.T) {
	old := &config.Config{
		SMPP: config.SMPP{Listen: "0.0.0.0:2775", Window: 10},
		Accounts: []config.Account{
			{SystemID: "platform", Password: "old-secret"},
			{SystemID: "billing", Password: "b"},
			{SystemID: "gone", Password: "g"},
		},
		Carriers: []config.Carrier{{Name: "mobile", Address: "10.0.0.1:2775"}, {Name: "unicom", Address: "10.0.0.2:2775"}},
	}
	cur := &config.Config{
		// A listener change is restart-only: not an smpp setting applied.
		SMPP: config.SMPP{Listen: "0.0.0.0:2776", Window: 10},
		Accounts: []config.Account{
			{SystemID: "platform", Password: "new-secret"},
			{SystemID: "billing", Password: "b"},
			{SystemID: "acme", Password: "a"},
		},
		Carriers: []config.Carrier{{Name: "mobile", Address: "10.0.0.1:2775"}, {Name: "unicom", Address: "10.0.0.9:2775"}},
		Routing:  config.Routing{Default: "unicom"},
	}
	got := reloadChanges(old, cur)
	want := []string{"account platform changed", "account acme added", "account gone removed", "carrier unicom changed", "routing changed"}
	if !slices.Equal(got, want) {
		t.Errorf("changes = %q, want %q", got, want)
	}
	for _, c := range got {
		if strings.Contains(c, "secret") {
			t.Errorf("a change names a password: %q", c)
		}
	}
	if got := reloadChanges(old, old); len(got) != 0 {
		t.Errorf("the same config reloaded: changes %q, want none", got)
	}
	cur2 := *old
	cur2.SMPP.Window = 20
	if got := reloadChanges(old, &cur2); !slices.Equal(got, []string{"smpp settings changed"}) {
		t.Errorf("window changed: %q", got)
	}
}
