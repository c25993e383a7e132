package modem

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Labels are bounded: modem is a configured modem name; result is one of
// ok, error, permanent; reason is one of takenOutReasons.
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
	modemTakenOut = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_modem_taken_out_total",
		Help: "Times a modem in service (or on trial after send errors) was taken out, by reason (send_errors, send_refused, network, not_answering, port_broken, restarted, sim, not_registered, other).",
	}, []string{"modem", "reason"})
	modemHeldOut = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_modem_held_out",
		Help: "1 while the modem is held out of service after send errors (its hold, then its trial with one message), until a send succeeds.",
	}, []string{"modem"})
)

// The reasons a modem is taken out of service (spareline_modem_taken_out_total).
const (
	reasonSendErrors    = "send_errors"    // MaxErrors temporary send errors in a row, one of the SIM's subscription (held out), or a failed trial send
	reasonSendRefused   = "send_refused"   // permanent errors that may be the modem's, for MaxErrors messages in a row, or on a trial send
	reasonNetwork       = "network"        // MaxErrors temporary send errors in a row, none of the SIM's subscription (no network service, congestion, timeouts...): back at a good probe (held out when they come again with no send since)
	reasonNotAnswering  = "not_answering"  // a command got no answer within the command timeout
	reasonPortBroken    = "port_broken"    // the port vanished (unplugged, USB reset)
	reasonRestarted     = "restarted"      // ^SYSSTART/RDY on the open port
	reasonSIM           = "sim"            // the SIM is not ready (PIN asked again, removed)
	reasonNotRegistered = "not_registered" // no network
	reasonOther         = "other"          // anything else (PDU mode refused, an init or probe failure)
)

var takenOutReasons = []string{reasonSendErrors, reasonSendRefused, reasonNetwork, reasonNotAnswering, reasonPortBroken,
	reasonRestarted, reasonSIM, reasonNotRegistered, reasonOther}

// metricSeed creates a modem's series at 0 (a configured modem that has not
// come up yet, or sent nothing yet): modem_up, modem_sends_total for each
// result and modem_taken_out_total for each reason. Its signal appears with
// its first reading (0 dBm would read as a strong signal).
func metricSeed(modem string) {
	modemUp.WithLabelValues(modem).Set(0)
	modemHeldOut.WithLabelValues(modem).Set(0)
	for _, r := range []string{"ok", "error", "permanent"} {
		modemSends.WithLabelValues(modem, r)
	}
	for _, r := range takenOutReasons {
		modemTakenOut.WithLabelValues(modem, r)
	}
}

func metricTakenOut(modem, reason string) { modemTakenOut.WithLabelValues(modem, reason).Inc() }

func metricHeldOut(modem string, held bool) {
	v := 0.0
	if held {
		v = 1
	}
	modemHeldOut.WithLabelValues(modem).Set(v)
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
// reload removed it); its counters stay.
func metricForget(modem string) {
	modemUp.DeleteLabelValues(modem)
	modemSignal.DeleteLabelValues(modem)
	modemHeldOut.DeleteLabelValues(modem)
}
