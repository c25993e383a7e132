package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/spareline/spareline/config"
)

// An SMSC that answers a submit_sm with ESME_RINVBNDSTS no longer counts
// the session as bound (its session table lost it: a restart of the SMSC's
// front end behind a proxy that kept the TCP connection, an expired bind).
// Every later submit on that connection would get the same answer and go by
// modem for as long as TCP stays up. The bind takes no more submits, leaves
// (unbind) and binds again, and the next submit goes out on the new bind.
func TestCarrierRebindsWhenSubmitAnsweredNotBound(t *testing.T) {
	c, p, conns := boundTestCarrier(t)
	res := make(chan SubmitResult, 1)
	go func() {
		r, err := c.Submit(context.Background(), goldenSubmit(t, "02 4F60", ""))
		if err != nil {
			t.Errorf("submit: %v", err)
		}
		res <- r
	}()
	sub := p.read()
	if sub.ID != cmdSubmitSM {
		t.Fatalf("SMSC got %+v, want the submit", sub.Header)
	}
	p.write(cmdSubmitSMResp, statusInvBndSts, sub.Seq, nil)
	if r := <-res; r.Status != statusInvBndSts {
		t.Fatalf("submit result %+v, want ESME_RINVBNDSTS", r)
	}
	// The old connection ends: spareline unbinds (the SMSC may answer it or
	// not; this one answers with the status it gives everything now).
	f := p.read()
	if f.ID != cmdUnbind {
		t.Fatalf("SMSC got %+v after ESME_RINVBNDSTS, want unbind", f.Header)
	}
	p.write(cmdUnbindResp, statusInvBndSts, f.Seq, nil)
	p.expectClosed()
	// And binds again.
	again := nextConn(t, conns)
	bindOK(t, again, cmdBindTransceiver)
	waitBound(t, c, 1)
	submitOnKeptBind(t, c, again, "the rebind")
}

// The same SMSC answers the enquire_link of an idle bind with
// ESME_RINVBNDSTS: the bind does not wait for a submit to find out (that
// submit would go by modem); it closes and binds again.
func TestCarrierRebindsWhenEnquireLinkAnsweredNotBound(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, Binds: 1,
		EnquireLink: config.Duration(50 * time.Millisecond)})
	p := nextConn(t, conns)
	bindOK(t, p, cmdBindTransceiver)
	waitBound(t, c, 1)
	f := p.read()
	if f.ID != cmdEnquireLink {
		t.Fatalf("SMSC got %+v, want enquire_link", f.Header)
	}
	p.write(cmdEnquireLinkResp, statusInvBndSts, f.Seq, nil)
	p.expectClosed()
	bindOK(t, nextConn(t, conns), cmdBindTransceiver)
	waitBound(t, c, 1)
}

// A carrier bind sends no enquire_link before its bind_resp (SMPP 3.4
// §4.11: a bound session's keep-alive), even when enquire_link is shorter
// than the SMSC takes to answer the bind (its account backend is slow):
// answered ESME_RINVBNDSTS or generic_nack, it would end a bind that was
// about to succeed. Once bound, the keep-alive runs as usual.
func TestCarrierNoEnquireLinkBeforeBindResp(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := startTestCarrierCfg(t, config.Carrier{Name: "cm", Address: addr, Binds: 1,
		EnquireLink: config.Duration(30 * time.Millisecond), ConnectTimeout: config.Duration(hangGuard)})
	p := nextConn(t, conns)
	bind := p.read()
	if bind.ID != cmdBindTransceiver {
		t.Fatalf("SMSC got %+v, want bind_transceiver", bind.Header)
	}
	// Ten enquire_link intervals with the bind unanswered: nothing may come.
	_ = p.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if f, err := readFrame(p.conn, 1<<20, &p.hdr); err == nil {
		t.Fatalf("SMSC got %+v before it answered the bind", f.Header)
	}
	p.write(cmdBindTransceiverR, statusOK, bind.Seq, cstring(nil, "smsc"))
	waitBound(t, c, 1)
	if f := p.read(); f.ID != cmdEnquireLink {
		t.Fatalf("SMSC got %+v once bound, want enquire_link", f.Header)
	}
}
