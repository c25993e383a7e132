package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Receipts and MO messages from carriers.
//
// A deliver_sm from a carrier is answered only after what it carries is
// durable (STYLE.md example 4): a receipt is rewritten to our message id —
// in the "id:" field of its text (SMPP 3.4 Appendix B) and in the
// receipted_message_id TLV (§5.3.2.12) — and stored as a delivery for the
// account that sent the message; an MO message is stored as a delivery for
// the MO account. Then deliver_sm_resp goes back to the carrier. If the
// carrier's id is not linked to a message yet (its receipt overtook our
// store write of its submit_sm_resp), the receipt is stashed as an orphan
// and taken back by the link write itself (store.LinkCarrier, one atomic
// step); both sides write first and look second, so neither can miss the
// other. While the store fails, a deliver_sm is answered ESME_RX_T_APPN,
// never OK, so that the carrier sends it again.
//
// A final receipt finishes its message by a compare-and-set from state
// "sent" (store.FinishMessage), so a receipt the carrier sends twice (or
// two instances each get) reaches the platform once; intermediate receipts
// (ENROUTE, ACCEPTD, BUFFRED...) are passed on when the submit asked for
// them (registered_delivery 0x10), without finishing it (see
// deliverCarrierReceipt).

// canonicalCarrierID turns a carrier message id into the key of the carrier
// id index. mode is the carrier's receipt_id setting: "as_is" keeps the text
// (a decimal id without its leading zeros);
// "hex" means the carrier's receipts write in hex the id its submit_sm_resp
// wrote in decimal, "decimal" the reverse. In both, the key is the decimal
// value, so both sides meet; an id expected in decimal that has hex letters
// is read as hex (a receipted_message_id written as the submit_sm_resp
// was).
//
// In "as_is", an id written in hex digits with at least one letter is also
// folded: lower case, no leading zeros (SMSCs write the same hex id in upper
// case in one place and lower case, or zero-padded, in the other). An id
// with other letters keeps its case.
func canonicalCarrierID(mode, id string, fromReceipt bool) string {
	id = verbatimCarrierID(mode, id, fromReceipt)
	if mode == "hex" || mode == "decimal" {
		return id
	}
	return foldHexID(id)
}

// foldHexID writes an id of hex digits with a letter in lower case without
// its leading zeros; any other id is returned as it is.
func foldHexID(id string) string {
	letter := false
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
			letter = true
		default:
			return id
		}
	}
	if !letter {
		return id
	}
	return strings.ToLower(strings.TrimLeft(id, "0"))
}

// verbatimCarrierID is canonicalCarrierID without the folding of hex ids
// in "as_is": the key links written before that folding have.
func verbatimCarrierID(mode, id string, fromReceipt bool) string {
	id = strings.TrimSpace(id)
	base := 0
	switch mode {
	case "hex":
		base = 10
		if fromReceipt {
			base = 16
		}
	case "decimal":
		base = 16
		if fromReceipt {
			base = 10
		}
	default:
		// A decimal id loses its leading zeros: carriers pad the id in
		// receipt texts ("id:0000012345" for a submit_sm_resp of "12345").
		if len(id) > 1 && id[0] == '0' && isDigits(id) {
			if id = strings.TrimLeft(id, "0"); id == "" {
				id = "0"
			}
		}
		return id
	}
	v, err := strconv.ParseUint(id, base, 64)
	if err != nil && base == 10 {
		// Letters: not decimal, so hex (a receipt's receipted_message_id
		// as the submit_sm_resp wrote it; Kannel reads such ids so too).
		v, err = strconv.ParseUint(id, 16, 64)
	}
	if err != nil {
		return id
	}
	return strconv.FormatUint(v, 10)
}

// statLongForms are the full words some SMSCs write as a receipt's stat,
// for Appendix B's seven-letter ones (SMPP 3.4 Appendix B: DELIVRD,
// EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD).
var statLongForms = map[string]string{
	"DELIVERED":     "DELIVRD",
	"UNDELIVERABLE": "UNDELIV",
	"UNDELIVERED":   "UNDELIV",
	"ACCEPTED":      "ACCEPTD",
	"BUFFERED":      "BUFFRED",
	"REJECTED":      "REJECTD",
}

