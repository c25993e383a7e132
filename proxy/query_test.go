package proxy

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
)

// queryBody is a query_sm body (SMPP 3.4 §4.8.1).
func queryBody(q QueryRequest) []byte {
	b := cstring(nil, q.MessageID)
	b = append(b, q.SourceTON, q.SourceNPI)
	return cstring(b, q.Source)
}

// cancelBody is a cancel_sm body (SMPP 3.4 §4.9.1).
func cancelBody(c CancelRequest) []byte {
	b := cstring(nil, c.ServiceType)
	b = cstring(b, c.MessageID)
	b = append(b, c.SourceTON, c.SourceNPI)
	b = cstring(b, c.Source)
	b = append(b, c.DestTON, c.DestNPI)
	return cstring(b, c.Dest)
}

func TestParseQuerySM(t *testing.T) {
	good := unhex(t, hexs("0a1b2c3d4e5f60718293"), "00", "01 01", hexs("10690001"), "00")
	q, err := ParseQuerySM(good)
	if err != nil {
		t.Fatal(err)
	}
	if *q != (QueryRequest{MessageID: "0a1b2c3d4e5f60718293", SourceTON: 1, SourceNPI: 1, Source: "10690001"}) {
		t.Fatalf("parsed %+v", q)
	}
	long := string(bytes.Repeat([]byte("9"), 65))
	for _, c := range []struct {
		name   string
		body   []byte
		status uint32
	}{
		{"empty", nil, statusInvMsgLen},
		{"id without NUL", []byte("0a1b2c"), statusInvMsgLen},
		{"no source_addr_npi", unhex(t, hexs("id"), "00 01"), statusInvMsgLen},
		{"source_addr without NUL", unhex(t, hexs("id"), "00 01 01", hexs("1069")), statusInvMsgLen},
		{"octets after source_addr", append(bytes.Clone(good), 0), statusInvMsgLen},
		{"message_id of 65 octets", queryBody(QueryRequest{MessageID: long}), statusInvMsgID},
		{"source_addr of 21 octets", queryBody(QueryRequest{MessageID: "x", Source: long[:21]}), statusInvSrcAdr},
	} {
		_, err := ParseQuerySM(c.body)
		var be *BodyError
		if !errors.As(err, &be) || be.Status != c.status {
			t.Errorf("%s: error %v, want status 0x%X", c.name, err, c.status)
		}
	}
	// The longest fields that fit.
	if _, err := ParseQuerySM(queryBody(QueryRequest{MessageID: long[:64], Source: long[:20]})); err != nil {
		t.Fatalf("64-octet message_id and 20-octet source_addr: %v", err)
	}
}

