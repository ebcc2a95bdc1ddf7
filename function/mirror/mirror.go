// Package mirror answers whether a registry can serve an image reference, by
// a HEAD of its manifest through the OCI distribution API
// (go-containerregistry). It is the optional MIRROR_CHECK: the admission
// controller asks it about each rewritten image before admitting the
// rewrite, so that a Pod is not sent to a mirror that lacks its image.
//
// A check runs on the admission request path, and whoever can reach the
// webhook's port chooses the references, so its cost is bounded: each
// registry lookup has a timeout; answers are cached (present and missing
// with their own TTLs, in separate shares of a cache bounded in bytes);
// concurrent checks of one reference share one lookup (singleflight), so a
// rollout of many replicas costs one request; a lookup is cancelled as soon
// as no check waits for it any more (its reviews' deadlines have passed);
// lookups in flight are bounded (MaxInFlight), the slots served in turn by
// review; and a per-registry circuit stops asking a registry that keeps
// failing until a cool-down has passed. The circuit opens only when the
// registry also fails a probe the checker chooses itself, so references
// chosen to be slow or to fail cannot open it for everyone.
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

	"github.com/mutator-dev/mutator/function/internal/defaults"
)

// Status is the answer to one check; it labels metrics.
type Status string

// The outcomes of a check. Only Present and Missing are answers from the
// registry; the others mean the webhook does not know.
const (
	Present     Status = "present"      // the registry has the manifest
	Missing     Status = "missing"      // the registry answered 404 for the manifest
	Error       Status = "error"        // any other failure: 5xx, 401/403, TLS, refused connection
	Timeout     Status = "timeout"      // no answer within the timeout (or the caller's deadline)
	CircuitOpen Status = "circuit-open" // not asked: the registry's circuit is open
	// Skipped is never returned by the checker: the admission controller
	// uses it for an image it did not ask about because its review had
	// reached its lookup limit (MIRROR_CHECK_MAX_LOOKUPS).
	Skipped Status = "skipped"
)

// Results of registry lookups that are not check outcomes: they label the
// lookups counter only.
const (
	// lookupCancelled: no check waited for the lookup any more (their
	// reviews' deadlines had passed), so it was stopped.
	lookupCancelled Status = "cancelled"
	// lookupNoSlot: no slot freed (MaxInFlight) within maxSlotWait; the
	// registry was not asked. (A lookup whose checks gave up while it
	// waited is cancelled.)
	lookupNoSlot Status = "no-slot"
)

// Known reports whether the outcome is an answer from the registry.
func (o Status) Known() bool { return o == Present || o == Missing }

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
	// probeTimeouts is a probe's timeout, in lookup timeouts.
	probeTimeouts = 10
	// maxSlotWait bounds the wait for a lookup slot of checks that have
	// no deadline; a review's checks have one, shorter (at most
	// MIRROR_CHECK_REVIEW_BUDGET, under 10s).
	maxSlotWait = 10 * time.Second
)

