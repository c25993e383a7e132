package proxy

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// MO messages whose store write is in doubt.
//
// A carrier's deliver_sm is answered ESME_RX_T_APPN when its store step
// fails or runs out of time (deliverStoreWait), so that the SMSC sends it
// again. A Redis call cut short at its deadline may have been applied all
// the same (a Redis that stalls for longer than the bound, then goes on):
// written a second time under a new delivery id, the resent MO message
// reached the platform twice.
//
// So an MO message answered ESME_RX_T_APPN after a store failure is
// remembered here for moDoubtFor, by a key of its content (carrier,
// addresses, esm_class, data_coding, text and segment reference) with the
// delivery id its write used. Each MO delivery is written with a trace, a
// message record of that id, in the same atomic step (store.AddDelivery
// with a message): when the same deliver_sm comes again from the same
// carrier, the trace tells whether the doubtful write was applied (it
// outlives the delivery, which leaves the store when the platform takes
// it). Applied: answered OK with no second write. Not applied: written
// now, under the same delivery id (a write still applied later replaces
// it in place while it is pending). Only deliver_sm answered
// ESME_RX_T_APPN after a failure are remembered: identical MO messages in
// normal operation (a handset sending "YES" twice) are never merged.
//
// What is not covered: a resend that comes after moDoubtFor, to another
// gateway instance than the one that answered it, or after a restart,
// is written again (the platform may get it twice, as before).

// moDoubtFor is how long an MO message whose store write is in doubt is
// remembered: SMSCs resend a deliver_sm answered ESME_RX_T_APPN within
// seconds to minutes.
const moDoubtFor = 10 * time.Minute

// moDoubtMax bounds the remembered MO messages (the oldest go first).
const moDoubtMax = 10000

// moDoubt is the memory (Dispatcher.moDoubt).
type moDoubt struct {
	mu    sync.Mutex
	byKey map[[32]byte][]moDoubtEntry // oldest first
	n     int
	now   func() time.Time // nil: time.Now (tests set theirs)
}

type moDoubtEntry struct {
	id string // the delivery id (and the id of its trace record)
	at time.Time
}

func (m *moDoubt) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

// remember records that the MO message of key was written as delivery id,
// in doubt.
func (m *moDoubt) remember(key [32]byte, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock()
	if m.byKey == nil {
		m.byKey = map[[32]byte][]moDoubtEntry{}
	}
	if m.n >= moDoubtMax {
		m.prune(now, true)
	}
	m.byKey[key] = append(m.byKey[key], moDoubtEntry{id: id, at: now})
	m.n++
}

// take returns (and forgets) the oldest delivery id remembered for key.
func (m *moDoubt) take(key [32]byte) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.prune(m.clock(), false)
	list := m.byKey[key]
	if len(list) == 0 {
		return "", false
	}
	e := list[0]
	if len(list) == 1 {
		delete(m.byKey, key)
	} else {
		m.byKey[key] = list[1:]
	}
	m.n--
	return e.id, true
}

// prune forgets the entries older than moDoubtFor; full, also the oldest
// until there is room.
func (m *moDoubt) prune(now time.Time, full bool) {
	if m.n == 0 {
		return
	}
	for k, list := range m.byKey {
		i := 0
		for i < len(list) && now.Sub(list[i].at) > moDoubtFor {
			i++
		}
		m.n -= i
		if i == len(list) {
			delete(m.byKey, k)
		} else if i > 0 {
			m.byKey[k] = list[i:]
		}
	}
	for full && m.n >= moDoubtMax {
		var oldest [32]byte
		var at time.Time
		for k, list := range m.byKey {
			if at.IsZero() || list[0].at.Before(at) {
				oldest, at = k, list[0].at
			}
		}
		if list := m.byKey[oldest]; len(list) == 1 {
			delete(m.byKey, oldest)
		} else {
			m.byKey[oldest] = list[1:]
		}
		m.n--
	}
}

// moDoubtKey is the key of an MO deliver_sm's content from a carrier: what
// an SMSC sends again unchanged when it resends it.
func moDoubtKey(carrier string, sm *ShortMessage) [32]byte {
	h := sha256.New()
	field := func(b []byte) {
		_ = binary.Write(h, binary.BigEndian, uint32(len(b)))
		h.Write(b)
	}
	field([]byte(carrier))
	field([]byte{sm.SourceTON, sm.SourceNPI})
	field([]byte(sm.Source))
	field([]byte{sm.DestTON, sm.DestNPI})
	field([]byte(sm.Dest))
	field([]byte{sm.ESMClass, sm.DataCoding})
	field(sm.Payload()) // with its UDH (concatenation reference) when it has one
	for _, tag := range []uint16{tagSarMsgRefNum, tagSarTotalSegments, tagSarSegmentSeqnum} {
		v, _ := sm.TLV(tag)
		field(v)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}
