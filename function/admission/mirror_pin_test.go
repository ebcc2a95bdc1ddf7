package admission_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// pinController is a controller checking reg's mirror/ with PIN_DIGESTS as
// pin, parsed as the webhook parses it, and its checker.
func pinController(t *testing.T, reg *mirrortest.Registry, env config.Env, pin bool, observers ...admission.Observer) (*admission.Controller, *mirror.Checker) {
	t.Helper()
	env.Registry = reg.Host + "/mirror"
	env.MirrorCheck, env.PinDigests = true, pin
	env.MirrorCheckTimeout, env.MirrorCheckReviewBudget = 2*time.Second, 4*time.Second
	if env.MirrorMissing == "" {
		env.MirrorMissing = "deny"
	}
	if env.MirrorUnreachable == "" {
		env.MirrorUnreachable = "rewrite"
	}
	c := testkit.Controller(t, env, nil, observers...)
	checker, err := mirror.New(t.Context(), mirror.Options{Timeout: 2 * time.Second, PositiveTTL: time.Minute, NegativeTTL: time.Minute, Failures: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = checker.Close(context.Background()) })
	if err := c.CheckMirror(checker, testkit.Config(t, env).Mirror); err != nil {
		t.Fatal(err)
	}
	return c, checker
}

func digestOf(ref string) string { return ref[strings.LastIndex(ref, "@")+1:] }

// TestMirrorPinDigests: with PIN_DIGESTS an image the mirror has is pinned
// to the digest its check found, the tag kept, in the patch, the warnings
// and the audit trail alike; a multi-platform tag to its index's digest;
// answers from the cache pin too; images that carry a digest and images
// left as written are not pinned; a registry whose digest does not parse
// gets its images rewritten unpinned.
func TestMirrorPinDigests(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	nginx := digestOf(reg.Push(t, "mirror/nginx:1.27"))
	index := reg.PushIndex(t, "mirror/multi:v1", "linux/amd64", "linux/arm64")
	byDigest := reg.Push(t, "mirror/pinned:v1")
	in := func(image string) string { return reg.Host + "/mirror/" + image }
	if index == nginx || !strings.HasPrefix(index, "sha256:") {
		t.Fatalf("index digest %q", index)
	}

	tests := []struct {
		name       string
		env        config.Env
		pin        bool
		images     []string
		wantImages []string // after the patch
		wantText   []string // in the warnings
		wantHeads  int64
	}{{
		name: "pinned, tag kept", env: config.Env{Mode: config.Enforce, Warnings: true}, pin: true,
		images: []string{"nginx:1.27"}, wantImages: []string{in("nginx:1.27@" + nginx)},
		// Warnings are cut to 120 characters: the digest's start shows.
		wantText: []string{`image "nginx:1.27" became "` + in("nginx:1.27@"+nginx[:20])}, wantHeads: 1,
	}, {
		name: "multi-platform: the index's digest", env: config.Env{Mode: config.Enforce}, pin: true,
		images: []string{"multi:v1"}, wantImages: []string{in("multi:v1@" + index)}, wantHeads: 1,
	}, {
		name: "one image in three containers: one lookup, all pinned", env: config.Env{Mode: config.Enforce}, pin: true,
		images:     []string{"nginx:1.27", "docker.io/nginx:1.27", "multi:v1"},
		wantImages: []string{in("nginx:1.27@" + nginx), in("nginx:1.27@" + nginx), in("multi:v1@" + index)}, wantHeads: 2,
	}, {
		name: "a digest already: left as it is", env: config.Env{Mode: config.Enforce}, pin: true,
		images: []string{"pinned:v1@" + digestOf(byDigest)}, wantImages: []string{in("pinned:v1@" + digestOf(byDigest))}, wantHeads: 1,
	}, {
		name: "original: the missing image as written, the present one pinned", env: config.Env{Mode: config.Enforce, MirrorMissing: "original"}, pin: true,
		images: []string{"redis:7", "nginx:1.27"}, wantImages: []string{"redis:7", in("nginx:1.27@" + nginx)},
		wantText: []string{`image "redis:7" left as written`}, wantHeads: 2,
	}, {
		name: "audit mode: the warning shows the pin", env: config.Env{Mode: config.Audit}, pin: true,
		images: []string{"nginx:1.27"}, wantText: []string{`image "nginx:1.27" would become "` + in("nginx:1.27@"+nginx[:20])}, wantHeads: 1,
	}, {
		name: "PIN_DIGESTS off: not pinned", env: config.Env{Mode: config.Enforce}, pin: false,
		images: []string{"nginx:1.27", "multi:v1"}, wantImages: []string{in("nginx:1.27"), in("multi:v1")}, wantHeads: 2,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c, _ := pinController(t, reg, tt.env, tt.pin, rec)
			heads := reg.ManifestHeads()
			// The second review is answered from the cache: it pins the same.
			for round := range 2 {
				req := &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, podOf(tt.images))}
				resp := c.Admit(context.Background(), req)
				if !resp.Allowed {
					t.Fatalf("round %d: denied: %+v", round, resp.Result)
				}
				text := strings.Join(resp.Warnings, "\n")
				for _, w := range tt.wantText {
					if !strings.Contains(text, w) {
						t.Errorf("round %d: warnings %q lack %q", round, text, w)
					}
				}
				if tt.wantImages != nil {
					if got := patchedImages(t, req.Object.Raw, resp); strings.Join(got, " ") != strings.Join(tt.wantImages, " ") {
						t.Errorf("round %d: images %v, want %v", round, got, tt.wantImages)
					}
				}
				// The audit trail's changes say what the patch does.
				out := rec.outcomes[len(rec.outcomes)-1]
				var tos []string
				for _, ch := range out.Changes {
					if ch.Kind == "image" {
						tos = append(tos, ch.To)
					}
				}
				if tt.wantImages != nil {
					var want []string
					for i, img := range tt.wantImages {
						if img != tt.images[i] {
							want = append(want, img)
						}
					}
					if strings.Join(tos, " ") != strings.Join(want, " ") {
						t.Errorf("round %d: the outcome's image changes go to %v, want %v", round, tos, want)
					}
				}
			}
			if got := reg.ManifestHeads() - heads; got != tt.wantHeads {
				t.Errorf("%d manifest HEADs for two reviews, want %d (the second from the cache)", got, tt.wantHeads)
			}
		})
	}
}

