package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// WriteText prints the summary for people.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "targets     %s\n", strings.Join(s.Targets, ", "))
	switch s.Mode {
	case "open":
		fmt.Fprintf(&b, "mode        open loop, %g req/s, at most %d in flight\n", s.Rate, s.MaxInFlight)
	default:
		fmt.Fprintf(&b, "mode        closed loop, %d workers\n", s.Workers)
	}
	fmt.Fprintf(&b, "requests    %d in %s: ok %d, errors %d", s.Requests, s.Elapsed, s.OK, s.Errors)
	if s.Retried > 0 {
		fmt.Fprintf(&b, ", retried on another target %d", s.Retried)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "throughput  %.1f req/s\n", s.Throughput)
	switch {
	case len(s.Protocols) > 1:
		fmt.Fprintf(&b, "protocol    mixed: %s\n", countsText(s.Protocols))
	case s.Protocol != "":
		fmt.Fprintf(&b, "protocol    %s\n", s.Protocol)
	}
	l := s.Latency
	fmt.Fprintf(&b, "latency     min %s  mean %s  p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		l.Min, l.Mean, l.P50, l.P90, l.P99, l.P999, l.Max)
	if s.Mode == "open" {
		fmt.Fprintf(&b, "schedule    %d sends due, %d missed (all %d in flight), %d late, max send delay %s\n",
			s.Scheduled, s.Missed, s.MaxInFlight, s.Late, s.MaxSendDelay)
	}
	if s.Errors > 0 {
		fmt.Fprintf(&b, "errors      %s\n", countsText(s.ErrorsByKind))
		for _, k := range sortedKeys(s.ErrorSamples) {
			for _, m := range s.ErrorSamples[k] {
				fmt.Fprintf(&b, "  %s: %s\n", k, m)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func countsText(m map[string]uint64) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fmtDuration prints a latency with three significant digits in a unit
// that suits it: 850µs, 1.23ms, 12.3ms, 1.50s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
