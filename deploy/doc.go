// Package deploy holds the files that run spareline in production: the
// systemd unit (spareline.service), the Grafana dashboard
// (grafana-dashboard.json) and the Prometheus alert rules (alerts.yml). It
// has no code; its test keeps those files true to the metrics the code
// registers, so that a renamed metric breaks the build and not the 3 a.m.
// page. docs/operations.md explains how to use them.
package deploy
