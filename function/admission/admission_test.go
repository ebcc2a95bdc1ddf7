package admission_test

import (
	"context"
	"encoding/json"
	"k8s.io/utils/ptr"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/internal/testkit"
)

var (
	podGVK = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	pvcGVK = metav1.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"}
)

type recorder struct {
	mu       sync.Mutex
	outcomes []admission.Decision
}

func (r *recorder) Observe(_ context.Context, o admission.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes = append(r.outcomes, o)
}

func raw(t *testing.T, obj any) runtime.RawExtension {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.RawExtension{Raw: b}
}

func pod(images ...string) *corev1.Pod {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: string(rune('a' + i)), Image: img})
	}
	return p
}

func TestAdmit(t *testing.T) {
	base := config.Env{Registry: "r.example.com", ImagePullSecret: "regcred", ForceImagePullPolicy: true,
		ImagePullPolicyToForce: "IfNotPresent", DefaultStorageClass: "standard", ExcludeNamespaces: []string{"skip"}, Mode: config.Enforce}
	audit := base
	audit.Mode = config.Audit
	warn := base
	warn.Warnings = true
	dry := true

	withEphemeral := pod("r.example.com/nginx:1")
	withEphemeral.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox:1.36"}}}

	classless := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "team"}}
	empty := ""
	explicitNone := classless.DeepCopy()
	explicitNone.Spec.StorageClassName = &empty

	tests := []struct {
		name         string
		cfg          config.Env
		req          func(t *testing.T) *admissionv1.AdmissionRequest
		wantVerdict  admission.Verdict
		wantImages   []string // container images after the patch, for Pods
		wantPolicy   corev1.PullPolicy
		wantSecrets  []string
		wantClass    *string
		wantWarnings []string
		wantPatch    bool
	}{{
		name: "create pod", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod("nginx:1.27", "quay.io/a/b:v2"))}
		},
		wantVerdict: admission.Patched, wantPatch: true,
		wantImages: []string{"r.example.com/nginx:1.27", "r.example.com/a/b:v2"}, wantPolicy: "IfNotPresent", wantSecrets: []string{"regcred"},
	}, {
		name: "dry run is mutated the same way", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", DryRun: &dry, Object: raw(t, pod("nginx:1.27"))}
		},
		wantVerdict: admission.Patched, wantPatch: true, wantImages: []string{"r.example.com/nginx:1.27"}, wantPolicy: "IfNotPresent", wantSecrets: []string{"regcred"},
	}, {
		name: "excluded namespace", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "skip", Object: raw(t, pod("nginx:1.27"))}
		},
		wantVerdict: admission.Excluded, wantImages: []string{"nginx:1.27"},
	}, {
		name: "audit mode warns and does not patch", cfg: audit,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod("nginx:1.27"))}
		},
		wantVerdict: admission.Audited, wantImages: []string{"nginx:1.27"},
		wantWarnings: []string{`image "nginx:1.27" would become "r.example.com/nginx:1.27" (container "a")`, `pull-policy would be set to "IfNotPresent"`, `pull-secret would be set to "regcred"`},
	}, {
		name: "enforce mode with warnings", cfg: warn,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod("nginx:1.27"))}
		},
		wantVerdict: admission.Patched, wantPatch: true, wantImages: []string{"r.example.com/nginx:1.27"}, wantPolicy: "IfNotPresent", wantSecrets: []string{"regcred"},
		wantWarnings: []string{`image "nginx:1.27" became "r.example.com/nginx:1.27"`},
	}, {
		name: "label-only update of an old pod gets no patch", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			old := pod("nginx:1.27")
			updated := old.DeepCopy()
			updated.Labels = map[string]string{"x": "y"}
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Update, Namespace: "team", Object: raw(t, updated), OldObject: raw(t, old)}
		},
		wantVerdict: admission.Unchanged, wantImages: []string{"nginx:1.27"},
	}, {
		name: "update that changes an image rewrites only that image", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			old := pod("nginx:1.27", "redis:7")
			updated := pod("nginx:1.28", "redis:7")
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Update, Namespace: "team", Object: raw(t, updated), OldObject: raw(t, old)}
		},
		wantVerdict: admission.Patched, wantPatch: true, wantImages: []string{"r.example.com/nginx:1.28", "redis:7"},
	}, {
		name: "ephemeral container added by kubectl debug", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Update, SubResource: "ephemeralcontainers", Namespace: "team",
				Object: raw(t, withEphemeral), OldObject: raw(t, pod("r.example.com/nginx:1"))}
		},
		wantVerdict: admission.Patched, wantPatch: true, wantImages: []string{"r.example.com/nginx:1", "r.example.com/busybox:1.36"},
	}, {
		name: "status update is skipped", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Update, SubResource: "status", Namespace: "team",
				Object: raw(t, pod("nginx:2")), OldObject: raw(t, pod("nginx:1"))}
		},
		wantVerdict: admission.Unchanged, wantImages: []string{"nginx:2"},
	}, {
		name: "delete is ignored", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Delete, Namespace: "team", OldObject: raw(t, pod("nginx:1"))}
		},
		wantVerdict: admission.Unchanged,
	}, {
		name: "pvc without class", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: pvcGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, classless)}
		},
		wantVerdict: admission.Patched, wantPatch: true, wantClass: ptr.To("standard"),
	}, {
		name: "pvc with explicitly no class", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: pvcGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, explicitNone)}
		},
		wantVerdict: admission.Unchanged, wantClass: ptr.To(""),
	}, {
		name: "other kinds are skipped with a warning", cfg: base,
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, Operation: admissionv1.Create, Namespace: "team", Object: runtime.RawExtension{Raw: []byte(`{}`)}}
		},
		wantVerdict: admission.Skipped, wantWarnings: []string{"not handled"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c := testkit.Controller(t, tt.cfg, nil, rec)
			req := tt.req(t)
			resp := c.Admit(context.Background(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if (len(resp.Patch) > 0) != tt.wantPatch {
				t.Fatalf("patch = %s, want patch: %v", resp.Patch, tt.wantPatch)
			}
			if len(rec.outcomes) != 1 || rec.outcomes[0].Verdict != tt.wantVerdict {
				t.Fatalf("outcomes = %+v, want one %q", rec.outcomes, tt.wantVerdict)
			}
			for _, w := range tt.wantWarnings {
				if !strings.Contains(strings.Join(resp.Warnings, "\n"), w) {
					t.Errorf("warnings %q lack %q", resp.Warnings, w)
				}
			}
			obj := testkit.ApplyPatch(t, req.Object.Raw, resp.Patch)
			if req.Kind == pvcGVK {
				var pvc corev1.PersistentVolumeClaim
				if err := json.Unmarshal(obj, &pvc); err != nil {
					t.Fatal(err)
				}
				if (pvc.Spec.StorageClassName == nil) != (tt.wantClass == nil) || tt.wantClass != nil && *pvc.Spec.StorageClassName != *tt.wantClass {
					t.Errorf("storageClassName = %v, want %v", pvc.Spec.StorageClassName, tt.wantClass)
				}
				return
			}
			if tt.wantImages == nil {
				return
			}
			var p corev1.Pod
			if err := json.Unmarshal(obj, &p); err != nil {
				t.Fatal(err)
			}
			var images []string
			for _, c := range p.Spec.Containers {
				images = append(images, c.Image)
				if tt.wantPolicy != "" && c.ImagePullPolicy != tt.wantPolicy {
					t.Errorf("container %s policy = %q, want %q", c.Name, c.ImagePullPolicy, tt.wantPolicy)
				}
			}
			for _, c := range p.Spec.EphemeralContainers {
				images = append(images, c.Image)
			}
			if strings.Join(images, " ") != strings.Join(tt.wantImages, " ") {
				t.Errorf("images = %v, want %v", images, tt.wantImages)
			}
			var secrets []string
			for _, s := range p.Spec.ImagePullSecrets {
				secrets = append(secrets, s.Name)
			}
			if strings.Join(secrets, ",") != strings.Join(tt.wantSecrets, ",") {
				t.Errorf("imagePullSecrets = %v, want %v", secrets, tt.wantSecrets)
			}
		})
	}
}

