package platform

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/linxGnu/gosmpp/pdu"
)

// SMPP 3.4 section 3.2: a PDU is a 16-octet header (command_length,
// command_id, command_status, sequence_number; big-endian) and a body.
const (
	headerLen = 16
	maxPDULen = 64 << 10
)

// Command ids (SMPP 3.4 5.1.2.1) as raw values.
const (
	cmdGenericNack     uint32 = 0x80000000
	cmdBindReceiver    uint32 = 0x00000001
	cmdBindTransmitter uint32 = 0x00000002
	cmdSubmitSM        uint32 = 0x00000004
	cmdSubmitSMResp    uint32 = 0x80000004
	cmdDeliverSM       uint32 = 0x00000005
	cmdDeliverSMResp   uint32 = 0x80000005
	cmdUnbind          uint32 = 0x00000006
	cmdUnbindResp      uint32 = 0x80000006
	cmdBindTransceiver uint32 = 0x00000009
	cmdEnquireLink     uint32 = 0x00000015
	cmdEnquireLinkResp uint32 = 0x80000015
)

// Status values used here (SMPP 3.4 5.1.3).
const (
	StatusOK        uint32 = 0x00000000
	StatusInvCmdID  uint32 = 0x00000003 // ESME_RINVCMDID
	StatusInvCmdLen uint32 = 0x00000002 // ESME_RINVCMDLEN
	StatusInvDstAdr uint32 = 0x0000000B // ESME_RINVDSTADR
	StatusInvPaswd  uint32 = 0x0000000E // ESME_RINVPASWD
	StatusInvSysID  uint32 = 0x0000000F // ESME_RINVSYSID
	StatusThrottled uint32 = 0x00000058 // ESME_RTHROTTLED
	StatusSysErr    uint32 = 0x00000008 // ESME_RSYSERR
	StatusMsgQFul   uint32 = 0x00000014 // ESME_RMSGQFUL
	StatusXTAppn    uint32 = 0x00000064 // ESME_RX_T_APPN: temporary, ask the SMSC to retry
)

type header struct {
	Length, ID, Status, Seq uint32
}

// FrameError is a PDU whose command_length cannot be right; the connection
// cannot continue after it.
type FrameError struct{ Length uint32 }

func (e *FrameError) Error() string {
	return fmt.Sprintf("platform: invalid command_length %d (want %d..%d)", e.Length, headerLen, maxPDULen)
}

// readFrame reads one whole PDU (header included).
func readFrame(r io.Reader) (header, []byte, error) {
	var hb [headerLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return header{}, nil, err
	}
	h := header{
		Length: binary.BigEndian.Uint32(hb[0:]),
		ID:     binary.BigEndian.Uint32(hb[4:]),
		Status: binary.BigEndian.Uint32(hb[8:]),
		Seq:    binary.BigEndian.Uint32(hb[12:]),
	}
	if h.Length < headerLen || h.Length > maxPDULen {
		return h, nil, &FrameError{Length: h.Length}
	}
	full := make([]byte, h.Length)
	copy(full, hb[:])
	if _, err := io.ReadFull(r, full[headerLen:]); err != nil {
		return h, nil, err
	}
	return h, full, nil
}

// TLV is an optional parameter (SMPP 3.4 3.2.4.1), kept in wire order.
type TLV struct {
	Tag   uint16
	Value []byte
}

// TLV tags (SMPP 3.4 5.3.2).
const (
	TagReceiptedMessageID uint16 = 0x001E
	TagMessageState       uint16 = 0x0427
	TagMessagePayload     uint16 = 0x0424
)

// encode marshals the mandatory body with gosmpp, then sets status and
// sequence number and appends TLVs in order (gosmpp keeps them in a map).
func encode(p pdu.PDU, status, seq uint32, tlvs []TLV) []byte {
	b := pdu.NewBuffer(make([]byte, 0, 96))
	p.Marshal(b)
	out := b.Bytes()
	for _, t := range tlvs {
		out = binary.BigEndian.AppendUint16(out, t.Tag)
		out = binary.BigEndian.AppendUint16(out, uint16(len(t.Value)))
		out = append(out, t.Value...)
	}
	binary.BigEndian.PutUint32(out[0:], uint32(len(out)))
	binary.BigEndian.PutUint32(out[8:], status)
	binary.BigEndian.PutUint32(out[12:], seq)
	return out
}

func headerOnly(id, status, seq uint32) []byte {
	out := make([]byte, headerLen)
	binary.BigEndian.PutUint32(out[0:], headerLen)
	binary.BigEndian.PutUint32(out[4:], id)
	binary.BigEndian.PutUint32(out[8:], status)
	binary.BigEndian.PutUint32(out[12:], seq)
	return out
}

// cstring reads a NUL-terminated string from b; ok is false if unterminated.
func cstring(b []byte) (string, int, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), i + 1, true
		}
	}
	return "", 0, false
}
