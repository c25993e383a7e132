package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"strings"
	"sync/atomic"

	"github.com/linxGnu/gosmpp/data"
	"go.uber.org/zap"
)

// PDU trace (config carriers[].trace, accounts[].trace): every PDU of the
// carrier's sessions, or of the account's once bound, logged at info as it
// crossed the wire, for a carrier's or a platform's engineer who asks "what
// exactly did you send?". A bind's password is blanked; everything else,
// message text included, is in the hex, which is why it is off by default
// and meant to be turned on by a reload for as long as a diagnosis takes.
// Off, a PDU costs one atomic load (two for a session that may trace).

// SetTrace makes the session trace its PDUs while *on is true (nil: never).
func (s *Session) SetTrace(on *atomic.Bool) { s.trace.Store(on) }

func (s *Session) tracing() bool {
	t := s.trace.Load()
	return t != nil && t.Load()
}

// tracePDU logs one PDU: dir "in" or "out", the header's fields, and the
// whole PDU in hex (body, then str with its NUL when cstr).
func (s *Session) tracePDU(dir string, id, status, seq uint32, body []byte, str string, cstr bool) {
	n := headerLen + len(body)
	if cstr {
		n += len(str) + 1
	}
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, status)
	b = binary.BigEndian.AppendUint32(b, seq)
	b = append(b, body...)
	if cstr {
		b = append(append(b, str...), 0)
	}
	blankPassword(id, b[headerLen:])
	s.log.Info("pdu", zap.String("dir", dir), zap.String("command", strings.ToLower(data.CommandIDType(id).String())),
		zap.String("status", StatusString(status)), zap.Uint32("seq", seq), zap.Int("length", n),
		zap.String("hex", hex.EncodeToString(b)))
}

// blankPassword overwrites the password of a bind or outbind body
// (system_id, then password, both C-octet strings, SMPP 3.4 §4.1) with '*'.
func blankPassword(id uint32, body []byte) {
	switch id {
	case cmdBindReceiver, cmdBindTransmitter, cmdBindTransceiver, cmdOutbind:
	default:
		return
	}
	i := 0
	for i < len(body) && body[i] != 0 { // system_id
		i++
	}
	for i++; i < len(body) && body[i] != 0; i++ {
		body[i] = '*'
	}
}
