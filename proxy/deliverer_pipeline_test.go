package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/routing"
	"github.com/spareline/spareline/store"
)

// fakeClock is a deliverer clock that moves only when the test says.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	ch      chan time.Time
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t.ch, func() bool { return false }
	}
	c.timers = append(c.timers, t)
	return t.ch, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves the clock on by d and fires the timers due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.ch <- c.now
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

// newIsolatedServer is newTestServer with a store of its own (no other
// test's deliveries), the deliverers on clk (nil: the real clock) and the
// platform sessions' response timeout rt (0: the default).
func newIsolatedServer(t *testing.T, clk clock, rt time.Duration) *testServer {
	t.Helper()
	router, err := routing.New("86", "cn", nil, "")
	if err != nil {
		t.Fatal(err)
	}
	accts, err := NewAccounts([]config.Account{{SystemID: "platform", Password: "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherConfig{Store: openTestBolt(t), Router: router})
	if clk != nil {
		d.deliverClock = clk
	}
	ts := &testServer{srv: NewServer(ServerConfig{ResponseTimeout: rt}, accts, d), disp: d, cancel: cancel}
	t.Cleanup(ts.stop)
	return ts
}

// deliverBody is a deliver_sm body from src with short_message sm and the
// given TLVs, in data_coding dc, with schedule_delivery_time sched and
// validity_period validity (NULL in a proper deliver_sm).
func deliverBody(src string, dc byte, sm []byte, tlvs []TLV, sched, validity string) []byte {
	b := cstring(nil, "")        // service_type
	b = append(b, 1, 1)          // source ton, npi
	b = cstring(b, src)          // source_addr
	b = append(b, 0, 0)          // dest ton, npi
	b = cstring(b, "10690001")   // destination_addr
	b = append(b, 0, 0, 0)       // esm_class, protocol_id, priority_flag
	b = cstring(b, sched)        // schedule_delivery_time
	b = cstring(b, validity)     // validity_period
	b = append(b, 0, 0, dc, 0)   // registered_delivery, replace, data_coding, sm_default_msg_id
	b = append(b, byte(len(sm))) // sm_length
	b = append(b, sm...)
	for _, t := range tlvs {
		b = binary.BigEndian.AppendUint16(b, t.Tag)
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b
}

// hold stores a delivery for "platform" (a receipt of msgID when set).
func hold(t *testing.T, ts *testServer, body []byte, msgID string) *store.Delivery {
	t.Helper()
	del := &store.Delivery{ID: ts.disp.ids.Next(), Account: "platform", Body: body, MsgID: msgID, Created: time.Now()}
	if err := ts.disp.store.AddDelivery(context.Background(), del, nil); err != nil {
		t.Fatal(err)
	}
	return del
}

// deliverSync returns once the account's deliverer has taken every answer
// that came and sent what it would send now.
func deliverSync(t *testing.T, d *Dispatcher, account string) {
	t.Helper()
	d.deliverMu.Lock()
	dl := d.deliverers[account]
	d.deliverMu.Unlock()
	if dl == nil {
		t.Fatal("no deliverer for " + account)
	}
	done := make(chan struct{})
	select {
	case dl.syncReq <- func() { close(done) }:
	case <-time.After(hangGuard):
		t.Fatal("deliverer not responding")
	}
	<-done
}

// noDeliverSM asserts the platform gets no deliver_sm before the answer to
// an enquire_link it sends now: whatever the gateway queued for the
// session before (the deliverer queues its requests itself) comes first on
// the wire.
func noDeliverSM(t *testing.T, p *peer, seq uint32, when string) {
	t.Helper()
	p.write(cmdEnquireLink, 0, seq, nil)
	for {
		f := p.read()
		switch f.ID {
		case cmdEnquireLinkResp:
			if f.Seq == seq {
				return
			}
		case cmdDeliverSM:
			sm, _ := ParseShortMessage(f.Body)
			var text []byte
			if sm != nil {
				text = sm.Message
			}
			t.Fatalf("%s: the platform got a deliver_sm (%q)", when, text)
		case cmdEnquireLink:
			p.write(cmdEnquireLinkResp, 0, f.Seq, nil)
		}
	}
}

// readDeliverSM reads the next deliver_sm (answering the gateway's
// enquire_links) and returns it with its short_message.
func readDeliverSM(t *testing.T, p *peer) (Frame, *ShortMessage) {
	t.Helper()
	for {
		f := p.read()
		if f.ID == cmdEnquireLink {
			p.write(cmdEnquireLinkResp, 0, f.Seq, nil)
			continue
		}
		if f.ID != cmdDeliverSM {
			t.Fatalf("platform got %+v, want deliver_sm", f.Header)
		}
		sm, err := ParseShortMessage(f.Body)
		if err != nil {
			t.Fatal(err)
		}
		return f, sm
	}
}

// A deliver_sm the platform does not answer holds back no other delivery
// of the account: the receipts that come while it waits for its answer
// reach the platform and leave the store, and the unanswered one is not
// sent again meanwhile. A round of deliveries waited for its slowest
// answer (the response timeout), and every receipt of the account with it.
func TestUnansweredDeliveryHoldsBackNoOther(t *testing.T) {
	ts := newIsolatedServer(t, nil, time.Minute) // the unanswered one times out long after the test
	stuck := hold(t, ts, deliverBody("13900000000", 0, []byte("stuck"), nil, "", ""), "")
	p := boundTCP(t, ts, cmdBindReceiver)
	if _, sm := readDeliverSM(t, p); string(sm.Message) != "stuck" {
		t.Fatalf("first deliver_sm %q, want the held one", sm.Message)
	}
	// Never answered. Receipts of 20 messages come meanwhile.
	var others []*store.Delivery
	for i := range 20 {
		msgID := fmt.Sprintf("M%02d", i)
		others = append(others, hold(t, ts, deliverBody("13800000000", 0, []byte("id:"+msgID+" stat:DELIVRD"), nil, "", ""), msgID))
		ts.disp.kickDeliveries("platform")
	}
	for got := 0; got < len(others); got++ {
		f, sm := readDeliverSM(t, p)
		if string(sm.Message) == "stuck" {
			t.Fatalf("the unanswered deliver_sm was sent again while in flight, after %d of the others", got)
		}
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	}
	waitCond(t, "the answered receipts removed from the store", func() bool {
		for _, del := range others {
			if pendingHas(t, ts.disp.store, del.ID) {
				return false
			}
		}
		return true
	})
	if !pendingHas(t, ts.disp.store, stuck.ID) {
		t.Fatal("the unanswered delivery left the store")
	}
}

// A platform that answers ESME_RTHROTTLED (or ESME_RMSGQFUL) gets nothing
// for a pause (1 s, then 2 s while it keeps saying so, back to 1 s once it
// took one), not even deliveries that came meanwhile, and the refused one
// again after the pause, first and alone until it takes one. spareline
// resent everything at once, every time something else was taken.
func TestThrottledPlatformGetsAPause(t *testing.T) {
	clk := newFakeClock()
	ts := newIsolatedServer(t, clk, 0)
	d := ts.disp
	hold(t, ts, deliverBody("13900000001", 0, []byte("A"), nil, "", ""), "")
	p := boundTCP(t, ts, cmdBindReceiver)
	seq := uint32(100)
	quiet := func(when string) {
		t.Helper()
		deliverSync(t, d, "platform")
		seq++
		noDeliverSM(t, p, seq, when)
	}
	f, sm := readDeliverSM(t, p)
	if string(sm.Message) != "A" {
		t.Fatalf("got %q, want A", sm.Message)
	}
	p.write(cmdDeliverSMResp, statusThrottled, f.Seq, nil)
	seq++
	noDeliverSM(t, p, seq, "right after ESME_RTHROTTLED") // the answer is read before this one
	deliverSync(t, d, "platform")                         // and taken
	// Deliveries that come during the pause wait for its end.
	hold(t, ts, deliverBody("13900000002", 0, []byte("B"), nil, "", ""), "")
	hold(t, ts, deliverBody("13900000003", 0, []byte("C"), nil, "", ""), "")
	d.kickDeliveries("platform")
	quiet("new deliveries during the pause")
	clk.Advance(throttlePauseFirst - time.Millisecond)
	quiet("just before the end of the first pause")
	clk.Advance(time.Millisecond)
	deliverSync(t, d, "platform")
	// After the pause: A alone (the others wait for the platform to take
	// one), refused again, by a generic_nack with ESME_RMSGQFUL.
	f, sm = readDeliverSM(t, p)
	if string(sm.Message) != "A" {
		t.Fatalf("after the pause the platform got %q, want A first", sm.Message)
	}
	quiet("while the first delivery after the pause is unanswered")
	p.write(cmdGenericNack, statusMsgQFul, f.Seq, nil)
	seq++
	noDeliverSM(t, p, seq, "right after the second refusal")
	deliverSync(t, d, "platform")
	clk.Advance(2*throttlePauseFirst - time.Millisecond)
	quiet("before the end of the second pause (twice the first)")
	clk.Advance(time.Millisecond)
	deliverSync(t, d, "platform")
	f, sm = readDeliverSM(t, p)
	if string(sm.Message) != "A" {
		t.Fatalf("after the second pause the platform got %q, want A", sm.Message)
	}
	p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	// Taken: the others follow at once.
	var texts []string
	for range 2 {
		f, sm := readDeliverSM(t, p)
		texts = append(texts, string(sm.Message))
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	}
	if slices.Sort(texts); !slices.Equal(texts, []string{"B", "C"}) {
		t.Fatalf("after A was taken the platform got %v, want B and C", texts)
	}
	// Taken: the back-off starts again from the first pause.
	hold(t, ts, deliverBody("13900000004", 0, []byte("D"), nil, "", ""), "")
	d.kickDeliveries("platform")
	f, sm = readDeliverSM(t, p)
	if string(sm.Message) != "D" {
		t.Fatalf("got %q, want D", sm.Message)
	}
	p.write(cmdDeliverSMResp, statusThrottled, f.Seq, nil)
	seq++
	noDeliverSM(t, p, seq, "right after D was refused")
	deliverSync(t, d, "platform")
	clk.Advance(throttlePauseFirst - time.Millisecond)
	quiet("before the end of the pause after the platform took the others")
	clk.Advance(time.Millisecond)
	deliverSync(t, d, "platform")
	f, sm = readDeliverSM(t, p)
	if string(sm.Message) != "D" {
		t.Fatalf("got %q, want D again", sm.Message)
	}
	p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	waitCond(t, "every delivery taken and removed", func() bool {
		n, err := d.store.CountDeliveries(context.Background(), "platform")
		return err == nil && n == 0
	})
}

// The MO messages of one handset reach the platform in the order they were
// stored, each once the one before it was taken, even when the platform
// refuses one for now; another handset's flow meanwhile. Each MO was sent
// on its own, all at once: STOP and START, or the parts of a long message,
// came in any order.
func TestMOFromOneHandsetKeepTheirOrder(t *testing.T) {
	clk := newFakeClock()
	ts := newIsolatedServer(t, clk, 0)
	for i := range 10 {
		hold(t, ts, deliverBody("13900000001", 0, fmt.Appendf(nil, "x%d", i), nil, "", ""), "")
		if i%2 == 0 {
			hold(t, ts, deliverBody("13900000002", 0, fmt.Appendf(nil, "y%d", i/2), nil, "", ""), "")
		}
	}
	p := boundTCP(t, ts, cmdBindReceiver)
	var x, y []string
	refused := false
	for len(x) < 10 || len(y) < 5 {
		f, sm := readDeliverSM(t, p)
		text := string(sm.Message)
		if text == "x0" && !refused {
			refused = true
			p.write(cmdDeliverSMResp, statusRXTAppn, f.Seq, nil)
			continue
		}
		if text[0] == 'x' && len(x) == 0 && text != "x0" {
			t.Fatalf("%s reached the platform before x0 was taken", text)
		}
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
		if text[0] == 'x' {
			x = append(x, text)
		} else {
			y = append(y, text)
		}
		if len(y) == 5 && len(x) == 0 {
			// The other handset's are all taken while x0 waits for its
			// retry; now its time comes.
			deliverSync(t, ts.disp, "platform")
			clk.Advance(deliveryRetryPause)
		}
	}
	if want := []string{"x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"}; !slices.Equal(x, want) {
		t.Errorf("handset 1's MO taken in the order %v, want %v", x, want)
	}
	if want := []string{"y0", "y1", "y2", "y3", "y4"}; !slices.Equal(y, want) {
		t.Errorf("handset 2's MO taken in the order %v, want %v", y, want)
	}
}

// bindBodyVersion is bindBody with interface_version v.
func bindBodyVersion(systemID, password string, v byte) []byte {
	b := bindBody(systemID, password)
	b[len(systemID)+1+len(password)+1+1] = v
	return b
}

// An MO message longer than 254 octets (in message_payload) reaches an SMPP
// 3.3 platform, which knows no optional parameters, as a concatenated
// series of deliver_sm (TS 23.040 §9.2.3.24.1 UDH, esm_class 0x40), each of
// at most 254 octets, cut between characters (not inside a UCS2 surrogate
// pair), each sent once the one before was taken; refused midway, the
// series comes again whole with the same reference; the delivery leaves
// the store once its last part was taken. It was sent as one deliver_sm
// with sm_length 0 and the payload in an optional parameter the platform
// cannot read.
func TestLongMOToSMPP33PlatformIsConcatenated(t *testing.T) {
	clk := newFakeClock()
	ts := newIsolatedServer(t, clk, 0)
	var payload []byte
	for range 123 {
		payload = append(payload, 0x00, 0x41)
	}
	payload = append(payload, 0xD8, 0x3D, 0xDE, 0x00) // U+1F600 across octet 248
	for len(payload) < 600 {
		payload = append(payload, 0x4F, 0x60)
	}
	del := hold(t, ts, deliverBody("13900000001", 8, nil, []TLV{{Tag: tagMessagePayload, Value: payload}}, "", ""), "")
	p := ts.connectTCP(t)
	p.write(cmdBindReceiver, 0, 1, bindBodyVersion("platform", "secret", 0x33))
	if f := p.read(); f.ID != cmdBindReceiver|cmdRespBit || f.Status != statusOK {
		t.Fatalf("bind answer %+v", f.Header)
	}
	seq := uint32(100)
	type part struct {
		ref, total, n byte
		text          []byte
	}
	next := func() (Frame, part) {
		t.Helper()
		f, sm := readDeliverSM(t, p)
		if len(sm.TLVs) != 0 || sm.ESMClass&0x40 == 0 || sm.DataCoding != 8 {
			t.Fatalf("part with %d TLVs, esm_class 0x%02X, data_coding %d; want none, UDHI, 8", len(sm.TLVs), sm.ESMClass, sm.DataCoding)
		}
		m := sm.Message
		if len(m) > 254 || len(m) < 6 || !bytes.Equal(m[:3], []byte{5, 0, 3}) {
			t.Fatalf("part short_message % X..., want a concatenation UDH and at most 254 octets", m[:min(len(m), 8)])
		}
		// The next part is not sent before this one is answered.
		deliverSync(t, ts.disp, "platform")
		seq++
		noDeliverSM(t, p, seq, fmt.Sprintf("part %d unanswered", m[5]))
		return f, part{ref: m[3], total: m[4], n: m[5], text: m[6:]}
	}
	f, p1 := next()
	if p1.n != 1 || p1.total != 3 {
		t.Fatalf("first part %d of %d, want 1 of 3", p1.n, p1.total)
	}
	p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	f, p2 := next()
	if p2.n != 2 || p2.ref != p1.ref {
		t.Fatalf("second part %d ref %d, want 2 ref %d", p2.n, p2.ref, p1.ref)
	}
	p.write(cmdDeliverSMResp, statusRXTAppn, f.Seq, nil) // later, please
	seq++
	noDeliverSM(t, p, seq, "part 2 refused") // the refusal is read before this
	deliverSync(t, ts.disp, "platform")      // and taken
	clk.Advance(deliveryRetryPause)
	var got []byte
	for want := byte(1); want <= 3; want++ {
		f, pt := next()
		if pt.n != want || pt.total != 3 || pt.ref != p1.ref {
			t.Fatalf("part %d of %d ref %d, want %d of 3 ref %d", pt.n, pt.total, pt.ref, want, p1.ref)
		}
		if len(pt.text)%2 != 0 || pt.text[len(pt.text)-2] >= 0xD8 && pt.text[len(pt.text)-2] <= 0xDB {
			t.Fatalf("part %d cut inside a UCS2 character: ends % X", want, pt.text[len(pt.text)-2:])
		}
		got = append(got, pt.text...)
		if want == 3 && !pendingHas(t, ts.disp.store, del.ID) {
			t.Fatal("the delivery left the store before its last part was taken")
		}
		p.write(cmdDeliverSMResp, statusOK, f.Seq, []byte{0})
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("parts join to % X, want % X", got, payload)
	}
	waitCond(t, "the delivery removed once every part was taken", func() bool {
		return !pendingHas(t, ts.disp.store, del.ID)
	})
}

// splitContent cuts between characters: GSM 7-bit not between an escape
// and its character, GBK not inside a two-octet character, UCS2 not inside
// a surrogate pair; 8-bit data anywhere.
func TestSplitContentOnCharacterBoundaries(t *testing.T) {
	rep := func(b []byte, n int) []byte { return bytes.Repeat(b, n) }
	cases := []struct {
		name    string
		dc      byte
		content []byte
		lens    []int
	}{
		{"gsm escape at the cut", 0, append(append(rep([]byte("a"), 9), 0x1B, 0x65), rep([]byte("b"), 5)...), []int{9, 7}},
		{"gsm escape before the cut", 0, append(append(rep([]byte("a"), 8), 0x1B, 0x65), rep([]byte("b"), 6)...), []int{10, 6}},
		{"gbk", 15, append([]byte("a"), rep([]byte{0xB0, 0xA1}, 8)...), []int{9, 8}},
		{"ucs2 surrogate at the cut", 8, append(append(rep([]byte{0, 0x41}, 4), 0xD8, 0x3D, 0xDE, 0x00), rep([]byte{0, 0x41}, 2)...), []int{8, 8}},
		{"ucs2 odd room", 8, rep([]byte{0, 0x41}, 8), []int{10, 6}},
		{"8-bit", 4, rep([]byte{0x1B}, 15), []int{10, 5}},
	}
	for _, c := range cases {
		room := 10
		if c.name == "ucs2 surrogate at the cut" {
			room = 11
		}
		var lens []int
		var joined []byte
		for _, p := range splitContent(c.dc, c.content, room) {
			lens = append(lens, len(p))
			joined = append(joined, p...)
		}
		if !slices.Equal(lens, c.lens) || !bytes.Equal(joined, c.content) {
			t.Errorf("%s: parts of %v octets, want %v", c.name, lens, c.lens)
		}
	}
}

// A carrier's deliver_sm with schedule_delivery_time or validity_period set
// (SMPP 3.4 §4.6.1: NULL in a deliver_sm) reaches the platform with both
// NULL, on a 3.4 and a 3.3 session alike; every other field as it came.
func TestDeliverSMTimesAreNull(t *testing.T) {
	body := deliverBody("13900000001", 8, []byte{0x4F, 0x60}, []TLV{{Tag: 0x020A, Value: []byte{0, 1}}},
		"260101000000000+", "000001000000000R")
	orig, err := ParseShortMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string][]byte{"platformBody": platformBody(body), "legacyBody": legacyBody(body),
		"legacyParts": legacyParts(body, 1)[0]} {
		m, err := ParseShortMessage(out)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.ScheduleDelivery != "" || m.Validity != "" {
			t.Errorf("%s: schedule_delivery_time %q validity_period %q, want both NULL", name, m.ScheduleDelivery, m.Validity)
		}
		if m.Source != orig.Source || m.Dest != orig.Dest || m.DataCoding != orig.DataCoding || m.ESMClass != orig.ESMClass ||
			!bytes.Equal(m.Message, orig.Message) {
			t.Errorf("%s: %+v, want the fields of %+v", name, m, orig)
		}
	}
}

// One receiver session of an account throttles (an overloaded node of the
// platform's cluster) and another takes everything: the deliveries go to
// the one that takes them, whatever the order the two bound in. The pause
// was the account's: the refused delivery kept going back to the
// throttling session, and the healthy one got nothing.
func TestOneThrottlingSessionDoesNotStarveTheOther(t *testing.T) {
	ts := newIsolatedServer(t, nil, 0)
	const n = 10
	for i := range n {
		hold(t, ts, deliverBody(fmt.Sprintf("1390000%04d", i), 0, []byte(fmt.Sprintf("R%02d", i)), nil, "", ""), "")
	}
	a := boundTCP(t, ts, cmdBindReceiver) // bound first: it gets the first deliveries
	f, _ := readDeliverSM(t, a)
	b := boundTCP(t, ts, cmdBindReceiver)
	a.write(cmdDeliverSMResp, statusThrottled, f.Seq, nil)
	// A refuses whatever else it was sent; B takes everything.
	go func() {
		for {
			g, err := a.tryRead()
			if err != nil {
				return
			}
			switch g.ID { // raw writes: this goroutine may outlive the test
			case cmdDeliverSM:
				_, _ = a.conn.Write(appendFrame(nil, cmdDeliverSMResp, statusThrottled, g.Seq, nil))
			case cmdEnquireLink:
				_, _ = a.conn.Write(appendFrame(nil, cmdEnquireLinkResp, 0, g.Seq, nil))
			}
		}
	}()
	got := map[string]bool{}
	for len(got) < n {
		g, sm := readDeliverSM(t, b) // fails after hangGuard if B gets nothing
		got[string(sm.Message)] = true
		b.write(cmdDeliverSMResp, 0, g.Seq, []byte{0})
	}
	waitCond(t, "every delivery taken by B left the store", func() bool {
		c, err := ts.disp.store.CountDeliveries(context.Background(), "platform")
		return err == nil && c == 0
	})
}

// A carrier's deliver_sm with both short_message and message_payload
// (§5.3.2.32: short_message is empty when message_payload is used) reaches
// an SMPP 3.4 platform with the payload only: what it showed depended on
// its library (the short copy, or the whole).
func TestDeliverSMWithBothContentsKeepsThePayload(t *testing.T) {
	payload := []byte("the whole text of the message")
	body := deliverBody("13900000001", 0, []byte("the whole"), []TLV{{Tag: tagMessagePayload, Value: payload}}, "", "")
	m, err := ParseShortMessage(platformBody(body))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := m.TLV(tagMessagePayload); len(m.Message) != 0 || !bytes.Equal(p, payload) {
		t.Fatalf("short_message %q, message_payload %q; want none and %q", m.Message, p, payload)
	}
}
