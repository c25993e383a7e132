package proxy

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn logs the writer's socket calls: "D" for SetWriteDeadline, a
// write's length otherwise. Its first Write waits for gate, so that a
// backlog builds up behind it.
type recordingConn struct {
	net.Conn
	gate    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	events  []int // -1: deadline set; n >= 0: a write of n octets
	written int
}

func (c *recordingConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.events = append(c.events, -1)
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.once.Do(func() { <-c.gate })
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	c.events = append(c.events, n)
	c.written += n
	c.mu.Unlock()
	return n, err
}

// Under a backlog, WriteTimeout bounds every write to the socket, not a
// whole batch: a peer that reads steadily but slower than the gateway
// produces is never cut for the total time. And a flush marker (unbind,
// close after a generic_nack) is released only once every frame queued
// before it reached the socket.
func TestWriterArmsDeadlinePerWriteAndFlushesInOrder(t *testing.T) {
	a, b := net.Pipe()
	rc := &recordingConn{Conn: a, gate: make(chan struct{})}
	s := NewSession(rc, SessionConfig{WriteTimeout: hangGuard}).Start()
	t.Cleanup(func() {
		_ = b.Close()
		s.Close()
		s.Wait()
	})
	const frames, bodyLen = 300, 1000
	total := frames * (headerLen + bodyLen)
	go func() { // the peer reads everything
		_, _ = io.Copy(io.Discard, b)
	}()
	filled, queued := make(chan struct{}), make(chan struct{})
	go func() {
		for i := range frames {
			if i == cap(s.wq) {
				close(filled) // the queue is full behind the blocked write
			}
			s.send(cmdDeliverSMResp, 0, uint32(i+1), make([]byte, bodyLen))
		}
		close(queued)
	}()
	select {
	case <-filled:
	case <-time.After(hangGuard):
		t.Fatal("write queue never filled")
	}
	close(rc.gate)
	select {
	case <-queued:
	case <-time.After(hangGuard):
		t.Fatal("frames not all queued")
	}
	flushed := make(chan struct{})
	s.wq <- outFrame{flushed: flushed}
	select {
	case <-flushed:
	case <-time.After(hangGuard):
		t.Fatal("flush marker never released")
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.written != total {
		t.Fatalf("marker released after %d of %d octets written", rc.written, total)
	}
	writes := 0
	for i, e := range rc.events {
		if e < 0 {
			continue
		}
		writes++
		if i == 0 || rc.events[i-1] >= 0 {
			t.Fatalf("write %d (%d octets) without a deadline armed before it: %v", writes, e, rc.events)
		}
	}
	if writes < total/writeBufSize {
		t.Fatalf("%d writes for %d octets: the backlog was not batched", writes, total)
	}
}
