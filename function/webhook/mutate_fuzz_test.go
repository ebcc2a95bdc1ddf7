package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/webhook"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// fzVariants are the configurations FuzzMutate posts to; its variant
// argument selects one.
var fzVariants = []config.Env{
	{Registry: "registry.example.com/mirror", IgnoredRegistries: []string{"registry.k8s.io", "quay.io/keep"},
		RegistryMap: []string{"ghcr.io=harbor.example.com/ghcr"}, ImagePullSecret: "regcred", ImagePullSecretAppend: true,
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent", DefaultStorageClass: "standard",
		ExcludeNamespaces: []string{"kube-system"}, Warnings: true, Mode: config.Enforce},
	{Registry: "localhost:5000", ImagePullSecret: "regcred", ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always",
		DefaultStorageClass: "fast", Mode: config.Enforce},
	{Registry: "registry.example.com/mirror", IgnoredRegistries: []string{"registry.k8s.io"}, ImagePullSecret: "regcred",
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always", DefaultStorageClass: "standard",
		ExcludeNamespaces: []string{"kube-system"}, Mode: config.Audit},
}

// fzTarget is one handler with what FuzzMutate needs to check its answers.
type fzTarget struct {
	cfg    config.Env
	h      *webhook.Handler
	rw     *images.Rewriter
	logged *observer.ObservedLogs
}

const fzTimeout = 10 * time.Second

// FuzzMutate posts arbitrary bodies as AdmissionReviews through the whole
// handler (guard, knative's plumbing, Admit, patch) and checks that
//
//   - it answers within fzTimeout, never with a 5xx, and with a 200 to every
//     review the API server could have sent (strict JSON with a request);
//   - a panic is recovered only for the documented case (a review whose
//     "request" decodes to null, which knative dereferences);
//   - a 200 carries an AdmissionReview of the same type with a response for
//     the request's UID; a denial carries a 400 status with a message; audit
//     mode and excluded namespaces never patch;
//   - a patch is a JSON patch on image, imagePullPolicy, imagePullSecrets or
//     storageClassName only; on an object the API server could have sent it
//     applies, the result still strictly decodes as a corev1.Pod /
//     PersistentVolumeClaim, images on REGISTRY or an ignored registry are
//     unchanged, images become what the Rewriter says, the pull policy and
//     pull secret are set (CREATE) and the storage class is defaulted;
//   - the webhook is idempotent: the review rebuilt with the patched object
//     gets no patch;
//   - with WARNINGS=true there is one warning per patch operation.
func FuzzMutate(f *testing.F) {
	for _, s := range fzMutateSeeds(f) {
		for v := range fzVariants {
			f.Add(s, uint8(v))
		}
	}
	targets := make([]*fzTarget, len(fzVariants))
	for i, cfg := range fzVariants {
		targets[i] = newFuzzTarget(f, cfg)
	}
	f.Fuzz(func(t *testing.T, body []byte, variant uint8) {
		checkMutate(t, targets[int(variant)%len(targets)], body)
	})
}

func newFuzzTarget(tb testing.TB, cfg config.Env) *fzTarget {
	tb.Helper()
	core, logged := observer.New(zap.DebugLevel)
	c := testkit.Controller(tb, cfg, nil)
	h, err := webhook.New(context.Background(), webhook.Options{Logger: zap.New(core)}, c)
	if err != nil {
		tb.Fatal(err)
	}
	rw, err := images.New(cfg.Registry, cfg.IgnoredRegistries, cfg.RegistryMap)
	if err != nil {
		tb.Fatal(err)
	}
	return &fzTarget{cfg: cfg, h: h, rw: rw, logged: logged}
}

// fzPost posts body and fails the test when the handler does not answer
// within fzTimeout.
func fzPost(t *testing.T, h http.Handler, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, admission.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	ctx, cancel := context.WithTimeout(req.Context(), fzTimeout)
	defer cancel()
	req = req.WithContext(ctx)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
	case <-time.After(fzTimeout):
		t.Fatalf("no answer within %v to %.300q", fzTimeout, body)
	}
	return rec
}

