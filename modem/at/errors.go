package at

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrError is the bare final result code "ERROR" (V.250 §5.7.1), and the
// Huawei refusals "COMMAND NOT SUPPORT" and "TOO MANY PARAMETERS". It carries
// no cause, so callers treat it as temporary.
var ErrError = errors.New("at: modem answered ERROR")

// ErrNoPrompt is the cause (in a *TimeoutError) of an SMS command that got
// no "> " prompt within the command timeout: the PDU was not written, so
// the message was not sent.
var ErrNoPrompt = errors.New("no \"> \" prompt")

// ErrClosed is matched (errors.Is) by every *ClosedError.
var ErrClosed = errors.New("at: session closed")

// ClosedError fails every pending and later command once the port is broken
// (read or write error, EOF) or the session was closed.
type ClosedError struct {
	Err error // the read/write error that ended the session; nil after Close
}

func (e *ClosedError) Error() string {
	if e.Err == nil {
		return "at: session closed"
	}
	return "at: port broken: " + e.Err.Error()
}

// Unwrap returns the port error.
func (e *ClosedError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrClosed) true.
func (e *ClosedError) Is(target error) bool { return target == ErrClosed }

// TimeoutError is returned when a command got no final result code before its
// context ended. For an SMS command the modem may or may not have sent the
// message (SentUnknown).
type TimeoutError struct {
	Cmd string
	Err error // the context's error
}

func (e *TimeoutError) Error() string { return "at: no answer to " + e.Cmd + ": " + e.Err.Error() }

// Unwrap returns the context error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// ErrModemRestarted is matched (errors.Is) by every *RestartedError.
var ErrModemRestarted = errors.New("at: the modem restarted")

// RestartedError fails the command in flight when the modem says it
// restarted (a power cycle or a watchdog reset on the open port): its answer
// will never come. For an SMS command whose PDU was written the message may
// or may not have been sent, as after a *TimeoutError.
type RestartedError struct {
	Cmd  string
	Line string // the modem's line ("^SYSSTART")
}

func (e *RestartedError) Error() string {
	return "at: the modem restarted (" + e.Line + ") during " + e.Cmd
}

// Is makes errors.Is(err, ErrModemRestarted) true.
func (e *RestartedError) Is(target error) bool { return target == ErrModemRestarted }

// CMSError is "+CMS ERROR: <n>", the message service failure result code of
// 3GPP TS 27.005 §3.2.5.
//
// Classification (our policy, by the owner of each code range in §3.2.5):
//
//	0..127   RP-Cause, 3GPP TS 24.011 Annex E-2
//	           1 unassigned number, 21 SM transfer rejected, 28 unidentified
//	           subscriber, 30 unknown subscriber        -> permanent, number error
//	           95-99, 111 invalid / non-existent message -> permanent
//	           others (8/10 barring of OUR SIM, 27 destination out of service,
//	           29 facility rejected, 38 network out of order, 41 temporary failure, 42 congestion,
//	           47, 50, 69, 81, 127)                       -> temporary
//	128..255 TP-Failure-Cause, 3GPP TS 23.040 §9.2.3.22
//	           0xC3 invalid SME address, 0xC4 SME barred -> permanent, number error
//	           0x80-0x8F TP-PID, 0x90-0x9F TP-DCS, 0xA0-0xAF command,
//	           0xB0 TPDU not supported, 0xC5 duplicate SM (the SC already has
//	           it: never resend), 0xC6/0xC7 validity     -> permanent
//	           others (0xC0 SC busy, 0xC1 no SC subscription, 0xC2 SC failure,
//	           0xD0-0xD5 SIM/MS storage, 0xFF)           -> temporary
//	300..511 ME/TA errors, 27.005 §3.2.5
//	           304 invalid PDU mode parameter, 305 text mode -> permanent
//	           others (300 ME failure, 310-318 SIM, 320-322 memory, 330 SMSC
//	           address unknown, 331 no network service, 332 network timeout,
//	           340, 500 unknown)                          -> temporary
//	512..    manufacturer specific                       -> temporary
//
// Subscription (below) singles out, among these, the errors of our SIM's
// subscription (8, 10, 21, 29, 50, 69, 0xC1, 330).
//
// "Temporary" here means "this message may succeed later or on another
// modem": a fault of our SIM, ME or network is temporary for the message.
//
// A verbose error (AT+CMEE=2: "+CMS ERROR: Unidentified subscriber") gets
// the number its text names in 27.005 §3.2.5, 24.011 Table 8.4 or 23.040
// §9.2.3.22, and 500 (unknown error) for a text we do not know.
type CMSError struct {
	Code int
	Line string // the raw result line
}

