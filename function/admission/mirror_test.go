package admission_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
	"github.com/mutator-dev/mutator/internal/testkit"
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

	cfgFor := func(reg *mirrortest.Registry, missing, unreachable string, mode config.Mode) config.Env {
		return config.Env{Registry: reg.Host + "/mirror", Mode: mode, ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent",
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
		cfg           config.Env
		off           bool // leave the check off
		req           func(t *testing.T) *admissionv1.AdmissionRequest
		wantVerdict   admission.Verdict
		wantImages    []string // after the patch; nil for a denial
		wantText      []string // in the denial message or the warnings
		wantFallbacks []admission.MirrorAction
		wantHeads     int64 // manifest HEADs the registry got
	}{{
		name: "present: rewritten, no warning", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req:         create(pod("nginx:1.27")),
		wantVerdict: admission.Patched, wantImages: []string{in(good, "nginx:1.27")}, wantHeads: 1,
	}, {
		name: "one rewrite from two spellings: one lookup", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req:         create(pod("nginx:1.27", "docker.io/nginx:1.27", "nginx:1.27")),
		wantVerdict: admission.Patched, wantImages: []string{in(good, "nginx:1.27"), in(good, "nginx:1.27"), in(good, "nginx:1.27")},
		wantHeads: 1,
	}, {
		name: "missing, deny: 403 naming image and mirror", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req:           create(pod("nginx:1.27", "redis:7")),
		wantVerdict:   admission.Denied,
		wantText:      []string{`container "b": image "redis:7" is not in the mirror: "` + in(good, "redis:7") + `" was not found`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny}, wantHeads: 2,
	}, {
		name: "missing, original: left as written, pull policy still forced", reg: good, cfg: cfgFor(good, "original", "rewrite", config.Enforce),
		req:         create(pod("nginx:1.27", "redis:7")),
		wantVerdict: admission.Patched, wantImages: []string{in(good, "nginx:1.27"), "redis:7"},
		wantText:      []string{`image "redis:7" left as written: not in the mirror (container "b")`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorOriginal}, wantHeads: 2,
	}, {
		name: "missing, warn: rewritten with a warning", reg: good, cfg: cfgFor(good, "warn", "rewrite", config.Enforce),
		req:         create(pod("redis:7")),
		wantVerdict: admission.Patched, wantImages: []string{in(good, "redis:7")},
		wantText:      []string{`image "redis:7" became "` + in(good, "redis:7") + `": not in the mirror`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorWarn}, wantHeads: 1,
	}, {
		name: "missing in audit mode: would deny", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Audit),
		req:           create(pod("redis:7")),
		wantVerdict:   admission.Audited,
		wantText:      []string{`would deny: container "a": not in the mirror`, `image "redis:7" would become`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny}, wantHeads: 1,
	}, {
		name: "missing on UPDATE: the changed image is checked", reg: good, cfg: cfgFor(good, "deny", "rewrite", config.Enforce),
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Update, Namespace: "team",
				Object: raw(t, pod(in(good, "nginx:1.27"), "redis:7")), OldObject: raw(t, pod(in(good, "nginx:1.27"), in(good, "nginx:1.27")))}
		},
		wantVerdict: admission.Denied, wantText: []string{`image "redis:7" is not in the mirror`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny}, wantHeads: 1,
	}, {
		name: "registry answers 503, rewrite: fail open with a warning", reg: failing, cfg: cfgFor(failing, "deny", "rewrite", config.Enforce),
		req:         create(pod("nginx:1.27")),
		wantVerdict: admission.Patched, wantImages: []string{in(failing, "nginx:1.27")},
		wantText:      []string{`image "nginx:1.27" became "` + in(failing, "nginx:1.27") + `": mirror check failed (error)`},
		wantFallbacks: []admission.MirrorAction{admission.MirrorRewrite},
	}, {
		name: "registry answers 503, deny: fail closed", reg: failing, cfg: cfgFor(failing, "deny", "deny", config.Enforce),
		req:           create(pod("nginx:1.27")),
		wantVerdict:   admission.Denied,
		wantText:      []string{`image "nginx:1.27": cannot tell whether the mirror has "` + in(failing, "nginx:1.27") + `"`, "503"},
		wantFallbacks: []admission.MirrorAction{admission.MirrorDeny},
	}, {
		name: "hung registry: bounded by the timeout, fail open", reg: hung, cfg: cfgFor(hung, "deny", "rewrite", config.Enforce),
		req:         create(pod("nginx:1.27", "redis:7")),
		wantVerdict: admission.Patched, wantImages: []string{in(hung, "nginx:1.27"), in(hung, "redis:7")},
		wantText:      []string{"mirror check failed (timeout)"},
		wantFallbacks: []admission.MirrorAction{admission.MirrorRewrite, admission.MirrorRewrite}, wantHeads: 2,
	}, {
		name: "check off: the registry is not asked", reg: good, cfg: cfgFor(good, "deny", "deny", config.Enforce), off: true,
		req:         create(pod("redis:7")),
		wantVerdict: admission.Patched, wantImages: []string{in(good, "redis:7")},
	}, {
		name: "PVC: nothing to check", reg: good, cfg: cfgFor(good, "deny", "deny", config.Enforce),
		req: func(t *testing.T) *admissionv1.AdmissionRequest {
			return &admissionv1.AdmissionRequest{UID: "1", Kind: pvcGVK, Operation: admissionv1.Create, Namespace: "team",
				Object: raw(t, &corev1.PersistentVolumeClaim{})}
		},
		wantVerdict: admission.Unchanged,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			c := testkit.Controller(t, tt.cfg, nil, rec)
			if !tt.off {
				checker, err := mirror.New(t.Context(), mirror.Options{Timeout: tt.cfg.MirrorCheckTimeout,
					PositiveTTL: time.Minute, NegativeTTL: time.Minute, Failures: 100})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = checker.Close(context.Background()) })
				if err := c.CheckMirror(checker, testkit.Config(t, tt.cfg).Mirror); err != nil {
					t.Fatal(err)
				}
			}
			heads := tt.reg.ManifestHeads()
			req := tt.req(t)
			start := time.Now()
			resp := c.Admit(context.Background(), req)
			t.Logf("review took %s", time.Since(start).Round(time.Millisecond))

			text := strings.Join(resp.Warnings, "\n")
			if tt.wantVerdict == admission.Denied {
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
			if len(rec.outcomes) != 1 || rec.outcomes[0].Verdict != tt.wantVerdict {
				t.Fatalf("outcomes %+v, want one %s", rec.outcomes, tt.wantVerdict)
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
			obj := testkit.ApplyPatch(t, req.Object.Raw, resp.Patch)
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

// podOf is a Pod with one container per image, named c0, c1, …
func podOf(images []string) *corev1.Pod {
	p := pod()
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

// refs returns n references: format with %d replaced by 0…n-1.
func refs(format string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(format, i)
	}
	return out
}

// webhookCtx is what knative.dev/pkg hands Admit: the request's context
// with the request in it, whose URL carries the API server's timeout.
func webhookCtx(t *testing.T, query string) context.Context {
	t.Helper()
	r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, admission.Path+query, nil)
	return apis.WithHTTPRequest(r.Context(), r)
}

// newMirrorController is a controller checking reg's mirror/ with checker
// options opts (Failures 100 and TTLs of a minute unless set).
func newMirrorController(t *testing.T, cfg config.Env, opts mirror.Options, observers ...admission.Observer) (*admission.Controller, *mirror.Checker) {
	t.Helper()
	// The controller's own bounds are under test, with values config
	// would refuse (a lookup timeout longer than the review budget), so
	// the mirror policy is built here rather than parsed.
	policy := config.Mirror{Check: true, Missing: config.MirrorMissing(cfg.MirrorMissing), Unreachable: config.MirrorUnreachable(cfg.MirrorUnreachable),
		ReviewBudget: cfg.MirrorCheckReviewBudget, MaxLookups: cfg.MirrorCheckMaxLookups}
	cfg.MirrorCheck = false
	c := testkit.Controller(t, cfg, nil, observers...)
	if opts.Timeout == 0 {
		opts.Timeout = cfg.MirrorCheckTimeout
	}
	if opts.PositiveTTL == 0 {
		opts.PositiveTTL, opts.NegativeTTL = time.Minute, time.Minute
	}
	if opts.Failures == 0 {
		opts.Failures = 100
	}
	checker, err := mirror.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = checker.Close(context.Background()) })
	if err := c.CheckMirror(checker, policy); err != nil {
		t.Fatal(err)
	}
	return c, checker
}

