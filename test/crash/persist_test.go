package crash

import (
	"strings"
	"testing"

	"github.com/spareline/spareline/test/redisserver"
)

// persistenceWarnings returns spareline's start-up log lines (up to "spareline
// running") that warn about Redis persistence.
func persistenceWarnings(c *child) []string {
	var out []string
	for _, l := range c.lines() {
		if strings.Contains(l, `"spareline running"`) {
			break
		}
		if strings.Contains(l, `"level":"warn"`) && (strings.Contains(l, "appendonly") || strings.Contains(l, "appendfsync")) {
			out = append(out, l)
		}
	}
	return out
}

// The crash test's promise needs Redis with an append-only file. spareline
// says so at start-up, as a warning, when Redis runs without one, and is
// silent when it runs with appendonly yes and appendfsync everysec.
func TestCrashStartupWarnsOfRedisPersistence(t *testing.T) {
	t.Run("aof-everysec", func(t *testing.T) {
		w := newWorld(t, "redis", 1)
		c := start(w.ctx, t, w.cfgPath)
		defer c.kill()
		if ws := persistenceWarnings(c); len(ws) != 0 {
			t.Errorf("warnings with appendonly yes, appendfsync everysec: %q", ws)
		}
	})
	t.Run("no-aof", func(t *testing.T) {
		w := newWorld(t, "redis", 1, redisserver.WithoutAOF())
		c := start(w.ctx, t, w.cfgPath)
		defer c.kill()
		ws := persistenceWarnings(c)
		if len(ws) != 1 || !strings.Contains(ws[0], "appendonly=no") {
			t.Fatalf("start-up log without AOF: want one warning naming appendonly=no, got %q\n%s", ws, c.tail())
		}
	})
}