// receiptFields extracts the "id:" and "stat:" and "err:" values of a
// receipt text: the first of each, before "text:". The text: field (SMPP
// 3.4 Appendix B) is the start of the message itself and comes last; what
// it says is the sender's, not the receipt's.
func receiptFields(text []byte) (id, stat, errCode string) {
	fields := strings.Fields(string(text))
	for _, f := range fields {
		k, v, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "id":
			if id == "" {
				id = v
			}
		case "stat":
			if stat == "" {
				stat = strings.ToUpper(v)
				if w, ok := statLongForms[stat]; ok {
					stat = w
				}
			}
		case "err":
			if errCode == "" {
				errCode = v
			}
		case "text":
			return
		}
	}
	return
}

// rewriteReceiptText replaces the value of the first "id:" field (SMPP 3.4
// Appendix B): "id:" in any letter case, at the start or after a space and
// before "text:", the same field receiptFields reads. The search runs on
// the original octets (bytes.ToLower may change the length of non-ASCII or
// invalid UTF-8 text, which would shift the offsets), and never inside
// another field's name.
func rewriteReceiptText(text []byte, newID string) []byte {
	i := -1
	// Fields are split at any white space, as receiptFields splits them.
	for j := 0; j+3 <= len(text); j++ {
		if j > 0 && !asciiSpace(text[j-1]) {
			continue
		}
		if j+5 <= len(text) && text[j]|0x20 == 't' && text[j+1]|0x20 == 'e' && text[j+2]|0x20 == 'x' &&
			text[j+3]|0x20 == 't' && text[j+4] == ':' {
			break // the message's own text (receiptFields)
		}
		if text[j]|0x20 == 'i' && text[j+1]|0x20 == 'd' && text[j+2] == ':' {
			i = j
			break
		}
	}
	if i < 0 {
		return text
	}
	start := i + 3
	end := start
	for end < len(text) && !asciiSpace(text[end]) {
		end++
	}
	out := make([]byte, 0, len(text)+len(newID))
	out = append(out, text[:start]...)
	out = append(out, newID...)
	return append(out, text[end:]...)
}

// asciiSpace reports the octets strings.Fields splits ASCII text at.
func asciiSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// rebuildBody writes a message body with a new short_message and TLVs,
// keeping every mandatory field's octets.
func (m *ShortMessage) rebuildBody(body []byte, msg []byte, tlvs []TLV) []byte {
	out := make([]byte, 0, len(body)+64)
	out = append(out, body[:m.smOffset]...)
	out = append(out, byte(len(msg)))
	out = append(out, msg...)
	return appendTLVs(out, tlvs)
}

// appendTLVs appends the optional parameters tlvs to a PDU body.
func appendTLVs(out []byte, tlvs []TLV) []byte {
	for _, t := range tlvs {
		out = binary.BigEndian.AppendUint16(out, t.Tag)
		out = binary.BigEndian.AppendUint16(out, uint16(len(t.Value)))
		out = append(out, t.Value...)
	}
	return out
}

// rewriteReceipt returns the receipt body with our id in place of the
// carrier's.
func rewriteReceipt(sm *ShortMessage, body []byte, ourID string) []byte {
	msg := sm.Message
	tlvs := make([]TLV, 0, len(sm.TLVs))
	for _, t := range sm.TLVs {
		switch t.Tag {
		case tagReceiptedMessageID:
			t.Value = append([]byte(ourID), 0)
		case tagMessagePayload:
			if len(sm.Message) == 0 {
				t.Value = rewriteReceiptText(t.Value, ourID)
			}
		}
		tlvs = append(tlvs, t)
	}
	if len(msg) > 0 {
		msg = rewriteReceiptText(msg, ourID)
		if len(msg) > 254 {
			msg = msg[:254]
		}
	}
	out := sm.rebuildBody(body, msg, tlvs)
	if sm.ESMClass&0x3C == 0x08 {
		// A receipt the carrier marked as an SME acknowledgement
		// (IsReceipt) goes to the platform as the SMSC delivery receipt it
		// is, the form every platform reads.
		out[sm.esmClassOffset()] = sm.ESMClass&^0x3C | 0x04
	}
	return out
}

// receiptID is the carrier's id of the message a receipt is about: the
// receipted_message_id TLV, else the text's "id:"; other is the text's
// id when the receipt has both and they differ ("" otherwise).
func receiptID(sm *ShortMessage) (id, other, stat string) {
	tlv, text, stat := receiptIDs(sm)
	if tlv == "" {
		return text, "", stat
	}
	if text == tlv {
		text = ""
	}
	return tlv, text, stat
}

