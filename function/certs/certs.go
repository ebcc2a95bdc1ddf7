// Package certs gives the standalone webhook (a plain Deployment, no Knative
// Serving and no cert-manager) its own serving certificate, using
// knative.dev/pkg's webhook certificate machinery:
//
//   - knative.dev/pkg/webhook/certificates fills an (initially empty) Secret
//     with a self-signed CA and a serving certificate for
//     <service>.<namespace>.svc, and replaces both a day before they expire;
//   - a reconciler of ours copies the Secret's CA into the caBundle of the
//     MutatingWebhookConfiguration's webhooks that call our Service;
//   - the HTTPS listener reads the key pair from the Secret (through the
//     informer cache) on every handshake, so a rotation needs no restart.
//
// It is the only package that talks to the Kubernetes API, and only the
// `serve` command with WEBHOOK_SECRET_NAME uses it: the function mode and the
// other standalone variants start no informer and make no API call.
//
// # Why not sharedmain
//
// knative.dev/pkg/injection/sharedmain would not start knative's webhook
// server here (none of our reconcilers is an AdmissionController), but it
// does several things a least-privilege, fast-starting webhook cannot accept:
// it GETs the config-logging, config-observability and config-leader-election
// ConfigMaps and watches every ConfigMap of the namespace (so the Role would
// need ConfigMap access, and a Forbidden is a log.Fatal), it log.Fatal's on
// any setup error (skipping our drain and flushes), it listens on a profiling
// port (8008) and, unless told not to, on a health port (8080, our default
// PORT), and it replaces process-wide state (the OpenTelemetry providers,
// klog's logger, client-go's warning handler). So this package does the part
// of sharedmain it needs with the same building blocks: injection.Default
// builds the clients and informers, controller.StartAll runs the controllers.
//
// # No leader election
//
// Every replica runs both controllers. That is safe: the certificates
// controller updates the Secret with the resourceVersion it read, so when two
// replicas race to fill or rotate it one wins and the other gets a conflict,
// re-reads and finds nothing to do; the caBundle reconciler computes the same
// patch from the same Secret on every replica and skips it once applied. It
// saves the Lease RBAC and the failover delay of an election.
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/injection"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/system"
	"knative.dev/pkg/webhook"
	"knative.dev/pkg/webhook/certificates"

	secretinformer "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/secret"
)

// FieldManager is the field manager of our caBundle patches, so that
// `kubectl get -o yaml --show-managed-fields` says who wrote the caBundle.
const FieldManager = "mutator"

// syncTimeout bounds the wait for the first list of Secrets and webhook
// configurations. An informer that cannot list (RBAC, a wrong namespace)
// retries forever without an error we could see; failing the process instead
// makes the problem a CrashLoopBackOff with a message rather than a Pod that
// is silently never ready.
const syncTimeout = 2 * time.Minute

// Options configure New.
type Options struct {
	// RESTConfig reaches the API server.
	RESTConfig *rest.Config
	// Namespace holds the Secret and the Service. It must equal
	// $SYSTEM_NAMESPACE, which knative's certificates controller reads itself.
	Namespace string
	// SecretName is the Secret the certificates controller fills; it must
	// exist (it may be empty): the controller never creates it.
	SecretName string
	// ServiceName is the Service the API server calls; the serving
	// certificate is issued for <ServiceName>.<Namespace>.svc.
	ServiceName string
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks
	// pointing at the Service get the CA as caBundle.
	WebhookConfigName string
	// Logger receives the controllers' logs.
	Logger *zap.Logger
}

func (o Options) validate() error {
	var errs []error
	if o.RESTConfig == nil {
		errs = append(errs, errors.New("no Kubernetes client configuration"))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("no namespace"))
	} else if env := os.Getenv(system.NamespaceEnvKey); env != o.Namespace {
		errs = append(errs, fmt.Errorf("namespace %q differs from $%s %q, which knative's certificates controller uses", o.Namespace, system.NamespaceEnvKey, env))
	}
	for _, msg := range validation.IsDNS1123Subdomain(o.SecretName) {
		errs = append(errs, fmt.Errorf("secret name %q: %s", o.SecretName, msg))
	}
	for _, msg := range validation.IsDNS1035Label(o.ServiceName) {
		errs = append(errs, fmt.Errorf("service name %q: %s", o.ServiceName, msg))
	}
	for _, msg := range validation.IsDNS1123Subdomain(o.WebhookConfigName) {
		errs = append(errs, fmt.Errorf("webhook configuration name %q: %s", o.WebhookConfigName, msg))
	}
	return errors.Join(errs...)
}

