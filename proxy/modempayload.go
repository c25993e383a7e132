package proxy

import (
	"errors"

	"github.com/spareline/spareline/modem/sms"
)

// modemSubmit is the SMS a modem sends for a platform's submit: the
// payload as the platform sent it, with its own UDH when it set esm_class
// UDHI. A segment the platform marked with the sar_* parameters instead
// (SMPP 3.4 §5.3.2.22-24: the SMSC builds the concatenation header) gets
// the header those parameters stand for (TS 23.040 §9.2.3.24.1, 8-bit
// reference: the low octet of sar_msg_ref_num), so the handset joins the
// parts as it would have from the carrier. A segment too long to carry that
// header still goes, as a message of its own, rather than not at all.
func modemSubmit(sm *ShortMessage, dest string, statusReport bool) sms.Submit {
	sub := sms.Submit{Dest: dest, DataCoding: sm.DataCoding, UDHI: sm.UDHI(), Payload: sm.Payload(), StatusReport: statusReport}
	if sub.UDHI {
		return sub
	}
	ref, total, seq, ok := sm.sar()
	if !ok || total < 2 {
		return sub // not a segment (one of one needs no header)
	}
	with := sub
	with.UDHI = true
	with.Payload = append([]byte{5, 0x00, 3, ref[1], total, seq}, sub.Payload...)
	if _, err := sms.EncodeSubmit(with, 0); err != nil {
		return sub
	}
	return with
}

// modemRefusal is, for a submit routed to the modems only (no carrier for
// its number), the status it is refused with when no modem can send it:
// sms.EncodeSubmit refuses what the modem path would send
// (ESME_RINVDCS for its data_coding, ESME_RINVDSTADR for its number,
// ESME_RINVMSGLEN for its content: more than 255 parts, or a platform UDH
// that does not fit beside the content and cannot be repeated in parts).
// It is nil when the message can go. A message routed to a carrier is not
// looked at: the carrier may take what a modem cannot, and if it fails
// over the modem path ends it UNDELIV with the reason in its note.
func (f *Failover) modemRefusal(sm *ShortMessage, dest string) (uint32, error) {
	// Any 8-bit reference gives the same parts (the pool uses 1-255).
	_, err := sms.EncodeSubmit(modemSubmit(sm, f.modemDest(dest), false), 1)
	if err == nil {
		return 0, nil
	}
	var e *sms.Error
	if errors.As(err, &e) {
		switch e.Field {
		case "data_coding":
			return statusInvDCS, err
		case "TP-DA":
			return statusInvDstAdr, err
		}
	}
	return statusInvMsgLen, err
}
