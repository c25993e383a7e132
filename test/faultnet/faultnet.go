// Package faultnet is a fault-injecting TCP relay for tests: it listens on a
// loopback port, forwards every accepted connection to a target, and on
// command misbehaves the way broken networks and carriers do. netem needs
// root; this needs nothing.
//
// A Relay forwards bytes in two directions: Upstream (from the client that
// connected to the relay, towards the target) and Downstream (back). Faults
// are set at any time and apply to live connections at their next chunk, and
// to new ones:
//
//   - SetDelay(dir, d): every chunk waits d before it is forwarded; the
//     chunks are delayed one after the other, so the relay also caps the
//     throughput (one chunk per d) and a busy link sees more than d;
//   - SetLatency(dir, d): a delay line: every chunk is forwarded d after it
//     was read while reading goes on, so each byte is late by d (plus the
//     wait behind earlier chunks when d shrinks: order is kept) whatever the
//     rate, as on a slow path or a slow but alive peer;
//   - SetDrop(dir, on): blackhole: chunks are read and discarded, the
//     connection stays open;
//   - SetStall(dir, on): nothing more is read or forwarded (at most one chunk
//     already read is held until the stall ends), the connection stays open;
//   - ResetAfter(dir, n): each NEW connection forwards exactly n bytes in dir,
//     then both of its sockets are closed with RST (to cut a bind mid-flight
//     or right after it); 0 turns it off;
//   - ResetAll(): closes every live connection with RST (SO_LINGER 0);
//   - ResetNew(on): each new connection is reset as soon as it is accepted,
//     before the target is dialed;
//   - Refuse(on): the listener is closed, so connects are refused; Refuse(false)
//     listens again on the same address.
//
// Heal clears every fault. Stats counts connections, resets and bytes, and
// WaitUntil waits (with a context) for a condition on them, so that tests
// synchronise on events, not on sleeps.
package faultnet

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// Direction is the way bytes travel through the relay.
type Direction int

// Directions; Both is their union.
const (
	Upstream   Direction = 1 << iota // client → target
	Downstream                       // target → client
	Both       = Upstream | Downstream
)

func (d Direction) String() string {
	switch d {
	case Upstream:
		return "upstream"
	case Downstream:
		return "downstream"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Stats counts what the relay did since Start.
type Stats struct {
	Accepted   int   // connections accepted
	Dialed     int   // connections made to the target
	Active     int   // connections open now
	Resets     int   // connections closed with RST by a fault
	Upstream   int64 // bytes forwarded client → target
	Downstream int64 // bytes forwarded target → client
	Dropped    int64 // bytes discarded by SetDrop
}

// faults in one direction.
type faults struct {
	delay      time.Duration
	latency    time.Duration
	drop       bool
	stall      bool
	resetAfter int64
}

// Relay is one fault-injecting TCP relay.
type Relay struct {
	target string
	addr   string

	mu       sync.Mutex
	ln       net.Listener       // guarded by mu; nil while refusing
	dir      [2]faults          // guarded by mu: [0] upstream, [1] downstream
	resetNew bool               // guarded by mu
	links    map[*link]struct{} // guarded by mu
	stats    Stats              // guarded by mu
	changed  chan struct{}      // guarded by mu: closed and replaced on every change
	closed   bool               // guarded by mu
	wg       sync.WaitGroup
}

// link is one relayed connection.
type link struct {
	client     net.Conn
	mu         sync.Mutex
	server     net.Conn // guarded by mu: nil until dialed
	once       sync.Once
	done       chan struct{}
	resetAfter [2]int64 // fixed when the connection is accepted
}

func idx(d Direction) int {
	if d == Downstream {
		return 1
	}
	return 0
}

// Start listens on 127.0.0.1:0 and relays to target.
func Start(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{target: target, addr: ln.Addr().String(), ln: ln, links: map[*link]struct{}{}, changed: make(chan struct{})}
	r.wg.Add(1)
	go r.accept(ln)
	return r, nil
}

// Addr is the relay's address, to give the client instead of the target.
func (r *Relay) Addr() string { return r.addr }

// Close stops listening and closes every connection.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	ln := r.ln
	r.ln = nil
	links := make([]*link, 0, len(r.links))
	for l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, l := range links {
		l.close(false)
	}
	r.wg.Wait()
	return nil
}

// notify wakes waiters; r.mu is held.
func (r *Relay) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Relay) set(dir Direction, f func(*faults)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range []Direction{Upstream, Downstream} {
		if dir&d != 0 {
			f(&r.dir[idx(d)])
		}
	}
	r.notify()
}

