// Package mirror answers whether a registry can serve an image reference, by
// a HEAD of its manifest through the OCI distribution API
// (go-containerregistry). It is the optional MIRROR_CHECK: the admission
// controller asks it about each rewritten image before admitting the
// rewrite, so that a Pod is not sent to a mirror that lacks its image.
//
// A check runs on the admission request path, so its cost is bounded: each
// registry lookup has a timeout; answers are cached (present and missing with
// their own TTLs) in a cache bounded in bytes; concurrent checks of one
// reference share one lookup (singleflight), so a rollout of many replicas
// costs one request; and a per-registry circuit stops asking a registry that
// keeps failing until a cool-down has passed.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Outcome is the answer to one check; it labels metrics.
type Outcome string

// The outcomes of a check. Only Present and Missing are answers from the
// registry; the others mean the webhook does not know.
const (
	Present     Outcome = "present"      // the registry has the manifest
	Missing     Outcome = "missing"      // the registry answered 404 for the manifest
	Error       Outcome = "error"        // any other failure: 5xx, 401/403, TLS, refused connection
	Timeout     Outcome = "timeout"      // no answer within the timeout (or the caller's deadline)
	CircuitOpen Outcome = "circuit-open" // not asked: the registry's circuit is open
)

// Known reports whether the outcome is an answer from the registry.
func (o Outcome) Known() bool { return o == Present || o == Missing }

// Defaults for the zero values of Options.
const (
	DefaultTimeout     = time.Second
	DefaultCacheBytes  = 4 << 20
	DefaultFailures    = 5
	DefaultCooldown    = 30 * time.Second
	DefaultMaxInFlight = 64
)

// Limits that are not configuration.
const (
	// maxCircuits bounds the per-registry state; references come from the
	// rewriter, so their hosts are the configured targets, but the bound
	// does not rely on that.
	maxCircuits = 64
	// A remote.Puller keeps one authenticated transport per repository
	// forever; it is replaced after this many lookups or this long, which
	// bounds its memory and picks up rotated credentials.
	maxPullerLookups = 1024
	maxPullerAge     = 5 * time.Minute
)

// Options configure New.
type Options struct {
	// Timeout bounds each registry lookup (every request it makes); 0 or
	// less is DefaultTimeout.
	Timeout time.Duration
	// PositiveTTL and NegativeTTL are how long a present and a missing
	// answer are cached; 0 or less does not cache that answer. Errors and
	// timeouts are never cached: the circuit deals with them.
	PositiveTTL, NegativeTTL time.Duration
	// CacheBytes bounds the cache (keys plus an estimated per-entry
	// overhead); 0 or less is DefaultCacheBytes.
	CacheBytes int64
	// Failures is how many consecutive errors or timeouts open a
	// registry's circuit, and Cooldown how long it stays open before one
	// probe is let through; 0 or less are DefaultFailures and
	// DefaultCooldown.
	Failures int
	Cooldown time.Duration
	// MaxInFlight bounds concurrent registry lookups; a lookup waits (within
	// its timeout) for a slot. 0 or less is DefaultMaxInFlight.
	MaxInFlight int
	// Keychain gives credentials per registry; nil is anonymous.
	Keychain authn.Keychain
	// Insecure lets lookups to any host fall back to plain HTTP; loopback
	// hosts (localhost, 127.0.0.1, ::1) always may. For tests only.
	Insecure bool
	// Transport carries the requests; nil is a clone of
	// http.DefaultTransport with timeouts set from Timeout.
	Transport http.RoundTripper
	// Now is the clock of TTLs and cool-downs; nil is time.Now. Timeouts use
	// real time.
	Now func() time.Time
	// MeterProvider receives the checker's instruments; nil records nothing.
	MeterProvider metric.MeterProvider
	// Logger receives circuit changes; nil discards them.
	Logger *zap.Logger
}

// Result is the answer to one check.
type Result struct {
	Outcome Outcome
	// Registry is the host the reference names.
	Registry string
	// Cached is true when the answer came from the cache.
	Cached bool
	// Shared is true when the answer came from a lookup that other checks
	// waited for too (singleflight): true for all of them, the one that
	// started it included.
	Shared bool
}

