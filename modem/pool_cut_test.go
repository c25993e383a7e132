package modem_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/test/modemsim"
)

// A send cut short while the modem is in AT+CMGS (its caller's context
// ends: the drain deadline of a shutdown) fails with a SendError that names
// the modem and says it may have gone out (InDoubt).
func TestSendCutInCMGSIsInDoubt(t *testing.T) {
	sim := startSim(t, "cut", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := startPool(t, []*modemsim.Sim{sim}, 0, nil)
	waitUp(t, ctx, p, "m0")
	sim.HoldSends(true)
	defer sim.HoldSends(false)
	sctx, cut := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() {
		_, err := p.Send(sctx, "cut", sms.Submit{Dest: "+8613800138000", Payload: []byte("cut")})
		res <- err
	}()
	if err := sim.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	cut()
	var se *modem.SendError
	if err := <-res; !errors.As(err, &se) || !se.InDoubt || se.Modem != "m0" {
		t.Fatalf("send cut in AT+CMGS: %#v (%v); want a SendError on m0, in doubt", se, err)
	}
}

// The pool stopping (its Run's context ends) while a send is in AT+CMGS
// answers it with what the attempt did: a SendError naming the modem, in
// doubt, not a bare context error.
func TestPoolStopInCMGSIsInDoubt(t *testing.T) {
	sim := startSim(t, "stop", modemsim.Options{})
	ctx := testCtx(t, 20*time.Second)
	p := modem.NewPool([]modem.Config{{Name: "m0", Device: sim.Path()}}, modem.SerialOpener, modem.PoolOptions{
		CommandTimeout: 2 * time.Second, SendTimeout: 5 * time.Second, ReprobeInterval: time.Hour,
	})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = p.Run(rctx); close(done) }()
	defer func() { stop(); <-done }()
	waitUp(t, ctx, p, "m0")
	sim.HoldSends(true)
	defer sim.HoldSends(false)
	res := make(chan error, 1)
	go func() {
		// The caller's context is the pool's: stopping both is a shutdown.
		_, err := p.Send(rctx, "stop", sms.Submit{Dest: "+8613800138000", Payload: []byte("stop")})
		res <- err
	}()
	if err := sim.WaitCount(ctx, "+CMGS=", 1); err != nil {
		t.Fatal(err)
	}
	stop()
	var se *modem.SendError
	if err := <-res; !errors.As(err, &se) || !se.InDoubt || se.Modem != "m0" {
		t.Fatalf("send cut by the pool's stop: %#v (%v); want a SendError on m0, in doubt", se, err)
	}
}
