package sms

// Golden vectors from published sources. Each vector names where it was
// published; the octets are the publication's, the expectations are what the
// publication says they mean.
//
//   [DF]  Dreamfabric "SMS and the PDU format" (Lars Pettersson), the page
//         every modem manual copies; mirrored at
//         http://subnets.ru/saved/sms_pdu_format.html and
//         https://www.luteus.biz/Download/LoriotPro_Doc/SMS_Manager_Documentation/R01-SMS_PDU_EN.htm
//   [PGM] faucamp/python-gsmmodem, test/test_pdu.py (MIT), vectors captured
//         from real modems and networks.
//   [WH]  warthog618/sms, encoding/tpdu/deliver_internal_test.go (MIT).
//   [AMRO] http://amro.blogspot.com/2007/09/receiving-sms-status-report-message.html
//         (a +CDS status report from a real network, given without its SMSC
//         field; we add the empty field 00 that +CDS carries in PDU mode).

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func tz(hours float64) *time.Location { return zone(int(hours * 3600)) }

func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	_, go1 := got.Zone()
	_, wo := want.Zone()
	if !got.Equal(want) || go1 != wo {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func encodeOne(t *testing.T, s Submit) Part {
	t.Helper()
	parts, err := EncodeSubmit(s, 0)
	if err != nil {
		t.Fatalf("EncodeSubmit: %v", err)
	}
	if len(parts) != 1 {
		t.Fatalf("EncodeSubmit gave %d parts, want 1", len(parts))
	}
	return parts[0]
}

func TestEncodeSubmitGolden(t *testing.T) {
	for _, tc := range []struct {
		name, source string
		in           Submit
		want         string
	}{
		{
			// [DF] "hellohello" to +46708251358, 4 days validity (TP-VP 0xAA).
			name: "hellohello", source: "DF",
			in:   Submit{Dest: "+46708251358", Payload: []byte("hellohello"), Validity: 4 * 24 * time.Hour},
			want: "0011000B916407281553F80000AA0AE8329BFD4697D9EC37",
		},
		{
			// [PGM] test_encodeSmsSubmit: "Hello World!" to +27820001111, no validity.
			name: "hello world", source: "PGM",
			in:   Submit{Dest: "+27820001111", Payload: []byte("Hello World!")},
			want: "0001000B917228001011F100000CC8329BFD065DDF72363904",
		},
		{
			// [PGM] test_decode UCS2 SMS-SUBMIT "あ叶葉" to +34616585119; our
			// SMSC field is the empty 00 instead of +34646456456.
			name: "ucs2", source: "PGM",
			in:   Submit{Dest: "+34616585119", DataCoding: 8, Payload: mustHex(t, "304253F68449")},
			want: "00" + "01000B914316565811F9000806304253F68449",
		},
		{
			// [PGM] test_decode 8-bit SMS-SUBMIT "Hello world!" to +27821234567;
			// SMSC field 00 instead of +2781191.
			name: "8-bit", source: "PGM",
			in:   Submit{Dest: "+27821234567", DataCoding: 4, Payload: []byte("Hello world!")},
			want: "00" + "01000B917228214365F700040C48656C6C6F20776F726C6421",
		},
		{
			// [PGM] test_decode SMS-SUBMIT with TP-SRR and 3 days validity
			// (TP-VP 0xA9) to +31628870634; SMSC field 00 and TP-MR 00 (the
			// published one was sent with TP-MR 0x0D, which the ME assigns).
			name: "status report, 3 days", source: "PGM",
			in:   Submit{Dest: "+31628870634", Payload: []byte("www.diafaan.com"), StatusReport: true, Validity: 72 * time.Hour},
			want: "00" + "3100" + "0B911326880736F40000A90FF7FBDD454E87CDE1B0DB357EB701",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := encodeOne(t, tc.in)
			want := mustHex(t, tc.want)
			if !bytes.Equal(p.PDU, want) {
				t.Errorf("[%s] PDU\n got %X\nwant %X", tc.source, p.PDU, want)
			}
			if p.TPDULen != len(want)-1 {
				t.Errorf("TPDULen = %d, want %d", p.TPDULen, len(want)-1)
			}
		})
	}
}

