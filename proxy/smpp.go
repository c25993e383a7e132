package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/linxGnu/gosmpp/pdu"
)

// Command ids (SMPP 3.4 §5.1.2.1), as uint32 for the framing layer.
const (
	cmdGenericNack      = uint32(0x80000000)
	cmdBindReceiver     = uint32(0x00000001)
	cmdBindTransmitter  = uint32(0x00000002)
	cmdQuerySM          = uint32(0x00000003)
	cmdSubmitSM         = uint32(0x00000004)
	cmdDeliverSM        = uint32(0x00000005)
	cmdUnbind           = uint32(0x00000006)
	cmdReplaceSM        = uint32(0x00000007)
	cmdCancelSM         = uint32(0x00000008)
	cmdBindTransceiver  = uint32(0x00000009)
	cmdOutbind          = uint32(0x0000000B)
	cmdEnquireLink      = uint32(0x00000015)
	cmdSubmitMulti      = uint32(0x00000021)
	cmdAlertNotif       = uint32(0x00000102)
	cmdDataSM           = uint32(0x00000103)
	cmdRespBit          = uint32(0x80000000)
	cmdSubmitSMResp     = cmdSubmitSM | cmdRespBit
	cmdDeliverSMResp    = cmdDeliverSM | cmdRespBit
	cmdEnquireLinkResp  = cmdEnquireLink | cmdRespBit
	cmdUnbindResp       = cmdUnbind | cmdRespBit
	cmdBindTransceiverR = cmdBindTransceiver | cmdRespBit
)

// Command statuses used by spareline itself (SMPP 3.4 §5.1.3).
const (
	statusOK          = uint32(data.ESME_ROK)
	statusInvMsgLen   = uint32(data.ESME_RINVMSGLEN)
	statusInvCmdLen   = uint32(data.ESME_RINVCMDLEN)
	statusInvCmdID    = uint32(data.ESME_RINVCMDID)
	statusInvBndSts   = uint32(data.ESME_RINVBNDSTS)
	statusAlyBnd      = uint32(data.ESME_RALYBND)
	statusSysErr      = uint32(data.ESME_RSYSERR)
	statusInvDstAdr   = uint32(data.ESME_RINVDSTADR)
	statusBindFail    = uint32(data.ESME_RBINDFAIL)
	statusInvPaswd    = uint32(data.ESME_RINVPASWD)
	statusInvSysID    = uint32(data.ESME_RINVSYSID)
	statusMsgQFul     = uint32(data.ESME_RMSGQFUL)
	statusInvEsmClass = uint32(data.ESME_RINVESMCLASS)
	statusInvSysTyp   = uint32(data.ESME_RINVSYSTYP)
	statusThrottled   = uint32(data.ESME_RTHROTTLED)
	statusInvSched    = uint32(data.ESME_RINVSCHED)
	statusInvExpiry   = uint32(data.ESME_RINVEXPIRY)
	statusInvParLen   = uint32(data.ESME_RINVPARLEN)
	statusMissingOpt  = uint32(data.ESME_RMISSINGOPTPARAM)
	statusInvOptValue = uint32(data.ESME_RINVOPTPARAMVAL)
	statusInvDCS      = uint32(0x00000104) // ESME_RINVDCS (SMPP 5.0 name; 3.4 leaves 0x104 reserved, widely used)
	statusRXTAppn     = uint32(data.ESME_RX_T_APPN)
	statusRXPAppn     = uint32(data.ESME_RX_P_APPN)
	statusRXRAppn     = uint32(data.ESME_RX_R_APPN)
)

const headerLen = 16

// Header is the 16-octet SMPP PDU header (SMPP 3.4 §3.2).
type Header struct {
	Length uint32
	ID     uint32
	Status uint32
	Seq    uint32
}

// Frame is one PDU as read off the wire: its header and its body, unparsed.
type Frame struct {
	Header
	Body []byte
}

