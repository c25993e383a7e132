package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/spareline/spareline/modem"
)

func cmdModem(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "probe" {
		fmt.Fprintln(stderr, "usage: spareline modem probe --device PATH [--baud N] [--timeout 15s]")
		return 2
	}
	fs := flag.NewFlagSet("modem probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	device := fs.String("device", "", "serial device, e.g. /dev/ttyUSB0")
	baud := fs.Int("baud", 115200, "baud rate")
	timeout := fs.Duration("timeout", 15*time.Second, "give up after this long")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *device == "" {
		fmt.Fprintln(stderr, "spareline modem probe: --device is required")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	port, err := modem.SerialOpener(ctx, modem.Config{Device: *device, Baud: *baud})
	if err != nil {
		fmt.Fprintf(stderr, "spareline modem probe: cannot open %s: %v\n", *device, err)
		return 1
	}
	defer port.Close()
	res, err := modem.Probe(ctx, port)
	if err != nil {
		fmt.Fprintf(stderr, "spareline modem probe: %s: %v\n", *device, err)
		return 1
	}
	signal := "unknown"
	if res.SignalDBm != 0 {
		signal = fmt.Sprintf("%d dBm", res.SignalDBm)
	}
	fmt.Fprintf(stdout, "device:        %s\nmanufacturer:  %s\nmodel:         %s\nSIM:           %s\nregistration:  %s\nsignal:        %s\nSMSC:          %s\n",
		*device, res.Manufacturer, res.Model, res.SIM, registration(res.Reg), signal, res.SMSC)
	return 0
}

// registration names a +CREG <stat> (3GPP TS 27.007 §7.2).
func registration(stat int) string {
	switch stat {
	case 0:
		return "0 (not registered, not searching)"
	case 1:
		return "1 (registered, home network)"
	case 2:
		return "2 (not registered, searching)"
	case 3:
		return "3 (registration denied)"
	case 5:
		return "5 (registered, roaming)"
	}
	return fmt.Sprintf("%d (unknown)", stat)
}
