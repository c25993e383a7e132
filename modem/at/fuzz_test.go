package at

import (
	"context"
	"testing"
	"time"
)

// FuzzModemOutput feeds arbitrary modem output to a session with a command in
// flight and URC handlers registered: it must neither panic nor hang, and the
// command must end (answer, error or timeout).
func FuzzModemOutput(f *testing.F) {
	f.Add([]byte("\r\n+CDS: 25\r\n0791\r\nOK\r\n"))
	f.Add([]byte("> \x1a+CMGS: 3\r\nOK\r\n"))
	f.Add([]byte("+CMS ERROR: 500\r\n"))
	f.Add([]byte("+CME ERROR: SIM busy\n"))
	f.Add([]byte("+CMTI: \"SM\",1\r+CMT: ,12\r\n\r\nERROR\r\n"))
	f.Add([]byte(">>\r\n> > \x00\x1b"))
	f.Fuzz(func(t *testing.T, out []byte) {
		fm := newFake(func(fm *fakeModem, cmd string) {
			if cmd == "AT+X" {
				fm.send(string(out))
			}
		})
		s := New(fm, Options{GuardTime: time.Millisecond})
		s.AddIndication("+CDS:", 1, func([]string) {})
		s.AddIndication("+CMT:", 1, func([]string) {})
		s.AddIndication("+CMTI:", 0, func([]string) {})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, _ = s.SMSCommand(ctx, "AT+X", "00")
		_, _ = Fields(string(out)), 0
		_, _ = parseFinal(string(out))
		s.Close()
		fm.unplug()
	})
}
