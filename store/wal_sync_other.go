//go:build !linux

package store

import "os"

// fdatasync makes f's data durable (fsync where fdatasync is not at hand).
func fdatasync(f *os.File) error { return f.Sync() }
