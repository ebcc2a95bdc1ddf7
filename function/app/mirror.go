package app

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/events"
	"github.com/mutator-dev/mutator/function/mirror"
)

// copyNegativeTTL caps MIRROR_NEGATIVE_CACHE_TTL with MIRROR_MISSING=copy:
// a missing answer is what denies the Pod until its copy lands, and the
// controller's retry after that must not be denied again for long from the
// cache (docs/mirror-check.md).
const copyNegativeTTL = 5 * time.Second

// checkMirror turns the controller's mirror check on (MIRROR_CHECK): the
// checker, and with MIRROR_MISSING=copy the copy requests' sender.
func (a *App) checkMirror(ctx context.Context, controller *admission.Controller, logger *zap.Logger) error {
	cfg := a.Config
	checker, err := newMirrorChecker(ctx, cfg, logger, a.meterProvider())
	if err != nil {
		return err
	}
	a.closers = append(a.closers, checker.Close)
	var opts []admission.MirrorOption
	if cfg.Mirror.Missing == config.MissingCopy {
		requests, err := a.newCopyRequests(ctx, cfg, logger)
		if err != nil {
			return err
		}
		opts = append(opts, admission.WithCopyRequester(requests))
	}
	return controller.CheckMirror(checker, cfg.Mirror, opts...)
}

// newCopyRequests builds MIRROR_MISSING=copy's requester: an emitter of its
// own (the audit trail's queue, worker and retries) to MIRROR_COPY_SINK, and
// the deduplication in front of it.
func (a *App) newCopyRequests(ctx context.Context, cfg config.Config, logger *zap.Logger) (*admission.CopyRequests, error) {
	// Its own counters are the requester's (mutator.mirror.copy.requests):
	// the emitter's would add to the audit trail's.
	emitter, err := events.New(ctx, events.Options{Sink: cfg.Mirror.CopySink, Source: cfg.Events.Source,
		Logger: logger.Named("copy-requests")})
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, emitter.Close)
	requests, err := admission.NewCopyRequests(emitter, admission.CopyOptions{Source: cfg.Events.Source, Logger: logger,
		MeterProvider: a.meterProvider()})
	if err != nil {
		return nil, err
	}
	logger.Info("mirror copy requests on", zap.String("sink", cfg.Mirror.CopySink),
		zap.Duration("dedupe", admission.DefaultCopyDedupe))
	return requests, nil
}

// newMirrorChecker builds the MIRROR_CHECK checker. It reads the
// credentials file but contacts no registry: the webhook starts without
// the mirror (and without the Kubernetes API), and the first review that
// needs an answer asks.
func newMirrorChecker(ctx context.Context, cfg config.Config, logger *zap.Logger, mp metricProvider) (*mirror.Checker, error) {
	policy := cfg.Mirror
	opts := policy.Lookup
	opts.MeterProvider, opts.Logger = mp, logger
	if policy.Missing == config.MissingCopy && opts.NegativeTTL > copyNegativeTTL {
		opts.NegativeTTL = copyNegativeTTL
	}
	var registries []string
	if policy.Credentials != "" {
		kc, err := mirror.NewFileKeychain(policy.Credentials)
		if err != nil {
			return nil, err
		}
		opts.Keychain, registries = kc, kc.Registries()
	}
	checker, err := mirror.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	logger.Info("mirror check on",
		zap.Duration("timeout", opts.Timeout),
		zap.Duration("reviewBudget", policy.ReviewBudget),
		zap.Int("maxLookups", policy.MaxLookups),
		zap.Int("maxInFlight", opts.MaxInFlight),
		zap.String("missing", string(policy.Missing)),
		zap.String("unreachable", string(policy.Unreachable)),
		zap.Bool("pinDigests", policy.PinDigests),
		zap.Duration("negativeCacheTTL", opts.NegativeTTL),
		zap.Strings("credentialsFor", registries))
	return checker, nil
}
