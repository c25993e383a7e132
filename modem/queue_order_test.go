package modem

import (
	"testing"
	"time"
)

// Jobs wait for a modem highest priority first, then oldest, whatever the
// order they were handed over in; a retry keeps its place ahead.
func TestEnqueueJobOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id string, prio byte, sec int, attempts int) *job {
		return &job{id: id, attempts: attempts, order: QueueOrder{Priority: prio, Queued: t0.Add(time.Duration(sec) * time.Second)}}
	}
	var q []*job
	q = append(q, mk("retry", 0, 9, 1)) // a retry, put back at the head
	for _, j := range []*job{mk("p0-old", 0, 1, 0), mk("p3-new", 3, 5, 0), mk("p2", 2, 3, 0), mk("p3-old", 3, 2, 0), mk("p0-new", 0, 7, 0)} {
		q = enqueueJob(q, j)
	}
	var got []string
	for _, j := range q {
		got = append(got, j.id)
	}
	want := []string{"retry", "p3-old", "p3-new", "p2", "p0-old", "p0-new"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("queue %v, want %v", got, want)
		}
	}
}