// [PGM] test_encodeSmsSubmit_concatenated: a 439-character GSM text in three
// parts of 153/153/133 septets, 8-bit reference 0, with the fill bit after the
// 6-octet UDH. The published first octet is 0x45 (TP-RD set); we send TP-RD 0,
// so the expected first octet is 0x41 and every other octet is the published
// one.
func TestEncodeSubmitConcatenatedGolden(t *testing.T) {
	text := "Lorem ipsum dolor sit amet, consectetur adipisicing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.Ut enim ad minim veniam, quinostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.Duis aute irure dolor in reprehenderit in voluptate velit esse cillum doloe eu fugiat nulla pariatur.Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum"
	published := []string{
		"0045000B915121551532F40000A0050003000301986F79B90D4AC3E7F53688FC66BFE5A0799A0E0AB7CB741668FC76CFCB637A995E9783C2E4343C3D4F8FD3EE33A8CC4ED359A079990C22BF41E5747DDE7E9341F4721BFE9683D2EE719A9C26D7DD74509D0E6287C56F791954A683C86FF65B5E06B5C36777181466A7E3F5B0AB4A0795DDE936284C06B5D3EE741B642FBBD3E1360B14AFA7DD",
		"0045000B915121551532F40000A0050003000302DE73BABC4E0695F165F9384D0FD3D36F37A8CE6687DBE337881D16BFE5E939C89D9EA741753A28CC4EC7EB6938A88C0795C3A0F1BBDD7E93DFA0F1DB3D2FC7EB61BA8B584FCF41E13ABD0C4ACBEBF23288FC66BFE5A0B41B242FC3E56574D94D2ECBD37450DA0DB2BFD975383D4C2F83EC65769A0E2ACFE765D038CD66D7DB20F29BFD2E83CA",
		"0045000B915121551532F400008C050003000303EA2073FD9C0ED341EE3A9B1D06C1C3F274985E97BB8AF871194E2FD7E5A079DA4D07BDC7E370791CA683C675789A1CA687E920F7DB0D82CBDF6972D94D6781E675371D947683C675363C0C8AD7D3A0B7D99C1EA7C32072795E96D7DD7450FBCD66A7E9A0B03BDD06A5C9A0F29C0E6287C56F79BD0D",
	}
	parts, err := EncodeSubmit(Submit{Dest: "+15125551234", Payload: []byte(text)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != len(published) {
		t.Fatalf("%d parts, want %d", len(parts), len(published))
	}
	for i, p := range parts {
		want := mustHex(t, published[i])
		want[1] = 0x41 // TP-RD 0
		if !bytes.Equal(p.PDU, want) {
			t.Errorf("part %d\n got %X\nwant %X", i+1, p.PDU, want)
		}
	}
}

func TestDecodeSubmitGolden(t *testing.T) {
	for _, tc := range []struct {
		name, source, pdu string
		want              SubmitPDU
	}{
		{
			// [DF] the SMS-SUBMIT example.
			name: "hellohello", source: "DF",
			pdu:  "0011000B916407281553F80000AA0AE8329BFD4697D9EC37",
			want: SubmitPDU{Dest: "+46708251358", Validity: 96 * time.Hour, Text: "hellohello"},
		},
		{
			// [PGM] relative validity, status report requested, MR 13.
			name: "srr", source: "PGM",
			pdu:  "07911326040000F0310D0B911326880736F40000A90FF7FBDD454E87CDE1B0DB357EB701",
			want: SubmitPDU{MR: 13, Dest: "+31628870634", StatusReport: true, Validity: 72 * time.Hour, Text: "www.diafaan.com"},
		},
		{
			// [PGM] absolute validity period: 7 octets to skip.
			name: "absolute vp", source: "PGM",
			pdu: "0019000B917228001011F100003170013193008017D474BB3CA787DB70903DCC4E93D3F43C885E9ED301",
			want: SubmitPDU{Dest: "+27820001111", Text: "Timestamp validity test",
				ValidUntil: time.Date(2013, 7, 10, 13, 39, 0, 0, tz(2))},
		},
		{
			// [PGM] UCS2 "あ叶葉".
			name: "ucs2", source: "PGM",
			pdu:  "07914346466554F601000B914316565811F9000806304253F68449",
			want: SubmitPDU{Dest: "+34616585119", DCS: 8, Text: "あ叶葉"},
		},
		{
			// [PGM] 8-bit data.
			name: "8-bit", source: "PGM",
			pdu:  "0591721891F101000B917228214365F700040C48656C6C6F20776F726C6421",
			want: SubmitPDU{Dest: "+27821234567", DCS: 4, Data: []byte("Hello world!")},
		},
		{
			// accessvba.blogsky.com "decode SMS-SUBMIT": national number 1861
			// (TOA 0x81), MR 0x51, TP-VP 0xFF (63 weeks).
			name: "national", source: "accessvba.blogsky.com/1402/03/22/post-762/decode-SMS-SUBMIT",
			pdu:  "0891683108200805F01151048181160000FF16C8329BFD66B5F320B8BC4CA7E741F7B79C4D0E01",
			want: SubmitPDU{MR: 0x51, Dest: "1861", Validity: 63 * 7 * 24 * time.Hour, Text: "Hello,my pretty world!"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeSubmit(mustHex(t, tc.pdu))
			if err != nil {
				t.Fatalf("[%s] %v", tc.source, err)
			}
			w := tc.want
			if got.MR != w.MR || got.Dest != w.Dest || got.DCS != w.DCS || got.StatusReport != w.StatusReport ||
				got.Validity != w.Validity || got.Text != w.Text || !bytes.Equal(got.Data, w.Data) {
				t.Errorf("[%s] got %+v, want %+v", tc.source, got, w)
			}
			if !w.ValidUntil.IsZero() {
				sameTime(t, "ValidUntil", got.ValidUntil, w.ValidUntil)
			}
		})
	}
}

func TestDecodeDeliverGolden(t *testing.T) {
	for _, tc := range []struct {
		name, source, pdu string
		from, text        string
		scts              time.Time
		concat            *Concat
	}{
		{
			// [DF] the SMS-DELIVER example; sender TOA 0xC8 (not international).
			name: "hellohello", source: "DF",
			pdu:  "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37",
			from: "27838890001", text: "hellohello",
			scts: time.Date(1999, 3, 29, 15, 16, 59, 0, tz(2)),
		},
		{
			// [PGM] "Test2".
			name: "test2", source: "PGM",
			pdu:  "06917228195339040B917228214365F700003130805120618005D4F29C2E03",
			from: "+27821234567", text: "Test2",
			scts: time.Date(2013, 3, 8, 15, 2, 16, 0, tz(2)),
		},
		{
			// [PGM] a longer text, time zone +8.
			name: "long", source: "PGM",
			pdu:  "07915892000000F0040B915892214365F700007040213252242331493A283D0795C3F33C88FE06C9CB6132885EC6D341EDF27C1E3E97E7207B3A0C0A5241E377BB1D7693E72E",
			from: "+85291234567", text: "It is easy to read text messages via AT commands.",
			scts: time.Date(2007, 4, 12, 23, 25, 42, 0, tz(8)),
		},
		{
			// [PGM] extension characters and é.
			name: "extension", source: "PGM",
			pdu:  "06917228195339040B917228214365F70000313062315352800A800D8A5E98D337A910",
			from: "+27821234567", text: "@{tést}!",
			scts: time.Date(2013, 3, 26, 13, 35, 25, 0, tz(2)),
		},
		{
			// [PGM] UDH with an 8-bit concatenation element (ref 0xC3, 1 of
			// 1): the text starts after one fill bit.
			name: "udh fill bits", source: "PGM",
			pdu:  "0591721891F1400781721881F800003160526104848059050003C30101916536FB1DCABEEB2074D85E064941B19CAB060319A5C522289C96D3D3ED32286C0FA7D96131BBEC024941B19CAB0603DDD36C36A88C87A7E565D0DB0D82C55EB0DB4B068BCD5C20",
			from: "2781188", text: "Hello!You have R 19.50 FREE airtime available. R 19.50 will expire on 01/07/2013. ",
			scts:   time.Date(2013, 6, 25, 16, 40, 48, 0, tz(2)),
			concat: &Concat{Ref: 0xC3, Total: 1, Seq: 1},
		},
		{
			// [WH] "haha" (no SMSC field there; we add 00).
			name: "haha", source: "WH",
			pdu:  "00" + "040491361900005150713220052308C8303A8C0EA3C3",
			from: "+6391", text: "Hahahaha",
			scts: time.Date(2015, 5, 17, 23, 2, 50, 0, tz(8)),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DecodeDeliver(mustHex(t, tc.pdu))
			if err != nil {
				t.Fatalf("[%s] %v", tc.source, err)
			}
			if d.From != tc.from || d.Text != tc.text {
				t.Errorf("[%s] from %q text %q, want %q %q", tc.source, d.From, d.Text, tc.from, tc.text)
			}
			sameTime(t, "SCTS", d.SCTS, tc.scts)
			if (d.Concat == nil) != (tc.concat == nil) || d.Concat != nil && *d.Concat != *tc.concat {
				t.Errorf("Concat = %+v, want %+v", d.Concat, tc.concat)
			}
		})
	}
}

// [WH] "haha" encoded: EncodeDeliver must give the published octets.
func TestEncodeDeliverGolden(t *testing.T) {
	pdus, err := EncodeDeliver("+6391", "Hahahaha", time.Date(2015, 5, 17, 23, 2, 50, 0, tz(8)))
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex(t, "00"+"040491361900005150713220052308C8303A8C0EA3C3")
	if len(pdus) != 1 || !bytes.Equal(pdus[0], want) {
		t.Errorf("got %X, want %X", pdus, want)
	}
}

func TestStatusReportGolden(t *testing.T) {
	for _, tc := range []struct {
		name, source, pdu string
		want              StatusReport
		reencode          bool
	}{
		{
			// [AMRO] delivered (TP-ST 0).
			name: "amro", source: "AMRO",
			pdu: "00" + "06000B910221815716F2709021510121807090215101718000",
			want: StatusReport{MR: 0, Recipient: "+20121875612", Status: 0,
				SCTS:      time.Date(2007, 9, 12, 15, 10, 12, 0, tz(2)),
				Discharge: time.Date(2007, 9, 12, 15, 10, 17, 0, tz(2))},
			reencode: true,
		},
		{
			// [PGM] TP-MR 214, time zone +1, no SMSC.
			name: "mr 214", source: "PGM",
			pdu: "0006D60B911326880736F4111011719551401110117195714000",
			want: StatusReport{MR: 214, Recipient: "+31628870634", Status: 0,
				SCTS:      time.Date(2011, 1, 11, 17, 59, 15, 0, tz(1)),
				Discharge: time.Date(2011, 1, 11, 17, 59, 17, 0, tz(1))},
			reencode: true,
		},
		{
			// [AMRO] with a trailing TP-PI, TP-PID, TP-DCS, TP-UDL, TP-UD added
			// (23.040 §9.2.2.3 optional fields), which must be tolerated.
			name: "trailing pi", source: "AMRO + §9.2.2.3",
			pdu: "00" + "06000B910221815716F2709021510121807090215101718000" + "07000406" + "7265706F7274",
			want: StatusReport{MR: 0, Recipient: "+20121875612", Status: 0,
				SCTS:      time.Date(2007, 9, 12, 15, 10, 12, 0, tz(2)),
				Discharge: time.Date(2007, 9, 12, 15, 10, 17, 0, tz(2))},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pdu := mustHex(t, tc.pdu)
			r, err := DecodeStatusReport(pdu)
			if err != nil {
				t.Fatalf("[%s] %v", tc.source, err)
			}
			if r.MR != tc.want.MR || r.Recipient != tc.want.Recipient || r.Status != tc.want.Status {
				t.Errorf("[%s] got %+v, want %+v", tc.source, r, tc.want)
			}
			sameTime(t, "SCTS", r.SCTS, tc.want.SCTS)
			sameTime(t, "Discharge", r.Discharge, tc.want.Discharge)
			if !r.Delivered() || r.Temporary() {
				t.Errorf("TP-ST 0 must be Delivered and not Temporary")
			}
			if tc.reencode {
				enc, err := EncodeStatusReport(r.MR, r.Recipient, r.SCTS, r.Discharge, r.Status)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(enc, pdu) {
					t.Errorf("EncodeStatusReport\n got %X\nwant %X", enc, pdu)
				}
			}
		})
	}
}

