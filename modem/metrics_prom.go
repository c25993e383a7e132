package modem

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Labels are bounded: modem is a configured modem name; result is one of
// ok, error, permanent.
var (
	modemUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_modem_up", Help: "1 when the modem is in the pool (SIM ready, registered, healthy).",
	}, []string{"modem"})
	modemSignal = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_modem_signal_dbm", Help: "Last signal strength read with AT+CSQ, in dBm (no series while the modem reads it as not known, +CSQ: 99).",
	}, []string{"modem"})
	modemSends = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_modem_sends_total", Help: "Send attempts of whole messages by outcome (ok, error, permanent).",
	}, []string{"modem", "result"})
)

// metricSeed creates a modem's series at 0 (a configured modem that has not
// come up yet, or sent nothing yet): modem_up, and modem_sends_total for
// each result. Its signal appears with its first reading (0 dBm would read
// as a strong signal).
func metricSeed(modem string) {
	modemUp.WithLabelValues(modem).Set(0)
	for _, r := range []string{"ok", "error", "permanent"} {
		modemSends.WithLabelValues(modem, r)
	}
}

func metricUp(modem string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	modemUp.WithLabelValues(modem).Set(v)
}

func metricSignal(modem string, dbm int) { modemSignal.WithLabelValues(modem).Set(float64(dbm)) }

// metricSignalUnknown drops the signal series of a modem that reads
// +CSQ: 99 (not known): absent, not a stale value.
func metricSignalUnknown(modem string) { modemSignal.DeleteLabelValues(modem) }

func metricSend(modem, result string) { modemSends.WithLabelValues(modem, result).Inc() }

// metricForget deletes the series of a modem the pool no longer has (a
// reload removed it); its send counters stay.
func metricForget(modem string) {
	modemUp.DeleteLabelValues(modem)
	modemSignal.DeleteLabelValues(modem)
}
