// Package config loads and validates the webhook's configuration from the
// environment. It is the only place that reads configuration: every mode
// (function, standalone server, CLI) calls Load and passes the result down.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mutation"
)

// Mode says whether the webhook changes objects or only reports what it would change.
type Mode string

const (
	// Enforce patches objects.
	Enforce Mode = "enforce"
	// Audit never patches; it answers with warnings that describe the changes it would make.
	Audit Mode = "audit"
)

// Env is the environment as operators write it, one field per variable:
// the single definition of every setting. Its tags give the variable
// (envconfig), its default (default), what it does (desc), the values it
// takes when they are a fixed set (enum), where the Helm chart sets it
// (helm, a key under the chart's config:), its group in the manual
// (group) and whether the README's summary lists it (summary). Settings lists them for the generated documentation and the
// chart's values schema; Parse turns an Env into the typed Config every mode
// uses. The names of the "rules" group are a public contract shared with the
// older webhook users migrate from.
type Env struct {
	Registry               string `envconfig:"REGISTRY" summary:"true" group:"rules" helm:"registry" desc:"Registry (host, optional port and path) images are rewritten to; empty turns the rewrite off unless REGISTRY_MAP is set."`
	ImagePullSecret        string `envconfig:"IMAGE_PULL_SECRET" summary:"true" group:"rules" helm:"imagePullSecret" desc:"Secret name set as the Pods' imagePullSecrets; it must exist in the workloads' namespaces."`
	ImagePullSecretAppend  bool   `envconfig:"IMAGE_PULL_SECRET_APPEND" summary:"true" default:"false" group:"rules" helm:"imagePullSecretAppend" desc:"Append IMAGE_PULL_SECRET to the Pod's list instead of replacing the list."`
	ForceImagePullPolicy   bool   `envconfig:"FORCE_IMAGE_PULL_POLICY" summary:"true" default:"false" group:"rules" helm:"forceImagePullPolicy" desc:"Set every container's imagePullPolicy to IMAGE_PULL_POLICY_TO_FORCE."`
	ImagePullPolicyToForce string `envconfig:"IMAGE_PULL_POLICY_TO_FORCE" summary:"true" default:"Always" enum:"Always,IfNotPresent,Never" group:"rules" helm:"imagePullPolicyToForce" desc:"The pull policy FORCE_IMAGE_PULL_POLICY sets."`
	DefaultStorageClass    string `envconfig:"DEFAULT_STORAGE_CLASS" summary:"true" group:"rules" helm:"defaultStorageClass" desc:"storageClassName given to PersistentVolumeClaims that set none."`
	ExcludeNamespaces      List   `envconfig:"EXCLUDE_NAMESPACES" summary:"true" group:"rules" helm:"excludeNamespaces" desc:"Namespaces left alone, comma-separated."`
	IgnoredRegistries      List   `envconfig:"IGNORED_REGISTRIES" summary:"true" group:"rules" helm:"ignoredRegistries" desc:"Registry or registry/path prefixes whose images are left as written, comma-separated."`
	LogLevel               string `envconfig:"LOG_LEVEL" summary:"true" default:"info" enum:"trace,debug,info,warn,warning,error,fatal" group:"rules" helm:"logLevel" desc:"Log level; no level prints Pod env values or Secret contents."`
	RegistryMap            List   `envconfig:"REGISTRY_MAP" summary:"true" group:"rules" helm:"registryMap" desc:"Per-source mirrors, source=target comma-separated (source * is every other registry); wins over REGISTRY."`
	Mode                   Mode   `envconfig:"MODE" summary:"true" default:"enforce" enum:"enforce,audit" group:"rules" helm:"mode" desc:"enforce patches objects; audit only answers with warnings saying what it would change."`
	Warnings               bool   `envconfig:"WARNINGS" summary:"true" default:"false" group:"rules" helm:"warnings" desc:"In enforce mode, also answer with a warning per change."`
	RecordOriginalImages   bool   `envconfig:"RECORD_ORIGINAL_IMAGES" default:"false" group:"rules" helm:"recordOriginalImages" desc:"Record on each rewritten Pod, in the annotation mutator.dev/original-images, the image each container and image volume asked for."`

	Port              int           `envconfig:"PORT" summary:"true" default:"8080" group:"server" helm:"port" desc:"Port of the admission endpoint /mutate and the probes."`
	MetricsPort       int           `envconfig:"METRICS_PORT" summary:"true" default:"9095" group:"server" helm:"metricsPort" desc:"Port of Prometheus /metrics (plain HTTP); 0 turns metrics off. Not 9090, which Knative reserves."`
	TLSCertFile       string        `envconfig:"TLS_CERT_FILE" group:"server" desc:"Serving certificate (PEM); with TLS_KEY_FILE the server speaks HTTPS, without both plain HTTP."`
	TLSKeyFile        string        `envconfig:"TLS_KEY_FILE" group:"server" desc:"Private key of TLS_CERT_FILE (PEM)."`
	TLSClientCAFile   string        `envconfig:"TLS_CLIENT_CA_FILE" group:"server" helm:"tlsClientCAFile" desc:"CA bundle (PEM): when set, the admission path answers only clients with a certificate it signed (the API server's AdmissionConfiguration)."`
	TLSMinVersion     string        `envconfig:"WEBHOOK_TLS_MIN_VERSION" enum:",1.2,1.3" group:"server" helm:"tlsMinVersion" desc:"Lowest TLS version served (read by knative.dev/pkg; empty is its default, 1.2)."`
	RequestBodyBudget Quantity      `envconfig:"REQUEST_BODY_BUDGET" default:"12Mi" group:"server" helm:"requestBodyBudget" desc:"Most bytes of request bodies held at once, all requests together (a quantity such as 12Mi; at least 3Mi)."`
	EnableHTTP2       bool          `envconfig:"ENABLE_HTTP2" default:"false" group:"server" helm:"enableHTTP2" desc:"Also offer HTTP/2 (and h2c); the API server calls webhooks over HTTP/1.1."`
	ShutdownDelay     time.Duration `envconfig:"SHUTDOWN_DELAY" default:"0s" group:"server" helm:"shutdownDelay" desc:"On SIGTERM, keep serving this long with readiness failed while endpoints are updated."`
	// The standalone server's self-managed certificate (package certs):
	// with WEBHOOK_SECRET_NAME set, `mutator serve` fills that Secret in
	// SYSTEM_NAMESPACE with a CA and a serving certificate for the Service,
	// serves HTTPS with it and keeps the caBundle of the webhooks of
	// WEBHOOK_CONFIG_NAME that call the Service in sync. SYSTEM_NAMESPACE is
	// read by knative.dev/pkg as well.
	WebhookSecretName  string `envconfig:"WEBHOOK_SECRET_NAME" group:"server" desc:"Secret the standalone server keeps its own CA and serving certificate in (the chart's certificates.source=self-managed sets it)."`
	SystemNamespace    string `envconfig:"SYSTEM_NAMESPACE" group:"server" desc:"Namespace of that Secret and the Service; set it from the downward API (metadata.namespace)."`
	WebhookServiceName string `envconfig:"WEBHOOK_SERVICE_NAME" group:"server" desc:"Service the certificate is for (default mutator, with WEBHOOK_SECRET_NAME)."`
	WebhookConfigName  string `envconfig:"WEBHOOK_CONFIG_NAME" group:"server" desc:"MutatingWebhookConfiguration whose caBundle is kept in sync (default mutator, with WEBHOOK_SECRET_NAME)."`

	Sink        string `envconfig:"K_SINK" summary:"true" group:"events" helm:"sink" desc:"CloudEvents sink of the audit trail (Knative's SinkBinding sets it); empty sends none."`
	EventSource string `envconfig:"EVENT_SOURCE" default:"mutator" group:"events" helm:"eventSource" desc:"CloudEvents source attribute of the audit trail's events."`

	MirrorCheck             bool          `envconfig:"MIRROR_CHECK" summary:"true" default:"false" group:"mirror" helm:"mirror.check" desc:"Before admitting a rewritten image, look its manifest up on the mirror (docs/mirror-check.md)."`
	MirrorCheckTimeout      time.Duration `envconfig:"MIRROR_CHECK_TIMEOUT" default:"1s" group:"mirror" helm:"mirror.checkTimeout" desc:"Bound of one registry lookup."`
	MirrorCheckReviewBudget time.Duration `envconfig:"MIRROR_CHECK_REVIEW_BUDGET" default:"2s" group:"mirror" helm:"mirror.checkReviewBudget" desc:"Bound of all the lookups of one review; below the webhook's timeoutSeconds."`
	MirrorCheckMaxLookups   int           `envconfig:"MIRROR_CHECK_MAX_LOOKUPS" default:"32" group:"mirror" helm:"mirror.checkMaxLookups" desc:"Registry lookups of one review (1-256); images past it go to MIRROR_UNREACHABLE."`
	MirrorCheckMaxInFlight  int           `envconfig:"MIRROR_CHECK_MAX_IN_FLIGHT" default:"64" group:"mirror" helm:"mirror.checkMaxInFlight" desc:"Registry lookups in flight at once, all reviews together (1-1024)."`
	MirrorMissing           string        `envconfig:"MIRROR_MISSING" default:"deny" enum:"deny,original,warn,copy" group:"mirror" helm:"mirror.missing" desc:"An image the mirror lacks: deny the review, keep the original image, rewrite with a warning, or deny it as being copied and ask the copier to copy it (MIRROR_COPY_SINK)."`
	MirrorCopySink          string        `envconfig:"MIRROR_COPY_SINK" group:"mirror" helm:"mirror.copySink" desc:"With MIRROR_MISSING=copy: where copy requests (CloudEvents) go, the copier function or a broker; empty is K_SINK."`
	PinDigests              bool          `envconfig:"PIN_DIGESTS" default:"false" group:"mirror" helm:"mirror.pinDigests" desc:"Pin each rewritten image to the digest the mirror check found (tag@sha256:...); images with a digest stay as written."`
	MirrorUnreachable       string        `envconfig:"MIRROR_UNREACHABLE" default:"rewrite" enum:"rewrite,deny" group:"mirror" helm:"mirror.unreachable" desc:"When the check cannot tell (error, timeout, open circuit): rewrite as if it were off, or deny."`
	MirrorCredentials       string        `envconfig:"MIRROR_CREDENTIALS" group:"mirror" desc:"docker config.json with the mirror's credentials (a mounted kubernetes.io/dockerconfigjson Secret; the chart's mirror.credentialsSecret mounts one)."`
	MirrorCacheTTL          time.Duration `envconfig:"MIRROR_CACHE_TTL" default:"10m" group:"mirror" helm:"mirror.cacheTTL" desc:"How long an image found on the mirror is remembered."`
	MirrorNegativeCacheTTL  time.Duration `envconfig:"MIRROR_NEGATIVE_CACHE_TTL" default:"30s" group:"mirror" helm:"mirror.negativeCacheTTL" desc:"How long an image missing from the mirror is remembered."`
	MirrorCacheSize         Quantity      `envconfig:"MIRROR_CACHE_SIZE" default:"4Mi" group:"mirror" helm:"mirror.cacheSize" desc:"Bytes of the lookup cache (a quantity)."`
	MirrorCircuitFailures   int           `envconfig:"MIRROR_CIRCUIT_FAILURES" default:"5" group:"mirror" helm:"mirror.circuitFailures" desc:"Consecutive errors or timeouts that open a registry's circuit."`
	MirrorCircuitCooldown   time.Duration `envconfig:"MIRROR_CIRCUIT_COOLDOWN" default:"30s" group:"mirror" helm:"mirror.circuitCooldown" desc:"How long an open circuit waits before letting one probe through."`
	MirrorInsecure          bool          `envconfig:"MIRROR_INSECURE" default:"false" group:"mirror" helm:"mirror.insecure" desc:"Allow plain HTTP to any mirror host (loopback hosts always may). For tests."`

	// The Go runtime reads these itself; they are read here to be validated
	// (the runtime ignores what it cannot parse) and to know whether the
	// operator chose garbage collector settings (Config.TuneGC).
	GoGC       string `envconfig:"GOGC" group:"runtime" helm:"goGC" desc:"Go's GOGC; when neither it nor GOMEMLIMIT is set, the mutator uses 400 and an 80MiB soft limit."`
	GoMemLimit string `envconfig:"GOMEMLIMIT" group:"runtime" helm:"goMemLimit" desc:"Go's GOMEMLIMIT (such as 80MiB)."`
}

