// Command mutator is the webhook as a standalone binary:
//
//	mutator [serve]          serve admission reviews (configured by env)
//	mutator mutate -f FILE   print manifests as the webhook would mutate them
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mutator-dev/mutator/function/app"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/manifests"
	"github.com/mutator-dev/mutator/function/server"
)

const usage = `usage:
  mutator [serve]          serve admission reviews on PORT (configuration from env)
  mutator mutate -f FILE   print manifests (YAML or JSON, "-" for stdin) mutated
                           as the webhook would mutate them on create

Configuration is read from the environment; see the README.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := serve(ctx); err != nil {
			fmt.Fprintln(stderr, "mutator:", err)
			return 1
		}
		return 0
	case "mutate":
		return mutate(args, stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mutator: unknown command %q\n%s", cmd, usage)
	return 2
}

func serve(ctx context.Context) error {
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			a.Logger.Warn("closing", zap.Error(err))
		}
	}()
	if err := a.StartMetrics(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	return server.Serve(ctx, ln, server.Options{
		Handler:       a.Handler,
		Ready:         a.Handler.SetReady,
		TLSCertFile:   cfg.TLSCertFile,
		TLSKeyFile:    cfg.TLSKeyFile,
		ShutdownDelay: cfg.ShutdownDelay,
		Logger:        a.Logger,
	})
}

func mutate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mutate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", `manifest file, or "-" for standard input`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprint(stderr, "mutator mutate: -f FILE is required\n", usage)
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	m, err := manifests.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintln(stderr, "mutator:", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	res, err := m.Mutate(in, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	for _, c := range res.Changes {
		fmt.Fprintln(stderr, c.Describe(false))
	}
	fmt.Fprintf(stderr, "mutator: %d of %d documents changed\n", res.Changed, res.Documents)
	return 0
}
