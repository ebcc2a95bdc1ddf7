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
)

// Mode says whether the webhook changes objects or only reports what it would change.
type Mode string

const (
	// Enforce patches objects.
	Enforce Mode = "enforce"
	// Audit never patches; it answers with warnings that describe the changes it would make.
	Audit Mode = "audit"
)

// Config is the whole configuration. The env names of the first block are a
// public contract shared with the older webhook users migrate from.
type Config struct {
	Registry               string        `envconfig:"REGISTRY"`
	ImagePullSecret        string        `envconfig:"IMAGE_PULL_SECRET"`
	ImagePullSecretAppend  bool          `envconfig:"IMAGE_PULL_SECRET_APPEND" default:"false"`
	ForceImagePullPolicy   bool          `envconfig:"FORCE_IMAGE_PULL_POLICY" default:"false"`
	ImagePullPolicyToForce string        `envconfig:"IMAGE_PULL_POLICY_TO_FORCE" default:"Always"`
	DefaultStorageClass    string        `envconfig:"DEFAULT_STORAGE_CLASS"`
	ExcludeNamespaces      List          `envconfig:"EXCLUDE_NAMESPACES"`
	IgnoredRegistries      List          `envconfig:"IGNORED_REGISTRIES"`
	LogLevel               string        `envconfig:"LOG_LEVEL" default:"info"`
	RegistryMap            List          `envconfig:"REGISTRY_MAP"`
	Mode                   Mode          `envconfig:"MODE" default:"enforce"`
	Warnings               bool          `envconfig:"WARNINGS" default:"false"`
	Port                   int           `envconfig:"PORT" default:"8080"`
	MetricsPort            int           `envconfig:"METRICS_PORT" default:"9095"`
	TLSCertFile            string        `envconfig:"TLS_CERT_FILE"`
	TLSKeyFile             string        `envconfig:"TLS_KEY_FILE"`
	Sink                   string        `envconfig:"K_SINK"`
	EventSource            string        `envconfig:"EVENT_SOURCE" default:"mutator"`
	ShutdownDelay          time.Duration `envconfig:"SHUTDOWN_DELAY" default:"0s"`
	// RequestBodyBudget bounds the bytes of request bodies held at once
	// (a Kubernetes quantity such as 12Mi).
	RequestBodyBudget Quantity `envconfig:"REQUEST_BODY_BUDGET" default:"12Mi"`
	// EnableHTTP2 offers HTTP/2 (and h2c) as well as HTTP/1.1. The API
	// server calls webhooks over HTTP/1.1 keep-alive, so it is off.
	EnableHTTP2 bool `envconfig:"ENABLE_HTTP2" default:"false"`
	// TLSClientCAFile, when set, makes the admission path accept only
	// clients with a certificate this CA signed: the API server, given one
	// through its AdmissionConfiguration kubeConfigFile.
	TLSClientCAFile string `envconfig:"TLS_CLIENT_CA_FILE"`

	// The standalone server's self-managed certificate (package certs):
	// with WebhookSecretName set, `mutator serve` fills that Secret in
	// SystemNamespace with a CA and a serving certificate for the Service,
	// serves HTTPS with it and keeps the caBundle of the webhooks of
	// WebhookConfigName that call the Service in sync. SYSTEM_NAMESPACE is
	// read by knative.dev/pkg as well; set it from the downward API. The two
	// names default to "mutator" (in normalize, and only in this mode, so
	// that the other modes' configuration does not show settings they ignore).
	WebhookSecretName  string `envconfig:"WEBHOOK_SECRET_NAME"`
	SystemNamespace    string `envconfig:"SYSTEM_NAMESPACE"`
	WebhookServiceName string `envconfig:"WEBHOOK_SERVICE_NAME"`
	WebhookConfigName  string `envconfig:"WEBHOOK_CONFIG_NAME"`

	// The mirror check (package mirror), off by default: before admitting a
	// rewritten image, HEAD its manifest on the mirror. See docs/mirror-check.md's
	// "Mirror check (optional)".
	MirrorCheck bool `envconfig:"MIRROR_CHECK" default:"false"`
	// MirrorCheckTimeout bounds one registry lookup.
	MirrorCheckTimeout time.Duration `envconfig:"MIRROR_CHECK_TIMEOUT" default:"1s"`
	// MirrorCheckReviewBudget bounds all the checks of one review; it must
	// leave the webhook time to answer within the API server's timeout.
	MirrorCheckReviewBudget time.Duration `envconfig:"MIRROR_CHECK_REVIEW_BUDGET" default:"2s"`
	// MirrorCheckMaxLookups bounds the registry lookups of one review
	// (distinct images the cache cannot answer); images past it are not
	// checked and go to MIRROR_UNREACHABLE.
	MirrorCheckMaxLookups int `envconfig:"MIRROR_CHECK_MAX_LOOKUPS" default:"32"`
	// MirrorCheckMaxInFlight bounds the registry lookups in flight at once,
	// all reviews together.
	MirrorCheckMaxInFlight int `envconfig:"MIRROR_CHECK_MAX_IN_FLIGHT" default:"64"`
	// MirrorMissing is what happens to an image the mirror lacks: deny,
	// original or warn.
	MirrorMissing string `envconfig:"MIRROR_MISSING" default:"deny"`
	// MirrorUnreachable is what happens when the check cannot tell (error,
	// timeout, open circuit): rewrite (as if the check were off) or deny.
	MirrorUnreachable string `envconfig:"MIRROR_UNREACHABLE" default:"rewrite"`
	// MirrorCredentials is a docker config.json with the mirror's
	// credentials (a mounted kubernetes.io/dockerconfigjson Secret).
	MirrorCredentials      string        `envconfig:"MIRROR_CREDENTIALS"`
	MirrorCacheTTL         time.Duration `envconfig:"MIRROR_CACHE_TTL" default:"10m"`
	MirrorNegativeCacheTTL time.Duration `envconfig:"MIRROR_NEGATIVE_CACHE_TTL" default:"30s"`
	MirrorCacheSize        Quantity      `envconfig:"MIRROR_CACHE_SIZE" default:"4Mi"`
	// A registry's circuit opens after MirrorCircuitFailures consecutive
	// errors or timeouts and lets one probe through after the cool-down.
	MirrorCircuitFailures int           `envconfig:"MIRROR_CIRCUIT_FAILURES" default:"5"`
	MirrorCircuitCooldown time.Duration `envconfig:"MIRROR_CIRCUIT_COOLDOWN" default:"30s"`
	// MirrorInsecure allows plain HTTP to any mirror host (loopback hosts
	// always may). For tests.
	MirrorInsecure bool `envconfig:"MIRROR_INSECURE" default:"false"`

	// The Go runtime reads these itself; they are read here only to know
	// whether the operator chose garbage collector settings (see
	// app.tuneGC).
	GoGC       string `envconfig:"GOGC"`
	GoMemLimit string `envconfig:"GOMEMLIMIT"`

	// TLSMinVersion is read by knative.dev/pkg when the server starts
	// (with the other WEBHOOK_TLS_* variables); it is read here only to be
	// validated with the rest.
	TLSMinVersion string `envconfig:"WEBHOOK_TLS_MIN_VERSION"`
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

// Load reads the configuration from the environment and validates it.
func Load() (Config, error) {
	if errs := checkTypes(); len(errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return Config{}, fmt.Errorf("reading configuration: %w", err)
	}
	c.normalize()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// normalize removes spellings that mean the same thing, so that the rules
// compare one form only.
func (c *Config) normalize() {
	// A REGISTRY of "/" is kept as written so that Validate refuses it:
	// trimmed to "", it would turn the rewrite off without a word.
	if r := strings.TrimSpace(c.Registry); r != "/" {
		c.Registry = strings.TrimSuffix(r, "/")
	} else {
		c.Registry = r
	}
	for i, r := range c.IgnoredRegistries {
		c.IgnoredRegistries[i] = strings.TrimSuffix(r, "/")
	}
	c.LogLevel = strings.ToLower(strings.TrimSpace(c.LogLevel))
	c.Mode = Mode(strings.ToLower(strings.TrimSpace(string(c.Mode))))
	if c.WebhookSecretName != "" {
		if c.WebhookServiceName == "" {
			c.WebhookServiceName = "mutator"
		}
		if c.WebhookConfigName == "" {
			c.WebhookConfigName = "mutator"
		}
	}
}

// Validate reports every invalid setting at once, naming the env variable.
func (c Config) Validate() error {
	var errs []error
	if c.Registry != "" {
		if err := images.ValidateRegistry(c.Registry); err != nil {
			errs = append(errs, fmt.Errorf("REGISTRY: %w", err))
		}
	}
	for _, r := range c.IgnoredRegistries {
		if _, err := images.CanonicalPrefix(r); err != nil {
			errs = append(errs, fmt.Errorf("IGNORED_REGISTRIES: %q %w", r, err))
		}
	}
	if _, err := images.ParseRegistryMap(c.RegistryMap); err != nil {
		errs = append(errs, fmt.Errorf("REGISTRY_MAP: %w", err))
	}
	switch corev1.PullPolicy(c.ImagePullPolicyToForce) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("IMAGE_PULL_POLICY_TO_FORCE: %q is not one of Always, IfNotPresent, Never", c.ImagePullPolicyToForce))
	}
	// A typo in a name caught here would otherwise surface as every Pod
	// failing to pull or every claim staying Pending.
	if c.ImagePullSecret != "" {
		for _, msg := range validation.IsDNS1123Subdomain(c.ImagePullSecret) {
			errs = append(errs, fmt.Errorf("IMAGE_PULL_SECRET: %q is not a valid Secret name: %s", c.ImagePullSecret, msg))
		}
	}
	if c.DefaultStorageClass != "" {
		for _, msg := range validation.IsDNS1123Subdomain(c.DefaultStorageClass) {
			errs = append(errs, fmt.Errorf("DEFAULT_STORAGE_CLASS: %q is not a valid StorageClass name: %s", c.DefaultStorageClass, msg))
		}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL: %w", err))
	}
	switch c.Mode {
	case Enforce, Audit:
	default:
		errs = append(errs, fmt.Errorf("MODE: %q is not one of enforce, audit", c.Mode))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("PORT: %d is not a TCP port", c.Port))
	}
	if c.MetricsPort < 0 || c.MetricsPort > 65535 {
		errs = append(errs, fmt.Errorf("METRICS_PORT: %d is not a TCP port (0 turns metrics off)", c.MetricsPort))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("TLS_CERT_FILE and TLS_KEY_FILE: set both to serve HTTPS, or neither for plain HTTP"))
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" && c.WebhookSecretName == "" {
		errs = append(errs, errors.New("TLS_CLIENT_CA_FILE: client certificates need HTTPS: set TLS_CERT_FILE and TLS_KEY_FILE, or WEBHOOK_SECRET_NAME"))
	}
	if c.RequestBodyBudget != 0 && c.RequestBodyBudget < 3<<20 {
		errs = append(errs, fmt.Errorf("REQUEST_BODY_BUDGET: %d bytes is less than the largest request body (3Mi); every large review would be refused", c.RequestBodyBudget))
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, errors.New("SHUTDOWN_DELAY: must not be negative"))
	}
	if c.WebhookSecretName != "" {
		errs = append(errs, c.validateWebhookSecret()...)
	}
	if c.MirrorCheck {
		errs = append(errs, c.validateMirrorCheck()...)
	}
	errs = append(errs, validateGC(c.GoGC, c.GoMemLimit)...)
	if err := validateTLSMinVersion(c.TLSMinVersion); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %w", errors.Join(errs...))
	}
	return nil
}

