package proxy

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
)

// refusingCarrier runs a carrier of binds transceivers against a fake
// SMSC, with refusals held off for hold (refuseRetry, doubling to
// maxHold); the carrier's log lines are recorded.
func refusingCarrier(t *testing.T, binds int, hold, maxHold time.Duration) (*Carrier, <-chan net.Conn, *observer.ObservedLogs) {
	t.Helper()
	oldR, oldM := refuseRetry, refuseRetryMax
	refuseRetry, refuseRetryMax = hold, maxHold
	t.Cleanup(func() { refuseRetry, refuseRetryMax = oldR, oldM })
	addr, conns := fakeSMSC(t)
	core, logs := observer.New(zap.InfoLevel)
	c := NewCarrier(config.Carrier{Name: "cm", Address: addr, Binds: binds, Window: 8,
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		NewHealth(3, 0, zap.NewNop()), zap.New(core))
	runCarrier(t, c)
	return c, conns, logs
}

// everyBind reports whether every bind of c is in state st.
func everyBind(c *Carrier, st string) func() bool {
	return func() bool {
		for _, s := range c.BindStates() {
			if s != st {
				return false
			}
		}
		return true
	}
}

// noOtherConn fails when a bind connected that the test did not expect.
func noOtherConn(t *testing.T, conns <-chan net.Conn, what string) {
	t.Helper()
	select {
	case conn := <-conns:
		_ = conn.Close()
		t.Fatalf("%s: another bind connected (from %v)", what, conn.RemoteAddr())
	default:
	}
}

// An SMSC that refuses binds for a reason other than the password
// (ESME_RBINDFAIL: many answer it for wrong credentials or an address not
// on the allow-list, and lock the account after a few failed logins;
// ESME_RALYBND; a generic_nack) sees one attempt from the carrier, not one
// per bind, and the binds then wait (they showed "backoff" and each asked
// again within a minute: ~120 failed logins an hour with binds: 2). The
// status page says why and the log says what happens next. A reload asks
// again at once.
func TestCarrierBindRefusalHoldsEveryBind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		id     uint32
		status uint32
		reason string
	}{
		{"RBINDFAIL", cmdBindTransceiverR, statusBindFail, "bind refused: ESME_RBINDFAIL"},
		{"RALYBND", cmdBindTransceiverR, statusAlyBnd, "bind refused: ESME_RALYBND"},
		{"generic_nack", cmdGenericNack, statusInvCmdID, "bind refused: generic_nack ESME_RINVCMDID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, conns, logs := refusingCarrier(t, 2, time.Hour, 5*time.Hour)
			p := nextConn(t, conns)
			f := p.read()
			p.write(tc.id, tc.status, f.Seq, nil)
			p.expectClosed()
			waitCond(t, "every bind held off after the refusal", everyBind(c, "refused"))
			noOtherConn(t, conns, "after one refusal")
			if r := c.health.Info("cm").Reason; !strings.Contains(r, tc.reason) {
				t.Errorf("status reason %q, want the refusal %q", r, tc.reason)
			}
			lines := logs.FilterMessageSnippet("carrier refused the bind; its binds ask again one at a time").All()
			if len(lines) != 1 {
				t.Fatalf("%d refusal lines logged, want 1: %v", len(lines), logs.All())
			}
			fields := lines[0].ContextMap()
			if in, _ := fields["in"].(time.Duration); in < 45*time.Minute || in > 75*time.Minute {
				t.Errorf("logged retry in %v, want refuseRetry ±25%%", fields["in"])
			}
			if !strings.Contains(fields["error"].(string), tc.reason) {
				t.Errorf("logged error %v, want %q", fields["error"], tc.reason)
			}
			if n := len(logs.FilterMessageSnippet("carrier bind down; reconnecting").All()); n != 0 {
				t.Errorf("the refusal was also logged as a bind down (%d lines)", n)
			}

			// A reload asks again at once (the operator fixed the
			// allow-list, or the file).
			c.Reconfigure(c.Config())
			for range 2 {
				bindOK(t, nextConn(t, conns), cmdBindTransceiver)
			}
			waitBound(t, c, 2)
		})
	}
}

