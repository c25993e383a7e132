package crash

import (
	"reflect"
	"testing"
)

// The checker itself: a history with a loss, a duplicate, a missing receipt
// and a receipt rewritten to the wrong message must say so.
func TestCheckFindsLossesAndDuplicates(t *testing.T) {
	h := History{
		Submits: []Submit{
			{Token: "a", Receipt: true, Answered: true, ID: "1"},
			{Token: "b", Receipt: true, Answered: false},              // a kill ate the answer
			{Token: "b", Receipt: true, Answered: true, ID: "2"},      // resubmitted
			{Token: "c", Receipt: true, Answered: true, ID: "3"},      // delivered nowhere
			{Token: "d", Receipt: false, Answered: true, ID: "4"},     // no receipt wanted
			{Token: "e", Receipt: true, Answered: true, Status: 0x14}, // refused: not ours
			{Token: "f", Receipt: true, Answered: true, ID: "6"},      // receipt quotes another message
		},
		Receipts: []Receipt{
			{ID: "1", TLVID: "1", Stat: "DELIVRD", Text: "a"},
			{ID: "1", TLVID: "1", Stat: "DELIVRD", Text: "a"}, // redelivered
			{ID: "9", TLVID: "9", Stat: "DELIVRD", Text: "b"}, // the first, unanswered b
			{ID: "6", TLVID: "6", Stat: "DELIVRD", Text: "a"},
			{ID: "4", TLVID: "5", Stat: "DELIVRD"},
		},
		Copies: []Copy{{Token: "a"}, {Token: "b"}, {Token: "b", Modem: true}, {Token: "d", Modem: true}, {Token: "f"}},
	}
	r := Check(h)
	want := Report{Submits: 7, Unanswered: 1, Refused: 1, Acknowledged: 5, Delivered: 4, ByCarrier: 3, ByModem: 2,
		Duplicates: 1, DupMessages: 1, Lost: 1, ReceiptsWanted: 4, ReceiptsGot: 1, ReceiptsLost: 3, DupReceipts: 1,
		UnknownReceipts: 1, BadReceipts: 2}
	got := r
	got.ReceiptStats, got.LostTokens, got.LostReceiptIDs, got.BadReceiptNotes = nil, nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("report:\n got %+v\nwant %+v", got, want)
	}
	if len(r.LostTokens) != 1 || r.LostTokens[0] != "c" {
		t.Errorf("lost tokens %v, want [c]", r.LostTokens)
	}
	if r.Settled() {
		t.Error("a history with losses is settled")
	}
}
