// Command mutator is the webhook as a standalone binary:
//
//	mutator [serve]          serve admission reviews (configured by env)
//	mutator mutate -f FILE   print manifests as the webhook would mutate them
package main

import (
	"context"
	"errors"
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
	"knative.dev/pkg/environment"

	"github.com/mutator-dev/mutator/function/app"
	"github.com/mutator-dev/mutator/function/certs"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/manifests"
	"github.com/mutator-dev/mutator/function/server"
	"github.com/mutator-dev/mutator/function/version"
)

const usage = `usage:
  mutator [serve] [flags]  serve admission reviews on PORT (configuration from env)
  mutator mutate -f FILE   print manifests (YAML or JSON, "-" for stdin) mutated
                           as the webhook would mutate them on create
  mutator krm              run as a KRM function (kustomize, kpt): a ResourceList on
                           stdin, mutated on stdout
  mutator policy           print MutatingAdmissionPolicy objects that apply the same
                           rules without a webhook (kubectl apply -f -); with
                           --guard, the image guard that goes with the webhook
  mutator namespace-policy print the ValidatingAdmissionPolicy that lets only
                           administrators exempt a namespace (kubectl apply -f -)
  mutator node-config      print the node's containerd/CRI-O mirror configuration
  mutator version          print the version (also --version)
  mutator help             print this text; "mutator COMMAND -h" for a command's flags

Configuration is read from the environment; see docs/configuration.md.
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
		// knative.dev/pkg's client flags (--kubeconfig, --server,
		// --kube-api-qps, ...), so the binary is configured like any
		// knative-based controller; only WEBHOOK_SECRET_NAME uses them.
		fs := newFlagSet("serve", "usage: mutator serve [flags]\n\n"+
			"Serves admission reviews on PORT; configuration from env (see docs/configuration.md).\n"+
			"The flags configure the Kubernetes client, used only with WEBHOOK_SECRET_NAME\n"+
			"(self-managed certificates); they are knative.dev/pkg's client flags:\n\n", stderr)
		var kube environment.ClientConfig
		kube.InitFlags(fs)
		if code, ok := parseFlags(fs, args, stdout); !ok {
			return code
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		// The first signal starts the drain; restoring the default handlers
		// then lets a second one end the process at once.
		context.AfterFunc(ctx, stop)
		if err := serve(ctx, &kube); err != nil {
			fmt.Fprintln(stderr, "mutator:", err)
			return 1
		}
		return 0
	case "mutate":
		return mutate(args, stdin, stdout, stderr)
	case "krm":
		return krm(args, stdin, stdout, stderr)
	case "policy":
		return policyCmd(args, stdout, stderr)
	case "namespace-policy":
		return namespacePolicyCmd(args, stdout, stderr)
	case "node-config":
		return nodeConfigCmd(args, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version.Get())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mutator: unknown command %q\n%s", cmd, usage)
	return 2
}

// krm runs the rules as a KRM function: configuration from env (kustomize's
// exec functions pass it with "envs"), a ResourceList on stdin and on stdout.
func krm(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if helpRequested(args) {
		fmt.Fprint(stdout, "usage: mutator krm\n\n"+
			"Reads a KRM ResourceList on standard input and writes it to standard output with its\n"+
			"items mutated as the webhook would mutate them on create; configuration from env.\n"+
			"Changes are info results, refused images error results (exit status 1).\n")
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "mutator krm: unexpected arguments %q\n", args)
		return 2
	}
	m, err := newMutator()
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	if err := m.ResourceList(stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	return 0
}

// newMutator builds the manifests preview from the environment's
// configuration, for mutate and krm.
func newMutator() (*manifests.Mutator, error) {
	cfg, err := config.Load()
	if err != nil {
		return nil, err
	}
	return manifests.New(cfg.Rules, cfg.Review), nil
}

// helpRequested reports whether args ask for help, so that the usage goes
// to standard output (it is what was asked for) rather than standard error.
func helpRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

func serve(ctx context.Context, kube *environment.ClientConfig) error {
	a, err := app.Load(ctx)
	if err != nil {
		return err
	}
	cfg := a.Config
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Close(cctx); err != nil {
			a.Logger.Warn("closing", zap.Error(err))
		}
	}()
	// Only this variant talks to the Kubernetes API; it is set up before
	// listening so that a configuration error leaves nothing half-started.
	var certManager *certs.Manager
	if cfg.Server.SelfManaged != nil {
		if certManager, err = newCertManager(ctx, *cfg.Server.SelfManaged, kube, a.Logger); err != nil {
			return err
		}
	}
	if err := a.StartMetrics(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(cfg.Server.Port))
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	opts := server.Options{
		Handler:       a.Handler,
		Ready:         a.Handler.SetReady,
		TLSCertFile:   cfg.Server.TLSCertFile,
		TLSKeyFile:    cfg.Server.TLSKeyFile,
		ClientCAFile:  cfg.Server.TLSClientCAFile,
		ShutdownDelay: cfg.Server.ShutdownDelay,
		EnableHTTP2:   cfg.Server.HTTP2,
		Logger:        a.Logger,
	}
	if certManager != nil {
		// HTTPS with the Secret's key pair; the certificate controllers run
		// while the server serves (and drains) as usual.
		opts.GetCertificate = certManager.GetCertificate
		return certManager.Serve(ctx, func(ctx context.Context) error {
			return server.Serve(ctx, ln, opts)
		})
	}
	return server.Serve(ctx, ln, opts)
}

// newCertManager sets up the self-managed certificate (WEBHOOK_SECRET_NAME).
func newCertManager(ctx context.Context, cert config.SelfManagedCert, kube *environment.ClientConfig, logger *zap.Logger) (*certs.Manager, error) {
	restCfg, err := kube.GetRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration for WEBHOOK_SECRET_NAME: %w", err)
	}
	return certs.New(ctx, certs.Options{
		RESTConfig:        restCfg,
		Namespace:         cert.Namespace,
		SecretName:        cert.Secret,
		ServiceName:       cert.Service,
		WebhookConfigName: cert.WebhookConfig,
		Logger:            logger,
	})
}

func mutate(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("mutate", "usage: mutator mutate -f FILE\n\n"+
		"Prints the manifests in FILE (YAML or JSON; \"-\" for standard input) as the webhook\n"+
		"would mutate them on create, with the configuration from env. Changes and refusals\n"+
		"are listed on standard error; exit status 1 if the webhook would refuse an object.\n\n", stderr)
	file := fs.String("f", "", `manifest file, or "-" for standard input`)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if *file == "" {
		fmt.Fprint(stderr, "mutator mutate: -f FILE is required\n", usage)
		return 2
	}
	m, err := newMutator()
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
		fmt.Fprintln(stderr, c)
	}
	fmt.Fprintf(stderr, "mutator: %d of %d documents changed\n", res.Changed, res.Documents)
	if len(res.Problems) > 0 {
		// The webhook would refuse these objects: fail the preview, so
		// that a CI job running it stops before the cluster does.
		for _, p := range res.Problems {
			fmt.Fprintln(stderr, "mutator: would deny:", p)
		}
		return 1
	}
	return 0
}

// parseFlags parses args into fs, with the help text on stdout when it was
// asked for. It returns false when the command stops there, with its exit
// status: 0 after the help, 2 after a flag error (which fs printed).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (int, bool) {
	if helpRequested(args) {
		fs.SetOutput(stdout)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		// Every command takes flags only: a stray word is most likely a
		// flag without its dash, which would otherwise be ignored.
		fmt.Fprintf(fs.Output(), "mutator %s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, false
	}
	return 0, true
}

// newFlagSet returns the flag set of a command, writing errors to stderr and
// printing usage, then the flags, for -h.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}