// [PGM] TestGsm7 vectors: text -> packed septets (23.038 §6.1.2.1.1 packing).
func TestGSMPackingGolden(t *testing.T) {
	for _, tc := range []struct{ text, packed string }{
		{"hellohello", "E8329BFD4697D9EC37"}, // [DF]
		{"Hello World!", "C8329BFD065DDF72363904"},
		{"[{abc}]~", "1BDE0615168F37A98D6FD303"},
		{"a[]{}€", "E10D6FE3DBA036A94D19"},
		{"{åΦΓΛΩΠΨΣΘ€}", "1BD44332A1542C174C6653DEA400"},
		{"123456789012345678901234567890", "31D98C56B3DD7039584C36A3D56C375C0E1693CD6835DB0D9783" + "01"},
	} {
		septets, ok := gsmSeptets(nil, []rune(tc.text))
		if !ok {
			t.Fatalf("%q not GSM", tc.text)
		}
		got := make([]byte, septetOctets(len(septets)))
		packSeptets(got, septets, 0)
		if want := mustHex(t, tc.packed); !bytes.Equal(got, want) {
			t.Errorf("%q packed %X, want %X", tc.text, got, want)
		}
		if back := gsmText(unpackSeptets(got, len(septets), 0)); back != tc.text {
			t.Errorf("unpacked %q, want %q", back, tc.text)
		}
	}
}