// SetDelay delays every chunk forwarded in dir by d (0 = none).
func (r *Relay) SetDelay(dir Direction, d time.Duration) { r.set(dir, func(f *faults) { f.delay = d }) }

// SetLatency forwards every chunk read in dir d after it was read, without
// holding up the reading (0 = none); see the package doc.
func (r *Relay) SetLatency(dir Direction, d time.Duration) {
	r.set(dir, func(f *faults) { f.latency = max(d, 0) })
}

// SetDrop discards (on) or forwards (off) what arrives in dir.
func (r *Relay) SetDrop(dir Direction, on bool) { r.set(dir, func(f *faults) { f.drop = on }) }

// SetStall stops (on) or resumes (off) reading and forwarding in dir.
func (r *Relay) SetStall(dir Direction, on bool) { r.set(dir, func(f *faults) { f.stall = on }) }

// ResetAfter makes each new connection forward n bytes in dir and then close
// with RST; n <= 0 turns it off.
func (r *Relay) ResetAfter(dir Direction, n int64) {
	r.set(dir, func(f *faults) { f.resetAfter = max(n, 0) })
}

// ResetNew makes new connections close with RST at once (on), or be relayed.
func (r *Relay) ResetNew(on bool) {
	r.mu.Lock()
	r.resetNew = on
	r.notify()
	r.mu.Unlock()
}

// ResetAll closes every live connection with RST.
func (r *Relay) ResetAll() {
	r.mu.Lock()
	links := make([]*link, 0, len(r.links))
	for l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	for _, l := range links {
		r.reset(l)
	}
}

// Refuse closes the listener (on), so that connects fail with "connection
// refused"; off listens again on the same address.
func (r *Relay) Refuse(on bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return net.ErrClosed
	}
	if on {
		if r.ln != nil {
			_ = r.ln.Close()
			r.ln = nil
		}
		return nil
	}
	if r.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("faultnet: listen again on %s: %w", r.addr, err)
	}
	r.ln = ln
	r.wg.Add(1)
	go r.accept(ln)
	return nil
}

// Heal clears every fault (and listens again if refusing).
func (r *Relay) Heal() error {
	r.mu.Lock()
	r.dir = [2]faults{}
	r.resetNew = false
	r.notify()
	r.mu.Unlock()
	return r.Refuse(false)
}

// Stats returns the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// WaitUntil waits until cond holds on the counters (cond runs under the
// relay's lock: it must not call the Relay), or ctx ends.
func (r *Relay) WaitUntil(ctx context.Context, cond func(Stats) bool) error {
	for {
		r.mu.Lock()
		ok, ch := cond(r.stats), r.changed
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("faultnet: %w (stats %+v)", ctx.Err(), r.Stats())
		}
	}
}

func (r *Relay) accept(ln net.Listener) {
	defer r.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			_ = c.Close()
			return
		}
		r.stats.Accepted++
		resetNew := r.resetNew
		l := &link{client: c, done: make(chan struct{}), resetAfter: [2]int64{r.dir[0].resetAfter, r.dir[1].resetAfter}}
		if resetNew {
			r.stats.Resets++
		} else {
			r.links[l] = struct{}{}
			r.stats.Active++
		}
		r.notify()
		r.mu.Unlock()
		if resetNew {
			rst(c)
			continue
		}
		r.wg.Add(1)
		go r.serve(l)
	}
}

func (r *Relay) serve(l *link) {
	defer r.wg.Done()
	defer func() {
		l.close(false)
		r.mu.Lock()
		delete(r.links, l)
		r.stats.Active--
		r.notify()
		r.mu.Unlock()
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	s, err := d.Dial("tcp", r.target)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.stats.Dialed++
	r.notify()
	r.mu.Unlock()
	l.mu.Lock()
	select {
	case <-l.done: // reset while dialing
		l.mu.Unlock()
		_ = s.Close()
		return
	default:
	}
	l.server = s
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pump(l, Upstream, l.client, s) }()
	go func() { defer wg.Done(); r.pump(l, Downstream, s, l.client) }()
	wg.Wait()
}

