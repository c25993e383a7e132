package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A body that parses is re-serialised, from its own message and TLVs, to the
// identical octets; nothing derived from it panics.
func FuzzParseShortMessage(f *testing.F) {
	f.Add(goldenSubmit(f, "04 4F60 597D", goldenTLVs))
	f.Add(goldenSubmit(f, "00", "0424 0005 "+hexs("hello")))
	f.Add(receiptBody(f, "66"+hexs(receiptText[:102]), "001E 0008 "+hexs("1234567")+"00 0427 0001 02"))
	f.Add(goldenSubmit(f, "20 4F60", ""))
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseShortMessage(body)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) || be.Status == statusOK || be.Field == "" {
				t.Fatalf("error %v is not a *BodyError with a status and a field", err)
			}
			return
		}
		if out := m.rebuildBody(body, m.Message, m.TLVs); !bytes.Equal(out, body) {
			t.Fatalf("rebuild differs:\n got %X\nwant %X", out, body)
		}
		_, _ = m.validateContent()
		_ = m.IsReceipt()
		id, _, _ := receiptID(m)
		rewritten := rewriteReceipt(m, body, "M1")
		m2, err := ParseShortMessage(rewritten)
		if err != nil {
			t.Fatalf("a rewritten receipt does not parse: %v", err)
		}
		if len(m2.TLVs) != len(m.TLVs) {
			t.Fatalf("rewrite changed the TLV count")
		}
		if id != "" && len(m.Message) <= 254 {
			if _, ok := m.TLV(tagReceiptedMessageID); ok {
				if got, _, _ := receiptID(m2); got != "M1" {
					t.Fatalf("receipt id %q after rewriting %q", got, id)
				}
			}
		}
	})
}

