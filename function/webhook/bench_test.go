package webhook_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
)

// BenchmarkFloor is the least any AdmissionReview webhook in Go does: decode
// the review and encode an empty response. The other benchmarks are judged
// against it.
func BenchmarkFloor(b *testing.B) {
	body := testdata(b, "pod-review.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&review); err != nil {
			b.Fatal(err)
		}
		out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta,
			Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}}
		if err := json.NewEncoder(io.Discard).Encode(out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerPod is one realistic Pod review through the whole HTTP
// handler: guard, knative's plumbing, Admit, patch, response.
func BenchmarkHandlerPod(b *testing.B) {
	benchHandler(b, "pod-review.json")
}

// BenchmarkHandlerPVC is the same for a PVC.
func BenchmarkHandlerPVC(b *testing.B) {
	benchHandler(b, "pvc-review.json")
}

func benchHandler(b *testing.B, file string) {
	h := newHandler(b, config.Env{
		Registry: "registry.example.com/mirror", ImagePullSecret: "regcred",
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always", DefaultStorageClass: "standard",
	})
	body := testdata(b, file)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	rec := &discardWriter{header: http.Header{}}
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, admission.Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec.status = 0
		h.ServeHTTP(rec, req)
		if rec.status != 0 && rec.status != http.StatusOK {
			b.Fatalf("status %d", rec.status)
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler rather than a recorder's buffer.
type discardWriter struct {
	header http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
