package at

import "strings"

// Verbose error texts (AT+CMEE=2) and the numbers they stand for, so that a
// verbose +CMS ERROR or +CME ERROR is classified as its number is. Modems
// word them after the specifications, with varying case and with or without
// the "(U)" of UICC-era editions; norm folds those differences.

// cmsTexts: 3GPP TS 27.005 §3.2.5 (300-500), RP-cause names of 24.011
// Table 8.4 (0-127) and TP-Failure-Cause names of 23.040 §9.2.3.22
// (128-255), plus wordings seen in modem firmware.
var cmsTexts = map[string]int{
	"unassigned (unallocated) number": 1, "unassigned number": 1, "unallocated number": 1,
	"operator determined barring": 8, "call barred": 10,
	"short message transfer rejected": 21, "sm transfer rejected": 21,
	"destination out of order": 27, "destination out of service": 27,
	"unidentified subscriber": 28, "facility rejected": 29, "unknown subscriber": 30,
	"network out of order": 38, "temporary failure": 41, "congestion": 42,
	"resources unavailable, unspecified": 47, "resources unavailable": 47,
	"requested facility not subscribed": 50, "requested facility not implemented": 69,
	"invalid short message transfer reference value": 81,
	"semantically incorrect message":                 95, "invalid mandatory information": 96,
	"message type non-existent or not implemented":             97,
	"message not compatible with short message protocol state": 98,
	"information element non-existent or not implemented":      99,
	"protocol error, unspecified":                              111, "interworking, unspecified": 127,

	"telematic interworking not supported": 0x80, "short message type 0 not supported": 0x81,
	"cannot replace short message": 0x82, "unspecified tp-pid error": 0x8F,
	"data coding scheme (alphabet) not supported": 0x90, "data coding scheme not supported": 0x90,
	"message class not supported": 0x91, "unspecified tp-dcs error": 0x9F,
	"command cannot be actioned": 0xA0, "command unsupported": 0xA1, "unspecified tp-command error": 0xAF,
	"tpdu not supported": 0xB0, "sc busy": 0xC0, "no sc subscription": 0xC1, "sc system failure": 0xC2,
	"invalid sme address": 0xC3, "destination sme barred": 0xC4,
	"sm rejected-duplicate sm": 0xC5, "sm rejected - duplicate sm": 0xC5, "duplicate sm rejected": 0xC5,
	"tp-vpf not supported": 0xC6, "tp-vp not supported": 0xC7,
	"sim sms storage full": 0xD0, "no sms storage capability in sim": 0xD1, "error in ms": 0xD2,
	"memory capacity exceeded": 0xD3, "sim application toolkit busy": 0xD4, "sim data download error": 0xD5,
	"unspecified error cause": 0xFF,

	"me failure": 300, "sms service of me reserved": 301, "operation not allowed": 302,
	"operation not supported": 303, "invalid pdu mode parameter": 304, "invalid text mode parameter": 305,
	"sim not inserted": 310, "sim pin required": 311, "ph-sim pin required": 312, "sim failure": 313,
	"sim busy": 314, "sim wrong": 315, "sim puk required": 316, "sim pin2 required": 317,
	"sim puk2 required": 318, "memory failure": 320, "invalid memory index": 321, "memory full": 322,
	"smsc address unknown": 330, "no network service": 331, "network timeout": 332,
	"no +cnma acknowledgement expected": 340, "no cnma acknowledgement expected": 340,
	"unknown error": 500,
}

// cmeTexts: 3GPP TS 27.007 §9.2.1 and §9.2.2 (the GPRS-related ones
// matter not for SMS).
var cmeTexts = map[string]int{
	"phone failure": 0, "no connection to phone": 1, "phone-adaptor link reserved": 2,
	"operation not allowed": 3, "operation not supported": 4, "ph-sim pin required": 5,
	"ph-fsim pin required": 6, "ph-fsim puk required": 7,
	"sim not inserted": 10, "sim pin required": 11, "sim puk required": 12, "sim failure": 13,
	"sim busy": 14, "sim wrong": 15, "incorrect password": 16, "sim pin2 required": 17, "sim puk2 required": 18,
	"memory full": 20, "invalid index": 21, "not found": 22, "memory failure": 23,
	"text string too long": 24, "invalid characters in text string": 25,
	"dial string too long": 26, "invalid characters in dial string": 27,
	"no network service": 30, "network timeout": 31,
	"network not allowed - emergency calls only": 32, "network not allowed, emergency calls only": 32,
	"network personalization pin required": 40, "unknown": 100,
}

// norm folds case, the "(U)" of "(U)SIM", runs of spaces and a final period.
func norm(text string) string {
	t := strings.ToLower(strings.TrimSpace(text))
	t = strings.ReplaceAll(t, "(u)", "")
	t = strings.Join(strings.Fields(t), " ")
	return strings.TrimSuffix(t, ".")
}

// cmsCode is the number of a verbose +CMS ERROR text, 500 (unknown) when
// the text is not one we know.
func cmsCode(text string) int {
	if n, ok := cmsTexts[norm(text)]; ok {
		return n
	}
	return 500
}

// cmeCode is the number of a verbose +CME ERROR text, -1 when unknown.
func cmeCode(text string) int {
	if n, ok := cmeTexts[norm(text)]; ok {
		return n
	}
	return -1
}
