package proxy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of the SMPP side. Label values are bounded: carrier and account
// names come from the config; result, reason, status, stat, bind and path
// from the fixed sets listed beside each metric.
var (
	// build_info: 1, labelled with the build's version and Go version.
	metricBuildInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_build_info", Help: "1, labelled with the running build's version and Go version.",
	}, []string{"version", "goversion"})
	// carrier_up: 1 when the carrier can take traffic (state up or probation).
	metricCarrierUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_carrier_up", Help: "1 when the carrier channel can take traffic.",
	}, []string{"carrier"})
	// carrier_binds: binds currently bound.
	metricCarrierBinds = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_carrier_binds", Help: "Carrier binds currently bound.",
	}, []string{"carrier"})
	// carrier_reload_refused: 1 while the carrier refused (or could not be
	// reached with) the address or login of the last reload, tried by a
	// trial bind: its binds go on with the previous ones, which a restart
	// would not use (Carrier.ReloadRefused).
	metricCarrierReloadRefused = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_carrier_reload_refused",
		Help: "1 while the carrier refused (or could not be reached with) the address or login of the last config reload; its binds run on the previous ones, a restart would use the refused ones.",
	}, []string{"carrier"})
	// carrier_bind_recycled_total: carrier binds unbound and dialled again
	// because their submits went unanswered while the carrier's other
	// binds answered (recycle.go).
	metricCarrierBindRecycled = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_carrier_bind_recycled_total",
		Help: "Carrier binds reconnected because down_after_timeouts submits in a row went unanswered on them while the carrier answered on another bind.",
	}, []string{"carrier"})
	// carrier_state: 0 down, 1 probation, 2 up.
	metricCarrierState = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_carrier_state", Help: "Carrier health: 0 down, 1 probation, 2 up.",
	}, []string{"carrier"})
	// submits_total result: ok, error (an error status), timeout, lost
	// (connection lost with the submit in flight), down (no bind),
	// throttled.
	metricSubmits = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_submits_total", Help: "Submits re-originated to carriers, by outcome.",
	}, []string{"carrier", "result"})
	// submit_resp_status_total status: ESME_* names of statusNames, or "other".
	metricSubmitStatus = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_submit_resp_status_total", Help: "submit_sm_resp command_status from carriers.",
	}, []string{"carrier", "status"})
	// failovers_total reason: down, transient, timeout, lost, receipt,
	// unsupported (an SMPP 3.3 carrier and content over 254 octets).
	metricFailovers = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_failovers_total", Help: "Messages moved from a carrier to the modem pool, by reason.",
	}, []string{"carrier", "reason"})
	// late_answers_total outcome: taken_back, duplicate, refused, unknown
	// (late.go).
	metricLateAnswers = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_late_answers_total",
		Help: "Carrier acceptances (submit_sm_resp OK) that came after response_timeout, by what spareline could still do.",
	}, []string{"carrier", "outcome"})
	// receipts_total source: carrier name or "modem"; stat: DELIVRD, UNDELIV,
	// EXPIRED, REJECTD, DELETED, UNKNOWN, ACCEPTD, ENROUTE, BUFFRED, BUFFERD,
	// ACKED, or "other".
	metricReceipts = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_receipts_total", Help: "Delivery receipts produced for platforms.",
	}, []string{"source", "stat"})
	// receipts_requested_total: submits a carrier accepted that asked for
	// a delivery receipt whatever the outcome (registered_delivery bits 0-1
	// 1, or 3: SMPP 5.0's "on success"), the receipts it owes; with
	// receipts_total, whether it still sends them (SparelineCarrierNoReceipts).
	metricReceiptsRequested = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_receipts_requested_total",
		Help: "Submits a carrier accepted that asked for a delivery receipt on success (registered_delivery 1 or 3).",
	}, []string{"carrier"})
	// northbound_sessions bind: transmitter, receiver, transceiver.
	metricNorthSessions = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_northbound_sessions", Help: "Bound platform sessions.",
	}, []string{"account", "bind"})
	// northbound_binds_total result: ok, password, system_id, address,
	// system_type, address_range (northBindResults).
	metricNorthBinds = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_northbound_binds_total", Help: "Platform bind attempts, by result.",
	}, []string{"result"})
	// northbound_submits_total status: ESME_* names, or "other".
	metricNorthSubmits = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_northbound_submits_total", Help: "submit_sm from platforms, by the status answered.",
	}, []string{"account", "status"})
	// submit_latency_seconds path: carrier (platform submit to answer, through
	// a carrier), modem (platform submit to answer, queued for modems), error
	// (refused: store down, no route, a carrier's error passed through).
	metricSubmitLatency = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "spareline_submit_latency_seconds",
		Help:    "Time from a platform's submit_sm to spareline's submit_sm_resp.",
		Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"path"})
	// deliveries_pending: deliver_sm waiting for platform receivers (this
	// instance's view, refreshed by the deliverers).
	metricDeliveriesPending = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spareline_deliveries_pending", Help: "deliver_sm held for an account's receivers.",
	}, []string{"account"})
	// config_reloads_total and config_restart_pending: what SIGHUP did
	// (systemctl reload succeeds even when the file was refused).
	metricReloads = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "spareline_config_reloads_total", Help: "Config reloads (SIGHUP) by result: applied or refused.",
	}, []string{"result"})
	// config_last_reload_successful: 1 at the start, 0 from a refused
	// reload until one is applied (as Prometheus's own
	// prometheus_config_last_reload_successful), so that an alert on it
	// ends when the fixed file is reloaded.
	metricLastReloadOK = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_config_last_reload_successful",
		Help: "1 unless the last config reload (SIGHUP) was refused; then 0 until a reload is applied.",
	})
	metricRestartPending = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "spareline_config_restart_pending",
		Help: "1 while the last applied reload changed a setting only a restart applies (listeners, store, instance, modems).",
	})
	// panics_total: must stay 0; tests assert it.
	metricPanics = promauto.NewCounter(prometheus.CounterOpts{
		Name: "spareline_panics_total", Help: "Recovered panics in session handlers (a bug).",
	})
)

