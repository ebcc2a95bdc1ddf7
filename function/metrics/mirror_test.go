package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/metrics"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
)

// TestMirrorMetrics: the fallbacks counted from outcomes, and the checker's
// own instruments on the same provider, reach /metrics with bounded labels.
func TestMirrorMetrics(t *testing.T) {
	m, err := metrics.New()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())

	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/app:v1")
	c, err := mirror.New(t.Context(), mirror.Options{Timeout: time.Second, PositiveTTL: time.Minute, NegativeTTL: time.Minute,
		Failures: 1, MeterProvider: m.MeterProvider()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, ref := range []string{"mirror/app:v1", "mirror/app:v1", "mirror/app:v2"} {
		if _, err := c.Exists(t.Context(), reg.Host+"/"+ref); err != nil {
			t.Fatal(err)
		}
	}
	// One failure opens the circuit (Failures: 1).
	dead := "127.0.0.1:1"
	if res, _ := c.Exists(t.Context(), dead+"/mirror/app:v1"); res.Status != mirror.Error {
		t.Fatalf("dead registry: %s, want error", res.Status)
	}

	pod := &admissionv1.AdmissionRequest{Operation: admissionv1.Create, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}}
	m.Observe(context.Background(), admission.Decision{Request: pod, Verdict: admission.Patched, MirrorFallbacks: []admission.MirrorFallback{
		{Action: admission.MirrorOriginal, Reason: mirror.Missing},
		{Action: admission.MirrorRewrite, Reason: mirror.Timeout},
		{Action: admission.MirrorCopy, Reason: mirror.Missing},
		{Action: "made-up", Reason: "invented"},
		// A summary entry of the admission controller: 1+More images.
		{Action: admission.MirrorRewrite, Reason: mirror.Skipped, More: 2},
	}})

	text := scrape(t, m)
	for _, want := range []string{
		`mutator_mirror_fallbacks_total{action="original",reason="missing"} 1`,
		`mutator_mirror_fallbacks_total{action="rewrite",reason="timeout"} 1`,
		`mutator_mirror_fallbacks_total{action="copy",reason="missing"} 1`,
		`mutator_mirror_fallbacks_total{action="other",reason="other"} 1`,
		`mutator_mirror_fallbacks_total{action="rewrite",reason="skipped"} 3`,
		`mutator_mirror_checks_total{result="present"} 2`,
		`mutator_mirror_checks_total{result="missing"} 1`,
		`mutator_mirror_checks_total{result="error"} 1`,
		`mutator_mirror_lookups_total{result="present"} 1`,
		`mutator_mirror_cache_hits_total 1`,
		`mutator_mirror_cache_misses_total 3`,
		`mutator_mirror_lookup_duration_seconds_count{result="present"} 1`,
		`mutator_mirror_check_duration_seconds_count{result="present"} 2`,
		`mutator_mirror_circuit_state{registry="` + dead + `"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "made-up") || strings.Contains(text, "invented") {
		t.Error("unknown label values leaked into metrics")
	}
}
