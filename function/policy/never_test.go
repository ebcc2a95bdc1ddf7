package policy_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"

	"github.com/mutator-dev/mutator/function/mutation"
	"github.com/mutator-dev/mutator/function/policy"
)

// TestNeverAgreesWithTheWebhook compares the policies, the image guard and
// the webhook's rules on every combination of a reference's pull policy
// (Never, IfNotPresent, Always, and none as before defaulting) with the
// forced one (none, Never, IfNotPresent, Always), in each place a Pod pulls
// from (init container, container, ephemeral container, image volume), on
// CREATE and on the UPDATEs that reach the rules (a changed image of an
// existing container, a new ephemeral container), with an image the
// webhook rewrites and one it refuses. A reference whose effective pull
// policy is Never is left as written and never refused, by all three.
func TestNeverAgreesWithTheWebhook(t *testing.T) {
	o := objectInterfaces(t)
	const rewritten = "ghcr.io/o/app:1"
	long := "evil.example.com/" + strings.Repeat("a", 250) + ":1"
	images := []string{rewritten, long}
	policies := []corev1.PullPolicy{corev1.PullNever, corev1.PullIfNotPresent, corev1.PullAlways, ""}
	for _, forced := range []string{"", "Never", "IfNotPresent", "Always"} {
		env := map[string]string{"REGISTRY": "registry.example.com/mirror"}
		if forced != "" {
			env["FORCE_IMAGE_PULL_POLICY"], env["IMAGE_PULL_POLICY_TO_FORCE"] = "true", forced
		}
		cfg := policy.LoadConfig(t, env)
		t.Run("forced="+forced, func(t *testing.T) {
			set, err := policy.Generate(cfg, policy.Options{})
			if err != nil {
				t.Fatal(err)
			}
			guardSet, err := policy.Guard(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rules := mutation.New(cfg.Rules)
			byOp := map[admission.Operation]*compiledMAP{admission.Create: compileMAP(t, set.Pods), admission.Update: compileMAP(t, set.PodUpdates)}
			provenance, guard := compileVAP(t, set.Provenance), compileVAP(t, guardSet.Provenance)
			var never, pulled int
			for _, img := range images {
				for _, pp := range policies {
					for _, r := range neverRequests(img, pp) {
						name := fmt.Sprintf("%s %s %s %q", r.op, r.subresource, img[:min(len(img), 20)], pp)
						want, problems := webhook(t, rules, r.request)
						// The reference under test is the last one of the
						// request's place: is it left as written?
						effective := pp
						if forced != "" && r.isNew {
							effective = corev1.PullPolicy(forced)
						}
						left := effective == corev1.PullNever
						if left {
							never++
							if len(problems) > 0 {
								t.Errorf("%s: the webhook refuses a reference it never pulls: %v", name, problems)
								continue
							}
							if got := r.image(want); got != img {
								t.Errorf("%s: the webhook rewrites a reference it never pulls to %s", name, got)
							}
						} else {
							pulled++
							if img == long && len(problems) == 0 {
								t.Errorf("%s: the webhook admits %s, which it pulls", name, img)
							}
							if img == rewritten && (want == nil || r.image(want) == img) {
								t.Errorf("%s: the webhook leaves %s as written, and the kubelet pulls it", name, img)
							}
						}
						// The policies: the same Pod stored, or a refusal.
						_, got := byOp[r.op].mutate(t, o, r.request)
						after := r.request
						after.pod = got
						msg, _ := validate(t, provenance, after)
						switch {
						case len(problems) > 0:
							if msg == "" {
								t.Errorf("%s: the webhook refuses, the policies store %s", name, podJSON(got))
							}
						case msg != "":
							t.Errorf("%s: the webhook stores %s, the policies refuse it: %s", name, podJSON(want), msg)
						case !reflect.DeepEqual(want.Spec, got.Spec):
							t.Errorf("%s:\n  the webhook stores %s\n  the policies     %s", name, podJSON(want), podJSON(got))
						}
						// The guard admits what the webhook admits, and
						// refuses the reference unmutated unless the kubelet
						// pulls nothing for it as written and as the webhook
						// leaves it.
						if want != nil {
							stored := r.request
							stored.pod = want
							if msg, _ := validate(t, guard, stored); msg != "" {
								t.Errorf("%s: the webhook stores %s, the guard refuses it: %s", name, podJSON(want), msg)
							}
						}
						msg, _ = validate(t, guard, r.request)
						asWrittenNever := pp == corev1.PullNever && (forced == "" || forced == "Never" || !r.isNew)
						if asWrittenNever != (msg == "") {
							t.Errorf("%s: as written (pull policy %q, forced %q), the guard says %q", name, pp, forced, msg)
						}
					}
				}
			}
			t.Logf("%d references the kubelet never pulls, %d it pulls", never, pulled)
		})
	}
}

// neverRequest is a Pod write whose last reference in one place is the
// one under test; image reads that reference from a Pod.
type neverRequest struct {
	request
	isNew bool // the rules set the forced policy on it
	image func(*corev1.Pod) string
}

// neverRequests are the writes that put img with pull policy pp in each
// place: CREATEs, the UPDATE of an existing container's image and the
// addition of an ephemeral container. Every other reference is already
// under the mirror.
func neverRequests(img string, pp corev1.PullPolicy) []neverRequest {
	const ok = "registry.example.com/mirror/ok:1"
	base := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "ok", Image: ok, ImagePullPolicy: corev1.PullAlways}}}}
	}
	var out []neverRequest
	// CREATE: an init container, a container, an image volume.
	p := base()
	p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: img, ImagePullPolicy: pp}}
	out = append(out, neverRequest{request{op: admission.Create, pod: p}, true, func(p *corev1.Pod) string { return p.Spec.InitContainers[0].Image }})
	p = base()
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "c", Image: img, ImagePullPolicy: pp})
	out = append(out, neverRequest{request{op: admission.Create, pod: p}, true, func(p *corev1.Pod) string { return p.Spec.Containers[1].Image }})
	p = base()
	p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: img, PullPolicy: pp}}}}
	out = append(out, neverRequest{request{op: admission.Create, pod: p}, true, func(p *corev1.Pod) string { return p.Spec.Volumes[0].Image.Reference }})
	// UPDATE: the image of an existing container changed (kubectl set
	// image); its pull policy is immutable.
	old := base()
	old.Spec.Containers = append(old.Spec.Containers, corev1.Container{Name: "c", Image: ok, ImagePullPolicy: pp})
	p = old.DeepCopy()
	p.Spec.Containers[1].Image = img
	out = append(out, neverRequest{request{op: admission.Update, pod: p, old: old}, false, func(p *corev1.Pod) string { return p.Spec.Containers[1].Image }})
	// UPDATE: kubectl debug adds an ephemeral container.
	old = base()
	p = old.DeepCopy()
	p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: img, ImagePullPolicy: pp}}}
	out = append(out, neverRequest{request{op: admission.Update, subresource: "ephemeralcontainers", pod: p, old: old}, true,
		func(p *corev1.Pod) string { return p.Spec.EphemeralContainers[0].Image }})
	return out
}
