package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// The image guard (`mutator policy --guard`, shipped for the Knative
// configuration as deploy/knative/guard.yaml) with the webhook it guards,
// on the real API server: while the webhook answers it changes nothing the
// webhook decides, and while the webhook is down it refuses, with the
// reason, every Pod write that would pull from a registry the
// configuration does not allow, whatever the webhook's failurePolicy.

// guardScope is the policyScopeLabel value of the guard's bindings here.
const guardScope = "image-guard"

// knativeEnv is the configuration of deploy/knative/service.yaml, without
// the server settings the fixture sets itself (ports, log level).
func knativeEnv(t *testing.T) env {
	t.Helper()
	path := filepath.Join(repoRoot(), "deploy", "knative", "service.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var svc struct {
		Spec struct {
			Template struct {
				Spec corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &svc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := env{}
	for _, e := range svc.Spec.Template.Spec.Containers[0].Env {
		switch e.Name {
		case "LISTEN_ADDRESS", "PORT", "METRICS_PORT", "LOG_LEVEL":
		default:
			out[e.Name] = e.Value
		}
	}
	if out["REGISTRY"] != mirror {
		t.Fatalf("%s: REGISTRY %q; this test expects %s", path, out["REGISTRY"], mirror)
	}
	return out
}

// applyShippedGuard applies deploy/knative/guard.yaml, its binding scoped
// to policyScopeLabel=guardScope, and waits until it refuses.
func applyShippedGuard(t *testing.T, ctx context.Context) {
	t.Helper()
	shipped, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "knative", "guard.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	applyPolicies(t, ctx, guardScope, string(shipped))
	waitGuardActive(t, ctx, guardScope)
}

// TestPolicyGuard runs the webhook with the Knative Service's configuration
// and failurePolicy Ignore, the shipped guard in one of its namespaces and
// not in another:
//
//   - webhook up: the parity corpus (creates, updates, ephemeral
//     containers) is stored alike with and without the guard, rewritten;
//   - webhook down: the guard refuses every create, image update and
//     ephemeral container that would pull from elsewhere, naming each
//     image and what it would have been rewritten to, and saying why,
//     while the namespace without it admits them unrewritten; Pods already
//     under allowed registries, label-only updates and a node's mirror Pods
//     pass, as the webhook would have left them;
//   - webhook back: the refused create succeeds, rewritten.
//
// And with failurePolicy Fail, a Pod the webhook cannot answer for is
// refused before the guard is even asked.
func TestPolicyGuard(t *testing.T) {
	ctx := testContext(t)
	cfg := knativeEnv(t)
	applyShippedGuard(t, ctx)
	f := newFixture(t, "image-guard", cfg, admissionregistrationv1.Ignore)
	guarded := map[string]string{policyScopeLabel: guardScope}
	m := &parityModes{
		name: "image-guard", webhook: f.scope(), policy: mergeLabels(f.scope(), guarded), hasImages: true,
	}
	m.webhookNS, m.polNS = namespace(t, m.webhook), namespace(t, m.policy)

	// Created while the webhook is up, updated while it is down.
	spec := corev1.PodSpec{
		InitContainers: []corev1.Container{c("init", "busybox:1.36", "")},
		Containers:     []corev1.Container{c("app", "nginx:1.27", ""), c("queue", "gcr.io/knative-releases/knative.dev/serving/cmd/queue:v1.18", "")},
	}
	upPod := createAndGet(t, m.polNS, newPod("up", spec))

	t.Run("webhook up", func(t *testing.T) {
		if got := upPod.Spec.Containers[0].Image; got != mirror+"/nginx:1.27" {
			t.Errorf("with the webhook up and the guard, nginx:1.27 was stored as %q", got)
		}
		tally := &parityTally{}
		t.Run("create", func(t *testing.T) {
			for _, tc := range parityPods() {
				compareCreate(t, m, tally, tc.name, tc.spec)
			}
		})
		t.Run("update", func(t *testing.T) { compareUpdate(t, m, tally) })
		t.Run("ephemeral", func(t *testing.T) { compareEphemeral(t, m, tally) })
		t.Logf("webhook alone vs webhook + guard: %d cases stored alike (%d refused by both), %d differ", tally.equal, tally.denied, len(tally.differ))
	})

	if err := f.mutator.stopClean(); err != nil {
		t.Fatal(err)
	}
	t.Run("webhook down", func(t *testing.T) {
		pods := kube.Client().CoreV1().Pods(m.polNS)
		refusal := func(t *testing.T, what string, err error, want ...string) {
			t.Helper()
			if err == nil {
				t.Fatalf("%s: admitted with the webhook down, want the guard's refusal", what)
			}
			if !apierrors.IsForbidden(err) {
				t.Errorf("%s: %v, want 403 Forbidden", what, err)
			}
			for _, w := range append(want, "mutator-image-guard") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: the refusal does not say %q:\n%v", what, w, err)
				}
			}
		}
		unrewritten := func(where, image string) string {
			return fmt.Sprintf("%s: image %q is not from a registry the mutator allows (it would pull %q)", where, image, mirror+"/"+image)
		}
		const cold = "it may be cold, down or unreachable, and the Pod's controller will retry"

		_, err := pods.Create(ctx, newPod("down", spec), metav1.CreateOptions{})
		refusal(t, "create", err, unrewritten(`init container "init"`, "busybox:1.36"), unrewritten(`container "app"`, "nginx:1.27"), cold)
		t.Logf("with the webhook down, the guard refuses the create: %v", err)
		if strings.Contains(fmt.Sprint(err), "queue") {
			t.Errorf("the refusal names the queue-proxy image, which is under an allowed registry: %v", err)
		}

		// Without the guard, the same Pod is stored as written.
		got := createAndGet(t, m.webhookNS, newPod("down", spec))
		if got.Spec.Containers[0].Image != "nginx:1.27" {
			t.Fatalf("without the guard, with the webhook down and failurePolicy Ignore, nginx:1.27 was stored as %q", got.Spec.Containers[0].Image)
		}

		longer := "evil.example.com/" + strings.Repeat("a", 250) + ":1"
		_, err = pods.Create(ctx, newPod("down", corev1.PodSpec{Containers: []corev1.Container{c("app", longer, "")}}), metav1.CreateOptions{})
		refusal(t, "overlong rewrite", err, `container "app": image "evil.example.com/aaaa`, "cannot be pulled from an allowed registry: its rewrite is not a valid reference")

		// What the webhook would leave as written passes.
		allowed := corev1.PodSpec{Containers: []corev1.Container{
			c("app", mirror+"/nginx:1.27", ""), c("ignored", "registry.example.com/other/x:1", ""), c("queue", "gcr.io/knative-releases/q:1", ""),
			c("unparsable", "Not A Valid/Image", ""),
		}}
		if _, err := pods.Create(ctx, newPod("down", allowed), metav1.CreateOptions{}); err != nil {
			t.Errorf("a pod of images the webhook leaves as written was refused with the webhook down: %v", err)
		}

		// Updates of the Pod created while the webhook was up.
		if _, err := pods.Patch(ctx, upPod.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{}); err != nil {
			t.Errorf("a label-only update was refused with the webhook down: %v", err)
		}
		_, err = pods.Patch(ctx, upPod.Name, types.StrategicMergePatchType, []byte(`{"spec":{"containers":[{"name":"app","image":"nginx:1.28"}]}}`), metav1.PatchOptions{})
		refusal(t, "image update", err, unrewritten(`container "app"`, "nginx:1.28"), cold)
		cur, err := pods.Get(ctx, upPod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "busybox:1.36"},
		})
		_, err = pods.UpdateEphemeralContainers(ctx, upPod.Name, cur, metav1.UpdateOptions{})
		refusal(t, "ephemeral container", err, unrewritten(`ephemeral container "debug"`, "busybox:1.36"))

		// A node's mirror Pod is left as its manifest says by the webhook,
		// and by the guard; a tenant's Pod with the annotation is not one.
		tenant, node := mirrorPodClients(t, ctx)
		if _, err := node.CoreV1().Pods(m.polNS).Create(ctx, newMirrorPod("nginx:1.27"), metav1.CreateOptions{}); err != nil {
			t.Errorf("a node's mirror pod was refused: %v", err)
		}
		_, err = tenant.CoreV1().Pods(m.polNS).Create(ctx, newMirrorPod("nginx:1.27"), metav1.CreateOptions{})
		refusal(t, "a tenant's mirror-annotated pod", err, unrewritten(`container "app"`, "nginx:1.27"))
	})

	restarted, err := f.mutator.restart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.mutator = restarted
	if err := f.waitActive(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("webhook back", func(t *testing.T) {
		got := createAndGet(t, m.polNS, newPod("back", spec))
		for i, want := range []string{mirror + "/nginx:1.27", "gcr.io/knative-releases/knative.dev/serving/cmd/queue:v1.18"} {
			if img := got.Spec.Containers[i].Image; img != want {
				t.Errorf("container %s stored with image %q once the webhook is back, want %q", got.Spec.Containers[i].Name, img, want)
			}
		}
	})

	t.Run("failurePolicy Fail", func(t *testing.T) {
		ff := newFixture(t, "image-guard-fail", cfg, admissionregistrationv1.Fail)
		ns := namespace(t, ff.scope(), guarded)
		if err := ff.mutator.stopClean(); err != nil {
			t.Fatal(err)
		}
		_, err := kube.Client().CoreV1().Pods(ns).Create(ctx, newPod("down", spec), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Errorf("with failurePolicy Fail and the webhook down: %v, want the API server's refusal for the webhook", err)
		}
		// Running again, for the fixture's cleanup to stop.
		restarted, err := ff.mutator.restart(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ff.mutator = restarted
	})
}

// mergeLabels is the union of label sets.
func mergeLabels(sets ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, s := range sets {
		for k, v := range s {
			out[k] = v
		}
	}
	return out
}
