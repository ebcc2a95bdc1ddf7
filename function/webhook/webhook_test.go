package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"k8s.io/utils/ptr"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/webhook"
	"github.com/mutator-dev/mutator/internal/testkit"
)

func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newHandler(t testing.TB, cfg config.Env) *webhook.Handler {
	t.Helper()
	if cfg.ImagePullPolicyToForce == "" {
		cfg.ImagePullPolicyToForce = "Always"
	}
	if cfg.Mode == "" {
		cfg.Mode = config.Enforce
	}
	c := testkit.Controller(t, cfg, nil)
	h, err := webhook.New(context.Background(), webhook.Options{}, c)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func post(h http.Handler, body []byte, contentType string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, admission.Path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestPodReview posts the realistic Pod review through the whole handler and
// checks the Pod that results from applying the returned patch.
func TestPodReview(t *testing.T) {
	h := newHandler(t, config.Env{
		Registry: "registry.example.com/mirror", ImagePullSecret: "regcred", ImagePullSecretAppend: true,
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always",
	})
	body := testdata(t, "pod-review.json")
	rec := post(h, body, "application/json")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
		t.Fatal(err)
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		t.Errorf("response type meta = %s %s", review.APIVersion, review.Kind)
	}
	resp := review.Response
	if resp == nil || !resp.Allowed || resp.UID != "7f3b2a10-4c5d-4e6f-8a9b-0c1d2e3f4a5b" {
		t.Fatalf("response = %+v", resp)
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type = %v", resp.PatchType)
	}
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatal(err)
	}
	patched := testkit.ApplyPatch(t, in.Request.Object.Raw, resp.Patch)
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		t.Fatal(err)
	}
	wantImages := map[string]string{
		"migrate":  "registry.example.com/mirror/example/shop-migrate:2.14.1",
		"frontend": "registry.example.com/mirror/nginx:1.27.3",
		"api":      "registry.example.com/mirror/example/shop-api:2.14.1@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"metrics":  "registry.example.com/mirror/prometheus/statsd-exporter:v0.28.0",
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Image != wantImages[c.Name] {
			t.Errorf("container %s image = %q, want %q", c.Name, c.Image, wantImages[c.Name])
		}
		if c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("container %s pull policy = %q", c.Name, c.ImagePullPolicy)
		}
		if c.Name == "api" && len(c.Env) != 4 {
			t.Errorf("env of api changed: %v", c.Env)
		}
	}
	if got := pod.Spec.ImagePullSecrets; len(got) != 2 || got[0].Name != "ghcr-pull" || got[1].Name != "regcred" {
		t.Errorf("imagePullSecrets = %v", got)
	}
}