// patchedImages applies resp's patch to obj and returns the containers'
// images.
func patchedImages(t *testing.T, obj []byte, resp *admissionv1.AdmissionResponse) []string {
	t.Helper()
	obj = testkit.ApplyPatch(t, obj, resp.Patch)
	var got corev1.Pod
	if err := json.Unmarshal(obj, &got); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range got.Spec.Containers {
		out = append(out, c.Image)
	}
	return out
}

// TestMirrorLookupsPerReview: a review asks the registry about at most
// MIRROR_CHECK_MAX_LOOKUPS distinct images the cache cannot answer, however
// many it lists (each lookup is a manifest HEAD, plus a GET /v2/ the first
// time a repository is seen). Images past the limit are not checked and go
// to MIRROR_UNREACHABLE, never to MIRROR_MISSING=original: an image nobody
// checked is rewritten to the mirror or the Pod denied, never admitted from
// its original registry. The fallbacks of a thousand images are listed
// within fixed bounds and counted in full.
func TestMirrorLookupsPerReview(t *testing.T) {
	tests := []struct {
		name        string
		maxLookups  int // 0: the default, 32
		images      []string
		present     int    // the first images pushed to the mirror
		warm        int    // the first images checked (cached) before the review
		missing     string // MIRROR_MISSING
		unreachable string // MIRROR_UNREACHABLE
		wantHeads   int64  // at most
		wantReqs    int64  // at most
		wantAllowed bool
		wantText    string // in the warnings or the denial
	}{
		{name: "1,000 repositories, default limit", images: refs("team%04d/app:v1", 1000), present: 40, missing: "deny", unreachable: "rewrite",
			wantHeads: 32, wantReqs: 64, wantAllowed: true, wantText: "not checked (lookup limit)"},
		{name: "1,000 tags of one repository, limit 16", maxLookups: 16, images: refs("app:v%04d", 1000), missing: "warn", unreachable: "rewrite",
			wantHeads: 16, wantReqs: 17, wantAllowed: true, wantText: "mutator: and 993 more images whose mirror check did not come back present"},
		{name: "cached images cost no lookup", images: refs("team%04d/app:v1", 1000), present: 100, warm: 100, missing: "warn", unreachable: "rewrite",
			wantHeads: 32, wantReqs: 64, wantAllowed: true, wantText: "not in the mirror"},
		{name: "more distinct images than a review tracks, all cached", images: refs("app:v%04d", 300), present: 300, warm: 300, missing: "deny", unreachable: "deny",
			wantHeads: 0, wantReqs: 0, wantAllowed: true},
		{name: "original: only images the mirror said it lacks stay as written", images: refs("team%04d/app:v1", 1000), missing: "original", unreachable: "rewrite",
			wantHeads: 32, wantReqs: 64, wantAllowed: true, wantText: "left as written: not in the mirror"},
		{name: "unreachable deny: unchecked images deny", images: refs("team%04d/app:v1", 1000), present: 1000, missing: "deny", unreachable: "deny",
			wantHeads: 32, wantReqs: 64, wantAllowed: false,
			wantText: "and 964 more images, the first container \"c36\": image \"team0036/app:v1\": cannot tell whether the mirror has"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			for _, img := range tt.images[:tt.present] {
				reg.Push(t, "mirror/"+img)
			}
			cfg := config.Env{Registry: reg.Host + "/mirror", Mode: config.Enforce, MirrorCheck: true,
				MirrorCheckTimeout: 5 * time.Second, MirrorCheckReviewBudget: 8 * time.Second, MirrorCheckMaxLookups: tt.maxLookups,
				MirrorMissing: tt.missing, MirrorUnreachable: tt.unreachable}
			rec := &recorder{}
			c, checker := newMirrorController(t, cfg, mirror.Options{}, rec)
			for _, img := range tt.images[:tt.warm] {
				if res, err := checker.Exists(t.Context(), reg.Host+"/mirror/"+img); err != nil || res.Status != mirror.Present {
					t.Fatalf("warming %s: %+v, %v", img, res, err)
				}
			}
			heads, reqs := reg.ManifestHeads(), reg.Requests()
			req := &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, podOf(tt.images))}
			resp := c.Admit(webhookCtx(t, "?timeout=10s"), req)
			gotHeads, gotReqs := reg.ManifestHeads()-heads, reg.Requests()-reqs
			t.Logf("%d images: %d manifest HEADs, %d requests; allowed %v", len(tt.images), gotHeads, gotReqs, resp.Allowed)
			if gotHeads > tt.wantHeads || gotReqs > tt.wantReqs {
				t.Errorf("the review cost %d manifest HEADs and %d requests, want at most %d and %d", gotHeads, gotReqs, tt.wantHeads, tt.wantReqs)
			}
			if resp.Allowed != tt.wantAllowed {
				t.Fatalf("allowed %v, want %v: %+v", resp.Allowed, tt.wantAllowed, resp.Result)
			}
			text := strings.Join(resp.Warnings, "\n")
			if !resp.Allowed {
				text = resp.Result.Message
			}
			if tt.wantText == "" && text != "" || !strings.Contains(text, tt.wantText) {
				t.Errorf("%q lacks %q", text, tt.wantText)
			}
			if len(resp.Warnings) > 8 {
				t.Errorf("%d warnings, want at most 8", len(resp.Warnings))
			}

			// Bounded, and counted in full.
			out := rec.outcomes[0]
			total := 0
			for _, f := range out.MirrorFallbacks {
				total += 1 + f.More
				if f.Reason == mirror.Skipped && f.Action == admission.MirrorOriginal {
					t.Errorf("%s was not checked yet left as written", f.Image)
				}
			}
			// Present images past the limit are not checked either.
			wantFallbacks := len(tt.images) - min(tt.present, tt.warm+cmp.Or(tt.maxLookups, admission.DefaultMirrorLookups))
			if annotation := resp.AuditAnnotations["mirror-fallbacks"]; total != wantFallbacks || (wantFallbacks > 0) != (annotation != "") ||
				wantFallbacks > 0 && annotation != strconv.Itoa(wantFallbacks) {
				t.Errorf("fallbacks count %d, annotation %q; want %d", total, resp.AuditAnnotations["mirror-fallbacks"], wantFallbacks)
			}
			if len(out.MirrorFallbacks) > 40 || len(out.Problems) > 32 {
				t.Errorf("%d fallbacks and %d problems listed, want them bounded", len(out.MirrorFallbacks), len(out.Problems))
			}
			if !resp.Allowed {
				return
			}
			// Every image not answered missing (with original) is on the
			// mirror: nothing unchecked is admitted from elsewhere.
			got := patchedImages(t, req.Object.Raw, resp)
			for i, img := range got {
				if strings.HasPrefix(img, reg.Host+"/mirror/") {
					continue
				}
				if tt.missing != "original" || i >= 32 {
					t.Fatalf("container c%d: %q is not on the mirror", i, img)
				}
			}
		})
	}
}