// ErrCircuitOpen is returned (wrapped) for CircuitOpen outcomes.
var ErrCircuitOpen = errors.New("circuit open")

// Stats are running totals, for tests and the load report.
type Stats struct {
	Lookups      uint64 // lookups that went to a registry (each one or more HTTP requests)
	CacheHits    uint64
	CacheMisses  uint64
	Shared       uint64 // checks answered by a lookup other checks shared (see Result.Shared)
	CircuitOpens uint64 // lookups refused by an open circuit
}

// Checker answers whether a registry serves a reference. It is safe for
// concurrent use.
type Checker struct {
	timeout    time.Duration
	posTTL     time.Duration
	negTTL     time.Duration
	failures   int
	cooldown   time.Duration
	insecure   bool
	now        func() time.Time
	logger     *zap.Logger
	remoteOpts []remote.Option
	idle       interface{ CloseIdleConnections() }

	cache   *cache
	flights singleflight.Group
	slots   chan struct{}
	puller  atomic.Pointer[pullerGen]

	mu       sync.Mutex
	circuits map[string]*circuit

	// base is every lookup's parent: lookups are detached from the check
	// that started them, so that a caller giving up (its review's budget
	// spent) neither cancels the lookup others share nor loses its answer
	// for the cache. Close cancels it.
	base   context.Context
	cancel context.CancelFunc

	lookups, hits, misses, shared, opens atomic.Uint64
	m                                    instruments
}

type pullerGen struct {
	p       *remote.Puller
	born    time.Time
	lookups atomic.Int64
}

// New builds a checker. It contacts no registry: the first check does.
// ctx's values are kept for lookups, its cancellation is not (see Close).
func New(ctx context.Context, opts Options) (*Checker, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.Failures <= 0 {
		opts.Failures = DefaultFailures
	}
	if opts.Cooldown <= 0 {
		opts.Cooldown = DefaultCooldown
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.NewMultiKeychain() // resolves to anonymous
	}
	mp := opts.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c := &Checker{
		timeout: opts.Timeout, posTTL: opts.PositiveTTL, negTTL: opts.NegativeTTL,
		failures: opts.Failures, cooldown: opts.Cooldown, insecure: opts.Insecure,
		now: opts.Now, logger: opts.Logger.Named("mirror"),
		cache:    newCache(opts.CacheBytes),
		slots:    make(chan struct{}, opts.MaxInFlight),
		circuits: map[string]*circuit{},
	}
	rt := opts.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Each lookup is bounded by its context as well; these keep one
		// stuck phase from holding a pooled connection past it.
		t.TLSHandshakeTimeout, t.ResponseHeaderTimeout = opts.Timeout, opts.Timeout
		t.MaxIdleConnsPerHost = 16
		rt, c.idle = t, t
	}
	c.remoteOpts = []remote.Option{
		remote.WithTransport(rt),
		remote.WithAuthFromKeychain(opts.Keychain),
		remote.WithUserAgent("mutator-mirror-check"),
		// One attempt: the caller's timeout is about a second and the
		// circuit, not retries, deals with a failing registry.
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithRetryStatusCodes(),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
	}
	if _, err := c.newPuller(); err != nil {
		return nil, err
	}
	if err := c.m.init(mp); err != nil {
		return nil, err
	}
	c.base, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return c, nil
}

func (c *Checker) newPuller() (*pullerGen, error) {
	p, err := remote.NewPuller(c.remoteOpts...)
	if err != nil {
		return nil, fmt.Errorf("mirror: creating registry client: %w", err)
	}
	g := &pullerGen{p: p, born: c.now()}
	c.puller.Store(g)
	return g, nil
}