// TestBadInput: every malformed request gets a clear 4xx or a valid
// AdmissionReview with a message; never a panic, a 5xx or a hang.
func TestBadInput(t *testing.T) {
	h := newHandler(t, config.Env{Registry: "registry.example.com"})
	pod := string(testdata(t, "pod-review.json"))
	manyContainers := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":[`)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"name":"c","image":"nginx"}`)
		}
		b.WriteString(`]}}}}`)
		return b.String()
	}
	tests := []struct {
		name        string
		body        string
		contentType string
		method      string
		wantStatus  int
		wantAllowed *bool // for 200 answers
		wantText    string
	}{
		{name: "empty body", body: "", wantStatus: 400, wantText: "not JSON"},
		{name: "null", body: "null", wantStatus: 400, wantText: "not a JSON object"},
		{name: "empty object", body: "{}", wantStatus: 400, wantText: `no "request"`},
		{name: "request null", body: `{"request":null}`, wantStatus: 400, wantText: `"request" is not an object`},
		{name: "request string", body: `{"request":"x"}`, wantStatus: 400, wantText: `"request" is not an object`},
		{name: "duplicate request ending null", body: `{"request":{},"request":null}`, wantStatus: 400},
		{name: "array", body: `[1,2]`, wantStatus: 400, wantText: "not a JSON object"},
		{name: "truncated", body: pod[:len(pod)/2], wantStatus: 400},
		{name: "non-UTF-8", body: "{\"request\":{\"uid\":\"\xff\xfe\"}}", wantStatus: 200},
		{name: "deeply nested", body: `{"request":{"object":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`, wantStatus: 400},
		{name: "number where string belongs", body: `{"request":{"uid":5}}`, wantStatus: 400},
		{name: "object of wrong type inside", body: `{"request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":5}}}}`, wantStatus: 200, wantAllowed: ptr.To(false), wantText: "decoding Pod"},
		{name: "missing object", body: `{"request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE"}}`, wantStatus: 200, wantAllowed: ptr.To(false), wantText: "no Pod object"},
		{name: "wrong kind", body: `{"request":{"uid":"u","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{}}}`, wantStatus: 200, wantAllowed: ptr.To(true), wantText: "not handled"},
		{name: "unknown fields", body: `{"zzz":1,"request":{"uid":"u","extra":{"a":[1]},"kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"foo":1,"containers":[{"name":"a","image":"nginx"}]}}}}`, wantStatus: 200, wantAllowed: ptr.To(true)},
		{name: "v1beta1 review", body: strings.Replace(pod, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), wantStatus: 200, wantAllowed: ptr.To(true), wantText: "admission.k8s.io/v1beta1"},
		{name: "missing uid", body: strings.Replace(pod, `"uid":"7f3b2a10-4c5d-4e6f-8a9b-0c1d2e3f4a5b"`, `"uid":""`, 1), wantStatus: 200, wantAllowed: ptr.To(true)},
		{name: "10000 containers", body: manyContainers(10000), wantStatus: 200, wantAllowed: ptr.To(true)},
		{name: "multi-megabyte labels past knative's limit", body: `{"request":{"uid":"u","object":{"metadata":{"labels":{"a":"` + strings.Repeat("x", 4<<20) + `"}}}}}`, wantStatus: 200, wantAllowed: ptr.To(true), wantText: "not handled"},
		{name: "over the largest review", body: `{"request":{"object":{"metadata":{"labels":{"a":"` + strings.Repeat("x", webhook.MaxReviewBytes) + `"}}}}}`, wantStatus: 413},
		{name: "wrong content type", body: pod, contentType: "text/plain", wantStatus: 415},
		{name: "GET", body: "", method: http.MethodGet, wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := tt.contentType
			if ct == "" {
				ct = "application/json"
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, admission.Path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", ct)
			rec := httptest.NewRecorder()
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.ServeHTTP(rec, req)
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("handler did not answer within 30s")
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %.300s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantText != "" && !strings.Contains(rec.Body.String(), tt.wantText) {
				t.Errorf("body %.300q does not mention %q", rec.Body, tt.wantText)
			}
			if tt.wantAllowed != nil {
				var review admissionv1.AdmissionReview
				if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
					t.Fatalf("not an AdmissionReview: %v: %.300s", err, rec.Body)
				}
				if review.Response == nil || review.Response.Allowed != *tt.wantAllowed {
					t.Fatalf("response = %+v, want allowed %v", review.Response, *tt.wantAllowed)
				}
			}
		})
	}
}

func TestHealthAndRouting(t *testing.T) {
	h := newHandler(t, config.Env{})
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if c := get(webhook.ReadinessPath); c != 200 {
		t.Errorf("readiness = %d", c)
	}
	if c := get(webhook.LivenessPath); c != 200 {
		t.Errorf("liveness = %d", c)
	}
	if c := get("/nope"); c != 404 {
		t.Errorf("unknown path = %d", c)
	}
	h.SetReady(false)
	if c := get(webhook.ReadinessPath); c != 503 {
		t.Errorf("readiness while draining = %d", c)
	}
	if c := get(webhook.LivenessPath); c != 200 {
		t.Errorf("liveness while draining = %d", c)
	}
}

// TestMemoryBounded: a stream of maximal bodies does not grow the heap.
func TestMemoryBounded(t *testing.T) {
	h := newHandler(t, config.Env{Registry: "registry.example.com"})
	big := []byte(`{"request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"labels":{"a":"` + strings.Repeat("x", 2<<20) + `"}},"spec":{"containers":[{"name":"a","image":"nginx"}]}}}}`)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for i := 0; i < 5; i++ {
		post(h, big, "application/json")
	}
	before := heap()
	for i := 0; i < 50; i++ {
		if rec := post(h, big, "application/json"); rec.Code != 200 {
			t.Fatalf("status %d", rec.Code)
		}
	}
	if after := heap(); after > before+16<<20 {
		t.Errorf("heap grew from %d to %d bytes over 50 large reviews", before, after)
	}
}
