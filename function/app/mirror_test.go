package app_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/function/app"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// TestAppMirrorCheck: with MIRROR_CHECK on, the app starts without asking
// the registry, and a review then does; a bad credentials file stops the
// start.
func TestAppMirrorCheck(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{Username: "robot", Password: "pw"})
	creds := reg.DockerConfig(t, t.TempDir(), "robot", "pw")
	broken := filepath.Join(t.TempDir(), "broken.json")
	if err := os.WriteFile(broken, []byte(`{"auths":`), 0o600); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../test/testdata/pod-review.json")
	if err != nil {
		t.Fatal(err)
	}
	base := config.Env{Registry: reg.Host + "/mirror", ImagePullPolicyToForce: "Always", Mode: config.Enforce, LogLevel: "error",
		MirrorCheck: true, MirrorCheckTimeout: time.Second, MirrorCheckReviewBudget: 2 * time.Second,
		MirrorMissing: "deny", MirrorUnreachable: "rewrite", MirrorCacheTTL: time.Minute, MirrorNegativeCacheTTL: time.Minute,
		MirrorCircuitFailures: 5, MirrorCircuitCooldown: time.Minute}
	with := func(f func(*config.Env)) config.Env { c := base; f(&c); return c }

	tests := []struct {
		name       string
		cfg        config.Env
		wantNewErr string
		wantBody   []string // in the review's answer
	}{
		{"credentials: missing images denied", with(func(c *config.Env) { c.MirrorCredentials = creds }), "",
			[]string{`"allowed":false`, `is not in the mirror`, reg.Host + `/mirror/`}},
		{"no credentials: 401 is unreachable, fail open", base, "", []string{`"allowed":true`, `mirror check failed (error)`}},
		{"broken credentials file", with(func(c *config.Env) { c.MirrorCredentials = broken }), "mirror credentials", nil},
		{"absent credentials file", with(func(c *config.Env) { c.MirrorCredentials = filepath.Join(t.TempDir(), "none") }), "mirror credentials", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := reg.Requests()
			a, err := app.New(context.Background(), testkit.Config(t, tt.cfg))
			if tt.wantNewErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantNewErr) {
					t.Fatalf("app.New error %v, want one containing %q", err, tt.wantNewErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close(context.Background())
			if n := reg.Requests() - before; n != 0 {
				t.Fatalf("app.New made %d registry requests, want none", n)
			}
			req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			a.Handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("review answered %d: %.300s", rec.Code, rec.Body)
			}
			for _, w := range tt.wantBody {
				if !strings.Contains(rec.Body.String(), w) {
					t.Errorf("answer lacks %q: %.600s", w, rec.Body)
				}
			}
			if reg.Requests() == before {
				t.Error("the review did not ask the registry")
			}
		})
	}
}

// TestAppMirrorReviewDeadline: through the real handler, the API server's
// timeout in the webhook URL (/mutate?timeout=2s) bounds the mirror check:
// a mirror that is slow for every image gets four fifths of it, then the
// review is answered (here failing open, MIRROR_UNREACHABLE=rewrite) before
// the API server would give up, and the registry answers nothing after.
func TestAppMirrorReviewDeadline(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.SetSlow("mirror/", 3*time.Second)
	body, err := os.ReadFile("../../test/testdata/pod-review.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Env{Registry: reg.Host + "/mirror", ImagePullPolicyToForce: "Always", Mode: config.Enforce, LogLevel: "error",
		MirrorCheck: true, MirrorCheckTimeout: 5 * time.Second, MirrorCheckReviewBudget: 9 * time.Second,
		MirrorMissing: "deny", MirrorUnreachable: "rewrite", MirrorCacheTTL: time.Minute, MirrorNegativeCacheTTL: time.Minute,
		MirrorCircuitFailures: 1, MirrorCircuitCooldown: time.Minute}
	a, err := app.New(context.Background(), testkit.Config(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	srv := httptest.NewServer(a.Handler)
	defer srv.Close()

	start := time.Now()
	resp, err := srv.Client().Post(srv.URL+"/mutate?timeout=2s", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	answered := time.Now()
	t.Logf("answered %d in %s", resp.StatusCode, answered.Sub(start).Round(time.Millisecond))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("review answered %d (%v): %.300s", resp.StatusCode, err, answer)
	}
	if answered.Sub(start) > 2*time.Second {
		t.Errorf("answered after %s, later than the API server's 2s timeout", answered.Sub(start))
	}
	for _, w := range []string{`"allowed":true`, `mirror check failed (timeout)`} {
		if !strings.Contains(string(answer), w) {
			t.Errorf("answer lacks %q: %.600s", w, answer)
		}
	}
	time.Sleep(time.Until(start.Add(3500 * time.Millisecond)))
	if n := reg.AnsweredAfter(answered); n != 0 {
		t.Errorf("the registry answered %d requests after the review was answered, want 0", n)
	}
}
