package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/redis/go-redis/v9"
)

// DataState is what CheckData found.
type DataState int

// The outcomes of CheckData.
const (
	// DataKept: the store holds the data it held when this process last
	// looked.
	DataKept DataState = iota
	// DataNew: the first look found no marker and wrote one: a Redis no
	// spareline used before (or one spareline used before this release),
	// or one that lost its data while no spareline was running.
	DataNew
	// DataLost: the data this process saw is gone (see CheckData).
	DataLost
)

// DataChecker is implemented by the stores whose data can be lost behind a
// running gateway's back (Redis: a restart without persistence, FLUSHALL,
// a failover to a replica that had not synced). The embedded store's data
// lives in the gateway's own file and does not implement it.
type DataChecker interface {
	// CheckData reports whether the data this process saw is still there.
	CheckData(ctx context.Context) (DataState, error)
	// CheckPersistence returns a warning for people when the server's
	// persistence settings can lose acknowledged writes ("" when safe or
	// unknown).
	CheckPersistence(ctx context.Context) string
}

var _ DataChecker = (*Redis)(nil)

// markerKey holds a random token, written once on a Redis that has none and
// never expired: the store's identity. A Redis that lost its data lost it
// too. Every gateway sharing the Redis reads the same token; Sentinel and
// Cluster replicate it like any key, so a failover to a replica that had
// the data keeps it, and one to a replica that had not synced does not.
const markerKey = keyPrefix + "marker"

// markerScript returns the marker, writing ARGV[1] first when there is
// none (one step: of two gateways finding it gone at once, both read the
// token the first one wrote).
var markerScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`)

// CheckData implements DataChecker: it reads the marker (markerKey), writing
// a new one when there is none. The first call (NewRedis makes it) takes the
// marker it finds as this process's (DataNew when it had to write it). A
// later call that finds no marker, or another token than the one this
// process took, reports DataLost: the marker went with the data (a restart
// without persistence, FLUSHALL or FLUSHDB, a failover to a replica that had
// not synced, eviction under an allkeys-* maxmemory-policy), or another
// gateway found it gone first and wrote a new one. The new token is taken
// as this process's, so each loss is reported once per gateway.
func (r *Redis) CheckData(ctx context.Context) (DataState, error) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	fresh := hex.EncodeToString(b[:])
	got, err := markerScript.Run(ctx, r.rdb, []string{markerKey}, fresh).Text()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			err = errors.New("marker script returned nothing")
		}
		return DataKept, wrapRedis("check marker", err)
	}
	r.markerMu.Lock()
	defer r.markerMu.Unlock()
	prev := r.marker
	r.marker = got
	switch {
	case prev == "" && got == fresh:
		return DataNew, nil
	case prev == "" || got == prev:
		return DataKept, nil
	}
	return DataLost, nil
}