// After the hold, one bind asks while the others wait for its answer, and
// each refusal in a row holds the binds longer than the one before, up to
// refuseRetryMax (5 minutes in production: an SMSC that refuses every bind
// sees about one attempt per 5 minutes per carrier, whatever binds is).
func TestCarrierBindRefusalsAskedByOneBindLongerEachTime(t *testing.T) {
	c, conns, _ := refusingCarrier(t, 3, time.Hour, 4*time.Hour)
	refuse := func() time.Duration {
		t.Helper()
		p := nextConn(t, conns)
		f := p.read()
		// While this bind waits for its answer, the others are held (at
		// start, before the first answer, they have not started).
		waitCond(t, "one bind asking, the others held", func() bool {
			st := c.BindStates()
			return slices.Contains(st, "connecting") && len(slices.DeleteFunc(st, func(s string) bool {
				return s == "refused" || s == "stopped"
			})) == 1
		})
		noOtherConn(t, conns, "while one bind asks")
		before := time.Now()
		p.write(cmdBindTransceiverR, statusBindFail, f.Seq, nil)
		p.expectClosed()
		waitCond(t, "every bind held off", everyBind(c, "refused"))
		noOtherConn(t, conns, "after the refusal")
		return time.Duration(c.authUntil.Load() - before.UnixNano())
	}
	expire := func() { // the hold is over: the binds look again
		c.authUntil.Store(1)
		for _, b := range c.bindList() {
			select {
			case b.retry <- struct{}{}:
			default:
			}
		}
	}
	var holds []time.Duration
	for i := range 4 {
		if i > 0 {
			expire()
		}
		holds = append(holds, refuse())
	}
	// 1 h, 2 h, 4 h, 4 h, each ±25%.
	for i, want := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 4 * time.Hour} {
		if h := holds[i]; h < want*3/4-time.Minute || h > want*5/4 {
			t.Errorf("hold after refusal %d: %v, want %v ±25%% (all: %v)", i+1, h, want, holds)
		}
	}
	// The carrier takes a bind again: every bind binds, and the next
	// refusal starts over from refuseRetry.
	expire()
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	for range 2 {
		bindOK(t, nextConn(t, conns), cmdBindTransceiver)
	}
	waitBound(t, c, 3)
	if n := c.refusals.Load(); n != 0 {
		t.Fatalf("%d refusals in a row remembered after a bind got in", n)
	}
}

// A carrier that takes only so many binds refuses the extra one, and its
// binds wait; a bind that was up and lost its connection does not wait for
// that hold: it asks again at once (alone), so the carrier is not left
// without a bind for minutes because of the bind it never had room for.
func TestCarrierBindThatWasUpIsNotHeldByAnotherBindsRefusal(t *testing.T) {
	c, conns, _ := refusingCarrier(t, 2, time.Hour, 4*time.Hour)
	working := nextConn(t, conns)
	bindOK(t, working, cmdBindTransceiver)
	extra := nextConn(t, conns)
	f := extra.read()
	extra.write(cmdBindTransceiverR, statusAlyBnd, f.Seq, nil)
	extra.expectClosed()
	waitCond(t, "the extra bind held off", func() bool { return slices.Equal(c.BindStates(), []string{"bound", "refused"}) })
	_ = working.conn.Close() // the network drops the working bind
	bindOK(t, nextConn(t, conns), cmdBindTransceiver)
	waitBound(t, c, 1)
	if st := c.BindStates(); !slices.Equal(st, []string{"bound", "refused"}) {
		t.Fatalf("bind states %v, want the working bind back and the extra one still held", st)
	}
}

// The refusal hold's schedule: 10 s doubling to 5 minutes, each ±25%.
func TestRefuseHoldSchedule(t *testing.T) {
	for _, tc := range []struct {
		n    int32
		base time.Duration
	}{{1, 10 * time.Second}, {2, 20 * time.Second}, {5, 160 * time.Second}, {6, 5 * time.Minute}, {40, 5 * time.Minute}} {
		for range 50 {
			if d := refuseHold(tc.n); d < tc.base*3/4 || d > tc.base*5/4 {
				t.Fatalf("refuseHold(%d) = %v, want %v ±25%%", tc.n, d, tc.base)
			}
		}
	}
}