// IsResponse reports whether the frame is a response (generic_nack included).
func (f Frame) IsResponse() bool { return f.ID&cmdRespBit != 0 }

// FrameError says why a frame could not be read; Fatal ones lose the framing.
type FrameError struct {
	Header Header
	Status uint32 // the status to answer with (generic_nack)
	Fatal  bool   // the stream can no longer be parsed: answer, then close
	Msg    string
}

func (e *FrameError) Error() string { return "smpp: " + e.Msg }

// readFrame reads one PDU. A command_length below 16 or above maxLen is a
// fatal *FrameError: the octets that follow cannot be trusted to start a PDU
// (SMPP 3.4 §3.2: command_length includes the header).
func readFrame(r io.Reader, maxLen int, hdrBuf *[headerLen]byte) (Frame, error) {
	return readFrameScratch(r, maxLen, hdrBuf, nil)
}

// readFrameScratch is readFrame that reads the body of a response into
// scratch when it fits: that body is only valid until the next read (see
// Session.dispatch).
func readFrameScratch(r io.Reader, maxLen int, hdrBuf *[headerLen]byte, scratch []byte) (Frame, error) {
	if _, err := io.ReadFull(r, hdrBuf[:]); err != nil {
		return Frame{}, err
	}
	var f Frame
	f.Length = binary.BigEndian.Uint32(hdrBuf[0:])
	f.ID = binary.BigEndian.Uint32(hdrBuf[4:])
	f.Status = binary.BigEndian.Uint32(hdrBuf[8:])
	f.Seq = binary.BigEndian.Uint32(hdrBuf[12:])
	if f.Length < headerLen || int64(f.Length) > int64(maxLen) {
		return f, &FrameError{Header: f.Header, Status: statusInvCmdLen, Fatal: true,
			Msg: fmt.Sprintf("command_length %d outside 16..%d", f.Length, maxLen)}
	}
	if n := int(f.Length) - headerLen; n > 0 && n <= len(scratch) && f.IsResponse() {
		f.Body = scratch[:n]
		if _, err := io.ReadFull(r, f.Body); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return f, err
		}
	} else if n > 0 {
		body, err := readBody(r, n)
		f.Body = body
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return f, err
		}
	}
	return f, nil
}

// eagerBody is the largest body read into a buffer of its announced size at
// once. Larger bodies grow with the octets that actually arrive, so a peer
// that announces command_length 65536 and sends nothing more (slowloris)
// costs a few KiB, not the announced size, until the body timeout cuts it.
const eagerBody = 4096

// readBody reads exactly n octets.
func readBody(r io.Reader, n int) ([]byte, error) {
	if n <= eagerBody {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, eagerBody)
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(cap(b), n-len(b)))
		}
		m, err := r.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil && len(b) < n {
			return b, err
		}
	}
	return b, nil
}

// appendFrame appends a whole PDU to dst.
func appendFrame(dst []byte, id, status, seq uint32, body []byte) []byte {
	var h [headerLen]byte
	binary.BigEndian.PutUint32(h[0:], uint32(headerLen+len(body)))
	binary.BigEndian.PutUint32(h[4:], id)
	binary.BigEndian.PutUint32(h[8:], status)
	binary.BigEndian.PutUint32(h[12:], seq)
	dst = append(dst, h[:]...)
	return append(dst, body...)
}

// marshalBody returns the body of a gosmpp PDU (without its header).
func marshalBody(p pdu.PDU) []byte {
	b := pdu.NewBuffer(make([]byte, 0, 64))
	p.Marshal(b)
	return b.Bytes()[headerLen:]
}

// parsePDU parses a frame with gosmpp's codec (control PDUs: binds, responses).
func parsePDU(f Frame) (pdu.PDU, error) {
	buf := make([]byte, 0, headerLen+len(f.Body))
	buf = appendFrame(buf, f.ID, f.Status, f.Seq, f.Body)
	return pdu.Parse(bytes.NewReader(buf))
}