// Options configure New.
type Options struct {
	// Timeout bounds each registry lookup (every request it makes), from
	// the moment it has a slot; 0 or less is DefaultTimeout.
	Timeout time.Duration
	// PositiveTTL and NegativeTTL are how long a present and a missing
	// answer are cached; 0 or less does not cache that answer. Errors and
	// timeouts are never cached: the circuit deals with them.
	PositiveTTL, NegativeTTL time.Duration
	// CacheBytes bounds the cache (keys plus an estimated per-entry
	// overhead); 0 or less is DefaultCacheBytes.
	CacheBytes int64
	// Failures is how many consecutive errors or timeouts of lookups make
	// the checker probe the registry (see Checker.probe; a failed probe
	// opens its circuit), and Cooldown how long the circuit stays open
	// before the next probe; 0 or less are DefaultFailures and
	// DefaultCooldown.
	Failures int
	Cooldown time.Duration
	// MaxInFlight bounds concurrent registry lookups; a lookup waits for a
	// slot as long as some check waits for it (at most 10s), and slots are
	// granted in turn by review (see WithReview). The timeout of a lookup
	// starts when it has a slot. Probes of the circuit (one per registry
	// at a time) do not take a slot. 0 or less is DefaultMaxInFlight.
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

// Lookup is the answer to one check.
type Lookup struct {
	Status Status
	// Registry is the host the reference names.
	Registry string
	// Cached is true when the answer came from the cache.
	Cached bool
	// Shared is true when the answer came from a lookup that other checks
	// waited for too (singleflight): true for all of them, the one that
	// started it included.
	Shared bool
	// Digest is, for a Present answer, the manifest digest the registry's
	// HEAD answered with (Docker-Content-Digest; for a multi-platform tag,
	// the index's), cached with the answer: "sha256:…". Empty when the
	// registry answered 200 without a digest that parses (the answer is
	// still Present, and nothing should be pinned to it).
	Digest string
}

// ErrCircuitOpen is returned (wrapped) for CircuitOpen outcomes.
var ErrCircuitOpen = errors.New("circuit open")

// Stats are running totals, for tests and the load report.
type Stats struct {
	Lookups      uint64 // lookups that went to a registry (each one or more HTTP requests)
	CacheHits    uint64
	CacheMisses  uint64
	Shared       uint64 // checks answered by a lookup other checks shared (see Lookup.Shared)
	CircuitOpens uint64 // lookups refused by an open circuit
	Cancelled    uint64 // lookups stopped because no check waited for them any more
	NoSlot       uint64 // lookups that got no slot (MaxInFlight) within 10s: the registry was not asked
	Probes       uint64 // probes of a registry's health by its circuit
	InFlight     int    // lookups holding a slot now
	MaxInFlight  int    // the most lookups that ever held a slot at once
}

// Checker answers whether a registry serves a reference. It is safe for
// concurrent use.
type Checker struct {
	timeout     time.Duration
	posTTL      time.Duration
	negTTL      time.Duration
	failures    int
	cooldown    time.Duration
	maxInFlight int
	insecure    bool
	now         func() time.Time
	logger      *zap.Logger
	remoteOpts  []remote.Option
	probeOpts   []remote.Option   // as remoteOpts, over probeRT
	probeRT     http.RoundTripper // what probes ask with
	idle        []interface{ CloseIdleConnections() }

	cache  *answers
	slots  *slots
	puller atomic.Pointer[pullerGen]

	fmu     sync.Mutex
	flights map[string]*flight // by reference: the lookups in flight

	mu       sync.Mutex
	circuits map[string]*circuit

	// base is every lookup's and probe's parent: a lookup is not tied to
	// the check that started it, so that a check giving up does not
	// cancel the lookup other checks still wait for; it is cancelled when
	// the last check waiting for it gives up (see flight). Close cancels
	// base.
	base   context.Context
	cancel context.CancelFunc

	lookups, hits, misses, shared, opens, cancelled, noSlot, probes atomic.Uint64
	m                                                               instruments
}

// flight is one lookup and the checks waiting for it (singleflight, with
// cancellation): when the last waiting check gives up, the lookup is
// cancelled and forgotten, so that no lookup goes on for a review that has
// been answered, and the next check of the reference starts afresh.
type flight struct {
	done    chan struct{} // closed when res is set
	res     lookupResult
	shared  bool // set with res: more than one check joined
	waiters int  // checks waiting now
	joined  int  // checks that joined, in all
	cancel  context.CancelFunc
}

// reviewKey is the context key of WithReview.
type reviewKey struct{}

// WithReview marks ctx as one review's: the lookups its checks start share
// one turn for the in-flight slots (see Options.MaxInFlight), so that a
// review with many images waits behind its own lookups rather than making
// other reviews wait behind all of them. Checks without it are a review
// each.
func WithReview(ctx context.Context) context.Context {
	return context.WithValue(ctx, reviewKey{}, new(byte))
}

type pullerGen struct {
	p       *remote.Puller
	born    time.Time
	lookups atomic.Int64
}

// New builds a checker. It contacts no registry: the first check does.
// ctx's values are kept for lookups, its cancellation is not (see Close).
func New(ctx context.Context, opts Options) (*Checker, error) {
	opts.Timeout = defaults.Positive(opts.Timeout, DefaultTimeout)
	opts.CacheBytes = defaults.Positive(opts.CacheBytes, DefaultCacheBytes)
	opts.Failures = defaults.Positive(opts.Failures, DefaultFailures)
	opts.Cooldown = defaults.Positive(opts.Cooldown, DefaultCooldown)
	opts.MaxInFlight = defaults.Positive(opts.MaxInFlight, DefaultMaxInFlight)
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
		failures: opts.Failures, cooldown: opts.Cooldown, maxInFlight: opts.MaxInFlight, insecure: opts.Insecure,
		now: opts.Now, logger: opts.Logger.Named("mirror"),
		cache:    newAnswers(opts.CacheBytes),
		slots:    newSlots(opts.MaxInFlight),
		flights:  map[string]*flight{},
		circuits: map[string]*circuit{},
	}
	rt, probeRT := opts.Transport, opts.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Each lookup is bounded by its context as well; these keep one
		// stuck phase from holding a pooled connection past it.
		t.TLSHandshakeTimeout, t.ResponseHeaderTimeout = opts.Timeout, opts.Timeout
		// As many idle connections as lookups in flight, so that a busy
		// minute does not open and close connections for every lookup.
		t.MaxIdleConnsPerHost = opts.MaxInFlight
		// Probes are patient (see probe) and have their own connections.
		p := t.Clone()
		p.TLSHandshakeTimeout, p.ResponseHeaderTimeout = probeTimeouts*opts.Timeout, probeTimeouts*opts.Timeout
		p.MaxIdleConnsPerHost = 2
		rt, probeRT, c.idle = t, p, []interface{ CloseIdleConnections() }{t, p}
	}
	c.probeRT = probeRT
	options := func(rt http.RoundTripper) []remote.Option {
		return []remote.Option{
			remote.WithTransport(rt),
			remote.WithAuthFromKeychain(opts.Keychain),
			remote.WithUserAgent("mutator-mirror-check"),
			// One attempt: the caller's timeout is about a second and the
			// circuit, not retries, deals with a failing registry.
			remote.WithRetryPredicate(func(error) bool { return false }),
			remote.WithRetryStatusCodes(),
			remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		}
	}
	c.remoteOpts, c.probeOpts = options(noting{rt}), options(probeRT)
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
	for _, t := range c.idle {
		t.CloseIdleConnections()
	}
	return nil
}

