package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/config"
)

// fakeSMSC accepts one connection at a time on loopback and hands each to
// serve (on the test's goroutine through conns).
func fakeSMSC(t *testing.T) (addr string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	return ln.Addr().String(), ch
}

func startTestCarrier(t *testing.T, name, addr string) *Carrier {
	t.Helper()
	c := NewCarrier(config.Carrier{Name: name, Address: addr, Binds: 1, Window: 8,
		ResponseTimeout: config.Duration(10 * time.Second), ConnectTimeout: config.Duration(10 * time.Second)},
		NewHealth(3, 0, zap.NewNop()), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	c.Start(ctx)
	t.Cleanup(func() { cancel(); c.Stop() })
	return c
}

func nextConn(t *testing.T, conns <-chan net.Conn) *peer {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { _ = c.Close() })
		return &peer{t: t, conn: c}
	case <-time.After(hangGuard):
		t.Fatalf("the carrier bind did not connect within %s", hangGuard)
	}
	return nil
}

// An SMSC that answers bind_transceiver with generic_nack did not bind us
// (SMPP 3.4 §4.3), even when the nack's command_status is 0: the bind is not
// counted up (no submit goes there), the connection is closed and the bind
// is tried again.
func TestCarrierBindAnsweredByGenericNack(t *testing.T) {
	addr, conns := fakeSMSC(t)
	c := startTestCarrier(t, "cm", addr)
	p := nextConn(t, conns)
	f := p.read()
	if f.ID != cmdBindTransceiver {
		t.Fatalf("first PDU %+v, want bind_transceiver", f.Header)
	}
	p.write(cmdGenericNack, statusOK, f.Seq, nil)
	p.expectClosed()
	if n := c.Bound(); n != 0 {
		t.Fatalf("%d binds counted up after a generic_nack", n)
	}
	p = nextConn(t, conns) // tried again, after its backoff
	if f := p.read(); f.ID != cmdBindTransceiver {
		t.Fatalf("retry's first PDU %+v, want bind_transceiver", f.Header)
	}
}
