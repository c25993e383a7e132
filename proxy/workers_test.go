package proxy

import (
	"sync"
	"testing"
	"time"
)

// idleWorkers is the number of workers waiting for a job.
func (p *workerPool) idleWorkers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// awaitIdle waits until n workers are idle (a worker goes idle just after
// its job returns).
func awaitIdle(t *testing.T, p *workerPool, n int) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for p.idleWorkers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers, want %d", p.idleWorkers(), n)
		}
		time.Sleep(time.Millisecond) // polling a counter no event announces; never waited out on success
	}
}

// Jobs never wait for each other: run starts every job at once, however
// many block; and a worker freed by a job takes the next.
func TestWorkerPoolRunsEveryJobAtOnceAndReusesWorkers(t *testing.T) {
	p := newWorkerPool()
	defer p.close()
	const n = 20
	release := make(chan struct{})
	var started, finished sync.WaitGroup
	started.Add(n)
	finished.Add(n)
	for range n {
		p.run(func() {
			defer finished.Done()
			started.Done()
			<-release
		})
	}
	started.Wait() // all n blocked at once: run queued none
	close(release)
	finished.Wait()
	awaitIdle(t, p, n)
	done := make(chan struct{})
	p.run(func() { close(done) })
	<-done
	awaitIdle(t, p, n) // the job took an idle worker: no new one
}

// The janitor ends workers idle through a whole round; close ends the
// rest, and a job run after close still runs.
func TestWorkerPoolRetiresIdleWorkers(t *testing.T) {
	p := newWorkerPool()
	done := make(chan struct{})
	p.run(func() { close(done) })
	<-done
	awaitIdle(t, p, 1)
	if n := p.retireRound(); n != 0 {
		t.Fatalf("retired %d workers that went idle during the round, want 0", n)
	}
	if n := p.retireRound(); n != 1 {
		t.Fatalf("retired %d workers idle through a round, want 1", n)
	}
	p.run(func() {})
	awaitIdle(t, p, 1)
	p.close()
	if n := p.idleWorkers(); n != 0 {
		t.Fatalf("%d idle workers after close, want 0", n)
	}
	after := make(chan struct{})
	p.run(func() { close(after) })
	select {
	case <-after:
	case <-time.After(hangGuard):
		t.Fatal("a job run after close never ran")
	}
	if n := p.idleWorkers(); n != 0 {
		t.Fatalf("%d idle workers after a job run after close, want 0", n)
	}
}