func (e *CMSError) Error() string {
	if rest, _ := strings.CutPrefix(e.Line, "+CMS ERROR:"); rest != "" {
		if _, err := strconv.Atoi(strings.TrimSpace(rest)); err != nil { // verbose
			return fmt.Sprintf("at: +CMS ERROR: %s (%d)", strings.TrimSpace(rest), e.Code)
		}
	}
	return fmt.Sprintf("at: +CMS ERROR: %d (%s)", e.Code, cmsText(e.Code))
}

// NumberError reports that the destination number itself was refused.
func (e *CMSError) NumberError() bool {
	switch e.Code {
	case 1, 21, 28, 30, 0xC3, 0xC4:
		return true
	}
	return false
}

// Permanent reports that sending this message again cannot succeed.
func (e *CMSError) Permanent() bool {
	if e.NumberError() {
		return true
	}
	c := e.Code
	switch {
	case c >= 95 && c <= 99, c == 111:
		return true
	case c >= 0x80 && c <= 0xB0, c == 0xC5, c == 0xC6, c == 0xC7:
		return true
	case c == 304, c == 305:
		return true
	}
	return false
}

// Temporary is !Permanent.
func (e *CMSError) Temporary() bool { return !e.Permanent() }

// Subscription reports an error of our SIM's subscription, not of the
// network's state or the radio: the SIM may send no short message (no
// credit, barred, not subscribed), and a modem so refused still answers
// every AT command and reads as registered, so no health probe can show
// that it can send again; only a send can. (Errors of the network or the
// radio, 38, 41, 42, 47, 331, 332, 512+..., pass when the modem is
// registered again, which a probe sees.)
//
//	RP-Cause (24.011 Table 8.4, E-2): 8 operator determined barring,
//	  10 call barred, 21 short message transfer rejected (also a number
//	  error: a network gives it every message of a SIM it barred),
//	  29 facility rejected, 50 requested facility not subscribed,
//	  69 requested facility not implemented
//	TP-Failure-Cause (23.040 §9.2.3.22): 0xC1 no SC subscription
//	27.005 §3.2.5: 330 SMSC address unknown (the SIM's setting)
func (e *CMSError) Subscription() bool {
	switch e.Code {
	case 8, 10, 21, 29, 50, 69, 0xC1, 330:
		return true
	}
	return false
}

