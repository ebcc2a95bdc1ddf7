package function

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/mutator-dev/mutator/function/copier"
)

// DefaultReplyWait is how long a request waits for its copy before the
// function answers 202 Accepted (the copy goes on; its result goes to
// K_SINK). Below the webhook's 5 s timeout for sending an event
// (events.DefaultTimeout), so that a request the webhook sends straight to
// the copier (MIRROR_COPY_SINK) is answered before the webhook gives up and
// sends it again; a Broker waits as long.
const DefaultReplyWait = 2 * time.Second

// Config is the function's configuration, read from its environment (func-go
// passes the environment, and ./cfg if present, to Start).
type Config struct {
	// Targets (COPY_TARGETS, required) are the registries or repository
	// prefixes copies may write to: the mirror, e.g.
	// "registry.example.com/mirror". Comma-separated.
	Targets []string
	// Sources (COPY_SOURCES) are those copies may read from; empty is any.
	Sources []string
	// MaxBytes (COPY_MAX_BYTES, a quantity such as 2Gi) bounds one copy.
	// Each bound's default is function/copier's (2Gi, 256 manifests, 2
	// copies, 4 jobs, 10m).
	MaxBytes int64
	// MaxManifests (COPY_MAX_MANIFESTS) bounds one copy's manifests.
	MaxManifests int
	// MaxConcurrent (COPY_MAX_CONCURRENT) bounds the copies running at once.
	MaxConcurrent int
	// Jobs (COPY_JOBS) bounds one copy's parallel blob transfers.
	Jobs int
	// Timeout (COPY_TIMEOUT, a Go duration) bounds one copy.
	Timeout time.Duration
	// ReplyWait (COPY_REPLY_WAIT) bounds how long a request waits for its
	// copy; DefaultReplyWait if unset.
	ReplyWait time.Duration
	// OriginCredentials and MirrorCredentials (COPY_ORIGIN_CREDENTIALS,
	// COPY_MIRROR_CREDENTIALS) are docker config.json files: the
	// .dockerconfigjson key of kubernetes.io/dockerconfigjson Secrets
	// mounted as volumes. Unset is anonymous.
	OriginCredentials, MirrorCredentials string
	// Insecure (COPY_INSECURE) allows plain HTTP to any registry, not
	// only loopback ones. For tests.
	Insecure bool
	// Sink (K_SINK) receives a result event per copy; unset sends none.
	Sink string
	// EventSource (COPY_EVENT_SOURCE) is the result events' source
	// attribute; copier.DefaultEventSource if unset.
	EventSource string
	// LogLevel (LOG_LEVEL): debug, info, warn, error.
	LogLevel zapcore.Level
}

// LoadConfig reads the configuration from env (func-go's cfg map, or the
// process environment as a map).
func LoadConfig(env map[string]string) (Config, error) {
	get := func(k string) string { return strings.TrimSpace(env[k]) }
	cfg := Config{
		Targets:           list(get("COPY_TARGETS")),
		Sources:           list(get("COPY_SOURCES")),
		OriginCredentials: get("COPY_ORIGIN_CREDENTIALS"),
		MirrorCredentials: get("COPY_MIRROR_CREDENTIALS"),
		Sink:              get("K_SINK"),
		EventSource:       get("COPY_EVENT_SOURCE"),
		MaxBytes:          copier.DefaultMaxBytes,
		MaxManifests:      copier.DefaultMaxManifests,
		MaxConcurrent:     copier.DefaultMaxConcurrent,
		Jobs:              copier.DefaultJobs,
		Timeout:           copier.DefaultTimeout,
		ReplyWait:         DefaultReplyWait,
		LogLevel:          zapcore.InfoLevel,
	}
	if len(cfg.Targets) == 0 {
		return cfg, fmt.Errorf("COPY_TARGETS is required: the registries or repository prefixes the copier may write to, e.g. registry.example.com/mirror")
	}
	if v := get("COPY_MAX_BYTES"); v != "" {
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			return cfg, fmt.Errorf("COPY_MAX_BYTES %q: want a positive quantity such as 2Gi", v)
		}
		cfg.MaxBytes = q.Value()
	}
	for _, n := range []struct {
		key  string
		into *int
	}{
		{"COPY_MAX_MANIFESTS", &cfg.MaxManifests},
		{"COPY_MAX_CONCURRENT", &cfg.MaxConcurrent},
		{"COPY_JOBS", &cfg.Jobs},
	} {
		if v := get(n.key); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil || i <= 0 {
				return cfg, fmt.Errorf("%s %q: want a positive integer", n.key, v)
			}
			*n.into = i
		}
	}
	for _, d := range []struct {
		key  string
		into *time.Duration
	}{
		{"COPY_TIMEOUT", &cfg.Timeout},
		{"COPY_REPLY_WAIT", &cfg.ReplyWait},
	} {
		if v := get(d.key); v != "" {
			t, err := time.ParseDuration(v)
			if err != nil || t <= 0 {
				return cfg, fmt.Errorf("%s %q: want a positive duration such as 10m", d.key, v)
			}
			*d.into = t
		}
	}
	if v := get("COPY_INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("COPY_INSECURE %q: want true or false", v)
		}
		cfg.Insecure = b
	}
	if v := get("LOG_LEVEL"); v != "" {
		if err := cfg.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return cfg, fmt.Errorf("LOG_LEVEL %q: %w", v, err)
		}
	}
	if cfg.Sink != "" {
		u, err := url.Parse(cfg.Sink)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, fmt.Errorf("K_SINK %q must be an absolute http or https URL", cfg.Sink)
		}
	}
	if cfg.EventSource == "" {
		cfg.EventSource = copier.DefaultEventSource
	}
	return cfg, nil
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