// cstring appends s and a NUL.
func cstring(dst []byte, s string) []byte { return append(append(dst, s...), 0) }

// TLV is one optional parameter, kept as on the wire.
type TLV struct {
	Tag   uint16
	Value []byte
}

// Optional parameter tags (SMPP 3.4 §5.3.2) that spareline reads or writes.
const (
	tagReceiptedMessageID = uint16(0x001E)
	tagMessageState       = uint16(0x0427)
	tagMessagePayload     = uint16(0x0424)
	tagNetworkErrorCode   = uint16(0x0423)
	tagSCInterfaceVersion = uint16(0x0210)
	tagSarMsgRefNum       = uint16(0x020C)
	tagSarTotalSegments   = uint16(0x020E)
	tagSarSegmentSeqnum   = uint16(0x020F)
)

// ShortMessage is the body of a submit_sm or deliver_sm (SMPP 3.4 §4.4.1,
// §4.6.1), parsed field by field while keeping the raw octets so that it can
// be re-originated byte for byte: gosmpp's pdu types keep TLVs in a map (which
// reorders them on output) and strip a UDH, so spareline does not round-trip
// message bodies through them.
type ShortMessage struct {
	ServiceType        string
	SourceTON          byte
	SourceNPI          byte
	Source             string
	DestTON            byte
	DestNPI            byte
	Dest               string
	ESMClass           byte
	ProtocolID         byte
	Priority           byte
	ScheduleDelivery   string
	Validity           string
	RegisteredDelivery byte
	ReplaceIfPresent   byte
	DataCoding         byte
	SMDefaultMsgID     byte
	Message            []byte // short_message (aliases the body)
	TLVs               []TLV  // in wire order (values alias the body)

	esmOffset int // offset of esm_class in the body
	smOffset  int // offset of sm_length in the body
	tlvStart  int // offset of the first TLV in the body
}

// BodyError is a malformed message body: the status says which field.
type BodyError struct {
	Status uint32
	Field  string
	Offset int
}

func (e *BodyError) Error() string {
	return fmt.Sprintf("smpp: %s at octet %d", e.Field, e.Offset)
}

// Maximum lengths of C-Octet String fields, including the NUL (SMPP 3.4 §4.4.1).
const (
	maxServiceType = 6
	maxAddr        = 21
	maxTime        = 17
)

type bodyReader struct {
	b   []byte
	off int
}

func (r *bodyReader) cstr(max int, field string, status uint32) (string, error) {
	i := bytes.IndexByte(r.b[r.off:], 0)
	if i < 0 || i+1 > max {
		return "", &BodyError{Status: status, Field: field, Offset: r.off}
	}
	s := string(r.b[r.off : r.off+i])
	r.off += i + 1
	return s, nil
}

// skipField is field without the string: it checks the field and steps
// over it.
func (r *bodyReader) skipField(max int, name string, status uint32) error {
	i := bytes.IndexByte(r.b[r.off:], 0)
	if i < 0 {
		return &BodyError{Status: statusInvMsgLen, Field: name + " (no terminating NUL)", Offset: r.off}
	}
	if i+1 > max {
		return &BodyError{Status: status, Field: name, Offset: r.off}
	}
	r.off += i + 1
	return nil
}

// field reads a C-Octet String of at most max octets with its NUL: one
// that runs past the body is ESME_RINVMSGLEN, one that is too long the
// field's own status.
func (r *bodyReader) field(max int, name string, status uint32) (string, error) {
	off := r.off
	s, err := r.cstr(max, name, status)
	if err != nil {
		if bytes.IndexByte(r.b[off:], 0) < 0 {
			return "", &BodyError{Status: statusInvMsgLen, Field: name + " (no terminating NUL)", Offset: off}
		}
		return "", err
	}
	return s, nil
}

