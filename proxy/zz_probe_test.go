package proxy

import (
	"context"
	"testing"
)

func TestZZProbeCarrier(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := startTestCarrier(t, addr)
	p := nextConn(t, conns)
	f := p.read()
	p.write(cmdBindTransceiverR, 0, f.Seq, append(cstring(nil, "smsc"), 0x02, 0x10, 0, 1, 0x34))
	waitCond(t, "bound", func() bool { return c.Bound() == 1 })
	p.write(cmdEnquireLink, 0, 0x7FFFFFFF, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp || f.Seq != 0x7FFFFFFF {
		t.Fatalf("%+v", f.Header)
	}
	type r struct {
		res SubmitResult
		err error
	}
	ch := make(chan r, 4)
	for i := 0; i < 3; i++ {
		go func() { res, err := c.Submit(context.Background(), goldenSubmit(t, "02 4F60", "")); ch <- r{res, err} }()
	}
	var seqs []uint32
	for i := 0; i < 3; i++ {
		f := p.read()
		seqs = append(seqs, f.Seq)
	}
	p.write(cmdGenericNack, statusInvCmdID, seqs[0], nil)
	p.write(cmdSubmitSMResp, 0x45, seqs[1], nil)
	p.write(cmdSubmitSMResp, 0, seqs[2], nil)
	for i := 0; i < 3; i++ {
		x := <-ch
		t.Logf("result %+v %v", x.res, x.err)
	}
	p.write(cmdUnbind, 0, 9, nil)
	f = p.read()
	t.Logf("unbind answer %+v", f.Header)
	p.expectClosed()
	p = nextConn(t, conns)
	f = p.read()
	t.Logf("rebind %+v", f.Header)
}
