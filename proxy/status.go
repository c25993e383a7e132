package proxy

import (
	"fmt"
	"strings"

	"github.com/linxGnu/gosmpp/data"
)

// Class is what a carrier's command_status means for the message. Every
// status is classified once, here; the dispatcher switches on the class.
type Class int

// The classes of a command_status.
const (
	ClassOK        Class = iota
	ClassNumber          // the destination is wrong: no failover (seed [0024])
	ClassThrottle        // slow down and retry on the same carrier
	ClassTransient       // the carrier failed: another path may succeed
)

func (c Class) String() string {
	switch c {
	case ClassOK:
		return "ok"
	case ClassNumber:
		return "number"
	case ClassThrottle:
		return "throttle"
	default:
		return "transient"
	}
}

// numberErrors are the statuses that say the destination itself is wrong
// (SMPP 3.4 §5.1.3). Re-sending such a message by modem cannot help.
var numberErrors = map[uint32]string{
	uint32(data.ESME_RINVDSTADR):   "ESME_RINVDSTADR",   // 0x0B Invalid Dest Addr
	uint32(data.ESME_RINVDSTTON):   "ESME_RINVDSTTON",   // 0x50 Invalid Destination address TON
	uint32(data.ESME_RINVDSTNPI):   "ESME_RINVDSTNPI",   // 0x51 Invalid Destination address NPI
	uint32(data.ESME_RINVNUMDESTS): "ESME_RINVNUMDESTS", // 0x33 Invalid number of destinations
	uint32(data.ESME_RINVDESTFLAG): "ESME_RINVDESTFLAG", // 0x40 Destination flag is invalid
}

// Classify maps a command_status to its class.
func Classify(status uint32) Class {
	switch {
	case status == statusOK:
		return ClassOK
	case status == statusThrottled || status == statusMsgQFul:
		// ESME_RTHROTTLED (0x58) and ESME_RMSGQFUL (0x14): the carrier is
		// alive and asks us to slow down.
		return ClassThrottle
	}
	if _, ok := numberErrors[status]; ok {
		return ClassNumber
	}
	return ClassTransient
}

// linkStatuses are the command statuses that describe a session, not a
// message (SMPP 3.4 §5.1.3): from a carrier they are about spareline's bind
// with it, and mean nothing on the platform's own session.
var linkStatuses = map[uint32]bool{
	statusInvCmdLen: true, // 0x02
	statusInvCmdID:  true, // 0x03
	statusInvBndSts: true, // 0x04
	statusAlyBnd:    true, // 0x05
	statusBindFail:  true, // 0x0D
	statusInvPaswd:  true, // 0x0E
	statusInvSysID:  true, // 0x0F
	statusInvSysTyp: true, // 0x53
}

// platformStatus is the status the platform gets for a submit the carrier
// refused with status: the carrier's own, except a status about the
// carrier link, which becomes ESME_RSYSERR (the system failed; ask again):
// a platform told ESME_RINVBNDSTS would rebind, one told ESME_RINVCMDID
// would think submit_sm is not offered.
func platformStatus(status uint32) uint32 {
	if linkStatuses[status] {
		return statusSysErr
	}
	return status
}

// statusNames label metrics; any other status is "other" so that a carrier
// cannot blow up the metric's cardinality.
var statusNames = map[uint32]string{
	statusOK:                           "ESME_ROK",
	statusInvMsgLen:                    "ESME_RINVMSGLEN",
	statusInvCmdLen:                    "ESME_RINVCMDLEN",
	statusInvCmdID:                     "ESME_RINVCMDID",
	statusInvBndSts:                    "ESME_RINVBNDSTS",
	statusSysErr:                       "ESME_RSYSERR",
	uint32(data.ESME_RINVSRCADR):       "ESME_RINVSRCADR",
	statusInvDstAdr:                    "ESME_RINVDSTADR",
	statusMsgQFul:                      "ESME_RMSGQFUL",
	statusThrottled:                    "ESME_RTHROTTLED",
	statusInvEsmClass:                  "ESME_RINVESMCLASS",
	uint32(data.ESME_RSUBMITFAIL):      "ESME_RSUBMITFAIL",
	uint32(data.ESME_RINVDSTTON):       "ESME_RINVDSTTON",
	uint32(data.ESME_RINVDSTNPI):       "ESME_RINVDSTNPI",
	uint32(data.ESME_RINVEXPIRY):       "ESME_RINVEXPIRY",
	uint32(data.ESME_RINVSCHED):        "ESME_RINVSCHED",
	uint32(data.ESME_RX_T_APPN):        "ESME_RX_T_APPN",
	uint32(data.ESME_RX_P_APPN):        "ESME_RX_P_APPN",
	uint32(data.ESME_RX_R_APPN):        "ESME_RX_R_APPN",
	uint32(data.ESME_RINVNUMDESTS):     "ESME_RINVNUMDESTS",
	uint32(data.ESME_RINVDESTFLAG):     "ESME_RINVDESTFLAG",
	uint32(data.ESME_RPROVNOTALLWD):    "ESME_RPROVNOTALLWD",
	uint32(data.ESME_RINVSERTYP):       "ESME_RINVSERTYP",
	uint32(data.ESME_RINVOPTPARSTREAM): "ESME_RINVOPTPARSTREAM",
	statusInvParLen:                    "ESME_RINVPARLEN",
	statusMissingOpt:                   "ESME_RMISSINGOPTPARAM",
	statusInvOptValue:                  "ESME_RINVOPTPARAMVAL",
	statusInvDCS:                       "ESME_RINVDCS",
}

// statusName is a bounded label for a command_status.
func statusName(status uint32) string {
	if n, ok := statusNames[status]; ok {
		return n
	}
	return "other"
}

// StatusString is a readable form for logs and errors.
func StatusString(status uint32) string {
	if n, ok := statusNames[status]; ok {
		return fmt.Sprintf("%s(0x%08X)", n, status)
	}
	// Every other SMPP 3.4 name (ESME_RINVPASWD, ESME_RBINDFAIL...), as
	// gosmpp's table has them; a status outside the table stays a number.
	if n := data.CommandStatusType(status).String(); strings.HasPrefix(n, "ESME_") {
		return fmt.Sprintf("%s(0x%08X)", n, status)
	}
	return fmt.Sprintf("0x%08X", status)
}

// StatusError is a carrier's error answer to a submit.
type StatusError struct {
	Status uint32
	Class  Class
}

func (e *StatusError) Error() string {
	return "carrier answered " + StatusString(e.Status) + " (" + e.Class.String() + ")"
}