// Stats returns running totals.
func (c *Checker) Stats() Stats {
	inUse, maxUse := c.slots.stats()
	return Stats{Lookups: c.lookups.Load(), CacheHits: c.hits.Load(), CacheMisses: c.misses.Load(),
		Shared: c.shared.Load(), CircuitOpens: c.opens.Load(), Cancelled: c.cancelled.Load(),
		NoSlot: c.noSlot.Load(), Probes: c.probes.Load(), InFlight: inUse, MaxInFlight: maxUse}
}

// Cached returns the cached answer for ref, without contacting anyone; ok is
// false when there is none. It counts as a check in metrics only when it
// answers.
func (c *Checker) Cached(ctx context.Context, ref string) (Lookup, bool) {
	v, ok := c.cache.get(ref, c.now())
	if !ok {
		return Lookup{}, false
	}
	c.hits.Add(1)
	c.m.cacheHits.Add(ctx, 1)
	r := cachedLookup(v)
	c.m.checks.Add(ctx, 1, c.m.outcome(r.Status))
	return r, true
}

// Exists checks whether the registry ref names serves its manifest. The
// error is nil exactly when the outcome is Present or Missing; otherwise it
// says why the answer is unknown. The check returns when ctx is done even if
// the lookup has not; the lookup is then cancelled unless other checks still
// wait for it. A check whose ctx is done already starts no lookup.
func (c *Checker) Exists(ctx context.Context, ref string) (Lookup, error) {
	start := time.Now()
	r, err := c.exists(ctx, ref)
	c.m.checks.Add(ctx, 1, c.m.outcome(r.Status))
	c.m.checkDuration.Record(ctx, time.Since(start).Seconds(), c.m.outcome(r.Status))
	return r, err
}

