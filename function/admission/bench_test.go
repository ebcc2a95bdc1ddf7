package admission_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/internal/testkit"
)

func loadReview(tb testing.TB, name string) *admissionv1.AdmissionRequest {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &review); err != nil {
		tb.Fatal(err)
	}
	return review.Request
}

func benchConfig() config.Env {
	return config.Env{
		Registry: "registry.example.com/mirror", ImagePullSecret: "regcred",
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always",
		DefaultStorageClass: "standard", Mode: config.Enforce,
	}
}

// BenchmarkAdmitPod is Admit on the realistic Pod: decode the object, apply
// the rules, encode the patch.
func BenchmarkAdmitPod(b *testing.B) { benchAdmit(b, "pod-review.json") }

// BenchmarkAdmitPVC is Admit on a PVC.
func BenchmarkAdmitPVC(b *testing.B) { benchAdmit(b, "pvc-review.json") }

func benchAdmit(b *testing.B, file string) {
	c := testkit.Controller(b, benchConfig(), nil)
	req := loadReview(b, file)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if resp := c.Admit(ctx, req); !resp.Allowed || len(resp.Patch) == 0 {
			b.Fatalf("response %+v", resp)
		}
	}
}
