package proxy

import (
	"testing"
	"time"

	"github.com/spareline/spareline/store"
)

// The embedded store finds expired records by the time in their ids
// (store.TimeOfID): the ids made here must say when they were made, and
// sort in that order.
func TestIDsTellWhenTheyWereMade(t *testing.T) {
	g := NewIDGen()
	before := time.Now().Truncate(time.Millisecond)
	a := g.Next()
	b := g.Next()
	after := time.Now()
	for _, id := range []string{a, b} {
		made, ok := store.TimeOfID(id)
		if !ok || made.Before(before) || made.After(after) {
			t.Errorf("store.TimeOfID(%q) = %v, %v; want between %v and %v", id, made, ok, before, after)
		}
	}
	if !(a < b) {
		t.Errorf("ids out of order: %q then %q", a, b)
	}
}
