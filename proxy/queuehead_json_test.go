package proxy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A message due now has no "due" in /status.json (it read
// "0001-01-01T00:00:00Z"); one waiting for a retry says when.
func TestQueuedMessageDueOnlyWhenSet(t *testing.T) {
	b, err := json.Marshal(QueuedMessage{ID: "a", Queued: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"due"`) {
		t.Errorf("due now: %s, want no due", b)
	}
	at := time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)
	b, err = json.Marshal(QueuedMessage{ID: "b", Queued: time.Now(), Due: at})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"due":"2026-11-26T18:00:00Z"`) {
		t.Errorf("retry later: %s, want its due time", b)
	}
}
