// Package metrics records what the webhook does as OpenTelemetry metrics and
// serves them in the Prometheus text format. knative.dev/pkg's webhook reports
// its handler metrics through the same MeterProvider.
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/mutator-dev/mutator/function/admission"
)

// Metrics owns a MeterProvider whose only reader is a Prometheus registry.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry

	reviews  metric.Int64Counter
	changes  metric.Int64Counter
	duration metric.Float64Histogram
	mirror   mirrorInstruments

	// Attribute sets are few (resource x operation x result) and building
	// one sorts and allocates, so each is built once.
	sets sync.Map // setKey -> metric.MeasurementOption
}

// New creates the provider, its instruments and the registry behind Handler.
func New() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("creating Prometheus exporter: %w", err)
	}
	m := &Metrics{provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithView(boundKnativeAttributes)), registry: reg}
	meter := m.provider.Meter("github.com/mutator-dev/mutator")
	if m.reviews, err = meter.Int64Counter("mutator.reviews",
		metric.WithDescription("Admission reviews answered, by resource, operation and result."),
		metric.WithUnit("{review}")); err != nil {
		return nil, fmt.Errorf("creating reviews counter: %w", err)
	}
	if m.changes, err = meter.Int64Counter("mutator.changes",
		metric.WithDescription("Fields changed (or, in audit mode, that would change), by kind."),
		metric.WithUnit("{change}")); err != nil {
		return nil, fmt.Errorf("creating changes counter: %w", err)
	}
	if m.duration, err = meter.Float64Histogram("mutator.review.duration",
		metric.WithDescription("Time spent deciding a review, from decoded request to response."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)); err != nil {
		return nil, fmt.Errorf("creating duration histogram: %w", err)
	}
	if err := m.mirror.init(meter); err != nil {
		return nil, err
	}
	return m, nil
}

// MeterProvider is where other components (knative's webhook, the audit
// trail) register their instruments.
func (m *Metrics) MeterProvider() metric.MeterProvider { return m.provider }

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Observe implements admission.Observer.
func (m *Metrics) Observe(ctx context.Context, o admission.Decision) {
	attrs := m.set(bounded(o.Request.Resource.Resource, "pods", "persistentvolumeclaims"),
		bounded(string(o.Request.Operation), "CREATE", "UPDATE", "DELETE", "CONNECT"), string(o.Verdict))
	m.reviews.Add(ctx, 1, attrs)
	m.duration.Record(ctx, o.Duration.Seconds(), attrs)
	for _, c := range o.Changes {
		m.changes.Add(ctx, 1, m.set("", "", string(c.Kind)))
	}
	m.mirror.observe(ctx, o)
}

func (m *Metrics) set(resource, operation, resultOrKind string) metric.MeasurementOption {
	// A struct key, not a joined string: building one costs no allocation
	// on the review path.
	key := setKey{resource, operation, resultOrKind}
	if v, ok := m.sets.Load(key); ok {
		return v.(metric.MeasurementOption)
	}
	var kvs []attribute.KeyValue
	if resource == "" {
		kvs = []attribute.KeyValue{attribute.String("kind", resultOrKind)}
	} else {
		kvs = []attribute.KeyValue{
			attribute.String("resource", resource),
			attribute.String("operation", operation),
			attribute.String("result", resultOrKind),
		}
	}
	v, _ := m.sets.LoadOrStore(key, metric.WithAttributeSet(attribute.NewSet(kvs...)))
	return v.(metric.MeasurementOption)
}

type setKey struct{ resource, operation, resultOrKind string }

// knativeHandlerMetric is knative.dev/pkg's webhook handler histogram. Its
// attributes are copied from the review (kind, group, version, subresource,
// operation), which anyone who can reach the port chooses.
const knativeHandlerMetric = "kn.webhook.handler.duration"

// knativeKnown are the attribute values of knativeHandlerMetric that the
// webhook can see from a real API server; any other value is dropped from
// the series (the attribute is left out), so that made-up kinds cannot grow
// the series count or the /metrics page.
var knativeKnown = map[attribute.Key][]string{
	"kn.webhook.resource.kind":    {"Pod", "PersistentVolumeClaim"},
	"kn.webhook.resource.group":   {""},
	"kn.webhook.resource.version": {"v1"},
	"kn.webhook.subresource":      {"", "ephemeralcontainers", "status"},
	"kn.webhook.operation.type":   {"CREATE", "UPDATE", "DELETE", "CONNECT"},
	"kn.webhook.operation.status": {"success", "failure"},
	"kn.webhook.type":             {"admission"},
}

// boundKnativeAttributes is an OpenTelemetry view that keeps only known
// attribute values on knative's handler metric.
func boundKnativeAttributes(inst sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	if inst.Name != knativeHandlerMetric {
		return sdkmetric.Stream{}, false
	}
	return sdkmetric.Stream{
		Name: inst.Name, Description: inst.Description, Unit: inst.Unit,
		AttributeFilter: func(kv attribute.KeyValue) bool {
			known, ok := knativeKnown[kv.Key]
			return ok && bounded(kv.Value.AsString(), known...) != "other"
		},
	}, true
}

// bounded keeps label values to a known set: they come from the request, and
// a client sending made-up values must not grow the series without bound.
func bounded(v string, known ...string) string {
	for _, k := range known {
		if v == k {
			return v
		}
	}
	return "other"
}

// Shutdown flushes and stops the provider.
func (m *Metrics) Shutdown(ctx context.Context) error {
	if err := m.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutting down meter provider: %w", err)
	}
	return nil
}
