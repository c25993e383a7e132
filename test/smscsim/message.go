package smscsim

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/linxGnu/gosmpp/data"
	"golang.org/x/text/encoding/simplifiedchinese"
)

// Message is one submit_sm as the simulator received it.
type Message struct {
	// Raw is the PDU body exactly as received: every octet after the 16-octet header.
	Raw []byte
	// Seq is the request's sequence_number; SystemID the bind that sent it; Conn
	// numbers the TCP connection (1, 2, ... in accept order).
	Seq      uint32
	SystemID string
	Conn     uint64
	// InterfaceVersion is the interface_version of the bind that sent it.
	InterfaceVersion byte

	ServiceType          string
	SourceTON, SourceNPI byte
	Source               string
	DestTON, DestNPI     byte
	Dest                 string
	ESMClass             byte
	ProtocolID           byte
	Priority             byte
	ScheduleDeliveryTime string
	ValidityPeriod       string
	RegisteredDelivery   byte
	DataCoding           byte
	// ShortMessage is the short_message field's octets, UDH included when
	// esm_class has UDHI (0x40) set.
	ShortMessage []byte
	// TLVs holds the optional parameters in wire order.
	TLVs []TLV

	// What the simulator did: Status is the command_status answered (or that
	// would have been answered when Silent), ID the message_id given ("" unless
	// Status is 0), ReceiptID the id the receipt carries.
	Status    uint32
	Silent    bool
	ID        string
	ReceiptID string
	// Attempt counts submits of the same source, destination and short_message
	// (1 for the first).
	Attempt int
	At      time.Time
}

// TLV returns the value of the first optional parameter with the tag.
func (m Message) TLV(tag uint16) ([]byte, bool) {
	for _, t := range m.TLVs {
		if t.Tag == tag {
			return t.Value, true
		}
	}
	return nil, false
}

// UDH returns the user data header (UDHL octet included) when esm_class has
// UDHI set (SMPP 3.4 5.2.12, 3GPP TS 23.040 9.2.3.24), else nil.
func (m Message) UDH() []byte {
	if m.ESMClass&0x40 == 0 || len(m.ShortMessage) == 0 {
		return nil
	}
	n := int(m.ShortMessage[0]) + 1
	if n > len(m.ShortMessage) {
		return nil
	}
	return m.ShortMessage[:n]
}

// UserData returns short_message without its UDH (or message_payload when
// short_message is empty).
func (m Message) UserData() []byte {
	sm := m.ShortMessage
	if len(sm) == 0 {
		if p, ok := m.TLV(TagMessagePayload); ok {
			sm = p
		}
	}
	if udh := m.UDH(); udh != nil {
		return sm[len(udh):]
	}
	return sm
}

// Concat returns the concatenation IE (3GPP TS 23.040 9.2.3.24.1 8-bit ref,
// 9.2.3.24.8 16-bit ref) when the UDH has one.
func (m Message) Concat() (ref, total, seq int, ok bool) {
	udh := m.UDH()
	for i := 1; i+1 < len(udh); {
		id, l := udh[i], int(udh[i+1])
		v := udh[i+2:]
		if l > len(v) {
			return 0, 0, 0, false
		}
		v = v[:l]
		switch {
		case id == 0x00 && l == 3:
			return int(v[0]), int(v[1]), int(v[2]), true
		case id == 0x08 && l == 4:
			return int(v[0])<<8 | int(v[1]), int(v[2]), int(v[3]), true
		}
		i += 2 + l
	}
	return 0, 0, 0, false
}

// DecodeError says the user data is not valid in its data_coding.
type DecodeError struct {
	DataCoding byte
	Err        error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("smscsim: cannot decode user data as data_coding 0x%02X: %v", e.DataCoding, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Text decodes UserData by data_coding (SMPP 3.4 5.2.19): 0 GSM 7-bit
// unpacked, 1 ASCII, 3 Latin-1, 8 UCS2, 15 GBK (a common Chinese extension).
func (m Message) Text() (string, error) {
	return DecodeText(m.DataCoding, m.UserData())
}

// DecodeText decodes user data octets by SMPP data_coding.
func DecodeText(dc byte, ud []byte) (string, error) {
	var s string
	var err error
	switch dc {
	case 15:
		var b []byte
		b, err = simplifiedchinese.GBK.NewDecoder().Bytes(ud)
		s = string(b)
	default:
		enc := data.FromDataCoding(dc)
		if enc == nil {
			return "", &DecodeError{DataCoding: dc, Err: fmt.Errorf("unsupported data_coding")}
		}
		s, err = enc.Decode(ud)
	}
	if err == nil && !utf8.ValidString(s) {
		err = fmt.Errorf("not valid text")
	}
	if err != nil {
		return "", &DecodeError{DataCoding: dc, Err: err}
	}
	return s, nil
}