// TestMirrorReviewDeadline: a review whose lookups are slow is answered by
// its deadline, MIRROR_CHECK_REVIEW_BUDGET or four fifths of the API
// server's timeout (the timeout query parameter), whichever is shorter; at
// the deadline its lookups are cancelled (the registry answers none of them
// afterwards), images not yet asked are not asked, all go to
// MIRROR_UNREACHABLE, and the registry is not blamed for any of it.
func TestMirrorReviewDeadline(t *testing.T) {
	const slow = 2500 * time.Millisecond
	tests := []struct {
		name        string
		budget      time.Duration
		query       string
		unreachable string
		within      time.Duration // the review is answered within this: the guarantee
	}{
		{"the budget", 500 * time.Millisecond, "", "rewrite", 2 * time.Second},
		{"the API server's timeout: 2s", 8 * time.Second, "?timeout=2s", "rewrite", 2 * time.Second},
		{"the API server's timeout, deny", 8 * time.Second, "?timeout=2s", "deny", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			reg.SetSlow("mirror/", slow)
			cfg := config.Env{Registry: reg.Host + "/mirror", Mode: config.Enforce, MirrorCheck: true,
				MirrorCheckTimeout: 5 * time.Second, MirrorCheckReviewBudget: tt.budget, MirrorMissing: "deny", MirrorUnreachable: tt.unreachable}
			c, checker := newMirrorController(t, cfg, mirror.Options{Failures: 1})
			imgs := refs("team%02d/app:v1", 20)
			req := &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, podOf(imgs))}

			start := time.Now()
			resp := c.Admit(webhookCtx(t, tt.query), req)
			answered := time.Now()
			t.Logf("answered in %s, allowed %v", answered.Sub(start).Round(time.Millisecond), resp.Allowed)
			if answered.Sub(start) > tt.within {
				t.Errorf("answered after %s, want within %s", answered.Sub(start), tt.within)
			}
			if resp.Allowed != (tt.unreachable == "rewrite") {
				t.Fatalf("allowed %v with MIRROR_UNREACHABLE=%s: %+v", resp.Allowed, tt.unreachable, resp.Result)
			}
			if resp.Allowed {
				for i, img := range patchedImages(t, req.Object.Raw, resp) {
					if !strings.HasPrefix(img, reg.Host+"/mirror/") {
						t.Errorf("container c%d: %q, want it on the mirror", i, img)
					}
				}
			}

			// Past the moment the registry would have answered.
			time.Sleep(time.Until(start.Add(slow + 500*time.Millisecond)))
			if n := reg.AnsweredAfter(answered); n != 0 {
				t.Errorf("the registry answered %d requests after the review was answered; want 0 (lookups cancelled)", n)
			}
			s := checker.Stats()
			t.Logf("registry: %d manifest HEADs, %d requests abandoned by the client; checker %+v", reg.ManifestHeads(), reg.Abandoned(), s)
			if heads := reg.ManifestHeads(); heads == 0 || heads > 8 {
				t.Errorf("%d manifest HEADs, want 1 to 8 (the lookups in flight at the deadline; the rest are not asked)", heads)
			}
			if s.Cancelled == 0 || reg.Abandoned() == 0 {
				t.Errorf("no lookup was cancelled (checker %d, registry %d)", s.Cancelled, reg.Abandoned())
			}
			if st := checker.CircuitState(reg.Host); st != mirror.Closed || s.Probes != 0 {
				t.Errorf("circuit %s, %d probes; want closed and no probe: the registry did not fail, the review gave up", st, s.Probes)
			}
		})
	}
}