// currentPuller returns the puller to use, replacing it when it is old.
func (c *Checker) currentPuller() *remote.Puller {
	g := c.puller.Load()
	if g.lookups.Add(1) <= maxPullerLookups && c.now().Sub(g.born) < maxPullerAge {
		return g.p
	}
	p, err := remote.NewPuller(c.remoteOpts...)
	if err != nil { // the options were accepted in New
		return g.p
	}
	ng := &pullerGen{p: p, born: c.now()}
	if c.puller.CompareAndSwap(g, ng) {
		return p
	}
	return c.puller.Load().p
}

// Close cancels lookups in flight and closes idle connections.
func (c *Checker) Close(context.Context) error {
	c.cancel()
	if c.idle != nil {
		c.idle.CloseIdleConnections()
	}
	return nil
}

// Stats returns running totals.
func (c *Checker) Stats() Stats {
	return Stats{Lookups: c.lookups.Load(), CacheHits: c.hits.Load(), CacheMisses: c.misses.Load(),
		Shared: c.shared.Load(), CircuitOpens: c.opens.Load()}
}

// Cached returns the cached answer for ref, without contacting anyone; ok is
// false when there is none. It counts as a check in metrics only when it
// answers.
func (c *Checker) Cached(ctx context.Context, ref string) (Result, bool) {
	present, ok := c.cache.get(ref, c.now())
	if !ok {
		return Result{}, false
	}
	c.hits.Add(1)
	c.m.cacheHits.Add(ctx, 1)
	r := Result{Outcome: Missing, Cached: true}
	if present {
		r.Outcome = Present
	}
	c.m.checks.Add(ctx, 1, c.m.outcome(r.Outcome))
	return r, true
}

// Exists checks whether the registry ref names serves its manifest. The
// error is nil exactly when the outcome is Present or Missing; otherwise it
// says why the answer is unknown. The check returns when ctx is done even if
// the lookup has not (the lookup goes on, bounded by the timeout, and caches
// its answer).
func (c *Checker) Exists(ctx context.Context, ref string) (Result, error) {
	start := time.Now()
	r, err := c.exists(ctx, ref)
	c.m.checks.Add(ctx, 1, c.m.outcome(r.Outcome))
	c.m.checkDuration.Record(ctx, time.Since(start).Seconds(), c.m.outcome(r.Outcome))
	return r, err
}

func (c *Checker) exists(ctx context.Context, ref string) (Result, error) {
	if present, ok := c.cache.get(ref, c.now()); ok {
		c.hits.Add(1)
		c.m.cacheHits.Add(ctx, 1)
		r := Result{Outcome: Missing, Cached: true}
		if present {
			r.Outcome = Present
		}
		return r, nil
	}
	c.misses.Add(1)
	c.m.cacheMisses.Add(ctx, 1)
	// Keyed by the reference as written: references come from the
	// rewriter, which spells one image one way.
	ch := c.flights.DoChan(ref, func() (any, error) { return c.lookup(ref), nil })
	select {
	case v := <-ch:
		l := v.Val.(lookupResult)
		if v.Shared {
			c.shared.Add(1)
		}
		return Result{Outcome: l.outcome, Registry: l.registry, Shared: v.Shared}, l.err
	case <-ctx.Done():
		outcome := Timeout
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			outcome = Error
		}
		return Result{Outcome: outcome}, fmt.Errorf("mirror: checking %s: gave up waiting: %w", ref, context.Cause(ctx))
	}
}

type lookupResult struct {
	outcome  Outcome
	registry string
	err      error
}

