package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// deliveryIDs lists the ids of ds.
func deliveryIDs(ds []*Delivery) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// runClaims checks the Claims contract (claims.go); runContract calls it.
func runClaims(t *testing.T, open opener) {
	ctx := context.Background()

	t.Run("DeliveryLease", func(t *testing.T) {
		s := open(t, longTTL)
		var ids []string
		for i := range 4 {
			d := &Delivery{Account: "acme", Body: []byte{byte(i)}, Created: time.Now()}
			must(t, s.AddDelivery(ctx, d, nil))
			ids = append(ids, d.ID)
		}
		// The holder gets them oldest first; another worker gets nothing
		// while the lease runs; the holder claims again (renewing).
		got, err := s.ClaimDeliveries(ctx, "acme", "gw-a", 3, time.Hour)
		must(t, err)
		if !slices.Equal(deliveryIDs(got), ids[:3]) {
			t.Fatalf("first claim = %v, want %v", deliveryIDs(got), ids[:3])
		}
		if got, err := s.ClaimDeliveries(ctx, "acme", "gw-b", 10, time.Hour); !errors.Is(err, ErrLeased) || len(got) != 0 {
			t.Fatalf("claim by another worker = %v, %v; want ErrLeased", deliveryIDs(got), err)
		}
		// Another account is not held.
		must(t, s.AddDelivery(ctx, &Delivery{Account: "other", Body: []byte("o")}, nil))
		if got, err := s.ClaimDeliveries(ctx, "other", "gw-b", 10, time.Hour); err != nil || len(got) != 1 {
			t.Fatalf("claim of another account = %v, %v", deliveryIDs(got), err)
		}
		// Acked deliveries are gone; the rest come in order.
		must(t, s.AckDelivery(ctx, "acme", ids[0]))
		must(t, s.AckDelivery(ctx, "acme", ids[2]))
		got, err = s.ClaimDeliveries(ctx, "acme", "gw-a", 0, time.Hour)
		must(t, err)
		if want := []string{ids[1], ids[3]}; !slices.Equal(deliveryIDs(got), want) {
			t.Fatalf("claim after acks = %v, want %v", deliveryIDs(got), want)
		}
		// Releasing by a non-holder does nothing; by the holder hands the
		// account over at once.
		must(t, s.ReleaseDeliveries(ctx, "acme", "gw-b"))
		if _, err := s.ClaimDeliveries(ctx, "acme", "gw-b", 10, time.Hour); !errors.Is(err, ErrLeased) {
			t.Fatalf("claim after a non-holder's release: %v, want ErrLeased", err)
		}
		must(t, s.ReleaseDeliveries(ctx, "acme", "gw-a"))
		got, err = s.ClaimDeliveries(ctx, "acme", "gw-b", 10, 50*time.Millisecond)
		must(t, err)
		if len(got) != 2 {
			t.Fatalf("claim after release = %v, want 2 deliveries", deliveryIDs(got))
		}
		// A holder that dies: its lease passes and the deliveries it never
		// acknowledged go to another worker.
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err = s.ClaimDeliveries(ctx, "acme", "gw-c", 10, time.Hour)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrLeased) {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatal("a passed lease never freed the account")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if want := []string{ids[1], ids[3]}; !slices.Equal(deliveryIDs(got), want) {
			t.Fatalf("claim after the lease passed = %v, want %v", deliveryIDs(got), want)
		}
		// With nothing pending the lease is dropped: the next delivery is
		// anyone's.
		must(t, s.AckDelivery(ctx, "acme", ids[1]))
		must(t, s.AckDelivery(ctx, "acme", ids[3]))
		if got, err := s.ClaimDeliveries(ctx, "acme", "gw-c", 10, time.Hour); err != nil || len(got) != 0 {
			t.Fatalf("claim of an empty account = %v, %v", deliveryIDs(got), err)
		}
		must(t, s.AddDelivery(ctx, &Delivery{Account: "acme", Body: []byte("late")}, nil))
		if got, err := s.ClaimDeliveries(ctx, "acme", "gw-a", 10, time.Hour); err != nil || len(got) != 1 {
			t.Fatalf("claim after the holder found nothing = %v, %v", deliveryIDs(got), err)
		}
	})

	t.Run("DeliveryLeaseSurvivesRestart", func(t *testing.T) {
		s := open(t, longTTL)
		must(t, s.AddDelivery(ctx, &Delivery{Account: "acme", Body: []byte("r")}, nil))
		if _, err := s.ClaimDeliveries(ctx, "acme", "gw-a", 10, time.Hour); err != nil {
			t.Fatal(err)
		}
		must(t, s.Close())
		s = open(t, longTTL)
		if _, err := s.ClaimDeliveries(ctx, "acme", "gw-b", 10, time.Hour); !errors.Is(err, ErrLeased) {
			t.Fatalf("claim after a restart: %v, want ErrLeased", err)
		}
	})

	t.Run("DeliveryClaimRace", func(t *testing.T) {
		s := open(t, longTTL)
		for range 10 {
			must(t, s.AddDelivery(ctx, &Delivery{Account: "acme", Body: []byte("x")}, nil))
		}
		const racers = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners, total := 0, 0
		for i := range racers {
			wg.Go(func() {
				got, err := s.ClaimDeliveries(ctx, "acme", fmt.Sprintf("gw-%d", i), 100, time.Hour)
				if err != nil && !errors.Is(err, ErrLeased) {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					winners++
					total += len(got)
				}
			})
		}
		wg.Wait()
		if winners != 1 || total != 10 {
			t.Fatalf("%d workers got the account (%d deliveries); want exactly one with all 10", winners, total)
		}
	})

	t.Run("FinishMessage", func(t *testing.T) {
		s := open(t, longTTL)
		m := testMessage("f1")
		m.State = StateModemSent
		must(t, s.PutMessage(ctx, m))

		// The wrong state: nothing written, no delivery.
		w := *m
		w.State, w.FinalStat = StateDone, "ACCEPTD"
		d := &Delivery{Account: "platform", Body: []byte("receipt"), MsgID: "f1"}
		ok, err := s.FinishMessage(ctx, []State{StateQueued, StateModem}, &w, d)
		if err != nil || ok {
			t.Fatalf("FinishMessage from the wrong state = %v, %v; want false", ok, err)
		}
		sameMessage(t, mustGet(t, s, "f1"), m)
		if p, _ := s.PendingDeliveries(ctx, "platform", 0); len(p) != 0 {
			t.Fatalf("a lost compare-and-set left %d deliveries", len(p))
		}
		// The right state: the message and its receipt, the receipt id assigned.
		w.Carrier, w.CarrierID = "mobile", "C-77"
		ok, err = s.FinishMessage(ctx, []State{StateModem, StateModemSent}, &w, d)
		if err != nil || !ok {
			t.Fatalf("FinishMessage = %v, %v; want true", ok, err)
		}
		sameMessage(t, mustGet(t, s, "f1"), &w)
		if got, err := s.FindByCarrierID(ctx, "mobile", "C-77"); err != nil || got.ID != "f1" {
			t.Fatalf("carrier index after FinishMessage: %v, %v", got, err)
		}
		p, err := s.PendingDeliveries(ctx, "platform", 0)
		must(t, err)
		if len(p) != 1 || d.ID == "" || p[0].ID != d.ID || string(p[0].Body) != "receipt" || p[0].MsgID != "f1" {
			t.Fatalf("deliveries after FinishMessage: %+v (d.ID %q)", p, d.ID)
		}
		// Done is not modemsent any more: a second finisher loses.
		again := w
		again.FinalStat = "DELIVRD"
		if ok, err := s.FinishMessage(ctx, []State{StateModemSent}, &again, &Delivery{Account: "platform", Body: []byte("2")}); err != nil || ok {
			t.Fatalf("second FinishMessage = %v, %v; want false", ok, err)
		}
		// Without a delivery, and with a caller-chosen delivery id.
		q := testMessage("f2")
		q.State = StateQueued
		must(t, s.PutMessage(ctx, q))
		q2 := *q
		q2.State = StateModem
		if ok, err := s.FinishMessage(ctx, []State{StateQueued}, &q2, nil); err != nil || !ok {
			t.Fatalf("FinishMessage without a delivery = %v, %v", ok, err)
		}
		sameMessage(t, mustGet(t, s, "f2"), &q2)
		q2.State = StateDone
		if ok, err := s.FinishMessage(ctx, []State{StateModem}, &q2, &Delivery{ID: "mine", Account: "platform", Body: []byte("m")}); err != nil || !ok {
			t.Fatalf("FinishMessage with an id = %v, %v", ok, err)
		}
		p, _ = s.PendingDeliveries(ctx, "platform", 0)
		if len(p) != 2 || p[1].ID != "mine" {
			t.Fatalf("deliveries: %v", deliveryIDs(p))
		}
		// An absent message.
		if _, err := s.FinishMessage(ctx, []State{StateQueued}, testMessage("absent"), nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("FinishMessage of an absent message: %v, want ErrNotFound", err)
		}
		if _, err := s.GetMessage(ctx, "absent"); !errors.Is(err, ErrNotFound) {
			t.Fatal("FinishMessage created an absent message")
		}
	})

	// QueueMessage: the state change and the queue entry in one step, so
	// that a winner never leaves a queued record without its entry.
	t.Run("QueueMessage", func(t *testing.T) {
		s := open(t, longTTL)
		m := testMessage("q1")
		m.State, m.Carrier, m.CarrierID, m.Priority = StateSent, "mobile", "C-9", 2
		must(t, s.PutMessage(ctx, m))
		w := *m
		w.State, w.Note = StateQueued, "carrier receipt UNDELIV"
		// The wrong state: nothing written, nothing queued.
		if ok, err := s.QueueMessage(ctx, []State{StateModemSent}, &w, time.Now()); err != nil || ok {
			t.Fatalf("QueueMessage from the wrong state = %v, %v; want false", ok, err)
		}
		sameMessage(t, mustGet(t, s, "q1"), m)
		wantEmpty(t, s)
		// The right state: the record and the entry, with its priority.
		if ok, err := s.QueueMessage(ctx, []State{StateSent}, &w, time.Now()); err != nil || !ok {
			t.Fatalf("QueueMessage = %v, %v; want true", ok, err)
		}
		sameMessage(t, mustGet(t, s, "q1"), &w)
		if got, err := s.FindByCarrierID(ctx, "mobile", "C-9"); err != nil || got.ID != "q1" {
			t.Fatalf("carrier index after QueueMessage: %v, %v", got, err)
		}
		head, err := s.ModemQueueHead(ctx, 10)
		must(t, err)
		if len(head) != 1 || head[0].ID != "q1" || head[0].Priority != 2 || head[0].Claimed || !head[0].Due.IsZero() {
			t.Fatalf("queue after QueueMessage: %+v", head)
		}
		// A second copy (the carrier resending the receipt) loses and
		// leaves the entry as it was.
		if ok, err := s.QueueMessage(ctx, []State{StateSent}, &w, time.Now()); err != nil || ok {
			t.Fatalf("second QueueMessage = %v, %v; want false", ok, err)
		}
		if got := claim(t, s, time.Hour); got != "q1" {
			t.Fatalf("claimed %q, want q1", got)
		}
		wantEmpty(t, s)
		// Due later: queued, not claimable yet.
		m2 := testMessage("q2")
		m2.State = StateSent
		must(t, s.PutMessage(ctx, m2))
		w2 := *m2
		w2.State = StateQueued
		if ok, err := s.QueueMessage(ctx, []State{StateSent}, &w2, time.Now().Add(time.Hour)); err != nil || !ok {
			t.Fatalf("QueueMessage due later = %v, %v", ok, err)
		}
		wantEmpty(t, s)
		if n, _, err := s.ModemQueue(ctx); err != nil || n != 2 {
			t.Fatalf("queue depth %d, %v; want 2", n, err)
		}
		// An absent message: ErrNotFound, nothing created or queued.
		if _, err := s.QueueMessage(ctx, []State{StateSent}, testMessage("absent"), time.Now()); !errors.Is(err, ErrNotFound) {
			t.Fatalf("QueueMessage of an absent message: %v, want ErrNotFound", err)
		}
		if _, err := s.GetMessage(ctx, "absent"); !errors.Is(err, ErrNotFound) {
			t.Fatal("QueueMessage created an absent message")
		}
		if n, _, err := s.ModemQueue(ctx); err != nil || n != 2 {
			t.Fatalf("queue depth %d, %v; want 2", n, err)
		}
	})

	// Two kinds of finisher race on one message many times over: a status
	// report and a receipt timer (modemsent -> done with a receipt), and a
	// queue worker and cancel_sm (queued -> modem, queued -> done). Exactly
	// one wins each race, and only the winner's receipt is stored.
	t.Run("FinishRace", func(t *testing.T) {
		s := open(t, longTTL)
		const rounds, racers = 5, 8
		for r := range rounds {
			for _, start := range []State{StateModemSent, StateQueued} {
				id := fmt.Sprintf("race-%s-%d", start, r)
				m := testMessage(id)
				m.Account, m.State = "acct-"+id, start
				must(t, s.PutMessage(ctx, m))
				var wg sync.WaitGroup
				var mu sync.Mutex
				var won []int
				for i := range racers {
					wg.Go(func() {
						w := *m
						w.Note = fmt.Sprintf("racer %d", i)
						var d *Delivery
						w.State = StateDone
						if start == StateQueued && i%2 == 0 {
							w.State = StateModem // a worker; the odd ones cancel
						} else {
							d = &Delivery{Account: w.Account, Body: []byte(w.Note), MsgID: id}
						}
						ok, err := s.FinishMessage(ctx, []State{start}, &w, d)
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							mu.Lock()
							won = append(won, i)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				if len(won) != 1 {
					t.Fatalf("%s: winners %v, want exactly one", id, won)
				}
				got := mustGet(t, s, id)
				if want := fmt.Sprintf("racer %d", won[0]); got.Note != want {
					t.Fatalf("%s: stored %q, want the winner's %q", id, got.Note, want)
				}
				p, err := s.PendingDeliveries(ctx, m.Account, 0)
				must(t, err)
				wantDel := 1
				if got.State == StateModem {
					wantDel = 0
				}
				if len(p) != wantDel || (wantDel == 1 && string(p[0].Body) != got.Note) {
					t.Fatalf("%s: %d deliveries stored, want %d from the winner", id, len(p), wantDel)
				}
			}
		}
	})
}
