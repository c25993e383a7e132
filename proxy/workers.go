package proxy

import (
	"sync"
	"time"
)

// workerPool runs jobs on reused goroutines: a job goes to the worker that
// went idle last, or else to a new worker. It never queues a job and never
// blocks its caller, so it bounds nothing: concurrency stays bounded by
// whoever calls run (a session's window). A worker idle for a whole
// workerIdle period exits, and the idle workers exit when the pool closes.
//
// Why not `go job()`: a submit runs deep (dispatcher, carrier session,
// store), so a fresh goroutine grows its stack several times, copying it
// each time, and frees it at the end; at relay saturation that was about a
// tenth of the gateway's CPU (issue 6). A reused worker keeps its grown
// stack; the last idle is reused first, so its stack is still in cache.
// Each worker waits on its own channel, without a timer: the idle ones are
// retired by one janitor goroutine, not by a timer reset per job.
type workerPool struct {
	mu      sync.Mutex
	idle    []*worker // LIFO; gen never decreases from bottom to top
	gen     uint64    // janitor rounds so far
	closed  bool
	janitor bool // the janitor runs
	quit    chan struct{}
}

type worker struct {
	jobs chan func() // capacity 1; nil job: exit
	gen  uint64      // the pool's gen when the worker went idle (under mu)
}

// workerIdle is the janitor's period: a worker idle through one whole
// period exits.
const workerIdle = 10 * time.Second

func newWorkerPool() *workerPool {
	return &workerPool{quit: make(chan struct{})}
}

// run starts job on the last idle worker, or on a new one.
func (p *workerPool) run(job func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.jobs <- job // idle: its channel is empty, so this never blocks
		return
	}
	startJanitor := !p.janitor && !p.closed
	if startJanitor {
		p.janitor = true
	}
	p.mu.Unlock()
	if startJanitor {
		go p.retire()
	}
	go p.work(&worker{jobs: make(chan func(), 1)}, job)
}

func (p *workerPool) work(w *worker, job func()) {
	for job != nil {
		job()
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		w.gen = p.gen
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		job = <-w.jobs
	}
}

// retire is the janitor: every workerIdle it ends the workers that were
// already idle at its previous round.
func (p *workerPool) retire() {
	t := time.NewTicker(workerIdle)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
		}
		p.retireRound()
	}
}

// retireRound ends the idle workers that went idle before the previous
// round and returns how many it ended.
func (p *workerPool) retireRound() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(p.idle) && p.idle[n].gen < p.gen {
		p.idle[n].jobs <- nil
		p.idle[n] = nil
		n++
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
	p.gen++
	return n
}

// close ends the idle workers and the janitor; busy workers end after
// their job, and a job run later gets a worker that ends after it.
func (p *workerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for i, w := range p.idle {
		w.jobs <- nil
		p.idle[i] = nil
	}
	p.idle = nil
	close(p.quit)
}