// lookup asks the registry, bounded by the timeout, and records the answer
// in the cache and the registry's circuit.
func (c *Checker) lookup(ref string) lookupResult {
	parsed, err := c.parse(ref)
	if err != nil {
		return lookupResult{outcome: Error, err: fmt.Errorf("mirror: %q is not an image reference: %w", ref, err)}
	}
	reg := parsed.Context().RegistryStr()
	res := lookupResult{registry: reg}
	circ, created := c.circuit(reg)
	if created {
		// So that the gauge shows every registry asked, not only those
		// whose circuit has changed.
		c.m.circuit.Record(c.base, int64(Closed), metric.WithAttributes(attribute.String("registry", c.circuitLabel(reg))))
	}
	ok, changed, state := circ.allow(c.now())
	if changed {
		c.stateChanged(reg, state)
	}
	if !ok {
		c.opens.Add(1)
		c.m.lookups.Add(c.base, 1, c.m.outcome(CircuitOpen))
		res.outcome, res.err = CircuitOpen, fmt.Errorf("mirror: not asking %s for %s: %w after %d consecutive failures (one probe is let through %s after it opened)",
			reg, ref, ErrCircuitOpen, c.failures, c.cooldown)
		return res
	}

	ctx, cancel := context.WithTimeout(c.base, c.timeout)
	defer cancel()
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	case <-ctx.Done():
		// The registry was not asked, so this says nothing about it.
		circ.abandon()
		res.outcome, res.err = Timeout, fmt.Errorf("mirror: checking %s: no lookup slot free within %s (%d in flight)", ref, c.timeout, cap(c.slots))
		c.m.lookups.Add(c.base, 1, c.m.outcome(Timeout))
		return res
	}

	c.lookups.Add(1)
	start := time.Now()
	_, err = c.currentPuller().Head(ctx, parsed)
	res.outcome = classify(err)
	c.m.lookups.Add(c.base, 1, c.m.outcome(res.outcome))
	c.m.lookupDuration.Record(c.base, time.Since(start).Seconds(), c.m.outcome(res.outcome))
	now := c.now()
	switch res.outcome {
	case Present:
		if c.posTTL > 0 {
			c.cache.put(ref, true, now.Add(c.posTTL))
		}
	case Missing:
		if c.negTTL > 0 {
			c.cache.put(ref, false, now.Add(c.negTTL))
		}
	case Timeout:
		res.err = fmt.Errorf("mirror: HEAD %s: no answer from %s within %s: %w", ref, reg, c.timeout, err)
	default:
		res.err = fmt.Errorf("mirror: HEAD %s: %w", ref, err)
		if isAuthError(err) {
			// Credentials may have been rotated or a token revoked:
			// start over with fresh transports.
			_, _ = c.newPuller()
		}
	}
	if changed, state := circ.report(now, res.outcome.Known()); changed {
		c.stateChanged(reg, state)
	}
	return res
}

// parse reads a reference; loopback hosts (and, with Insecure, any host) may
// be spoken to over plain HTTP.
func (c *Checker) parse(ref string) (name.Reference, error) {
	opts := []name.Option{name.WeakValidation}
	if c.insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil || c.insecure || !isLoopback(r.Context().RegistryStr()) {
		return r, err
	}
	return name.ParseReference(ref, append(opts, name.Insecure)...)
}

func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// classify maps a HEAD's error to an outcome. Only a 404 for the manifest
// itself is Missing: a 404 from the /v2/ ping or a token endpoint says the
// URL is not a registry, which is an error.
func classify(err error) Outcome {
	if err == nil {
		return Present
	}
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound &&
		terr.Request != nil && strings.Contains(terr.Request.URL.Path, "/manifests/") {
		return Missing
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Timeout
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return Timeout
	}
	return Error
}

func isAuthError(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden)
}

// circuit returns the registry's circuit, and whether it was just created;
// beyond maxCircuits registries share one.
func (c *Checker) circuit(reg string) (*circuit, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if circ, ok := c.circuits[reg]; ok {
		return circ, false
	}
	key := reg
	if len(c.circuits) >= maxCircuits {
		key = "other"
		if circ, ok := c.circuits[key]; ok {
			return circ, false
		}
	}
	circ := &circuit{threshold: c.failures, cooldown: c.cooldown}
	c.circuits[key] = circ
	return circ, true
}

// CircuitState returns the state of the registry's circuit (Closed for a
// registry never asked).
func (c *Checker) CircuitState(reg string) State {
	c.mu.Lock()
	circ, ok := c.circuits[reg]
	c.mu.Unlock()
	if !ok {
		return Closed
	}
	circ.mu.Lock()
	defer circ.mu.Unlock()
	return circ.state
}

