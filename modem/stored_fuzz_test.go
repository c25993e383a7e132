package modem

import "testing"

// FuzzDecodeStored: any +CMGR/+CMGL header and PDU line decode without a
// panic, and a text-mode header is never taken for a PDU.
func FuzzDecodeStored(f *testing.F) {
	f.Add(`+CMGR: 0,,24`, "0791683108100005F0040D91683109000000F000084210101000000004C60F3A0D")
	f.Add(`+CMGL: 1,"REC UNREAD","+8613900000000",,"24/01/01,00:00:00+32"`, "hello")
	f.Add(`+CMGR: "REC READ","+86139"`, "text")
	f.Add(`+CMGL: 3`, "")
	f.Fuzz(func(t *testing.T, header, line string) {
		st := decodeStored(1, line, header)
		if textModeHeader(header) && (st.Err != ErrTextModeAnswer || st.PDU != nil) {
			t.Fatalf("text-mode header %q decoded as %+v", header, st)
		}
	})
}
