package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// repoRoot is the repository's root, from this package's directory.
func repoRoot() string { return filepath.Join("..", "..") }

// TestShippedMatchConditions: the shipped webhook configurations carry the
// same matchConditions (every fixture here registers them).
func TestShippedMatchConditions(t *testing.T) {
	standalone, err := loadShippedMatchConditions()
	if err != nil {
		t.Fatal(err)
	}
	objs := standaloneRender(t, testContext(t), filepath.Join(repoRoot(), "deploy", "knative"))
	var knative admissionregistrationv1.MutatingWebhookConfiguration
	if _, ok := standaloneTyped(t, objs, "MutatingWebhookConfiguration", "mutator", &knative); !ok || len(knative.Webhooks) != 1 {
		t.Fatal("deploy/knative has no MutatingWebhookConfiguration mutator with one webhook")
	}
	if got, want := viewConditions(knative.Webhooks[0].MatchConditions), viewConditions(standalone); got != want {
		t.Errorf("deploy/knative's matchConditions differ from deploy/standalone's:\n%s\nvs\n%s", got, want)
	}
}

func viewConditions(cs []admissionregistrationv1.MatchCondition) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.Name + ": " + strings.Join(strings.Fields(c.Expression), " ") + "\n")
	}
	return b.String()
}

// TestMatchConditionsSkipUselessCalls proves with the API server's own
// counters that requests which cannot change anything are never sent:
// a label-only update and a node's mirror Pod are not, an image update, a
// create and a tenant's Pod with the mirror annotation are.
func TestMatchConditionsSkipUselessCalls(t *testing.T) {
	f := newFixture(t, "match", cfgAll, admissionregistrationv1.Fail)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	pods := kube.Client().CoreV1().Pods(ns)

	calls := func() float64 { return webhookRequests(t, ctx, f.hookName()) }
	step := func(name string, wantCalls float64, do func()) {
		t.Helper()
		before := calls()
		do()
		if got := calls() - before; got != wantCalls {
			t.Errorf("%s: the API server called the webhook %v times, want %v", name, got, wantCalls)
		}
	}
	var pod *corev1.Pod
	step("create", 1, func() {
		pod = createAndGet(t, ns, newPod("match", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}))
	})
	step("label-only update", 0, func() {
		if _, err := pods.Patch(ctx, pod.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"touched":"yes"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	step("image update", 1, func() {
		got, err := pods.Patch(ctx, pod.Name, types.StrategicMergePatchType, []byte(`{"spec":{"containers":[{"name":"app","image":"nginx:1.28"}]}}`), metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := got.Spec.Containers[0].Image; img != mirror+"/nginx:1.28" {
			t.Errorf("image update stored %q, want it rewritten", img)
		}
	})
	tenant, node := mirrorPodClients(t, ctx)
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	step("a node's mirror pod", 0, func() {
		if _, err := node.CoreV1().Pods(ns).Create(ctx, newMirrorPod("nginx:1.27"), dryRun); err != nil {
			t.Fatal(err)
		}
	})
	// The annotation is not an opt-out: anyone else's Pod is sent.
	step("a tenant's mirror-annotated pod", 1, func() {
		got, err := tenant.CoreV1().Pods(ns).Create(ctx, newMirrorPod("nginx:1.27"), dryRun)
		if err != nil {
			t.Fatal(err)
		}
		if img := got.Spec.Containers[0].Image; img != mirror+"/nginx:1.27" {
			t.Errorf("a tenant's mirror-annotated pod came back with image %q, want it rewritten", img)
		}
	})
}

// webhookRequests sums apiserver_admission_webhook_request_total for one
// webhook.
func webhookRequests(t *testing.T, ctx context.Context, hook string) float64 {
	t.Helper()
	text, err := kube.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, s := range webhookSeries(text, "apiserver_admission_webhook_request_total") {
		if s.webhook == hook {
			total += s.value
		}
	}
	return total
}
