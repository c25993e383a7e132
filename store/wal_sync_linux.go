package store

import (
	"os"
	"syscall"
)

// fdatasync makes f's data durable without its metadata (the log file's
// size never changes once preallocated).
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
