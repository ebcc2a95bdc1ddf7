package loadgen

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReviewBody(t *testing.T) {
	for _, file := range []string{"pod-review.json", "pvc-review.json"} {
		t.Run(file, func(t *testing.T) {
			tmpl := testdata(t, file)
			r, err := NewReview(tmpl)
			if err != nil {
				t.Fatal(err)
			}
			var orig, got admissionv1.AdmissionReview
			if err := json.Unmarshal(tmpl, &orig); err != nil {
				t.Fatal(err)
			}
			const uid = "0badc0de-0000-4000-8000-000000000001"
			if err := json.Unmarshal(r.Body(uid), &got); err != nil {
				t.Fatalf("body is not an AdmissionReview: %v", err)
			}
			if got.Request.UID != uid {
				t.Errorf("uid %q, want %q", got.Request.UID, uid)
			}
			got.Request.UID = orig.Request.UID
			a, _ := json.Marshal(orig)
			b, _ := json.Marshal(got)
			if string(a) != string(b) {
				t.Errorf("body differs from the template beyond the uid:\n%s\n%s", a, b)
			}
		})
	}
	for _, bad := range []string{`not json`, `{"kind":"AdmissionReview"}`} {
		if _, err := NewReview([]byte(bad)); err == nil {
			t.Errorf("NewReview(%q) succeeded", bad)
		}
	}
}

func TestReviewCheck(t *testing.T) {
	r, err := NewReview(testdata(t, "pod-review.json"))
	if err != nil {
		t.Fatal(err)
	}
	const uid = "0badc0de-0000-4000-8000-000000000002"
	jsonPatch := admissionv1.PatchTypeJSONPatch
	answer := func(mod func(*admissionv1.AdmissionResponse)) string {
		resp := &admissionv1.AdmissionResponse{UID: uid, Allowed: true}
		mod(resp)
		b, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{Kind: "AdmissionReview", APIVersion: "admission.k8s.io/v1"},
			Response: resp,
		})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	goodPatch := func(resp *admissionv1.AdmissionResponse) {
		resp.Patch = []byte(`[{"op":"replace","path":"/spec/containers/0/image","value":"registry.example.com/x:1"}]`)
		resp.PatchType = &jsonPatch
	}
	tests := []struct {
		name        string
		body        string
		expectPatch bool
		want        string
	}{
		{"allowed with a patch", answer(goodPatch), true, ""},
		{"allowed without a patch", answer(func(*admissionv1.AdmissionResponse) {}), false, ""},
		{"patch expected", answer(func(*admissionv1.AdmissionResponse) {}), true, KindPatch},
		{"patch that does not apply", answer(func(resp *admissionv1.AdmissionResponse) {
			goodPatch(resp)
			resp.Patch = []byte(`[{"op":"replace","path":"/spec/nothing/0","value":1}]`)
		}), false, KindPatch},
		{"patch that is not JSON patch", answer(func(resp *admissionv1.AdmissionResponse) {
			goodPatch(resp)
			resp.Patch = []byte(`{"spec":{}}`)
		}), false, KindPatch},
		{"patch without patchType", answer(func(resp *admissionv1.AdmissionResponse) {
			goodPatch(resp)
			resp.PatchType = nil
		}), false, KindPatch},
		{"other uid", answer(func(resp *admissionv1.AdmissionResponse) { resp.UID = "other" }), false, KindUID},
		{"denied", answer(func(resp *admissionv1.AdmissionResponse) {
			resp.Allowed = false
			resp.Result = &metav1.Status{Message: "no"}
		}), false, KindDenied},
		{"not JSON", `<html>`, false, KindDecode},
		{"no response", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}`, false, KindDecode},
		{"not a review", `{"kind":"Status"}`, false, KindDecode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, err := r.Check(uid, []byte(tt.body), tt.expectPatch)
			if kind != tt.want {
				t.Fatalf("Check = %q (%v), want %q", kind, err, tt.want)
			}
			if (err != nil) != (tt.want != "") {
				t.Fatalf("Check error %v with kind %q", err, kind)
			}
		})
	}
}

func TestUIDsUnique(t *testing.T) {
	u, err := newUIDs()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 10000 {
		id := u.next()
		if len(id) != 36 || strings.Count(id, "-") != 4 {
			t.Fatalf("uid %q is not UUID-shaped", id)
		}
		if seen[id] {
			t.Fatalf("uid %q repeated", id)
		}
		seen[id] = true
	}
}