func TestParseCancelSM(t *testing.T) {
	want := CancelRequest{ServiceType: "CMT", MessageID: "0a1b", SourceTON: 1, SourceNPI: 1, Source: "10690001",
		DestTON: 1, DestNPI: 1, Dest: "8613800138000"}
	body := unhex(t, hexs("CMT"), "00", hexs("0a1b"), "00", "01 01", hexs("10690001"), "00", "01 01",
		hexs("8613800138000"), "00")
	c, err := ParseCancelSM(body)
	if err != nil || *c != want {
		t.Fatalf("parsed %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		status uint32
	}{
		{"truncated in destination_addr", body[:len(body)-1], statusInvMsgLen},
		{"truncated before dest_addr_ton", body[:len(body)-len("8613800138000")-3], statusInvMsgLen},
		{"octets after destination_addr", append(bytes.Clone(body), 0, 0), statusInvMsgLen},
		{"service_type of 6 octets", cancelBody(CancelRequest{ServiceType: "ABCDEF"}), statusInvSerTyp},
		{"destination_addr of 21 octets", cancelBody(CancelRequest{Dest: "123456789012345678901"}), statusInvDstAdr},
	} {
		_, err := ParseCancelSM(tc.body)
		var be *BodyError
		if !errors.As(err, &be) || be.Status != tc.status {
			t.Errorf("%s: error %v, want status 0x%X", tc.name, err, tc.status)
		}
	}
}

// query_sm_resp bytes, golden (SMPP 3.4 §4.8.2, §7.1.1).
func TestQueryRespBodyGolden(t *testing.T) {
	done := time.Date(2025, 3, 5, 22, 30, 7, 380_000_000, time.FixedZone("CST", 8*3600))
	got := queryRespBody("0a1b", QueryResult{State: stateUndeliverable, FinalDate: done, ErrorCode: 11})
	want := unhex(t, hexs("0a1b"), "00", hexs("250305143007300+"), "00", "05", "0B")
	if !bytes.Equal(got, want) {
		t.Fatalf("body\n got %X\nwant %X", got, want)
	}
	got = queryRespBody("0a1b", QueryResult{State: stateEnroute})
	if want := unhex(t, hexs("0a1b"), "00", "00", "01", "00"); !bytes.Equal(got, want) {
		t.Fatalf("not final: body %X, want %X (empty final_date)", got, want)
	}
}

func TestQueryResultByState(t *testing.T) {
	done := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		m     store.Message
		state byte
		final bool
		err   byte
	}{
		{store.Message{State: store.StateSent}, stateEnroute, false, 0},
		{store.Message{State: store.StateQueued}, stateEnroute, false, 0},
		{store.Message{State: store.StateModemSent}, stateEnroute, false, 0},
		{store.Message{State: store.StateDone, FinalStat: "DELIVRD", FinalErr: "000", Done: done}, stateDelivered, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "UNDELIV", FinalErr: "069", Done: done}, stateUndeliverable, true, 69},
		{store.Message{State: store.StateDone, FinalStat: "UNDELIV", FinalErr: "500", Done: done}, stateUndeliverable, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "DELETED", Done: done}, stateDeleted, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "EXPIRED", Done: done}, stateExpired, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "REJECTD", Done: done}, stateRejected, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "ACCEPTD", Done: done}, stateAccepted, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "DELIVERED", Done: done}, stateUnknown, true, 0},
		{store.Message{State: store.StateDone, FinalStat: "ENROUTE", Done: done}, stateEnroute, false, 0},
		{store.Message{State: store.StateFailed, Created: done}, stateRejected, true, 0},
	} {
		r := queryResult(&c.m)
		if r.State != c.state || r.FinalDate.IsZero() == c.final || r.ErrorCode != c.err {
			t.Errorf("%s/%s err %q: got %+v, want state %d final %v error_code %d", c.m.State, c.m.FinalStat,
				c.m.FinalErr, r, c.state, c.final, c.err)
		}
	}
}

// Both parsers: an error is a *BodyError naming a field with a status;
// what parses encodes back to the same octets.
func FuzzParseQueryCancel(f *testing.F) {
	f.Add(queryBody(QueryRequest{MessageID: "0a1b2c3d4e5f60718293", SourceTON: 1, SourceNPI: 1, Source: "10690001"}))
	f.Add(cancelBody(CancelRequest{ServiceType: "CMT", MessageID: "0a1b", Source: "10690001", Dest: "8613800138000"}))
	f.Add([]byte{})
	f.Add([]byte("id\x00\x00\x00\x00"))
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	check := func(t *testing.T, err error) {
		var be *BodyError
		if !errors.As(err, &be) || be.Status == statusOK || be.Field == "" {
			t.Fatalf("error %v is not a *BodyError with a status and a field", err)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if q, err := ParseQuerySM(body); err != nil {
			check(t, err)
		} else if out := queryBody(*q); !bytes.Equal(out, body) {
			t.Fatalf("query_sm re-encoded %X, parsed from %X", out, body)
		}
		if c, err := ParseCancelSM(body); err != nil {
			check(t, err)
		} else if out := cancelBody(*c); !bytes.Equal(out, body) {
			t.Fatalf("cancel_sm re-encoded %X, parsed from %X", out, body)
		}
	})
}