func (c *Checker) exists(ctx context.Context, ref string) (Lookup, error) {
	if v, ok := c.cache.get(ref, c.now()); ok {
		c.hits.Add(1)
		c.m.cacheHits.Add(ctx, 1)
		return cachedLookup(v), nil
	}
	c.misses.Add(1)
	c.m.cacheMisses.Add(ctx, 1)
	if ctx.Err() != nil {
		return gaveUp(ctx, ref)
	}
	// Keyed by the reference as written: references come from the
	// rewriter, which spells one image one way.
	f := c.join(ctx, ref)
	select {
	case <-f.done:
	case <-ctx.Done():
		select {
		case <-f.done: // both ready: the answer wins
		default:
			c.leave(ref, f)
			return gaveUp(ctx, ref)
		}
	}
	l := f.res
	if f.shared {
		c.shared.Add(1)
	}
	if l.outcome == lookupCancelled || l.outcome == lookupNoSlot {
		// Only when the checker is closing (cancelled) or no slot freed
		// within maxSlotWait: unknown, as a timeout.
		o := Error
		if l.outcome == lookupNoSlot {
			o = Timeout
		}
		return Lookup{Status: o, Registry: l.registry, Shared: f.shared}, l.err
	}
	return Lookup{Status: l.outcome, Registry: l.registry, Shared: f.shared, Digest: l.digest}, l.err
}

// cachedLookup is the Lookup of a cached answer.
func cachedLookup(v answer) Lookup {
	if v.present {
		return Lookup{Status: Present, Cached: true, Digest: v.digest}
	}
	return Lookup{Status: Missing, Cached: true}
}

func gaveUp(ctx context.Context, ref string) (Lookup, error) {
	outcome := Timeout
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		outcome = Error
	}
	return Lookup{Status: outcome}, fmt.Errorf("mirror: checking %s: gave up waiting: %w", ref, context.Cause(ctx))
}

// join returns the lookup in flight for ref, starting one if there is none,
// and counts the caller among its waiters.
func (c *Checker) join(ctx context.Context, ref string) *flight {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	f := c.flights[ref]
	if f == nil {
		fctx, cancel := context.WithCancel(c.base)
		f = &flight{done: make(chan struct{}), cancel: cancel}
		c.flights[ref] = f
		go c.fly(fctx, ref, f, ctx.Value(reviewKey{}))
	}
	f.waiters++
	f.joined++
	return f
}

// leave takes a check that gave up off f's waiters; the last one cancels
// the lookup.
func (c *Checker) leave(ref string, f *flight) {
	c.fmu.Lock()
	f.waiters--
	last := f.waiters == 0
	if last && c.flights[ref] == f {
		delete(c.flights, ref)
	}
	c.fmu.Unlock()
	if last {
		f.cancel()
	}
}

func (c *Checker) fly(ctx context.Context, ref string, f *flight, review any) {
	res := c.lookup(ctx, ref, review)
	c.fmu.Lock()
	if c.flights[ref] == f {
		delete(c.flights, ref)
	}
	f.res, f.shared = res, f.joined > 1
	c.fmu.Unlock()
	close(f.done)
	f.cancel()
}

type lookupResult struct {
	outcome  Status
	registry string
	digest   string // Present: the manifest's digest, "" if the registry sent none that parses
	err      error
}

