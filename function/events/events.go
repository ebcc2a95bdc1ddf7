// Package events is the webhook's audit trail: every review that changed an
// object (or, in audit mode, would have) becomes one CloudEvent sent to the
// sink Knative injects as K_SINK.
//
// Observe runs on the admission request path, so sending is decoupled from it
// by a queue drained by one background worker. The queue is bounded in events
// and in bytes, and each event lists at most MaxListed entries of each list,
// so a slow or dead sink costs dropped events, counted in metrics, never
// admission latency or memory, however large the reviewed objects.
package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/internal/defaults"
)

// Defaults for the zero values of Options.
const (
	DefaultSource     = "mutator"
	DefaultQueueSize  = 1024
	DefaultQueueBytes = 4 << 20 // 4 MiB
	DefaultMaxListed  = 100
	DefaultRetries    = 3
	DefaultTimeout    = 5 * time.Second
	DefaultBackoff    = 100 * time.Millisecond
)

// eventOverhead is what an event holds besides its encoded data and its
// attribute strings: the event context, its parsed source, time and content
// type, and its queue slot. Measured at about 400 bytes; rounded up.
const eventOverhead = 512

// maxBackoff caps the exponential backoff so that a large Retries does not
// park the worker for minutes on one event while the queue overflows.
const maxBackoff = 10 * time.Second

// TypePrefix starts every event type: dev.mutator.<resource>.<what>, where
// resource is the lower-cased kind ("pod", "persistentvolumeclaim") and what
// is "mutated" (enforce mode), "audited" (audit mode) or "denied" (a
// refused Pod).
const TypePrefix = "dev.mutator."

// Options configure New.
type Options struct {
	// Sink is the absolute http(s) URL events are POSTed to (K_SINK). Required.
	Sink string
	// Source is the CloudEvents source attribute; "" is DefaultSource.
	Source string
	// QueueSize bounds the number of events waiting to be sent; 0 or less
	// is DefaultQueueSize. When the queue is full new events are dropped.
	QueueSize int
	// QueueBytes bounds the memory of the events waiting to be sent and of
	// the one being sent, each counted as its encoded data plus its
	// attributes and a fixed overhead; 0 or less is DefaultQueueBytes. An
	// event that does not fit is dropped; smaller ones may still fit.
	QueueBytes int64
	// MaxListed is how many entries of each list of an event's data
	// (changes, refused, mirrorFallbacks) are carried in full; the rest are
	// only counted (Data.Truncated and Data.Omitted*). 0 or less is
	// DefaultMaxListed.
	MaxListed int
	// Retries is how many times a failed send is retried; 0 is
	// DefaultRetries, a negative value disables retries.
	Retries int
	// Timeout bounds each send attempt; 0 or less is DefaultTimeout.
	Timeout time.Duration
	// Backoff is the delay before the first retry, doubled (with jitter)
	// before each next one; 0 or less is DefaultBackoff.
	Backoff time.Duration
	// Logger receives send failures and drops, sampled to one message of
	// each kind per minute so that a dead sink does not flood the log. nil
	// discards them.
	Logger *zap.Logger
	// MeterProvider receives the counters mutator.events.sent, .dropped and
	// .failed; nil records nothing.
	MeterProvider metric.MeterProvider
}