var receiptStats = map[string]bool{"DELIVRD": true, "UNDELIV": true, "EXPIRED": true, "REJECTD": true,
	"DELETED": true, "UNKNOWN": true, "ACCEPTD": true, "ENROUTE": true, "BUFFRED": true, "BUFFERD": true, "ACKED": true}

func statLabel(stat string) string {
	if receiptStats[stat] {
		return stat
	}
	return "other"
}

// The label values known before their first event. The series they make
// with the configured carriers, modems and accounts are created at 0 when
// the gateway starts and when a reload adds a carrier (seedCarrierMetrics,
// seedAccountMetrics): a series born at 1 has no increase() for its first
// event, so the first refused reload or the first failover would never
// alert, and an alert on a ratio sees nothing where a series is missing.
var (
	reloadResults     = []string{"applied", "refused"}
	submitResults     = []string{"ok", "error", "timeout", "lost", "down", "throttled"}
	failoverReasons   = []string{"down", "transient", "timeout", "lost", "receipt", "unsupported"}
	unmatchedOutcomes = []string{"held", "passed"}
	modemPathResults  = []string{"sent", "expired", "returned", "failed", "permanent"}
	northBindResults  = []string{"ok", "password", "system_id", "address", "system_type", "address_range"}
	northBindTypes    = []bindType{bindTX, bindRX, bindTRX}
	// seededStats are the receipt stats of SMPP 3.4 Appendix B, whose
	// receipts_total series exist at 0 for each carrier and the modems:
	// a carrier's first receipts, all within one scrape, would otherwise
	// be no increase() (SparelineCarrierNoReceipts fired for a carrier
	// that had sent every receipt).
	seededStats = []string{"DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE"}
)