func TestAdmitNilRequest(t *testing.T) {
	c := testkit.Controller(t, config.Env{ImagePullPolicyToForce: "Always"}, nil)
	if resp := c.Admit(context.Background(), nil); resp.Allowed || resp.Result == nil || resp.Result.Code != 400 {
		t.Fatalf("nil request answered %+v", resp)
	}
}

// TestAdmitRefused: a Pod that would pull an image no allowed registry can
// serve is denied in enforce mode, with a message naming the container or
// volume and the reason, and only warned about in audit mode.
func TestAdmitRefused(t *testing.T) {
	long := "evil.example.com/" + strings.Repeat("a", 250) + ":1"
	enforce := config.Env{Registry: "registry.example.com/mirror", Mode: config.Enforce, ImagePullPolicyToForce: "Always"}
	audit := enforce
	audit.Mode = config.Audit
	volumePod := pod("nginx")
	volumePod.Spec.Volumes = []corev1.Volume{{Name: "ext", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "quay.io/" + strings.Repeat("b", 250)}}}}
	hugePod := pod("quay.io/" + strings.Repeat("c", 64<<10))
	updated := pod("nginx", long)
	tests := []struct {
		name        string
		cfg         config.Env
		op          admissionv1.Operation
		obj, old    *corev1.Pod
		wantVerdict admission.Verdict
		wantText    []string // in the denial message, or in the audit warnings
	}{
		{"overlong rewrite of a container image", enforce, admissionv1.Create, pod("nginx", long), nil, admission.Denied,
			[]string{`container "b"`, `image "evil.example.com/aaaa`, "cannot be pulled from an allowed registry", "is not a valid reference", "255 characters"}},
		{"overlong rewrite of an image volume", enforce, admissionv1.Create, volumePod, nil, admission.Denied,
			[]string{`image volume "ext"`, "cannot be pulled from an allowed registry"}},
		{"longer than any reference", enforce, admissionv1.Create, hugePod, nil, admission.Denied,
			[]string{`container "a"`, "longer than any reference a runtime can pull", "(65544 characters)"}},
		{"image patched to an overlong one on UPDATE", enforce, admissionv1.Update, updated, pod("nginx", "nginx"), admission.Denied,
			[]string{`container "b"`, "cannot be pulled from an allowed registry"}},
		{"audit mode only warns", audit, admissionv1.Create, pod("nginx", long), nil, admission.Audited,
			[]string{`would deny: container "b"`, "cannot be pulled from an allowed registry"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c := testkit.Controller(t, tt.cfg, nil, rec)
			req := &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: tt.op, Namespace: "team", Object: raw(t, tt.obj)}
			if tt.old != nil {
				req.OldObject = raw(t, tt.old)
			}
			resp := c.Admit(context.Background(), req)
			text := strings.Join(resp.Warnings, "\n")
			if tt.wantVerdict == admission.Denied {
				if resp.Allowed || resp.Result == nil || resp.Result.Code != 403 || len(resp.Patch) > 0 {
					t.Fatalf("answer %+v, want a 403 denial without a patch", resp)
				}
				text = resp.Result.Message
				if len(text) > 2000 {
					t.Errorf("denial message is %d characters long", len(text))
				}
			} else if !resp.Allowed || len(resp.Patch) > 0 {
				t.Fatalf("answer %+v, want allowed without a patch", resp)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(text, w) {
					t.Errorf("%q lacks %q", text, w)
				}
			}
			if len(rec.outcomes) != 1 || rec.outcomes[0].Verdict != tt.wantVerdict || len(rec.outcomes[0].Problems) == 0 {
				t.Fatalf("outcomes = %+v, want one %q with problems", rec.outcomes, tt.wantVerdict)
			}
			t.Logf("message: %s", text)
		})
	}
}

