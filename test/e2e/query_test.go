package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
)

// query_sm and cancel_sm (SMPP 3.4 §4.8, §4.9) over a real TCP session. The
// platform client has no such operations, so a small raw session sends them.

const (
	qCmdBindTX      = 0x00000002
	qCmdQuerySM     = 0x00000003
	qCmdCancelSM    = 0x00000008
	qCmdEnquireLink = 0x00000015
	qRespBit        = 0x80000000

	qRQueryFail  = 0x67
	qRCancelFail = 0x11
)

// querySession is a bound transmitter that sends one request at a time.
type querySession struct {
	t    *testing.T
	conn net.Conn
	seq  uint32
}

func dialQuerySession(t *testing.T, e *env, systemID, password string) *querySession {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(e.ctx, "tcp", e.gw.SMPPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if dl, ok := e.ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl) // the hang detector; never reached on success
	}
	r := &querySession{t: t, conn: conn}
	body := qcstr(nil, systemID)
	body = qcstr(body, password)
	body = qcstr(body, "")
	body = append(body, 0x34, 0, 0)
	body = qcstr(body, "")
	if status, _ := r.request(qCmdBindTX, body); status != 0 {
		t.Fatalf("bind as %s: status 0x%X", systemID, status)
	}
	return r
}

func qcstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

