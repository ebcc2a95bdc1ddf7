//go:build load

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/webhook"
	"github.com/mutator-dev/mutator/internal/testkit"
	"github.com/mutator-dev/mutator/test/load/loadgen"
)

const podReview = "../testdata/pod-review.json"

// realWebhook serves the mutator's own handler over HTTPS (HTTP/2 offered)
// and returns the mutate URL and a CA file that trusts it.
func realWebhook(t *testing.T, cfg config.Env) (url, caFile string) {
	t.Helper()
	c := testkit.Controller(t, cfg, nil)
	h, err := webhook.New(context.Background(), webhook.Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL + admission.Path, caFile
}

var mirrorConfig = config.Env{
	Registry: "registry.example.com/mirror", ImagePullSecret: "regcred", ForceImagePullPolicy: true,
	ImagePullPolicyToForce: "IfNotPresent", DefaultStorageClass: "standard", Mode: config.Enforce,
}

func TestLoadAgainstRealHandler(t *testing.T) {
	url, ca := realWebhook(t, mirrorConfig)
	// Only excluded namespaces: allowed, but never patched.
	unpatched := mirrorConfig
	unpatched.ExcludeNamespaces = config.List{"shop"}
	urlNoPatch, caNoPatch := realWebhook(t, unpatched)
	// httptest servers share one certificate: another CA must be made.
	otherCA, err := loadgen.WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantProto string
		wantKind  string // an error kind that must be reported
	}{
		// The server offers HTTP/2: HTTP/1.1 must still be the default.
		{"closed loop, HTTP/1.1 by default", []string{"-url", url, "-cacert", ca, "-workers", "4", "-duration", "500ms", "-expect-patch"}, 0, "HTTP/1.1", ""},
		{"closed loop over HTTP/2", []string{"-url", url, "-cacert", ca, "-workers", "4", "-duration", "500ms", "-http2", "-expect-patch"}, 0, "HTTP/2.0", ""},
		{"deprecated -http1", []string{"-url", url, "-cacert", ca, "-requests", "20", "-http1", "-expect-patch"}, 0, "HTTP/1.1", ""},
		{"fixed rate", []string{"-url", url, "-cacert", ca, "-rate", "300", "-duration", "1s", "-expect-patch"}, 0, "HTTP/1.1", ""},
		{"fixed rate over HTTP/2", []string{"-url", url, "-cacert", ca, "-rate", "300", "-duration", "500ms", "-http2", "-expect-patch"}, 0, "HTTP/2.0", ""},
		{"insecure, request budget", []string{"-url", url, "-insecure", "-requests", "50", "-wait-ready", "5s"}, 0, "HTTP/1.1", ""},
		{"no patch where one is expected", []string{"-url", urlNoPatch, "-cacert", caNoPatch, "-requests", "20", "-expect-patch"}, 1, "HTTP/1.1", loadgen.KindPatch},
		{"untrusted certificate", []string{"-url", url, "-cacert", otherCA.CA, "-requests", "5"}, 1, "", loadgen.KindConnect},
		{"wrong path", []string{"-url", strings.TrimSuffix(url, admission.Path) + "/nothing", "-cacert", ca, "-requests", "5"}, 1, "HTTP/1.1", "http_404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"-json", "-body", podReview}, tt.args...)
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			var sum loadgen.Summary
			if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
				t.Fatalf("summary is not JSON: %v\n%s", err, stdout.String())
			}
			if sum.Requests == 0 {
				t.Fatalf("no requests: %s", stdout.String())
			}
			if tt.wantKind == "" && (sum.Errors != 0 || sum.OK != sum.Requests) {
				t.Fatalf("errors: %s", stdout.String())
			}
			if tt.wantKind != "" && sum.ErrorsByKind[tt.wantKind] == 0 {
				t.Fatalf("no %s errors: %s", tt.wantKind, stdout.String())
			}
			if tt.wantProto != "" && (sum.Protocols[tt.wantProto] != sum.Requests || sum.Protocol != tt.wantProto) {
				t.Errorf("protocol %q, protocols %v, want all %s", sum.Protocol, sum.Protocols, tt.wantProto)
			}
			t.Logf("%d requests, %.0f req/s, p50 %s p99 %s", sum.Requests, sum.Throughput,
				sum.Latency.P50, sum.Latency.P99)
		})
	}
}

func TestTextSummary(t *testing.T) {
	url, ca := realWebhook(t, mirrorConfig)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-url", url, "-cacert", ca, "-body", podReview, "-requests", "20", "-expect-patch"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"requests    20", "ok 20, errors 0", "p50", "p90", "p99", "max", "req/s", "\nprotocol    HTTP/1.1\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestUtilityModes(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-gen-cert", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("-gen-cert: exit %d: %s", code, stderr.String())
	}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("-gen-cert: %v", err)
		}
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"-free-port"}, &stdout, &stderr); code != 0 || strings.TrimSpace(stdout.String()) == "" {
		t.Fatalf("-free-port: exit %d, output %q", code, stdout.String())
	}
	for _, args := range [][]string{
		{"-no-such-flag"}, {"extra"}, {"-body", filepath.Join(dir, "missing.json"), "-requests", "1"},
		{"-http1", "-http2"}, {"-serve-floor", "-listen", "127.0.0.1:0"}, // no certificate
	} {
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}

// The handler must stay an http.Handler for httptest; a compile-time check.
var _ http.Handler = (*webhook.Handler)(nil)
