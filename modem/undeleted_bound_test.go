package modem

import (
	"errors"
	"testing"

	"go.uber.org/zap"
)

// At most maxUndeleted messages handed over with a failed delete are
// remembered; past that, Read returns the delete's error (the message may
// be handed over again: a duplicate, never a loss). A remembered slot that
// holds another PDU is forgotten, not taken for the one handed over.
func TestUndeletedIsBounded(t *testing.T) {
	m := &Modem{log: zap.NewNop()}
	refused := errors.New("refused")
	for i := range maxUndeleted {
		if !m.remember("SM", i+1, []byte{byte(i)}, refused) {
			t.Fatalf("entry %d not remembered", i+1)
		}
	}
	if m.remember("SM", maxUndeleted+1, []byte{1}, refused) {
		t.Fatalf("%d entries remembered, want at most %d", len(m.undeleted), maxUndeleted)
	}
	if !m.handedOver("SM", 3, []byte{2}) || m.handedOver("SR", 3, []byte{2}) {
		t.Fatal("a remembered message not recognised, or recognised in another memory")
	}
	if m.handedOver("SM", 3, []byte{9}) || m.handedOver("SM", 3, []byte{2}) {
		t.Fatal("a slot holding another PDU taken for the message handed over, or not forgotten")
	}
	if len(m.undeleted) != maxUndeleted-1 || !m.remember("SM", maxUndeleted+1, []byte{1}, refused) {
		t.Fatalf("%d remembered after one was forgotten; a new one not taken", len(m.undeleted))
	}
}
