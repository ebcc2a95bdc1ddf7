package config_test

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/mutation"
)

// clearEnv unsets every variable Env reads, restoring them after the test,
// so that the machine's environment cannot leak into Load.
func clearEnv(t *testing.T) {
	t.Helper()
	typ := reflect.TypeFor[config.Env]()
	for i := range typ.NumField() {
		name := typ.Field(i).Tag.Get("envconfig")
		if name == "" {
			t.Fatalf("field %s has no envconfig tag", typ.Field(i).Name)
		}
		t.Setenv(name, "") // registers the restore
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

// load sets env on a clean environment and calls config.Load.
func load(t *testing.T, env map[string]string) (config.Config, error) {
	t.Helper()
	clearEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	return config.Load()
}

func mustLoad(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	c, err := load(t, env)
	if err != nil {
		t.Fatalf("Load with %v: %v", env, err)
	}
	return c
}

func TestLoadDefaults(t *testing.T) {
	want := config.Config{
		Review: config.Review{Mode: config.Enforce},
		Server: config.Server{Port: 8080, MetricsPort: 9095, BodyBudget: 12 << 20},
		Events: config.Events{Source: "mutator"},
		Log:    zapcore.InfoLevel,
		TuneGC: true,
	}
	if diff := cmp.Diff(want, mustLoad(t, nil)); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestLoadValues(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c config.Config)
	}{
		{"trailing slash on REGISTRY", map[string]string{"REGISTRY": "registry.example.com/mirror/"}, func(t *testing.T, c config.Config) {
			if c.Rules.Images.Registry != "registry.example.com/mirror" {
				t.Errorf("Registry = %q", c.Rules.Images.Registry)
			}
		}},
		{"spaces around REGISTRY", map[string]string{"REGISTRY": " registry.example.com/ "}, func(t *testing.T, c config.Config) {
			if c.Rules.Images.Registry != "registry.example.com" {
				t.Errorf("Registry = %q", c.Rules.Images.Registry)
			}
		}},
		{"EXCLUDE_NAMESPACES list", map[string]string{"EXCLUDE_NAMESPACES": "a, b ,,c"}, func(t *testing.T, c config.Config) {
			if diff := cmp.Diff([]string{"a", "b", "c"}, c.Review.Exclude); diff != "" {
				t.Errorf("Exclude (-want +got):\n%s", diff)
			}
		}},
		{"IGNORED_REGISTRIES trimmed", map[string]string{"IGNORED_REGISTRIES": "gcr.io/, quay.io/org/ "}, func(t *testing.T, c config.Config) {
			if diff := cmp.Diff([]string{"gcr.io", "quay.io/org"}, c.Rules.Images.Ignored); diff != "" {
				t.Errorf("Ignored (-want +got):\n%s", diff)
			}
		}},
		{"REGISTRY_MAP parsed in order", map[string]string{"REGISTRY_MAP": "Quay.io:443=harbor.example.com/quay/, *=harbor.example.com/all"}, func(t *testing.T, c config.Config) {
			want := []images.Rule{{Source: "quay.io", Target: "harbor.example.com/quay"}, {Source: "*", Target: "harbor.example.com/all"}}
			if diff := cmp.Diff(want, c.Rules.Images.Map); diff != "" {
				t.Errorf("Map (-want +got):\n%s", diff)
			}
		}},
		{"REGISTRY_MAP docker hub accepted", map[string]string{"REGISTRY_MAP": "index.docker.io=harbor.example.com/dockerhub"}, func(t *testing.T, c config.Config) {
			want := []images.Rule{{Source: "docker.io", Target: "harbor.example.com/dockerhub"}}
			if diff := cmp.Diff(want, c.Rules.Images.Map); diff != "" {
				t.Errorf("Map (-want +got):\n%s", diff)
			}
		}},
		{"upper-case LOG_LEVEL and MODE", map[string]string{"LOG_LEVEL": "DEBUG", "MODE": "Audit"}, func(t *testing.T, c config.Config) {
			if c.Log != zapcore.DebugLevel || c.Review.Mode != config.Audit {
				t.Errorf("Log, Mode = %v, %q", c.Log, c.Review.Mode)
			}
		}},
		{"pull policy not forced", map[string]string{"IMAGE_PULL_POLICY_TO_FORCE": "Never"}, func(t *testing.T, c config.Config) {
			if c.Rules.PullPolicy != "" {
				t.Errorf("PullPolicy = %q without FORCE_IMAGE_PULL_POLICY", c.Rules.PullPolicy)
			}
		}},
		{"GC chosen by the operator", map[string]string{"GOMEMLIMIT": "100MiB"}, func(t *testing.T, c config.Config) {
			if c.TuneGC {
				t.Error("TuneGC with GOMEMLIMIT set")
			}
		}},
		{"self-managed certificate", map[string]string{"WEBHOOK_SECRET_NAME": "certs", "SYSTEM_NAMESPACE": "mutator-system"}, func(t *testing.T, c config.Config) {
			want := &config.SelfManagedCert{Secret: "certs", Namespace: "mutator-system", Service: "mutator", WebhookConfig: "mutator"}
			if diff := cmp.Diff(want, c.Server.SelfManaged); diff != "" {
				t.Errorf("SelfManaged (-want +got):\n%s", diff)
			}
		}},
		{"all set", map[string]string{
			"REGISTRY": "localhost:5000", "IMAGE_PULL_SECRET": "regcred", "IMAGE_PULL_SECRET_APPEND": "true",
			"FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "IfNotPresent", "DEFAULT_STORAGE_CLASS": "fast",
			"PORT": "8443", "METRICS_PORT": "0", "TLS_CERT_FILE": "/tls/crt", "TLS_KEY_FILE": "/tls/key",
			"WARNINGS": "true", "SHUTDOWN_DELAY": "5s", "K_SINK": "http://broker", "EVENT_SOURCE": "src",
			"REQUEST_BODY_BUDGET": "64Mi", "ENABLE_HTTP2": "true", "TLS_CLIENT_CA_FILE": "/tls/ca",
		}, func(t *testing.T, c config.Config) {
			want := config.Config{
				Rules: mutation.Options{Images: images.Plan{Registry: "localhost:5000"}, PullSecret: "regcred", AppendPullSecret: true,
					PullPolicy: corev1.PullIfNotPresent, StorageClass: "fast"},
				Review: config.Review{Mode: config.Enforce, Warnings: true},
				Server: config.Server{Port: 8443, TLSCertFile: "/tls/crt", TLSKeyFile: "/tls/key", TLSClientCAFile: "/tls/ca",
					BodyBudget: 64 << 20, HTTP2: true, ShutdownDelay: 5 * time.Second},
				Events: config.Events{Sink: "http://broker", Source: "src"},
				Log:    zapcore.InfoLevel,
				TuneGC: true,
			}
			if diff := cmp.Diff(want, c); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustLoad(t, tt.env))
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // the env variable the error must name
	}{
		{"pull policy", map[string]string{"IMAGE_PULL_POLICY_TO_FORCE": "Sometimes"}, "IMAGE_PULL_POLICY_TO_FORCE"},
		{"log level", map[string]string{"LOG_LEVEL": "verbose"}, "LOG_LEVEL"},
		{"force bool", map[string]string{"FORCE_IMAGE_PULL_POLICY": "maybe"}, "FORCE_IMAGE_PULL_POLICY"},
		{"port zero", map[string]string{"PORT": "0"}, "PORT"},
		{"port too big", map[string]string{"PORT": "65536"}, "PORT"},
		{"port not a number", map[string]string{"PORT": "http"}, "PORT"},
		{"metrics port negative", map[string]string{"METRICS_PORT": "-1"}, "METRICS_PORT"},
		{"registry without host", map[string]string{"REGISTRY": "myregistry"}, "REGISTRY"},
		{"registry with tag", map[string]string{"REGISTRY": "r.example.com/x:tag"}, "REGISTRY"},
		{"registry of only a slash", map[string]string{"REGISTRY": " / "}, "REGISTRY"},
		{"pull secret name", map[string]string{"IMAGE_PULL_SECRET": "Bad_Name"}, "IMAGE_PULL_SECRET"},
		{"storage class name", map[string]string{"DEFAULT_STORAGE_CLASS": "Fast Disk"}, "DEFAULT_STORAGE_CLASS"},
		{"mode", map[string]string{"MODE": "dry"}, "MODE"},
		{"cert without key", map[string]string{"TLS_CERT_FILE": "/tls/crt"}, "TLS_CERT_FILE"},
		{"key without cert", map[string]string{"TLS_KEY_FILE": "/tls/key"}, "TLS_KEY_FILE"},
		{"registry map", map[string]string{"REGISTRY_MAP": "garbage"}, "REGISTRY_MAP"},
		{"ignored registry with space", map[string]string{"IGNORED_REGISTRIES": "gcr.io/a b"}, "IGNORED_REGISTRIES"},
		{"ignored registry with a tag", map[string]string{"IGNORED_REGISTRIES": "registry.k8s.io/pause:3.10"}, `"registry.k8s.io/pause:3.10"`},
		{"ignored registry with a digest", map[string]string{"IGNORED_REGISTRIES": "registry.k8s.io/pause@sha256:abc"}, "IGNORED_REGISTRIES"},
		{"ignored registry with an upper-case path", map[string]string{"IGNORED_REGISTRIES": "quay.io/Org"}, `"quay.io/Org"`},
		{"negative shutdown delay", map[string]string{"SHUTDOWN_DELAY": "-1s"}, "SHUTDOWN_DELAY"},
		{"body budget below the largest body", map[string]string{"REQUEST_BODY_BUDGET": "1Mi"}, "REQUEST_BODY_BUDGET"},
		{"body budget not a quantity", map[string]string{"REQUEST_BODY_BUDGET": "lots"}, "REQUEST_BODY_BUDGET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.env)
			if err == nil {
				t.Fatalf("Load with %v = %+v, want an error", tt.env, c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %s", err, tt.want)
			}
		})
	}
}

func TestLoadReportsEveryError(t *testing.T) {
	_, err := load(t, map[string]string{"MODE": "dry", "LOG_LEVEL": "verbose", "PORT": "0"})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, name := range []string{"MODE", "LOG_LEVEL", "PORT"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestExcluded(t *testing.T) {
	c := config.Review{Exclude: []string{"kube-system", "infra"}}
	tests := []struct {
		ns   string
		want bool
	}{
		{"kube-system", true},
		{"infra", true},
		{"default", false},
		{"kube", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run("ns="+tt.ns, func(t *testing.T) {
			if got := c.Excluded(tt.ns); got != tt.want {
				t.Errorf("Excluded(%q) = %v, want %v", tt.ns, got, tt.want)
			}
		})
	}
}

func TestListDecode(t *testing.T) {
	tests := []struct {
		in   string
		want config.List
	}{
		{"", nil},
		{"a", config.List{"a"}},
		{"a, b ,,c", config.List{"a", "b", "c"}},
		{" , ,", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			l := config.List{"stale"}
			if err := l.Decode(tt.in); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(l, tt.want) {
				t.Errorf("Decode(%q) = %q, want %q", tt.in, l, tt.want)
			}
		})
	}
}

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    zapcore.Level
		wantErr bool
	}{
		{"trace", zapcore.DebugLevel, false},
		{"debug", zapcore.DebugLevel, false},
		{"info", zapcore.InfoLevel, false},
		{"", zapcore.InfoLevel, false},
		{"warn", zapcore.WarnLevel, false},
		{"warning", zapcore.WarnLevel, false},
		{"error", zapcore.ErrorLevel, false},
		{"fatal", zapcore.FatalLevel, false},
		{"verbose", zapcore.InfoLevel, true},
		{"DEBUG", zapcore.InfoLevel, true}, // Load lower-cases; ParseLevel itself does not
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := config.ParseLevel(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLevel(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseLevel(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// TestParseDirect: an Env built in code (by a tool or a test) is parsed
// like one read from the environment.
func TestParseDirect(t *testing.T) {
	valid := config.Defaults()
	valid.ImagePullPolicyToForce, valid.Mode, valid.Port, valid.MetricsPort = "Never", config.Audit, 1, 65535
	if _, err := valid.Parse(); err != nil {
		t.Errorf("Parse(%+v) = %v", valid, err)
	}
	invalid := valid
	invalid.ImagePullPolicyToForce = "always" // policies are case-sensitive in the API
	if _, err := invalid.Parse(); err == nil || !strings.Contains(err.Error(), "IMAGE_PULL_POLICY_TO_FORCE") {
		t.Errorf("Parse with policy %q = %v, want an IMAGE_PULL_POLICY_TO_FORCE error", invalid.ImagePullPolicyToForce, err)
	}
}

// TestSettings: every variable is described, once, with what the
// generated documentation and values schema need.
func TestSettings(t *testing.T) {
	seen := map[string]bool{}
	helm := map[string]bool{}
	for _, s := range config.Settings() {
		if s.Env == "" || s.Description == "" || s.Group == "" || s.Type == "" {
			t.Errorf("setting %+v lacks a name, description, group or type", s)
		}
		if seen[s.Env] {
			t.Errorf("%s defined twice", s.Env)
		}
		seen[s.Env] = true
		if s.Helm != "" && helm[s.Helm] {
			t.Errorf("Helm key %s used twice", s.Helm)
		}
		helm[s.Helm] = true
		if s.Default != "" && len(s.Enum) > 0 && !slices.Contains(s.Enum, s.Default) {
			t.Errorf("%s: default %q is not one of %q", s.Env, s.Default, s.Enum)
		}
	}
	for _, name := range []string{"REGISTRY", "IMAGE_PULL_SECRET", "IMAGE_PULL_SECRET_APPEND", "FORCE_IMAGE_PULL_POLICY",
		"IMAGE_PULL_POLICY_TO_FORCE", "DEFAULT_STORAGE_CLASS", "EXCLUDE_NAMESPACES", "IGNORED_REGISTRIES", "LOG_LEVEL"} {
		if !seen[name] {
			t.Errorf("%s, a name of the public contract, is not a setting", name)
		}
	}
}

// TestDefaultsParse: the defaults are a valid configuration, and the same
// as an empty environment's.
func TestDefaultsParse(t *testing.T) {
	fromCode, err := config.Defaults().Parse()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(mustLoad(t, nil), fromCode); diff != "" {
		t.Errorf("Defaults() and an empty environment differ (-env +Defaults):\n%s", diff)
	}
}

// TestLoadReportsEveryError: every bad variable is in one message, each
// with its name, its value and what is allowed, type errors included and
// without envconfig's internals.
func TestLoadReportsEveryBadVariable(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"type errors together", map[string]string{
			"IMAGE_PULL_SECRET_APPEND": "yes", "PORT": "eighty", "SHUTDOWN_DELAY": "5", "REQUEST_BODY_BUDGET": "lots",
		}, []string{
			`IMAGE_PULL_SECRET_APPEND: "yes" is not a boolean (true or false)`,
			`PORT: "eighty" is not a whole number`,
			`SHUTDOWN_DELAY: "5" is not a duration`,
			`REQUEST_BODY_BUDGET: "lots" is not valid`,
		}},
		{"validation errors together", map[string]string{
			"MODE": "dry", "GOGC": "fast", "GOMEMLIMIT": "80MB", "WEBHOOK_TLS_MIN_VERSION": "1.1", "REGISTRY": "mirror",
		}, []string{
			`MODE: "dry" is not one of enforce, audit`,
			`GOGC: "fast" is not a percentage`,
			`GOMEMLIMIT: "80MB" is not a size such as 80MiB`,
			`WEBHOOK_TLS_MIN_VERSION: "1.1" is not one of 1.2, 1.3`,
			`REGISTRY:`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.env)
			if err == nil {
				t.Fatalf("Load with %v: no error", tt.env)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, internal := range []string{"envconfig", "strconv", "converting"} {
				if strings.Contains(msg, internal) {
					t.Errorf("error shows %q:\n%s", internal, msg)
				}
			}
		})
	}
}

func TestGCAndTLSSettingsAccepted(t *testing.T) {
	for _, env := range []map[string]string{
		{"GOGC": "off"}, {"GOGC": "200"}, {"GOMEMLIMIT": "off"}, {"GOMEMLIMIT": "100MiB"}, {"GOMEMLIMIT": "104857600"},
		{"WEBHOOK_TLS_MIN_VERSION": "1.2"},
	} {
		if _, err := load(t, env); err != nil {
			t.Errorf("Load with %v: %v", env, err)
		}
	}
}