func (r *querySession) write(id, status, seq uint32, body []byte) {
	r.t.Helper()
	b := make([]byte, 16, 16+len(body))
	binary.BigEndian.PutUint32(b[0:], uint32(16+len(body)))
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], status)
	binary.BigEndian.PutUint32(b[12:], seq)
	if _, err := r.conn.Write(append(b, body...)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// request sends a PDU and returns its response's status and body,
// answering the gateway's enquire_link meanwhile.
func (r *querySession) request(id uint32, body []byte) (uint32, []byte) {
	r.t.Helper()
	r.seq++
	r.write(id, 0, r.seq, body)
	for {
		var h [16]byte
		if _, err := io.ReadFull(r.conn, h[:]); err != nil {
			r.t.Fatalf("read: %v", err)
		}
		n := binary.BigEndian.Uint32(h[0:])
		if n < 16 || n > 1<<16 {
			r.t.Fatalf("command_length %d", n)
		}
		rb := make([]byte, n-16)
		if _, err := io.ReadFull(r.conn, rb); err != nil {
			r.t.Fatalf("read: %v", err)
		}
		rid, status, seq := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
		switch {
		case rid == qCmdEnquireLink:
			r.write(qCmdEnquireLink|qRespBit, 0, seq, nil)
		case rid == id|qRespBit && seq == r.seq:
			return status, rb
		default:
			r.t.Fatalf("unexpected PDU 0x%08X seq %d while waiting for 0x%08X seq %d", rid, seq, id|qRespBit, r.seq)
		}
	}
}

// queryAnswer is a parsed query_sm_resp body (SMPP 3.4 §4.8.2).
type queryAnswer struct {
	Status    uint32
	MessageID string
	FinalDate string
	State     byte
	ErrorCode byte
}

func (r *querySession) query(id, source string) queryAnswer {
	r.t.Helper()
	body := qcstr(nil, id)
	body = append(body, 1, 1)
	status, rb := r.request(qCmdQuerySM, qcstr(body, source))
	q := queryAnswer{Status: status}
	if status != 0 {
		if len(rb) != 0 {
			r.t.Fatalf("query_sm_resp with status 0x%X has a body %X", status, rb)
		}
		return q
	}
	parts := strings.SplitN(string(rb), "\x00", 3)
	if len(parts) != 3 || len(parts[2]) != 2 {
		r.t.Fatalf("query_sm_resp body %X", rb)
	}
	q.MessageID, q.FinalDate, q.State, q.ErrorCode = parts[0], parts[1], parts[2][0], parts[2][1]
	return q
}

func (r *querySession) cancel(id, source, dest string) uint32 {
	r.t.Helper()
	body := qcstr(nil, "") // service_type
	body = qcstr(body, id)
	body = append(body, 1, 1)
	body = qcstr(body, source)
	body = append(body, 1, 1)
	status, rb := r.request(qCmdCancelSM, qcstr(body, dest))
	if len(rb) != 0 {
		r.t.Fatalf("cancel_sm_resp has a body %X", rb)
	}
	return status
}

// finalDate reads an absolute SMPP time in UTC (§7.1.1), to the second.
func qFinalDate(t *testing.T, s string) time.Time {
	t.Helper()
	if len(s) != 16 || s[13:] != "00+" {
		t.Fatalf("final_date %q is not an SMPP UTC time", s)
	}
	v, err := time.Parse("060102150405", s[:12])
	if err != nil {
		t.Fatalf("final_date %q: %v", s, err)
	}
	return v
}

// A platform polls a message: ENROUTE while its receipt is held at the
// carrier, DELIVERED with the final date once the receipt came. Another
// account asking about it learns nothing but ESME_RQUERYFAIL.
func TestQuerySMFollowsTheReceipt(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		e := startEnv(t, kind)
		mobile := e.smscs["mobile"]
		mobile.HoldReceipts(true)
		c := e.dial("platform", "secret", platform.BindTRX)
		before := time.Now().UTC().Truncate(time.Second)
		res, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "poll me", RegisteredDelivery: 1})
		if err != nil || res.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, res.Status)
		}
		q := dialQuerySession(t, e, "platform", "secret")
		if got := q.query(res.MessageID, "10690001"); got.Status != 0 || got.MessageID != res.MessageID ||
			got.State != 1 || got.FinalDate != "" {
			t.Fatalf("before the receipt: %+v, want ENROUTE (1) with no final_date", got)
		}
		other := dialQuerySession(t, e, "other", "pw2")
		if got := other.query(res.MessageID, ""); got.Status != qRQueryFail {
			t.Fatalf("another account's query: %+v, want ESME_RQUERYFAIL", got)
		}

		mobile.HoldReceipts(false)
		if r := e.nextReceipt(c); r.ID != res.MessageID || r.Stat != "DELIVRD" {
			t.Fatalf("receipt %+v", r.ReceiptFields)
		}
		got := q.query(res.MessageID, "")
		if got.Status != 0 || got.State != 2 || got.ErrorCode != 0 {
			t.Fatalf("after the receipt: %+v, want DELIVERED (2)", got)
		}
		if d := qFinalDate(t, got.FinalDate); d.Before(before) || d.After(time.Now().UTC()) {
			t.Fatalf("final_date %s outside the message's life (%s to now)", d, before)
		}
		if got := q.query(res.MessageID, "10690999"); got.Status != qRQueryFail {
			t.Fatalf("query with another source_addr: %+v, want ESME_RQUERYFAIL", got)
		}
		if got := other.query(res.MessageID, "10690001"); got.Status != qRQueryFail {
			t.Fatalf("another account's query after the receipt: %+v, want ESME_RQUERYFAIL", got)
		}
	})
}

