package e2e

import (
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
)

// TestMirrorCheck runs mutators with MIRROR_CHECK=true against a real OCI
// registry in this process (127.0.0.1, plain HTTP) and shows, through the
// real kube-apiserver, that an image the mirror has is rewritten, and one it
// lacks is denied (MIRROR_MISSING=deny, the message naming the image and the
// mirror) or admitted as written (MIRROR_MISSING=original, with a warning).
func TestMirrorCheck(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/nginx:1.27")
	// The fixtures' activation probe creates probeImage; the mirror has it.
	reg.Push(t, "mirror/"+probeImage+":latest")
	mirrorPrefix := reg.Host + "/mirror"
	base := env{"REGISTRY": mirrorPrefix, "MIRROR_CHECK": "true", "MIRROR_CHECK_TIMEOUT": "1s"}

	tests := []struct {
		name        string
		missing     string
		image       string
		wantImage   string   // as stored; "" when the create is refused
		wantErr     []string // in the API server's error
		wantWarning string
	}{
		{"present, deny: rewritten", "deny", "nginx:1.27", mirrorPrefix + "/nginx:1.27", nil, ""},
		{"missing, deny: refused", "deny", "redis:7", "", []string{
			`denied the request`, `container "app": image "redis:7" is not in the mirror`, `"` + mirrorPrefix + `/redis:7" was not found`,
		}, ""},
		{"present, original: rewritten", "original", "nginx:1.27", mirrorPrefix + "/nginx:1.27", nil, ""},
		{"missing, original: left as written", "original", "redis:7", "redis:7", nil, `image "redis:7" left as written: not in the mirror`},
	}
	// Started here, not in the subtests: newFixture tears down with its test.
	fixtures := map[string]*fixture{}
	for _, missing := range []string{"deny", "original"} {
		fixtures[missing] = newFixture(t, "mirror-"+missing, base.with(env{"MIRROR_MISSING": missing}), admissionregistrationv1.Fail)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fixtures[tt.missing]
			ns := namespace(t, f.scope())
			client, warns := warningClient(t)
			ctx := testContext(t)
			heads := reg.ManifestHeads()
			created, err := client.CoreV1().Pods(ns).Create(ctx, newPod("mirror", corev1.PodSpec{
				Containers: []corev1.Container{c("app", tt.image, "")},
			}), metav1.CreateOptions{})
			t.Logf("registry got %d manifest HEADs for this create", reg.ManifestHeads()-heads)
			if tt.wantImage == "" {
				if err == nil {
					t.Fatalf("create admitted %s, want refused", created.Spec.Containers[0].Image)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			got, err := kube.Client().CoreV1().Pods(ns).Get(ctx, created.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if img := got.Spec.Containers[0].Image; img != tt.wantImage {
				t.Errorf("stored image %q, want %q", img, tt.wantImage)
			}
			if tt.wantWarning != "" && !warns.any(tt.wantWarning) {
				t.Errorf("warnings %q lack %q", warns.all(), tt.wantWarning)
			}
			if tt.wantWarning == "" && warns.any("mutator:") {
				t.Errorf("warnings %q, want none from mutator", warns.all())
			}
		})
	}

	// The images above are cached now: creating them again costs the
	// registry nothing.
	t.Run("cached: no registry request", func(t *testing.T) {
		f := fixtures["deny"]
		ns := namespace(t, f.scope())
		heads := reg.ManifestHeads()
		for range 5 {
			createAndGet(t, ns, newPod("cached", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}))
		}
		if n := reg.ManifestHeads() - heads; n != 0 {
			t.Errorf("5 creates of a cached image cost %d manifest HEADs, want 0", n)
		}
	})
}