// TestMirrorFlood: reviews full of distinct missing or slow images (a flood
// from anyone who reaches the port) neither open the circuit nor keep a
// legitimate review from being checked: with MIRROR_UNREACHABLE=deny, a
// Pod whose image the mirror has is checked by a lookup during the flood
// and admitted, rewritten.
func TestMirrorFlood(t *testing.T) {
	tests := []struct {
		name  string
		image func(i int) string // the flood's i-th image
	}{
		{"missing images", func(i int) string { return fmt.Sprintf("x%06d/app:v1", i) }},
		{"slow images", func(i int) string { return fmt.Sprintf("slow%06d/app:v1", i) }},
		{"missing and slow images", func(i int) string {
			if i%2 == 0 {
				return fmt.Sprintf("x%06d/app:v1", i)
			}
			return fmt.Sprintf("slow%06d/app:v1", i)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			reg.SetSlow("mirror/slow", time.Minute)
			reg.Push(t, "mirror/shop/api:2.14")
			cfg := config.Env{Registry: reg.Host + "/mirror", Mode: config.Enforce, MirrorCheck: true,
				MirrorCheckTimeout: 300 * time.Millisecond, MirrorCheckReviewBudget: 2 * time.Second, MirrorMissing: "deny", MirrorUnreachable: "deny"}
			// The production circuit, with a cool-down longer than the test:
			// once open, it would stay open.
			c, checker := newMirrorController(t, cfg, mirror.Options{Failures: 5, Cooldown: time.Hour})

			ctx, stop := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			var next, floods atomic.Int64
			for range 12 {
				wg.Go(func() {
					for ctx.Err() == nil {
						imgs := make([]string, 200)
						for i := range imgs {
							imgs[i] = tt.image(int(next.Add(1)))
						}
						req := &admissionv1.AdmissionRequest{UID: "x", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, podOf(imgs))}
						c.Admit(webhookCtx(t, "?timeout=10s"), req)
						floods.Add(1)
					}
				})
			}
			defer func() { stop(); wg.Wait() }()
			for checker.Stats().Lookups < 100 { // the flood is on
				time.Sleep(5 * time.Millisecond)
			}

			legit := reg.Host + "/mirror/shop/api:2.14"
			if _, ok := checker.Cached(t.Context(), legit); ok {
				t.Fatal("the legitimate image is cached before its review")
			}
			req := &admissionv1.AdmissionRequest{UID: "l", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, podOf([]string{"shop/api:2.14"}))}
			start := time.Now()
			resp := c.Admit(webhookCtx(t, "?timeout=10s"), req)
			t.Logf("legitimate review during the flood: allowed %v in %s", resp.Allowed, time.Since(start).Round(time.Millisecond))
			if !resp.Allowed {
				t.Fatalf("legitimate review denied during the flood: %s", resp.Result.Message)
			}
			if got := patchedImages(t, req.Object.Raw, resp); len(got) != 1 || got[0] != legit {
				t.Errorf("images %v, want [%s]", got, legit)
			}
			if res, ok := checker.Cached(t.Context(), legit); !ok || res.Status != mirror.Present {
				t.Errorf("the legitimate image was not checked by a lookup: cached %+v, %v", res, ok)
			}
			stop()
			wg.Wait()
			time.Sleep(time.Second) // a probe in flight (of an image the registry has) reports
			s := checker.Stats()
			t.Logf("%d flood reviews; checker %+v", floods.Load(), s)
			if st := checker.CircuitState(reg.Host); st != mirror.Closed || s.CircuitOpens != 0 {
				t.Errorf("circuit %s after the flood, %d lookups refused by it; want closed throughout", st, s.CircuitOpens)
			}
			if s.MaxInFlight > mirror.DefaultMaxInFlight {
				t.Errorf("%d lookups in flight at once, want at most %d", s.MaxInFlight, mirror.DefaultMaxInFlight)
			}
		})
	}
}
