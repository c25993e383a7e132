package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
)

// halfDeadCarrier is a carrier (not started) whose binds have sessions
// over pipes whose far ends read and never answer, with response_timeout
// rt; its log is returned.
func halfDeadCarrier(t *testing.T, name string, binds int, rt time.Duration) (*Carrier, []*Session, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.WarnLevel)
	c := NewCarrier(config.Carrier{Name: name, Binds: binds, Window: 8, ResponseTimeout: config.Duration(rt)},
		NewHealth(3, 0, zap.NewNop()), zap.New(core))
	var ss []*Session
	for _, b := range c.bindList() {
		near, far := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, far) }()
		s := NewSession(near, SessionConfig{Window: 8})
		s.Value = &bindWatch{}
		s.Start()
		t.Cleanup(func() {
			s.Close()
			s.Wait()
			_ = far.Close()
		})
		b.sess.Store(s)
		ss = append(ss, s)
	}
	return c, ss, logs
}

// picked reports which of ss are still the sessions of their binds (picked
// for submits).
func picked(c *Carrier, ss []*Session) []bool {
	out := make([]bool, len(ss))
	for i, b := range c.bindList() {
		out[i] = b.sess.Load() == ss[i]
	}
	return out
}

func recycledCount(name string) float64 {
	return testutil.ToFloat64(metricCarrierBindRecycled.WithLabelValues(name))
}

// A bind is recycled after down_after_timeouts (3) timeouts in a row on its
// own session, once the carrier answered on another since the first: an
// answer on the session starts its count again (in time or late, any
// status), and timeouts on another session do not add to it.
func TestHalfDeadBindCountsItsOwnTimeouts(t *testing.T) {
	c, ss, logs := halfDeadCarrier(t, "hd-count", 2, time.Nanosecond)
	baseCount := recycledCount("hd-count") // -count=N runs share the metric
	s0, s1 := ss[0], ss[1]
	c.noteSubmitAnswer(s1)
	c.noteSubmitTimeout(s0)
	c.noteSubmitTimeout(s0)
	c.noteSubmitAnswer(s0) // starts s0's count again
	c.noteSubmitTimeout(s0)
	c.noteSubmitTimeout(s1) // not s0's
	c.noteSubmitTimeout(s0)
	c.late(s0, cmdSubmitSM, nil, Frame{Header: Header{ID: cmdSubmitSMResp, Status: statusSysErr}}) // late, an error: an answer all the same
	c.noteSubmitTimeout(s0)
	c.noteSubmitTimeout(s1)
	c.noteSubmitAnswer(s1) // ends s1's own timeouts: no sign against s0 yet
	c.noteSubmitAnswer(s1) // s1 answers: s0 alone is silent
	c.noteSubmitTimeout(s0)
	if p := picked(c, ss); !p[0] || !p[1] {
		t.Fatalf("picked %v after at most 2 timeouts in a row on each session, want both", p)
	}
	c.noteSubmitTimeout(s0) // the third in a row, s1 having answered since the first
	if p := picked(c, ss); p[0] || !p[1] {
		t.Fatalf("picked %v, want the half-dead s0 taken out and s1 kept", p)
	}
	if n := recycledCount("hd-count") - baseCount; n != 1 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v, want 1", n)
	}
	<-s0.Done() // unbound (never answered: at most 2 s), then closed
	if logs.FilterMessageSnippet("answers no submits").Len() != 1 {
		t.Fatalf("log: %v", logs.All())
	}
}

