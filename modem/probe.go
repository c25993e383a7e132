package modem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spareline/spareline/modem/at"
)

// ProbeResult is what `spareline modem probe` prints.
type ProbeResult struct {
	Manufacturer string
	Model        string
	SIM          string // +CPIN state ("READY", "SIM PIN", ...) or the error
	Health              // signal and registration
	SMSC         string
}

// ErrNoAnswer means nothing answered AT on the port.
var ErrNoAnswer = errors.New("modem: no answer to AT (wrong device, wrong baud rate, or modem off?)")

// Probe asks the modem on rw for identity, SIM state, registration, signal
// and SMSC. It changes nothing but echo (ATE0) and the error format
// (AT+CMEE=1).
func Probe(ctx context.Context, rw io.ReadWriter) (*ProbeResult, error) {
	m := New(rw, Options{Name: "probe", CommandTimeout: 3 * time.Second})
	defer m.Close()
	var err error
	for i := 0; i < 2; i++ {
		if _, err = m.Command(ctx, "AT"); err == nil || ctx.Err() != nil || errors.Is(err, at.ErrClosed) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAnswer, err)
	}
	_, _ = m.Command(ctx, "ATE0")
	_, _ = m.Command(ctx, "AT+CMEE=1")
	r := &ProbeResult{}
	r.Manufacturer = m.first(ctx, "AT+CGMI")
	r.Model = m.first(ctx, "AT+CGMM")
	if st, err := m.SIMState(ctx); err != nil {
		r.SIM = err.Error()
	} else {
		r.SIM = st
	}
	if l, err := m.Command(ctx, "AT+CSCA?"); err == nil {
		if f := at.Fields(answer(l, "+CSCA:")); len(f) > 0 {
			r.SMSC = f[0]
		}
	}
	h, err := m.Health(ctx)
	if err != nil {
		return r, err
	}
	r.Health = h
	return r, nil
}
