package proxy

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// Failover is the modem path: it takes the messages that the carriers could
// not, answers the platform itself and queues them for the modem pool.
type Failover struct {
	d *Dispatcher
}

func (f *Failover) probeEvery(c *Carrier) time.Duration {
	return max(2*c.Config().ResponseTimeout.D(), time.Second)
}

func (f *Failover) queue(ctx context.Context, m *store.Message, reason string, log *zap.Logger) SubmitOutcome {
	return SubmitOutcome{Status: statusMsgQFul, Path: pathError}
}

func (f *Failover) afterCarrierFailure(ctx context.Context, m *store.Message, reason string, mayHave bool, log *zap.Logger) SubmitOutcome {
	return SubmitOutcome{Status: statusSysErr, Path: pathError}
}

func (f *Failover) onFailedReceipt(ctx context.Context, c *Carrier, m *store.Message, sm *ShortMessage, stat string) (bool, error) {
	return false, nil
}

func (f *Failover) anyModemUp() bool { return false }

func (f *Failover) modemStatus() any { return nil }