// Data is the payload of an event: what was reviewed and what changed. It
// deliberately carries neither the object nor anything read from it beyond
// the changes, so that env values or secret contents never leave the webhook.
type Data struct {
	Operation   string `json:"operation"`
	Resource    string `json:"resource"`
	Subresource string `json:"subresource"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	// GenerateName is set when the object has no name yet (Pods of a
	// ReplicaSet on CREATE), so that the event still says what it was.
	GenerateName string   `json:"generateName,omitempty"`
	UID          string   `json:"uid"`
	User         string   `json:"user"`
	DryRun       bool     `json:"dryRun"`
	Mode         string   `json:"mode"` // "enforce" or "audit"
	Changes      []Change `json:"changes"`
	// Refused lists the images no allowed registry can serve: the reason
	// for a denial, or (audit mode) for the denial that enforce mode would
	// make.
	Refused []Refusal `json:"refused,omitempty"`
	// MirrorFallbacks lists the images whose mirror check (MIRROR_CHECK)
	// did not come back present, and what was done. Action "original"
	// means the image was admitted as written, outside the mirror; an
	// enforce-mode event may carry only these, with no changes.
	MirrorFallbacks []MirrorFallback `json:"mirrorFallbacks,omitempty"`
	// Truncated is set when one of the lists above was cut to its first
	// entries (Options.MaxListed, 100 by default) to bound the event's
	// size; the Omitted counts say how many entries of each list were left
	// out. Absent (false and zeros) when every entry is listed.
	Truncated              bool `json:"truncated,omitempty"`
	OmittedChanges         int  `json:"omittedChanges,omitempty"`
	OmittedRefused         int  `json:"omittedRefused,omitempty"`
	OmittedMirrorFallbacks int  `json:"omittedMirrorFallbacks,omitempty"`
}

// MirrorFallback is one image in Data.MirrorFallbacks.
type MirrorFallback struct {
	Where  string `json:"where"`
	Image  string `json:"image"`  // as written
	Mirror string `json:"mirror"` // the rewritten reference checked
	Reason string `json:"reason"` // missing, error, timeout, circuit-open
	Action string `json:"action"` // deny, original, warn, copy, rewrite
}

// Refusal is one refused image in Data.
type Refusal struct {
	Where  string `json:"where"`
	Reason string `json:"reason"`
}

// Change is one changed field in Data. It is a separate type from
// mutation.Change so that the event schema, a contract with consumers, does
// not move when the rules' internals do.
type Change struct {
	Kind  string `json:"kind"`
	Path  string `json:"path"`
	Where string `json:"where"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Emitter turns admission outcomes into CloudEvents and sends them in the
// background. It implements admission.Observer.
type Emitter struct {
	client    cloudevents.Client
	idle      interface{ CloseIdleConnections() }
	source    string
	retries   int
	timeout   time.Duration
	backoff   time.Duration
	budget    int64 // QueueBytes
	maxListed int
	logger    *zap.Logger

	// mu guards closed and the closing of queue: Observe holds it for
	// reading around its non-blocking send, so that Close can never close
	// the channel under it. It is never held across I/O.
	mu     sync.RWMutex
	closed bool
	queue  chan queued

	// held is the size of the events queued or in flight: reserved by
	// Observe before it enqueues, released by the worker when the event
	// is sent, failed or dropped. It never exceeds budget; peak is its
	// highest value so far.
	held, peak atomic.Int64

	// stop is cancelled when Close gives up draining; it aborts the
	// send in flight and any backoff, and the rest of the queue is dropped.
	stop    context.Context
	abandon context.CancelFunc
	done    chan struct{} // closed when the worker has exited

	sent, dropped, failed    atomic.Uint64
	mSent, mDropped, mFailed metric.Int64Counter
}

var _ admission.Observer = (*Emitter)(nil)

// queued is an event in the queue with the size reserved for it.
type queued struct {
	ev   cloudevents.Event
	size int64
}

// New validates the options, creates the CloudEvents HTTP client and starts
// the worker. ctx's values are kept for sending, but its cancellation does
// not stop the emitter: a signal context is cancelled exactly when the queue
// should be drained, so only Close stops it.
func New(ctx context.Context, opts Options) (*Emitter, error) {
	if err := validateSink(opts.Sink); err != nil {
		return nil, err
	}
	if opts.Source == "" {
		opts.Source = DefaultSource
	}
	opts.QueueSize = defaults.Positive(opts.QueueSize, DefaultQueueSize)
	opts.QueueBytes = defaults.Positive(opts.QueueBytes, DefaultQueueBytes)
	opts.MaxListed = defaults.Positive(opts.MaxListed, DefaultMaxListed)
	switch {
	case opts.Retries == 0:
		opts.Retries = DefaultRetries
	case opts.Retries < 0:
		opts.Retries = 0
	}
	opts.Timeout = defaults.Positive(opts.Timeout, DefaultTimeout)
	opts.Backoff = defaults.Positive(opts.Backoff, DefaultBackoff)
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.Named("events").WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Minute, 1, 0)
	}))
	mp := opts.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}

	// An own transport rather than http.DefaultTransport: the emitter's
	// connections are then closed with it, and no one else's settings
	// (or theirs ours) leak across.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 2
	client, err := cloudevents.NewClientHTTP(
		cehttp.WithTarget(opts.Sink),
		cehttp.WithClient(http.Client{Transport: transport}),
	)
	if err != nil {
		return nil, fmt.Errorf("events: creating CloudEvents client for %q: %w", opts.Sink, err)
	}

	e := &Emitter{
		client:    client,
		idle:      transport,
		source:    opts.Source,
		retries:   opts.Retries,
		timeout:   opts.Timeout,
		backoff:   opts.Backoff,
		budget:    opts.QueueBytes,
		maxListed: opts.MaxListed,
		logger:    logger,
		// The channel's buffer is allocated once, QueueSize small slots,
		// and a slot is cleared when the worker receives from it, so the
		// queue retains nothing of an event once it is sent or dropped.
		queue: make(chan queued, opts.QueueSize),
		done:  make(chan struct{}),
	}
	if err := e.instruments(mp); err != nil {
		return nil, err
	}
	e.stop, e.abandon = context.WithCancel(context.WithoutCancel(ctx))
	go e.run()
	return e, nil
}

