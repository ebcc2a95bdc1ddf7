package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror"
)

// TestMirrorCheckValidation: the MIRROR_* settings are checked only with
// MIRROR_CHECK on, and every bad one is named.
func TestMirrorCheckValidation(t *testing.T) {
	on := map[string]string{"REGISTRY": "registry.example.com/mirror", "MIRROR_CHECK": "true"}
	with := func(more map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range on {
			out[k] = v
		}
		for k, v := range more {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // each in the error; nil: valid
	}{
		{"defaults", on, nil},
		{"off: nothing checked", map[string]string{"MIRROR_MISSING": "bogus", "MIRROR_CHECK_TIMEOUT": "0s"}, nil},
		{"all policies", with(map[string]string{"MIRROR_MISSING": "original", "MIRROR_UNREACHABLE": "deny"}), nil},
		{"warn, zero TTLs", with(map[string]string{"MIRROR_MISSING": "warn", "MIRROR_CACHE_TTL": "0s", "MIRROR_NEGATIVE_CACHE_TTL": "0s"}), nil},
		{"REGISTRY_MAP only", map[string]string{"REGISTRY_MAP": "docker.io=harbor.example.com/hub", "MIRROR_CHECK": "true"}, nil},
		{"nothing to check", map[string]string{"MIRROR_CHECK": "true"}, []string{"MIRROR_CHECK: nothing to check"}},
		{"bad policies", with(map[string]string{"MIRROR_MISSING": "allow", "MIRROR_UNREACHABLE": "original"}),
			[]string{`MIRROR_MISSING: "allow"`, `MIRROR_UNREACHABLE: "original"`}},
		{"budget at the webhook timeout", with(map[string]string{"MIRROR_CHECK_REVIEW_BUDGET": "10s"}), []string{"MIRROR_CHECK_REVIEW_BUDGET: 10s"}},
		{"timeout over the budget", with(map[string]string{"MIRROR_CHECK_TIMEOUT": "3s"}), []string{"MIRROR_CHECK_TIMEOUT: 3s is longer"}},
		{"lookup bounds", with(map[string]string{"MIRROR_CHECK_MAX_LOOKUPS": "256", "MIRROR_CHECK_MAX_IN_FLIGHT": "1"}), nil},
		{"lookup bounds out of range", with(map[string]string{"MIRROR_CHECK_MAX_LOOKUPS": "0", "MIRROR_CHECK_MAX_IN_FLIGHT": "1025"}),
			[]string{"MIRROR_CHECK_MAX_LOOKUPS: 0 must be between 1 and 256", "MIRROR_CHECK_MAX_IN_FLIGHT: 1025 must be between 1 and 1024"}},
		{"too many lookups per review", with(map[string]string{"MIRROR_CHECK_MAX_LOOKUPS": "257"}), []string{"MIRROR_CHECK_MAX_LOOKUPS: 257"}},
		{"non-positive durations and counts", with(map[string]string{"MIRROR_CHECK_TIMEOUT": "0s", "MIRROR_CIRCUIT_FAILURES": "0",
			"MIRROR_CIRCUIT_COOLDOWN": "0s", "MIRROR_CACHE_TTL": "-1s"}),
			[]string{"MIRROR_CHECK_TIMEOUT: 0s", "MIRROR_CIRCUIT_FAILURES: 0", "MIRROR_CIRCUIT_COOLDOWN: 0s", "MIRROR_CACHE_TTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.env)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load accepted %v", tt.env)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestMirrorPolicy: MIRROR_CHECK on gives the admission controller its
// policy and the checker its options, each from its variable.
func TestMirrorPolicy(t *testing.T) {
	c := mustLoad(t, map[string]string{"REGISTRY": "registry.example.com/mirror", "MIRROR_CHECK": "true",
		"MIRROR_MISSING": "warn", "MIRROR_CHECK_MAX_IN_FLIGHT": "3", "MIRROR_CREDENTIALS": "/creds/config.json", "MIRROR_INSECURE": "true"})
	want := config.Mirror{
		Check: true, Missing: config.MissingWarn, Unreachable: config.UnreachableRewrite,
		ReviewBudget: 2 * time.Second, MaxLookups: 32, Credentials: "/creds/config.json",
		Lookup: mirror.Options{Timeout: time.Second, PositiveTTL: 10 * time.Minute, NegativeTTL: 30 * time.Second,
			CacheBytes: 4 << 20, Failures: 5, Cooldown: 30 * time.Second, MaxInFlight: 3, Insecure: true},
	}
	if diff := cmp.Diff(want, c.Mirror); diff != "" {
		t.Errorf("Mirror (-want +got):\n%s", diff)
	}
	if off := mustLoad(t, map[string]string{"MIRROR_MISSING": "warn"}); off.Mirror.Check {
		t.Errorf("MIRROR_CHECK unset: the check is on: %+v", off.Mirror)
	}
}