// Manager runs the certificate controllers and serves the Secret's key pair.
type Manager struct {
	opts        Options
	logger      *zap.Logger
	informers   []controller.Informer
	controllers []*controller.Impl
	keyPair     *secretKeyPair
}

// New wires the clients, informers and controllers. It makes no API call:
// Run starts them.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	logger := opts.Logger.Named("certs")
	cfg := rest.CopyConfig(opts.RESTConfig)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "mutator"
	}

	ctx = logging.WithLogger(ctx, logger.Sugar())
	// The certificates controller takes the Secret and Service names from
	// the webhook options in the context.
	ctx = webhook.WithOptions(ctx, webhook.Options{ServiceName: opts.ServiceName, SecretName: opts.SecretName})
	ctx = injection.WithConfig(ctx, cfg)
	// injection.Default knows the clients and informers linked into the
	// binary: the kube client, the Secret informer of the system namespace
	// (knative's certificates controller) and the cluster-wide
	// MutatingWebhookConfiguration informer (ours). Building them is local.
	ctx, informers := injection.Default.SetupInformers(ctx, cfg)

	m := &Manager{opts: opts, logger: logger, informers: informers}
	m.keyPair = newSecretKeyPair(secretinformer.Get(ctx).Lister().Secrets(opts.Namespace), opts.SecretName, logger)
	// Neither controller reads configuration from ConfigMaps, so they get
	// an empty static watcher rather than an informer on the namespace's
	// ConfigMaps (which would need RBAC for them).
	cmw := configmap.NewStaticWatcher()
	m.controllers = []*controller.Impl{
		certificates.NewController(ctx, cmw),
		newCABundleController(ctx, opts),
	}
	return m, nil
}

// GetCertificate serves the key pair from the Secret, read on every TLS
// handshake (from the informer's cache), so a rotation needs no restart.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.keyPair.GetCertificate(hello)
}

// Run starts the informers, waits for their first list and runs the
// controllers until ctx is done. It returns an error if the caches do not
// fill within syncTimeout.
func (m *Manager) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	var informers sync.WaitGroup
	// Deferred in this order so that the informers are stopped before
	// waiting for them, whichever way Run returns.
	defer informers.Wait()
	defer stop()
	began := time.Now()
	for _, inf := range m.informers {
		informers.Go(func() { inf.Run(ctx.Done()) })
	}
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	// A short interval: the serving certificate and so readiness wait for
	// this, and a first list takes a few milliseconds.
	err := wait.PollUntilContextCancel(syncCtx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
		return m.synced(), nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped during start-up: not a failure
		}
		return fmt.Errorf("informer caches not filled within %s: check the RBAC for Secrets in %s and for MutatingWebhookConfigurations", syncTimeout, m.opts.Namespace)
	}
	m.logger.Info("informers synced", zap.Duration("took", time.Since(began)))
	if err := controller.StartAll(ctx, m.controllers...); err != nil {
		return fmt.Errorf("running certificate controllers: %w", err)
	}
	return nil
}

func (m *Manager) synced() bool {
	for _, inf := range m.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// Serve runs the controllers while serve serves, and stops serving when the
// controllers fail (for example when RBAC keeps their caches empty). Both
// stop when ctx is done.
func (m *Manager) Serve(ctx context.Context, serve func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		err := m.Run(ctx)
		if err != nil {
			cancel()
		}
		runErr <- err
	}()
	m.logger.Info("serving HTTPS with the certificate from the Secret",
		zap.String("secret", m.opts.Namespace+"/"+m.opts.SecretName),
		zap.String("dnsName", m.opts.ServiceName+"."+m.opts.Namespace+".svc"))
	err := serve(ctx)
	cancel()
	return errors.Join(<-runErr, err)
}
