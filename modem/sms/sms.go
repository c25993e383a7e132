// Package sms is a pure codec for GSM SMS transfer-layer PDUs (3GPP TS 23.040)
// and their alphabets (3GPP TS 23.038): SMS-SUBMIT encoding, SMS-DELIVER and
// SMS-STATUS-REPORT decoding, concatenation, and transcoding of text arriving
// with an SMPP data_coding.
//
// THE API BELOW IS A FIXED CONTRACT shared by modem/ (AT session and pool) and
// test/modemsim (the TC35i emulator). Implementations may add functions but
// must not change these signatures.
//
// Policy:
//
//   - Text in. SMPP data_coding 0 (SMSC default), 1 (IA5) and 3 (Latin-1)
//     are read as ISO-8859-1 octets (ASCII is its lower half): that is what
//     most platforms send with 0; GSM unpacked septets are not accepted.
//     8 is UCS2 big-endian (surrogate pairs allowed), 15 is GBK and is
//     transcoded. 2 and 4 are 8-bit binary data, sent with TP-DCS 0x04.
//     0x0B and 0x10-0xFF are read as a 23.038 §4 data coding scheme, which
//     platforms send for a message class ("flash" 0x10, 0x18, 0xF0) or a
//     message waiting indication: the alphabet comes from the DCS bits (GSM
//     7-bit text is read like 0). Refused with an *Error: the other SMPP
//     values, the reserved groups 0x80-0xBF, compressed text and the
//     reserved alphabet (bits 3-2 = 11) of groups 0x00-0x7F.
//   - Alphabet out (23.038 §4, §6.2.1). Text whose every character is in the
//     GSM 7-bit default alphabet or its extension table (€ [ ] { } \ ^ ~ |
//     and form feed) goes as GSM 7-bit, TP-DCS 0x00; anything else as UCS2
//     (UTF-16BE, surrogate pairs for characters beyond the BMP), TP-DCS 0x08.
//     A 23.038 data_coding keeps its coding group, message class and
//     indication in TP-DCS, only the alphabet bits follow the text (0x18
//     with Chinese text goes as 0x18, with "hello" as 0x10: still class 0);
//     see submitDCS.
//   - Splitting (23.040 §9.2.3.24.1, §9.2.3.24.8). One SMS holds 160 septets,
//     70 UCS2 characters or 140 octets. Longer text is cut into at most 255
//     parts of 153 septets / 67 characters / 134 octets with an 8-bit
//     reference concatenation element, or 152 / 66 / 133 with the 16-bit one
//     (used when the reference is above 0xFF). A cut never falls between
//     ESC and its extension character, nor inside a surrogate pair.
//   - A platform's own UDH (esm_class UDHI) is kept octet for octet when
//     the message fits in one SMS beside it. A longer one is split only when
//     every element of the header may go in every part of a concatenated
//     message (TS 23.040 §9.2.3.24: application port addressing 0x04/0x05,
//     special SMS message indication 0x01, SMSC control parameters 0x06, UDH
//     source indicator 0x07, national language shifts 0x24/0x25): each part
//     carries those elements and then our concatenation element, and holds
//     what is left of 140 octets (GSM 7-bit: header and fill bits in whole
//     septets; UCS2: whole characters, 139 octets after an odd header).
//     Otherwise it is an *Error: a concatenation element means the platform
//     has already segmented the message, and other elements (EMS objects,
//     hyperlinks, whose positions count within one segment, and the rest)
//     cannot be repeated.
//   - SMS-SUBMIT: TP-RD 0, TP-MR 0 (the ME assigns it), TP-PID 0, TP-VPF
//     relative when a validity is given (nearest of the 23.040 §9.2.3.12.1
//     values, 5 minutes to 63 weeks), TP-DA international (0x91) for '+'
//     numbers else unknown (0x81), and the SMSC field 0x00 (use the SIM's).
//   - Decoding never panics. Every failure is an *Error that names the
//     field (TP-OA, TP-UDL, ...) and its octet offset in the PDU as given,
//     SMSC field included. Octets after the last field are ignored.
//   - Time stamps carry their own zone (a time.FixedZone of the encoded
//     offset); two-digit years 90-99 are 19xx, the others 20xx.
package sms

import (
	"strconv"
	"time"
)

// Submit is one message to send, as it arrived from SMPP.
type Submit struct {
	// Dest is the destination: digits, with a leading '+' for an
	// international number ("+8613800138000"), otherwise national/unknown.
	Dest string
	// DataCoding is the SMPP data_coding: 0 (SMSC default, read as
	// ASCII/Latin-1 octets — see package doc), 1 (IA5/ASCII), 3 (Latin-1),
	// 8 (UCS2 big-endian), 15 (GBK), 2/4 (8-bit binary), or a TS 23.038
	// DCS (0x0B, 0x10-0x7F uncompressed, 0xC0-0xFF), whose class and group
	// are kept in TP-DCS. Other values are an *Error.
	DataCoding byte
	// UDHI says Payload begins with the platform's own User Data Header
	// (SMPP esm_class 0x40); it is kept as is.
	UDHI bool
	// Payload is short_message (or message_payload) as the platform sent it.
	Payload []byte
	// StatusReport requests an SMS-STATUS-REPORT (TP-SRR).
	StatusReport bool
	// Validity is the relative validity period; 0 = none (TP-VPF 00).
	Validity time.Duration
}

