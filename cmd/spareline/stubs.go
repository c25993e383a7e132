package main

import (
	"fmt"
	"io"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spareline demo: not built yet")
	return 1
}

func cmdModem(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "spareline modem: not built yet")
	return 1
}
