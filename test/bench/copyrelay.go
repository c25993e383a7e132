package bench

import (
	"context"
	"io"
	"net"
	"sync"
)

// copyRelay is the cheapest relay there can be: it terminates nothing and
// parses nothing, it copies bytes between the client's connection and one of
// its own to the target (io.Copy, splice(2) between two TCP sockets on
// Linux). The saturation scenario runs it as the ceiling of any relay on this
// machine: what a relay costs before it even reads a PDU.
type copyRelay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startCopyRelay(target string) (*copyRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &copyRelay{ln: ln, target: target}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

func (r *copyRelay) addr() string { return r.ln.Addr().String() }

func (r *copyRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", r.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.mu.Lock()
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(up, c)
		go r.pipe(c, up)
	}
}

// pipe copies from src to dst; the end of either side ends both.
func (r *copyRelay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

func (r *copyRelay) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
