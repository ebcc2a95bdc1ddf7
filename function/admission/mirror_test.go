package admission_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
)

// TestAdmitMirrorCheck runs reviews through the controller with the mirror
// check on, against real registries on loopback: one that has
// mirror/nginx:1.27, one that answers 503 and one that hangs.
func TestAdmitMirrorCheck(t *testing.T) {
	good := mirrortest.New(t, mirrortest.Options{})
	good.Push(t, "mirror/nginx:1.27")
	failing := mirrortest.New(t, mirrortest.Options{})
	failing.SetStatus(http.StatusServiceUnavailable)
	hung := mirrortest.New(t, mirrortest.Options{})
	hung.SetHang(true)

	cfgFor := func(reg *mirrortest.Registry, missing, unreachable string, mode config.Mode) config.Config {
		return config.Config{Registry: reg.Host + "/mirror", Mode: mode, ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent",
			MirrorCheck: true, MirrorCheckTimeout: 300 * time.Millisecond, MirrorCheckReviewBudget: time.Second,
			MirrorMissing: missing, MirrorUnreachable: unreachable}
	}
	in := func(reg *mirrortest.Registry, image string) string { return reg.Host + "/mirror/" + image }
	create := func(p *corev1.Pod) func(t *testing.T) *admissionv1.AdmissionRequest {
		return func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, p)}
		}
	}

	tests := []struct {
		name          string
		reg           *mirrortest.Registry
		cfg           config.Config
		off           bool // leave the check off
		req           func(t *testing.T) *admissionv1.AdmissionRequest
		wantResult    admission.Result
		wantImages    []string // after the patch; nil for a denial
		wantText      []string // in the denial message or the warnings
		wantFallbacks []admission.MirrorAction
		wantHeads     int64 // manifest HEADs the registry got
	}{{
		name: "present: rewritten, no warning", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req:        create(pod("nginx:1.27")),
		wantResult: admission.Patched, wantImages: []string{in(good, "nginx:1.27")}, wantHeads: 1,
	}, {
		name: "one rewrite from two spellings: one lookup", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req:        create(pod("nginx:1.27", "docker.io/nginx:1.27", "nginx:1.27")),
		wantResult: admission.Patched, wantImages: []string{in(good, "nginx:1.27"), in(good, "nginx:1.27"), in(good, "nginx:1.27")},
		wantHeads: 1,
	}, {
		name: "missing, deny: 403 naming image and mirror", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req:           create(pod("nginx:1.27", "redis:7")),
		wantResult:    admission.Denied,
		wantText:      []string{`container "b": image "redis:7" is not in the mirror: "` + in(good, "redis:7") + `" was not found`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny}, wantHeads: 2,
	}, {
		name: "missing, original: left as written, pull policy still forced", reg: good, cfg: cfgFor(good, "original", "rewrite", config.Enforce),
		req:        create(pod("nginx:1.27", "redis:7")),
		wantResult: admission.Patched, wantImages: []string{in(good, "nginx:1.27"), "redis:7"},
		wantText:      []string{`image "redis:7" left as written: not in the mirror (container "b")`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorOriginal}, wantHeads: 2,
	}, {
		name: "missing, warn: rewritten with a warning", reg: good, cfg: cfgFor(good, "warn", "rewrite", config.Enforce),
		req:        create(pod("redis:7")),
		wantResult: admission.Patched, wantImages: []string{in(good, "redis:7")},
		wantText:      []string{`image "redis:7" became "` + in(good, "redis:7") + `": not in the mirror`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorWarn}, wantHeads: 1,
	}, {
		name: "missing in audit mode: would deny", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Audit),
		req:           create(pod("redis:7")),
		wantResult:    admission.Audited,
		wantText:      []string{`would deny: container "a": not in the mirror`, `image "redis:7" would become`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny}, wantHeads: 1,
	}, {
		name: "missing on UPDATE: the changed image is checked", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Update, Namespace: "team",
				Object: raw(t, pod(in(good, "nginx:1.27"), "redis:7")), OldObject: raw(t, pod(in(good, "nginx:1.27"), in(good, "nginx:1.27")))}
		},
		wantResult: admission.Denied, wantText: []string{`image "redis:7" is not in the mirror`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny}, wantHeads: 1,
	}, {
		name: "registry answers 503, rewrite: fail open with a warning", reg: failing, cfg: cfgFor(failing, "deny", "rewrite", config.Enforce),
		req:        create(pod("nginx:1.27")),
		wantResult: admission.Patched, wantImages: []string{in(failing, "nginx:1.27")},
		wantText:      []string{`image "nginx:1.27" became "` + in(failing, "nginx:1.27") + `": mirror check failed (error)`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorRewrite},
	}, {
		name: "registry answers 503, deny: fail closed", reg: failing, cfg: cfgFor(failing, "deny", "deny", config.Enforce),
		req:           create(pod("nginx:1.27")),
		wantResult:    admission.Denied,
		wantText:      []string{`image "nginx:1.27": cannot tell whether the mirror has "` + in(failing, "nginx:1.27") + `"`, "503"},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny},
	}, {
		name: "hung registry: bounded by the timeout, fail open", reg: hung, cfg: cfgFor(hung, "deny", "rewrite", config.Enforce),
		req:        create(pod("nginx:1.27", "redis:7")),
		wantResult: admission.Patched, wantImages: []string{in(hung, "nginx:1.27"), in(hung, "redis:7")},
		wantText:      []string{"mirror check failed (timeout)"},
		wantFallbacks: []admission.MirrorAction{admission.MirrorRewrite, admission.MirrorRewrite}, wantHeads: 2,
	}, {
		name: "check off: the registry is not asked", reg: good, cfg: cfgFor(good, "deny", "deny", config.Enforce), off: true,
		req:        create(pod("redis:7")),
		wantResult: admission.Patched, wantImages: []string{in(good, "redis:7")},
	}, {
		name: "PVC: nothing to check", reg: good, cfg: cfgFor(good, "deny", "deny", config.Enforce),
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: pvcGVK, Operation: admissionv1.Create, Namespace: "team",
				Object: raw(t, &corev1.PersistentVolumeClaim{})}
		},
		wantResult: admission.Unchanged,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c, err := admission.New(tt.cfg, nil, rec)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.off {
				checker, err := mirror.New(t.Context(), mirror.Options{Timeout: tt.cfg.MirrorCheckTimeout,
					PositiveTTL: time.Minute, NegativeTTL: time.Minute, Failures: 100})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = checker.Close(context.Background()) })
				if err := c.CheckMirror(checker, tt.cfg); err != nil {
					t.Fatal(err)
				}
			}
			heads := tt.reg.ManifestHeads()
			req := tt.req(t)
			start := time.Now()
			resp := c.Admit(context.Background(), req)
			t.Logf("review took %s", time.Since(start).Round(time.Millisecond))

			text := strings.Join(resp.Warnings, "\n")
			if tt.wantResult == admission.Denied {
				if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden || len(resp.Patch) > 0 {
					t.Fatalf("answer %+v, want a 403 denial without a patch", resp)
				}
				text = resp.Result.Message
			} else if !resp.Allowed {
				t.Fatalf("answer %+v, want allowed", resp)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(text, w) {
					t.Errorf("%q lacks %q", text, w)
				}
			}
			if tt.wantText == nil && len(resp.Warnings) > 0 {
				t.Errorf("warnings %q, want none", resp.Warnings)
			}
			if got := tt.reg.ManifestHeads() - heads; got != tt.wantHeads {
				t.Errorf("%d manifest HEADs, want %d", got, tt.wantHeads)
			}
			if len(rec.outcomes) != 1 || rec.outcomes[0].Result != tt.wantResult {
				t.Fatalf("outcomes %+v, want one %s", rec.outcomes, tt.wantResult)
			}
			var actions []admission.MirrorAction
			for _, f := range rec.outcomes[0].MirrorFallbacks {
				actions = append(actions, f.Action)
			}
			if strings.Join(strs(actions), ",") != strings.Join(strs(tt.wantFallbacks), ",") {
				t.Errorf("fallbacks %+v, want actions %v", rec.outcomes[0].MirrorFallbacks, tt.wantFallbacks)
			}
			if len(tt.wantFallbacks) > 0 && resp.AuditAnnotations["mirror-fallbacks"] == "" {
				t.Errorf("audit annotations %v lack mirror-fallbacks", resp.AuditAnnotations)
			}
			if tt.wantImages == nil {
				return
			}
			obj := req.Object.Raw
			if len(resp.Patch) > 0 {
				p, err := jsonpatch.DecodePatch(resp.Patch)
				if err != nil {
					t.Fatal(err)
				}
				if obj, err = p.Apply(obj); err != nil {
					t.Fatalf("applying %s: %v", resp.Patch, err)
				}
			}
			var got corev1.Pod
			if err := json.Unmarshal(obj, &got); err != nil {
				t.Fatal(err)
			}
			var images []string
			for _, ctr := range got.Spec.Containers {
				images = append(images, ctr.Image)
				if tt.cfg.Mode == config.Enforce && ctr.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("container %s pull policy %q, want IfNotPresent (kept whatever the check said)", ctr.Name, ctr.ImagePullPolicy)
				}
			}
			if strings.Join(images, " ") != strings.Join(tt.wantImages, " ") {
				t.Errorf("images %v, want %v", images, tt.wantImages)
			}
		})
	}
}

func strs[T ~string](in []T) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = string(v)
	}
	return out
}