// readFrame never panics; a frame it returns is exactly the octets it read.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, cmdEnquireLink, 0, 1, nil))
	f.Add(appendFrame(nil, cmdSubmitSM, 0, 7, goldenSubmit(f, "02 4F60", "")))
	f.Add([]byte{0, 0, 0, 15, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 40, 0, 0, 0, 4})
	const maxLen = 4096
	f.Fuzz(func(t *testing.T, in []byte) {
		var hdr [headerLen]byte
		r := bytes.NewReader(in)
		fr, err := readFrame(r, maxLen, &hdr)
		var fe *FrameError
		switch {
		case err == nil:
			raw := appendFrame(nil, fr.ID, fr.Status, fr.Seq, fr.Body)
			if !bytes.HasPrefix(in, raw) || int(fr.Length) != len(raw) {
				t.Fatalf("frame %+v does not match the input", fr.Header)
			}
		case errors.As(err, &fe):
			if fe.Status != statusInvCmdLen || !fe.Fatal || (fe.Header.Length >= headerLen && fe.Header.Length <= maxLen) {
				t.Fatalf("frame error %v for command_length %d", err, fe.Header.Length)
			}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			if len(in) >= headerLen {
				if l := int(uint32(in[0])<<24 | uint32(in[1])<<16 | uint32(in[2])<<8 | uint32(in[3])); l <= len(in) {
					t.Fatalf("EOF with a whole frame of %d octets in %d", l, len(in))
				}
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// serverSeeds are PDU streams sent after a successful bind.
func serverSeeds(tb testing.TB) [][]byte {
	submit := goldenSubmit(tb, "02 4F60", "")
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	return [][]byte{
		cat(appendFrame(nil, cmdSubmitSM, 0, 2, submit), appendFrame(nil, cmdEnquireLink, 0, 3, nil)),
		cat(appendFrame(nil, cmdBindTransmitter, 0, 2, bindBody("platform", "secret")),
			appendFrame(nil, cmdUnbind, 0, 3, nil), appendFrame(nil, cmdEnquireLink, 0, 4, nil)),
		cat(appendFrame(nil, 0x00000999, 0, 2, []byte("junk")), appendFrame(nil, cmdEnquireLink, 0, 3, nil)),
		cat(appendFrame(nil, cmdSubmitSM, 0, 2, submit[:20]), appendFrame(nil, cmdSubmitSM, 0, 3, goldenSubmit(tb, "00", "0204 00"))),
		cat(appendFrame(nil, cmdQuerySM, 0, 2, []byte("id\x00\x00\x00\x00")), appendFrame(nil, cmdDeliverSM, 0, 3, submit),
			appendFrame(nil, cmdGenericNack, 0, 4, nil), appendFrame(nil, cmdSubmitSMResp, 0, 5, []byte{0})),
		cat(appendFrame(nil, cmdSubmitSM, 0, 2, goldenSubmit(tb, "03 05 0003", "")),
			appendFrame(nil, cmdSubmitSM, 0, 3, goldenSubmit(tb, "03 4F60 59", ""))),
		cat(appendFrame(nil, cmdEnquireLink, 0, 2, nil), []byte{0, 0, 0, 15, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9}),
		cat(appendFrame(nil, cmdSubmitSM, 0, 2, submit), []byte{0, 0, 0, 64, 0, 0, 0, 4}),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		cat(appendFrame(nil, cmdBindReceiver, 0, 1, bindBody("platform", "secret")), appendFrame(nil, cmdSubmitSM, 0, 2, submit)),
		cat(appendFrame(nil, cmdBindTransceiver, 0, 1, bindBody("platform", "nope")), appendFrame(nil, cmdEnquireLink, 0, 2, nil)),
		appendFrame(nil, cmdBindTransmitter, 0, 1, []byte("platform")),
	}
}

// A bound platform session fed arbitrary PDUs never panics and never leaves
// a request unanswered while the connection stays open: every request gets
// its response or a generic_nack, or the server closes.
func FuzzServerSession(f *testing.F) {
	for _, s := range serverSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		ts := newTestServer(t, ServerConfig{BodyTimeout: 50 * time.Millisecond, BindTimeout: time.Minute})
		defer ts.stop()
		p := ts.connect(t)
		defer p.conn.Close()
		// A stream that starts with a bind of its own (any body) exercises
		// the bind parser; any other is sent on a bound session.
		if len(stream) < 8 || !isBind(binary.BigEndian.Uint32(stream[4:])) {
			p.write(cmdBindTransceiver, 0, 1, bindBody("platform", "secret"))
			if fr := p.read(); fr.Status != statusOK {
				t.Fatalf("bind refused: %+v", fr.Header)
			}
		}

		// What the server must answer: the requests of the stream, up to the
		// first frame it cannot delimit.
		want := map[uint32][]uint32{} // seq -> command ids
		outstanding := 0
		var hdr [headerLen]byte
		for r := bytes.NewReader(stream); ; {
			fr, err := readFrame(r, 65536, &hdr)
			var fe *FrameError
			if errors.As(err, &fe) {
				// Answered generic_nack (id 0 | response bit), then closed.
				want[fe.Header.Seq] = append(want[fe.Header.Seq], 0)
				outstanding++
			}
			if err != nil {
				break
			}
			if !fr.IsResponse() {
				want[fr.Seq] = append(want[fr.Seq], fr.ID)
				outstanding++
			}
		}

		frames := make(chan Frame, 64)
		var readErr error // written by the reader before it closes frames
		go func() {
			defer close(frames)
			for {
				fr, err := p.tryRead()
				if err != nil {
					readErr = err
					return
				}
				frames <- fr
			}
		}()
		go func() {
			_ = p.conn.SetWriteDeadline(time.Now().Add(hangGuard))
			_, _ = p.conn.Write(stream) // fails once the server closes
		}()
		for outstanding > 0 {
			fr, ok := <-frames
			if !ok {
				var ne net.Error
				if errors.As(readErr, &ne) && ne.Timeout() {
					t.Fatalf("%d requests unanswered and the connection still open after %s", outstanding, hangGuard)
				}
				break // closed by the server: allowed
			}
			ids := want[fr.Seq]
			if !fr.IsResponse() || len(ids) == 0 {
				t.Fatalf("server sent %+v, not an answer to a request of ours", fr.Header)
			}
			// The response to that very command if there is one, else a
			// generic_nack may answer any request of that seq.
			i := slices.IndexFunc(ids, func(id uint32) bool { return fr.ID == id|cmdRespBit })
			if i < 0 && fr.ID == cmdGenericNack {
				// Prefer a command the server has no response of its own for.
				i = max(0, slices.IndexFunc(ids, func(id uint32) bool { return !answeredInKind[id] }))
			}
			if i < 0 {
				t.Fatalf("answer 0x%08X to seq %d, which carried %X", fr.ID, fr.Seq, ids)
			}
			want[fr.Seq] = append(ids[:i:i], ids[i+1:]...)
			outstanding--
		}
		if n := testutil.ToFloat64(metricPanics); n != 0 {
			t.Fatalf("%v panics in the server", n)
		}
	})
}

func isBind(id uint32) bool {
	return id == cmdBindTransceiver || id == cmdBindTransmitter || id == cmdBindReceiver
}

// answeredInKind are the requests the server answers with their own
// response PDU (the others get generic_nack).
var answeredInKind = map[uint32]bool{
	cmdBindTransceiver: true, cmdBindTransmitter: true, cmdBindReceiver: true, cmdSubmitSM: true,
	cmdQuerySM: true, cmdCancelSM: true, cmdReplaceSM: true, cmdSubmitMulti: true, cmdDataSM: true,
	cmdDeliverSM: true, cmdEnquireLink: true, cmdUnbind: true,
}

// legacySubmitBody never panics; what it returns parses, carries no
// optional parameters, and keeps the content (after any UDH it adds).
func FuzzLegacySubmitBody(f *testing.F) {
	f.Add(goldenSubmit(f, "04 4F60 597D", goldenTLVs))
	f.Add(goldenSubmit(f, "00", "0424 0005 "+hexs("hello")))
	f.Add(goldenSubmit(f, "03 616263", "020C 0002 0102 020E 0001 03 020F 0001 02"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		in, inErr := ParseShortMessage(body)
		out, ok := legacySubmitBody(body)
		if !ok || inErr != nil {
			return
		}
		m, err := ParseShortMessage(out)
		if err != nil {
			t.Fatalf("3.3 body does not parse: %v", err)
		}
		if len(m.TLVs) != 0 {
			t.Fatalf("optional parameters left")
		}
		content := in.Message
		if len(content) == 0 {
			content, _ = in.TLV(tagMessagePayload)
		}
		if in.UDHI() && len(content) > 0 {
			content = content[1:] // its header's length octet may grow with an element added
		}
		if len(in.TLVs) > 0 && !bytes.HasSuffix(m.Message, content) {
			t.Fatalf("content lost: % X from % X", m.Message, content)
		}
	})
}

// scInterfaceVersion never panics on a bind_resp body.
func FuzzSCInterfaceVersion(f *testing.F) {
	f.Add([]byte("SMSC\x00\x02\x10\x00\x01\x34"))
	f.Add([]byte("\x00\x02\x10\x00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if v, ok := scInterfaceVersion(body); !ok && v != 0 {
			t.Fatalf("version %#x without ok", v)
		}
	})
}

// The deliver_sm bodies an SMPP 3.3 platform gets for any body: each
// parses, carries no optional parameter, at most 254 octets of
// short_message and NULL schedule_delivery_time and validity_period; a
// series (a long message_payload) has one concatenation UDH per part with
// one reference, parts numbered 1..n of n, and its contents join to the
// payload's, cut on even octets in UCS2 and never between a GSM escape and
// its character.
func FuzzLegacyParts(f *testing.F) {
	long := bytes.Repeat([]byte{0x00, 0x41}, 200)
	f.Add(deliverBody("1390", 8, nil, []TLV{{Tag: tagMessagePayload, Value: long}}, "", ""), byte(8), byte(7))
	f.Add(deliverBody("1390", 0, nil, []TLV{{Tag: tagMessagePayload, Value: bytes.Repeat([]byte{'a', 0x1B}, 200)}}, "", "1"), byte(0), byte(1))
	f.Add(deliverBody("1390", 0, []byte("hi"), nil, "x", ""), byte(0), byte(0))
	f.Add([]byte{}, byte(0), byte(0))
	f.Fuzz(func(t *testing.T, body []byte, dc byte, ref byte) {
		if m, err := ParseShortMessage(body); err == nil && len(body) > m.smOffset-2 {
			body = bytes.Clone(body)
			body[m.smOffset-2] = dc // data_coding
		}
		parts := legacyParts(body, ref)
		orig, err := ParseShortMessage(body)
		if err != nil {
			if len(parts) != 1 || !bytes.Equal(parts[0], body) {
				t.Fatalf("a body that does not parse became %d parts", len(parts))
			}
			return
		}
		payload, hasPayload := orig.TLV(tagMessagePayload)
		if len(parts) == 1 {
			m, err := ParseShortMessage(parts[0])
			if err != nil {
				t.Fatalf("part does not parse: %v", err)
			}
			if m.ScheduleDelivery != "" || m.Validity != "" {
				t.Fatal("times not NULL")
			}
			return
		}
		if !hasPayload || len(orig.Message) != 0 || len(payload) <= 254 || len(parts) > 255 {
			t.Fatalf("%d parts for a body that needs none", len(parts))
		}
		var joined []byte
		for i, p := range parts {
			m, err := ParseShortMessage(p)
			if err != nil {
				t.Fatalf("part %d does not parse: %v", i+1, err)
			}
			if len(m.TLVs) != 0 || len(m.Message) > 254 || m.ESMClass&0x40 == 0 || m.ScheduleDelivery != "" || m.Validity != "" {
				t.Fatalf("part %d: %d TLVs, %d octets, esm_class 0x%02X", i+1, len(m.TLVs), len(m.Message), m.ESMClass)
			}
			udhl := int(m.Message[0])
			udh := m.Message[1 : 1+udhl]
			c := udh[len(udh)-5:]
			if c[0] != 0 || c[1] != 3 || c[2] != ref || int(c[3]) != len(parts) || int(c[4]) != i+1 {
				t.Fatalf("part %d concatenation element % X", i+1, c)
			}
			text := m.Message[1+udhl:]
			if i < len(parts)-1 {
				switch {
				case ucs2DataCoding(m.DataCoding) && len(text)%2 != 0:
					t.Fatalf("UCS2 part %d of %d octets", i+1, len(text))
				case gsm7DataCoding(m.DataCoding) && len(text) > 0 && text[len(text)-1] == 0x1B:
					esc := 0
					for j := len(text) - 1; j >= 0 && text[j] == 0x1B; j-- {
						esc++
					}
					if esc%2 == 1 && len(joined)+len(text) < len(payload) {
						// an odd run of escapes at the end: the last one's character is in the next part
						prefix := append(bytes.Clone(joined), text...)
						n := 0
						for k := 0; k < len(prefix); {
							if prefix[k] == 0x1B {
								k += 2
							} else {
								k++
							}
							n = k
						}
						if n != len(prefix) {
							t.Fatalf("part %d ends between an escape and its character", i+1)
						}
					}
				}
			}
			joined = append(joined, text...)
		}
		content := payload
		if orig.UDHI() {
			content = payload[1+int(payload[0]):]
		}
		if !bytes.Equal(joined, content) {
			t.Fatalf("parts join to %d octets, want the payload's %d", len(joined), len(content))
		}
	})
}