// With every carrier refusing binds, messages wait for one slow modem. A
// platform cancels one still waiting: OK, a DELETED receipt, query_sm says
// DELETED, and the modem never sends it while it sends the others.
func TestCancelSMQueuedForModems(t *testing.T) {
	storeKinds(t, func(t *testing.T, kind string) {
		// One modem, three queue workers (modems+2): three messages keep
		// every worker busy for a few send delays, so a fourth waits in the
		// queue, unclaimed, until it is cancelled.
		sctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		sim, err := modemsim.Start(sctx, modemsim.Options{Name: "slow0", SendDelay: 1500 * time.Millisecond,
			ReportDelay: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sim.Close() })
		modems := fmt.Sprintf("modems:\n  - { name: slow0, device: %q, max_per_minute: 100000 }\n", sim.Path())
		e := startEnv(t, kind, withYAML(modems), withYAML(failoverYAML))
		for _, s := range e.smscs {
			s.RefuseBinds(0x0D) // ESME_RBINDFAIL
			s.CloseAll()
		}
		pollUntil(t, e, "every carrier marked down", func() bool {
			for _, cs := range carrierSetups {
				if e.gw.Health.State(cs.name) != proxy.StateDown {
					return false
				}
			}
			return true
		})
		pollUntil(t, e, "the modem up", func() bool {
			st := e.gw.Pool.Status()
			return len(st) == 1 && st[0].State == modem.StateUp
		})

		c := e.dial("platform", "secret", platform.BindTRX)
		var blockers []string // ids
		firstQueued := time.Now()
		for i := range 3 {
			r, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: fmt.Sprintf("blocker-%d", i)})
			if err != nil || r.Status != 0 {
				t.Fatalf("submit: %v 0x%X", err, r.Status)
			}
			blockers = append(blockers, r.MessageID)
		}
		target, err := c.Submit(e.ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "cancel me",
			RegisteredDelivery: 1})
		if err != nil || target.Status != 0 {
			t.Fatalf("submit: %v 0x%X", err, target.Status)
		}
		q := dialQuerySession(t, e, "platform", "secret")
		if got := q.query(target.MessageID, ""); got.Status != 0 || got.State != 1 {
			t.Fatalf("queued message: %+v, want ENROUTE", got)
		}
		other := dialQuerySession(t, e, "other", "pw2")
		if s := other.cancel(target.MessageID, "", ""); s != qRCancelFail {
			t.Fatalf("another account's cancel: 0x%X, want ESME_RCANCELFAIL", s)
		}
		if s := q.cancel(target.MessageID, "10690001", "13800138000"); s != 0 {
			t.Fatalf("cancel of a queued message: 0x%X, want OK", s)
		}
		// The margin the test relies on: well under one send delay.
		t.Logf("cancel answered %v after the first blocker was submitted (send delay 1.5s)", time.Since(firstQueued))
		if r := e.nextReceipt(c); r.ID != target.MessageID || r.Stat != "DELETED" {
			t.Fatalf("receipt %+v, want DELETED for %s", r.ReceiptFields, target.MessageID)
		}
		if got := q.query(target.MessageID, "10690001"); got.Status != 0 || got.State != 4 || got.FinalDate == "" {
			t.Fatalf("cancelled message: %+v, want DELETED (4) with a final_date", got)
		}
		if s := q.cancel(target.MessageID, "", ""); s != qRCancelFail {
			t.Fatalf("second cancel: 0x%X, want ESME_RCANCELFAIL", s)
		}

		// The queue drains: the blockers are sent, the cancelled one never.
		if _, err := sim.WaitSent(e.ctx, len(blockers)); err != nil {
			t.Fatalf("blockers not sent: %v", err)
		}
		pollUntil(t, e, "an empty modem queue", func() bool {
			depth, _, err := e.store.ModemQueue(e.ctx)
			return err == nil && depth == 0
		})
		for _, m := range sim.Sent() {
			if m.Text == "cancel me" {
				t.Fatal("the modem sent the cancelled message")
			}
		}
		if n := len(sim.Sent()); n != len(blockers) {
			t.Fatalf("modem sent %d messages, want %d", n, len(blockers))
		}
		// A message the modem sent (no receipt asked) cannot be cancelled,
		// and query_sm says the network accepted it.
		if s := q.cancel(blockers[0], "", ""); s != qRCancelFail {
			t.Fatalf("cancel of a sent message: 0x%X, want ESME_RCANCELFAIL", s)
		}
		if got := q.query(blockers[0], ""); got.Status != 0 || got.State != 6 || got.FinalDate == "" {
			t.Fatalf("message sent by modem without a receipt asked: %+v, want ACCEPTED (6)", got)
		}
	})
}

// waitFor polls cond until it holds, or fails the test when the
// environment's hang detector ends.
func pollUntil(t *testing.T, e *env, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-e.ctx.Done():
			t.Fatalf("never: %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
