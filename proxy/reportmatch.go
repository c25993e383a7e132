package proxy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/store"
)

// Status reports of sends made before a restart.
//
// The modem pool matches a status report to its send by (modem, TP-MR,
// recipient TP-RA) in memory (modem/pool.go matchReport): a report of a
// send made by an earlier process (spareline restarted between the send
// and its report, or the report was stored on the SIM while spareline was
// stopped and is read at start) comes out of the pool without a message
// id. Such a report is matched here against the store: every message a
// modem sent that still waits for its report is stored in state modemsent
// with its modem's name and the TP-MR of each part (recordSent), and has a
// receipt timer (store.Timers), which PendingTimers lists, newest first.
// The report's message is the newest of them sent by the report's modem
// with its TP-MR among the parts' and a destination that can be its
// recipient (modem.SameNumber, as the pool compares them); the part is the
// TP-MR's place among the parts. The report then goes where the pool's
// matched reports go (handleReport), and the line "status report matched
// from the store after a restart" is logged at info.
//
// The candidates are read into an index kept by (modem, TP-MR), so that a
// SIM full of stored reports read at start costs one read of the store, not
// one per report; a report the index does not explain reads the store again
// once the index is storedIndexFresh old (a send made since the last read,
// whose report the pool no longer had). A report for which the store could
// not be read (an error) is kept and tried again every storedRetryEvery
// (up to storedRetryMax of them; until shutdown: a routed +CDS is
// acknowledged when read, so one kept at shutdown is lost, and its message
// gets ACCEPTD from its timer).
//
// Nothing is written for this: the carrier path and the modem send cost
// nothing more. The limit: a modem's name is what ties a stored send to a
// report. Two gateways sharing one Redis that give two different modems the
// same name could match a report of one to a send of the other, when TP-MR
// and recipient coincide as well (and the other gateway's pool did not
// match it first: only after a restart of this one, or for a send whose
// report its pool had forgotten); name the modems of each gateway apart.

const (
	// storedIndexLimit bounds the receipt timers read per index build:
	// the newest sends come first, so beyond it only the oldest, nearest
	// their ACCEPTD, are left out.
	storedIndexLimit = 20000
	// storedIndexChunk is how many messages are read at once.
	storedIndexChunk = 500
	// storedIndexFresh: a report the index does not explain reads the
	// store again only once the index is this old (or after a failed read,
	// once the read is this old).
	storedIndexFresh = 5 * time.Second
	// storedRetryEvery is how often reports kept after a store error are
	// tried again; storedRetryMax how many are kept (the oldest go first).
	storedRetryEvery = 5 * time.Second
	storedRetryMax   = 1000
)

// storedKey is a stored send's modem and a part's TP-MR.
type storedKey struct {
	modem string
	mr    int
}

// storedSend is one part of a stored message sent by modem.
type storedSend struct {
	id          string
	dest        string // as the modem sent it (TP-DA)
	part, parts int
}

// storedReports is the index of stored sends waiting for their reports,
// and the reports kept after a store error.
type storedReports struct {
	mu     sync.Mutex
	idx    map[storedKey][]storedSend // newest send first; nil before the first read
	read   time.Time                  // the last read of the store (successful or not)
	failed bool                       // the last read failed
	retry  []modem.Report             // kept after a store error: without an id (matchStored), or with one (keepReport)
}

// keepReport keeps a report with its message's id that a store error kept
// from being handled (handleReport), to be handled again every
// storedRetryEvery with the others kept (retryStored).
func (f *Failover) keepReport(r modem.Report, err error) {
	sr := &f.stored
	sr.mu.Lock()
	defer sr.mu.Unlock()
	f.log.Warn("store unreadable: a status report is kept and handled again later",
		zap.String("id", r.ID), zap.String("modem", r.Modem), zap.Int("mr", r.Status.MR), zap.Error(err))
	sr.keep(r, f.log)
}

// matchStored finds the stored message of a report the pool matched to no
// send of this process; ok is false when none is (the report is dropped,
// or kept for a retry when the store could not be read).
func (f *Failover) matchStored(ctx context.Context, r modem.Report) (modem.Report, bool) {
	sr := &f.stored
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return f.matchStoredLocked(ctx, r)
}

