package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/modem"
	"github.com/spareline/spareline/modem/sms"
	"github.com/spareline/spareline/store"
)

// heldESM is the esm_class of each delivery held for account.
func heldESM(t *testing.T, st store.Store, account string) []byte {
	t.Helper()
	list, err := st.PendingDeliveries(context.Background(), account, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, del := range list {
		sm, err := ParseShortMessage(del.Body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sm.ESMClass)
	}
	return out
}

// A temporary status report (TP-ST 0x20-0x3F: the SC is still trying)
// reaches a platform that asked for intermediate notifications
// (registered_delivery 0x10) as an intermediate one (esm_class 0x20, stat
// ENROUTE), leaves the message open, and the final receipt follows; a
// platform that asked for the final receipt only gets that one.
func TestTemporaryStatusReportIsAnIntermediateReceiptWhenAsked(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.NewNop())
	ctx := context.Background()
	asked := putTestMessage(t, st, d, "acct", func(m *store.Message) { m.State, m.RegDeliv = store.StateModemSent, 0x11 })
	final := putTestMessage(t, st, d, "other", func(m *store.Message) { m.State, m.RegDeliv = store.StateModemSent, 0x01 })
	for _, m := range []*store.Message{asked, final} {
		for _, tpst := range []byte{0x20, 0x21, 0x00} {
			fo.handleReport(ctx, modem.Report{ID: m.ID, Part: 1, Parts: 1, Modem: "m0", Status: &sms.StatusReport{MR: 1, Status: tpst}})
			if tpst == 0x21 {
				got, err := st.GetMessage(ctx, m.ID)
				if err != nil || got.State != store.StateModemSent || got.FinalStat != "" {
					t.Fatalf("after temporary reports the message is %+v, %v; want still modemsent", got, err)
				}
			}
		}
	}
	if stats, _ := heldReceipts(t, st, "acct"); strings.Join(stats, " ") != "ENROUTE ENROUTE DELIVRD" {
		t.Fatalf("registered_delivery 0x11: receipts %v, want ENROUTE ENROUTE DELIVRD", stats)
	}
	if esm := heldESM(t, st, "acct"); len(esm) != 3 || esm[0] != 0x20 || esm[1] != 0x20 || esm[2] != 0x04 {
		t.Fatalf("esm_class % x, want 20 20 04", esm)
	}
	if stats, _ := heldReceipts(t, st, "other"); strings.Join(stats, " ") != "DELIVRD" {
		t.Fatalf("registered_delivery 0x01: receipts %v, want DELIVRD only", stats)
	}
}

// A final status report that comes after modem_receipt_timeout (the
// platform got ACCEPTD) is recorded on the message (GET /message and
// query_sm show the real outcome), logged at info with its stat and
// counted; the platform gets no second final receipt.
func TestLateFinalStatusReportIsRecordedNotSent(t *testing.T) {
	st := openTestBolt(t)
	d := newTestDispatcher(t, st)
	core, logs := observer.New(zap.InfoLevel)
	fo := NewFailover(d, &fakePool{}, FailoverConfig{ModemReceiptTimeout: time.Hour}, zap.New(core))
	ctx := context.Background()
	m := putTestMessage(t, st, d, "acct", func(m *store.Message) { m.State, m.RegDeliv = store.StateModemSent, 0x01 })
	fo.fireTimer(ctx, m.ID)
	accepted, err := st.GetMessage(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(metricModemLateReports.WithLabelValues("UNDELIV"))
	fo.handleReport(ctx, modem.Report{ID: m.ID, Part: 1, Parts: 1, Modem: "m0", Status: &sms.StatusReport{MR: 1, Status: 0x41}})

	if stats, _ := heldReceipts(t, st, "acct"); strings.Join(stats, " ") != "ACCEPTD" {
		t.Fatalf("receipts %v, want the ACCEPTD one only", stats)
	}
	got, err := st.GetMessage(ctx, m.ID)
	if err != nil || got.State != store.StateDone || got.FinalStat != "UNDELIV" || got.FinalErr != "065" ||
		!strings.Contains(got.Note, "after modem_receipt_timeout") {
		t.Fatalf("message after the late report: %+v, %v; want done, UNDELIV, err 065", got, err)
	}
	if !got.Done.After(accepted.Done) {
		t.Fatalf("final date %v, want the late report's time, after the ACCEPTD's %v (query_sm's final_date)", got.Done, accepted.Done)
	}
	if n := testutil.ToFloat64(metricModemLateReports.WithLabelValues("UNDELIV")) - before; n != 1 {
		t.Fatalf("spareline_modem_late_reports_total{stat=UNDELIV} grew by %v, want 1", n)
	}
	entries := logs.FilterMessageSnippet("after modem_receipt_timeout").All()
	if len(entries) != 1 || entries[0].Level != zap.InfoLevel || entries[0].ContextMap()["stat"] != "UNDELIV" {
		t.Fatalf("log %v, want one info line with stat UNDELIV", entries)
	}
	// A second copy of the report changes nothing more.
	fo.handleReport(ctx, modem.Report{ID: m.ID, Part: 1, Parts: 1, Modem: "m0", Status: &sms.StatusReport{MR: 1, Status: 0x41}})
	if n := testutil.ToFloat64(metricModemLateReports.WithLabelValues("UNDELIV")) - before; n != 1 {
		t.Fatalf("a repeated late report counted again (%v)", n)
	}
}
