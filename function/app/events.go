package app

import (
	"context"

	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/events"
)

type metricProvider = metric.MeterProvider

func newEmitter(ctx context.Context, cfg config.Config, logger *zap.Logger, mp metric.MeterProvider) (*events.Emitter, error) {
	return events.New(ctx, events.Options{Sink: cfg.Events.Sink, Source: cfg.Events.Source, Logger: logger, MeterProvider: mp})
}
