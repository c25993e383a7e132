package proxy

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/routing"
	"github.com/spareline/spareline/store"
)

// testServer is a northbound server with no carriers (every submit is
// answered by the dispatcher's no-route path) over a real store.
type testServer struct {
	srv    *Server
	disp   *Dispatcher
	cancel context.CancelFunc
}

var (
	boltOnce  sync.Once
	boltStore store.Store
	boltErr   error
)

// sharedBolt is one bbolt store for the package's server tests and fuzzers.
func sharedBolt(tb testing.TB) store.Store {
	tb.Helper()
	boltOnce.Do(func() {
		dir, err := tempDirForPackage()
		if err != nil {
			boltErr = err
			return
		}
		boltStore, boltErr = store.OpenBolt(dir, 0, nil)
	})
	if boltErr != nil {
		tb.Fatal(boltErr)
	}
	return boltStore
}

func newTestServer(tb testing.TB, cfg ServerConfig) *testServer {
	tb.Helper()
	router, err := routing.New("86", "cn", nil, "")
	if err != nil {
		tb.Fatal(err)
	}
	accts, err := NewAccounts([]config.Account{
		{SystemID: "platform", Password: "secret"},
		{SystemID: "fenced", Password: "secret", Allow: []string{"10.0.0.0/8"}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: sharedBolt(tb), Router: router, Health: nil, Log: cfg.Log})
	return &testServer{srv: NewServer(cfg, accts, d), disp: d, cancel: cancel}
}

// connect runs a server session on one end of a pipe and returns the other.
func (ts *testServer) connect(t testing.TB) *peer {
	a, b := net.Pipe()
	ts.srv.accept(a)
	tt, _ := t.(*testing.T)
	return &peer{t: tt, conn: b}
}

// connectTCP serves ts on a loopback TCP listener (the listener ends with
// the test) and returns a platform connected to it: what a real client
// sees on the wire.
func (ts *testServer) connectTCP(t *testing.T) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = ts.srv.Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-served })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &peer{t: t, conn: c}
}

// boundTCP is connectTCP, bound with bindID as account "platform".
func boundTCP(t *testing.T, ts *testServer, bindID uint32) *peer {
	t.Helper()
	p := ts.connectTCP(t)
	p.write(bindID, 0, 1, bindBody("platform", "secret"))
	if f := p.read(); f.ID != bindID|cmdRespBit || f.Status != statusOK {
		t.Fatalf("bind answer %+v", f.Header)
	}
	return p
}

// stop unbinds what is left and waits for every goroutine.
// boundTransmitter is a platform bound as a transmitter to a new test
// server, both ended with the test.
func boundTransmitter(t *testing.T) *peer {
	t.Helper()
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	return bound(t, ts, cmdBindTransmitter) // query_test.go
}

func (ts *testServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts.srv.Shutdown(ctx)
	ts.cancel()
	ts.disp.Wait()
}

// bindBody is a bind_* body (SMPP 3.4 §4.1.1).
func bindBody(systemID, password string) []byte {
	b := cstring(nil, systemID)
	b = cstring(b, password)
	b = cstring(b, "")        // system_type
	b = append(b, 0x34, 0, 0) // interface_version, addr_ton, addr_npi
	return cstring(b, "")     // address_range
}