// [PGM] TestSmsPduAddressFields: numeric, alphanumeric (TON 101) and local
// address fields.
func TestAddressGolden(t *testing.T) {
	for _, tc := range []struct{ addr, field string }{
		{"+9876543210", "0A918967452301"},
		{"+987654321", "099189674523F1"},
		{"+27829135934", "0B917228195339F4"},
		{"abc", "06D061F118"},
		{"FRANCOIS", "0ED04669D0397C26A7"},
		{"a[]{}€", "14D0E10D6FE3DBA036A94D19"},
	} {
		r := &reader{b: mustHex(t, tc.field)}
		got, err := r.address("TP-OA")
		if err != nil || got != tc.addr || r.off != len(r.b) {
			t.Errorf("decode %s = %q, %v (read %d), want %q", tc.field, got, err, r.off, tc.addr)
		}
		enc, err := appendOriginator(nil, tc.addr)
		if err != nil || !bytes.Equal(enc, mustHex(t, tc.field)) {
			t.Errorf("encode %q = %X, %v, want %s", tc.addr, enc, err, tc.field)
		}
	}
	// "0AA11092997856": TON national (0xA1) "0129998765" has no '+'.
	r := &reader{b: mustHex(t, "0AA11092997856")}
	if got, err := r.address("TP-OA"); err != nil || got != "0129998765" {
		t.Errorf("national = %q, %v", got, err)
	}
}