// lookup asks the registry, bounded by the timeout and by ctx (cancelled
// when no check waits any more), and records the answer in the cache and
// the registry's circuit. Only the registry's own failures reach the
// circuit: a lookup that got no slot, or that was cancelled because its
// checks gave up, says nothing about the registry.
func (c *Checker) lookup(ctx context.Context, ref string, review any) lookupResult {
	parsed, err := c.parse(ref)
	if err != nil {
		return lookupResult{outcome: Error, err: fmt.Errorf("mirror: %q is not an image reference: %w", ref, err)}
	}
	reg := parsed.Context().RegistryStr()
	res := lookupResult{registry: reg}
	circ, created := c.circuit(parsed.Context().Registry)
	if created {
		// So that the gauge shows every registry asked, not only those
		// whose circuit has changed.
		c.m.circuit.Record(c.base, int64(Closed), metric.WithAttributes(attribute.String("registry", c.circuitLabel(reg))))
	}
	for {
		ok, probe, wait, changed, state := circ.allow(c.now())
		if changed {
			c.stateChanged(reg, state)
		}
		if probe {
			go c.probe(reg, circ)
		}
		if ok {
			break
		}
		if wait != nil {
			// A probe is deciding whether the registry is back: its
			// answer is worth waiting for, as long as someone waits.
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return c.dropped(res, ref)
			}
		}
		c.opens.Add(1)
		c.m.lookups.Add(c.base, 1, c.m.outcome(CircuitOpen))
		res.outcome, res.err = CircuitOpen, fmt.Errorf("mirror: not asking %s for %s: %w after %d consecutive failures and a failed probe (another probe %s after it opened)",
			reg, ref, ErrCircuitOpen, c.failures, c.cooldown)
		return res
	}

	// A slot is waited for as long as some check waits for the lookup
	// (the reviews' deadlines bound it), up to maxSlotWait for checks
	// without a deadline.
	wctx, wcancel := context.WithTimeout(ctx, maxSlotWait)
	err = c.slots.acquire(wctx, review)
	wcancel()
	if err != nil {
		if ctx.Err() != nil {
			return c.dropped(res, ref)
		}
		c.noSlot.Add(1)
		c.m.lookups.Add(c.base, 1, c.m.outcome(lookupNoSlot))
		res.outcome, res.err = lookupNoSlot, fmt.Errorf("mirror: checking %s: no lookup slot free within %s (all %d in use)", ref, maxSlotWait, c.maxInFlight)
		return res
	}
	defer c.slots.release()
	if ctx.Err() != nil {
		return c.dropped(res, ref)
	}

	c.lookups.Add(1)
	start := time.Now()
	hctx, hcancel := context.WithTimeout(ctx, c.timeout)
	// The note sees the manifest HEAD's status, which the puller does not
	// return when it refuses the response's headers.
	note := new(headNote)
	hctx = context.WithValue(hctx, headNoteKey{}, note)
	desc, err := c.currentPuller().Head(hctx, parsed)
	if errors.Is(err, context.Canceled) && hctx.Err() == nil {
		// Another lookup of the same repository, whose checks gave up,
		// was setting up the connection this one shares (the puller does
		// it once per repository, with the first lookup's context), and
		// forgot it: set it up again with this lookup's own.
		desc, err = c.currentPuller().Head(hctx, parsed)
	}
	hcancel()
	if ctx.Err() != nil {
		return c.dropped(res, ref)
	}
	switch {
	case err == nil:
		// Parsed by the puller (v1.NewHash): algorithm and hex length.
		res.digest = desc.Digest.String()
	case note.status.Load() == http.StatusOK:
		// The registry has the manifest, but its answer lacks a header
		// the puller requires (Docker-Content-Digest, Content-Type,
		// Content-Length), or its digest does not parse or does not
		// match a reference by digest: present, with nothing to pin.
		c.logger.Warn("mirror answered 200 for a manifest without a usable digest: present, not pinned",
			zap.String("reference", ref), zap.Error(err))
		err = nil
	}
	res.outcome = classify(err)
	c.m.lookups.Add(c.base, 1, c.m.outcome(res.outcome))
	c.m.lookupDuration.Record(c.base, time.Since(start).Seconds(), c.m.outcome(res.outcome))
	now := c.now()
	switch res.outcome {
	case Present:
		if c.posTTL > 0 {
			c.cache.put(ref, answer{present: true, digest: res.digest}, now.Add(c.posTTL))
		}
	case Missing:
		if c.negTTL > 0 {
			c.cache.put(ref, answer{}, now.Add(c.negTTL))
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
	switch {
	case res.outcome.Known():
		var known name.Reference
		if res.outcome == Present {
			known = parsed
		}
		if changed, state := circ.answered(known); changed {
			c.stateChanged(reg, state)
		}
	case errors.Is(err, context.Canceled):
		// Not the registry: as above, twice (or the checker is closing).
	default:
		if probe, wait := circ.failed(); probe {
			// The lookup that makes the count waits for the probe's
			// verdict (as long as someone waits for the lookup), so that
			// its checks, and those after it, see the circuit as it is.
			go c.probe(reg, circ)
			select {
			case <-wait:
			case <-ctx.Done():
			}
		}
	}
	return res
}

// dropped is the result of a lookup cancelled because no check waits for
// it (or the checker is closing): not cached, not held against the
// registry.
func (c *Checker) dropped(res lookupResult, ref string) lookupResult {
	c.cancelled.Add(1)
	c.m.lookups.Add(c.base, 1, c.m.outcome(lookupCancelled))
	res.outcome, res.err = lookupCancelled, fmt.Errorf("mirror: checking %s: cancelled: %w", ref, context.Cause(c.base))
	if c.base.Err() == nil {
		res.err = fmt.Errorf("mirror: checking %s: cancelled: no check waits for it", ref)
	}
	return res
}

// probe decides whether the registry is failing, with a request of the
// checker's own choosing rather than the references of the reviews: a HEAD
// of a reference it answered present before, or else a GET of its /v2/
// endpoint. An answer (present or missing; for /v2/ a 200 or a 401)
// closes the circuit and clears its failures: the failures were specific
// to the references asked. No answer within the timeout, an error status, a
// refused connection or a TLS failure opens it. One probe per registry is
// in flight at a time; it takes no lookup slot, and it is patient
// (probeTimeouts lookup timeouts): it runs on no review's path, and it
// decides whether every review is refused for a cool-down, so a webhook
// starved of CPU by a flood of reviews must not mistake its own slowness
// for the registry's.
func (c *Checker) probe(reg string, circ *circuit) {
	c.probes.Add(1)
	ctx, cancel := context.WithTimeout(c.base, probeTimeouts*c.timeout)
	defer cancel()
	var err error
	target := "/v2/"
	if known := circ.probeTarget(); known != nil {
		// A client of its own, on the patient transport: the GET /v2/
		// and any token exchange are part of the probe.
		target = known.String()
		var p *remote.Puller
		if p, err = remote.NewPuller(c.probeOpts...); err == nil {
			_, err = p.Head(ctx, known)
			if classify(err).Known() {
				err = nil
			}
		}
	} else {
		_, err = transport.Ping(ctx, circ.registry, c.probeRT)
	}
	if c.base.Err() != nil {
		return // closing
	}
	changed, state := circ.probed(c.now(), err == nil)
	if err != nil {
		c.logger.Debug("mirror registry probe failed", zap.String("registry", reg), zap.String("target", target), zap.Error(err))
	} else {
		c.logger.Debug("mirror registry probe answered: its failures were specific to the references asked",
			zap.String("registry", reg), zap.String("target", target))
	}
	if changed {
		c.stateChanged(reg, state)
	}
}

// headNoteKey is the context key of a lookup's headNote.
type headNoteKey struct{}

// headNote records the status of a lookup's manifest HEAD.
type headNote struct{ status atomic.Int32 }

// noting is the lookups' transport: it records the status of a manifest
// HEAD in the request's headNote, if any.
type noting struct{ next http.RoundTripper }

func (t noting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodHead && strings.Contains(req.URL.Path, "/manifests/") {
		if n, ok := req.Context().Value(headNoteKey{}).(*headNote); ok {
			n.status.Store(int32(resp.StatusCode))
		}
	}
	return resp, err
}

// CloseIdleConnections closes the wrapped transport's, as http.Client does.
func (t noting) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// parse reads a reference as ParseReference does.
func (c *Checker) parse(ref string) (name.Reference, error) { return ParseReference(ref, c.insecure) }

// ParseReference reads a registry reference for go-containerregistry:
// loopback hosts (and, with insecure, any host) may be spoken to over plain
// HTTP, other hosts only over HTTPS. The copier parses its references the
// same way.
func ParseReference(ref string, insecure bool) (name.Reference, error) {
	opts := []name.Option{name.WeakValidation}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil || insecure || !isLoopback(r.Context().RegistryStr()) {
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
func classify(err error) Status {
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
func (c *Checker) circuit(registry name.Registry) (*circuit, bool) {
	reg := registry.RegistryStr()
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
	circ := &circuit{threshold: c.failures, cooldown: c.cooldown, registry: registry}
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
		c.logger.Warn("mirror registry circuit opened: it failed lookups and a probe; checks of its images are answered circuit-open until a probe after the cool-down is answered",
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
	byOutcome              map[Status]metric.MeasurementOption
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
		metric.WithDescription("Mirror checks that were not answered from the cache and not joined to one in flight: registry lookups (or circuit-open refusals), by result; cancelled: stopped because no check waited any more; no-slot: no slot free in time (MaxInFlight), the registry was not asked.")); err != nil {
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
	m.byOutcome = map[Status]metric.MeasurementOption{}
	for _, o := range []Status{Present, Missing, Error, Timeout, CircuitOpen, Skipped, lookupCancelled, lookupNoSlot} {
		m.byOutcome[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", string(o))))
	}
	return nil
}

func (m *instruments) outcome(o Status) metric.MeasurementOption {
	if opt, ok := m.byOutcome[o]; ok {
		return opt
	}
	return m.byOutcome[Error]
}
