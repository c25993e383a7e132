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
	must(t, s.ExtendModem(ctx, id, time.Hour))
	wantEmpty(t, s)
	must(t, s.AckModem(ctx, id))
	must(t, s.ExtendModem(ctx, id, time.Hour))
	wantEmpty(t, s)
	must(t, s.EnqueueModem(ctx, "q2", 0, past))
	must(t, s.ExtendModem(ctx, "q2", time.Hour))
	if got, err := s.ClaimModem(ctx, "w1", time.Hour); err != nil || got != "q2" {
		t.Fatalf("ClaimModem after extending an unclaimed entry = %q, %v; want q2", got, err)
	}
	if _, err := s.ClaimModem(ctx, "w1", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("ClaimModem = %v, want ErrEmpty", err)
	}
}
