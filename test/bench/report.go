package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func limit(f *float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g", *f)
}

func redisCol(us float64) string {
	if us == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", us)
}

// WriteTable writes the headline figures against the floors and
// targets, then the raw load phases.
func (rep *Report) WriteTable(w io.Writer) error {
	m := rep.Machine
	fmt.Fprintf(w, "spareline bench: %d CPUs (%s), %s, %s; %.0f s\n\n", m.CPUs, m.Model, m.GoVersion, m.OS, rep.Seconds)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSTORE\tMETRIC\tVALUE\tUNIT\tFLOOR\tTARGET\tVERDICT\tNOTE")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.4g\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Store, r.Metric, r.Value, r.Unit,
			limit(r.Floor), limit(r.Target), r.Verdict, r.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SCENARIO\tSTORE\tPHASE\tSENT\tOK\tREFUSED\tNO ANSWER\tSECONDS\tOK/S\tOFFERED/S\tP50 MS\tP99 MS\tMAX MS\tCPU µS/MSG\tREDIS µS/MSG\t")
	for _, p := range rep.Phases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.2f\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%.1f\t%s\t\n", p.Scenario, p.Store, p.Name, p.Sent,
			p.OK, p.Refused, p.NoAnswer, p.Seconds, p.Rate, p.Offered, p.P50ms, p.P99ms, p.MaxMs, p.CPUus, redisCol(p.RedisCPUus))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintf(w, "\nFAILED:\n  %s\n", strings.Join(rep.Failures, "\n  "))
	}
	return nil
}
