// Package redisserver runs a real redis-server for tests: on a free
// 127.0.0.1 port, with its data in the test's temporary directory, stopped
// when the test ends. Tests never skip when redis-server is missing: they
// fail and say how to install it (scripts/deps.sh).
package redisserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 15 * time.Second

// Option configures Start.
type Option func(*config)

type config struct {
	aof bool
}

// WithAOF turns the append-only file on with appendfsync everysec (the
// default): what spareline's README asks of a production Redis.
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithoutAOF runs with no persistence at all (no AOF, no RDB snapshots): a
// restart loses everything.
func WithoutAOF() Option { return func(c *config) { c.aof = false } }

// Server is a running redis-server.
type Server struct {
	t    testing.TB
	cfg  config
	dir  string // data directory, kept across Restart
	port int    // kept across Restart

	mu   sync.Mutex // guards cmd and exit
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
}

// Start runs redis-server and waits until it answers PING; t.Cleanup stops
// it. It fails the test if redis-server is not installed.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := config{aof: true}
	for _, o := range opts {
		o(&cfg)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: run scripts/deps.sh")
	}
	s := &Server{t: t, cfg: cfg, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	// The port is free when picked but could be taken before redis binds it:
	// try a few.
	var err error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("redisserver: pick a port: %v", err)
		}
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("redisserver: %v", err)
	return nil
}

// Run is Start for programs (spareline bench): it runs redis-server with
// its data in dir, which must exist, and returns an error instead of failing a
// test. The caller must Stop the server; Restart needs a server from Start.
func Run(dir string, opts ...Option) (*Server, error) {
	cfg := config{aof: true}
	for _, o := range opts {
		o(&cfg)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found: run scripts/deps.sh: %w", err)
	}
	s := &Server{cfg: cfg, dir: dir}
	var err error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("redisserver: pick a port: %w", err)
		}
		if err = s.start(); err == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("redisserver: %w", err)
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Pid is the running server's process id, 0 when it is not running
// (benchmarks read its CPU time from /proc).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Dir is the server's data directory.
func (s *Server) Dir() string { return s.dir }

// Stop shuts the server down cleanly (SIGTERM: it writes its AOF) and
// waits for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() { s.signal(syscall.SIGTERM, "stop") }

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() { s.signal(os.Kill, "kill") }

func (s *Server) signal(sig os.Signal, what string) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// Redis refuses a shutdown while it writes its first AOF; ask again
	// until it exits.
	deadline := time.After(startTimeout)
	for {
		_ = cmd.Process.Signal(sig)
		_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server takes its SIGTERM only once continued
		select {
		case <-exit:
			return
		case <-time.After(200 * time.Millisecond):
			continue
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exit
			if s.t != nil {
				s.t.Errorf("redisserver: %s: redis-server did not exit in %v; killed; log: %s", what, startTimeout, s.logTail())
			}
			return
		}
	}
}

// Pause stops the server process with SIGSTOP, as a hung Redis (a stalled
// disk, swapping, a long fork on a big data set): its socket stays open and
// connections are accepted by the kernel, but nothing is answered until
// Resume. A paused server is resumed before it is stopped at the end of
// the test.
func (s *Server) Pause() {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatal("redisserver: Pause: not running")
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("redisserver: Pause: %v", err)
	}
	s.t.Cleanup(s.Resume) // runs before Start's Stop (cleanups run last first)
}

// Resume continues a server stopped by Pause (SIGCONT). Resuming a server
// that is not paused does nothing.
func (s *Server) Resume() {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Restart stops the server and starts it again on the same port and data
// directory (for outage tests), waiting until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("redisserver: restart: %v", err)
	}
}

func (s *Server) args() []string {
	a := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--loglevel", "warning",
		"--logfile", "redis.log",
	}
	if s.cfg.aof {
		a = append(a, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		a = append(a, "--appendonly", "no")
	}
	return a
}

// start runs the process and waits for PING; on failure the process is
// gone and the error quotes the end of its log.
func (s *Server) start() error {
	cmd := exec.Command("redis-server", s.args()...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exit)
	}()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		if ping(s.Addr()) {
			return nil
		}
		select {
		case <-exit:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("redis-server on port %d exited: %s", s.port, s.logTail())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d did not answer PING in %v: %s", s.port, startTimeout, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], " | ")
}

// ping reports whether addr answers PING with PONG (not -LOADING).
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
