package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/metrics"
	"github.com/mutator-dev/mutator/function/mutation"
)

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestObserve(t *testing.T) {
	m, err := metrics.New()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	pod := &admissionv1.AdmissionRequest{Operation: admissionv1.Create,
		Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}}
	bogus := &admissionv1.AdmissionRequest{Operation: "EXPLODE",
		Resource: metav1.GroupVersionResource{Resource: "made-up"}}
	outcomes := []admission.Decision{
		{Request: pod, Verdict: admission.Patched, Duration: time.Millisecond, Changes: []mutation.Change{{Kind: mutation.KindImage}, {Kind: mutation.KindImage}, {Kind: mutation.KindPullSecret}}},
		{Request: pod, Verdict: admission.Unchanged, Duration: time.Millisecond},
		{Request: bogus, Verdict: admission.Skipped, Duration: time.Millisecond},
	}
	for _, o := range outcomes {
		m.Observe(context.Background(), o)
	}
	text := scrape(t, m)
	for _, want := range []string{
		`mutator_reviews_total{operation="CREATE",resource="pods",result="patched"} 1`,
		`mutator_reviews_total{operation="CREATE",resource="pods",result="unchanged"} 1`,
		// Label values from the request are bounded to known ones.
		`mutator_reviews_total{operation="other",resource="other",result="skipped"} 1`,
		`mutator_changes_total{kind="image"} 2`,
		`mutator_changes_total{kind="pull-secret"} 1`,
		`mutator_review_duration_seconds_count{operation="CREATE",resource="pods",result="patched"} 1`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "made-up") || strings.Contains(text, "EXPLODE") {
		t.Error("request-controlled label values leaked into metrics")
	}
}
