package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spareline/spareline/test/redisserver"
)

func TestBoltTimers(t *testing.T) {
	dir := t.TempDir()
	runTimers(t, func(t *testing.T) Store {
		s, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestRedisTimers(t *testing.T) {
	srv := redisserver.Start(t)
	runTimers(t, func(t *testing.T) Store {
		s, err := NewRedis(context.Background(), srv.URL(), longTTL, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// runTimers checks the Timers contract; open returns the store, on the same
// data each time (a restart).
func runTimers(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	s := open(t)
	claimAll := func(lease time.Duration) []string {
		t.Helper()
		ids, err := s.ClaimTimers(ctx, lease, 100)
		if err != nil {
			t.Fatalf("ClaimTimers: %v", err)
		}
		slices.Sort(ids)
		return ids
	}
	past, future := time.Now().Add(-time.Second), time.Now().Add(time.Hour)

	// Only due timers are claimed, and a claimed timer waits for its lease.
	must(t, s.SetTimer(ctx, "due1", past))
	must(t, s.SetTimer(ctx, "due2", past.Add(-time.Second)))
	must(t, s.SetTimer(ctx, "later", future))
	if got := claimAll(time.Hour); !slices.Equal(got, []string{"due1", "due2"}) {
		t.Fatalf("first claim = %v, want [due1 due2]", got)
	}
	if got := claimAll(time.Hour); len(got) != 0 {
		t.Fatalf("claim during the lease = %v, want none", got)
	}

	// Moving a timer replaces it; clearing removes it (twice is fine).
	must(t, s.SetTimer(ctx, "later", past))
	must(t, s.SetTimer(ctx, "gone", past))
	must(t, s.ClearTimer(ctx, "gone"))
	must(t, s.ClearTimer(ctx, "gone"))
	if got := claimAll(0); !slices.Equal(got, []string{"later"}) {
		t.Fatalf("claim after moving and clearing = %v, want [later]", got)
	}

	// A claimer that dies before ClearTimer: with the lease passed (0 here),
	// the timer is claimed again, also after a restart of the store.
	if got := claimAll(time.Hour); !slices.Equal(got, []string{"later"}) {
		t.Fatalf("claim after a passed lease = %v, want [later]", got)
	}
	must(t, s.SetTimer(ctx, "kept", past))
	must(t, s.Close())
	s = open(t)
	if got := claimAll(time.Hour); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("claim after a restart = %v, want [kept]", got)
	}

	// The limit bounds one claim.
	for _, id := range []string{"a", "b", "c"} {
		must(t, s.SetTimer(ctx, id, past))
	}
	ids, err := s.ClaimTimers(ctx, time.Hour, 2)
	if err != nil || len(ids) != 2 {
		t.Fatalf("ClaimTimers(limit 2) = %v, %v", ids, err)
	}

	// ExtendModem keeps a claimed entry leased, and neither brings back an
	// acked entry nor leases an unclaimed one.
	must(t, s.EnqueueModem(ctx, "q1", 0, past))
	id := claim(t, s, time.Hour)
	must(t, s.ExtendModem(ctx, id, "w1", time.Hour))
	wantEmpty(t, s)
	must(t, s.AckModem(ctx, id))
	must(t, s.ExtendModem(ctx, id, "w1", time.Hour))
	wantEmpty(t, s)
	must(t, s.EnqueueModem(ctx, "q2", 0, past))
	must(t, s.ExtendModem(ctx, "q2", "w1", time.Hour))
	if got, err := s.ClaimModem(ctx, "w1", time.Hour); err != nil || got != "q2" {
		t.Fatalf("ClaimModem after extending an unclaimed entry = %q, %v; want q2", got, err)
	}
	if _, err := s.ClaimModem(ctx, "w1", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("ClaimModem = %v, want ErrEmpty", err)
	}
	must(t, s.AckModem(ctx, "q2"))

	// A late renewal (the lease passed, nobody claimed the entry since)
	// keeps the entry its claimer's, in both stores, also after another
	// worker's claim passed it over for a better entry.
	must(t, s.EnqueueModem(ctx, "late", 0, past))
	if got, err := s.ClaimModem(ctx, "w1", time.Millisecond); err != nil || got != "late" {
		t.Fatalf("ClaimModem = %q, %v; want late", got, err)
	}
	waitPast(2 * time.Millisecond)
	must(t, s.EnqueueModem(ctx, "urgent", 3, past))
	if got, err := s.ClaimModem(ctx, "w2", time.Hour); err != nil || got != "urgent" {
		t.Fatalf("ClaimModem = %q, %v; want urgent (priority 3 first)", got, err)
	}
	must(t, s.ExtendModem(ctx, "late", "w1", time.Hour))
	if got, err := s.ClaimModem(ctx, "w2", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("ClaimModem after a late renewal = %q, %v; want ErrEmpty (the entry is w1's again)", got, err)
	}

	// Claimed since by another worker: ErrClaimed, and the other worker's
	// lease stands.
	must(t, s.EnqueueModem(ctx, "lost", 0, past))
	if got, err := s.ClaimModem(ctx, "w1", time.Millisecond); err != nil || got != "lost" {
		t.Fatalf("ClaimModem = %q, %v; want lost", got, err)
	}
	waitPast(2 * time.Millisecond)
	if got, err := s.ClaimModem(ctx, "w2", time.Hour); err != nil || got != "lost" {
		t.Fatalf("ClaimModem by w2 after w1's lease passed = %q, %v; want lost", got, err)
	}
	if err := s.ExtendModem(ctx, "lost", "w1", time.Hour); !errors.Is(err, ErrClaimed) {
		t.Fatalf("ExtendModem by the former claimer = %v, want ErrClaimed", err)
	}
	must(t, s.ExtendModem(ctx, "lost", "w2", time.Hour))
	if got, err := s.ClaimModem(ctx, "w3", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("ClaimModem = %q, %v; want ErrEmpty (w2 holds lost)", got, err)
	}

	// A released entry is nobody's: renewing it does not take it back.
	must(t, s.ReleaseModem(ctx, "lost", past))
	must(t, s.ExtendModem(ctx, "lost", "w2", time.Hour))
	if got, err := s.ClaimModem(ctx, "w3", time.Hour); err != nil || got != "lost" {
		t.Fatalf("ClaimModem after release = %q, %v; want lost", got, err)
	}
}

// waitPast waits until d of wall-clock time has passed (a lease running
// out: time itself is the event).
func waitPast(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(d / 4)
	}
}

func TestBoltPendingTimers(t *testing.T) {
	dir := t.TempDir()
	runPendingTimers(t, func(t *testing.T) Store {
		s, err := OpenBolt(dir, longTTL, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestRedisPendingTimers(t *testing.T) {
	srv := redisserver.Start(t)
	runPendingTimers(t, func(t *testing.T) Store {
		s, err := NewRedis(context.Background(), srv.URL(), longTTL, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// runPendingTimers checks PendingTimers: every timer, due or not, the
// latest due first, bounded by limit; listing claims and moves nothing.
// open returns the store, on the same data each time (a restart).
func runPendingTimers(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	s := open(t)
	list := func(limit int) []string {
		t.Helper()
		ids, err := s.PendingTimers(ctx, limit)
		if err != nil {
			t.Fatalf("PendingTimers: %v", err)
		}
		return ids
	}
	if got := list(10); len(got) != 0 {
		t.Fatalf("PendingTimers on an empty store = %v, want none", got)
	}
	now := time.Now()
	must(t, s.SetTimer(ctx, "old", now.Add(-time.Minute)))
	must(t, s.SetTimer(ctx, "due", now.Add(-time.Second)))
	must(t, s.SetTimer(ctx, "soon", now.Add(time.Minute)))
	must(t, s.SetTimer(ctx, "late", now.Add(time.Hour)))
	must(t, s.SetTimer(ctx, "gone", now.Add(2*time.Hour)))
	must(t, s.ClearTimer(ctx, "gone"))
	if got, want := list(10), []string{"late", "soon", "due", "old"}; !slices.Equal(got, want) {
		t.Fatalf("PendingTimers = %v, want %v (the latest due first, cleared ones left out)", got, want)
	}
	if got, want := list(2), []string{"late", "soon"}; !slices.Equal(got, want) {
		t.Fatalf("PendingTimers(limit 2) = %v, want %v", got, want)
	}
	if got := list(0); len(got) != 0 {
		t.Fatalf("PendingTimers(limit 0) = %v, want none", got)
	}
	// Listing moved nothing: the due timers are still claimable.
	ids, err := s.ClaimTimers(ctx, time.Hour, 10)
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{"due", "old"}) {
		t.Fatalf("ClaimTimers after listing = %v, %v; want [due old]", ids, err)
	}
	// A claimed timer is still pending (its lease is its due time now),
	// and the list survives a restart of the store.
	must(t, s.Close())
	s = open(t)
	got := list(10)
	slices.Sort(got)
	if want := []string{"due", "late", "old", "soon"}; !slices.Equal(got, want) {
		t.Fatalf("PendingTimers after a claim and a restart = %v, want %v", got, want)
	}
}