// putTestMessage writes a message record of account in state st.
func putTestMessage(t *testing.T, st store.Store, d *Dispatcher, account string, mut func(m *store.Message)) *store.Message {
	t.Helper()
	body := goldenSubmit(t, "02 4F60", "")
	sm, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	m := &store.Message{ID: d.ids.Next(), Account: account, Source: sm.Source, Dest: "13800138000", Body: body,
		RegDeliv: sm.RegisteredDelivery, Priority: sm.Priority, State: store.StateSent, Created: time.Now()}
	if mut != nil {
		mut(m)
	}
	if err := st.PutMessage(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	return m
}

// bound connects a peer to ts and binds it.
func bound(t *testing.T, ts *testServer, bindID uint32) *peer {
	t.Helper()
	p := ts.connect(t)
	t.Cleanup(func() { _ = p.conn.Close() })
	p.write(bindID, 0, 1, bindBody("platform", "secret"))
	if f := p.read(); f.Status != statusOK {
		t.Fatalf("bind answer %+v", f.Header)
	}
	return p
}

// A platform asks about its messages and learns their state; about another
// account's, a stranger's id or with the wrong source, only ESME_RQUERYFAIL.
// Malformed bodies get their status and the session lives on.
func TestServerQuerySM(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	st := ts.disp.store
	enroute := putTestMessage(t, st, ts.disp, "platform", nil)
	done := time.Date(2025, 3, 5, 14, 30, 7, 0, time.UTC)
	delivered := putTestMessage(t, st, ts.disp, "platform", func(m *store.Message) {
		m.State, m.FinalStat, m.FinalErr, m.Done = store.StateDone, "DELIVRD", "000", done
	})
	others := putTestMessage(t, st, ts.disp, "someone-else", nil)
	p := bound(t, ts, cmdBindTransceiver)

	seq := uint32(1)
	ask := func(body []byte) Frame {
		t.Helper()
		seq++
		p.write(cmdQuerySM, 0, seq, body)
		f := p.read()
		if f.ID != cmdQuerySM|cmdRespBit || f.Seq != seq {
			t.Fatalf("answer %+v to query_sm seq %d", f.Header, seq)
		}
		return f
	}
	if f := ask(queryBody(QueryRequest{MessageID: enroute.ID, SourceTON: 1, SourceNPI: 1, Source: "10690001"})); f.Status != statusOK ||
		!bytes.Equal(f.Body, queryRespBody(enroute.ID, QueryResult{State: stateEnroute})) {
		t.Fatalf("query of a message with its carrier: %+v %X", f.Header, f.Body)
	}
	// Source left empty, TON/NPI different: still found.
	if f := ask(queryBody(QueryRequest{MessageID: delivered.ID, SourceTON: 5})); f.Status != statusOK ||
		!bytes.Equal(f.Body, unhex(t, hexs(delivered.ID), "00", hexs("250305143007000+"), "00", "02", "00")) {
		t.Fatalf("query of a delivered message: %+v %X", f.Header, f.Body)
	}
	for name, q := range map[string]QueryRequest{
		"another account's":  {MessageID: others.ID, Source: "10690001"},
		"unknown id":         {MessageID: "ffffffffffffffffffff"},
		"empty id":           {},
		"wrong source_addr":  {MessageID: enroute.ID, Source: "10690002"},
		"another's, no addr": {MessageID: others.ID},
	} {
		if f := ask(queryBody(q)); f.Status != statusQueryFail || len(f.Body) != 0 {
			t.Errorf("%s: answer %+v body %X, want ESME_RQUERYFAIL without a body", name, f.Header, f.Body)
		}
	}
	if f := ask([]byte(enroute.ID)); f.Status != statusInvMsgLen {
		t.Fatalf("unterminated message_id: %+v, want ESME_RINVMSGLEN", f.Header)
	}
	if f := ask(append(queryBody(QueryRequest{MessageID: enroute.ID}), 0)); f.Status != statusInvMsgLen {
		t.Fatalf("trailing octet: %+v, want ESME_RINVMSGLEN", f.Header)
	}
	p.write(cmdEnquireLink, 0, 99, nil)
	if f := p.read(); f.ID != cmdEnquireLinkResp || f.Seq != 99 {
		t.Fatalf("session did not live on: %+v", f.Header)
	}

	t.Run("receiver may not query", func(t *testing.T) {
		rx := bound(t, ts, cmdBindReceiver)
		rx.write(cmdQuerySM, 0, 2, queryBody(QueryRequest{MessageID: enroute.ID}))
		if f := rx.read(); f.ID != cmdQuerySM|cmdRespBit || f.Status != statusInvBndSts {
			t.Fatalf("answer %+v, want ESME_RINVBNDSTS", f.Header)
		}
	})
	t.Run("before bind", func(t *testing.T) {
		nb := ts.connect(t)
		defer nb.conn.Close()
		nb.write(cmdCancelSM, 0, 1, cancelBody(CancelRequest{MessageID: enroute.ID}))
		if f := nb.read(); f.ID != cmdCancelSM|cmdRespBit || f.Status != statusInvBndSts {
			t.Fatalf("answer %+v, want ESME_RINVBNDSTS", f.Header)
		}
	})
	t.Run("replace_sm stays unsupported", func(t *testing.T) {
		p.write(cmdReplaceSM, 0, 100, nil)
		if f := p.read(); f.ID != cmdReplaceSM|cmdRespBit || f.Status != statusInvCmdID {
			t.Fatalf("answer %+v, want ESME_RINVCMDID", f.Header)
		}
	})
}

// fakePool is a modem pool that records what it is asked to send.
type fakePool struct {
	mu   sync.Mutex
	sent []string
}

func (p *fakePool) SendUnless(_ context.Context, _ <-chan struct{}, id string, _ sms.Submit) (*modem.Sent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, id)
	return &modem.Sent{Modem: "fake", Refs: []int{1}}, nil
}
func (p *fakePool) Reports() <-chan modem.Report    { return nil }
func (p *fakePool) Incoming() <-chan modem.Incoming { return nil }
func (p *fakePool) Status() []modem.ModemStatus {
	return []modem.ModemStatus{{Name: "fake", State: modem.StateUp}}
}