func TestServerSessionStates(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	submit := goldenSubmit(t, "02 4F60", "")

	t.Run("submit before bind", func(t *testing.T) {
		p := ts.connect(t)
		defer p.conn.Close()
		p.write(cmdSubmitSM, 0, 1, submit)
		if f := p.read(); f.ID != cmdSubmitSMResp || f.Status != statusInvBndSts || f.Seq != 1 {
			t.Fatalf("answer %+v, want ESME_RINVBNDSTS", f.Header)
		}
	})
	t.Run("receiver may not submit", func(t *testing.T) {
		p := ts.connect(t)
		defer p.conn.Close()
		p.write(cmdBindReceiver, 0, 1, bindBody("platform", "secret"))
		if f := p.read(); f.ID != cmdBindReceiver|cmdRespBit || f.Status != statusOK {
			t.Fatalf("bind answer %+v", f.Header)
		}
		p.write(cmdSubmitSM, 0, 2, submit)
		if f := p.read(); f.ID != cmdSubmitSMResp || f.Status != statusInvBndSts || f.Seq != 2 {
			t.Fatalf("answer %+v, want ESME_RINVBNDSTS", f.Header)
		}
	})
	t.Run("bind twice", func(t *testing.T) {
		p := ts.connect(t)
		defer p.conn.Close()
		p.write(cmdBindTransceiver, 0, 1, bindBody("platform", "secret"))
		if f := p.read(); f.Status != statusOK {
			t.Fatalf("bind answer %+v", f.Header)
		}
		p.write(cmdBindTransmitter, 0, 2, bindBody("platform", "secret"))
		if f := p.read(); f.ID != cmdBindTransmitter|cmdRespBit || f.Status != statusAlyBnd || f.Seq != 2 {
			t.Fatalf("second bind answer %+v, want ESME_RALYBND", f.Header)
		}
		// Still bound and usable: the submit reaches the dispatcher (which
		// has no carrier for it).
		p.write(cmdSubmitSM, 0, 3, submit)
		if f := p.read(); f.ID != cmdSubmitSMResp || f.Status != statusInvDstAdr || f.Seq != 3 {
			t.Fatalf("submit answer %+v, want the no-route ESME_RINVDSTADR", f.Header)
		}
		p.write(0x0000ABCD, 0, 4, nil)
		if f := p.read(); f.ID != cmdGenericNack || f.Status != statusInvCmdID || f.Seq != 4 {
			t.Fatalf("unknown command answer %+v", f.Header)
		}
		p.write(cmdEnquireLink, 0, 5, nil)
		if f := p.read(); f.ID != cmdEnquireLinkResp || f.Seq != 5 {
			t.Fatalf("enquire_link answer %+v", f.Header)
		}
	})
	t.Run("bind from an address not allowed", func(t *testing.T) {
		p := ts.connect(t)
		defer p.conn.Close()
		p.write(cmdBindTransceiver, 0, 1, bindBody("fenced", "secret"))
		if f := p.read(); f.Status != statusBindFail {
			t.Fatalf("bind answer %+v, want ESME_RBINDFAIL", f.Header)
		}
		p.expectClosed()
	})
}

// A half-sent PDU on a platform session is cut after the server's
// BodyTimeout.
func TestServerSlowlorisCut(t *testing.T) {
	ts := newTestServer(t, ServerConfig{BodyTimeout: 30 * time.Millisecond})
	t.Cleanup(ts.stop)
	p := ts.connect(t)
	defer p.conn.Close()
	p.writeRaw(appendFrame(nil, cmdBindTransceiver, 0, 1, bindBody("platform", "secret"))[:20])
	p.expectClosed()
}