// A carrier silent on every session is health's outage, not a bind to
// recycle, nor is it when it answers again; a session whose timeouts go on
// once the others answer is. A carrier with one bind never recycles it for
// its timeouts (its probes may: TestHalfDeadOnlyBindIsRecycledByItsProbes).
func TestHalfDeadBindNotRecycledWhileTheWholeCarrierIsSilent(t *testing.T) {
	c, ss, _ := halfDeadCarrier(t, "hd-silent", 2, time.Nanosecond)
	s0, s1 := ss[0], ss[1]
	c.noteSubmitAnswer(s0)
	c.noteSubmitAnswer(s1)
	for range 5 {
		c.noteSubmitTimeout(s0)
		c.noteSubmitTimeout(s1)
	}
	if p := picked(c, ss); !p[0] || !p[1] {
		t.Fatalf("picked %v on a carrier silent on every bind, want both kept", p)
	}
	c.noteSubmitAnswer(s1) // the carrier answers again (a probe)
	c.noteSubmitAnswer(s1)
	if p := picked(c, ss); !p[0] || !p[1] {
		t.Fatalf("picked %v once the whole carrier answered again, want both kept", p)
	}
	if n := c.suspects.Load(); n != 0 {
		t.Fatalf("%d suspects left", n)
	}
	c.noteSubmitTimeout(s0) // s0 still silent while s1 answers
	if p := picked(c, ss); p[0] || !p[1] {
		t.Fatalf("picked %v, want s0 taken out", p)
	}

	one, single, _ := halfDeadCarrier(t, "hd-single", 1, time.Nanosecond)
	baseSingle := recycledCount("hd-single") // -count=N runs share the metric
	one.noteSubmitAnswer(single[0])
	for range 10 {
		one.noteSubmitTimeout(single[0])
	}
	one.noteSubmitAnswer(single[0])
	for range 10 {
		one.noteSubmitTimeout(single[0])
	}
	if p := picked(one, single); !p[0] {
		t.Fatal("the only bind of a carrier was recycled for timeouts that were no probes")
	}
	if n := recycledCount("hd-single") - baseSingle; n != 0 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v for a single bind, want 0", n)
	}
}

// A window of submits on a half-dead session times out at once, before the
// carrier's other session answers again: the session waits as a suspect,
// and the other session's next answer recycles it.
func TestHalfDeadBindWindowTimedOutAtOnceIsRecycledAtTheNextAnswer(t *testing.T) {
	c, ss, _ := halfDeadCarrier(t, "hd-burst", 2, time.Nanosecond)
	baseBurst := recycledCount("hd-burst") // -count=N runs share the metric
	c.noteSubmitAnswer(ss[1])
	for range 8 {
		c.noteSubmitTimeout(ss[0])
	}
	if p := picked(c, ss); !p[0] || c.suspects.Load() != 1 {
		t.Fatalf("picked %v, %d suspects: want s0 kept as a suspect until the carrier answers", p, c.suspects.Load())
	}
	c.noteSubmitAnswer(ss[1])
	if p := picked(c, ss); p[0] || !p[1] || c.suspects.Load() != 0 {
		t.Fatalf("picked %v, %d suspects: want s0 recycled", p, c.suspects.Load())
	}
	if n := recycledCount("hd-burst") - baseBurst; n != 1 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v, want 1", n)
	}
}

// As health: a timeout on a session that answered a submit while it waited
// (answers merely late, a stalled gateway reading them late) does not count.
func TestHalfDeadBindTimeoutsAfterAnAnswerWithinResponseTimeoutDoNotCount(t *testing.T) {
	c, ss, _ := halfDeadCarrier(t, "hd-late", 2, time.Hour)
	c.noteSubmitAnswer(ss[0])
	c.noteSubmitAnswer(ss[1])
	for range 5 {
		c.noteSubmitTimeout(ss[0])
	}
	c.noteSubmitAnswer(ss[1])
	if p := picked(c, ss); !p[0] || !p[1] {
		t.Fatalf("picked %v, want both kept", p)
	}
}

// The session that ends (its bind redials) is no suspect any more.
func TestHalfDeadSuspectEndsWithItsSession(t *testing.T) {
	c, ss, _ := halfDeadCarrier(t, "hd-end", 2, time.Nanosecond)
	for range 3 {
		c.noteSubmitTimeout(ss[0])
	}
	if n := c.suspects.Load(); n != 1 {
		t.Fatalf("%d suspects, want 1", n)
	}
	c.endWatch(ss[0])
	if n := c.suspects.Load(); n != 0 {
		t.Fatalf("%d suspects after the session ended, want 0", n)
	}
	c.noteSubmitTimeout(ss[0])
	c.noteSubmitAnswer(ss[1])
	if n := recycledCount("hd-end"); n != 0 {
		t.Fatalf("an ended session was recycled (%v)", n)
	}
}