// seedGatewayMetrics creates the gateway-wide series at 0.
func seedGatewayMetrics() {
	for _, r := range reloadResults {
		metricReloads.WithLabelValues(r)
	}
	metricLastReloadOK.Set(1) // a new process runs the config it checked at start
	for _, r := range northBindResults {
		metricNorthBinds.WithLabelValues(r)
	}
}

// seedCarrierMetrics creates a carrier's counters at 0.
func seedCarrierMetrics(carrier string) {
	for _, r := range submitResults {
		metricSubmits.WithLabelValues(carrier, r)
	}
	for _, r := range failoverReasons {
		metricFailovers.WithLabelValues(carrier, r)
	}
	for _, o := range unmatchedOutcomes {
		metricUnmatched.WithLabelValues(carrier, o)
	}
	for _, o := range heldOutcomes {
		metricHeld.WithLabelValues(carrier, o)
	}
	metricPossibleDup.WithLabelValues(carrier)
	metricCarrierBindRecycled.WithLabelValues(carrier)
	for _, st := range seededStats {
		metricReceipts.WithLabelValues(carrier, st)
	}
	for _, o := range lateOutcomes {
		metricLateAnswers.WithLabelValues(carrier, o)
	}
}

// seedAccountMetrics creates an account's northbound_sessions at 0 for
// each bind type, and its query_sm / cancel_sm counters at 0 for the
// answer that says the message was found and the one that says it was not.
func seedAccountMetrics(account string) {
	for _, b := range northBindTypes {
		metricNorthSessions.WithLabelValues(account, b.String()) // a gauge at 0: no session bound
	}
	metricNorthQueries.WithLabelValues(account, "query_sm", statusNameOK)
	metricNorthQueries.WithLabelValues(account, "query_sm", "ESME_RQUERYFAIL")
	metricNorthQueries.WithLabelValues(account, "cancel_sm", statusNameOK)
	metricNorthQueries.WithLabelValues(account, "cancel_sm", "ESME_RCANCELFAIL")
}

// seedModemPathMetrics creates modem_path_total at 0 for each result (a
// gateway with modems).
func seedModemPathMetrics() {
	for _, r := range modemPathResults {
		metricModemPath.WithLabelValues(r)
	}
	for _, st := range seededStats {
		metricReceipts.WithLabelValues("modem", st)
	}
}

// lazyCounter is one child of a CounterVec, looked up on first use and
// then kept: WithLabelValues hashes its label values and takes the vec's
// lock on every call, which the per-message path avoids (issue 6).
type lazyCounter struct {
	c atomic.Pointer[prometheus.Counter]
}

func (l *lazyCounter) get(v *prometheus.CounterVec, a, b string) prometheus.Counter {
	if c := l.c.Load(); c != nil {
		return *c
	}
	c := v.WithLabelValues(a, b)
	l.c.Store(&c)
	return c
}

// lazyObserver is lazyCounter for a HistogramVec with one label.
type lazyObserver struct {
	o atomic.Pointer[prometheus.Observer]
}

func (l *lazyObserver) get(v *prometheus.HistogramVec, a string) prometheus.Observer {
	if o := l.o.Load(); o != nil {
		return *o
	}
	o := v.WithLabelValues(a)
	l.o.Store(&o)
	return o
}

// submitLatency caches the children of submit_latency_seconds by path.
var submitLatencyCarrier, submitLatencyModem, submitLatencyError lazyObserver

func observeSubmitLatency(path string, seconds float64) {
	var l *lazyObserver
	switch path {
	case pathCarrier:
		l = &submitLatencyCarrier
	case pathModem:
		l = &submitLatencyModem
	case pathError:
		l = &submitLatencyError
	default:
		metricSubmitLatency.WithLabelValues(path).Observe(seconds)
		return
	}
	l.get(metricSubmitLatency, path).Observe(seconds)
}

// statusNameOK is the status label of an accepted submit.
var statusNameOK = statusName(statusOK)
