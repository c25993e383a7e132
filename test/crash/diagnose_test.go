package crash

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/spareline/spareline/store"
)

// diagnose tells, for a failed check, what became of each lost message: its
// record in the store, its ids, and every log line of every run that names
// it. The whole log of every run is written to a file that outlives the test.
func (w *world) diagnose(r Report) {
	t := w.t
	tokens := map[string]bool{}
	for _, tok := range r.LostTokens {
		tokens[tok] = true
	}
	w.mu.Lock()
	ids := map[string]string{} // OK'd id -> token
	for _, s := range w.submits {
		if s.Answered && s.Status == 0 {
			ids[s.ID] = s.Token
		}
	}
	w.mu.Unlock()
	for _, id := range r.LostReceiptIDs {
		tokens[ids[id]] = true
	}
	var needles []string
	for id, tok := range ids {
		if tokens[tok] {
			needles = append(needles, id)
		}
	}
	for tok := range tokens {
		needles = append(needles, tok)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st store.Store
	var err error
	if w.kind == "redis" {
		st, err = store.NewRedis(ctx, w.storeAt, 24*time.Hour, zap.NewNop())
	} else {
		st, err = store.OpenBolt(w.storeAt, 24*time.Hour, zap.NewNop())
	}
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "store unreadable: %v\n", err)
	} else {
		defer st.Close()
		for id, tok := range ids {
			if !tokens[tok] {
				continue
			}
			m, err := st.GetMessage(ctx, id)
			if err != nil {
				fmt.Fprintf(&b, "%s (%s): %v\n", id, tok, err)
				continue
			}
			fmt.Fprintf(&b, "%s (%s): state %s, carrier %q, carrier id %q, attempts %d, modem %q, note %q, final %q\n",
				id, tok, m.State, m.Carrier, m.CarrierID, m.Attempts, m.Modem, m.Note, m.FinalStat)
			if r, ok := st.(*store.Redis); ok {
				// Where the id sits in the modem queue's sets and the timers.
				for _, k := range []string{"q:e", "q:r", "q:w", "q:l", "t"} {
					if sc, err := r.Client().ZScore(ctx, "spareline:{sl}:"+k, id).Result(); err == nil {
						fmt.Fprintf(&b, "    in %s, score %.0f\n", k, sc)
					}
				}
				if o, err := r.Client().HGet(ctx, "spareline:{sl}:q:o", id).Result(); err == nil {
					fmt.Fprintf(&b, "    claimed by %s\n", o)
				}
			}
		}
		depth, oldest, err := st.ModemQueue(ctx)
		fmt.Fprintf(&b, "modem queue: %d entries, oldest %v, err %v\n", depth, oldest, err)
	}

	f, err := os.CreateTemp("", "spareline-crash-*.log")
	if err == nil {
		for i, c := range w.children {
			for _, l := range c.lines() {
				fmt.Fprintf(f, "run %d: %s\n", i, l)
			}
		}
		_ = f.Close()
		fmt.Fprintf(&b, "every run's log: %s\n", f.Name())
	}
	shown := 0
	for i, c := range w.children {
		for _, l := range c.lines() {
			for _, n := range needles {
				if strings.Contains(l, n) {
					if shown < 200 {
						fmt.Fprintf(&b, "run %d: %s\n", i, l)
					}
					shown++
					break
				}
			}
		}
	}
	t.Logf("diagnosis of the lost messages (%d log lines name them):\n%s", shown, b.String())
}
