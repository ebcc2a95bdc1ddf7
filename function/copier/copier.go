// Package copier copies an image from its origin into the mirror, whole:
// the index with every platform manifest, digests preserved, and the
// manifests that refer to it (cosign signatures and attestations, SBOMs),
// both the OCI 1.1 referrers (the referrers API, or its fallback tag
// "sha256-<hex>" on registries without it) and cosign's tag scheme
// ("sha256-<hex>.sig", ".att", ".sbom"), so that a signature check passes on
// the mirror as it does on the origin. It is the core of the copier function
// (copier/ at the repository root) behind MIRROR_MISSING=copy; events.go
// defines the CloudEvents that ask for a copy and record it.
//
// A copy is bounded: it reads every manifest first and refuses, before
// transferring anything, an image whose missing content exceeds MaxBytes
// (or MaxManifests); it has a timeout; at most MaxConcurrent copies run at
// once, and a copy of the same source and target already in flight is
// joined rather than started again. It is idempotent: manifests the mirror
// already has (by digest) are not walked or written again, and blobs it has
// are not uploaded (go-containerregistry checks each one).
package copier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/mutator-dev/mutator/function/internal/defaults"
	"github.com/mutator-dev/mutator/function/mirror"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxBytes      int64 = 2 << 30 // 2 GiB
	DefaultMaxManifests        = 256
	DefaultMaxConcurrent       = 2
	DefaultJobs                = 4
	DefaultTimeout             = 10 * time.Minute
)

// maxDepth bounds the nesting of indexes and of referrers of referrers (a
// signature of an attestation of the image).
const maxDepth = 4

// cosignSuffixes are the tags cosign attaches to "sha256-<hex>" (".sbom" is
// deprecated by cosign but still found).
var cosignSuffixes = []string{".sig", ".att", ".sbom"}

// Options configure New.
type Options struct {
	// MaxBytes bounds what one copy may transfer: the manifests and
	// distinct blobs (by the sizes their manifests declare, which the
	// transfer then enforces) of the image and its referrers that the
	// mirror lacks. A larger copy is refused before any transfer. 0 or
	// less is DefaultMaxBytes.
	MaxBytes int64
	// MaxManifests bounds the manifests one copy reads (index, platform
	// manifests, referrers); 0 or less is DefaultMaxManifests.
	MaxManifests int
	// MaxConcurrent bounds the copies running at once; a copy waits for a
	// slot at most Timeout. 0 or less is DefaultMaxConcurrent.
	MaxConcurrent int
	// Jobs bounds the blobs one copy transfers in parallel; 0 or less is
	// DefaultJobs.
	Jobs int
	// Timeout bounds each copy from the moment it has a slot; 0 or less
	// is DefaultTimeout.
	Timeout time.Duration
	// SourceKeychain and TargetKeychain give credentials for the origin
	// and the mirror (mirror.NewFileKeychain reads a mounted
	// kubernetes.io/dockerconfigjson Secret); nil is anonymous.
	SourceKeychain, TargetKeychain authn.Keychain
	// AllowedSources and AllowedTargets are the registries
	// ("registry.example.com") or repository prefixes
	// ("registry.example.com/mirror") a copy may read from and write to;
	// a prefix matches whole path segments. Empty allows any.
	AllowedSources, AllowedTargets []string
	// Insecure lets any host be spoken to over plain HTTP; loopback hosts
	// (localhost, 127.0.0.1, ::1) always may. For tests only.
	Insecure bool
	// Transport carries the requests; nil is a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// UserAgent is added to go-containerregistry's User-Agent.
	UserAgent string
	// OnResult, when set, is called once per copy (not per caller of a
	// shared copy) with its result, e.g. to record it as an event.
	OnResult func(Result)
	// Logger receives one line per copy; nil discards them.
	Logger *zap.Logger
}

// Stats are running totals, for tests and logs.
type Stats struct {
	Copies     uint64 // copies run (each shared by one or more callers)
	Shared     uint64 // Copy calls that joined a copy in flight
	Failed     uint64 // copies that failed
	InFlight   int    // copies started and not finished (waiting for a slot included)
	Running    int    // copies holding a slot
	MaxRunning int    // the most copies that ever held a slot at once
}

// Copier copies images. It is safe for concurrent use.
type Copier struct {
	opts      Options
	transport http.RoundTripper
	idle      interface{ CloseIdleConnections() }
	logger    *zap.Logger
	sources   []string
	targets   []string

	slots chan struct{}

	// base is the parent of every copy's context; Close cancels it when
	// its deadline passes.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	flights map[string]*flight

	copies, shared, failed atomic.Uint64
	running, maxRunning    atomic.Int64

	// joined, when set by a test, is called by Copy after it has started
	// or joined a flight (shared says which).
	joined func(shared bool)
}

// flight is a copy in progress; callers of Copy wait for done.
type flight struct {
	done chan struct{}
	res  Result
	err  error
}

