package proxy

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// A reload whose new password the carrier took (its trial bind got in)
// moves the binds to it one at a time: a bind unbinds only once the one
// before is bound again, so a carrier with two binds always has one, never
// counts as down, and its new traffic does not go to the modems for
// failover.up_after of probation. Before, every bind unbound at once.
func TestReloadReconnectsBindsOneAtATime(t *testing.T) {
	addr, conns := fakeSMSC(t)
	h := NewHealth(3, time.Hour, zap.NewNop())
	downs := recordDowns(h)
	cfg := config.Carrier{Name: "cm", Address: addr, Binds: 2, Window: 8,
		ResponseTimeout: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(5 * time.Second)}
	c := NewCarrier(cfg, h, zap.NewNop())
	h.Attach(c)
	runCarrier(t, c)
	a := nextConn(t, conns) // the other binds wait for the first one's answer
	bindOK(t, a, cmdBindTransceiver)
	b := nextConn(t, conns)
	bindOK(t, b, cmdBindTransceiver)
	waitBound(t, c, 2)

	cfg.Password = "rotated"
	c.Reconfigure(cfg)
	trial := nextConn(t, conns)
	bindOK(t, trial, cmdBindTransceiver)
	expectUnbind(t, trial)

	// The first bind to leave: whichever of a and b gets the unbind.
	type got struct {
		p   *peer
		f   Frame
		err error
	}
	unbinds := make(chan got, 2)
	for _, p := range []*peer{a, b} {
		go func() {
			f, err := p.tryRead()
			unbinds <- got{p, f, err}
		}()
	}
	first := <-unbinds
	if first.err != nil || first.f.ID != cmdUnbind {
		t.Fatalf("first PDU after the trial: %+v, %v; want unbind", first.f.Header, first.err)
	}
	first.p.write(cmdUnbindResp, statusOK, first.f.Seq, nil)
	replacement := nextConn(t, conns)
	f := replacement.read()
	if f.ID != cmdBindTransceiver || bindPassword(t, f) != "rotated" {
		t.Fatalf("replacement sent %+v with password %q", f.Header, bindPassword(t, f))
	}
	// While the replacement waits for its bind_resp, the other bind stays.
	select {
	case second := <-unbinds:
		t.Fatalf("the other bind got %+v (%v) before the first was bound again", second.f.Header, second.err)
	case <-time.After(300 * time.Millisecond):
	}
	replacement.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	second := <-unbinds
	if second.err != nil || second.f.ID != cmdUnbind {
		t.Fatalf("second bind got %+v, %v; want unbind", second.f.Header, second.err)
	}
	second.p.write(cmdUnbindResp, statusOK, second.f.Seq, nil)
	again := nextConn(t, conns)
	if f := again.read(); bindPassword(t, f) != "rotated" {
		t.Fatalf("second replacement with password %q", bindPassword(t, f))
	} else {
		again.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	}
	waitBound(t, c, 2)
	if downs := downs(); len(downs) != 0 {
		t.Errorf("carrier went down during the reload: %q", downs)
	}
}
