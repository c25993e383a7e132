package store

import (
	"encoding/hex"
	"time"
)

// IDEpoch is the epoch of spareline's message ids (proxy.IDGen): an id's
// first 16 hex digits are the milliseconds since IDEpoch shifted left 20
// bits plus a sequence, and its last 4 an instance tag.
var IDEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// idLen is the length of an id made by proxy.IDGen.
const idLen = 20

// idMillis is the unix ms at which the message with id was made, and
// whether id has the form of proxy.IDGen's ids (20 lowercase hex digits).
// The embedded store's sweep relies on it: ids of that form sort in the
// order they were made, and a record expires no sooner than its TTL after
// its message was made.
func idMillis(id []byte) (uint64, bool) {
	if len(id) != idLen {
		return 0, false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, false
		}
	}
	var b [8]byte
	if _, err := hex.Decode(b[:], id[:16]); err != nil {
		return 0, false
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return uint64(IDEpoch.UnixMilli()) + v>>20, true
}

// TimeOfID is when the message with id was made, for ids made by
// proxy.IDGen; false for any other id.
func TimeOfID(id string) (time.Time, bool) {
	ms, ok := idMillis([]byte(id))
	if !ok {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)), true
}
