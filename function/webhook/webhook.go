// Package webhook assembles the HTTP handler every mode serves: health
// endpoints, a guard for malformed requests, and knative.dev/pkg's webhook,
// which does the AdmissionReview plumbing around an admission controller.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
	"knative.dev/pkg/logging"
	knwebhook "knative.dev/pkg/webhook"
)

// MaxBodyBytes bounds a request body: the API server's own limit on a request
// (3 MiB), which is also what knative's handler reads at most.
const MaxBodyBytes = 3 << 20

// Health paths, the same as func-go's so that one probe spec fits every mode.
const (
	ReadinessPath = "/health/readiness"
	LivenessPath  = "/health/liveness"
)

// Handler serves admission reviews and health probes.
type Handler struct {
	mux    http.ServeMux
	review http.Handler // knative's webhook
	logger *zap.Logger
	ready  atomic.Bool
	bufs   sync.Pool
	budget *budget

	requests   metric.Int64Counter // by protocol: which HTTP version clients use
	refused    metric.Int64Counter // by reason: requests answered without reading them
	protoSet   map[string]metric.MeasurementOption
	refusedSet map[string]metric.MeasurementOption
}

// Options configure New.
type Options struct {
	// Logger receives the handler's own messages (rejected requests,
	// recovered panics).
	Logger *zap.Logger
	// MeterProvider receives knative's webhook metrics and the handler's
	// own; nil is the global one.
	MeterProvider metric.MeterProvider
	// BodyBudget bounds the bytes of request bodies held at once (0:
	// DefaultBodyBudget); a request whose body does not fit is answered
	// 429 at once, without reading it.
	BodyBudget int64
}