// validateWebhookSecret checks the settings of the self-managed certificate;
// they only matter when WEBHOOK_SECRET_NAME is set.
func (c Config) validateWebhookSecret() []error {
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(c.WebhookSecretName) {
		errs = append(errs, fmt.Errorf("WEBHOOK_SECRET_NAME: %q is not a valid Secret name: %s", c.WebhookSecretName, msg))
	}
	if c.SystemNamespace == "" {
		errs = append(errs, errors.New("SYSTEM_NAMESPACE: required with WEBHOOK_SECRET_NAME (the namespace of the Secret and the Service; set it from the downward API, fieldPath metadata.namespace)"))
	} else {
		for _, msg := range validation.IsDNS1123Label(c.SystemNamespace) {
			errs = append(errs, fmt.Errorf("SYSTEM_NAMESPACE: %q is not a valid namespace: %s", c.SystemNamespace, msg))
		}
	}
	for _, msg := range validation.IsDNS1035Label(c.WebhookServiceName) {
		errs = append(errs, fmt.Errorf("WEBHOOK_SERVICE_NAME: %q is not a valid Service name: %s", c.WebhookServiceName, msg))
	}
	for _, msg := range validation.IsDNS1123Subdomain(c.WebhookConfigName) {
		errs = append(errs, fmt.Errorf("WEBHOOK_CONFIG_NAME: %q is not a valid MutatingWebhookConfiguration name: %s", c.WebhookConfigName, msg))
	}
	// Two sources of the serving certificate would silently disagree about
	// which one the API server trusts.
	if c.TLSCertFile != "" || c.TLSKeyFile != "" {
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
func (c Config) validateMirrorCheck() []error {
	var errs []error
	if c.Registry == "" && len(c.RegistryMap) == 0 {
		errs = append(errs, errors.New("MIRROR_CHECK: nothing to check without REGISTRY or REGISTRY_MAP"))
	}
	if c.MirrorCheckTimeout <= 0 {
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_TIMEOUT: %s must be positive", c.MirrorCheckTimeout))
	}
	switch {
	case c.MirrorCheckReviewBudget <= 0:
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_REVIEW_BUDGET: %s must be positive", c.MirrorCheckReviewBudget))
	case c.MirrorCheckReviewBudget >= maxMirrorReviewBudget:
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_REVIEW_BUDGET: %s leaves no time to answer within the webhook timeout (at most 10s; the standalone manifests use 5s)", c.MirrorCheckReviewBudget))
	case c.MirrorCheckTimeout > c.MirrorCheckReviewBudget:
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_TIMEOUT: %s is longer than MIRROR_CHECK_REVIEW_BUDGET %s", c.MirrorCheckTimeout, c.MirrorCheckReviewBudget))
	}
	if c.MirrorCheckMaxLookups < 1 || c.MirrorCheckMaxLookups > MaxMirrorLookups {
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_MAX_LOOKUPS: %d must be between 1 and %d", c.MirrorCheckMaxLookups, MaxMirrorLookups))
	}
	if c.MirrorCheckMaxInFlight < 1 || c.MirrorCheckMaxInFlight > maxMirrorInFlight {
		errs = append(errs, fmt.Errorf("MIRROR_CHECK_MAX_IN_FLIGHT: %d must be between 1 and %d", c.MirrorCheckMaxInFlight, maxMirrorInFlight))
	}
	switch c.MirrorMissing {
	case "deny", "original", "warn":
	default:
		errs = append(errs, fmt.Errorf("MIRROR_MISSING: %q is not one of deny, original, warn", c.MirrorMissing))
	}
	switch c.MirrorUnreachable {
	case "rewrite", "deny":
	default:
		errs = append(errs, fmt.Errorf("MIRROR_UNREACHABLE: %q is not one of rewrite, deny", c.MirrorUnreachable))
	}
	if c.MirrorCacheTTL < 0 {
		errs = append(errs, errors.New("MIRROR_CACHE_TTL: must not be negative (0 caches no answer)"))
	}
	if c.MirrorNegativeCacheTTL < 0 {
		errs = append(errs, errors.New("MIRROR_NEGATIVE_CACHE_TTL: must not be negative (0 caches no answer)"))
	}
	if c.MirrorCacheSize < 0 {
		errs = append(errs, errors.New("MIRROR_CACHE_SIZE: must not be negative"))
	}
	if c.MirrorCircuitFailures < 1 {
		errs = append(errs, fmt.Errorf("MIRROR_CIRCUIT_FAILURES: %d must be at least 1", c.MirrorCircuitFailures))
	}
	if c.MirrorCircuitCooldown <= 0 {
		errs = append(errs, fmt.Errorf("MIRROR_CIRCUIT_COOLDOWN: %s must be positive", c.MirrorCircuitCooldown))
	}
	return errs
}

// Excluded reports whether the namespace is listed in EXCLUDE_NAMESPACES.
func (c Config) Excluded(namespace string) bool {
	for _, ns := range c.ExcludeNamespaces {
		if ns == namespace {
			return true
		}
	}
	return false
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
