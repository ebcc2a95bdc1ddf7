// Package function is the mirror copier as a Knative Function: it receives
// dev.mutator.mirror.copy.requested CloudEvents (sent by the mutator with
// MIRROR_MISSING=copy, through a Broker and Trigger), copies the image with
// its referrers from its origin into the mirror (package
// function/copier), answers with the result as a CloudEvent
// (dev.mutator.mirror.copy.succeeded or .failed) and sends the same event to
// K_SINK when set. It has no access to the Kubernetes API.
//
// New, Start, Handle, Ready, Alive and Stop are func-go's instanced
// CloudEvents signature (func.yaml: invoke: cloudevent). cmd/copier serves
// the same Function as a plain binary (the ko image, see
// deploy/copier/service.yaml), because func's builders need a go.mod in the
// function's own directory and this one shares the repository's module.
package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-containerregistry/pkg/authn"
	"go.uber.org/zap"

	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/logs"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/version"
)

// Function is the func-go instance.
type Function struct {
	st       atomic.Pointer[state]
	stopping atomic.Bool
}

type state struct {
	copier    *copier.Copier
	sink      *sink // nil without K_SINK
	source    string
	replyWait time.Duration
	logger    *zap.Logger
}

// New is called by func-go's generated main (and cmd/copier).
func New() *Function { return &Function{} }

// Start reads the configuration from cfg (func-go passes the environment)
// and builds the copier; an invalid configuration stops the function.
func (f *Function) Start(_ context.Context, cfg map[string]string) error {
	c, err := LoadConfig(cfg)
	if err != nil {
		return fmt.Errorf("copier: %w", err)
	}
	logger, err := logs.New(c.LogLevel)
	if err != nil {
		return err
	}
	logger = logger.Named("copier")
	st := &state{source: c.EventSource, replyWait: c.ReplyWait, logger: logger}
	opts := copier.Options{
		MaxBytes: c.MaxBytes, MaxManifests: c.MaxManifests, MaxConcurrent: c.MaxConcurrent, Jobs: c.Jobs, Timeout: c.Timeout,
		AllowedSources: c.Sources, AllowedTargets: c.Targets, Insecure: c.Insecure,
		UserAgent: "mutator-copier/" + version.Get().Version, Logger: logger,
	}
	if opts.SourceKeychain, err = keychain(c.OriginCredentials); err != nil {
		return fmt.Errorf("copier: COPY_ORIGIN_CREDENTIALS: %w", err)
	}
	if opts.TargetKeychain, err = keychain(c.MirrorCredentials); err != nil {
		return fmt.Errorf("copier: COPY_MIRROR_CREDENTIALS: %w", err)
	}
	if c.Sink != "" {
		if st.sink, err = newSink(c.Sink, logger); err != nil {
			return fmt.Errorf("copier: %w", err)
		}
		opts.OnResult = func(res copier.Result) {
			ev, err := copier.NewResultEvent(st.source, res)
			if err != nil {
				logger.Warn("building copy result event", zap.Error(err))
				return
			}
			st.sink.send(ev)
		}
	}
	if st.copier, err = copier.New(opts); err != nil {
		return err
	}
	logger.Info("copier started", zap.Strings("targets", c.Targets), zap.Strings("sources", c.Sources),
		zap.Int64("maxBytes", c.MaxBytes), zap.Int("maxConcurrent", c.MaxConcurrent), zap.Duration("timeout", c.Timeout),
		zap.Bool("sink", c.Sink != ""))
	f.st.Store(st)
	return nil
}

func keychain(path string) (authn.Keychain, error) {
	if path == "" {
		return nil, nil
	}
	return mirror.NewFileKeychain(path)
}

// Handle copies the image a dev.mutator.mirror.copy.requested event names
// and answers with the result event:
//   - 200 with dev.mutator.mirror.copy.succeeded when the mirror has it;
//   - 200 with dev.mutator.mirror.copy.failed for a failure that asking
//     again would not change (invalid, not-found, denied, too-large,
//     digest-mismatch): the delivery succeeded, retrying is pointless;
//   - 503 with dev.mutator.mirror.copy.failed for a transient one
//     (timeout, busy, error), so that the Broker's retry policy applies;
//   - 202 without an event when the copy outlasts COPY_REPLY_WAIT: it goes
//     on, and its result goes to K_SINK;
//   - 400 for an event that is not a valid copy request.
func (f *Function) Handle(ctx context.Context, ev event.Event) (*event.Event, error) {
	st := f.st.Load()
	if st == nil || f.stopping.Load() {
		return nil, cehttp.NewResult(http.StatusServiceUnavailable, "copier: not started or stopping")
	}
	req, err := copier.RequestFromEvent(ev)
	if err != nil {
		return nil, cehttp.NewResult(http.StatusBadRequest, "%v", err)
	}
	wait, cancel := context.WithTimeout(ctx, st.replyWait)
	defer cancel()
	res, err := st.copier.Copy(wait, req)
	if errors.Is(err, copier.ErrInProgress) {
		return nil, cehttp.NewResult(http.StatusAccepted, "copy of %s to %s in progress; its result goes to K_SINK", req.Source, req.Target)
	}
	reply, eerr := copier.NewResultEvent(st.source, res)
	if eerr != nil {
		return nil, cehttp.NewResult(http.StatusInternalServerError, "%v", eerr)
	}
	if res.Retriable() {
		return &reply, cehttp.NewResult(http.StatusServiceUnavailable, "%s", res.Error)
	}
	return &reply, nil
}

// Ready reports whether Start has completed and the function is not stopping.
func (f *Function) Ready(context.Context) (bool, error) {
	return f.st.Load() != nil && !f.stopping.Load(), nil
}

// Alive reports liveness; the process is alive while it can answer.
func (f *Function) Alive(context.Context) (bool, error) { return true, nil }

// Stop waits for the copies in flight until ctx is done (then cancels them;
// what they uploaded stays, and the next request for them resumes), and
// sends the queued result events.
func (f *Function) Stop(ctx context.Context) error {
	f.stopping.Store(true)
	st := f.st.Swap(nil)
	if st == nil {
		return nil
	}
	err := st.copier.Close(ctx)
	if st.sink != nil {
		err = errors.Join(err, st.sink.close(ctx))
	}
	_ = st.logger.Sync()
	return err
}