func cmsText(c int) string {
	switch c {
	case 1:
		return "unassigned number"
	case 8:
		return "operator determined barring"
	case 10:
		return "call barred"
	case 21:
		return "short message transfer rejected"
	case 27:
		return "destination out of service"
	case 28:
		return "unidentified subscriber"
	case 29:
		return "facility rejected"
	case 30:
		return "unknown subscriber"
	case 38:
		return "network out of order"
	case 41:
		return "temporary failure"
	case 42:
		return "congestion"
	case 47:
		return "resources unavailable, unspecified"
	case 50:
		return "requested facility not subscribed"
	case 69:
		return "requested facility not implemented"
	case 81:
		return "invalid short message transfer reference value"
	case 95:
		return "semantically incorrect message"
	case 96:
		return "invalid mandatory information"
	case 97:
		return "message type non-existent or not implemented"
	case 98:
		return "message not compatible with short message protocol state"
	case 99:
		return "information element non-existent or not implemented"
	case 111:
		return "protocol error, unspecified"
	case 127:
		return "interworking, unspecified"
	case 0xC0:
		return "SC busy"
	case 0xC1:
		return "no SC subscription"
	case 0xC3:
		return "invalid SME address"
	case 0xC4:
		return "destination SME barred"
	case 0xC5:
		return "duplicate SM rejected"
	case 300:
		return "ME failure"
	case 301:
		return "SMS service of ME reserved"
	case 302:
		return "operation not allowed"
	case 303:
		return "operation not supported"
	case 304:
		return "invalid PDU mode parameter"
	case 305:
		return "invalid text mode parameter"
	case 310:
		return "SIM not inserted"
	case 311:
		return "SIM PIN required"
	case 312:
		return "PH-SIM PIN required"
	case 313:
		return "SIM failure"
	case 314:
		return "SIM busy"
	case 315:
		return "SIM wrong"
	case 316:
		return "SIM PUK required"
	case 317:
		return "SIM PIN2 required"
	case 318:
		return "SIM PUK2 required"
	case 320:
		return "memory failure"
	case 321:
		return "invalid memory index"
	case 322:
		return "memory full"
	case 330:
		return "SMSC address unknown"
	case 331:
		return "no network service"
	case 332:
		return "network timeout"
	case 340:
		return "no +CNMA acknowledgement expected"
	case 500:
		return "unknown error"
	}
	if c >= 512 {
		return "manufacturer specific"
	}
	return "see 3GPP TS 27.005 §3.2.5"
}

// CMEError is "+CME ERROR: <n>", the mobile equipment error of 3GPP TS 27.007
// §9.2 (numeric with AT+CMEE=1; Text holds the verbose form of AT+CMEE=2).
// All CME errors are temporary for a message: they describe the modem
// (10 SIM not inserted, 11 SIM PIN required, 14 SIM busy, 30 no network
// service, 31 network timeout, 100 unknown...).
type CMEError struct {
	Code int    // for verbose text, its 27.007 number; -1 when the text is unknown
	Text string // verbose text, if any
	Line string
}

func (e *CMEError) Error() string {
	if e.Text != "" {
		return "at: +CME ERROR: " + e.Text
	}
	return fmt.Sprintf("at: +CME ERROR: %d", e.Code)
}

// SIMNotReady reports the SIM-state errors of 27.007 §9.2.1 (10-18).
func (e *CMEError) SIMNotReady() bool { return e.Code >= 10 && e.Code <= 18 }

// Temporary is always true (see the type doc).
func (e *CMEError) Temporary() bool { return true }

// parseFinal recognises a final result code line. ok is true for a final
// line; err is nil for OK.
func parseFinal(line string) (final bool, err error) {
	switch line {
	case "OK", "0": // "0" and "4": the numeric forms of ATV0 (V.250 §6.2.6, Table 1)
		return true, nil
	case "ERROR", "4":
		return true, ErrError
	case "COMMAND NOT SUPPORT", "TOO MANY PARAMETERS":
		// Huawei's refusals of an unknown command or of extra parameters:
		// final, and as causeless as ERROR.
		return true, ErrError
	}
	if rest, found := strings.CutPrefix(line, "+CMS ERROR:"); found {
		rest = strings.TrimSpace(rest)
		n, perr := strconv.Atoi(rest)
		if perr != nil {
			n = cmsCode(rest) // verbose (AT+CMEE=2): its number, or 500 unknown error
		}
		return true, &CMSError{Code: n, Line: line}
	}
	if rest, found := strings.CutPrefix(line, "+CME ERROR:"); found {
		rest = strings.TrimSpace(rest)
		n, perr := strconv.Atoi(rest)
		if perr != nil {
			return true, &CMEError{Code: cmeCode(rest), Text: rest, Line: line}
		}
		return true, &CMEError{Code: n, Line: line}
	}
	return false, nil
}