func validateSink(sink string) error {
	if sink == "" {
		return errors.New("events: sink (K_SINK) is required")
	}
	u, err := url.Parse(sink)
	if err != nil {
		return fmt.Errorf("events: sink (K_SINK) %q is not a URL: %w", sink, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("events: sink (K_SINK) %q must be an absolute http or https URL, such as http://broker-ingress.knative-eventing.svc/ns/default", sink)
	}
	return nil
}

func (e *Emitter) instruments(mp metric.MeterProvider) error {
	meter := mp.Meter("github.com/mutator-dev/mutator/function/events")
	for _, c := range []struct {
		into *metric.Int64Counter
		name string
		desc string
	}{
		{&e.mSent, "mutator.events.sent", "Audit events the sink accepted."},
		{&e.mDropped, "mutator.events.dropped", "Audit events dropped unsent: queue full (in events or bytes), or the emitter closed or shutting down."},
		{&e.mFailed, "mutator.events.failed", "Audit events the sink refused or could not be reached for, after all retries."},
	} {
		var err error
		if *c.into, err = meter.Int64Counter(c.name, metric.WithDescription(c.desc), metric.WithUnit("{event}")); err != nil {
			return fmt.Errorf("events: creating counter %s: %w", c.name, err)
		}
	}
	return nil
}

// Stats returns how many events were sent, dropped and failed so far.
func (e *Emitter) Stats() (sent, dropped, failed uint64) {
	return e.sent.Load(), e.dropped.Load(), e.failed.Load()
}

// Observe implements admission.Observer. It builds the event on the caller's
// goroutine, because the outcome's request (and the object in it) must not be
// retained by the queue, and then enqueues it without ever blocking.
//
// ctx is the admission request's: it ends with the request, so nothing
// queued uses it.
func (e *Emitter) Observe(_ context.Context, o admission.Decision) {
	ev, ok := e.event(o)
	if !ok {
		return
	}
	q := queued{ev: ev, size: e.size(ev)}
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		e.drop("dropping audit event: emitter is closed", q)
		return
	}
	if !e.reserve(q.size) {
		e.mu.RUnlock()
		if q.size > e.budget {
			e.drop("dropping audit event: larger than the whole queue's byte budget", q)
		} else {
			e.drop("dropping audit event: queue is full, the sink is slow or unreachable", q)
		}
		return
	}
	select {
	case e.queue <- q:
		e.mu.RUnlock()
	default:
		e.mu.RUnlock()
		e.held.Add(-q.size)
		e.drop("dropping audit event: queue is full, the sink is slow or unreachable", q)
	}
}

// size is what an event is counted for in the byte budget: its encoded data,
// built once by event (json.Marshal allocates it to fit, so its capacity is
// what it holds), its attribute strings and a fixed overhead.
func (e *Emitter) size(ev cloudevents.Event) int64 {
	return int64(eventOverhead + cap(ev.Data()) + len(ev.ID()) + len(ev.Type()) + len(ev.Subject()) + len(e.source))
}

