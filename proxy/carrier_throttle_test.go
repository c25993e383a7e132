package proxy

import (
	"context"
	"testing"
	"time"
)

// An SMSC that answers ESME_RTHROTTLED asks the ESME to slow down, not to
// retry the one message: SMSCs count the submits that ignore it, and some
// cut the bind. spareline sends no submit to the carrier, new ones
// included, for throttlePause after such an answer (as Kannel pauses a
// connection after ESME_RTHROTTLED). Before, only the throttled message
// waited; every other submit went out at once. ESME_RMSGQFUL (for some
// SMSCs the queue of one switched-off handset) pauses nothing.
func TestCarrierThrottledPausesEverySubmit(t *testing.T) {
	old := throttlePause
	throttlePause = time.Second // long enough to tell "paused" from "not" on a loaded machine
	t.Cleanup(func() { throttlePause = old })
	for _, tc := range []struct {
		status uint32
		pause  bool
	}{{statusThrottled, true}, {statusMsgQFul, false}} {
		status := tc.status
		t.Run(StatusString(status), func(t *testing.T) {
			c, p, _ := boundTestCarrier(t)
			type answer struct {
				SubmitResult
				err error
			}
			res := make(chan answer, 2)
			body := goldenSubmit(t, "02 4F60", "")
			submit := func() {
				r, err := c.Submit(context.Background(), body)
				res <- answer{r, err}
			}
			go submit()
			sub := p.read()
			p.write(cmdSubmitSMResp, status, sub.Seq, nil)
			throttled := time.Now()
			if r := <-res; r.err != nil || r.Status != status {
				t.Fatalf("first submit's result %+v, want %s", r, StatusString(status))
			}
			go submit() // a new message, right after the throttle
			sub = p.read()
			if waited := time.Since(throttled); tc.pause && waited < throttlePause {
				t.Fatalf("next submit reached the SMSC %s after it throttled, want at least %s", waited, throttlePause)
			} else if !tc.pause && waited >= throttlePause {
				t.Fatalf("next submit reached the SMSC %s after ESME_RMSGQFUL, want no pause", waited)
			}
			p.write(cmdSubmitSMResp, statusOK, sub.Seq, cstring(nil, "C2"))
			if r := <-res; r.err != nil || r.Status != statusOK {
				t.Fatalf("second submit's result %+v, want OK", r)
			}
		})
	}
}