func (r *bodyReader) byte1(field string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, &BodyError{Status: statusInvMsgLen, Field: field, Offset: r.off}
	}
	v := r.b[r.off]
	r.off++
	return v, nil
}

// skipSource reads the fields submit_sm, data_sm and submit_multi begin
// with: service_type and the source address (ton, npi, source_addr).
func (r *bodyReader) skipSource() error {
	if _, err := r.field(maxServiceType, "service_type", uint32(data.ESME_RINVSERTYP)); err != nil {
		return err
	}
	for _, f := range []string{"source_addr_ton", "source_addr_npi"} {
		if _, err := r.byte1(f); err != nil {
			return err
		}
	}
	_, err := r.field(maxAddr, "source_addr", uint32(data.ESME_RINVSRCADR))
	return err
}

// ParseShortMessage parses a submit_sm or deliver_sm body.
func ParseShortMessage(body []byte) (*ShortMessage, error) {
	m := &ShortMessage{}
	if err := parseShortMessage(m, body); err != nil {
		return nil, err
	}
	return m, nil
}

// parseShortMessage is ParseShortMessage into m, a zero ShortMessage.
func parseShortMessage(m *ShortMessage, body []byte) error {
	r := bodyReader{b: body}
	var err error
	if m.ServiceType, err = r.field(maxServiceType, "service_type", uint32(data.ESME_RINVSERTYP)); err != nil {
		return err
	}
	if m.SourceTON, err = r.byte1("source_addr_ton"); err != nil {
		return err
	}
	if m.SourceNPI, err = r.byte1("source_addr_npi"); err != nil {
		return err
	}
	srcOff := r.off
	if err = r.skipField(maxAddr, "source_addr", uint32(data.ESME_RINVSRCADR)); err != nil {
		return err
	}
	srcEnd := r.off - 1
	if m.DestTON, err = r.byte1("dest_addr_ton"); err != nil {
		return err
	}
	if m.DestNPI, err = r.byte1("dest_addr_npi"); err != nil {
		return err
	}
	dstOff := r.off
	if err = r.skipField(maxAddr, "destination_addr", statusInvDstAdr); err != nil {
		return err
	}
	// Both addresses out of one string: one allocation, not two (the
	// octets between them, ton and npi, come along).
	if srcEnd > srcOff || r.off-1 > dstOff {
		addrs := string(body[srcOff : r.off-1])
		m.Source, m.Dest = addrs[:srcEnd-srcOff], addrs[dstOff-srcOff:]
	}
	m.esmOffset = r.off
	if m.ESMClass, err = r.byte1("esm_class"); err != nil {
		return err
	}
	if m.ProtocolID, err = r.byte1("protocol_id"); err != nil {
		return err
	}
	if m.Priority, err = r.byte1("priority_flag"); err != nil {
		return err
	}
	if m.ScheduleDelivery, err = r.field(maxTime, "schedule_delivery_time", uint32(data.ESME_RINVSCHED)); err != nil {
		return err
	}
	if m.Validity, err = r.field(maxTime, "validity_period", uint32(data.ESME_RINVEXPIRY)); err != nil {
		return err
	}
	if m.RegisteredDelivery, err = r.byte1("registered_delivery"); err != nil {
		return err
	}
	if m.ReplaceIfPresent, err = r.byte1("replace_if_present_flag"); err != nil {
		return err
	}
	if m.DataCoding, err = r.byte1("data_coding"); err != nil {
		return err
	}
	if m.SMDefaultMsgID, err = r.byte1("sm_default_msg_id"); err != nil {
		return err
	}
	m.smOffset = r.off
	smLen, err := r.byte1("sm_length")
	if err != nil {
		return err
	}
	if r.off+int(smLen) > len(body) {
		return &BodyError{Status: statusInvMsgLen, Field: "short_message", Offset: r.off}
	}
	m.Message = body[r.off : r.off+int(smLen)]
	r.off += int(smLen)
	m.tlvStart = r.off
	for r.off < len(body) {
		if len(body)-r.off < 4 {
			return &BodyError{Status: uint32(data.ESME_RINVOPTPARSTREAM), Field: "optional parameter header", Offset: r.off}
		}
		tag := binary.BigEndian.Uint16(body[r.off:])
		l := int(binary.BigEndian.Uint16(body[r.off+2:]))
		if r.off+4+l > len(body) {
			return &BodyError{Status: uint32(data.ESME_RINVOPTPARSTREAM), Field: fmt.Sprintf("optional parameter 0x%04X length", tag), Offset: r.off}
		}
		m.TLVs = append(m.TLVs, TLV{Tag: tag, Value: body[r.off+4 : r.off+4+l]})
		r.off += 4 + l
	}
	return nil
}

