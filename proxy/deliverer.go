package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Deliverers: one goroutine per account sends the account's stored
// deliver_sm (receipts and MO) to its bound receiver and transceiver
// sessions, oldest first, and removes each only when the platform answered
// it with deliver_sm_resp OK. A timeout or ESME_RX_T_APPN leaves it for the
// next round (retried after a pause); ESME_RX_P_APPN / ESME_RX_R_APPN mean
// the platform will never take it: it is dropped and logged. Deliveries wait
// in the store, without limit of time, while no receiver is bound.

const deliverBatch = 128

type deliverer struct {
	d       *Dispatcher
	account string
	kick    chan struct{}
}

// kickDeliveries wakes the account's deliverer (starting it if needed).
func (d *Dispatcher) kickDeliveries(account string) {
	d.deliverMu.Lock()
	dl := d.deliverers[account]
	if dl == nil {
		dl = &deliverer{d: d, account: account, kick: make(chan struct{}, 1)}
		d.deliverers[account] = dl
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			dl.run(d.deliverCtx)
		}()
	}
	d.deliverMu.Unlock()
	select {
	case dl.kick <- struct{}{}:
	default:
	}
}

// StartDeliverers starts a deliverer for each account so that deliveries
// held from before a restart go out as soon as a receiver binds.
func (d *Dispatcher) StartDeliverers(accounts []string) {
	for _, a := range accounts {
		d.kickDeliveries(a)
	}
}

// Wait waits for background work (deliverers, receipt handlers) after the
// dispatcher's context ended.
func (d *Dispatcher) Wait() { d.wg.Wait() }

func (dl *deliverer) run(ctx context.Context) {
	log := dl.d.log.With(zap.String("account", dl.account))
	// A slow poll covers deliveries written by other gateway instances.
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-dl.kick:
		case <-poll.C:
		}
		for ctx.Err() == nil {
			progressed, more := dl.round(ctx, log)
			if !more {
				break
			}
			if !progressed {
				// Everything failed this round: pause before retrying.
				t := time.NewTimer(time.Second)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
				break
			}
		}
	}
}

// round sends one batch. more says there may be more to send now.
func (dl *deliverer) round(ctx context.Context, log *zap.Logger) (progressed, more bool) {
	d := dl.d
	if d.recv == nil {
		return false, false
	}
	recv := d.recv.receiversOf(dl.account)
	if len(recv) == 0 {
		return false, false
	}
	list, err := d.store.PendingDeliveries(ctx, dl.account, deliverBatch)
	if err != nil {
		log.Warn("reading held deliveries failed", zap.Error(err))
		return false, true
	}
	metricDeliveriesPending.WithLabelValues(dl.account).Set(float64(len(list)))
	if len(list) == 0 {
		return false, false
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for i, del := range list {
		s := recv[i%len(recv)]
		// Prefer a session with room in its window.
		for _, r := range recv {
			if r.Free() > s.Free() {
				s = r
			}
		}
		wg.Add(1)
		go func(del *store.Delivery, s *Session) {
			defer wg.Done()
			if dl.send(ctx, s, del, log) {
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}(del, s)
	}
	wg.Wait()
	return acked > 0, acked > 0 && len(list) == deliverBatch || acked > 0 && acked < len(list)
}

func (dl *deliverer) send(ctx context.Context, s *Session, del *store.Delivery, log *zap.Logger) bool {
	f, err := s.Request(ctx, cmdDeliverSM, del.Body)
	if err != nil {
		if !errors.Is(err, ErrNotSent) {
			log.Info("deliver_sm unanswered; will retry", zap.String("delivery", del.ID), zap.Error(err))
		}
		return false
	}
	switch f.Status {
	case statusOK:
	case statusRXPAppn, statusRXRAppn:
		log.Warn("platform rejected a deliver_sm permanently; dropped", zap.String("delivery", del.ID),
			zap.String("msg", del.MsgID), zap.String("status", StatusString(f.Status)))
	default:
		log.Info("platform refused a deliver_sm; will retry", zap.String("delivery", del.ID),
			zap.String("status", StatusString(f.Status)))
		return false
	}
	if err := dl.d.store.AckDelivery(ctx, dl.account, del.ID); err != nil {
		log.Warn("removing a delivered deliver_sm failed; it may be sent again", zap.Error(err))
		return false
	}
	return true
}
