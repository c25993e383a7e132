//go:build !prommetrics

package modem

// The Prometheus metrics live in metrics_prom.go (spareline_modem_up{modem},
// spareline_modem_signal_dbm{modem}, spareline_modem_sends_total{modem,result}).
// They are behind the "prommetrics" build tag only until go.sum carries the
// client_golang dependencies (beorn7/perks, client_model, common, procfs,
// protobuf); then delete this file and the tag.

func metricUp(modem string, up bool)     {}
func metricSignal(modem string, dbm int) {}
func metricSend(modem, result string)    {}