// TLV returns the value of the first optional parameter with tag.
func (m *ShortMessage) TLV(tag uint16) ([]byte, bool) {
	for _, t := range m.TLVs {
		if t.Tag == tag {
			return t.Value, true
		}
	}
	return nil, false
}

// Payload is the message content: short_message, or message_payload when
// short_message is empty (SMPP 3.4 §5.3.2.32).
func (m *ShortMessage) Payload() []byte {
	if len(m.Message) == 0 {
		if v, ok := m.TLV(tagMessagePayload); ok {
			return v
		}
	}
	return m.Message
}

// UDHI reports the esm_class UDH indicator (SMPP 3.4 §5.2.12, GSM 0x40).
func (m *ShortMessage) UDHI() bool { return m.ESMClass&0x40 != 0 }

// IsReceipt reports an SMSC delivery receipt (esm_class message type 0x04),
// an intermediate notification (0x20), or an SME delivery acknowledgement
// (0x08) that names a message (receipted_message_id, or an "id:" in its
// Appendix B text): some SMSCs mark their receipts so, and Kannel's ESME
// reads all three as receipts.
func (m *ShortMessage) IsReceipt() bool {
	switch m.ESMClass & 0x3C {
	case 0x04, 0x20:
		return true
	case 0x08:
		if _, ok := m.TLV(tagReceiptedMessageID); ok {
			return true
		}
		id, _, _ := receiptFields(m.Payload())
		return id != ""
	}
	return false
}

// esmClassOffset is the offset of esm_class in the body m was parsed from.
func (m *ShortMessage) esmClassOffset() int {
	return len(m.ServiceType) + 1 + 2 + len(m.Source) + 1 + 2 + len(m.Dest) + 1
}

// errNoUDH is returned when UDHI is set but the UDH does not fit.
var errNoUDH = errors.New("smpp: UDH longer than the message")

// validateContent checks what a carrier or a modem would refuse: a
// schedule_delivery_time or validity_period that is not an SMPP time, sar_*
// parameters that do not describe a segment, a UDH longer than the message,
// odd-length UCS2. It returns the status to answer.
func (m *ShortMessage) validateContent() (uint32, error) {
	if !smppTimeValid(m.ScheduleDelivery) {
		return statusInvSched, fmt.Errorf("smpp: schedule_delivery_time %q is not an SMPP time (§7.1.1)", m.ScheduleDelivery)
	}
	if !smppTimeValid(m.Validity) {
		return statusInvExpiry, fmt.Errorf("smpp: validity_period %q is not an SMPP time (§7.1.1)", m.Validity)
	}
	if status, err := m.checkSAR(); err != nil {
		return status, err
	}
	p := m.Payload()
	if len(m.Message) > 254 {
		// SMPP 3.4 §5.2.21: sm_length is 0 to 254; longer text goes in
		// message_payload.
		return statusInvMsgLen, errors.New("smpp: short_message longer than 254 octets")
	}
	if len(m.Message) > 0 {
		if _, ok := m.TLV(tagMessagePayload); ok {
			// SMPP 3.4 §5.3.2.32: both at once is an error.
			return statusInvMsgLen, errors.New("smpp: short_message and message_payload both present")
		}
	}
	body := p
	if m.UDHI() {
		if len(p) == 0 || int(p[0])+1 > len(p) {
			return statusInvEsmClass, errNoUDH
		}
		body = p[int(p[0])+1:]
	}
	if refusedDataCoding(m.DataCoding) {
		return uint32(data.ESME_RSUBMITFAIL), fmt.Errorf(
			"smpp: data_coding 0x%02X is reserved in SMPP 3.4 §5.2.19 and in 3GPP TS 23.038 §4, or compressed", m.DataCoding)
	}
	if ucs2DataCoding(m.DataCoding) && len(body)%2 != 0 {
		return statusInvMsgLen, errors.New("smpp: UCS2 text of odd length")
	}
	return statusOK, nil
}