// Part is one SMS-SUBMIT ready for AT+CMGS in PDU mode.
type Part struct {
	// PDU is the octets to send in hex after the prompt: the SMSC address
	// field (a single 0x00 octet: use the SIM's SMSC) followed by the TPDU.
	PDU []byte
	// TPDULen is the length argument of AT+CMGS=<length>: the TPDU octets,
	// not counting the SMSC address field.
	TPDULen int
}

// EncodeSubmit turns s into one or more SMS-SUBMIT PDUs. A text too long for
// one SMS is split with a concatenation UDH (8-bit reference concatRef&0xFF,
// or 16-bit IE when concatRef > 0xFF) at 153 septets / 67 UCS2 characters /
// 134 octets (152 / 66 / 133 with the 16-bit IE), never breaking an escape
// sequence or a surrogate pair. With a platform UDH
// whose elements go in every part (see the package doc) the parts carry
// them before the concatenation element and hold that much less. Every
// error is an *Error.
func EncodeSubmit(s Submit, concatRef uint16) ([]Part, error) { return encodeSubmit(s, concatRef) }

// Deliver is a decoded SMS-DELIVER (an incoming message).
type Deliver struct {
	From       string    // originating address, '+' for international
	SCTS       time.Time // service centre time stamp
	DCS        byte      // TP-DCS as received
	UDH        []byte    // the user data header, if any (without UDHL)
	Text       string    // decoded text ("" for 8-bit data)
	Data       []byte    // raw user data without UDH (8-bit messages)
	Concat     *Concat   // concatenation info, if the UDH has it
	PID        byte
	MoreToSend bool

	// units are the UTF-16 units of a UCS2 part as received, for the
	// Reassembler: a sender may split a surrogate pair between two parts.
	units []uint16
}

// Concat is the concatenation information element.
type Concat struct {
	Ref   uint16
	Total int
	Seq   int
}

// StatusReport is a decoded SMS-STATUS-REPORT.
type StatusReport struct {
	MR        int       // TP-MR of the SMS-SUBMIT it reports on
	Recipient string    // TP-RA
	SCTS      time.Time // when the SC received the submit
	Discharge time.Time // TP-DT
	Status    byte      // TP-ST (23.040 9.2.3.15)
}

// Delivered reports TP-ST 0x00-0x1F: the short message was received by the SME.
func (r *StatusReport) Delivered() bool { return r.Status < 0x20 }

// Temporary reports TP-ST 0x20-0x3F: the SC is still trying.
func (r *StatusReport) Temporary() bool { return r.Status >= 0x20 && r.Status < 0x40 }

// DecodeDeliver decodes an SMS-DELIVER given with its leading SMSC address
// field, as AT+CMGR / +CMT return it in PDU mode.
func DecodeDeliver(pdu []byte) (*Deliver, error) { return decodeDeliver(pdu) }

// DecodeStatusReport decodes an SMS-STATUS-REPORT given with its leading
// SMSC address field, as +CDS returns it.
func DecodeStatusReport(pdu []byte) (*StatusReport, error) { return decodeStatusReport(pdu) }

// DecodeSubmit decodes an SMS-SUBMIT given with its leading SMSC address
// field (used by the emulator and tests).
func DecodeSubmit(pdu []byte) (*SubmitPDU, error) { return decodeSubmit(pdu) }

// SubmitPDU is a decoded SMS-SUBMIT.
type SubmitPDU struct {
	MR           int
	Dest         string
	DCS          byte
	StatusReport bool
	Validity     time.Duration
	UDH          []byte
	Text         string
	Data         []byte
	Concat       *Concat
	PID          byte      // TP-PID
	ValidUntil   time.Time // TP-VP in the absolute format (Validity is then 0)
}

// Reassembler joins the parts of concatenated messages, keyed by (sender,
// reference, total parts); parts may arrive in any order and a repeated part
// counts once. A message without a concatenation element is complete by
// itself. The zero value is ready to use. Not safe for concurrent use: the
// goroutine that reads incoming messages owns it.
type Reassembler struct {
	// MaxAge is how long the parts of an incomplete message are kept,
	// counted from its first part; 0 means DefaultMaxAge (1h). Expire
	// returns what arrived of the expired ones; Add and AddData drop them.
	MaxAge time.Duration

	pending map[reassemblyKey]*pendingMessage
}

// Add gives one part; when the message is complete it returns the whole text
// and true. Parts of incomplete messages are dropped after MaxAge.
func (r *Reassembler) Add(d *Deliver, now time.Time) (text string, complete bool) {
	text, _, complete = r.add(d, now)
	return text, complete
}

// AddData is Add for messages that may be 8-bit data: a complete message
// of 8-bit parts is returned as data (its parts' user data joined, UDHs
// left out), text "".
func (r *Reassembler) AddData(d *Deliver, now time.Time) (text string, data []byte, complete bool) {
	return r.add(d, now)
}

// Error is a decoding or encoding error naming the field and the octet offset.
// Every error this package returns is an *Error; none is temporary.
type Error struct {
	Field  string // e.g. "TP-DA", "TP-UDL"; "data_coding", "short_message", "UDH" for SMPP input
	Offset int    // octet offset in the PDU (or in Payload when encoding); -1 when not about one octet
	Msg    string
}

func (e *Error) Error() string {
	if e.Offset < 0 {
		return "sms: " + e.Field + ": " + e.Msg
	}
	return "sms: " + e.Field + " at octet " + strconv.Itoa(e.Offset) + ": " + e.Msg
}
