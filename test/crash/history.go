// Package crash is spareline's Jepsen-style crash test: the real binary is
// killed with SIGKILL at random moments of a bulk, again and again, and
// restarted on the same ports and store, while everything around it (three
// SMSC simulators, a redis-server, two emulated modems on real
// pseudo-terminals and the platform client) survives and keeps a history.
// The history is then checked: every message the platform got an OK for was
// delivered (by a carrier or a modem), every receipt it asked for reached it
// with the id of the OK, and the duplicates are counted (a submit left
// without an answer by a kill is sent again, as a real platform does, so
// duplicates are expected and reported, not failed).
//
// This file is the history and its checker; crash_test.go runs the system.
package crash

import (
	"fmt"
	"sort"
	"strings"
)

// Submit is one submit_sm the platform sent, and its answer.
type Submit struct {
	Token    string // the unique short_message text of the message
	Receipt  bool   // registered_delivery asked for a receipt
	Answered bool   // a submit_sm_resp came back
	Status   uint32 // its command_status
	ID       string // its message_id when Status is 0
}

// Receipt is one delivery receipt the platform received.
type Receipt struct {
	ID    string // the id: field of the text
	TLVID string // the receipted_message_id TLV
	Stat  string
	Text  string // the text: field (the first 20 characters of the message)
}

// Copy is one copy of a message that left the system: accepted by a
// carrier's SMSC or sent by a modem.
type Copy struct {
	Token string
	Modem bool
}

// History is everything recorded at the platform and at the simulators.
type History struct {
	Submits  []Submit
	Receipts []Receipt
	Copies   []Copy
}

// Report is the outcome of a check. Lost and ReceiptsLost must be 0.
type Report struct {
	Store        string `json:"store"`
	Seed         int64  `json:"seed"`
	Kills        int    `json:"kills"`
	Submits      int    `json:"submits"`      // submit_sm sent, resubmits included
	Unanswered   int    `json:"unanswered"`   // submit_sm left without an answer (then resubmitted)
	Refused      int    `json:"refused"`      // answered with an error status (then resubmitted)
	Acknowledged int    `json:"acknowledged"` // distinct messages (tokens) answered OK
	Delivered    int    `json:"delivered"`    // acknowledged messages that left by a carrier or a modem
	ByCarrier    int    `json:"by_carrier"`   // ... at least once by a carrier
	ByModem      int    `json:"by_modem"`     // ... at least once by a modem
	Duplicates   int    `json:"duplicates"`   // extra copies beyond the first, over every message
	DupMessages  int    `json:"dup_messages"` // messages that left more than once
	Lost         int    `json:"lost"`         // acknowledged, delivered nowhere

	ReceiptsWanted  int            `json:"receipts_wanted"`  // OK'd submits that asked for a receipt
	ReceiptsGot     int            `json:"receipts_got"`     // ... whose receipt reached the platform
	ReceiptsLost    int            `json:"receipts_lost"`    // ... whose receipt never came
	DupReceipts     int            `json:"dup_receipts"`     // receipts beyond the first for one id
	UnknownReceipts int            `json:"unknown_receipts"` // receipts for ids the platform never got (a submit whose answer a kill ate)
	BadReceipts     int            `json:"bad_receipts"`     // text id != TLV id, or the receipt quotes another message
	ReceiptStats    map[string]int `json:"receipt_stats"`    // first receipt per wanted id, by stat
	LostTokens      []string       `json:"lost_tokens,omitempty"`
	LostReceiptIDs  []string       `json:"lost_receipt_ids,omitempty"`
	BadReceiptNotes []string       `json:"bad_receipt_notes,omitempty"`
}

