package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"

	"github.com/spareline/spareline/store"
)

// IDGen makes spareline's message ids: unique across carriers and across
// gateway instances, ordered by time, 20 lowercase hex digits (SMPP 3.4
// allows up to 64 octets for message_id).
//
// The first 16 digits are a logical clock: milliseconds since 2020 shifted
// left 20 bits plus a sequence, bumped monotonically so that a burst of more
// than 2^20 ids in one millisecond, or a clock that steps back, never repeats
// an id. The last 4 digits are a random instance tag chosen at start-up.
type IDGen struct {
	mu   sync.Mutex
	last uint64
	tag  [2]byte
	now  func() time.Time
}

// idEpoch is shared with the store, which reads an id's time
// (store.TimeOfID) for the embedded store's expiry sweep.
var idEpoch = store.IDEpoch

// NewIDGen returns a generator with a random instance tag.
func NewIDGen() *IDGen {
	g := &IDGen{now: time.Now}
	_, _ = rand.Read(g.tag[:])
	return g
}

// Next returns a new id.
func (g *IDGen) Next() string { return g.NextAt(g.now()) }

// NextAt is Next for a caller that has read the clock already: now is the
// time it read.
func (g *IDGen) NextAt(now time.Time) string {
	ms := uint64(now.Sub(idEpoch) / time.Millisecond)
	g.mu.Lock()
	v := ms << 20
	if v <= g.last {
		v = g.last + 1
	}
	g.last = v
	g.mu.Unlock()
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], v)
	copy(b[8:], g.tag[:])
	var out [20]byte
	hex.Encode(out[:], b[:])
	return string(out[:]) // one allocation (EncodeToString makes two)
}