// New validates the options and returns a Copier.
func New(opts Options) (*Copier, error) {
	opts.MaxBytes = defaults.Positive(opts.MaxBytes, DefaultMaxBytes)
	opts.MaxManifests = defaults.Positive(opts.MaxManifests, DefaultMaxManifests)
	opts.MaxConcurrent = defaults.Positive(opts.MaxConcurrent, DefaultMaxConcurrent)
	opts.Jobs = defaults.Positive(opts.Jobs, DefaultJobs)
	opts.Timeout = defaults.Positive(opts.Timeout, DefaultTimeout)
	if opts.SourceKeychain == nil {
		opts.SourceKeychain = authn.NewMultiKeychain() // anonymous
	}
	if opts.TargetKeychain == nil {
		opts.TargetKeychain = authn.NewMultiKeychain()
	}
	c := &Copier{opts: opts, logger: opts.Logger, flights: map[string]*flight{}}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	var err error
	if c.sources, err = prefixes(opts.AllowedSources); err != nil {
		return nil, fmt.Errorf("copier: allowed sources: %w", err)
	}
	if c.targets, err = prefixes(opts.AllowedTargets); err != nil {
		return nil, fmt.Errorf("copier: allowed targets: %w", err)
	}
	c.transport = opts.Transport
	if c.transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = time.Minute
		t.MaxIdleConnsPerHost = opts.Jobs
		c.transport, c.idle = t, t
	}
	c.slots = make(chan struct{}, opts.MaxConcurrent)
	c.base, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Stats returns the running totals.
func (c *Copier) Stats() Stats {
	c.mu.Lock()
	inFlight := len(c.flights)
	c.mu.Unlock()
	return Stats{
		Copies: c.copies.Load(), Shared: c.shared.Load(), Failed: c.failed.Load(),
		InFlight: inFlight, Running: int(c.running.Load()), MaxRunning: int(c.maxRunning.Load()),
	}
}

// ErrClosed is returned by Copy after Close.
var ErrClosed = errors.New("copier: closed")

// ErrInProgress is returned (wrapped with the context's error) by a Copy
// whose context ended before the copy did; the copy goes on, and its result
// reaches OnResult.
var ErrInProgress = errors.New("copy still in progress")

// Copy copies req.Source to req.Target and returns when the copy is done or
// ctx is. A copy of the same source and target already in flight is joined.
// The copy itself does not end with ctx: it runs to completion or to its
// own timeout, so that a caller giving up (an HTTP request's deadline) does
// not waste what was transferred, and its result still reaches OnResult.
//
// The error is nil exactly when the result is OK; a failed result carries
// its Reason and Error as well. When ctx ends first, the error wraps
// ErrInProgress and ctx's error, and the result has no Reason.
func (c *Copier) Copy(ctx context.Context, req Request) (Result, error) {
	res := Result{Source: req.Source, Target: req.Target}
	src, dst, err := c.parseRequest(req)
	if err != nil {
		res.Reason, res.Error = ReasonInvalid, err.Error()
		return res, err
	}
	key := src.Name() + "\x00" + dst.Name()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		res.Reason, res.Error = ReasonError, ErrClosed.Error()
		return res, ErrClosed
	}
	f, shared := c.flights[key]
	if !shared {
		f = &flight{done: make(chan struct{})}
		c.flights[key] = f
		c.wg.Add(1)
		go c.fly(key, f, req, src, dst)
	}
	c.mu.Unlock()
	if shared {
		c.shared.Add(1)
	}
	if c.joined != nil {
		c.joined(shared)
	}

	select {
	case <-f.done:
		res = f.res
		res.Shared = shared
		return res, f.err
	case <-ctx.Done():
		err := fmt.Errorf("%w: %s to %s: %w", ErrInProgress, req.Source, req.Target, ctx.Err())
		res.Error = err.Error()
		return res, err
	}
}

// fly runs one copy: it waits for a slot, copies, and publishes the result.
func (c *Copier) fly(key string, f *flight, req Request, src, dst name.Reference) {
	defer c.wg.Done()
	c.copies.Add(1)
	res, err := c.slotted(req, src, dst)
	res.ID = uuid.NewString()
	if err != nil {
		c.failed.Add(1)
	}
	f.res, f.err = res, err

	c.mu.Lock()
	delete(c.flights, key)
	c.mu.Unlock()
	close(f.done)

	fields := []zap.Field{zap.String("source", res.Source), zap.String("target", res.Target), zap.String("digest", res.Digest),
		zap.Int("manifests", res.Manifests), zap.Int("referrers", len(res.Referrers)), zap.Int64("bytes", res.Bytes),
		zap.Int64("uploaded", res.Uploaded), zap.Int64("durationMs", res.DurationMs),
		zap.String("namespace", req.Namespace), zap.String("pod", req.Pod)}
	if err != nil {
		c.logger.Warn("copy failed", append(fields, zap.String("reason", string(res.Reason)), zap.Error(err))...)
	} else {
		c.logger.Info("copied", fields...)
	}
	if c.opts.OnResult != nil {
		c.opts.OnResult(res)
	}
}

