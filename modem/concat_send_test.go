package modem_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A part of a long message refused after earlier parts went out (their
// AT+CMGS answered +CMGS: <mr>): the rest go on the same modem under the
// same reference, the parts sent are not sent again (package doc, failure
// policy). A handset joins parts only from one SIM and one reference
// (TS 23.040 §9.2.3.24.1).

// longText is a GSM 7-bit text of three parts (153 + 153 + 3 septets).
var longText = strings.Repeat("a", 153) + strings.Repeat("b", 153) + "ccc"

func longSubmit() sms.Submit {
	return sms.Submit{Dest: "+8613800138000", Payload: []byte(longText), StatusReport: true}
}

// sentOnce checks that subs are the three parts of longText, each sent
// once, in order, under one reference, and returns that reference and
// their TP-MRs.
func sentOnce(t *testing.T, modemName string, subs []modemsim.Submit) (ref int, mrs []int) {
	t.Helper()
	var seqs []int
	for _, s := range subs {
		seqs = append(seqs, s.Seq)
		mrs = append(mrs, s.MR)
	}
	if !slices.Equal(seqs, []int{1, 2, 3}) {
		t.Fatalf("%s sent the parts %v, want 1, 2, 3 once each: %+v", modemName, seqs, subs)
	}
	for _, s := range subs {
		if s.Ref != subs[0].Ref || s.Total != 3 {
			t.Fatalf("%s sent the parts under different references: %+v", modemName, subs)
		}
	}
	return subs[0].Ref, mrs
}

// partReports waits for the n status reports of message id and checks
// they are its parts 1 to n of n, from modemName; reports of other
// messages (an orphan part's, without an id) are returned apart.
func partReports(t *testing.T, ctx context.Context, p *modem.Pool, id, modemName string, n int) (others []modem.Report) {
	t.Helper()
	var parts []int
	for len(parts) < n {
		select {
		case r := <-p.Reports():
			if r.ID != id {
				others = append(others, r)
				continue
			}
			if r.Modem != modemName || r.Parts != n || !r.Status.Delivered() {
				t.Fatalf("report %+v, want part of %d from %s", r, n, modemName)
			}
			parts = append(parts, r.Part)
		case <-ctx.Done():
			t.Fatalf("reports of parts %v of %s came, want all %d", parts, id, n)
		}
	}
	slices.Sort(parts)
	if want := []int{1, 2, 3}[:n]; !slices.Equal(parts, want) {
		t.Fatalf("reports of parts %v, want %v", parts, want)
	}
	return others
}

// One modem refuses part 2 of a 3-part message once (+CMS ERROR: 42,
// congestion: temporary): it sends parts 1, 2 and 3 exactly once each,
// under one reference; the message's refs are the TP-MRs of those sends,
// and a status report comes for each part under the message's id.
func TestConcatPartRefusedOnceSendsTheRestOnly(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0")
	sim.FailAfter(1, 42, 1)
	sent, err := p.Send(ctx, "long", longSubmit())
	if err != nil {
		t.Fatal(err)
	}
	_, mrs := sentOnce(t, "m0", sim.Submits())
	if !slices.Equal(sent.Refs, mrs) {
		t.Fatalf("Sent.Refs %v, want the TP-MRs of the parts sent %v", sent.Refs, mrs)
	}
	if n := sim.Count("+CMGS="); n != 4 {
		t.Fatalf("%d AT+CMGS, want 4 (part 2 twice)", n)
	}
	got, err := sim.WaitSent(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Text != longText {
		t.Fatalf("the handset reads %q, want the whole text", got[0].Text)
	}
	if others := partReports(t, ctx, p, "long", "m0", 3); len(others) > 0 {
		t.Fatalf("other reports: %+v", others)
	}
}

// Two modems, both up; m1 refuses every send (+CMS ERROR: 500) and m0
// refuses part 2 once: the rest of the message goes on m0, where part 1
// went, under the same reference (not on m1, not whole again).
func TestConcatRestStaysOnTheModemOfTheFirstParts(t *testing.T) {
	m0 := startSim(t, "m0", modemsim.Options{})
	m1 := startSim(t, "m1", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{m0, m1}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0", "m1")
	m0.FailAfter(1, 42, 1)
	m1.FailNext(500, 1000)
	sent, err := p.Send(ctx, "long", longSubmit())
	if err != nil {
		t.Fatal(err)
	}
	if sent.Modem != "m0" {
		t.Fatalf("sent by %s, want m0", sent.Modem)
	}
	_, mrs := sentOnce(t, "m0", m0.Submits())
	if !slices.Equal(sent.Refs, mrs) {
		t.Fatalf("Sent.Refs %v, want %v", sent.Refs, mrs)
	}
	if s := m1.Submits(); len(s) > 0 {
		t.Fatalf("m1 sent %+v", s)
	}
	if others := partReports(t, ctx, p, "long", "m0", 3); len(others) > 0 {
		t.Fatalf("other reports: %+v", others)
	}
}

// m0 sends part 1 and is taken out at part 2's error (MaxErrors 1): the
// whole message goes to m1 under a new reference, with a warning that the
// handset may show an incomplete message; the report of the orphan part
// comes without the message's id (it must not count toward its receipt),
// the three of m1 with it.
func TestConcatModemTakenOutAfterPartOneSendsTheWholeElsewhere(t *testing.T) {
	m0 := startSim(t, "m0", modemsim.Options{})
	m1 := startSim(t, "m1", modemsim.Options{})
	core, logs := observer.New(zap.WarnLevel)
	p := startPool(t, []*modemsim.Sim{m0, m1}, 0, func(o *modem.PoolOptions) {
		o.Logger = zap.New(core)
		o.MaxErrors = 1
	})
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0", "m1")
	m0.FailAfter(1, 42, 1)
	sent, err := p.Send(ctx, "long", longSubmit())
	if err != nil {
		t.Fatal(err)
	}
	first := m0.Submits()
	if len(first) != 1 || first[0].Seq != 1 {
		t.Fatalf("m0 sent %+v, want part 1 only (the pool gives the first message to the first modem)", first)
	}
	if sent.Modem != "m1" {
		t.Fatalf("sent by %s, want m1", sent.Modem)
	}
	ref, mrs := sentOnce(t, "m1", m1.Submits())
	if ref == first[0].Ref {
		t.Fatalf("m1 sent the message under reference %d, that of the orphan part 1 on m0", ref)
	}
	if !slices.Equal(sent.Refs, mrs) {
		t.Fatalf("Sent.Refs %v, want %v", sent.Refs, mrs)
	}
	warned := false
	for _, e := range logs.FilterMessageSnippet("the handset may show an incomplete message").All() {
		if e.ContextMap()["id"] == "long" && e.ContextMap()["modem"] == "m0" {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning of an incomplete message: %v", logs.All())
	}
	others := partReports(t, ctx, p, "long", "m1", 3)
	for len(others) == 0 {
		select {
		case r := <-p.Reports():
			others = append(others, r)
		case <-ctx.Done():
			t.Fatal("no report of the orphan part")
		}
	}
	if r := others[0]; len(others) != 1 || r.ID != "" || !r.Orphan || r.Modem != "m0" || r.Status.MR != first[0].MR {
		t.Fatalf("reports %+v, want the orphan part's from m0 without an id", others)
	}
}

// A permanent error on part 2 after part 1 went out: the message fails at
// once (permanent), nothing is sent again, on this modem or another.
func TestConcatPermanentErrorAfterPartOneFails(t *testing.T) {
	m0 := startSim(t, "m0", modemsim.Options{})
	m1 := startSim(t, "m1", modemsim.Options{})
	core, logs := observer.New(zap.WarnLevel)
	p := startPool(t, []*modemsim.Sim{m0, m1}, 0, func(o *modem.PoolOptions) { o.Logger = zap.New(core) })
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0", "m1")
	m0.FailAfter(1, 304, 1) // invalid PDU parameter: permanent, may be the modem's
	_, err := p.Send(ctx, "long", longSubmit())
	var se *modem.SendError
	if !errors.As(err, &se) || !se.Permanent || se.Code != 304 {
		t.Fatalf("want a permanent error 304, got %v", err)
	}
	if s := m0.Submits(); len(s) != 1 || s[0].Seq != 1 {
		t.Fatalf("m0 sent %+v, want part 1 only", s)
	}
	if s := m1.Submits(); len(s) > 0 {
		t.Fatalf("m1 sent %+v, want nothing", s)
	}
	if logs.FilterMessageSnippet("the handset may show an incomplete message").Len() != 1 {
		t.Fatalf("want one warning of an incomplete message: %v", logs.All())
	}
}

// The retries on the modem of the first parts end with MaxAttempts: the
// message fails (temporary) with the warning, and the parts sent were sent
// once.
func TestConcatRestFailingUpToMaxAttemptsFails(t *testing.T) {
	sim := startSim(t, "a", modemsim.Options{})
	core, logs := observer.New(zap.WarnLevel)
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) {
		o.Logger = zap.New(core)
		o.MaxAttempts = 2
	})
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0")
	sim.FailAfter(1, 42, 2)
	_, err := p.Send(ctx, "long", longSubmit())
	var se *modem.SendError
	if !errors.As(err, &se) || se.Permanent || se.Code != 42 {
		t.Fatalf("want a temporary error 42, got %v", err)
	}
	if !se.InDoubt {
		t.Fatal("the failure is not in doubt, though part 1 went out: the caller's resend of the whole message would not count as a possible duplicate")
	}
	if s := sim.Submits(); len(s) != 1 || s[0].Seq != 1 {
		t.Fatalf("sent %+v, want part 1 once", s)
	}
	if n := sim.Count("+CMGS="); n != 3 {
		t.Fatalf("%d AT+CMGS, want 3 (part 1, part 2 twice)", n)
	}
	if logs.FilterMessageSnippet("the handset may show an incomplete message").Len() != 1 {
		t.Fatalf("want one warning of an incomplete message: %v", logs.All())
	}
}

// The caller gives up a long message whose part 1 went out while its rest
// waits for that modem (taken out at part 2's error): the answer is no
// clean ErrWithdrawn but a failure in doubt naming the modem, so that the
// caller counts the whole message's next send as a possible duplicate (the
// handset has part 1). The reviewer's finding: it was a clean withdrawal.
func TestConcatGivenUpAfterPartOneIsInDoubt(t *testing.T) {
	sim := startSim(t, "m0", modemsim.Options{})
	p := startPool(t, []*modemsim.Sim{sim}, 0, func(o *modem.PoolOptions) { o.MaxErrors = 1 })
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0")
	sim.FailAfter(1, 42, 1)
	giveUp := make(chan struct{})
	res := make(chan error, 1)
	go func() {
		_, err := p.SendUnless(ctx, giveUp, "long", longSubmit())
		res <- err
	}()
	waitDown(t, ctx, p, "m0", "") // taken out at part 2's error; the rest waits for it
	if s := sim.Submits(); len(s) != 1 || s[0].Seq != 1 {
		t.Fatalf("sent %+v, want part 1 only", s)
	}
	close(giveUp)
	var err error
	select {
	case err = <-res:
	case <-ctx.Done():
		t.Fatal("the give-up was not answered")
	}
	var se *modem.SendError
	if errors.Is(err, modem.ErrWithdrawn) || !errors.As(err, &se) || !se.InDoubt || se.Modem != "m0" {
		t.Fatalf("answer %v, want a failure in doubt on m0 (part 1 went out)", err)
	}
}
