//go:build unix

package config

import "golang.org/x/sys/unix"

// dirWritable reports why this process may not create a file in dir (its
// permissions, a read-only file system), or nil.
func dirWritable(dir string) error { return unix.Access(dir, unix.W_OK) }