// Check computes the report of a history.
func Check(h History) Report {
	var r Report
	r.ReceiptStats = map[string]int{}
	acked := map[string]bool{}     // token -> OK'd
	wanted := map[string]string{}  // OK'd id with a receipt wanted -> token
	idToken := map[string]string{} // every OK'd id -> token
	for _, s := range h.Submits {
		r.Submits++
		switch {
		case !s.Answered:
			r.Unanswered++
		case s.Status != 0:
			r.Refused++
		default:
			acked[s.Token] = true
			idToken[s.ID] = s.Token
			if s.Receipt {
				wanted[s.ID] = s.Token
			}
		}
	}
	copies := map[string]int{}
	byCarrier, byModem := map[string]bool{}, map[string]bool{}
	for _, c := range h.Copies {
		copies[c.Token]++
		if c.Modem {
			byModem[c.Token] = true
		} else {
			byCarrier[c.Token] = true
		}
	}
	r.Acknowledged = len(acked)
	for tok := range acked {
		if copies[tok] == 0 {
			r.Lost++
			r.LostTokens = append(r.LostTokens, tok)
			continue
		}
		r.Delivered++
		if byCarrier[tok] {
			r.ByCarrier++
		}
		if byModem[tok] {
			r.ByModem++
		}
	}
	for _, n := range copies {
		if n > 1 {
			r.Duplicates += n - 1
			r.DupMessages++
		}
	}
	seen := map[string]int{}
	for _, rc := range h.Receipts {
		id := rc.ID
		if id == "" {
			id = rc.TLVID
		}
		if rc.TLVID != "" && rc.ID != "" && rc.TLVID != rc.ID {
			r.BadReceipts++
			r.BadReceiptNotes = append(r.BadReceiptNotes, fmt.Sprintf("text id %q, TLV id %q", rc.ID, rc.TLVID))
			continue
		}
		tok, known := idToken[id]
		if !known {
			r.UnknownReceipts++
			continue
		}
		if txt := strings.TrimSpace(rc.Text); txt != "" && txt != tok {
			r.BadReceipts++
			r.BadReceiptNotes = append(r.BadReceiptNotes, fmt.Sprintf("receipt for %s (%s) quotes %q", id, tok, txt))
			continue
		}
		seen[id]++
		if seen[id] == 1 {
			if _, ok := wanted[id]; ok {
				r.ReceiptStats[rc.Stat]++
			}
		} else {
			r.DupReceipts++
		}
	}
	r.ReceiptsWanted = len(wanted)
	for id := range wanted {
		if seen[id] > 0 {
			r.ReceiptsGot++
		} else {
			r.ReceiptsLost++
			r.LostReceiptIDs = append(r.LostReceiptIDs, id)
		}
	}
	sort.Strings(r.LostTokens)
	sort.Strings(r.LostReceiptIDs)
	return r
}

// Settled reports whether nothing is missing: every acknowledged message
// delivered and every wanted receipt received.
func (r Report) Settled() bool { return r.Lost == 0 && r.ReceiptsLost == 0 }

// Table writes the report as a Markdown table, as RELIABILITY.md shows it.
func (r Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| store | kills | submits | unanswered | acknowledged | delivered (carrier / modem) | duplicates (messages) | lost | receipts wanted | receipts got | receipts lost | duplicate receipts |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d (%d / %d) | %d (%d) | %d | %d | %d | %d | %d |\n",
		r.Store, r.Kills, r.Submits, r.Unanswered, r.Acknowledged, r.Delivered, r.ByCarrier, r.ByModem,
		r.Duplicates, r.DupMessages, r.Lost, r.ReceiptsWanted, r.ReceiptsGot, r.ReceiptsLost, r.DupReceipts)
	stats := make([]string, 0, len(r.ReceiptStats))
	for k, v := range r.ReceiptStats {
		stats = append(stats, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(stats)
	fmt.Fprintf(&b, "receipt stats: %s; refused answers: %d; receipts for unanswered submits: %d; bad receipts: %d\n",
		strings.Join(stats, " "), r.Refused, r.UnknownReceipts, r.BadReceipts)
	return b.String()
}
