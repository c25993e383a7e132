package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
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
	if n := recycledCount("hd-count"); n != 1 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v, want 1", n)
	}
	<-s0.Done() // unbound (never answered: at most 2 s), then closed
	if logs.FilterMessageSnippet("answers no submits").Len() != 1 {
		t.Fatalf("log: %v", logs.All())
	}
}

// A carrier silent on every session is health's outage, not a bind to
// recycle, nor is it when it answers again; a session whose timeouts go on
// once the others answer is. A carrier with one bind never recycles it.
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
	one.noteSubmitAnswer(single[0])
	for range 10 {
		one.noteSubmitTimeout(single[0])
	}
	one.noteSubmitAnswer(single[0])
	for range 10 {
		one.noteSubmitTimeout(single[0])
	}
	if p := picked(one, single); !p[0] {
		t.Fatal("the only bind of a carrier was recycled: health's down and probe handle it")
	}
	if n := recycledCount("hd-single"); n != 0 {
		t.Fatalf("spareline_carrier_bind_recycled_total %v for a single bind, want 0", n)
	}
}

// A window of submits on a half-dead session times out at once, before the
// carrier's other session answers again: the session waits as a suspect,
// and the other session's next answer recycles it.
func TestHalfDeadBindWindowTimedOutAtOnceIsRecycledAtTheNextAnswer(t *testing.T) {
	c, ss, _ := halfDeadCarrier(t, "hd-burst", 2, time.Nanosecond)
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
	if n := recycledCount("hd-burst"); n != 1 {
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