// reserve adds n to the bytes held if that stays within the budget.
func (e *Emitter) reserve(n int64) bool {
	for {
		held := e.held.Load()
		if held+n > e.budget {
			return false
		}
		if e.held.CompareAndSwap(held, held+n) {
			for peak := e.peak.Load(); held+n > peak; peak = e.peak.Load() {
				if e.peak.CompareAndSwap(peak, held+n) {
					break
				}
			}
			return true
		}
	}
}

// event builds the CloudEvent for an outcome; false means the outcome gets
// none: a dry run (the webhook declares sideEffects NoneOnDryRun), no
// changes, or a result other than patched or audited.
func (e *Emitter) event(o admission.Decision) (cloudevents.Event, bool) {
	req := o.Request
	if req == nil || len(o.Changes) == 0 && len(o.Problems) == 0 && len(o.MirrorFallbacks) == 0 || (req.DryRun != nil && *req.DryRun) {
		return cloudevents.Event{}, false
	}
	var what, mode string
	switch o.Verdict {
	case admission.Patched:
		what, mode = "mutated", "enforce"
	case admission.Denied:
		what, mode = "denied", "enforce"
	case admission.Audited:
		what, mode = "audited", "audit"
	case admission.Unchanged:
		// Only with mirror fallbacks (see above): images left as written
		// in enforce mode are part of the audit trail.
		what, mode = "mutated", "enforce"
	default:
		return cloudevents.Event{}, false
	}

	// Each list is cut to its first maxListed entries, so that an event's
	// size (and the work of building it) does not grow with the object:
	// a Pod of 3,000 containers yields 100 changes and "2,900 omitted".
	changes, omittedChanges := listed(o.Changes, e.maxListed)
	problems, omittedRefused := listed(o.Problems, e.maxListed)
	fallbacks, omittedFallbacks := listed(o.MirrorFallbacks, e.maxListed)
	for _, f := range o.MirrorFallbacks {
		// The admission controller summarises long lists itself: an
		// entry with More stands for 1+More images.
		omittedFallbacks += f.More
	}
	data := Data{
		Operation:              string(req.Operation),
		Resource:               req.Resource.Resource,
		Subresource:            req.SubResource,
		Namespace:              req.Namespace,
		Name:                   req.Name,
		UID:                    string(req.UID),
		User:                   req.UserInfo.Username,
		Mode:                   mode,
		Changes:                make([]Change, len(changes)),
		Truncated:              omittedChanges+omittedRefused+omittedFallbacks > 0,
		OmittedChanges:         omittedChanges,
		OmittedRefused:         omittedRefused,
		OmittedMirrorFallbacks: omittedFallbacks,
	}
	for i, c := range changes {
		data.Changes[i] = Change{Kind: string(c.Kind), Path: c.Path, Where: c.Where, From: c.From, To: c.To}
	}
	for _, p := range problems {
		data.Refused = append(data.Refused, Refusal{Where: p.Where, Reason: p.Err.Error()})
	}
	for _, f := range fallbacks {
		data.MirrorFallbacks = append(data.MirrorFallbacks, MirrorFallback{Where: f.Where, Image: f.Image, Mirror: f.Mirror,
			Reason: string(f.Reason), Action: string(f.Action)})
	}
	subject := req.Namespace + "/" + req.Name
	if req.Name == "" {
		// A Pod created from a template has no name until after admission.
		data.GenerateName = o.Object.GenerateName
		subject += data.GenerateName
	}

	ev := cloudevents.NewEvent()
	// The request UID identifies one API server to webhook round trip, and
	// each produces at most one event, so it is unique and lets a sink
	// deduplicate our retries. Without one (never from a real API server)
	// a fresh UUID is set here, not by the client's defaulter, which would
	// pick a new one on every retry.
	id := string(req.UID)
	if id == "" {
		id = uuid.NewString()
	}
	ev.SetID(id)
	ev.SetSource(e.source)
	ev.SetType(TypePrefix + strings.ToLower(req.Kind.Kind) + "." + what)
	ev.SetSubject(subject)
	ev.SetTime(time.Now())
	if err := ev.SetData(cloudevents.ApplicationJSON, data); err != nil {
		e.fail("building audit event", ev, err)
		return cloudevents.Event{}, false
	}
	// Validated here so that the worker's failures are all the sink's.
	if err := ev.Validate(); err != nil {
		e.fail("building audit event", ev, err)
		return cloudevents.Event{}, false
	}
	return ev, true
}