func checkMutate(t *testing.T, tg *fzTarget, body []byte) {
	t.Helper()
	resp, review := fzShallow(t, tg, body)
	if review == nil {
		return
	}
	// The deep checks run on what the API server would send for the same
	// objects: the typed object re-encoded. The fuzzed body's own spelling
	// ("spec":null, key order, missing members) is one the API server never
	// produces.
	apiBody, ok := fzAsAPIServer(t, review)
	if !ok {
		return
	}
	if !bytes.Equal(apiBody, body) {
		if resp, review = fzShallow(t, tg, apiBody); review == nil {
			t.Fatalf("no review for the re-encoded %s", apiBody)
		}
	}
	fzDeep(t, tg, review, resp)
}

// fzShallow posts body and checks what holds for any body. It returns the
// response and, when body is a review the API server could have sent
// (strict JSON with a request), the strictly decoded review.
func fzShallow(t *testing.T, tg *fzTarget, body []byte) (*admissionv1.AdmissionResponse, *admissionv1.AdmissionReview) {
	t.Helper()
	tg.logged.TakeAll()
	rec := fzPost(t, tg.h, body)
	var loose admissionv1.AdmissionReview // what knative's decoder sees
	looseErr := json.NewDecoder(bytes.NewReader(body)).Decode(&loose)
	for _, e := range tg.logged.TakeAll() {
		if strings.Contains(e.Message, "panic") && (looseErr != nil || loose.Request != nil) {
			t.Fatalf("panic %v recovered for a review whose request is not null: %.500q", e.ContextMap(), body)
		}
	}
	if rec.Code >= 500 {
		t.Fatalf("status %d for %.500q: %.300s", rec.Code, body, rec.Body)
	}
	var review admissionv1.AdmissionReview // as the API server sends it
	strict, err := sigsjson.UnmarshalStrict(body, &review)
	canonical := err == nil && len(strict) == 0 && review.Request != nil
	if canonical && rec.Code != http.StatusOK {
		t.Fatalf("status %d for a well-formed review %.500q: %.300s", rec.Code, body, rec.Body)
	}
	if rec.Code != http.StatusOK {
		if rec.Code < 400 {
			t.Fatalf("status %d for %.500q", rec.Code, body)
		}
		return nil, nil
	}
	if looseErr != nil || loose.Request == nil {
		t.Fatalf("200 for a body knative cannot decode (%v): %.500q", looseErr, body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("answer to %.500q is not an AdmissionReview: %v: %.300s", body, err, rec.Body)
	}
	resp := out.Response
	if resp == nil {
		t.Fatalf("answer to %.500q has no response: %s", body, rec.Body)
	}
	if out.TypeMeta != loose.TypeMeta || resp.UID != loose.Request.UID {
		t.Fatalf("answer %s does not match the request's type %+v and UID %q", rec.Body, loose.TypeMeta, loose.Request.UID)
	}
	if !resp.Allowed {
		// 400: the object does not decode; 403: the provenance rule, in
		// enforce mode only.
		refused := resp.Result != nil && resp.Result.Code == http.StatusForbidden && tg.cfg.Mode == config.Enforce &&
			strings.Contains(resp.Result.Message, "cannot be pulled from an allowed registry")
		if resp.Result == nil || resp.Result.Code != http.StatusBadRequest && !refused || resp.Result.Message == "" || len(resp.Patch) > 0 {
			t.Fatalf("denial of %.500q is not a 400 or a provenance 403 with a message and no patch: %s", body, rec.Body)
		}
	} else if len(resp.Patch) == 0 {
		if resp.PatchType != nil {
			t.Fatalf("patch type without a patch: %s", rec.Body)
		}
	} else {
		if tg.cfg.Mode == config.Audit || slices.Contains(tg.cfg.ExcludeNamespaces, loose.Request.Namespace) {
			t.Fatalf("patch in audit mode or for excluded namespace %q: %s", loose.Request.Namespace, rec.Body)
		}
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch type %v: %s", resp.PatchType, rec.Body)
		}
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("patch %s does not decode: %v", resp.Patch, err)
		}
		kind := loose.Request.Kind.Kind
		for _, op := range patch {
			p, _ := op.Path()
			if !fzAllowedPath(kind, op.Kind(), p) {
				t.Fatalf("%s patch operation %s %s is outside the fields the webhook sets: %s", kind, op.Kind(), p, resp.Patch)
			}
		}
		// One warning per operation, summarised past eight.
		if want := min(len(patch), 8); tg.cfg.Warnings && len(resp.Warnings) != want {
			t.Fatalf("%d warnings for %d patch operations, want %d: %q %s", len(resp.Warnings), len(patch), want, resp.Warnings, resp.Patch)
		}
	}
	if !canonical {
		return resp, nil
	}
	return resp, &review
}

