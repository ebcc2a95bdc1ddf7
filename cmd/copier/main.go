// Command copier serves the mirror copier function (copier/ at the
// repository root) as a plain binary, the way func-go's CloudEvents runtime
// serves it: CloudEvents on /, /health/readiness and /health/liveness, on
// LISTEN_ADDRESS (default [::]:8080); configuration from the environment
// (see docs/mirror-copy.md). It is what the ko image of
// deploy/copier/service.yaml runs:
//
//	ko build ./cmd/copier
//
// (func's builders cannot build copier/ itself: they need a go.mod in the
// function's directory, and copier/ shares the repository's module.)
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	function "github.com/mutator-dev/mutator/copier"
	"github.com/mutator-dev/mutator/function/version"
)

// Shutdown budgets, func-go's: the server drains its requests, then the
// function its copies and events.
const (
	serverShutdown = 30 * time.Second
	instanceStop   = 30 * time.Second
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "version", "--version":
			fmt.Println(strings.Replace(version.Get().String(), "mutator", "mutator-copier", 1))
			return
		default:
			fmt.Fprintln(os.Stderr, "usage: copier [version]   (serves CloudEvents; configuration from env, see docs/mirror-copy.md)")
			os.Exit(2)
		}
	}
	env := environ()
	addr := env["LISTEN_ADDRESS"]
	if addr == "" {
		addr = "[::]:8080"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "copier:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, env, ln); err != nil {
		fmt.Fprintln(os.Stderr, "copier:", err)
		os.Exit(1)
	}
}

func environ() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// run starts the function, serves it on ln until ctx is done, then drains
// and stops it.
func run(ctx context.Context, env map[string]string, ln net.Listener) error {
	cfg, err := function.LoadConfig(env)
	if err != nil {
		ln.Close()
		return err
	}
	f := function.New()
	if err := f.Start(ctx, env); err != nil {
		ln.Close()
		return err
	}
	p, err := cloudevents.NewHTTP()
	if err != nil {
		ln.Close()
		return err
	}
	receiver, err := cloudevents.NewHTTPReceiveHandler(ctx, p, f.Handle)
	if err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health/readiness", probe(f.Ready))
	mux.HandleFunc("/health/liveness", probe(f.Alive))
	mux.Handle("/", receiver)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 2 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A request waits for its copy at most COPY_REPLY_WAIT.
		WriteTimeout:   cfg.ReplyWait + 10*time.Second,
		IdleTimeout:    30 * time.Second,
		MaxHeaderBytes: 1 << 20,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err = <-served:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), serverShutdown)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		err = errors.Join(err, serr)
	}
	ictx, icancel := context.WithTimeout(context.Background(), instanceStop)
	defer icancel()
	if serr := f.Stop(ictx); serr != nil {
		err = errors.Join(err, serr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// probe serves a readiness or liveness check as func-go does: 200 when the
// function says yes, 503 when no, 500 on error.
func probe(check func(context.Context) (bool, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok, err := check(r.Context())
		switch {
		case err != nil:
			http.Error(w, "error: "+err.Error(), http.StatusInternalServerError)
		case !ok:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, "OK")
		}
	}
}