// TestMirrorPinUnusableDigest: a mirror that answers 200 with a digest
// that does not parse has the image; it is rewritten, not pinned, and the
// Pod admitted.
func TestMirrorPinUnusableDigest(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/nginx:1.27")
	reg.SetDigestHeader("sha256:NOT-A-DIGEST")
	c, _ := pinController(t, reg, config.Env{Mode: config.Enforce, MirrorUnreachable: "deny"}, true)
	req := &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod("nginx:1.27"))}
	resp := c.Admit(context.Background(), req)
	if !resp.Allowed || resp.Result != nil && resp.Result.Code == http.StatusForbidden {
		t.Fatalf("denied: %+v", resp.Result)
	}
	if got := patchedImages(t, req.Object.Raw, resp); len(got) != 1 || got[0] != reg.Host+"/mirror/nginx:1.27" {
		t.Errorf("images %v, want the mirror's, unpinned", got)
	}
	if len(resp.Warnings) > 0 {
		t.Errorf("warnings %q, want none: the image is present", resp.Warnings)
	}
}

// TestMirrorPinRegistryMap: a REGISTRY_MAP target, whose rewrite spells the
// repository out, is pinned the same way.
func TestMirrorPinRegistryMap(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	d := digestOf(reg.Push(t, "hub/library/nginx:1.27"))
	env := config.Env{Mode: config.Enforce, RegistryMap: []string{"docker.io=" + reg.Host + "/hub"}, MirrorCheck: true, PinDigests: true,
		MirrorMissing: "deny", MirrorUnreachable: "deny", MirrorCheckTimeout: 2 * time.Second, MirrorCheckReviewBudget: 4 * time.Second}
	c := testkit.Controller(t, env, nil)
	checker, err := mirror.New(t.Context(), mirror.Options{Timeout: 2 * time.Second, PositiveTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer checker.Close(context.Background())
	if err := c.CheckMirror(checker, testkit.Config(t, env).Mirror); err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod("nginx:1.27"))}
	resp := c.Admit(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	if got, want := patchedImages(t, req.Object.Raw, resp), reg.Host+"/hub/library/nginx:1.27@"+d; len(got) != 1 || got[0] != want {
		t.Errorf("images %v, want [%s]", got, want)
	}
}
