package proxy

import (
	"testing"
	"time"

	"github.com/spareline/spareline/config"
)

// A carrier that refused spareline's credentials is asked again by one
// bind at a time, not by every bind of the carrier: SMSCs lock an account
// after a few failed logins, and binds: 4 tried four times every
// authRetry. Once that one bind is taken, the others bind at once.
func TestCarrierAuthRetriedByOneBind(t *testing.T) {
	old := authRetry
	authRetry = 200 * time.Millisecond // waits 150-250 ms
	t.Cleanup(func() { authRetry = old })
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, Binds: 3})
	// At start the first bind asks alone; the others wait for its answer
	// (waitFirstTry), then for the auth hold its refusal sets.
	p := nextConn(t, conns)
	bf := p.read()
	p.write(cmdBindTransceiverR, statusInvPaswd, bf.Seq, nil)
	p.expectClosed()
	probe := nextConn(t, conns)
	f := probe.read()
	// While the probe's bind waits for its answer, no other bind asks:
	// four authRetry periods of silence.
	select {
	case other := <-conns:
		_ = other.Close()
		t.Fatal("a second bind asked the carrier that refused the credentials while one was asking")
	case <-time.After(4 * authRetry):
	}
	probe.write(cmdBindTransceiverR, statusOK, f.Seq, cstring(nil, "smsc"))
	for range 2 {
		bindOK(t, nextConn(t, conns), cmdBindTransceiver)
	}
	waitBound(t, c, 3)
}
