package app

import (
	"context"

	"go.uber.org/zap"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror"
)

// newMirrorChecker builds the MIRROR_CHECK checker. It reads the
// credentials file but contacts no registry: the webhook starts without
// the mirror (and without the Kubernetes API), and the first review that
// needs an answer asks.
func newMirrorChecker(ctx context.Context, cfg config.Config, logger *zap.Logger, mp metricProvider) (*mirror.Checker, error) {
	opts := mirror.Options{
		Timeout:       cfg.MirrorCheckTimeout,
		PositiveTTL:   cfg.MirrorCacheTTL,
		NegativeTTL:   cfg.MirrorNegativeCacheTTL,
		CacheBytes:    int64(cfg.MirrorCacheSize),
		Failures:      cfg.MirrorCircuitFailures,
		Cooldown:      cfg.MirrorCircuitCooldown,
		MaxInFlight:   cfg.MirrorCheckMaxInFlight,
		Insecure:      cfg.MirrorInsecure,
		MeterProvider: mp,
		Logger:        logger,
	}
	var registries []string
	if cfg.MirrorCredentials != "" {
		kc, err := mirror.NewFileKeychain(cfg.MirrorCredentials)
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
		zap.Duration("timeout", cfg.MirrorCheckTimeout),
		zap.Duration("reviewBudget", cfg.MirrorCheckReviewBudget),
		zap.Int("maxLookups", cfg.MirrorCheckMaxLookups),
		zap.Int("maxInFlight", cfg.MirrorCheckMaxInFlight),
		zap.String("missing", cfg.MirrorMissing),
		zap.String("unreachable", cfg.MirrorUnreachable),
		zap.Strings("credentialsFor", registries))
	return checker, nil
}
