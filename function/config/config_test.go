package config_test

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/mutator-dev/mutator/function/config"
)

// clearEnv unsets every variable Config reads, restoring them after the test,
// so that the machine's environment cannot leak into Load.
func clearEnv(t *testing.T) {
	t.Helper()
	typ := reflect.TypeFor[config.Config]()
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
	c := mustLoad(t, nil)
	want := config.Config{
		ImagePullPolicyToForce: "Always",
		LogLevel:               "info",
		Mode:                   config.Enforce,
		Port:                   8080,
		MetricsPort:            9095,
		EventSource:            "mutator",
		RequestBodyBudget:      12 << 20,
	}
	withMirrorDefaults(&want)
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestLoadValues(t *testing.T) {
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, c config.Config)
	}{
		{"trailing slash on REGISTRY", map[string]string{"REGISTRY": "registry.example.com/mirror/"}, func(t *testing.T, c config.Config) {
			if c.Registry != "registry.example.com/mirror" {
				t.Errorf("Registry = %q", c.Registry)
			}
		}},
		{"spaces around REGISTRY", map[string]string{"REGISTRY": " registry.example.com/ "}, func(t *testing.T, c config.Config) {
			if c.Registry != "registry.example.com" {
				t.Errorf("Registry = %q", c.Registry)
			}
		}},
		{"EXCLUDE_NAMESPACES list", map[string]string{"EXCLUDE_NAMESPACES": "a, b ,,c"}, func(t *testing.T, c config.Config) {
			if want := (config.List{"a", "b", "c"}); !reflect.DeepEqual(c.ExcludeNamespaces, want) {
				t.Errorf("ExcludeNamespaces = %q, want %q", c.ExcludeNamespaces, want)
			}
		}},
		{"IGNORED_REGISTRIES trimmed", map[string]string{"IGNORED_REGISTRIES": "gcr.io/, quay.io/org/ "}, func(t *testing.T, c config.Config) {
			if want := (config.List{"gcr.io", "quay.io/org"}); !reflect.DeepEqual(c.IgnoredRegistries, want) {
				t.Errorf("IgnoredRegistries = %q, want %q", c.IgnoredRegistries, want)
			}
		}},
		{"REGISTRY_MAP list", map[string]string{"REGISTRY_MAP": "quay.io=harbor.example.com/quay, *=harbor.example.com/all"}, func(t *testing.T, c config.Config) {
			if want := (config.List{"quay.io=harbor.example.com/quay", "*=harbor.example.com/all"}); !reflect.DeepEqual(c.RegistryMap, want) {
				t.Errorf("RegistryMap = %q, want %q", c.RegistryMap, want)
			}
		}},
		{"REGISTRY_MAP docker hub accepted", map[string]string{"REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub"}, func(t *testing.T, c config.Config) {
			if want := (config.List{"docker.io=harbor.example.com/dockerhub"}); !reflect.DeepEqual(c.RegistryMap, want) {
				t.Errorf("RegistryMap = %q, want %q", c.RegistryMap, want)
			}
		}},
		{"upper-case LOG_LEVEL and MODE", map[string]string{"LOG_LEVEL": "DEBUG", "MODE": "Audit"}, func(t *testing.T, c config.Config) {
			if c.LogLevel != "debug" || c.Mode != config.Audit {
				t.Errorf("LogLevel, Mode = %q, %q", c.LogLevel, c.Mode)
			}
		}},
		{"all set", map[string]string{
			"REGISTRY": "localhost:5000", "IMAGE_PULL_SECRET": "regcred", "IMAGE_PULL_SECRET_APPEND": "true",
			"FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "IfNotPresent", "DEFAULT_STORAGE_CLASS": "fast",
			"PORT": "8443", "METRICS_PORT": "0", "TLS_CERT_FILE": "/tls/crt", "TLS_KEY_FILE": "/tls/key",
			"WARNINGS": "true", "SHUTDOWN_DELAY": "5s", "K_SINK": "http://broker", "EVENT_SOURCE": "src",
			"REQUEST_BODY_BUDGET": "64Mi", "ENABLE_HTTP2": "true",
		}, func(t *testing.T, c config.Config) {
			want := config.Config{
				Registry: "localhost:5000", ImagePullSecret: "regcred", ImagePullSecretAppend: true,
				ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent", DefaultStorageClass: "fast",
				LogLevel: "info", Mode: config.Enforce, Warnings: true, Port: 8443, MetricsPort: 0,
				TLSCertFile: "/tls/crt", TLSKeyFile: "/tls/key", Sink: "http://broker", EventSource: "src",
				ShutdownDelay: 5 * time.Second, RequestBodyBudget: 64 << 20, EnableHTTP2: true,
			}
			withMirrorDefaults(&want)
			if !reflect.DeepEqual(c, want) {
				t.Errorf("\n got %+v\nwant %+v", c, want)
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
	c := config.Config{ExcludeNamespaces: config.List{"kube-system", "infra"}}
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

func TestValidateDirect(t *testing.T) {
	valid := config.Config{ImagePullPolicyToForce: "Never", LogLevel: "info", Mode: config.Audit, Port: 1, MetricsPort: 65535}
	if err := valid.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", valid, err)
	}
	invalid := valid
	invalid.ImagePullPolicyToForce = "always" // policies are case-sensitive in the API
	if err := invalid.Validate(); err == nil || !strings.Contains(err.Error(), "IMAGE_PULL_POLICY_TO_FORCE") {
		t.Errorf("Validate with policy %q = %v, want an IMAGE_PULL_POLICY_TO_FORCE error", invalid.ImagePullPolicyToForce, err)
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