// fzAsAPIServer re-encodes the review's Pod or PVC objects the way the API
// server serialises them; false when the request is of another kind or an
// object does not strictly decode as that kind.
func fzAsAPIServer(t *testing.T, review *admissionv1.AdmissionReview) ([]byte, bool) {
	t.Helper()
	kind := review.Request.Kind.Kind
	reencode := func(raw []byte) ([]byte, bool) {
		if raw == nil {
			return nil, true
		}
		obj := fzNewObject(kind)
		if obj == nil {
			return nil, false
		}
		if strict, err := sigsjson.UnmarshalStrict(raw, obj); err != nil || len(strict) > 0 {
			return nil, false
		}
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatalf("re-encoding %s: %v", raw, err)
		}
		return b, true
	}
	again := *review
	req := *review.Request
	again.Request = &req
	var ok bool
	if req.Object.Raw, ok = reencode(req.Object.Raw); !ok {
		return nil, false
	}
	if req.OldObject.Raw, ok = reencode(req.OldObject.Raw); !ok {
		return nil, false
	}
	b, err := json.Marshal(&again)
	if err != nil {
		t.Fatalf("encoding %+v: %v", again, err)
	}
	return b, true
}

// fzDeep checks the answer to a review as the API server sends it.
func fzDeep(t *testing.T, tg *fzTarget, review *admissionv1.AdmissionReview, resp *admissionv1.AdmissionResponse) {
	t.Helper()
	if !resp.Allowed || slices.Contains(tg.cfg.ExcludeNamespaces, review.Request.Namespace) || tg.cfg.Mode != config.Enforce {
		return
	}
	if len(resp.Patch) == 0 {
		fzCheckNoChangeNeeded(t, tg, review)
		return
	}
	kind := review.Request.Kind.Kind
	patch, _ := jsonpatch.DecodePatch(resp.Patch) // decodes: checked by fzShallow
	patched, err := patch.Apply(review.Request.Object.Raw)
	if err != nil {
		t.Fatalf("patch %s does not apply to %s: %v", resp.Patch, review.Request.Object.Raw, err)
	}
	if !fzStrictObject(kind, patched) {
		t.Fatalf("patched %s %s no longer strictly decodes (patch %s)", kind, patched, resp.Patch)
	}
	switch kind {
	case "Pod":
		fzCheckPod(t, tg, review, patched, resp.Patch)
	case "PersistentVolumeClaim":
		fzCheckPVC(t, tg, review, patched, resp.Patch)
	}

	// Idempotency: the same review with the patched object gets no patch.
	again := *review
	req := *review.Request
	req.Object.Raw = patched
	again.Request = &req
	b, err := json.Marshal(&again)
	if err != nil {
		t.Fatal(err)
	}
	resp2, _ := fzShallow(t, tg, b)
	if resp2 == nil || !resp2.Allowed {
		t.Fatalf("re-posting the patched review %s: %+v", b, resp2)
	}
	if len(resp2.Patch) > 0 {
		t.Fatalf("not idempotent: %s patched with %s, then again with %s", review.Request.Object.Raw, resp.Patch, resp2.Patch)
	}
}

var fzPodPathRE = regexp.MustCompile(`^/spec/(?:(?:initContainers|containers|ephemeralContainers)/(?:0|[1-9][0-9]*)/(?:image|imagePullPolicy)|volumes/(?:0|[1-9][0-9]*)/image/(?:reference|pullPolicy)|imagePullSecrets(?:/-)?)$`)

