// Package function is the mutator packaged as a Knative Function: func build
// detects New below (func-go's instanced HTTP signature) and generates a main
// that serves it on LISTEN_ADDRESS. All logic lives in ./function.
package function

import (
	"context"
	"net/http"
	"sync/atomic"

	"github.com/mutator-dev/mutator/function/app"
)

// Function is the func-go instance.
type Function struct {
	app atomic.Pointer[app.App]
}

// New is called by func-go's generated main.
func New() *Function { return &Function{} }

// Start reads the configuration from the environment (func-go passes the same
// values in cfg) and assembles the webhook; an invalid configuration stops
// the function with the error.
func (f *Function) Start(ctx context.Context, _ map[string]string) error {
	a, err := app.Load(ctx)
	if err != nil {
		return err
	}
	if err := a.StartMetrics(); err != nil {
		return err
	}
	f.app.Store(a)
	return nil
}

// Handle serves admission reviews at /mutate.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	a := f.app.Load()
	if a == nil {
		http.Error(w, "mutator: not started", http.StatusServiceUnavailable)
		return
	}
	a.Handler.ServeHTTP(w, r)
}

// Ready reports whether Start has completed and the function is not stopping.
func (f *Function) Ready(context.Context) (bool, error) {
	a := f.app.Load()
	return a != nil && a.Handler.Ready(), nil
}

// Alive reports liveness; the process is alive while it can answer.
func (f *Function) Alive(context.Context) (bool, error) { return true, nil }

// Stop runs after func-go has drained its server on SIGTERM: it flushes the
// audit trail and stops the metrics listener.
func (f *Function) Stop(ctx context.Context) error {
	if a := f.app.Swap(nil); a != nil {
		return a.Close(ctx)
	}
	return nil
}
