package store

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap/zaptest"
)

// genID makes an id of proxy.IDGen's form for a message made at made.
func genID(made time.Time, seq uint64) string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(made.Sub(IDEpoch)/time.Millisecond)<<20|seq)
	b[8], b[9] = 0xab, 0xcd
	return hex.EncodeToString(b[:])
}

func TestTimeOfID(t *testing.T) {
	made := time.Date(2026, 11, 26, 1, 2, 3, 4_000_000, time.UTC)
	got, ok := TimeOfID(genID(made, 7))
	if !ok || !got.Equal(made) {
		t.Errorf("TimeOfID = %v, %v; want %v", got, ok, made)
	}
	for _, id := range []string{"", "m1", "0123456789abcdef012", "0123456789ABCDEF0123", "0123456789abcdef012g", genID(made, 1) + "0"} {
		if _, ok := TimeOfID(id); ok {
			t.Errorf("TimeOfID(%q) took it for a generated id", id)
		}
	}
}

// keys lists a bucket's keys (after applying the write-ahead log).
func keys(t *testing.T, s *Bolt, bucket []byte) []string {
	t.Helper()
	var out []string
	must(t, s.flushWAL())
	must(t, s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	}))
	return out
}

// link runs LinkCarrier's transaction with a chosen expiry.
func link(t *testing.T, s *Bolt, id, cid string, exp uint64) {
	t.Helper()
	m := testMessage(id)
	m.CarrierID = cid
	must(t, s.flushWAL())
	must(t, s.db.Update(func(tx *bolt.Tx) error {
		_, err := linkTx(tx, m.ID, encodeMessage(m), exp, boltCarrierKey(m.Carrier, m.CarrierID))
		return err
	}))
}

// The carrier path's store step writes a new message's record and link
// without expiry index entries (two B+tree insertions fewer per relayed
// message), and the sweep still deletes them once expired: found by
// walking the records in id order. What the walk cannot find is indexed.
func TestBoltSweepWithoutIndex(t *testing.T) {
	ctx := context.Background()
	s, err := OpenBolt(t.TempDir(), time.Hour, zaptest.NewLogger(t)) // the sweeper's own round: a minute away
	must(t, err)
	defer s.Close()

	// Through the public path: no index entry.
	m := testMessage(genID(time.Now(), 1))
	m.CarrierID = "fresh"
	if _, err := s.LinkCarrier(ctx, m); err != nil {
		t.Fatal(err)
	}
	if x := keys(t, s, bExpiry); len(x) != 0 {
		t.Fatalf("a new message's link wrote expiry index entries %q", x)
	}

	now := msU64(time.Now())
	old := time.Now().Add(-2 * time.Hour) // made more than the TTL ago
	dead, alive := genID(old, 1), genID(old, 2)
	link(t, s, dead, "D", now-1000)       // expired
	link(t, s, alive, "A", now+3_600_000) // rewritten later: expires later
	// A record linked again to another carrier id (the message went back
	// to its carrier): the replaced link, which the record no longer
	// names, is indexed so that the sweep still finds it.
	relinked := genID(old, 3)
	link(t, s, relinked, "R1", now-1000)
	link(t, s, relinked, "R2", now+3_600_000)
	if x := keys(t, s, bExpiry); len(x) != 3 { // R1's link, relinked's record and R2's link
		t.Fatalf("index after a relink: %q, want 3 entries", x)
	}
	// A carrier id reused by a newer message: the old message expires,
	// the link (now the newer message's) stays.
	reused := genID(old, 4)
	link(t, s, reused, "U", now-1000)
	newer := genID(time.Now(), 2)
	link(t, s, newer, "U", now+3_600_000)

	if _, err := s.sweep(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{dead, reused} {
		if _, err := s.GetMessage(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired %s: %v, want ErrNotFound", id, err)
		}
	}
	wantKeys := func(bucket []byte, want ...string) {
		t.Helper()
		got := keys(t, s, bucket)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("bucket %s after the sweep: %q, want %q", bucket, got, want)
		}
	}
	wantKeys(bMsg, alive, relinked, m.ID, newer)
	wantKeys(bCarrier, string(boltCarrierKey("mobile", "A")), string(boltCarrierKey("mobile", "R2")),
		string(boltCarrierKey("mobile", "U")), string(boltCarrierKey("mobile", "fresh")))
	if got, err := s.FindByCarrierID(ctx, "mobile", "U"); err != nil || got.ID != newer {
		t.Errorf("reused carrier id: %v, %v; want the newer message", got, err)
	}
}

// The walk looks at a bounded number of records per round and goes on
// from there in the next, so that records still alive at the front (sent
// long ago, rewritten since) never stop it from reaching expired ones.
func TestBoltSweepByIDResumes(t *testing.T) {
	s, err := OpenBolt(t.TempDir(), time.Hour, zaptest.NewLogger(t))
	must(t, err)
	defer s.Close()
	now := msU64(time.Now())
	old := time.Now().Add(-2 * time.Hour)
	for i := range 10 {
		link(t, s, genID(old, uint64(i)), fmt.Sprint("alive", i), now+3_600_000)
	}
	dead := genID(old, 10)
	link(t, s, dead, "dead", now-1)

	var from []byte
	total, rounds := 0, 0
	for ; rounds < 10; rounds++ {
		var n int
		must(t, s.db.Update(func(tx *bolt.Tx) error {
			var err error
			n, from, err = sweepByID(tx, now, uint64(time.Hour.Milliseconds()), 1, from) // looks at 4 a round
			return err
		}))
		total += n
		if from == nil {
			break
		}
	}
	if total != 1 || rounds < 2 {
		t.Errorf("deleted %d in %d rounds; want the 1 expired record, over several rounds", total, rounds+1)
	}
	if got := len(keys(t, s, bMsg)); got != 10 {
		t.Errorf("%d records left, want the 10 alive", got)
	}
}

// FuzzTimeOfID: any string is read without a panic, and only the ids of
// proxy.IDGen's form (20 lowercase hex digits) are taken, with the time
// their first 16 digits say.
func FuzzTimeOfID(f *testing.F) {
	f.Add(genID(time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), 5))
	f.Add("m1")
	f.Add("0123456789ABCDEF0123")
	f.Add("ffffffffffffffffffff")
	f.Fuzz(func(t *testing.T, id string) {
		made, ok := TimeOfID(id)
		if !ok {
			return
		}
		if len(id) != 20 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("TimeOfID took %q", id)
		}
		v, err := strconv.ParseUint(id[:16], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if want := IDEpoch.UnixMilli() + int64(v>>20); made.UnixMilli() != want {
			t.Fatalf("TimeOfID(%q) = %d ms, want %d", id, made.UnixMilli(), want)
		}
	})
}