func fzAllowedPath(kind, op, path string) bool {
	switch kind {
	case "Pod":
		return fzPodPathRE.MatchString(path) && (op == "add" || op == "replace")
	case "PersistentVolumeClaim":
		return path == "/spec/storageClassName" && op == "add"
	}
	return false
}

func fzNewObject(kind string) any {
	switch kind {
	case "Pod":
		return &corev1.Pod{}
	case "PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	}
	return nil
}

// fzStrictObject reports whether raw decodes as the kind's corev1 type the
// way the API server decodes: case-sensitive, no unknown or duplicate fields.
func fzStrictObject(kind string, raw []byte) bool {
	obj := fzNewObject(kind)
	if obj == nil {
		return false
	}
	strict, err := sigsjson.UnmarshalStrict(raw, obj)
	return err == nil && len(strict) == 0
}

// fzContainers lists a pod's containers of all three kinds with their list name.
func fzContainers(p *corev1.Pod) map[string]corev1.Container {
	m := map[string]corev1.Container{}
	for i, c := range p.Spec.InitContainers {
		m["init/"+strconv.Itoa(i)] = c
	}
	for i, c := range p.Spec.Containers {
		m["containers/"+strconv.Itoa(i)] = c
	}
	for i, c := range p.Spec.EphemeralContainers {
		m["ephemeral/"+strconv.Itoa(i)] = corev1.Container(c.EphemeralContainerCommon)
	}
	return m
}

// fzHandled reports whether the webhook acts on the request at all.
func fzHandled(req *admissionv1.AdmissionRequest) (pod, pvc bool) {
	if req.Kind.Group != "" || req.Kind.Version != "v1" {
		return false, false
	}
	switch req.Kind.Kind {
	case "Pod":
		return req.Operation == admissionv1.Create && req.SubResource == "" ||
			req.Operation == admissionv1.Update && (req.SubResource == "" || req.SubResource == "ephemeralcontainers"), false
	case "PersistentVolumeClaim":
		return false, req.Operation == admissionv1.Create && req.SubResource == ""
	}
	return false, false
}

// fzCheckPod checks the patched Pod against the documented rules.
func fzCheckPod(t *testing.T, tg *fzTarget, review *admissionv1.AdmissionReview, patched, patch []byte) {
	t.Helper()
	req := review.Request
	if pod, _ := fzHandled(req); !pod {
		t.Fatalf("patch %s for a request the webhook does not handle: %+v", patch, req)
	}
	var before, after corev1.Pod
	_ = json.Unmarshal(req.Object.Raw, &before)
	_ = json.Unmarshal(patched, &after)
	var old *corev1.Pod
	if req.Operation == admissionv1.Update {
		old = &corev1.Pod{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			t.Fatalf("patch %s for an UPDATE whose old object does not decode: %v", patch, err)
		}
	}
	fzCheckPodSpec(t, tg, &before, &after, old, string(patch))
}

// fzCheckNoChangeNeeded: a well-formed Pod or PVC review that got no patch
// needs none.
func fzCheckNoChangeNeeded(t *testing.T, tg *fzTarget, review *admissionv1.AdmissionReview) {
	t.Helper()
	req := review.Request
	pod, pvc := fzHandled(req)
	switch {
	case pod && fzStrictObject("Pod", req.Object.Raw):
		var p, old corev1.Pod
		_ = json.Unmarshal(req.Object.Raw, &p)
		var oldp *corev1.Pod
		if req.Operation == admissionv1.Update {
			if !fzStrictObject("Pod", req.OldObject.Raw) {
				return
			}
			_ = json.Unmarshal(req.OldObject.Raw, &old)
			oldp = &old
		}
		fzCheckPodSpec(t, tg, &p, &p, oldp, "(no patch)")
	case pvc && fzStrictObject("PersistentVolumeClaim", req.Object.Raw):
		fzCheckPVC(t, tg, review, req.Object.Raw, nil)
	}
}

// fzCheckPodSpec checks after against before under the rules: images
// rewritten (UPDATE: only new containers and changed images), REGISTRY and
// ignored images unchanged, policy forced on new containers, pull secret set
// on CREATE.
func fzCheckPodSpec(t *testing.T, tg *fzTarget, before, after, old *corev1.Pod, patch string) {
	t.Helper()
	b, a := fzContainers(before), fzContainers(after)
	if len(a) != len(b) {
		t.Fatalf("patch %s changed the number of containers", patch)
	}
	var oldByName map[string]map[string]corev1.Container
	if old != nil {
		oldByName = map[string]map[string]corev1.Container{}
		for key, c := range fzContainers(old) {
			list, _, _ := strings.Cut(key, "/")
			if oldByName[list] == nil {
				oldByName[list] = map[string]corev1.Container{}
			}
			oldByName[list][c.Name] = c
		}
	}
	keep := append([]string{tg.cfg.Registry}, tg.cfg.IgnoredRegistries...)
	for key, cb := range b {
		ca := a[key]
		for _, p := range keep {
			if strings.HasPrefix(cb.Image, p+"/") && ca.Image != cb.Image {
				t.Fatalf("%s image %q under %q became %q (patch %s)", key, cb.Image, p, ca.Image, patch)
			}
		}
		list, _, _ := strings.Cut(key, "/")
		prev, existed := oldByName[list][cb.Name]
		isNew := old == nil || !existed
		wantImage := cb.Image
		if isNew || prev.Image != cb.Image {
			wantImage, _ = tg.rw.Rewrite(cb.Image)
		}
		if ca.Image != wantImage {
			t.Fatalf("%s image %q became %q, want %q (patch %s)", key, cb.Image, ca.Image, wantImage, patch)
		}
		wantPolicy := cb.ImagePullPolicy
		if tg.cfg.ForceImagePullPolicy && isNew {
			wantPolicy = corev1.PullPolicy(tg.cfg.ImagePullPolicyToForce)
		}
		if ca.ImagePullPolicy != wantPolicy {
			t.Fatalf("%s pull policy %q became %q, want %q (patch %s)", key, cb.ImagePullPolicy, ca.ImagePullPolicy, wantPolicy, patch)
		}
	}
	if old != nil || tg.cfg.ImagePullSecret == "" {
		if !equalSecrets(before.Spec.ImagePullSecrets, after.Spec.ImagePullSecrets) {
			t.Fatalf("pull secrets %v became %v on UPDATE or without IMAGE_PULL_SECRET (patch %s)", before.Spec.ImagePullSecrets, after.Spec.ImagePullSecrets, patch)
		}
		return
	}
	mine := corev1.LocalObjectReference{Name: tg.cfg.ImagePullSecret}
	want := []corev1.LocalObjectReference{mine}
	if tg.cfg.ImagePullSecretAppend {
		want = before.Spec.ImagePullSecrets
		present := false
		for _, s := range want {
			present = present || s == mine
		}
		if !present {
			want = append(want[:len(want):len(want)], mine)
		}
	}
	if !equalSecrets(after.Spec.ImagePullSecrets, want) {
		t.Fatalf("pull secrets %v became %v, want %v (patch %s)", before.Spec.ImagePullSecrets, after.Spec.ImagePullSecrets, want, patch)
	}
}

func equalSecrets(a, b []corev1.LocalObjectReference) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fzCheckPVC: a claim without a class gets DEFAULT_STORAGE_CLASS, one with a
// class (even "") keeps it.
func fzCheckPVC(t *testing.T, tg *fzTarget, review *admissionv1.AdmissionReview, patched, patch []byte) {
	t.Helper()
	req := review.Request
	if _, pvc := fzHandled(req); !pvc {
		if patch != nil {
			t.Fatalf("patch %s for a request the webhook does not handle: %+v", patch, req)
		}
		return
	}
	var before, after corev1.PersistentVolumeClaim
	_ = json.Unmarshal(req.Object.Raw, &before)
	_ = json.Unmarshal(patched, &after)
	want := before.Spec.StorageClassName
	if want == nil && tg.cfg.DefaultStorageClass != "" {
		want = &tg.cfg.DefaultStorageClass
	}
	if (want == nil) != (after.Spec.StorageClassName == nil) || want != nil && *want != *after.Spec.StorageClassName {
		t.Fatalf("storage class %v became %v (patch %s)", before.Spec.StorageClassName, after.Spec.StorageClassName, patch)
	}
}

// fzMutateSeeds are the bodies FuzzMutate starts from: the realistic
// reviews, their UPDATE, subresource, excluded and v1beta1 variants, and
// malformed bodies.
func fzMutateSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	pod, pvc := string(testdata(tb, "pod-review.json")), string(testdata(tb, "pvc-review.json"))
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	review := func(req string) []byte {
		return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":` + req + `}`)
	}
	podReq := func(op, sub, ns, object, old string) []byte {
		return review(`{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"` + op + `","subResource":"` + sub +
			`","namespace":"` + ns + `","object":` + object + `,"oldObject":` + old + `}`)
	}
	app := `{"name":"app","image":"registry.example.com/mirror/nginx:1","imagePullPolicy":"Always"}`
	return [][]byte{
		[]byte(pod), []byte(pvc),
		[]byte(strings.Replace(pod, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1)),
		[]byte(strings.Replace(pod, `"namespace":"shop"`, `"namespace":"kube-system"`, 1)),
		[]byte(strings.Replace(pvc, `"volumeMode"`, `"storageClassName":"","volumeMode"`, 1)),
		[]byte(strings.Replace(pvc, `"volumeMode"`, `"storageClassName":"fast","volumeMode"`, 1)),
		// kubectl debug: an ephemeral container added through the subresource.
		podReq("UPDATE", "ephemeralcontainers", "team",
			`{"metadata":{"name":"p"},"spec":{"containers":[`+app+`],"ephemeralContainers":[{"name":"debugger","image":"busybox:1.36"}]}}`,
			`{"metadata":{"name":"p"},"spec":{"containers":[`+app+`]}}`),
		// An UPDATE that changes one image and keeps another.
		podReq("UPDATE", "", "team",
			`{"spec":{"containers":[{"name":"a","image":"nginx:2"},{"name":"b","image":"redis:7"}],"imagePullSecrets":[{"name":"x"}]}}`,
			`{"spec":{"containers":[{"name":"a","image":"nginx:1"},{"name":"b","image":"redis:7"}],"imagePullSecrets":[{"name":"x"}]}}`),
		podReq("UPDATE", "status", "team", `{"spec":{"containers":[{"name":"a","image":"nginx"}]}}`, `{"spec":{"containers":[{"name":"a","image":"nginx"}]}}`),
		podReq("DELETE", "", "team", `null`, `{"spec":{"containers":[{"name":"a","image":"nginx"}]}}`),
		podReq("CREATE", "", "team", `{"spec":{"initContainers":[{"name":"i","image":"[::1]:5000/x:1@`+dgst+`"}],"containers":[{"name":"a","image":"ghcr.io/o/a:1"},{"name":"b","image":"registry.k8s.io/pause:3.10"},{"name":"c","image":"Upper/Case"},{"name":"d","image":"quay.io/keep/x"}],"imagePullSecrets":[{"name":"regcred"},{"name":"regcred"}]}}`, `null`),
		podReq("CREATE", "", "team", `{"spec":{"containers":[{"name":"a","image":"a/`+strings.Repeat("b", 250)+`:1"},{"name":"b","image":"localhost:5000/x"}]}}`, `null`),
		// Not canonical JSON: a case-variant key. encoding/json reads
		// "IMAGE" into Image, the patch then targets the "image" member.
		podReq("CREATE", "", "team", `{"spec":{"containers":[{"name":"a","image":"nginx","IMAGE":"evil.example.com/x"}]}}`, `null`),
		review(`{"uid":"u","kind":{"group":"apps","version":"v1","kind":"Deployment"},"operation":"CREATE","object":{}}`),
		review(`{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":5}}}`),
		review(`{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE"}`),
		[]byte(`{}`), []byte(`null`), []byte(``), []byte(`[1,2]`), []byte(`"x"`),
		[]byte(`{"request":null}`), []byte(`{"request":{}}`), []byte(`{"request":{},"request":null}`),
		[]byte(`{"request":{},"REQUEST":null}`), []byte(`{"Request":{"uid":"u"}}`),
		[]byte(`{"request":{"uid":"u"}} trailing`),
	}
}