// run is the worker: it sends one event at a time, so at most one event is
// in flight and memory is bounded by the queue's byte budget, which counts
// the event in flight too.
func (e *Emitter) run() {
	defer close(e.done)
	for q := range e.queue {
		e.deliver(q)
		e.held.Add(-q.size)
	}
}

// deliver sends an event, retrying transport errors and retriable statuses
// with exponential backoff; each attempt is bounded by the timeout.
func (e *Emitter) deliver(q queued) {
	ev := q.ev
	for attempt := 0; ; attempt++ {
		if e.stop.Err() != nil {
			e.drop("dropping audit event: shutting down", q)
			return
		}
		ctx, cancel := context.WithTimeout(e.stop, e.timeout)
		// Structured mode: the whole event is one JSON document, which is
		// what a log or object-store sink keeps most easily.
		res := e.client.Send(cloudevents.WithEncodingStructured(ctx), ev)
		cancel()
		if cloudevents.IsACK(res) {
			e.sent.Add(1)
			e.mSent.Add(context.Background(), 1)
			return
		}
		if e.stop.Err() != nil {
			e.drop("dropping audit event: shutting down", q)
			return
		}
		if attempt >= e.retries || !retriable(res) {
			e.fail("sending event", ev, fmt.Errorf("after %d attempts: %w", attempt+1, res))
			return
		}
		if !e.sleep(e.delay(attempt)) {
			e.drop("dropping audit event: shutting down", q)
			return
		}
	}
}

// retriable tells transient failures from final ones. A response status is
// retried when it may change by itself: 404 (a Knative Broker's ingress
// answers it until the Broker is ready), 408, 425, 429 and 5xx other than 501.
// No status at all (refused, reset, timed out) is always retried.
func retriable(res error) bool {
	var hr *cehttp.Result
	if !errors.As(res, &hr) {
		return true
	}
	switch sc := hr.StatusCode; {
	case sc == http.StatusNotFound, sc == http.StatusRequestTimeout, sc == http.StatusTooEarly, sc == http.StatusTooManyRequests:
		return true
	case sc >= 500 && sc != http.StatusNotImplemented:
		return true
	}
	return false
}

// delay is the backoff before retry attempt+1: doubling from Backoff, capped,
// with jitter so that replicas do not retry a recovering sink in step.
func (e *Emitter) delay(attempt int) time.Duration {
	d := e.backoff
	for i := 0; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or less when shutdown is abandoned; false means the latter.
func (e *Emitter) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.stop.Done():
		return false
	}
}

// listed splits a list into the entries an event carries in full and the
// count of those it leaves out.
func listed[T any](s []T, limit int) ([]T, int) {
	if len(s) <= limit {
		return s, 0
	}
	return s[:limit], len(s) - limit
}

func (e *Emitter) drop(msg string, q queued) {
	e.dropped.Add(1)
	e.mDropped.Add(context.Background(), 1)
	e.logger.Warn(msg, zap.String("id", q.ev.ID()), zap.String("type", q.ev.Type()), zap.String("subject", q.ev.Subject()),
		zap.Int64("bytes", q.size), zap.Int64("queuedBytes", e.held.Load()), zap.Int64("budgetBytes", e.budget))
}

func (e *Emitter) fail(msg string, ev cloudevents.Event, err error) {
	e.failed.Add(1)
	e.mFailed.Add(context.Background(), 1)
	e.logger.Warn(msg, zap.String("id", ev.ID()), zap.String("type", ev.Type()), zap.String("subject", ev.Subject()), zap.Error(err))
}

// Close stops accepting events (later Observe calls drop them), sends what is
// queued until ctx is done, then drops the rest and stops the worker. It is
// safe to call more than once and concurrently with Observe.
func (e *Emitter) Close(ctx context.Context) error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.queue)
	}
	e.mu.Unlock()

	var err error
	select {
	case <-e.done:
	case <-ctx.Done():
		// Abandoning makes the worker's remaining work immediate (an
		// aborted send, then a drop per queued event), so this wait is short.
		e.abandon()
		<-e.done
		err = fmt.Errorf("events: queue not drained before shutdown deadline, undelivered events dropped: %w", ctx.Err())
	}
	e.abandon()
	e.idle.CloseIdleConnections()
	return err
}