// refusedDataCoding reports the data_coding values no carrier or modem can
// be expected to render. A value is read two ways: SMPP 3.4 §5.2.19 defines
// 0x00-0x0A, 0x0D-0x0E and, deferring to GSM 03.38, 0xC0-0xDF and
// 0xF0-0xFF; 0x0F is GBK by the Chinese convention (CMPP) that spareline
// transcodes. But platforms send 3GPP TS 23.038 §4 data coding schemes
// directly, and SMSCs accept them: 0x10-0x1B (general group with a message
// class: 0x10 and 0x18 are the GSM 7-bit and UCS2 "flash" class 0), 0x0B
// (UCS2), 0x40-0x5B (automatic deletion group), 0xE0-0xEF (message waiting,
// UCS2) and 0xF0-0xF7. So a value is relayed when either reading defines
// it, and refused only when:
//
//   - both readings reserve it: the coding groups 0x80-0xBF, and the
//     alphabet 11 (bits 3-2) of the general and automatic deletion groups
//     (0x0C, 0x1C-0x1F, 0x4C-0x4F, 0x5C-0x5F; 0x0D-0x0F are SMPP values);
//   - or it announces text compressed per TS 23.042 (bit 5 of groups
//     0x00-0x7F: 0x20-0x3F, 0x60-0x7F): the modem path cannot send it and
//     no platform of ours produces it.
//
// 0xF8-0xFF set bit 3, reserved in group 1111, but their alphabet and class
// are defined: relayed (the modem path clears the bit). Refused submits are
// answered ESME_RSUBMITFAIL (3.4 has no data_coding status), not relayed or
// queued. modem/sms maps the relayed values to TP-DCS for a failover.
func refusedDataCoding(dc byte) bool {
	switch {
	case dc <= 0x0F:
		return dc == 0x0C
	case dc < 0x80: // TS 23.038 general data coding 00xx, automatic deletion 01xx
		return dc&0x20 != 0 || dc&0x0C == 0x0C
	case dc < 0xC0: // TS 23.038 reserved coding groups 1000-1011
		return true
	}
	return false
}

// ucs2DataCoding reports a data_coding whose text is UCS2: SMPP 0x08, and
// the TS 23.038 values whose alphabet bits say UCS2 (0x0B, 0x18-0x1B,
// 0x48-0x4B, 0x58-0x5B, 0xE0-0xEF).
func ucs2DataCoding(dc byte) bool {
	switch {
	case dc == 0x08 || dc == 0x0B:
		return true
	case dc >= 0x10 && dc < 0x80:
		return dc&0x2C == 0x08
	}
	return dc >= 0xE0 && dc <= 0xEF
}

