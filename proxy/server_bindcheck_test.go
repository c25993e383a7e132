package proxy

import (
	"strings"
	"testing"
	"time"
)

// bindBodyWith is a bind_* body with the given system_type and
// address_range.
func bindBodyWith(systemID, password, systemType, addressRange string) []byte {
	b := cstring(nil, systemID)
	b = cstring(b, password)
	b = cstring(b, systemType)
	b = append(b, 0x34, 0, 0)
	return cstring(b, addressRange)
}

// A bind's system_type is at most 12 characters and its address_range at
// most 40 (SMPP 3.4 §4.1.1: 13 and 41 octets with the NUL). Longer ones
// were bound as if valid; they are refused (ESME_RINVSYSTYP, and
// ESME_RINVPARLEN for the address_range, which no status names), the
// connection closed as after any refused bind. The limits themselves
// still bind.
func TestServerBindFieldLengths(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	for _, tc := range []struct {
		name, systemType, addressRange string
		want                           uint32
	}{
		{"system_type of 12", strings.Repeat("s", 12), "", statusOK},
		{"system_type of 13", strings.Repeat("s", 13), "", statusInvSysTyp},
		{"address_range of 40", "", strings.Repeat("1", 40), statusOK},
		{"address_range of 41", "", strings.Repeat("1", 41), statusInvParLen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ts.connectTCP(t)
			p.write(cmdBindTransceiver, 0, 1, bindBodyWith("platform", "secret", tc.systemType, tc.addressRange))
			f := p.read()
			if f.ID != cmdBindTransceiver|cmdRespBit || f.Status != tc.want {
				t.Fatalf("bind answer %+v, want status %s", f.Header, StatusString(tc.want))
			}
			if tc.want != statusOK {
				p.expectClosed()
			}
		})
	}
}

// A platform connection that has sent nothing (not bound) gets no
// enquire_link: bind_timeout closes it. Seen at enquire_link (10 s) on
// connections that never bound. A bound session still gets them.
func TestServerNoEnquireLinkBeforeBind(t *testing.T) {
	ts := newTestServer(t, ServerConfig{EnquireLink: 10 * time.Millisecond, BindTimeout: 500 * time.Millisecond})
	t.Cleanup(ts.stop)
	p := ts.connectTCP(t)
	// The first thing the connection brings is its end (bind_timeout), not
	// an enquire_link (due after 10 ms).
	p.expectClosed()

	b := boundTCP(t, ts, cmdBindTransceiver)
	if f := b.read(); f.ID != cmdEnquireLink {
		t.Fatalf("bound session got %+v, want enquire_link", f.Header)
	}
}

// unbind is for a bound session (SMPP 3.4 §4.2): before the bind it gets
// ESME_RINVBNDSTS and the connection stays, so that the platform can still
// bind on it; a bound session's unbind is answered OK and closes it.
func TestServerUnbindBeforeBind(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	p := ts.connectTCP(t)
	p.write(cmdUnbind, 0, 1, nil)
	if f := p.read(); f.ID != cmdUnbindResp || f.Status != statusInvBndSts {
		t.Fatalf("unbind before bind: %+v, want unbind_resp ESME_RINVBNDSTS", f.Header)
	}
	p.write(cmdBindTransceiver, 0, 2, bindBodyWith("platform", "secret", "", ""))
	if f := p.read(); f.ID != cmdBindTransceiver|cmdRespBit || f.Status != statusOK {
		t.Fatalf("bind after the refused unbind: %+v", f.Header)
	}
	p.write(cmdUnbind, 0, 3, nil)
	if f := p.read(); f.ID != cmdUnbindResp || f.Status != statusOK {
		t.Fatalf("unbind when bound: %+v", f.Header)
	}
	p.expectClosed()
}

// A connection that sent something other than a bind (a stray
// enquire_link) gets no enquire_link of ours before it binds either.
func TestServerNoEnquireLinkToAConnectionThatNeverBound(t *testing.T) {
	ts := newTestServer(t, ServerConfig{EnquireLink: 10 * time.Millisecond, BindTimeout: 500 * time.Millisecond})
	t.Cleanup(ts.stop)
	p := ts.connectTCP(t)
	p.write(cmdEnquireLink, 0, 1, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp {
		t.Fatalf("got %+v, want enquire_link_resp", f.Header)
	}
	p.expectClosed() // bind_timeout, not an enquire_link 10 ms later
}