// stuckNode serves p as a stuck SMSC node: it reads every PDU, answers
// none but unbind, and sends each submit_sm's sequence number on the
// channel returned; it is closed when the connection ends (the unbind
// answered, or dropped).
func stuckNode(p *peer) <-chan uint32 {
	subs := make(chan uint32, 16)
	go func() {
		defer close(subs)
		for {
			f, err := p.tryRead()
			if err != nil {
				return
			}
			switch f.ID {
			case cmdSubmitSM:
				subs <- f.Seq
			case cmdUnbind:
				_ = p.conn.SetWriteDeadline(time.Now().Add(hangGuard))
				_, _ = p.conn.Write(appendFrame(nil, cmdUnbindResp, statusOK, f.Seq, nil))
			}
		}
	}()
	return subs
}

// probeCarrier starts a one-bind carrier over TCP (response_timeout rt)
// whose health (down after 3, up_after an hour: a probation stays one)
// records its state changes; the carrier is bound and up when it returns.
func probeCarrier(t *testing.T, name string, rt time.Duration, logLevel zapcore.Level) (*Carrier, *Health, <-chan net.Conn, *peer, func() []string, *observer.ObservedLogs) {
	t.Helper()
	addr, conns := fakeSMSC(t)
	core, logs := observer.New(logLevel)
	h := NewHealth(3, time.Hour, zap.NewNop())
	var mu sync.Mutex
	var changes []string
	h.OnChange = func(_ string, _, to CarrierState, reason string) {
		mu.Lock()
		changes = append(changes, to.String()+": "+reason)
		mu.Unlock()
	}
	c := NewCarrier(config.Carrier{Name: name, Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(rt), ConnectTimeout: config.Duration(5 * time.Second)}, h, zap.New(core))
	h.Attach(c)
	runCarrier(t, c)
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)
	if st := h.State(name); st != StateUp {
		t.Fatalf("%s is %v once bound, want up", name, st)
	}
	return c, h, conns, p, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), changes...)
	}, logs
}

// submitAs sends one submit to c as the dispatcher would (a probe when
// probe is set: Health.Probe said yes) and notes its outcome with h.
func submitAs(t *testing.T, c *Carrier, h *Health, probe bool) error {
	t.Helper()
	ctx := context.Background()
	if probe {
		if !h.Probe(c.Name, 0) {
			t.Fatalf("no probe allowed: %+v", h.Info(c.Name))
		}
		defer h.EndProbe(c.Name)
		ctx = withProbe(ctx)
	}
	_, err := c.SubmitFor(ctx, "", goldenSubmit(t, "02 4F60", ""))
	switch {
	case err == nil:
		h.Note(c.Name, OutcomeAnswered)
	case errors.Is(err, ErrResponseTimeout):
		h.Note(c.Name, OutcomeTimeout)
	}
	return err
}

// takeDown times out three submits on c's only bind, stuck (subs): c is
// down by timeouts.
func takeDown(t *testing.T, c *Carrier, h *Health, subs <-chan uint32) {
	t.Helper()
	for range 3 {
		if err := submitAs(t, c, h, false); !errors.Is(err, ErrResponseTimeout) {
			t.Fatalf("submit to a stuck node: %v, want a timeout", err)
		}
		<-subs
	}
	if info := h.Info(c.Name); info.State != "down" || info.Reason != "submits unanswered within response_timeout" {
		t.Fatalf("after 3 timeouts: %+v, want down by timeouts", info)
	}
}

