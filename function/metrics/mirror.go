package metrics

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/mutator-dev/mutator/function/admission"
)

// mirrorInstruments count the mirror check's fallbacks from the outcomes.
// The check's own instruments (checks, lookups, latency, cache, circuit) are
// package mirror's, on the same MeterProvider.
type mirrorInstruments struct {
	fallbacks metric.Int64Counter
	sets      sync.Map // fallbackKey -> metric.MeasurementOption
}

type fallbackKey struct{ action, reason string }

func (mi *mirrorInstruments) init(meter metric.Meter) error {
	var err error
	if mi.fallbacks, err = meter.Int64Counter("mutator.mirror.fallbacks",
		metric.WithDescription("Rewritten images whose mirror check did not come back present, by action (deny, original: admitted as written, outside the mirror; warn; rewrite: unchecked; copy: denied, the copier asked to copy it) and reason (missing, error, timeout, circuit-open; skipped: not checked, past the review's lookup cap, deadline or in-flight limit)."),
		metric.WithUnit("{image}")); err != nil {
		return fmt.Errorf("creating mirror fallbacks counter: %w", err)
	}
	return nil
}

func (mi *mirrorInstruments) observe(ctx context.Context, o admission.Decision) {
	for _, f := range o.MirrorFallbacks {
		// A summary entry stands for 1+More images.
		mi.fallbacks.Add(ctx, int64(1+f.More), mi.set(
			bounded(string(f.Action), "deny", "original", "warn", "rewrite", "copy"),
			bounded(string(f.Reason), "missing", "error", "timeout", "circuit-open", "skipped")))
	}
}

func (mi *mirrorInstruments) set(action, reason string) metric.MeasurementOption {
	key := fallbackKey{action, reason}
	if v, ok := mi.sets.Load(key); ok {
		return v.(metric.MeasurementOption)
	}
	v, _ := mi.sets.LoadOrStore(key, metric.WithAttributeSet(attribute.NewSet(
		attribute.String("action", action), attribute.String("reason", reason))))
	return v.(metric.MeasurementOption)
}
