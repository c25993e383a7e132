//go:build !unix

package config

// dirWritable is not checked here: a directory that takes no new file is
// reported when spareline opens the file at start.
func dirWritable(string) error { return nil }