// A carrier's only bind, on a stuck node (enquire_link and the TCP
// connection kept, no submit answered), goes down by timeouts; its probes
// go unanswered, and after the second in a row the bind is recycled
// (unbound, dialled again: logged, counted). The carrier stays down through
// the recycle (no probation for the bind's return: no flap) and is probed
// on the new connection; only the answered probe starts the probation.
func TestHalfDeadOnlyBindIsRecycledByItsProbes(t *testing.T) {
	const name = "hd-probe"
	c, h, conns, stuck, changes, logs := probeCarrier(t, name, 50*time.Millisecond, zap.WarnLevel)
	base := recycledCount(name) // (the metric is the process's: -count)
	subs := stuckNode(stuck)
	takeDown(t, c, h, subs)
	for range 5 { // the window's other submits, timing out after the down: no probes
		c.noteSubmitTimeout(c.bindList()[0].sess.Load())
	}
	old := c.bindList()[0].sess.Load()
	if err := submitAs(t, c, h, true); !errors.Is(err, ErrResponseTimeout) {
		t.Fatalf("first probe: %v, want a timeout", err)
	}
	<-subs
	if s := c.bindList()[0].sess.Load(); s != old || recycledCount(name) != base {
		t.Fatalf("recycled after one probe timed out (%v)", recycledCount(name)-base)
	}
	if err := submitAs(t, c, h, true); !errors.Is(err, ErrResponseTimeout) {
		t.Fatalf("second probe: %v, want a timeout", err)
	}
	<-subs
	if n := recycledCount(name) - base; n != 1 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v after two probes timed out, want 1", n)
	}
	for range subs { // unbound and closed
	}
	warned := logs.FilterMessageSnippet("answers no probe submits").All()
	if len(warned) != 1 {
		t.Fatalf("recycle warnings %v", logs.All())
	}
	if n, _ := warned[0].ContextMap()["probes_in_a_row"].(int64); n != recycleAfterProbes {
		t.Fatalf("warning %v: probes_in_a_row %d, want %d", warned[0].ContextMap(), n, recycleAfterProbes)
	}

	fresh := nextConn(t, conns) // the bind dials again (its backoff)
	bindOK(t, fresh, cmdBindTransceiver)
	waitBound(t, c, 1)
	if info := h.Info(name); info.State != "down" || info.Reason != "submits unanswered within response_timeout" {
		t.Fatalf("after the recycled bind came back: %+v, want still down by timeouts until a probe is answered", info)
	}
	answered := make(chan error, 1)
	go func() { answered <- submitAs(t, c, h, true) }()
	sub := fresh.read()
	if sub.ID != cmdSubmitSM {
		t.Fatalf("the new connection got %+v, want the probe", sub.Header)
	}
	fresh.write(cmdSubmitSMResp, statusOK, sub.Seq, cstring(nil, "P1"))
	if err := <-answered; err != nil {
		t.Fatalf("probe on the new connection: %v", err)
	}
	want := []string{"up: first bind up", "down: submits unanswered within response_timeout", "probation: carrier answered again"}
	if got := changes(); !slices.Equal(got, want) {
		t.Fatalf("state changes %q, want %q", got, want)
	}
}

