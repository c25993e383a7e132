package at

import (
	"bytes"
	"io"
	"sync"
)

// fakeModem is the scripted modem of the unit tests, an io.ReadWriter. All its
// script state is owned by its own goroutine (run); the test talks to it only
// through the pipes and the channels, so it is race-free.
type fakeModem struct {
	hostR  *io.PipeReader // read by the session
	toHost *io.PipeWriter // written by the fake goroutine and by inject
	in     chan []byte    // session writes -> fake goroutine
	quit   chan struct{}

	handle func(f *fakeModem, cmd string) // set before the session starts; called on the fake goroutine

	mu      sync.Mutex
	written bytes.Buffer // guarded by mu: everything the session wrote
}

func newFake(handle func(f *fakeModem, cmd string)) *fakeModem {
	r, w := io.Pipe()
	f := &fakeModem{hostR: r, toHost: w, in: make(chan []byte, 64), quit: make(chan struct{}), handle: handle}
	go f.run()
	return f
}

func (f *fakeModem) Read(p []byte) (int, error) { return f.hostR.Read(p) }

func (f *fakeModem) Write(p []byte) (int, error) {
	b := append([]byte(nil), p...)
	f.mu.Lock()
	f.written.Write(b)
	f.mu.Unlock()
	select {
	case f.in <- b:
	case <-f.quit:
		return 0, io.ErrClosedPipe
	}
	return len(p), nil
}

// send writes modem output (safe from any goroutine: io.Pipe serialises).
func (f *fakeModem) send(text string) { _, _ = f.toHost.Write([]byte(text)) }

// unplug makes the session's Read fail as a vanished device does.
func (f *fakeModem) unplug() {
	_ = f.toHost.CloseWithError(io.ErrUnexpectedEOF)
	close(f.quit)
}

func (f *fakeModem) wrote() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.written.String()
}

// run splits the session's bytes into commands (CR) and PDUs (Ctrl-Z) and
// calls handle for each; a PDU is passed as "PDU:<hex>", ESC as "ESC".
func (f *fakeModem) run() {
	var line []byte
	for {
		select {
		case <-f.quit:
			return
		case b := <-f.in:
			for _, c := range b {
				switch c {
				case '\r':
					f.handle(f, string(line))
					line = line[:0]
				case 0x1a:
					f.handle(f, "PDU:"+string(line))
					line = line[:0]
				case 0x1b:
					f.handle(f, "ESC")
					line = line[:0]
				default:
					line = append(line, c)
				}
			}
		}
	}
}