// receiptIDs are a receipt's receipted_message_id TLV and text "id:" (""
// when it has none) and its stat.
func receiptIDs(sm *ShortMessage) (tlv, text, stat string) {
	text, stat, _ = receiptFields(sm.Payload())
	stat = statOrState(stat, sm)
	if v, ok := sm.TLV(tagReceiptedMessageID); ok {
		if i := bytes.IndexByte(v, 0); i >= 0 {
			v = v[:i]
		}
		tlv = string(v)
	}
	return tlv, text, stat
}

// otherReceiptKeys are the index keys a receipt's message may have been
// linked under besides key, the one it is looked up and stashed under:
// its text's id as the carrier's receipts write ids; its
// receipted_message_id (tlv) so too and as its submit_sm_resp writes them
// (§5.3.2.12: the SMSC's id; with receipt_id "decimal", one written in hex
// digits only reads as decimal first); and each as links were keyed before
// hex ids were folded. The text's id is not read in the submit_sm_resp's
// base: every decimal text reads as hex too, and would find whatever
// message has that other id. Empty for the usual receipt, whose one id
// reads one way.
func otherReceiptKeys(mode, key, tlv, text string) []string {
	var out []string
	add := func(k string) {
		if k != "" && k != key && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if tlv != "" {
		add(canonicalCarrierID(mode, tlv, true))
		add(canonicalCarrierID(mode, tlv, false))
		add(verbatimCarrierID(mode, tlv, true))
	}
	if text != "" {
		add(canonicalCarrierID(mode, text, true))
		add(verbatimCarrierID(mode, text, true))
	}
	return out
}

// statOrState falls back to the message_state TLV (SMPP 3.4 §5.2.28); ""
// when the receipt has neither (deliverCarrierReceipt).
func statOrState(stat string, sm *ShortMessage) string {
	if stat != "" {
		return stat
	}
	v, ok := sm.TLV(tagMessageState)
	if !ok {
		return ""
	}
	if len(v) == 1 {
		switch v[0] {
		case 1:
			return "ENROUTE"
		case 2:
			return "DELIVRD"
		case 3:
			return "EXPIRED"
		case 4:
			return "DELETED"
		case 5:
			return "UNDELIV"
		case 6:
			return "ACCEPTD"
		case 8:
			return "REJECTD"
		}
	}
	return "UNKNOWN"
}

// handleCarrierDeliver runs on the carrier session's reader goroutine: it
// parses, then finishes in a goroutine and answers when durable.
func (d *Dispatcher) handleCarrierDeliver(c *Carrier, s *Session, f Frame) {
	sm, err := ParseShortMessage(f.Body)
	if err != nil {
		var be *BodyError
		status := statusInvMsgLen
		if errors.As(err, &be) {
			status = be.Status
		}
		s.log.Warn("malformed deliver_sm from carrier", zap.Error(err))
		respondDeliver(s, f, status)
		return
	}
	// The MO messages of one source address are stored one after the
	// other, in the order they came (the reader goroutines' order): each
	// handled in a goroutine of its own, they reached the store, and so the
	// platform, in any order (STOP before START, part 2 before part 1).
	var prev, mine chan struct{}
	if !sm.IsReceipt() {
		prev, mine = d.moTurn(sm.Source)
	}
	started := d.spawn(func() {
		// The store step is bounded: a store that hangs gets the
		// deliver_sm answered ESME_RX_T_APPN before the SMSC's own timer
		// runs out (it sends it again later), not left unanswered.
		ctx, cancel := context.WithTimeout(context.Background(), deliverStoreWait(c))
		defer cancel()
		if mine != nil {
			defer d.moDone(sm.Source, mine)
		}
		if prev != nil {
			if testHookMOWait != nil {
				testHookMOWait()
			}
			select {
			case <-prev:
			case <-ctx.Done():
				respondDeliver(s, f, statusRXTAppn) // the carrier sends it again
				return
			}
		}
		respondDeliver(s, f, d.carrierDeliver(ctx, c, sm, f.Body))
	})
	if !started {
		// Shutting down: the carrier sends it again, to us or a sibling.
		respondDeliver(s, f, statusRXTAppn)
		if mine != nil {
			d.moDone(sm.Source, mine)
		}
	}
}

// receiptStoreWait bounds the handling of a carrier's deliver_sm (a
// receipt or an MO message, its store step and, for an MO message, its
// wait for the one before it from its source address): when it runs out
// the deliver_sm is answered ESME_RX_T_APPN, so that the SMSC sends it again
// later, and the SMSC keeps it meanwhile. SMSCs commonly wait 5 to 30 s for
// a deliver_sm_resp before they count it as lost; a store that answers does
// so in milliseconds.
const receiptStoreWait = 2 * time.Second

// deliverStoreWait is receiptStoreWait, or half the carrier's
// response_timeout when that is shorter (an SMSC configured to expect fast
// answers is likely to expect them from us too), and at least 100 ms.
func deliverStoreWait(c *Carrier) time.Duration {
	rt := c.cfg.Load().ResponseTimeout.D()
	if rt <= 0 {
		return receiptStoreWait
	}
	return max(min(receiptStoreWait, rt/2), 100*time.Millisecond)
}

// testHookMOWait, when set (tests), runs when an MO message starts waiting
// for the one before it from its source address.
var testHookMOWait func()

// moTurn enters an MO message from source address src in the line of those
// being stored: prev (nil when none) is closed once the one before it is
// stored or refused; mine is to be closed (moDone) once this one is.
func (d *Dispatcher) moTurn(src string) (prev, mine chan struct{}) {
	mine = make(chan struct{})
	d.moMu.Lock()
	defer d.moMu.Unlock()
	if d.moTails == nil {
		d.moTails = map[string]chan struct{}{}
	}
	prev = d.moTails[src]
	d.moTails[src] = mine
	return prev, mine
}

// moDone ends an MO message's turn (moTurn).
func (d *Dispatcher) moDone(src string, mine chan struct{}) {
	close(mine)
	d.moMu.Lock()
	if d.moTails[src] == mine {
		delete(d.moTails, src)
	}
	d.moMu.Unlock()
}

// respondDeliver answers a carrier's deliver_sm or data_sm. The body is
// message_id, unused, a single NUL (§4.6.2, §4.7.2), whatever the status:
// unlike submit_sm_resp's (§4.4.2), it is not left out on an error, and
// SMSCs whose decoders read it unconditionally would not take the answer
// (an ESME_RX_T_APPN asking for the receipt again among them).
func respondDeliver(s *Session, f Frame, status uint32) {
	s.Respond(f, status, []byte{0})
}

func (d *Dispatcher) carrierDeliver(ctx context.Context, c *Carrier, sm *ShortMessage, body []byte) uint32 {
	log := d.log.With(zap.String("carrier", c.Name))
	if !sm.IsReceipt() {
		acct := d.moAccount.Load().(string)
		if acct == "" {
			log.Warn("MO message dropped: no account receives MO")
			return statusOK
		}
		// A deliver_sm answered ESME_RX_T_APPN after a failed store write
		// may be this one sent again; the write may have been applied
		// all the same (modoubt.go).
		key := moDoubtKey(c.Name, sm)
		id, doubtful := d.moDoubt.take(key)
		if doubtful {
			_, err := d.store.GetMessage(ctx, id) // the trace of its write
			switch {
			case err == nil:
				d.noteStore(storeOpReceipt, nil)
				d.kickDeliveries(acct)
				log.Info("MO message sent again by the carrier after a store write in doubt: it was stored then; answered OK",
					zap.String("delivery", id))
				if ml := d.mlog(); ml != nil {
					ml.mo(&store.Delivery{ID: id, Account: acct, Body: body, Created: time.Now()}, sm.Source, sm.Dest, c.Name, "")
				}
				return statusOK
			case !errors.Is(err, store.ErrNotFound):
				d.moDoubt.remember(key, id) // still in doubt
				d.storeError(storeOpReceipt, log, "store read of an MO message in doubt failed; carrier will retry", err)
				return statusRXTAppn
			}
			// Not applied: written now, under the same id.
		} else {
			id = d.ids.Next()
		}
		now := time.Now()
		del := &store.Delivery{ID: id, Account: acct, Body: body, Created: now}
		// The trace: a message record of the delivery's id (ids are
		// unique across both), written in the same atomic step, that
		// outlives the delivery (it expires with the store's TTL).
		trace := &store.Message{ID: id, State: store.StateDone, Note: "trace of MO delivery " + id, Created: now, Done: now}
		if err := d.store.AddDelivery(ctx, del, trace); err != nil {
			d.moDoubt.remember(key, id)
			d.storeError(storeOpReceipt, log, "store write of an MO message failed; carrier will retry", err)
			return statusRXTAppn
		}
		d.noteStore(storeOpReceipt, nil)
		d.kickDeliveries(acct)
		log.Debug("MO message stored", zap.String("delivery", del.ID))
		if ml := d.mlog(); ml != nil {
			ml.mo(del, sm.Source, sm.Dest, c.Name, "")
		}
		return statusOK
	}
	c.noteReceipt() // the carrier sends receipts (status page), whether this one matches or not
	rawID, key, others, stat, final := receiptKeys(c, sm)
	if rawID == "" {
		log.Warn("receipt without an id dropped")
		return statusOK
	}
	m, err := d.store.FindOrStash(ctx, c.Name, key, body, final)
	if errors.Is(err, store.ErrNotFound) {
		// Not linked under key (stashed there, for a link to come): the
		// message may have been linked under another reading of its ids.
		var taken bool
		m, taken, err = d.receiptByOtherKeys(ctx, c.Name, key, body, others)
		if err == nil && !taken {
			return statusOK // a link under key took it meanwhile: it delivers it
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		if final {
			log.Info("receipt for an unknown message kept as orphan", zap.String("carrier_id", rawID))
		} else {
			log.Info("intermediate receipt for an unknown message kept as orphan unless one is kept already (then dropped)",
				zap.String("carrier_id", rawID), zap.String("stat", stat))
		}
		d.holdUnmatched(c, key, log)
		return statusOK
	}
	if err != nil {
		d.storeError(storeOpReceipt, log, "store write of a receipt failed; carrier will retry", err)
		return statusRXTAppn
	}
	if final && receiptAmbiguous(c, m, time.Now()) {
		// A newer message may be about to take m's carrier id: held for
		// its link (idreuse.go).
		if err := d.holdAmbiguous(ctx, c, key, m, body, log); err != nil {
			d.storeError(storeOpReceipt, log, "store write of a held receipt failed; carrier will retry", err)
			return statusRXTAppn
		}
		d.noteStore(storeOpReceipt, nil)
		return statusOK
	}
	if err := d.deliverCarrierReceipt(ctx, c, m, sm, body, stat); err != nil {
		d.storeError(storeOpReceipt, log, "store write of a receipt failed; carrier will retry", err)
		return statusRXTAppn
	}
	d.noteStore(storeOpReceipt, nil)
	return statusOK
}

// receiptByOtherKeys is for a receipt (body) that FindOrStash did not find
// under key, and stashed there (or dropped: an intermediate receipt beside
// a final one kept): it looks the message up under the other keys it may
// have been linked under (otherReceiptKeys). Found, the receipt is taken
// back from key's stash so that exactly one side has it: taken is true
// when it is the caller's to deliver, false when a link under key took it
// meanwhile (that link delivers it). A stash that holds another receipt
// (a final one kept before this one, an intermediate that FindOrStash
// dropped beside it) is put back, its unmatched-receipt timer still set. ErrNotFound when no other key
// is linked (the usual receipt: no other key, no store call): it stays
// stashed under key for a link to come.
func (d *Dispatcher) receiptByOtherKeys(ctx context.Context, carrier, key string, body []byte, others []string) (m *store.Message, taken bool, err error) {
	if m, err = d.findByKeys(ctx, carrier, others); err != nil {
		return nil, false, err // ErrNotFound: none linked
	}
	kept, err := d.store.TakeOrphan(ctx, carrier, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// A link under key took it (and delivers it) since FindOrStash.
		return m, false, nil
	case err != nil:
		return nil, false, err
	case !bytes.Equal(kept, body):
		// Another receipt was kept under key before this one (this one,
		// intermediate, was dropped): it stays kept.
		if err := d.store.StashOrphan(ctx, carrier, key, kept); err != nil {
			return nil, false, err
		}
	}
	return m, true, nil
}

// receiptKeys reads a carrier receipt's id: rawID as the receipt wrote it
// ("" when it has none), key the carrier id index key it is looked up and
// kept under, others the further keys its message may be linked under
// (otherReceiptKeys), and its stat and whether it is final.
func receiptKeys(c *Carrier, sm *ShortMessage) (rawID, key string, others []string, stat string, final bool) {
	mode := c.cfg.Load().ReceiptID
	tlvID, textID, _ := receiptIDs(sm)
	rawID, otherID, stat := receiptID(sm)
	if (mode == "hex" || mode == "decimal") && otherID != "" {
		// receipt_id names the base of the receipt's text. The
		// receipted_message_id TLV is the SMSC's message id (§5.3.2.12),
		// which carriers often write as their submit_sm_resp did: with
		// both, the text's id is the one in the base named.
		rawID = otherID
	}
	final = isFinalReceipt(sm, stat)
	if rawID == "" {
		return "", "", nil, stat, final
	}
	key = canonicalCarrierID(mode, rawID, true)
	return rawID, key, otherReceiptKeys(mode, key, tlvID, textID), stat, final
}

// findReceiptMessage looks a receipt that is stashed nowhere (a held one,
// idreuse.go) up under key, then under the other keys its message may be
// linked under (otherReceiptKeys); ErrNotFound when none is linked. It
// stashes nothing.
func (d *Dispatcher) findReceiptMessage(ctx context.Context, carrier, key string, others []string) (*store.Message, error) {
	return d.findByKeys(ctx, carrier, append([]string{key}, others...))
}

// findByKeys is the message the first of keys linked to the carrier names
// (FindByCarrierID, in order); ErrNotFound when none does.
func (d *Dispatcher) findByKeys(ctx context.Context, carrier string, keys []string) (*store.Message, error) {
	for _, k := range keys {
		m, err := d.store.FindByCarrierID(ctx, carrier, k)
		if !errors.Is(err, store.ErrNotFound) {
			return m, err
		}
	}
	return nil, store.ErrNotFound
}

// intermediateStats are the receipt words carriers send as intermediate
// notifications (registered_delivery bit 4, SMPP 3.4 §5.2.17), ahead of the
// final receipt. The final words are DELIVRD, EXPIRED, DELETED, UNDELIV,
// REJECTD and UNKNOWN (Appendix B; message_state, §5.2.28). Besides the
// spec's ENROUTE and ACCEPTD, upstreams built on Kannel send BUFFRED (its
// "delivered to the SMSC") and take ACKED and BUFFERD as the same; Kannel
// itself treats all five as "buffered", not an outcome. Taken as final, the
// DELIVRD that follows would be dropped as a duplicate and the platform
// would never learn the outcome.
var intermediateStats = map[string]bool{"ENROUTE": true, "ACCEPTD": true, "BUFFRED": true, "BUFFERD": true, "ACKED": true}

// isFinalReceipt reports whether a carrier receipt ends its message: not an
// intermediate delivery notification (esm_class message type 0x20, SMPP 3.4
// §5.2.12), nor stat ENROUTE or ACCEPTD. A stat word outside the standard
// ones counts as final, as a carrier's own name for an outcome, as before:
// finishing keeps such receipts deduplicated.
func isFinalReceipt(sm *ShortMessage, stat string) bool {
	return sm.ESMClass&0x3C != 0x20 && !intermediateStats[stat]
}

// deliverCarrierReceipt records a receipt for m's account (or resends m by
// modem when the receipt failed and failover says so).
//
// A final receipt finishes the message by a compare-and-set from state
// "sent" (store.FinishMessage): the record and the platform's receipt are
// written together only if no other receipt finished the message first. So
// a carrier resending a receipt while the first copy is still being handled
// (its deliver_sm_resp timer ran out on a slow store), or two instances
// each getting a copy, give the platform one receipt: the loser is a
// duplicate, answered OK and dropped. m is the record as read before; the
// store, not that copy, decides.
//
// An intermediate receipt (ENROUTE, ACCEPTD, esm_class 0x20) is passed on,
// when the submit asked for intermediate notifications (registered_delivery
// bit 4, 0x10, §5.2.17), without finishing the message (the same compare-and-set from "sent",
// state unchanged, so one arriving after the final receipt is dropped), and
// the final receipt that follows it is delivered too. A resent intermediate
// receipt may reach the platform twice (nothing distinguishes it from a
// second notification).
func (d *Dispatcher) deliverCarrierReceipt(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, body []byte, stat string) error {
	cp := *m
	m = &cp // changed below; a caller retrying after an error passes its own copy again
	final := isFinalReceipt(sm, stat)
	if fo := d.failover.Load(); fo != nil && final {
		handled, err := fo.onFailedReceipt(ctx, c, m, sm, stat)
		if handled || err != nil {
			return err
		}
	}
	if stat == "" {
		// Neither stat: nor message_state: the outcome is not known (the
		// handset may have the message), so it was not taken for a
		// failure above; the message ends UNKNOWN.
		stat = "UNKNOWN"
	}
	if m.State != store.StateSent {
		return nil // finished already (a duplicate), or taken by the modem path
	}
	var del *store.Delivery
	newDelivery := func() *store.Delivery {
		return &store.Delivery{ID: d.ids.Next(), Account: m.Account, Body: rewriteReceipt(sm, body, platformID(m.ID)), MsgID: m.ID,
			Created: time.Now()}
	}
	if final {
		m.State = store.StateDone
		m.Note = "carrier receipt " + stat
		m.FinalStat, m.Done = stat, time.Now() // query_sm reads them (query.go)
		_, _, m.FinalErr = receiptFields(sm.Payload())
		// SMPP 3.4 §5.2.17: 1 = a receipt on success or failure, 2 = on
		// failure only. Carriers that treat 2 as 1 send DELIVRD anyway; the
		// platform did not ask for it (the modem path does the same,
		// Failover.finish).
		if want := m.RegDeliv & 0x03; want != 0 && (want != 2 || stat != "DELIVRD") {
			del = newDelivery()
		}
	} else {
		if m.RegDeliv&0x10 == 0 {
			// SMPP 3.4 §5.2.17: intermediate notifications are asked for
			// by bit 4; a submit that asked for the final receipt only
			// does not get them.
			return nil
		}
		m.Note = "carrier receipt " + stat + " (intermediate)"
		del = newDelivery()
	}
	won, err := d.store.FinishMessage(ctx, []store.State{store.StateSent}, m, del)
	if errors.Is(err, store.ErrNotFound) {
		d.log.Info("receipt for an expired message record dropped", zap.String("id", m.ID), zap.String("stat", stat))
		return nil
	}
	if err != nil {
		return err
	}
	if !won {
		d.log.Debug("duplicate or late receipt dropped (the message is finished)", zap.String("id", m.ID),
			zap.String("stat", stat))
		return nil
	}
	// Logged once it is recorded: a duplicate, a late intermediate one, a
	// receipt for a message the modem path took, are dropped above.
	if ml := d.mlog(); ml != nil {
		ml.receipt(m, c.Name, stat, final)
	}
	if del != nil {
		metricReceipts.WithLabelValues(c.Name, statLabel(stat)).Inc()
		d.kickDeliveries(m.Account)
		d.log.Debug("receipt rewritten", zap.String("id", m.ID), zap.String("stat", stat), zap.Bool("final", final))
	}
	return nil
}

// deliverOrphan delivers a receipt taken back from the orphans when its
// message was linked. It was answered OK to the carrier when stashed, so
// it is ours to deliver now: the store is retried for linkRetryFor while
// the caller waits (the platform's submit_sm_resp, on the carrier path),
// then in the background until the dispatcher's context ends (shutdown).
// Only a store failing from the link until shutdown loses the receipt
// (logged at error level with the message id). Retrying cannot deliver it
// twice: the final write is a compare-and-set (deliverCarrierReceipt).
func (d *Dispatcher) deliverOrphan(ctx context.Context, c *Carrier, m *store.Message, body []byte) {
	sm, err := ParseShortMessage(body)
	if err != nil {
		return
	}
	_, _, stat := receiptID(sm)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), linkRetryFor)
	err = d.retryOrphan(rctx, c, m, sm, body, stat)
	cancel()
	if err == nil {
		return
	}
	later := func() {
		if err := d.retryOrphan(d.deliverCtx, c, m, sm, body, stat); err != nil {
			d.log.Error("adopting an early receipt failed until shutdown; it is lost", zap.String("id", m.ID),
				zap.String("stat", stat), zap.Error(err))
		}
	}
	if !d.spawn(later) {
		d.log.Error("adopting an early receipt failed at shutdown; it is lost", zap.String("id", m.ID),
			zap.String("stat", stat), zap.Error(err))
	}
}

// retryOrphan tries deliverCarrierReceipt until it succeeds or ctx ends,
// with a growing pause (at most storeProbeEvery) between tries.
func (d *Dispatcher) retryOrphan(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, body []byte, stat string) error {
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, storeProbeEvery) {
		err := d.deliverCarrierReceipt(ctx, c, m, sm, body, stat)
		d.noteStore(storeOpReceipt, err)
		if err == nil {
			return nil
		}
		if sleepCtx(ctx, wait) != nil {
			return err // the last try's
		}
	}
}

// isDigits reports whether s is all ASCII decimal digits.
func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