// TestWarningsBoundedAndAudited: each warning fits one line, a Pod with
// many changes gets a summary, and the audit log gets annotations.
func TestWarningsBoundedAndAudited(t *testing.T) {
	cfg := config.Env{Registry: "registry.example.com/mirror", ImagePullPolicyToForce: "Always", ForceImagePullPolicy: true,
		Mode: config.Enforce, Warnings: true}
	c := testkit.Controller(t, cfg, nil)
	var imgs []string
	for i := range 20 {
		imgs = append(imgs, "quay.io/some-organisation/"+strings.Repeat("x", 60)+strconv.Itoa(i)+":1.2.3")
	}
	resp := c.Admit(context.Background(), &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod(imgs...))})
	if !resp.Allowed || len(resp.Patch) == 0 {
		t.Fatalf("answer %+v", resp)
	}
	if len(resp.Warnings) != 8 || !strings.Contains(resp.Warnings[7], "and 33 more changes") {
		t.Errorf("%d warnings, last %q; want 8, the last summarising the other 33 of 40", len(resp.Warnings), resp.Warnings[len(resp.Warnings)-1])
	}
	for _, w := range resp.Warnings {
		if n := utf8.RuneCountInString(w); n > 120 {
			t.Errorf("warning of %d characters: %q", n, w)
		}
	}
	if got := resp.AuditAnnotations; got["result"] != "patched" || got["changes"] != "40" {
		t.Errorf("audit annotations %v, want result=patched changes=40", got)
	}
}
