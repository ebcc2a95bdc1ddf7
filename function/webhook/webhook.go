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
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/logging"
	knwebhook "knative.dev/pkg/webhook"
)

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
	// chunks are readBody's read buffers: a connection waiting for its
	// body holds one, whatever size the body declares.
	chunks sync.Pool
	budget *budget
	// clientCert: see Options.RequireClientCert.
	clientCert bool
	// controllers by path, for reviews over knative's limit.
	controllers map[string]knwebhook.AdmissionController

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
	// DefaultBodyBudget), counted as they arrive; a review whose body does
	// not fit is denied (HTTP 200, code 429 in the status) so that the
	// API server retries it rather than admitting it.
	BodyBudget int64
	// RequireClientCert answers 401 on the admission path to a client
	// without a verified TLS client certificate (TLS_CLIENT_CA_FILE): only
	// the API server, given a certificate, may send reviews.
	RequireClientCert bool
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
	h := &Handler{review: wh, logger: opts.Logger, budget: newBudget(opts.BodyBudget), clientCert: opts.RequireClientCert, controllers: map[string]knwebhook.AdmissionController{}}
	if err := h.initMetrics(opts.MeterProvider); err != nil {
		return nil, err
	}
	h.bufs.New = func() any { return new(bytes.Buffer) }
	h.chunks.New = func() any { return new([readChunk]byte) }
	h.ready.Store(true)
	h.mux.HandleFunc("GET "+ReadinessPath, h.readiness)
	h.mux.HandleFunc("GET "+LivenessPath, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	for _, c := range controllers {
		h.controllers[c.Path()] = c
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
		metric.WithDescription("Requests refused before processing: too-large (over the largest review an API server sends) or budget (the bodies in flight would exceed the memory budget); reviews are refused with an AdmissionReview denial."),
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

// Body read deadlines: a body must keep arriving at bodyRate after
// bodyGrace, or the connection is closed. The API server sends a review it
// holds in memory at once, so only a client that holds the handler open on
// purpose meets them; with them, a body that never comes costs a connection
// for bodyGrace, not the server's ReadTimeout.
const (
	bodyGrace = 2 * time.Second
	bodyRate  = 4 << 20 // bytes per second
	readChunk = 16 << 10
)

// guard rejects what knative's handler would panic on or answer unclearly,
// reads the body within the memory budget, and hands it to knative's
// handler, or past knative's limit to the controller itself (admitDirect).
// Whatever it refuses that came from an API server (a body with a review's
// uid) is refused with an AdmissionReview denial, never an HTTP error that
// failurePolicy Ignore would turn into an admission.
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
	if h.clientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		// Not the API server: no review is refused by this (the API
		// server presents its certificate), so no failurePolicy applies.
		http.Error(w, "mutator: a client certificate signed by TLS_CLIENT_CA_FILE is required", http.StatusUnauthorized)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		http.Error(w, fmt.Sprintf("mutator: Content-Type %q, want application/json", ct), http.StatusUnsupportedMediaType)
		return
	}
	buf := h.bufs.Get().(*bytes.Buffer)
	defer h.putBuffer(buf)
	buf.Reset()
	res := h.budget.reserve(r.Context(), clientOf(r), r.ContentLength)
	defer res.release()
	if err := h.readBody(w, r, buf, res); err != nil {
		switch {
		case errors.Is(err, errTooLarge):
			h.refused.Add(r.Context(), 1, h.refusedSet["too-large"])
			deny(w, buf.Bytes(), http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge,
				fmt.Sprintf("mutator: the AdmissionReview is over %d bytes, more than any API server sends for an object etcd can store (see the webhook's documentation)", MaxReviewBytes))
		case errors.Is(err, errOverBudget):
			h.refused.Add(r.Context(), 1, h.refusedSet["budget"])
			deny(w, buf.Bytes(), http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
				fmt.Sprintf("mutator: too many large reviews in flight (memory budget %d bytes); retry", h.budget.size))
		default:
			http.Error(w, "mutator: reading request body: "+err.Error(), http.StatusBadRequest)
		}
		return
	}
	if err := checkReview(buf.Bytes()); err != nil {
		http.Error(w, "mutator: malformed AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
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
	if buf.Len() > knativeMaxBody {
		// The body is handed over, not kept here, so that it can be
		// collected as soon as it is decoded.
		body := buf.Bytes()
		*buf = bytes.Buffer{}
		admitDirect(w, r, h.controllers[r.URL.Path], body)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
	r.ContentLength = int64(buf.Len())
	h.review.ServeHTTP(w, r)
}

var (
	errTooLarge   = errors.New("body over MaxReviewBytes")
	errOverBudget = errors.New("body does not fit the memory budget")
)

// readBody reads the body into buf, growing res as bytes arrive, never
// before: a client that sends headers and no body holds no budget, and one
// that trickles holds only what it sent, until the deadline that scales
// with what it sent cuts it off.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer, res *reservation) error {
	if r.ContentLength > MaxReviewBytes {
		// Read only what names the review, to answer it.
		_, _ = buf.ReadFrom(io.LimitReader(r.Body, readChunk))
		return errTooLarge
	}
	rc := http.NewResponseController(w)
	start := time.Now()
	// Not every ResponseWriter supports deadlines (func-go's wrappers may
	// not); the server's ReadTimeout bounds the read there.
	_ = rc.SetReadDeadline(start.Add(bodyGrace))
	scratch := h.chunks.Get().(*[readChunk]byte)
	defer h.chunks.Put(scratch)
	for {
		n, err := r.Body.Read(scratch[:])
		if n > 0 {
			total := int64(buf.Len() + n)
			if total > MaxReviewBytes {
				return errTooLarge
			}
			waitStart := time.Now()
			ok := res.grow(int64(n), total)
			// Time spent waiting for the huge slot is not the client's.
			start = start.Add(time.Since(waitStart))
			if !ok {
				if buf.Len() == 0 {
					// One chunk, outside the budget, so that the
					// denial can name the review's uid.
					buf.Write(scratch[:n])
				}
				return errOverBudget
			}
			if buf.Available() < n {
				grow(buf, n, r.ContentLength)
			}
			buf.Write(scratch[:n])
			_ = rc.SetReadDeadline(start.Add(bodyGrace + time.Duration(total)*time.Second/bodyRate))
		}
		if errors.Is(err, io.EOF) {
			// Cleared once the body is in: an expired deadline would
			// cancel the request's context (net/http's background read)
			// while the review is processed. After an error it stays, so
			// that the server closes the connection instead of waiting
			// to discard the rest of the body.
			_ = rc.SetReadDeadline(time.Time{})
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// grow makes room in buf for n more bytes of a body that declares length
// bytes (-1: unknown). bytes.Buffer doubles its capacity, so a 17 MiB review
// would briefly hold 16 and 32 MiB buffers; here the capacity doubles up to
// knative's limit and then goes straight to the declared length (only the
// one review holding the huge slot gets that far).
func grow(buf *bytes.Buffer, n int, length int64) {
	need := buf.Len() + n
	c := max(2*buf.Cap(), need, 4<<10)
	if length >= int64(need) && (c > int(length) || need > knativeMaxBody) {
		c = int(length)
	}
	nb := make([]byte, buf.Len(), c)
	copy(nb, buf.Bytes())
	*buf = *bytes.NewBuffer(nb)
}

// clientOf is the remote host of a request, the unit of the per-client
// share of the budget.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
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
