package config

import (
	"slices"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mutation"
)

// Config is the parsed configuration as typed values, one group per
// consumer: the webhook, `mutator mutate`/`krm`, `mutator policy` and
// `mutator node-config` take these, never the environment. Env.Parse builds
// it; nothing else should.
type Config struct {
	// Rules are the pure rules: the image plan, the pull secret, the forced
	// pull policy and the default storage class.
	Rules mutation.Options
	// Review is how a review is answered.
	Review Review
	// Mirror is the mirror check; its zero value is off.
	Mirror Mirror
	// Server is the HTTP(S) server of `mutator serve` and the function.
	Server Server
	// Events is the audit trail; an empty Sink sends none.
	Events Events
	// Log is the log level.
	Log zapcore.Level
	// TuneGC is true when the operator set neither GOGC nor GOMEMLIMIT, so
	// the program may choose its own garbage collector settings.
	TuneGC bool
}

// Review says how a review is answered, whatever the rules decide.
type Review struct {
	Mode     Mode
	Warnings bool     // in enforce mode, also warn each change
	Exclude  []string // namespaces left alone
}

// Audit reports whether the webhook only reports what it would change.
func (r Review) Audit() bool { return r.Mode == Audit }

// Excluded reports whether the namespace is listed in EXCLUDE_NAMESPACES.
func (r Review) Excluded(namespace string) bool { return slices.Contains(r.Exclude, namespace) }

// MirrorMissing is what happens to an image the mirror lacks.
type MirrorMissing string

// The MIRROR_MISSING values.
const (
	MissingDeny     MirrorMissing = "deny"
	MissingOriginal MirrorMissing = "original"
	MissingWarn     MirrorMissing = "warn"
	// MissingCopy denies the review as "being copied" and asks the copier
	// (package copier) to copy the image to the mirror; the controller's
	// retry is admitted once it is there.
	MissingCopy MirrorMissing = "copy"
)

// MirrorUnreachable is what happens when the check cannot tell.
type MirrorUnreachable string

// The MIRROR_UNREACHABLE values.
const (
	UnreachableRewrite MirrorUnreachable = "rewrite"
	UnreachableDeny    MirrorUnreachable = "deny"
)

// Mirror is the mirror check (package mirror) and what the admission
// controller does with its answers.
type Mirror struct {
	Check        bool
	Missing      MirrorMissing
	Unreachable  MirrorUnreachable
	ReviewBudget time.Duration // all the lookups of one review
	MaxLookups   int           // registry lookups of one review
	Credentials  string        // docker config.json path; "" for anonymous
	PinDigests   bool          // pin each rewritten image to the digest the check found
	CopySink     string        // MissingCopy: where copy requests go (MIRROR_COPY_SINK, else K_SINK)
	// Lookup are the checker's options; the caller adds the logger, the
	// meter provider and the keychain.
	Lookup mirror.Options
}

// Server is the HTTP(S) server's configuration.
type Server struct {
	Port, MetricsPort       int
	TLSCertFile, TLSKeyFile string
	TLSClientCAFile         string
	BodyBudget              int64 // bytes of request bodies held at once; 0 is the webhook's default
	HTTP2                   bool
	ShutdownDelay           time.Duration
	SelfManaged             *SelfManagedCert // nil unless WEBHOOK_SECRET_NAME is set
}

// SelfManagedCert is the standalone server's own certificate (package
// certs): the Secret it lives in, the Service it is for and the webhook
// configuration whose caBundle follows it.
type SelfManagedCert struct {
	Secret, Namespace, Service, WebhookConfig string
}

// Events is the audit trail's CloudEvents sink and source.
type Events struct {
	Sink, Source string
}
