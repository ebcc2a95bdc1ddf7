package admission

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/internal/defaults"
)

// CopySender queues a CloudEvent for its sink without blocking; an error
// means the event was dropped. *events.Emitter implements it (Send): copy
// requests go through the audit trail's bounded queue and worker, to their
// own sink.
type CopySender interface {
	Send(ev cloudevents.Event) error
}

// Defaults for the zero values of CopyOptions.
const (
	DefaultCopySource    = "mutator"
	DefaultCopyDedupe    = 30 * time.Second
	DefaultCopyRemembers = 4096
)

// CopyOptions configure NewCopyRequests.
type CopyOptions struct {
	// Source is the CloudEvents source attribute; "" is DefaultCopySource.
	Source string
	// Dedupe is how long a source→target pair that was sent is not sent
	// again; 0 or less is DefaultCopyDedupe.
	Dedupe time.Duration
	// Remembers bounds the pairs remembered for Dedupe; past it the oldest
	// is forgotten (and may be sent again early). 0 or less is
	// DefaultCopyRemembers.
	Remembers int
	// Logger receives drops, sampled to one message a minute; nil discards
	// them.
	Logger *zap.Logger
	// MeterProvider receives mutator.mirror.copy.requests{result}; nil
	// records nothing.
	MeterProvider metric.MeterProvider
	// Now is the clock of Dedupe; nil is time.Now.
	Now func() time.Time
}

// CopyResult is what became of one RequestCopy; it labels
// mutator.mirror.copy.requests.
type CopyResult string

// The results of RequestCopy.
const (
	CopyQueued    CopyResult = "queued"    // queued for the sink
	CopyDuplicate CopyResult = "duplicate" // the same source and target were sent within Dedupe
	CopyDropped   CopyResult = "dropped"   // the queue was full (or closed), or the request invalid: not sent
)

// CopyRequests sends MIRROR_MISSING=copy's copy requests
// (copier.TypeRequested CloudEvents) through a CopySender, each source and
// target at most once per Dedupe. It never blocks a review: the sender's
// queue is bounded and a request that does not fit is dropped (the Pod's
// retry asks again). It is safe for concurrent use.
type CopyRequests struct {
	sender CopySender
	source string
	dedupe time.Duration
	max    int
	now    func() time.Time
	logger *zap.Logger

	mu    sync.Mutex
	sent  map[string]*list.Element // by source and target: when it was sent
	order *list.List               // of *copySent, oldest first: all share one Dedupe

	queued, duplicates, dropped atomic.Uint64
	requests                    metric.Int64Counter
	byResult                    map[CopyResult]metric.MeasurementOption
}

type copySent struct {
	key string
	at  time.Time
}

var _ CopyRequester = (*CopyRequests)(nil)

// NewCopyRequests builds the copy requester over sender.
func NewCopyRequests(sender CopySender, opts CopyOptions) (*CopyRequests, error) {
	if sender == nil {
		return nil, errors.New("admission: copy requests need a sender")
	}
	if opts.Source == "" {
		opts.Source = DefaultCopySource
	}
	opts.Dedupe = defaults.Positive(opts.Dedupe, DefaultCopyDedupe)
	opts.Remembers = defaults.Positive(opts.Remembers, DefaultCopyRemembers)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.Named("copy").WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Minute, 1, 0)
	}))
	mp := opts.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	r := &CopyRequests{sender: sender, source: opts.Source, dedupe: opts.Dedupe, max: opts.Remembers, now: opts.Now,
		logger: logger, sent: map[string]*list.Element{}, order: list.New(), byResult: map[CopyResult]metric.MeasurementOption{}}
	var err error
	if r.requests, err = mp.Meter("github.com/mutator-dev/mutator/function/admission").Int64Counter("mutator.mirror.copy.requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Copy requests of MIRROR_MISSING=copy, by result: queued for the copier's sink, duplicate (the same image sent within the last 30s), dropped (queue full: the sink is slow or unreachable).")); err != nil {
		return nil, fmt.Errorf("admission: creating copy requests counter: %w", err)
	}
	for _, res := range []CopyResult{CopyQueued, CopyDuplicate, CopyDropped} {
		r.byResult[res] = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", string(res))))
	}
	return r, nil
}

// RequestCopy implements CopyRequester.
func (r *CopyRequests) RequestCopy(ctx context.Context, req copier.Request) {
	r.request(ctx, req)
}

// request sends req unless it was sent within Dedupe, and says what became
// of it.
func (r *CopyRequests) request(ctx context.Context, req copier.Request) CopyResult {
	key := req.Source + "\x00" + req.Target
	at := r.now()
	if !r.remember(key, at) {
		r.count(ctx, CopyDuplicate)
		return CopyDuplicate
	}
	ev, err := copier.NewRequestEvent(r.source, req)
	if err == nil {
		err = r.sender.Send(ev)
	}
	if err != nil {
		// Not sent: the next review of the Pod may try again.
		r.forget(key, at)
		r.count(ctx, CopyDropped)
		r.logger.Warn("dropping copy request", zap.String("source", req.Source), zap.String("target", req.Target), zap.Error(err))
		return CopyDropped
	}
	r.count(ctx, CopyQueued)
	return CopyQueued
}

// remember records key as sent at, unless it was within Dedupe: false then.
func (r *CopyRequests) remember(key string, at time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Forget what has expired, oldest first; and the oldest past the bound.
	for el := r.order.Front(); el != nil; el = r.order.Front() {
		s := el.Value.(*copySent)
		if at.Sub(s.at) < r.dedupe && r.order.Len() < r.max {
			break
		}
		r.order.Remove(el)
		delete(r.sent, s.key)
	}
	if _, ok := r.sent[key]; ok {
		return false
	}
	r.sent[key] = r.order.PushBack(&copySent{key: key, at: at})
	return true
}

// forget removes key if it is still the one remembered at.
func (r *CopyRequests) forget(key string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.sent[key]; ok && el.Value.(*copySent).at.Equal(at) {
		r.order.Remove(el)
		delete(r.sent, key)
	}
}

func (r *CopyRequests) count(ctx context.Context, res CopyResult) {
	switch res {
	case CopyQueued:
		r.queued.Add(1)
	case CopyDuplicate:
		r.duplicates.Add(1)
	case CopyDropped:
		r.dropped.Add(1)
	}
	r.requests.Add(context.WithoutCancel(ctx), 1, r.byResult[res])
}

// CopyStats are CopyRequests' running totals.
type CopyStats struct {
	Queued, Duplicates, Dropped uint64
	Remembered                  int // source→target pairs remembered for Dedupe now
}

// Stats returns running totals.
func (r *CopyRequests) Stats() CopyStats {
	r.mu.Lock()
	n := r.order.Len()
	r.mu.Unlock()
	return CopyStats{Queued: r.queued.Load(), Duplicates: r.duplicates.Load(), Dropped: r.dropped.Load(), Remembered: n}
}