func (c *Checker) stateChanged(reg string, state State) {
	c.m.circuit.Record(c.base, int64(state), metric.WithAttributes(attribute.String("registry", c.circuitLabel(reg))))
	if state == Open {
		c.logger.Warn("mirror registry circuit opened: checks of its images are answered circuit-open until the cool-down has passed",
			zap.String("registry", reg), zap.Int("failures", c.failures), zap.Duration("cooldown", c.cooldown))
	} else {
		c.logger.Info("mirror registry circuit "+state.String(), zap.String("registry", reg))
	}
}

// circuitLabel is the registry label of the circuit gauge: the registry, or
// "other" once maxCircuits registries have their own.
func (c *Checker) circuitLabel(reg string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.circuits[reg]; ok {
		return reg
	}
	return "other"
}

type instruments struct {
	checks, lookups        metric.Int64Counter
	checkDuration          metric.Float64Histogram
	lookupDuration         metric.Float64Histogram
	cacheHits, cacheMisses metric.Int64Counter
	circuit                metric.Int64Gauge
	byOutcome              map[Outcome]metric.MeasurementOption
}

func (m *instruments) init(mp metric.MeterProvider) error {
	meter := mp.Meter("github.com/mutator-dev/mutator/function/mirror")
	var err error
	wrap := func(what string, e error) error { return fmt.Errorf("mirror: creating %s: %w", what, e) }
	if m.checks, err = meter.Int64Counter("mutator.mirror.checks", metric.WithUnit("{check}"),
		metric.WithDescription("Mirror checks of rewritten images, by result (present, missing, error, timeout, circuit-open), cached or not.")); err != nil {
		return wrap("checks counter", err)
	}
	if m.lookups, err = meter.Int64Counter("mutator.mirror.lookups", metric.WithUnit("{lookup}"),
		metric.WithDescription("Mirror checks that were not answered from the cache and not joined to one in flight: registry lookups (or circuit-open refusals), by result.")); err != nil {
		return wrap("lookups counter", err)
	}
	buckets := metric.WithExplicitBucketBoundaries(0.00001, 0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
	if m.checkDuration, err = meter.Float64Histogram("mutator.mirror.check.duration", metric.WithUnit("s"), buckets,
		metric.WithDescription("Time a review waited for one mirror check, by result.")); err != nil {
		return wrap("check duration histogram", err)
	}
	if m.lookupDuration, err = meter.Float64Histogram("mutator.mirror.lookup.duration", metric.WithUnit("s"), buckets,
		metric.WithDescription("Time of one registry lookup (HEAD of the manifest, with the /v2/ ping and token exchange when a new repository needs them), by result.")); err != nil {
		return wrap("lookup duration histogram", err)
	}
	if m.cacheHits, err = meter.Int64Counter("mutator.mirror.cache.hits", metric.WithUnit("{check}"),
		metric.WithDescription("Mirror checks answered from the cache.")); err != nil {
		return wrap("cache hits counter", err)
	}
	if m.cacheMisses, err = meter.Int64Counter("mutator.mirror.cache.misses", metric.WithUnit("{check}"),
		metric.WithDescription("Mirror checks the cache could not answer.")); err != nil {
		return wrap("cache misses counter", err)
	}
	if m.circuit, err = meter.Int64Gauge("mutator.mirror.circuit.state", metric.WithUnit("{state}"),
		metric.WithDescription("State of a mirror registry's circuit: 0 closed, 1 half-open, 2 open.")); err != nil {
		return wrap("circuit gauge", err)
	}
	// Built once: the set of outcomes is closed.
	m.byOutcome = map[Outcome]metric.MeasurementOption{}
	for _, o := range []Outcome{Present, Missing, Error, Timeout, CircuitOpen} {
		m.byOutcome[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", string(o))))
	}
	return nil
}

func (m *instruments) outcome(o Outcome) metric.MeasurementOption {
	if opt, ok := m.byOutcome[o]; ok {
		return opt
	}
	return m.byOutcome[Error]
}
