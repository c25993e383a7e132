package modem_test

import (
	"errors"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
)

// A message waiting for a modem (none is up) is given up at once when its
// caller closes giveUp: SendUnless returns ErrWithdrawn and no modem sends
// it later.
func TestSendUnlessWithdrawsAWaitingMessage(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{})
	a.SetRegistered(false)
	p := startPool(t, []*modemsim.Sim{a}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	giveUp := make(chan struct{})
	res := make(chan error, 1)
	go func() {
		_, err := p.SendUnless(ctx, giveUp, "x", sms.Submit{Dest: "+1", Payload: []byte("x")})
		res <- err
	}()
	close(giveUp)
	select {
	case err := <-res:
		if !errors.Is(err, modem.ErrWithdrawn) {
			t.Fatalf("SendUnless given up while waiting: %v, want ErrWithdrawn", err)
		}
	case <-ctx.Done():
		t.Fatal("SendUnless still waits after giveUp was closed")
	}
	a.SetRegistered(true)
	if _, err := p.Send(ctx, "y", sms.Submit{Dest: "+1", Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	if got := a.Sent(); len(got) != 1 || got[0].Text != "y" {
		t.Fatalf("sent %+v, want only y (x was withdrawn)", got)
	}
}

// An attempt already on a modem is not cut short by giveUp (its outcome
// could be left unknown): it ends normally and its result is returned.
func TestSendUnlessLetsAnAttemptOnAModemFinish(t *testing.T) {
	a := startSim(t, "a", modemsim.Options{SendDelay: 300 * time.Millisecond})
	p := startPool(t, []*modemsim.Sim{a}, 0, nil)
	ctx := testCtx(t, 30*time.Second)
	waitUp(t, ctx, p, "m0")
	giveUp := make(chan struct{})
	type result struct {
		sent *modem.Sent
		err  error
	}
	res := make(chan result, 1)
	go func() {
		sent, err := p.SendUnless(ctx, giveUp, "x", sms.Submit{Dest: "+1", Payload: []byte("x")})
		res <- result{sent, err}
	}()
	// The pool counts a send against the modem's budget when it gives the
	// message to the modem: then the attempt is on the modem.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for p.Status()[0].SentLastMinute == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the message never reached the modem")
		case <-tick.C:
		}
	}
	close(giveUp)
	r := <-res
	if r.err != nil || r.sent == nil {
		t.Fatalf("SendUnless given up during its attempt: %+v, %v; want the attempt's success", r.sent, r.err)
	}
	if got := a.Sent(); len(got) != 1 || got[0].Text != "x" {
		t.Fatalf("sent %+v, want x once", got)
	}
}