// List is a comma-separated list whose entries are trimmed of white space;
// empty entries are dropped, so "a, ,b," is [a b].
type List []string

// Decode implements envconfig.Decoder.
func (l *List) Decode(value string) error {
	*l = nil
	for _, item := range strings.Split(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// Quantity is a size in bytes written as a Kubernetes quantity ("24Mi",
// "25165824").
type Quantity int64

// Decode implements envconfig.Decoder.
func (q *Quantity) Decode(value string) error {
	v, err := resource.ParseQuantity(strings.TrimSpace(value))
	if err != nil {
		return fmt.Errorf("%q is not a quantity such as 24Mi: %w", value, err)
	}
	*q = Quantity(v.Value())
	return nil
}

// Load reads the configuration from the environment and parses it: the one
// place configuration is read.
func Load() (Config, error) {
	env, err := ReadEnv()
	if err != nil {
		return Config{}, err
	}
	return env.Parse()
}

// ReadEnv reads the environment into an Env with the defaults filled in,
// reporting every value that does not convert to its setting's type.
func ReadEnv() (Env, error) {
	if errs := checkTypes(); len(errs) > 0 {
		return Env{}, fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	var e Env
	if err := envconfig.Process("", &e); err != nil {
		return Env{}, fmt.Errorf("reading configuration: %w", err)
	}
	return e, nil
}

// Parse validates every setting, reporting all invalid ones at once, each
// named by its variable, and returns the typed configuration. Fields left
// zero mean "unset", as in the environment, except those whose Go zero value
// differs from their default: a test that builds an Env by hand starts from
// Defaults().
func (e Env) Parse() (Config, error) {
	e.normalize()
	var errs []error
	plan, err := images.ParsePlan(e.Registry, e.IgnoredRegistries, e.RegistryMap)
	if err != nil {
		errs = append(errs, imagePlanErrors(e, err)...)
	}
	errs = append(errs, e.validate()...)
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	level, _ := ParseLevel(e.LogLevel)
	c := Config{
		Rules: mutation.Options{
			Images:           plan,
			PullSecret:       e.ImagePullSecret,
			AppendPullSecret: e.ImagePullSecretAppend,
			StorageClass:     e.DefaultStorageClass,
			RecordOriginal:   e.RecordOriginalImages,
		},
		Review: Review{Mode: e.Mode, Warnings: e.Warnings, Exclude: e.ExcludeNamespaces},
		Server: Server{
			Port:            e.Port,
			MetricsPort:     e.MetricsPort,
			TLSCertFile:     e.TLSCertFile,
			TLSKeyFile:      e.TLSKeyFile,
			TLSClientCAFile: e.TLSClientCAFile,
			BodyBudget:      int64(e.RequestBodyBudget),
			HTTP2:           e.EnableHTTP2,
			ShutdownDelay:   e.ShutdownDelay,
		},
		Events: Events{Sink: e.Sink, Source: e.EventSource},
		Log:    level,
		TuneGC: e.GoGC == "" && e.GoMemLimit == "",
	}
	if e.ForceImagePullPolicy {
		c.Rules.PullPolicy = corev1.PullPolicy(e.ImagePullPolicyToForce)
	}
	if e.WebhookSecretName != "" {
		c.Server.SelfManaged = &SelfManagedCert{
			Secret:        e.WebhookSecretName,
			Namespace:     e.SystemNamespace,
			Service:       e.WebhookServiceName,
			WebhookConfig: e.WebhookConfigName,
		}
	}
	if e.MirrorCheck {
		c.Mirror = Mirror{
			Check:        true,
			Missing:      MirrorMissing(e.MirrorMissing),
			Unreachable:  MirrorUnreachable(e.MirrorUnreachable),
			ReviewBudget: e.MirrorCheckReviewBudget,
			MaxLookups:   e.MirrorCheckMaxLookups,
			Credentials:  e.MirrorCredentials,
			PinDigests:   e.PinDigests,
			Lookup: mirror.Options{
				Timeout:     e.MirrorCheckTimeout,
				PositiveTTL: e.MirrorCacheTTL,
				NegativeTTL: e.MirrorNegativeCacheTTL,
				CacheBytes:  int64(e.MirrorCacheSize),
				Failures:    e.MirrorCircuitFailures,
				Cooldown:    e.MirrorCircuitCooldown,
				MaxInFlight: e.MirrorCheckMaxInFlight,
				Insecure:    e.MirrorInsecure,
			},
		}
		if c.Mirror.Missing == MissingCopy {
			c.Mirror.CopySink = e.MirrorCopySink
			if c.Mirror.CopySink == "" {
				c.Mirror.CopySink = e.Sink
			}
		}
	}
	return c, nil
}

// imagePlanErrors names the variable behind each of the image plan's errors.
func imagePlanErrors(e Env, err error) []error {
	// ParsePlan reports all three settings together; re-parse each alone so
	// that every message names its variable.
	var errs []error
	if _, err := images.ParsePlan(e.Registry, nil, nil); err != nil {
		errs = append(errs, fmt.Errorf("REGISTRY: %w", err))
	}
	if _, err := images.ParsePlan("", e.IgnoredRegistries, nil); err != nil {
		errs = append(errs, fmt.Errorf("IGNORED_REGISTRIES: %w", err))
	}
	if _, err := images.ParsePlan("", nil, e.RegistryMap); err != nil {
		errs = append(errs, fmt.Errorf("REGISTRY_MAP: %w", err))
	}
	if len(errs) == 0 {
		errs = append(errs, err)
	}
	return errs
}

// normalize removes spellings that mean the same thing, so that the rules
// compare one form only.
func (e *Env) normalize() {
	// A REGISTRY of "/" is kept as written so that validation refuses it:
	// trimmed to "", it would turn the rewrite off without a word.
	if r := strings.TrimSpace(e.Registry); r != "/" {
		e.Registry = strings.TrimSuffix(r, "/")
	} else {
		e.Registry = r
	}
	e.LogLevel = strings.ToLower(strings.TrimSpace(e.LogLevel))
	e.Mode = Mode(strings.ToLower(strings.TrimSpace(string(e.Mode))))
	if e.WebhookSecretName != "" {
		if e.WebhookServiceName == "" {
			e.WebhookServiceName = "mutator"
		}
		if e.WebhookConfigName == "" {
			e.WebhookConfigName = "mutator"
		}
	}
}

// validate checks every setting but the image plan's.
func (e Env) validate() []error {
	errs := checkEnums(e)
	// A typo in a name caught here would otherwise surface as every Pod
	// failing to pull or every claim staying Pending.
	if e.ImagePullSecret != "" {
		for _, msg := range validation.IsDNS1123Subdomain(e.ImagePullSecret) {
			errs = append(errs, fmt.Errorf("IMAGE_PULL_SECRET: %q is not a valid Secret name: %s", e.ImagePullSecret, msg))
		}
	}
	if e.DefaultStorageClass != "" {
		for _, msg := range validation.IsDNS1123Subdomain(e.DefaultStorageClass) {
			errs = append(errs, fmt.Errorf("DEFAULT_STORAGE_CLASS: %q is not a valid StorageClass name: %s", e.DefaultStorageClass, msg))
		}
	}
	if e.Port < 1 || e.Port > 65535 {
		errs = append(errs, fmt.Errorf("PORT: %d is not a TCP port", e.Port))
	}
	if e.MetricsPort < 0 || e.MetricsPort > 65535 {
		errs = append(errs, fmt.Errorf("METRICS_PORT: %d is not a TCP port (0 turns metrics off)", e.MetricsPort))
	}
	if (e.TLSCertFile == "") != (e.TLSKeyFile == "") {
		errs = append(errs, errors.New("TLS_CERT_FILE and TLS_KEY_FILE: set both to serve HTTPS, or neither for plain HTTP"))
	}
	if e.TLSClientCAFile != "" && e.TLSCertFile == "" && e.WebhookSecretName == "" {
		errs = append(errs, errors.New("TLS_CLIENT_CA_FILE: client certificates need HTTPS: set TLS_CERT_FILE and TLS_KEY_FILE, or WEBHOOK_SECRET_NAME"))
	}
	if e.RequestBodyBudget != 0 && e.RequestBodyBudget < 3<<20 {
		errs = append(errs, fmt.Errorf("REQUEST_BODY_BUDGET: %d bytes is less than the largest request body (3Mi); every large review would be refused", e.RequestBodyBudget))
	}
	if e.ShutdownDelay < 0 {
		errs = append(errs, errors.New("SHUTDOWN_DELAY: must not be negative"))
	}
	if e.WebhookSecretName != "" {
		errs = append(errs, e.validateWebhookSecret()...)
	}
	if e.MirrorCheck {
		errs = append(errs, e.validateMirrorCheck()...)
	} else if e.PinDigests {
		errs = append(errs, errors.New("PIN_DIGESTS: needs MIRROR_CHECK=true: the digest is the one the mirror check finds"))
	}
	errs = append(errs, validateGC(e.GoGC, e.GoMemLimit)...)
	return errs
}

// validateWebhookSecret checks the settings of the self-managed certificate;
// they only matter when WEBHOOK_SECRET_NAME is set.
func (e Env) validateWebhookSecret() []error {
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(e.WebhookSecretName) {
		errs = append(errs, fmt.Errorf("WEBHOOK_SECRET_NAME: %q is not a valid Secret name: %s", e.WebhookSecretName, msg))
	}
	if e.SystemNamespace == "" {
		errs = append(errs, errors.New("SYSTEM_NAMESPACE: required with WEBHOOK_SECRET_NAME (the namespace of the Secret and the Service; set it from the downward API, fieldPath metadata.namespace)"))
	} else {
		for _, msg := range validation.IsDNS1123Label(e.SystemNamespace) {
			errs = append(errs, fmt.Errorf("SYSTEM_NAMESPACE: %q is not a valid namespace: %s", e.SystemNamespace, msg))
		}
	}
	for _, msg := range validation.IsDNS1035Label(e.WebhookServiceName) {
		errs = append(errs, fmt.Errorf("WEBHOOK_SERVICE_NAME: %q is not a valid Service name: %s", e.WebhookServiceName, msg))
	}
	for _, msg := range validation.IsDNS1123Subdomain(e.WebhookConfigName) {
		errs = append(errs, fmt.Errorf("WEBHOOK_CONFIG_NAME: %q is not a valid MutatingWebhookConfiguration name: %s", e.WebhookConfigName, msg))
	}
	// Two sources of the serving certificate would silently disagree about
	// which one the API server trusts.
	if e.TLSCertFile != "" || e.TLSKeyFile != "" {
		errs = append(errs, errors.New("WEBHOOK_SECRET_NAME and TLS_CERT_FILE/TLS_KEY_FILE: set one source of the serving certificate, not both"))
	}
	return errs
}

// Webhook timeouts of the shipped configurations (timeoutSeconds): the
// review budget of the mirror check must fit in the longer one, and the
// docs/mirror-check.md says to keep it well below the one in use.
const maxMirrorReviewBudget = 10 * time.Second

// MaxMirrorLookups bounds MIRROR_CHECK_MAX_LOOKUPS: no Pod needs more
// distinct uncached images checked in one review, and the admission
// controller keeps a verdict per distinct image up to a fixed bound.
const MaxMirrorLookups = 256

// maxMirrorInFlight bounds MIRROR_CHECK_MAX_IN_FLIGHT: each lookup in
// flight holds a connection to the mirror.
const maxMirrorInFlight = 1024

// validateMirrorCheck checks the mirror check's settings; they only matter
// when MIRROR_CHECK is on.
func (e Env) validateMirrorCheck() []error {
	var errs []error
	if e.Registry == "" && len(e.RegistryMap) == 0 {
		errs = append(errs, errors.New("MIRROR_CHECK: nothing to check without REGISTRY or REGISTRY_MAP"))
	}
	if e.MirrorCheckTimeout <= 0 {
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_TIMEOUT: %s must be positive", e.MirrorCheckTimeout))
	}
	switch {
	case e.MirrorCheckReviewBudget <= 0:
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_REVIEW_BUDGET: %s must be positive", e.MirrorCheckReviewBudget))
	case e.MirrorCheckReviewBudget >= maxMirrorReviewBudget:
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_REVIEW_BUDGET: %s leaves no time to answer within the webhook timeout (at most 10s; the standalone manifests use 5s)", e.MirrorCheckReviewBudget))
	case e.MirrorCheckTimeout > e.MirrorCheckReviewBudget:
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_TIMEOUT: %s is longer than MIRROR_CHECK_REVIEW_BUDGET %s", e.MirrorCheckTimeout, e.MirrorCheckReviewBudget))
	}
	if e.MirrorMissing == string(MissingCopy) && e.MirrorCopySink == "" && e.Sink == "" {
		errs = append(errs, errors.New("MIRROR_MISSING: copy needs somewhere to send copy requests: set MIRROR_COPY_SINK (the copier function or a broker) or K_SINK"))
	}
	if e.MirrorCheckMaxLookups < 1 || e.MirrorCheckMaxLookups > MaxMirrorLookups {
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_MAX_LOOKUPS: %d must be between 1 and %d", e.MirrorCheckMaxLookups, MaxMirrorLookups))
	}
	if e.MirrorCheckMaxInFlight < 1 || e.MirrorCheckMaxInFlight > maxMirrorInFlight {
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_MAX_IN_FLIGHT: %d must be between 1 and %d", e.MirrorCheckMaxInFlight, maxMirrorInFlight))
	}
	if e.MirrorCacheTTL < 0 {
		errs = append(errs, errors.New("MIRROR_CACHE_TTL: must not be negative (0 caches no answer)"))
	}
	if e.MirrorNegativeCacheTTL < 0 {
		errs = append(errs, errors.New("MIRROR_NEGATIVE_CACHE_TTL: must not be negative (0 caches no answer)"))
	}
	if e.MirrorCacheSize < 0 {
		errs = append(errs, errors.New("MIRROR_CACHE_SIZE: must not be negative"))
	}
	if e.MirrorCircuitFailures < 1 {
		errs = append(errs, fmt.Errorf("MIRROR_CIRCUIT_FAILURES: %d must be at least 1", e.MirrorCircuitFailures))
	}
	if e.MirrorCircuitCooldown <= 0 {
		errs = append(errs, fmt.Errorf("MIRROR_CIRCUIT_COOLDOWN: %s must be positive", e.MirrorCircuitCooldown))
	}
	return errs
}

// ParseLevel maps LOG_LEVEL to a zap level. zap has no trace level, so trace
// is debug: neither ever prints Pod env values or Secret contents.
func ParseLevel(level string) (zapcore.Level, error) {
	switch level {
	case "trace", "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	case "fatal":
		return zapcore.FatalLevel, nil
	}
	return zapcore.InfoLevel, fmt.Errorf("%q is not one of trace, debug, info, warn, error, fatal", level)
}