// slotted waits for a slot (at most Timeout) and runs the copy in it.
func (c *Copier) slotted(req Request, src, dst name.Reference) (Result, error) {
	res := Result{Source: req.Source, Target: req.Target}
	wait := time.NewTimer(c.opts.Timeout)
	defer wait.Stop()
	select {
	case c.slots <- struct{}{}:
	case <-wait.C:
		err := fmt.Errorf("no copy slot freed within %v (%d copies running)", c.opts.Timeout, c.opts.MaxConcurrent)
		res.Reason, res.Error = ReasonBusy, err.Error()
		return res, err
	case <-c.base.Done():
		res.Reason, res.Error = ReasonError, ErrClosed.Error()
		return res, ErrClosed
	}
	n := c.running.Add(1)
	for m := c.maxRunning.Load(); n > m && !c.maxRunning.CompareAndSwap(m, n); m = c.maxRunning.Load() {
	}
	defer func() {
		c.running.Add(-1)
		<-c.slots
	}()

	ctx, cancel := context.WithTimeout(c.base, c.opts.Timeout)
	defer cancel()
	start := time.Now()
	err := c.copy(ctx, src, dst, &res)
	res.DurationMs = time.Since(start).Milliseconds()
	if err != nil {
		res.Reason = classify(ctx, err)
		if res.Reason == ReasonTimeout {
			err = fmt.Errorf("copy did not finish within %v: %w", c.opts.Timeout, err)
		}
		res.Error = err.Error()
	}
	return res, err
}

// Close stops accepting copies and waits for those in flight until ctx is
// done; then it cancels them and waits for them to return.
func (c *Copier) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		c.cancel()
		<-done
		err = fmt.Errorf("copier: copies in flight cancelled at shutdown: %w", ctx.Err())
	}
	c.cancel()
	if c.idle != nil {
		c.idle.CloseIdleConnections()
	}
	return err
}

// copyError carries the reason of a failure that classify cannot infer
// from the error itself.
type copyError struct {
	reason Reason
	err    error
}

func (e *copyError) Error() string { return e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

func fail(reason Reason, format string, args ...any) error {
	return &copyError{reason: reason, err: fmt.Errorf(format, args...)}
}

// classify maps a copy's error to its reason.
func classify(ctx context.Context, err error) Reason {
	var ce *copyError
	if errors.As(err, &ce) {
		return ce.reason
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ReasonTimeout
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return ReasonDenied
		}
	}
	return ReasonError
}

// parseRequest reads and checks a request's references.
func (c *Copier) parseRequest(req Request) (src, dst name.Reference, err error) {
	if err := req.Validate(); err != nil {
		return nil, nil, err
	}
	if src, err = c.parse(req.Source); err != nil {
		return nil, nil, fmt.Errorf("source: %w", err)
	}
	if dst, err = c.parse(req.Target); err != nil {
		return nil, nil, fmt.Errorf("target: %w", err)
	}
	if !allowed(c.sources, src.Context()) {
		return nil, nil, fmt.Errorf("source %s is outside the allowed sources %v", src.Context().Name(), c.sources)
	}
	if !allowed(c.targets, dst.Context()) {
		return nil, nil, fmt.Errorf("target %s is outside the allowed targets %v", dst.Context().Name(), c.targets)
	}
	if src.Context().Name() == dst.Context().Name() {
		return nil, nil, fmt.Errorf("source and target are the same repository %s", src.Context().Name())
	}
	return src, dst, nil
}

// parse reads a reference as the mirror check does: plain HTTP only to
// loopback registries, unless Insecure.
func (c *Copier) parse(ref string) (name.Reference, error) {
	return mirror.ParseReference(ref, c.opts.Insecure)
}

// prefixes normalises allowed registries and repository prefixes the way
// references are (docker.io is index.docker.io, a Docker Hub name without a
// slash is under library/).
func prefixes(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		p = strings.TrimSuffix(strings.TrimSpace(p), "/")
		if p == "" {
			continue
		}
		if !strings.Contains(p, "/") {
			reg, err := name.NewRegistry(p, name.WeakValidation)
			if err != nil {
				return nil, err
			}
			out = append(out, reg.Name())
			continue
		}
		repo, err := name.NewRepository(p, name.WeakValidation)
		if err != nil {
			return nil, err
		}
		out = append(out, repo.Name())
	}
	return out, nil
}

// allowed reports whether repo is under one of the prefixes (all, if none).
func allowed(prefixes []string, repo name.Repository) bool {
	if len(prefixes) == 0 {
		return true
	}
	n := repo.Name()
	for _, p := range prefixes {
		if n == p || strings.HasPrefix(n, p+"/") {
			return true
		}
	}
	return false
}

// options are the remote options of one copy's puller (source) or pusher
// (target).
func (c *Copier) options(ctx context.Context, kc authn.Keychain, rt http.RoundTripper) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(rt),
		remote.WithJobs(c.opts.Jobs),
	}
	if c.opts.UserAgent != "" {
		opts = append(opts, remote.WithUserAgent(c.opts.UserAgent))
	}
	return opts
}