// pump forwards src to dst in one direction until either side ends. Chunks
// are forwarded inline until SetLatency is first used on the link; from then
// on they go through a delay line (a writer goroutine that forwards each at
// its due time), which keeps their order.
func (r *Relay) pump(l *link, dir Direction, src, dst net.Conn) {
	i := idx(dir)
	limit := l.resetAfter[i]
	var sent int64 // owned by whoever forwards: this goroutine, then the delay line's writer
	// forward writes one chunk and counts it; false when the link ended.
	forward := func(chunk []byte) bool {
		cut := false
		if limit > 0 && sent+int64(len(chunk)) >= limit {
			chunk, cut = chunk[:limit-sent], true
		}
		if len(chunk) > 0 {
			if _, werr := dst.Write(chunk); werr != nil {
				return false
			}
			sent += int64(len(chunk))
			r.mu.Lock()
			if dir == Upstream {
				r.stats.Upstream += int64(len(chunk))
			} else {
				r.stats.Downstream += int64(len(chunk))
			}
			r.notify()
			r.mu.Unlock()
		}
		if cut {
			r.reset(l)
			return false
		}
		return true
	}
	type due struct {
		data []byte
		at   time.Time
	}
	var line chan due // the delay line, once SetLatency was seen
	var writer sync.WaitGroup
	defer func() {
		if line != nil {
			close(line) // the writer forwards what is still due, then ends
			writer.Wait()
		}
		l.close(false)
	}()
	buf := make([]byte, 32<<10)
	for {
		if !r.waitStall(l, i) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			read := time.Now()
			chunk := buf[:n]
			if !r.waitStall(l, i) {
				return
			}
			r.mu.Lock()
			f := r.dir[i]
			if f.drop {
				r.stats.Dropped += int64(n)
				r.notify()
				r.mu.Unlock()
				continue
			}
			r.mu.Unlock()
			if f.delay > 0 {
				t := time.NewTimer(f.delay)
				select {
				case <-t.C:
				case <-l.done:
					t.Stop()
					return
				}
			}
			if line == nil && f.latency > 0 {
				line = make(chan due, 1024)
				writer.Add(1)
				go func() {
					defer writer.Done()
					for d := range line {
						if w := time.Until(d.at); w > 0 {
							t := time.NewTimer(w)
							select {
							case <-t.C:
							case <-l.done:
								t.Stop()
								return
							}
						}
						if !forward(d.data) {
							l.close(false)
							return
						}
					}
				}()
			}
			if line != nil {
				select {
				case line <- due{data: append([]byte(nil), chunk...), at: read.Add(f.latency)}:
				case <-l.done:
					return
				}
			} else if !forward(chunk) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitStall blocks while direction i is stalled; false when the link ended.
func (r *Relay) waitStall(l *link, i int) bool {
	for {
		r.mu.Lock()
		stalled, ch := r.dir[i].stall, r.changed
		r.mu.Unlock()
		if !stalled {
			select {
			case <-l.done:
				return false
			default:
				return true
			}
		}
		select {
		case <-ch:
		case <-l.done:
			return false
		}
	}
}

// reset closes both sockets of l with RST and counts it.
func (r *Relay) reset(l *link) {
	if l.close(true) {
		r.mu.Lock()
		r.stats.Resets++
		r.notify()
		r.mu.Unlock()
	}
}

// close ends the link once; true if this call did.
func (l *link) close(withRST bool) bool {
	did := false
	l.once.Do(func() {
		did = true
		l.mu.Lock()
		close(l.done)
		server := l.server
		l.mu.Unlock()
		for _, c := range []net.Conn{l.client, server} {
			if c == nil {
				continue
			}
			if withRST {
				rst(c)
			} else {
				_ = c.Close()
			}
		}
	})
	return did
}

// rst closes c with an RST instead of a FIN (SO_LINGER 0).
func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