// A bind recycled again with nothing answered since its last recycle
// dials again only after a pause (recycleRetry, doubling): its new
// connection landed on the stuck node again.
func TestHalfDeadBindRecycledAgainWaitsBeforeItDials(t *testing.T) {
	old := recycleRetry
	recycleRetry = 2 * time.Minute // 90-150 s: seen in the log, not waited for
	t.Cleanup(func() { recycleRetry = old })
	const name = "hd-again"
	c, h, conns, stuck, changes, logs := probeCarrier(t, name, 50*time.Millisecond, zap.InfoLevel)
	base := recycledCount(name)
	subs := stuckNode(stuck)
	takeDown(t, c, h, subs)
	for range recycleAfterProbes {
		_ = submitAs(t, c, h, true)
		<-subs
	}
	for range subs {
	}
	again := nextConn(t, conns) // the first recycle: the bind's backoff
	bindOK(t, again, cmdBindTransceiver)
	waitBound(t, c, 1)
	subs = stuckNode(again) // the same stuck node
	for range recycleAfterProbes {
		_ = submitAs(t, c, h, true)
		<-subs
	}
	for range subs {
	}
	if n := recycledCount(name) - base; n != 2 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v, want 2", n)
	}
	var redials []time.Duration
	waitCond(t, "the bind's second redial to be scheduled", func() bool {
		redials = redials[:0]
		for _, e := range logs.FilterMessage("carrier bind down; reconnecting").All() {
			d, _ := e.ContextMap()["in"].(time.Duration)
			redials = append(redials, d)
		}
		return len(redials) == 2
	})
	if redials[0] > time.Second || redials[1] < 3*recycleRetry/4 {
		t.Fatalf("redials in %v, want the bind's backoff (at most 1s), then at least %v", redials, 3*recycleRetry/4)
	}
	warned := logs.FilterMessageSnippet("answers no probe submits").All()
	if len(warned) != 2 || warned[1].ContextMap()["recycles_in_a_row"] != int64(2) {
		t.Fatalf("recycle warnings %v", warned)
	}
	if st := c.BindStates()[0]; st != "backoff" {
		t.Fatalf("bind %s, want backoff", st)
	}
	if got := changes(); len(got) != 2 {
		t.Fatalf("state changes %q, want up then down only", got)
	}
}

// The recycles in a row of a bind, whichever way each came (probes of an
// outage, or timeouts while another bind answered), grow its pause from
// the second; an answer on its session ends the run: the next recycle is
// a first one again.
func TestHalfDeadBindRecyclePauseGrowsUntilItAnswers(t *testing.T) {
	c, ss, _ := halfDeadCarrier(t, "hd-pause", 2, time.Nanosecond)
	base := recycledCount("hd-pause")
	b := c.bindList()[0]
	install := func(s *Session) {
		watchOf(s).bind.Store(b)
		b.sess.Store(s)
	}
	install(ss[0])
	next := func() *Session { // the bind's next session, on the stuck node again
		near, far := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, far) }()
		s := NewSession(near, SessionConfig{Window: 8})
		s.Value = &bindWatch{}
		s.Start()
		t.Cleanup(func() {
			s.Close()
			s.Wait()
			_ = far.Close()
		})
		install(s)
		return s
	}
	byProbes := func(s *Session) {
		for range recycleAfterProbes {
			c.noteSubmitTimeout(s)
			c.noteProbeTimeout(s)
		}
	}
	bySibling := func(s *Session) {
		c.noteSubmitTimeout(s)
		c.noteSubmitAnswer(ss[1]) // the other bind answers meanwhile
		c.noteSubmitTimeout(s)
		c.noteSubmitTimeout(s)
	}
	within := func(s *Session, k int, lo, hi time.Duration) {
		t.Helper()
		if p := redialIn(s); p < lo || p > hi || b.recycles.Load() != int32(k) {
			t.Fatalf("recycle %d: %d in a row, pause %v, want %d and %v..%v", k, b.recycles.Load(), p, k, lo, hi)
		}
	}
	byProbes(ss[0])
	within(ss[0], 1, 0, 0)
	s := next()
	bySibling(s)
	within(s, 2, 3*recycleRetry/4, 5*recycleRetry/4)
	s = next()
	byProbes(s)
	within(s, 3, 3*recycleRetry/2, 5*recycleRetry/2)
	for k := 4; k <= 8; k++ {
		s = next()
		byProbes(s)
	}
	within(s, 8, 3*recycleRetryMax/4, 5*recycleRetryMax/4)
	s = next()
	c.noteSubmitAnswer(s) // the bind answers again
	if n := b.recycles.Load(); n != 0 {
		t.Fatalf("%d recycles in a row after the bind answered, want 0", n)
	}
	byProbes(s)
	within(s, 1, 0, 0)
	if n := recycledCount("hd-pause") - base; n != 9 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v, want 9", n)
	}
}