// Failed binds from one address are answered later and later (0, 250 ms,
// 500 ms... up to 5 s), each logged without the password.
func TestBindFailuresDelayedAndLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ts := newTestServer(t, ServerConfig{Log: zap.New(core)})
	t.Cleanup(ts.stop)
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000}
	var prev time.Duration = -1
	for i := range 25 {
		d := ts.srv.noteBindFailure(addr)
		if want := min(time.Duration(i)*250*time.Millisecond, 5*time.Second); d != want {
			t.Fatalf("failure %d delayed %v, want %v", i+1, d, want)
		}
		if d < prev {
			t.Fatalf("delay shrank from %v to %v", prev, d)
		}
		prev = d
	}
	if d := ts.srv.noteBindFailure(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 8), Port: 1}); d != 0 {
		t.Fatalf("another address inherited a delay of %v", d)
	}

	p := ts.connect(t)
	defer p.conn.Close()
	p.write(cmdBindTransceiver, 0, 1, bindBody("platform", "wrong-pw"))
	if f := p.read(); f.ID != cmdBindTransceiverR || f.Status != statusInvPaswd {
		t.Fatalf("bind answer %+v, want ESME_RINVPASWD", f.Header)
	}
	p.expectClosed()
	refused := logs.FilterMessage("platform bind refused").All()
	if len(refused) != 1 {
		t.Fatalf("%d refusal log lines, want 1", len(refused))
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if strings.Contains(k+" "+toString(v), "wrong-pw") {
				t.Fatalf("password logged: %v", e.ContextMap())
			}
		}
	}
	if m := refused[0].ContextMap(); m["system_id"] != "platform" || m["reason"] != "password" {
		t.Fatalf("refusal log fields %v", m)
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// submitWithTimes is a submit_sm body with the given schedule_delivery_time
// and validity_period (SMPP 3.4 §4.4.1).
func submitWithTimes(sched, validity string) []byte {
	b := []byte{0, 1, 1}
	b = cstring(b, "10690001")
	b = append(b, 1, 1)
	b = cstring(b, "8613800138000")
	b = append(b, 0, 0, 0) // esm_class, protocol_id, priority_flag
	b = cstring(b, sched)
	b = cstring(b, validity)
	b = append(b, 1, 0, 0, 0) // registered_delivery, replace_if_present, data_coding, sm_default_msg_id
	return append(b, 2, 'h', 'i')
}

// schedule_delivery_time and validity_period are checked against SMPP 3.4
// §7.1.1 (YYMMDDhhmmsstnnp, p one of + - R, or empty): a bad one is
// answered ESME_RINVSCHED / ESME_RINVEXPIRY at once, as an SMSC would,
// instead of being relayed (a carrier's refusal would read as transient and
// send the message by modem with no expiry at all).
func TestServerChecksSMPPTimes(t *testing.T) {
	p := boundTransmitter(t)
	const (
		invSched  = uint32(0x61) // ESME_RINVSCHED
		invExpiry = uint32(0x62) // ESME_RINVEXPIRY
		noRoute   = statusInvDstAdr
	)
	cases := []struct {
		sched, validity string
		want            uint32
	}{
		{"", "", noRoute},
		{"000001000000000R", "000002000000000R", noRoute},
		{"250314153000132+", "991231235959948-", noRoute},
		{"2503141530", "", invSched},        // 10 digits, no tnnp
		{"250314153000000X", "", invSched},  // p not + - R
		{"251314153000000+", "", invSched},  // month 13
		{"250300153000000+", "", invSched},  // day 0
		{"250314253000000+", "", invSched},  // hour 25
		{"250314156000000+", "", invSched},  // minute 60
		{"250314153000049+", "", invSched},  // 49 quarter hours
		{"300230120000000+", "", invSched},  // 30 February
		{"300431120000000+", "", invSched},  // 31 April
		{"", "290229120000000+", invExpiry}, // 29 February 2029
		{"280229120000000+", "", noRoute},   // 29 February 2028, a leap year
		{"301231235959000-", "", noRoute},   // 31 December
		{"", "25031415300000", invExpiry},   // 14 characters
		{"", "0000010000000a0R", invExpiry}, // not a digit
		{"", "2503141530000 0+", invExpiry}, // a space
		{"000001000000000R", "abcdefghijklmnop", invExpiry},
	}
	for i, tc := range cases {
		seq := uint32(i + 2)
		p.write(cmdSubmitSM, 0, seq, submitWithTimes(tc.sched, tc.validity))
		f := p.read()
		if f.ID != cmdSubmitSMResp || f.Seq != seq || f.Status != tc.want {
			t.Errorf("schedule %q validity %q: answer %+v, want status 0x%X", tc.sched, tc.validity, f.Header, tc.want)
		}
	}
}

// A submit_sm whose body ends inside a field (command_length too short for
// what it says) is ESME_RINVMSGLEN, as for query_sm and cancel_sm: the
// field's own status (ESME_RINVSERTYP for an empty body, ESME_RINVDSTADR for
// a body cut in destination_addr) would blame a value the platform never
// sent. A field that is terminated but too long keeps its own status.
func TestServerTruncatedSubmit(t *testing.T) {
	p := boundTransmitter(t)
	full := submitWithTimes("", "")
	dest := bytes.Index(full, []byte("8613800138000"))
	cases := []struct {
		name string
		body []byte
		want uint32
	}{
		{"no body", nil, statusInvMsgLen},
		{"cut in service_type", []byte("CM"), statusInvMsgLen},
		{"cut in destination_addr", full[:dest+4], statusInvMsgLen},
		{"destination_addr of 21 octets", append(append(append([]byte{}, full[:dest]...), strings.Repeat("1", 21)...),
			full[dest+13:]...), statusInvDstAdr},
	}
	for i, tc := range cases {
		seq := uint32(i + 2)
		p.write(cmdSubmitSM, 0, seq, tc.body)
		if f := p.read(); f.ID != cmdSubmitSMResp || f.Seq != seq || f.Status != tc.want {
			t.Errorf("%s: answer %+v, want status 0x%X", tc.name, f.Header, tc.want)
		}
	}
}

// sar_msg_ref_num, sar_total_segments and sar_segment_seqnum (SMPP 3.4
// §5.3.2.22-24) come together, with their lengths (2, 1, 1 octets) and
// 1 <= seqnum <= total; else ESME_RINVPARLEN, ESME_RMISSINGOPTPARAM or
// ESME_RINVOPTPARAMVAL, as an SMSC answers. Optional parameters spareline does
// not know pass whatever their length.
func TestServerChecksSARParameters(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	p := bound(t, ts, cmdBindTransmitter)
	const (
		invParLen   = uint32(0xC2) // ESME_RINVPARLEN
		missingOpt  = uint32(0xC3) // ESME_RMISSINGOPTPARAM
		invOptValue = uint32(0xC4) // ESME_RINVOPTPARAMVAL
		accepted    = statusInvDstAdr
	)
	cases := []struct {
		name string
		sm   string
		tlvs string
		want uint32
	}{
		{"segment 2 of 3", "02 4F60", "020C 0002 1234 020E 0001 03 020F 0001 02", accepted},
		{"one segment of one, in another order", "02 4F60", "020F 0001 01 020E 0001 01 020C 0002 0001", accepted},
		{"unknown parameters of any length", "02 4F60", "1400 0000 1401 0005 0102030405", accepted},
		{"message_payload with sm_length 0", "00", "0424 0004 4F60597D", accepted},
		{"sar_msg_ref_num of 1 octet", "02 4F60", "020C 0001 12 020E 0001 03 020F 0001 02", invParLen},
		{"sar_total_segments of 2 octets", "02 4F60", "020C 0002 1234 020E 0002 0003 020F 0001 02", invParLen},
		{"sar_segment_seqnum of 0 octets", "02 4F60", "020C 0002 1234 020E 0001 03 020F 0000", invParLen},
		{"no sar_segment_seqnum", "02 4F60", "020C 0002 1234 020E 0001 03", missingOpt},
		{"sar_total_segments 0", "02 4F60", "020C 0002 1234 020E 0001 00 020F 0001 01", invOptValue},
		{"segment 0", "02 4F60", "020C 0002 1234 020E 0001 03 020F 0001 00", invOptValue},
		{"segment 4 of 3", "02 4F60", "020C 0002 1234 020E 0001 03 020F 0001 04", invOptValue},
	}
	for i, tc := range cases {
		seq := uint32(i + 2)
		p.write(cmdSubmitSM, 0, seq, goldenSubmit(t, tc.sm, tc.tlvs))
		if f := p.read(); f.ID != cmdSubmitSMResp || f.Seq != seq || f.Status != tc.want {
			t.Errorf("%s: answer %+v, want status 0x%X", tc.name, f.Header, tc.want)
		}
	}
}
