package sms

import (
	"strings"
	"testing"
)

func BenchmarkEncodeSubmitShortGSM(b *testing.B) {
	s := Submit{Dest: "+8613800138000", Payload: []byte("Your code is 123456. It expires in 5 minutes."), StatusReport: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeSubmit(s, 7); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSubmitLongUCS2(b *testing.B) {
	s := Submit{Dest: "+8613800138000", DataCoding: 8, Payload: utf16be(strings.Repeat("您的验证码是123456，五分钟内有效。", 20)), StatusReport: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeSubmit(s, 0x1234); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeStatusReport(b *testing.B) {
	pdu := mustHex(b, "0006D60B911326880736F4111011719551401110117195714000")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeStatusReport(pdu); err != nil {
			b.Fatal(err)
		}
	}
}