func (p *fakePool) sentIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.sent...)
}

// cancel_sm takes a message out of the modem queue before a worker starts
// on it, and only then: the platform gets its DELETED receipt, the modem
// never sends it. The failover's workers are not running: each step is
// driven by the test.
func TestServerCancelSM(t *testing.T) {
	ts := newTestServer(t, ServerConfig{})
	t.Cleanup(ts.stop)
	// A store of its own: the test claims queue entries.
	st, err := store.OpenBolt(t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ts.disp.store = st
	pool := &fakePool{}
	fo := NewFailover(ts.disp, pool, FailoverConfig{}, zap.NewNop())
	ctx := context.Background()
	queued := func(account string) *store.Message {
		t.Helper()
		m := putTestMessage(t, st, ts.disp, account, nil)
		if err := fo.enqueue(ctx, m, "down", time.Now()); err != nil {
			t.Fatal(err)
		}
		return m
	}
	p := bound(t, ts, cmdBindTransmitter)
	seq := uint32(1)
	cancelSM := func(c CancelRequest) uint32 {
		t.Helper()
		seq++
		p.write(cmdCancelSM, 0, seq, cancelBody(c))
		f := p.read()
		if f.ID != cmdCancelSM|cmdRespBit || f.Seq != seq || len(f.Body) != 0 {
			t.Fatalf("answer %+v %X to cancel_sm seq %d", f.Header, f.Body, seq)
		}
		return f.Status
	}

	m := queued("platform")
	if s := cancelSM(CancelRequest{MessageID: m.ID, Source: "10690002"}); s != statusCancelFail {
		t.Fatalf("cancel with another source_addr: 0x%X, want ESME_RCANCELFAIL", s)
	}
	if s := cancelSM(CancelRequest{MessageID: m.ID, Dest: "13900000000"}); s != statusCancelFail {
		t.Fatalf("cancel with another destination_addr: 0x%X, want ESME_RCANCELFAIL", s)
	}
	if s := cancelSM(CancelRequest{Source: "10690001", Dest: "8613800138000"}); s != statusCancelFail {
		t.Fatalf("cancel-all without message_id: 0x%X, want ESME_RCANCELFAIL", s)
	}
	if s := cancelSM(CancelRequest{ServiceType: "CMT", MessageID: m.ID, SourceTON: 5, Source: "10690001",
		Dest: "8613800138000"}); s != statusOK {
		t.Fatalf("cancel of a queued message: 0x%X", s)
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "DELETED" || got.Done.IsZero() {
		t.Fatalf("record after cancel: %+v %v", got, err)
	}
	dels, err := st.PendingDeliveries(ctx, "platform", 10)
	if err != nil || len(dels) != 1 || dels[0].MsgID != m.ID || !bytes.Contains(dels[0].Body, []byte("stat:DELETED")) {
		t.Fatalf("deliveries after cancel: %v %v", dels, err)
	}
	if id, err := st.ClaimModem(ctx, "w", time.Minute); !errors.Is(err, store.ErrEmpty) {
		t.Fatalf("claimed %q (%v) after the cancel, want an empty queue", id, err)
	}
	if s := cancelSM(CancelRequest{MessageID: m.ID}); s != statusCancelFail {
		t.Fatalf("second cancel: 0x%X, want ESME_RCANCELFAIL", s)
	}

	// Another account's queued message: refused, untouched.
	other := queued("someone-else")
	if s := cancelSM(CancelRequest{MessageID: other.ID}); s != statusCancelFail {
		t.Fatalf("cancel of another account's message: 0x%X", s)
	}
	if got, _ := st.GetMessage(ctx, other.ID); got.State != store.StateQueued {
		t.Fatalf("another account's message is %s", got.State)
	}
	if id, err := st.ClaimModem(ctx, "w", time.Minute); err != nil || id != other.ID {
		t.Fatalf("claimed %q %v", id, err)
	}
	fo.processClaimed(ctx, other.ID)

	// Claimed by a worker, not started: the cancel wins, the worker drops it.
	m2 := queued("platform")
	if id, err := st.ClaimModem(ctx, "w", time.Minute); err != nil || id != m2.ID {
		t.Fatalf("claimed %q %v", id, err)
	}
	if s := cancelSM(CancelRequest{MessageID: m2.ID}); s != statusOK {
		t.Fatalf("cancel of a claimed, unstarted message: 0x%X", s)
	}
	fo.processClaimed(ctx, m2.ID)

	// Held by a worker of this process: refused.
	m3 := queued("platform")
	fo.cancelMu.Lock()
	fo.claimed = map[string]int{m3.ID: 1}
	fo.cancelMu.Unlock()
	if s := cancelSM(CancelRequest{MessageID: m3.ID}); s != statusCancelFail {
		t.Fatalf("cancel of a message a worker holds: 0x%X", s)
	}
	fo.cancelMu.Lock()
	fo.claimed = nil
	fo.cancelMu.Unlock()
	// Sent: too late.
	if id, err := st.ClaimModem(ctx, "w", time.Minute); err != nil || id != m3.ID {
		t.Fatalf("claimed %q %v", id, err)
	}
	fo.processClaimed(ctx, m3.ID)
	if s := cancelSM(CancelRequest{MessageID: m3.ID}); s != statusCancelFail {
		t.Fatalf("cancel of a message a modem sent: 0x%X", s)
	}
	if sent := pool.sentIDs(); len(sent) != 2 || sent[0] != other.ID || sent[1] != m3.ID {
		t.Fatalf("modem sent %v, want only %s and %s", sent, other.ID, m3.ID)
	}
}