// [PGM] TestTimestamp and TestRelativeValidityPeriod.
func TestTimestampAndValidityGolden(t *testing.T) {
	for _, tc := range []struct {
		t   time.Time
		hex string
	}{
		{time.Date(2015, 11, 27, 0, 0, 0, 0, time.UTC), "51117200000000"},
		{time.Date(2015, 11, 27, 0, 0, 0, 0, tz(2)), "51117200000080"},
		{time.Date(2007, 4, 12, 23, 25, 42, 0, tz(8)), "70402132522423"},
		{time.Date(2007, 4, 12, 23, 25, 42, 0, tz(-8)), "7040213252242B"},
	} {
		if got := appendTimestamp(nil, tc.t); !bytes.Equal(got, mustHex(t, tc.hex)) {
			t.Errorf("encode %v = %X, want %s", tc.t, got, tc.hex)
		}
		r := &reader{b: mustHex(t, tc.hex)}
		got, err := r.timestamp("TP-SCTS")
		if err != nil {
			t.Fatal(err)
		}
		sameTime(t, tc.hex, got, tc.t)
	}
	for _, tc := range []struct {
		d  time.Duration
		vp byte
	}{
		{30 * time.Minute, 5}, {16 * time.Hour, 151}, {3 * 24 * time.Hour, 169}, {5 * 7 * 24 * time.Hour, 197},
	} {
		if got := encodeRelativeVP(tc.d); got != tc.vp {
			t.Errorf("VP(%v) = %d, want %d", tc.d, got, tc.vp)
		}
		if got := relativeVP(tc.vp); got != tc.d {
			t.Errorf("duration(%d) = %v, want %v", tc.vp, got, tc.d)
		}
	}
}

// [PGM] TestUdhConcatenation: 8-bit (ref 23, 1 of 3) and 16-bit (ref 384, 2
// of 4) concatenation elements.
func TestConcatIEGolden(t *testing.T) {
	if got := concatIE(23, false, 3, 1); !bytes.Equal(got[1:], mustHex(t, "0003170301")) {
		t.Errorf("8-bit IE %X", got)
	}
	if got := concatIE(384, true, 4, 2); !bytes.Equal(got[1:], mustHex(t, "080401800402")) {
		t.Errorf("16-bit IE %X", got)
	}
	c, err := parseUDH(mustHex(t, "080401800402"), 0)
	if err != nil || c == nil || *c != (Concat{Ref: 384, Total: 4, Seq: 2}) {
		t.Errorf("parse 16-bit IE = %+v, %v", c, err)
	}
}