// Label values of the handler's counters: fixed sets, whatever clients send.
var (
	protocols      = []string{"HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "other"}
	refusedReasons = []string{"too-large", "budget"}
)

// New wraps the admission controllers in knative.dev/pkg's webhook and adds
// health endpoints and the request guard. The handler starts ready.
func New(ctx context.Context, opts Options, controllers ...knwebhook.AdmissionController) (*Handler, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	// knative's handler logs every request at info level, formatting the
	// whole *http.Request with %#v; that is slow and noisy at the rate Pods
	// are created, so it only gets a logger for warnings and errors.
	knLogger := opts.Logger.Sugar()
	if opts.Logger.Core().Enabled(zap.InfoLevel) {
		// Raising an error-level logger to warn would lower it: zap refuses.
		knLogger = opts.Logger.WithOptions(zap.IncreaseLevel(zap.WarnLevel)).Sugar()
	}
	ctx = logging.WithLogger(ctx, knLogger)
	// No SecretName: TLS is terminated by our own server (or queue-proxy),
	// never by knative's Run, which does not exit on SIGTERM.
	ctx = knwebhook.WithOptions(ctx, knwebhook.Options{ServiceName: "mutator", MeterProvider: opts.MeterProvider})
	cs := make([]any, len(controllers))
	for i, c := range controllers {
		cs[i] = c
	}
	wh, err := knwebhook.New(ctx, cs)
	if err != nil {
		return nil, fmt.Errorf("creating knative webhook: %w", err)
	}
	h := &Handler{review: wh, logger: opts.Logger, budget: newBudget(opts.BodyBudget)}
	if err := h.initMetrics(opts.MeterProvider); err != nil {
		return nil, err
	}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	h.ready.Store(true)
	h.mux.HandleFunc("GET "+ReadinessPath, h.readiness)
	h.mux.HandleFunc("GET "+LivenessPath, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	for _, c := range controllers {
		h.mux.HandleFunc(c.Path(), h.guard)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("mutator: no handler for %s; admission reviews go to POST %s", r.URL.Path, pathsOf(controllers)), http.StatusNotFound)
	})
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// SetReady switches the readiness probe; a draining server reports not ready
// so that endpoints stop sending it new requests.
func (h *Handler) SetReady(ready bool) { h.ready.Store(ready) }

// Ready reports the readiness state.
func (h *Handler) Ready() bool { return h.ready.Load() }

func (h *Handler) readiness(w http.ResponseWriter, _ *http.Request) {
	if !h.ready.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (h *Handler) initMetrics(mp metric.MeterProvider) error {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter("github.com/mutator-dev/mutator/function/webhook")
	var err error
	if h.requests, err = meter.Int64Counter("mutator.http.requests",
		metric.WithDescription("Requests to the admission path, by HTTP protocol version (the API server uses HTTP/1.1 keep-alive)."),
		metric.WithUnit("{request}")); err != nil {
		return fmt.Errorf("creating requests counter: %w", err)
	}
	if h.refused, err = meter.Int64Counter("mutator.http.refused",
		metric.WithDescription("Requests answered without reading their body: too-large (413) or budget (429, the bodies in flight would exceed the memory budget)."),
		metric.WithUnit("{request}")); err != nil {
		return fmt.Errorf("creating refused counter: %w", err)
	}
	h.protoSet = attributeSets("protocol", protocols)
	h.refusedSet = attributeSets("reason", refusedReasons)
	return nil
}

// attributeSets builds one measurement option per value, once: building an
// attribute set sorts and allocates, which the review path should not do.
func attributeSets(key string, values []string) map[string]metric.MeasurementOption {
	m := make(map[string]metric.MeasurementOption, len(values))
	for _, v := range values {
		m[v] = metric.WithAttributeSet(attribute.NewSet(attribute.String(key, v)))
	}
	return m
}

// guard rejects what knative's handler would panic on or answer unclearly,
// and what does not fit the memory budget, then hands the buffered body on.
// knative's handler at the pinned version dereferences review.Request
// without a nil check.
func (h *Handler) guard(w http.ResponseWriter, r *http.Request) {
	proto := h.protoSet[r.Proto]
	if proto == nil {
		proto = h.protoSet["other"]
	}
	h.requests.Add(r.Context(), 1, proto)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "mutator: admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > MaxBodyBytes {
		h.refused.Add(r.Context(), 1, h.refusedSet["too-large"])
		http.Error(w, fmt.Sprintf("mutator: request body of %d bytes is over the %d-byte limit", r.ContentLength, MaxBodyBytes), http.StatusRequestEntityTooLarge)
		return
	}
	// Reserve the body's bytes before reading any: a body that does not
	// fit is refused without being read, so that no mix of requests can
	// take the process past its memory limit. Without a Content-Length
	// (never from the API server) the largest allowed body is reserved.
	size := r.ContentLength
	if size < 0 {
		size = MaxBodyBytes
	}
	release, ok := h.budget.acquire(size)
	if !ok {
		h.refused.Add(r.Context(), 1, h.refusedSet["budget"])
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("mutator: too many large requests in flight: a %d-byte body does not fit the %d-byte budget for request bodies now; retry", size, h.budget.size), http.StatusTooManyRequests)
		return
	}
	defer release()
	buf := h.bufs.Get().(*bytes.Buffer)
	defer h.putBuffer(buf)
	buf.Reset()
	if r.ContentLength > 0 {
		// One allocation of the right size instead of doubling growth.
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.refused.Add(r.Context(), 1, h.refusedSet["too-large"])
			http.Error(w, fmt.Sprintf("mutator: request body over %d bytes", MaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "mutator: reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := checkReview(buf.Bytes()); err != nil {
		http.Error(w, "mutator: malformed AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
	defer func() {
		// Belt and braces for what checkReview cannot see without a full
		// parse (a duplicate "request" key ending in null): a panic in the
		// plumbing becomes a client error, not a dropped connection.
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			h.logger.Warn("recovered panic in admission handler", zap.Any("panic", p))
			http.Error(w, "mutator: malformed AdmissionReview", http.StatusBadRequest)
		}
	}()
	h.review.ServeHTTP(w, r)
}

func (h *Handler) putBuffer(b *bytes.Buffer) {
	// Keep pooled buffers to the size of ordinary reviews so one huge
	// request does not pin megabytes for the life of the process.
	if b.Cap() <= 256<<10 {
		h.bufs.Put(b)
	}
}

// checkReview verifies that the body is a JSON object whose first "request"
// member is an object. It reads tokens only up to that member, which the API
// server sends third, so it costs next to nothing on real reviews.
func checkReview(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("not JSON: %w", err)
		}
		if key, _ := tok.(string); key == "request" {
			tok, err := dec.Token()
			if err != nil {
				return fmt.Errorf("not JSON: %w", err)
			}
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return errors.New(`"request" is not an object`)
			}
			return nil
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("not JSON: %w", err)
		}
	}
	return errors.New(`no "request" member`)
}

func pathsOf(cs []knwebhook.AdmissionController) string {
	var b bytes.Buffer
	for i, c := range cs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Path())
	}
	return b.String()
}