// smppTimeValid reports whether v is empty or a time in the format of SMPP
// 3.4 §7.1.1, "YYMMDDhhmmsstnnp": fifteen digits and p. p is '+' or '-' for
// an absolute time (nn quarter hours ahead of or behind UTC, 00-48; month
// 01-12, day 01-31, hour 00-23, minute and second 00-59) or 'R' for a time
// relative to now (any digits: "000001000000000R" is one day). An SMSC
// refuses anything else (ESME_RINVSCHED, ESME_RINVEXPIRY), and so does
// spareline: relayed, it would be refused by the carrier with a status that
// reads as transient, and the modem path could not tell when it expires.
func smppTimeValid(v string) bool {
	if v == "" {
		return true
	}
	if len(v) != 16 {
		return false
	}
	var n [15]int
	for i := range n {
		c := v[i]
		if c < '0' || c > '9' {
			return false
		}
		n[i] = int(c - '0')
	}
	two := func(i int) int { return n[i]*10 + n[i+1] }
	switch v[15] {
	case 'R':
		return true
	case '+', '-':
		yy, mo, dd, hh, mi, ss, nn := two(0), two(2), two(4), two(6), two(8), two(10), two(13)
		return mo >= 1 && mo <= 12 && dd >= 1 && dd <= daysIn(2000+yy, mo) && hh <= 23 && mi <= 59 && ss <= 59 && nn <= 48
	}
	return false
}

// daysIn is the number of days of month mo (1-12) of year y: no 30
// February, 31 April or 29 February 2029 (a date the SMSC cannot schedule).
// YY is read as 20YY: SMPP 3.4 gives no century, and 2000-2099 share
// their leap years with the Gregorian rule but for 2100.
func daysIn(y, mo int) int {
	return time.Date(y, time.Month(mo)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// sar is the segment the sar_* parameters describe (SMPP 3.4
// §5.3.2.22-24: reference, total, sequence number), when all three are
// there with their lengths (checkSAR has checked their values).
func (m *ShortMessage) sar() (ref [2]byte, total, seq byte, ok bool) {
	r, ok1 := m.TLV(tagSarMsgRefNum)
	t, ok2 := m.TLV(tagSarTotalSegments)
	s, ok3 := m.TLV(tagSarSegmentSeqnum)
	if !ok1 || !ok2 || !ok3 || len(r) != 2 || len(t) != 1 || len(s) != 1 {
		return ref, 0, 0, false
	}
	return [2]byte{r[0], r[1]}, t[0], s[0], true
}

// checkSAR checks the concatenation parameters of SMPP 3.4 §5.3.2.22-24:
// sar_msg_ref_num (2 octets), sar_total_segments (1 octet, 1-255) and
// sar_segment_seqnum (1 octet, 1 to the total) come all three or not at
// all. Other optional parameters are not checked: they are relayed as sent.
func (m *ShortMessage) checkSAR() (uint32, error) {
	ref, hasRef := m.TLV(tagSarMsgRefNum)
	total, hasTotal := m.TLV(tagSarTotalSegments)
	seq, hasSeq := m.TLV(tagSarSegmentSeqnum)
	if !hasRef && !hasTotal && !hasSeq {
		return statusOK, nil
	}
	switch {
	case hasRef && len(ref) != 2:
		return statusInvParLen, fmt.Errorf("smpp: sar_msg_ref_num of %d octets, not 2", len(ref))
	case hasTotal && len(total) != 1:
		return statusInvParLen, fmt.Errorf("smpp: sar_total_segments of %d octets, not 1", len(total))
	case hasSeq && len(seq) != 1:
		return statusInvParLen, fmt.Errorf("smpp: sar_segment_seqnum of %d octets, not 1", len(seq))
	case !hasRef || !hasTotal || !hasSeq:
		return statusMissingOpt, errors.New("smpp: sar_msg_ref_num, sar_total_segments and sar_segment_seqnum go together")
	case total[0] == 0 || seq[0] == 0 || seq[0] > total[0]:
		return statusInvOptValue, fmt.Errorf("smpp: sar segment %d of %d", seq[0], total[0])
	}
	return statusOK, nil
}