func (f *Failover) matchStoredLocked(ctx context.Context, r modem.Report) (modem.Report, bool) {
	sr := &f.stored
	s, ok := sr.find(r)
	if !ok && time.Since(sr.read) >= storedIndexFresh {
		if err := f.readStored(ctx); err != nil {
			if ctx.Err() == nil {
				f.log.Warn("store unreadable: a status report that matches no recent send is kept and matched again later",
					zap.String("modem", r.Modem), zap.Int("mr", r.Status.MR), zap.Error(err))
				sr.keep(r, f.log)
			}
			return r, false
		}
		s, ok = sr.find(r)
	} else if !ok && sr.failed {
		// The last read failed moments ago (and said so): kept for the
		// retry.
		sr.keep(r, f.log)
		return r, false
	}
	if !ok {
		f.log.Debug("status report matches no send, recent or stored (late, repeated, or of a message already finished)",
			zap.String("modem", r.Modem), zap.Int("mr", r.Status.MR), zap.String("recipient", r.Status.Recipient))
		return r, false
	}
	r.ID, r.Part, r.Parts = s.id, s.part, s.parts
	f.log.Info("status report matched from the store after a restart",
		zap.String("id", s.id), zap.String("modem", r.Modem), zap.Int("mr", r.Status.MR),
		zap.Int("part", s.part), zap.Int("parts", s.parts), zap.String("tp_st", fmt.Sprintf("0x%02X", r.Status.Status)))
	return r, true
}

// find looks r up in the index: the newest send under its modem and TP-MR
// whose destination can be its recipient. A final report forgets it, as
// the pool's match does (an older send under the same TP-MR is found by
// the next report).
func (sr *storedReports) find(r modem.Report) (storedSend, bool) {
	if !strings.ContainsAny(r.Status.Recipient, "0123456789") {
		// A recipient with no digits (empty, or alphanumeric) would be
		// the same number as any destination: not matched from the
		// store, where hours of sends share each TP-MR.
		return storedSend{}, false
	}
	k := storedKey{r.Modem, r.Status.MR}
	l := sr.idx[k]
	for i, s := range l {
		if !modem.SameNumber(s.dest, r.Status.Recipient) {
			continue
		}
		if !r.Status.Temporary() {
			if l = slices.Delete(l, i, i+1); len(l) == 0 {
				delete(sr.idx, k)
			} else {
				sr.idx[k] = l
			}
		}
		return s, true
	}
	return storedSend{}, false
}

// keep holds r for a retry, the oldest dropped beyond storedRetryMax.
func (sr *storedReports) keep(r modem.Report, log *zap.Logger) {
	if len(sr.retry) >= storedRetryMax {
		old := sr.retry[0]
		log.Warn("status report kept after a store error dropped: too many kept",
			zap.String("id", old.ID), zap.String("modem", old.Modem), zap.Int("mr", old.Status.MR))
		sr.retry = sr.retry[1:]
	}
	sr.retry = append(sr.retry, r)
}

// readStored builds the index from the store: the messages with a receipt
// timer that a modem sent and that wait for their reports. sr.mu is held.
func (f *Failover) readStored(ctx context.Context) error {
	sr := &f.stored
	sr.read, sr.failed = time.Now(), true
	ids, err := f.d.store.PendingTimers(ctx, storedIndexLimit)
	if err != nil {
		return err
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return strings.HasPrefix(id, unmatchedTimerPrefix) })
	idx := map[storedKey][]storedSend{}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), storedIndexChunk)]
		ids = ids[len(chunk):]
		msgs, err := f.d.store.GetMessages(ctx, chunk)
		if err != nil {
			return err
		}
		for _, m := range msgs { // newest first, as PendingTimers lists them
			if m == nil || m.State != store.StateModemSent || m.Modem == "" {
				continue
			}
			dest := f.modemDest(m.Dest)
			for i, mr := range m.ModemRefs {
				k := storedKey{m.Modem, mr}
				idx[k] = append(idx[k], storedSend{id: m.ID, dest: dest, part: i + 1, parts: len(m.ModemRefs)})
			}
		}
	}
	sr.idx, sr.failed = idx, false
	return nil
}

// retryStored matches again the reports kept after a store error, and
// returns those it matched.
func (f *Failover) retryStored(ctx context.Context) []modem.Report {
	sr := &f.stored
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if len(sr.retry) == 0 {
		return nil
	}
	kept := sr.retry
	sr.retry = nil
	sr.read = time.Time{} // read the store again now
	var out []modem.Report
	for _, r := range kept {
		if r.ID != "" {
			out = append(out, r) // its id known (keepReport): handled again as it is
			continue
		}
		if m, ok := f.matchStoredLocked(ctx, r); ok {
			out = append(out, m)
		}
	}
	return out
}
