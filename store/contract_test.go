package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spareline/spareline/test/redisserver"
)

// opener opens a store for subtest t with record TTL ttl. The first call
// for a t opens an empty store; each later call for the same t opens a new
// store on the same data (a restart).
type opener func(t *testing.T, ttl time.Duration) Store

const longTTL = time.Hour

func TestBoltContract(t *testing.T) {
	var mu sync.Mutex
	dirs := map[*testing.T]string{}
	runContract(t, func(t *testing.T, ttl time.Duration) Store {
		mu.Lock()
		dir, ok := dirs[t]
		if !ok {
			dir = t.TempDir()
			dirs[t] = dir
		}
		mu.Unlock()
		s, err := OpenBolt(dir, ttl, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestRedisContract(t *testing.T) {
	var mu sync.Mutex
	servers := map[*testing.T]*redisserver.Server{}
	runContract(t, func(t *testing.T, ttl time.Duration) Store {
		mu.Lock()
		srv, ok := servers[t]
		if !ok {
			srv = redisserver.Start(t)
			servers[t] = srv
		}
		mu.Unlock()
		s, err := NewRedis(context.Background(), srv.URL(), ttl, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func testMessage(id string) *Message {
	return &Message{
		ID:        id,
		Account:   "platform",
		Carrier:   "mobile",
		Source:    "10690000",
		Dest:      "8613800138000",
		Body:      bytes.Repeat([]byte{0x41, 0x00, 0xff}, 33),
		RegDeliv:  1,
		Priority:  2,
		State:     StateAccepted,
		Attempts:  1,
		Created:   time.Now(),
		Expires:   time.Now().Add(48 * time.Hour),
		Note:      "accepted",
		Modem:     "ttyUSB0",
		ModemRefs: []int{7, 8},
	}
}

// sameMessage compares two messages, times by instant.
func sameMessage(t *testing.T, got, want *Message) {
	t.Helper()
	g, w := *got, *want
	if !g.Created.Equal(w.Created) || !g.Expires.Equal(w.Expires) {
		t.Errorf("times: got %v/%v, want %v/%v", g.Created, g.Expires, w.Created, w.Expires)
	}
	g.Created, w.Created, g.Expires, w.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if len(g.Body) == 0 && len(w.Body) == 0 {
		g.Body, w.Body = nil, nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("message:\n got %+v\nwant %+v", g, w)
	}
}

func mustGet(t *testing.T, s Store, id string) *Message {
	t.Helper()
	m, err := s.GetMessage(context.Background(), id)
	if err != nil {
		t.Fatalf("GetMessage(%s): %v", id, err)
	}
	return m
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tryLink runs TryLinkCarrier and waits for its outcome.
func tryLink(t *testing.T, al AsyncLinker, m *Message) ([]byte, error) {
	t.Helper()
	type res struct {
		orphan []byte
		err    error
	}
	ch := make(chan res, 1)
	if !al.TryLinkCarrier(context.Background(), m, func(orphan []byte, err error) { ch <- res{orphan, err} }) {
		t.Fatal("TryLinkCarrier refused the write of an idle store")
	}
	select {
	case r := <-ch:
		return r.orphan, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("TryLinkCarrier's done never called")
		return nil, nil
	}
}

// claim claims one entry or fails the test.
func claim(t *testing.T, s Store, lease time.Duration) string {
	t.Helper()
	id, err := s.ClaimModem(context.Background(), "w1", lease)
	if err != nil {
		t.Fatalf("ClaimModem: %v", err)
	}
	return id
}

func wantEmpty(t *testing.T, s Store) {
	t.Helper()
	if id, err := s.ClaimModem(context.Background(), "w1", time.Hour); !errors.Is(err, ErrEmpty) {
		t.Fatalf("ClaimModem = %q, %v; want ErrEmpty", id, err)
	}
}

// claimWithin polls ClaimModem until it returns an entry or the deadline
// passes.
func claimWithin(t *testing.T, s Store, lease, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		id, err := s.ClaimModem(context.Background(), "w2", lease)
		if err == nil {
			return id
		}
		if !errors.Is(err, ErrEmpty) {
			t.Fatalf("ClaimModem: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing became claimable within %v", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nextMilli waits for the wall clock to pass into a new millisecond, so
// that entries enqueued before and after have different ages.
func nextMilli() {
	ms := time.Now().UnixMilli()
	for time.Now().UnixMilli() == ms {
		time.Sleep(100 * time.Microsecond)
	}
}

func runContract(t *testing.T, open opener) {
	ctx := context.Background()
	runClaims(t, open) // claims_contract_test.go

	t.Run("PutGetOverwrite", func(t *testing.T) {
		s := open(t, longTTL)
		m := testMessage("m1")
		must(t, s.PutMessage(ctx, m))
		sameMessage(t, mustGet(t, s, "m1"), m)

		m2 := *m
		m2.State, m2.Attempts, m2.Note, m2.Body, m2.ModemRefs = StateFailed, 2, "rejected", nil, nil
		must(t, s.PutMessage(ctx, &m2))
		sameMessage(t, mustGet(t, s, "m1"), &m2)
	})

	t.Run("GetMessages", func(t *testing.T) {
		s := open(t, longTTL)
		put := testMessage("gm-put")
		must(t, s.PutMessage(ctx, put))
		linked := testMessage("gm-linked") // bbolt: in the write-ahead log's overlay
		linked.CarrierID, linked.State = "GM1", StateSent
		if _, err := s.LinkCarrier(ctx, linked); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetMessages(ctx, []string{"gm-linked", "gm-none", "gm-put"})
		must(t, err)
		if len(got) != 3 || got[0] == nil || got[0].ID != "gm-linked" || got[0].CarrierID != "GM1" || got[1] != nil ||
			got[2] == nil || got[2].ID != "gm-put" {
			t.Fatalf("GetMessages: %+v", got)
		}
		if got, err := s.GetMessages(ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("GetMessages of none: %v, %v", got, err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := open(t, longTTL)
		if _, err := s.GetMessage(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetMessage: %v, want ErrNotFound", err)
		}
		if _, err := s.FindByCarrierID(ctx, "mobile", "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("FindByCarrierID: %v, want ErrNotFound", err)
		}
		if _, err := s.TakeOrphan(ctx, "mobile", "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("TakeOrphan: %v, want ErrNotFound", err)
		}
		if err := s.ReleaseModem(ctx, "nope", time.Now()); !errors.Is(err, ErrNotFound) {
			t.Errorf("ReleaseModem: %v, want ErrNotFound", err)
		}
		must(t, s.Ping(ctx))
	})

	t.Run("CarrierIndex", func(t *testing.T) {
		s := open(t, longTTL)
		a := testMessage("ours-a")
		a.Carrier, a.CarrierID, a.State = "mobile", "0A1B", StateSent
		b := testMessage("ours-b")
		b.Carrier, b.CarrierID, b.State = "unicom", "0A1B", StateSent // same carrier id, other carrier
		c := testMessage("ours-c")
		c.Carrier, c.CarrierID = "mobile:0", "A1B" // must not meet "mobile" + "0:A1B" style keys
		for _, m := range []*Message{a, b, c} {
			must(t, s.PutMessage(ctx, m))
		}
		for _, m := range []*Message{a, b, c} {
			got, err := s.FindByCarrierID(ctx, m.Carrier, m.CarrierID)
			if err != nil {
				t.Fatalf("FindByCarrierID(%s, %s): %v", m.Carrier, m.CarrierID, err)
			}
			sameMessage(t, got, m)
		}
		if _, err := s.FindByCarrierID(ctx, "telecom", "0A1B"); !errors.Is(err, ErrNotFound) {
			t.Errorf("other carrier: %v, want ErrNotFound", err)
		}
		// The index follows the message: a later write is what the index returns.
		a.State = StateDone
		must(t, s.PutMessage(ctx, a))
		got, err := s.FindByCarrierID(ctx, "mobile", "0A1B")
		must(t, err)
		if got.State != StateDone {
			t.Errorf("state through index = %s, want done", got.State)
		}
	})

	t.Run("Orphans", func(t *testing.T) {
		s := open(t, longTTL)
		must(t, s.StashOrphan(ctx, "mobile", "X1", []byte("receipt 1")))
		must(t, s.StashOrphan(ctx, "unicom", "X1", []byte("receipt 2")))
		b, err := s.TakeOrphan(ctx, "mobile", "X1")
		must(t, err)
		if string(b) != "receipt 1" {
			t.Errorf("TakeOrphan = %q", b)
		}
		if _, err := s.TakeOrphan(ctx, "mobile", "X1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second TakeOrphan: %v, want ErrNotFound", err)
		}
		b, err = s.TakeOrphan(ctx, "unicom", "X1")
		must(t, err)
		if string(b) != "receipt 2" {
			t.Errorf("TakeOrphan(unicom) = %q", b)
		}
	})

	t.Run("LinkCarrier", func(t *testing.T) {
		s := open(t, longTTL)
		// No receipt yet: the link is written, nothing is taken.
		a := testMessage("link-a")
		a.Carrier, a.CarrierID, a.State = "mobile", "L1", StateSent
		orphan, err := s.LinkCarrier(ctx, a)
		must(t, err)
		if orphan != nil {
			t.Errorf("LinkCarrier with no orphan = %q, want nil", orphan)
		}
		sameMessage(t, mustGet(t, s, "link-a"), a)
		got, err := s.FindByCarrierID(ctx, "mobile", "L1")
		must(t, err)
		sameMessage(t, got, a)

		// The receipt overtook the link: the link takes it, once.
		must(t, s.StashOrphan(ctx, "mobile", "L2", []byte("early receipt")))
		must(t, s.StashOrphan(ctx, "unicom", "L2", []byte("other carrier's")))
		b := testMessage("link-b")
		b.Carrier, b.CarrierID, b.State = "mobile", "L2", StateSent
		orphan, err = s.LinkCarrier(ctx, b)
		must(t, err)
		if string(orphan) != "early receipt" {
			t.Errorf("LinkCarrier orphan = %q, want %q", orphan, "early receipt")
		}
		if _, err := s.TakeOrphan(ctx, "mobile", "L2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("TakeOrphan after the link took it: %v, want ErrNotFound", err)
		}
		if o, err := s.TakeOrphan(ctx, "unicom", "L2"); err != nil || string(o) != "other carrier's" {
			t.Errorf("other carrier's orphan: %q, %v", o, err)
		}

		// A later LinkCarrier (a message back on its carrier) replaces the record.
		b.State, b.Note = StateDone, "receipt"
		orphan, err = s.LinkCarrier(ctx, b)
		must(t, err)
		if orphan != nil {
			t.Errorf("second LinkCarrier orphan = %q, want nil", orphan)
		}
		got, err = s.FindByCarrierID(ctx, "mobile", "L2")
		must(t, err)
		sameMessage(t, got, b)

		if _, err := s.LinkCarrier(ctx, testMessage("no-cid")); !errors.Is(err, ErrNoCarrierID) {
			t.Errorf("LinkCarrier without a carrier id: %v, want ErrNoCarrierID", err)
		}
	})

	// The receipt side writes first and looks second (proxy/receipts.go):
	// StashOrphan, FindByCarrierID, and TakeOrphan when the link is there.
	// Racing LinkCarrier, every receipt is taken by exactly one side.
	t.Run("TryLinkCarrier", func(t *testing.T) {
		s := open(t, longTTL)
		al, ok := s.(AsyncLinker)
		if !ok {
			t.Fatalf("%T does not implement AsyncLinker", s)
		}
		// As LinkCarrier, without waiting: ids of the gateway's own form
		// (the embedded store writes those without expiry index entries).
		a := testMessage(genID(time.Now(), 1))
		a.CarrierID, a.State = "T1", StateSent
		if orphan, err := tryLink(t, al, a); err != nil || orphan != nil {
			t.Fatalf("TryLinkCarrier = %q, %v; want no orphan", orphan, err)
		}
		sameMessage(t, mustGet(t, s, a.ID), a)
		got, err := s.FindByCarrierID(ctx, "mobile", "T1")
		must(t, err)
		sameMessage(t, got, a)

		must(t, s.StashOrphan(ctx, "mobile", "T2", []byte("early receipt")))
		b := testMessage(genID(time.Now(), 2))
		b.CarrierID, b.State = "T2", StateSent
		if orphan, err := tryLink(t, al, b); err != nil || string(orphan) != "early receipt" {
			t.Errorf("TryLinkCarrier = %q, %v; want the early receipt", orphan, err)
		}
		if _, err := s.TakeOrphan(ctx, "mobile", "T2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("TakeOrphan after the link took it: %v, want ErrNotFound", err)
		}

		// Its ctx ended: refused at once, or answered with ctx's error and
		// not written.
		ended, cancel := context.WithCancel(ctx)
		cancel()
		e := testMessage(genID(time.Now(), 4))
		e.CarrierID = "T4"
		errc := make(chan error, 1)
		if al.TryLinkCarrier(ended, e, func(_ []byte, err error) { errc <- err }) {
			select {
			case err := <-errc:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("TryLinkCarrier with an ended ctx: %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("TryLinkCarrier's done never called")
			}
		}
		if _, err := s.GetMessage(ctx, e.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("a link whose ctx ended before it was taken was written: %v", err)
		}

		// Closed: refused at once, nothing left waiting.
		must(t, s.Close())
		c := testMessage(genID(time.Now(), 3))
		c.CarrierID = "T3"
		if al.TryLinkCarrier(ctx, c, func([]byte, error) { t.Error("done called for a refused write") }) {
			t.Error("TryLinkCarrier on a closed store took the write")
		}
	})

	t.Run("LinkRacesReceipt", func(t *testing.T) {
		s := open(t, longTTL)
		const n = 200
		var wg sync.WaitGroup
		var linkGot, rcptGot, lost sync.Map
		for i := range n {
			cid := "R" + strconv.Itoa(i)
			body := []byte("receipt " + cid)
			wg.Go(func() { linkSide(t, s, "race-"+cid, cid, body, &linkGot) })
			wg.Go(func() {
				if _, err := s.FindByCarrierID(ctx, "mobile", cid); err == nil {
					rcptGot.Store(cid, true) // linked already: no stash needed
					return
				}
				if err := s.StashOrphan(ctx, "mobile", cid, body); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.FindByCarrierID(ctx, "mobile", cid); errors.Is(err, ErrNotFound) {
					lost.Store(cid, true) // stashed; the link must take it
					return
				} else if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.TakeOrphan(ctx, "mobile", cid); err == nil {
					rcptGot.Store(cid, true)
				}
			})
		}
		wg.Wait()
		for i := range n {
			cid := "R" + strconv.Itoa(i)
			_, byLink := linkGot.Load(cid)
			_, byRcpt := rcptGot.Load(cid)
			_, stashedOnly := lost.Load(cid)
			if byLink == byRcpt {
				t.Errorf("%s: taken by link %v, by receipt side %v; want exactly one", cid, byLink, byRcpt)
			}
			if stashedOnly && !byLink {
				t.Errorf("%s: stashed and unseen by the receipt side, but the link did not take it", cid)
			}
		}
	})

	t.Run("FindOrStash", func(t *testing.T) {
		s := open(t, longTTL)
		m := testMessage("fos-1")
		m.CarrierID, m.State = "F1", StateSent
		if _, err := s.LinkCarrier(ctx, m); err != nil {
			t.Fatal(err)
		}
		got, err := s.FindOrStash(ctx, "mobile", "F1", []byte("receipt F1"), true)
		if err != nil || got.ID != m.ID {
			t.Fatalf("linked: %+v, %v; want %s", got, err, m.ID)
		}
		if _, err := s.TakeOrphan(ctx, "mobile", "F1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a found receipt was stashed too: %v", err)
		}
		if _, err := s.FindOrStash(ctx, "mobile", "F2", []byte("receipt F2"), true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unlinked: %v, want ErrNotFound", err)
		}
		m2 := testMessage("fos-2")
		m2.CarrierID, m2.State = "F2", StateSent
		orphan, err := s.LinkCarrier(ctx, m2)
		if err != nil || string(orphan) != "receipt F2" {
			t.Fatalf("the link took %q, %v; want the stashed receipt", orphan, err)
		}

		// Receipts overtaking their link in any order: an intermediate
		// one never replaces a stashed one (one stash per carrier id), a
		// final one does; the link takes the final.
		for _, order := range [][]string{{"ENROUTE", "DELIVRD", "ACCEPTD"}, {"DELIVRD", "ENROUTE"}, {"ENROUTE", "ACCEPTD"}} {
			cid := "F3-" + order[0] + "-" + strconv.Itoa(len(order))
			want := ""
			for _, stat := range order {
				final := stat == "DELIVRD"
				if final || want == "" {
					want = stat
				}
				if _, err := s.FindOrStash(ctx, "mobile", cid, []byte(stat), final); !errors.Is(err, ErrNotFound) {
					t.Fatalf("%v: unlinked %s: %v, want ErrNotFound", order, stat, err)
				}
			}
			m := testMessage("fos-" + cid)
			m.CarrierID, m.State = cid, StateSent
			orphan, err := s.LinkCarrier(ctx, m)
			if err != nil || string(orphan) != want {
				t.Fatalf("%v: the link took %q, %v; want %s", order, orphan, err, want)
			}
		}
	})

	t.Run("LinkRacesFindOrStash", func(t *testing.T) {
		s := open(t, longTTL)
		const n = 200
		var wg sync.WaitGroup
		var linkGot, rcptGot sync.Map
		for i := range n {
			cid := "S" + strconv.Itoa(i)
			body := []byte("receipt " + cid)
			wg.Go(func() { linkSide(t, s, "fosr-"+cid, cid, body, &linkGot) })
			wg.Go(func() {
				m, err := s.FindOrStash(ctx, "mobile", cid, body, true)
				switch {
				case err == nil:
					if m.ID != "fosr-"+cid {
						t.Errorf("%s: found %s", cid, m.ID)
					}
					rcptGot.Store(cid, true)
				case !errors.Is(err, ErrNotFound):
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for i := range n {
			cid := "S" + strconv.Itoa(i)
			_, byLink := linkGot.Load(cid)
			_, byRcpt := rcptGot.Load(cid)
			if byLink == byRcpt {
				t.Errorf("%s: taken by link %v, by receipt side %v; want exactly one", cid, byLink, byRcpt)
			}
			if _, err := s.TakeOrphan(ctx, "mobile", cid); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: an orphan is left behind (%v)", cid, err)
			}
		}
	})

	t.Run("Deliveries", func(t *testing.T) {
		s := open(t, longTTL)
		var ids []string
		for i := range 5 {
			d := &Delivery{Account: "acme", Body: []byte{byte(i)}, MsgID: "m" + strconv.Itoa(i), Created: time.Now()}
			must(t, s.AddDelivery(ctx, d, nil))
			if d.ID == "" || slices.Contains(ids, d.ID) {
				t.Fatalf("delivery id %q: want a new unique id (have %v)", d.ID, ids)
			}
			ids = append(ids, d.ID)
			must(t, s.AddDelivery(ctx, &Delivery{Account: "other", Body: []byte("x")}, nil))
		}
		got, err := s.PendingDeliveries(ctx, "acme", 3)
		must(t, err)
		if len(got) != 3 {
			t.Fatalf("PendingDeliveries(max 3) = %d", len(got))
		}
		for i, d := range got {
			if d.ID != ids[i] || d.Account != "acme" || !bytes.Equal(d.Body, []byte{byte(i)}) || d.MsgID != "m"+strconv.Itoa(i) {
				t.Errorf("delivery %d = %+v, want id %s body %d", i, d, ids[i], i)
			}
		}
		// Acking out of order keeps the rest in order.
		must(t, s.AckDelivery(ctx, "acme", ids[1]))
		must(t, s.AckDelivery(ctx, "acme", ids[0]))
		must(t, s.AckDelivery(ctx, "acme", "unknown"))
		got, err = s.PendingDeliveries(ctx, "acme", 0)
		must(t, err)
		var gotIDs []string
		for _, d := range got {
			gotIDs = append(gotIDs, d.ID)
		}
		if !slices.Equal(gotIDs, ids[2:]) {
			t.Errorf("after acks: %v, want %v", gotIDs, ids[2:])
		}
		other, err := s.PendingDeliveries(ctx, "other", 0)
		must(t, err)
		if len(other) != 5 {
			t.Errorf("other account has %d deliveries, want 5", len(other))
		}
		none, err := s.PendingDeliveries(ctx, "nobody", 10)
		must(t, err)
		if len(none) != 0 {
			t.Errorf("unknown account: %d deliveries", len(none))
		}
		for account, want := range map[string]int{"acme": 3, "other": 5, "nobody": 0} {
			if n, err := s.CountDeliveries(ctx, account); err != nil || n != want {
				t.Errorf("CountDeliveries(%s) = %d, %v; want %d", account, n, err, want)
			}
		}
		// A caller-chosen id is kept; adding it again replaces the body in place.
		must(t, s.AddDelivery(ctx, &Delivery{ID: "mine", Account: "acme", Body: []byte("v1")}, nil))
		must(t, s.AddDelivery(ctx, &Delivery{ID: "mine", Account: "acme", Body: []byte("v2")}, nil))
		got, err = s.PendingDeliveries(ctx, "acme", 0)
		must(t, err)
		if n := len(got); n != 4 || got[3].ID != "mine" || string(got[3].Body) != "v2" {
			t.Errorf("after re-adding: %d deliveries, last %+v", n, got[len(got)-1])
		}
		if n, err := s.CountDeliveries(ctx, "acme"); err != nil || n != 4 {
			t.Errorf("CountDeliveries after re-adding = %d, %v; want 4", n, err)
		}
	})

	t.Run("AcksConcurrent", func(t *testing.T) {
		// A batch of receipts answered together: their acknowledgements
		// may share a write (Redis: one transaction); each removes its
		// own delivery, and the others stay.
		s := open(t, longTTL)
		const n = 40
		ids := make([]string, n)
		for i := range ids {
			d := &Delivery{Account: "platform", Body: []byte("d" + strconv.Itoa(i))}
			must(t, s.AddDelivery(ctx, d, nil))
			ids[i] = d.ID
		}
		var wg sync.WaitGroup
		for _, id := range ids[:n-2] {
			wg.Go(func() {
				if err := s.AckDelivery(ctx, "platform", id); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		left, err := s.PendingDeliveries(ctx, "platform", 0)
		must(t, err)
		if len(left) != 2 || left[0].ID != ids[n-2] || left[1].ID != ids[n-1] {
			t.Fatalf("left after the acks: %d deliveries, want the 2 not acknowledged", len(left))
		}
	})

	t.Run("DeliveryWithMessage", func(t *testing.T) {
		s := open(t, longTTL)
		m := testMessage("m9")
		m.CarrierID, m.State = "C9", StateSent
		must(t, s.PutMessage(ctx, m))
		m.State, m.Note = StateDone, "DELIVRD"
		d := &Delivery{Account: "platform", Body: []byte("id:m9 stat:DELIVRD"), MsgID: "m9"}
		must(t, s.AddDelivery(ctx, d, m))
		if got := mustGet(t, s, "m9"); got.State != StateDone || got.Note != "DELIVRD" {
			t.Errorf("message after AddDelivery: %s %q", got.State, got.Note)
		}
		if got, err := s.FindByCarrierID(ctx, "mobile", "C9"); err != nil || got.State != StateDone {
			t.Errorf("FindByCarrierID after AddDelivery: %v %v", got, err)
		}
		got, err := s.PendingDeliveries(ctx, "platform", 0)
		must(t, err)
		if len(got) != 1 || got[0].ID != d.ID || got[0].MsgID != "m9" {
			t.Errorf("deliveries = %+v", got)
		}
	})

	t.Run("ModemQueueOrder", func(t *testing.T) {
		s := open(t, longTTL)
		depth, oldest, err := s.ModemQueue(ctx)
		must(t, err)
		if depth != 0 || !oldest.IsZero() {
			t.Errorf("empty queue: depth %d oldest %v", depth, oldest)
		}
		wantEmpty(t, s)
		before := time.Now().Truncate(time.Millisecond)
		// Ids sort against their age so that a tie-break by id would show.
		for _, e := range []struct {
			id  string
			pri byte
		}{{"z-p0-old", 0}, {"y-p1-old", 1}, {"x-p0-new", 0}, {"w-p3", 3}, {"v-p1-new", 1}, {"u-p9", 9}} {
			must(t, s.EnqueueModem(ctx, e.id, e.pri, time.Now()))
			nextMilli()
		}
		after := time.Now()
		depth, oldest, err = s.ModemQueue(ctx)
		must(t, err)
		if depth != 6 || oldest.Before(before) || oldest.After(after) {
			t.Errorf("queue: depth %d oldest %v, want 6 and in [%v, %v]", depth, oldest, before, after)
		}
		var order []string
		for range 6 {
			order = append(order, claim(t, s, time.Hour))
		}
		want := []string{"w-p3", "u-p9", "y-p1-old", "v-p1-new", "z-p0-old", "x-p0-new"}
		if !slices.Equal(order, want) {
			t.Errorf("claim order %v, want %v", order, want)
		}
		wantEmpty(t, s)
		// Claimed entries still count until acked.
		if depth, _, _ := s.ModemQueue(ctx); depth != 6 {
			t.Errorf("depth with all claimed = %d, want 6", depth)
		}
		for _, id := range order {
			must(t, s.AckModem(ctx, id))
		}
		must(t, s.AckModem(ctx, "unknown"))
		if depth, oldest, _ := s.ModemQueue(ctx); depth != 0 || !oldest.IsZero() {
			t.Errorf("after acks: depth %d oldest %v", depth, oldest)
		}
	})

	t.Run("ModemQueueHead", func(t *testing.T) {
		s := open(t, longTTL)
		if head, err := s.ModemQueueHead(ctx, 10); err != nil || len(head) != 0 {
			t.Fatalf("empty queue: head %+v, %v", head, err)
		}
		later := time.Now().Add(time.Hour)
		// Enqueued in this order, each in a later millisecond; ids sort
		// against their age so that an order by id would show.
		for _, e := range []struct {
			id  string
			pri byte
			due time.Time
		}{{"z-p0", 0, time.Now()}, {"y-p3", 3, time.Now()}, {"x-p1-later", 1, later}, {"w-p0", 0, time.Now()}, {"v-p9", 9, time.Now()}} {
			must(t, s.EnqueueModem(ctx, e.id, e.pri, e.due))
			nextMilli()
		}
		if id := claim(t, s, time.Hour); id != "y-p3" {
			t.Fatalf("claimed %q, want y-p3 (highest priority)", id)
		}
		head, err := s.ModemQueueHead(ctx, 10)
		must(t, err)
		var ids []string
		for _, e := range head {
			ids = append(ids, e.ID)
		}
		if want := []string{"z-p0", "y-p3", "x-p1-later", "w-p0", "v-p9"}; !slices.Equal(ids, want) {
			t.Fatalf("head %v, want oldest first %v", ids, want)
		}
		for i, e := range head {
			if i > 0 && !e.Enqueued.After(head[i-1].Enqueued) {
				t.Errorf("%s enqueued %v, not after %s's %v", e.ID, e.Enqueued, head[i-1].ID, head[i-1].Enqueued)
			}
			wantPri := map[string]byte{"z-p0": 0, "y-p3": 3, "x-p1-later": 1, "w-p0": 0, "v-p9": 3}[e.ID]
			if e.Priority != wantPri {
				t.Errorf("%s priority %d, want %d", e.ID, e.Priority, wantPri)
			}
			if claimed := e.ID == "y-p3"; e.Claimed != claimed {
				t.Errorf("%s claimed %v, want %v", e.ID, e.Claimed, claimed)
			}
			if e.ID == "x-p1-later" {
				if d := e.Due.Sub(later); d < -time.Millisecond || d > time.Millisecond {
					t.Errorf("%s due %v, want %v", e.ID, e.Due, later)
				}
			} else if !e.Due.IsZero() {
				t.Errorf("%s due %v, want zero (due now)", e.ID, e.Due)
			}
		}
		if head, _ := s.ModemQueueHead(ctx, 2); len(head) != 2 || head[0].ID != "z-p0" || head[1].ID != "y-p3" {
			t.Errorf("head of 2: %+v", head)
		}
		must(t, s.AckModem(ctx, "z-p0"))
		if head, _ := s.ModemQueueHead(ctx, 1); len(head) != 1 || head[0].ID != "y-p3" {
			t.Errorf("after acking the oldest: %+v", head)
		}
	})

	t.Run("DueTimes", func(t *testing.T) {
		s := open(t, longTTL)
		must(t, s.EnqueueModem(ctx, "later", 3, time.Now().Add(time.Hour)))
		must(t, s.EnqueueModem(ctx, "now", 0, time.Now()))
		if id := claim(t, s, time.Hour); id != "now" {
			t.Errorf("claimed %q, want the only due entry", id)
		}
		soon := time.Now().Add(200 * time.Millisecond)
		must(t, s.EnqueueModem(ctx, "soon", 3, soon))
		if id := claimWithin(t, s, time.Hour, 10*time.Second); id != "soon" {
			t.Errorf("claimed %q, want soon", id)
		}
		// Due times are kept in whole milliseconds: due may come up to 1 ms
		// early.
		if early := time.Until(soon); early > time.Millisecond {
			t.Errorf("soon was claimed %v before it was due", early)
		}
		wantEmpty(t, s)
	})

	t.Run("LeasesAndRelease", func(t *testing.T) {
		s := open(t, longTTL)
		must(t, s.EnqueueModem(ctx, "a", 1, time.Now()))
		must(t, s.EnqueueModem(ctx, "b", 0, time.Now()))
		if id := claim(t, s, time.Hour); id != "a" {
			t.Fatalf("claimed %q, want a", id)
		}
		if id := claim(t, s, time.Hour); id != "b" {
			t.Fatalf("claimed %q, want b", id)
		}
		wantEmpty(t, s) // both held for an hour

		// Released now: claimable again, keeping its priority.
		must(t, s.ReleaseModem(ctx, "b", time.Now()))
		if id := claim(t, s, time.Hour); id != "b" {
			t.Fatalf("after release claimed %q, want b", id)
		}
		// Released for later: not claimable now.
		must(t, s.ReleaseModem(ctx, "b", time.Now().Add(time.Hour)))
		wantEmpty(t, s)
		if d, _, _ := s.ModemQueue(ctx); d != 2 {
			t.Errorf("depth = %d, want 2", d)
		}

		// A short lease: the entry comes back once the lease passes, not before.
		must(t, s.EnqueueModem(ctx, "c", 2, time.Now()))
		claimedAt := time.Now()
		lease := 300 * time.Millisecond
		if id := claim(t, s, lease); id != "c" {
			t.Fatalf("claimed %q, want c", id)
		}
		if id := claimWithin(t, s, time.Hour, 10*time.Second); id != "c" {
			t.Errorf("reclaimed %q, want c", id)
		}
		// Leases are kept in whole milliseconds (the Redis scripts compare
		// Unix milliseconds), so "passed" may come up to 1 ms early.
		if since := time.Since(claimedAt); since < lease-time.Millisecond {
			t.Errorf("c was claimed again %v after the claim, before its %v lease passed", since, lease)
		}
	})

	t.Run("TTL", func(t *testing.T) {
		s := open(t, 300*time.Millisecond)
		m := testMessage("short")
		m.CarrierID = "S1"
		// The orphans first: they expire no later than the message the
		// loop below waits for.
		must(t, s.StashOrphan(ctx, "mobile", "S2", []byte("r")))
		if _, err := s.FindOrStash(ctx, "mobile", "S3", []byte("r"), true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("FindOrStash of an unlinked id: %v", err)
		}
		must(t, s.PutMessage(ctx, m))
		must(t, s.AddDelivery(ctx, &Delivery{Account: "platform", Body: []byte("d")}, nil))
		must(t, s.EnqueueModem(ctx, "short", 0, time.Now()))
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := s.GetMessage(ctx, "short")
			if errors.Is(err, ErrNotFound) {
				break
			}
			must(t, err)
			if time.Now().After(deadline) {
				t.Fatal("message did not expire")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := s.FindByCarrierID(ctx, "mobile", "S1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("index entry: %v, want ErrNotFound", err)
		}
		for _, cid := range []string{"S2", "S3"} {
			if _, err := s.TakeOrphan(ctx, "mobile", cid); !errors.Is(err, ErrNotFound) {
				t.Errorf("orphan %s: %v, want ErrNotFound", cid, err)
			}
		}
		// Pending deliveries and queue entries do not expire.
		if ds, err := s.PendingDeliveries(ctx, "platform", 0); err != nil || len(ds) != 1 {
			t.Errorf("deliveries after TTL: %d, %v", len(ds), err)
		}
		if id := claim(t, s, time.Hour); id != "short" {
			t.Errorf("queue entry after TTL: %q", id)
		}
	})

	t.Run("Restart", func(t *testing.T) {
		s := open(t, longTTL)
		m := testMessage("r1")
		m.CarrierID = "RC1"
		must(t, s.PutMessage(ctx, m))
		must(t, s.StashOrphan(ctx, "unicom", "RO", []byte("orphan")))
		d := &Delivery{Account: "platform", Body: []byte("receipt")}
		must(t, s.AddDelivery(ctx, d, nil))
		must(t, s.EnqueueModem(ctx, "q-held", 3, time.Now()))
		must(t, s.EnqueueModem(ctx, "q-free", 0, time.Now()))
		if id := claim(t, s, time.Hour); id != "q-held" {
			t.Fatalf("claimed %q", id)
		}
		must(t, s.Close())

		s = open(t, longTTL)
		sameMessage(t, mustGet(t, s, "r1"), m)
		if got, err := s.FindByCarrierID(ctx, "mobile", "RC1"); err != nil || got.ID != "r1" {
			t.Errorf("index after restart: %v %v", got, err)
		}
		if b, err := s.TakeOrphan(ctx, "unicom", "RO"); err != nil || string(b) != "orphan" {
			t.Errorf("orphan after restart: %q %v", b, err)
		}
		ds, err := s.PendingDeliveries(ctx, "platform", 0)
		must(t, err)
		if len(ds) != 1 || ds[0].ID != d.ID || string(ds[0].Body) != "receipt" {
			t.Errorf("deliveries after restart: %+v", ds)
		}
		// The lease survives: only the free entry is claimable.
		if id := claim(t, s, time.Hour); id != "q-free" {
			t.Errorf("claimed %q after restart, want q-free", id)
		}
		wantEmpty(t, s)
		// New deliveries get new ids after a restart.
		d2 := &Delivery{Account: "platform", Body: []byte("second")}
		must(t, s.AddDelivery(ctx, d2, nil))
		if d2.ID == d.ID {
			t.Errorf("delivery id %s reused after restart", d2.ID)
		}
	})

	t.Run("ProbeWrite", func(t *testing.T) {
		// The outage probe's write (dispatcher.go): it succeeds on a
		// working store, survives a restart, and fails once closed.
		s := open(t, longTTL)
		must(t, s.ProbeWrite(ctx))
		must(t, s.ProbeWrite(ctx))
		must(t, s.Close())
		if err := s.ProbeWrite(ctx); err == nil {
			t.Error("ProbeWrite on a closed store succeeded")
		}
		s = open(t, longTTL)
		must(t, s.ProbeWrite(ctx))
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := open(t, longTTL)
		const workers, each = 8, 40
		var wg sync.WaitGroup
		errs := make(chan error, workers*each*3)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("c%d-%d", w, i)
					m := testMessage(id)
					m.CarrierID = "CID-" + id
					if err := s.PutMessage(ctx, m); err != nil {
						errs <- err
					}
					if err := s.AddDelivery(ctx, &Delivery{Account: "acct" + strconv.Itoa(w%2), MsgID: id}, nil); err != nil {
						errs <- err
					}
					if err := s.EnqueueModem(ctx, id, byte(i%4), time.Now()); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for w := range workers {
			for i := range each {
				id := fmt.Sprintf("c%d-%d", w, i)
				if got, err := s.FindByCarrierID(ctx, "mobile", "CID-"+id); err != nil || got.ID != id {
					t.Fatalf("FindByCarrierID(%s): %v %v", id, got, err)
				}
			}
		}
		for a := range 2 {
			ds, err := s.PendingDeliveries(ctx, "acct"+strconv.Itoa(a), 0)
			must(t, err)
			if len(ds) != workers/2*each {
				t.Errorf("acct%d: %d deliveries, want %d", a, len(ds), workers/2*each)
			}
		}
		// Concurrent claimers: every entry claimed exactly once.
		var mu sync.Mutex
		seen := map[string]int{}
		for range workers {
			wg.Go(func() {
				for {
					id, err := s.ClaimModem(ctx, "w", time.Hour)
					if errors.Is(err, ErrEmpty) {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seen[id]++
					mu.Unlock()
					if err := s.AckModem(ctx, id); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if len(seen) != workers*each {
			t.Errorf("claimed %d distinct entries, want %d", len(seen), workers*each)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("%s claimed %d times", id, n)
			}
		}
	})
}

// linkSide links message id to carrier id cid, as a carrier's acceptance
// does, and notes in got when the link took the stashed receipt (which must
// be body).
func linkSide(t *testing.T, s Store, id, cid string, body []byte, got *sync.Map) {
	m := testMessage(id)
	m.CarrierID, m.State = cid, StateSent
	orphan, err := s.LinkCarrier(context.Background(), m)
	if err != nil {
		t.Error(err)
		return
	}
	if orphan != nil {
		if !bytes.Equal(orphan, body) {
			t.Errorf("%s: link took %q", cid, orphan)
		}
		got.Store(cid, true)
	}
}
