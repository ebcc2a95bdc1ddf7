package e2e

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// mirrorAnnotation marks the mirror Pod the kubelet creates for a static
// Pod.
const mirrorAnnotation = "kubernetes.io/config.mirror"

// podCreatorGroup is the group grantPodCreate lets create Pods.
const podCreatorGroup = "e2e:pod-creators"

// grantPodCreate lets members of podCreatorGroup create and get Pods in
// every namespace until the test ends.
func grantPodCreate(t *testing.T, ctx context.Context) {
	t.Helper()
	grant(t, ctx, "e2e-pod-creator", rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: podCreatorGroup},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create", "get"}})
}

// mirrorPodClients are a tenant and a node (as the kubelet authenticates),
// both allowed to create Pods. The test API server runs RBAC only, without
// the Node authorizer and NodeRestriction, so the node's rights come from
// the same binding: what is shown is the condition on the user name.
func mirrorPodClients(t *testing.T, ctx context.Context) (tenant, node kubernetes.Interface) {
	t.Helper()
	grantPodCreate(t, ctx)
	return impersonating(t, "tenant-mallory", "tenants", podCreatorGroup),
		impersonating(t, "system:node:node-a", "system:nodes", podCreatorGroup)
}

// newMirrorPod is a Pod that claims to be a mirror Pod: the annotation and
// a node name, as the API server's validation requires of one.
func newMirrorPod(image string) *corev1.Pod {
	pod := newPod("mirror", corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{c("app", image, "")}})
	pod.Annotations = map[string]string{mirrorAnnotation: "x"}
	return pod
}

// createMirrorPod creates a mirror-annotated Pod in ns as client and
// returns it as stored.
func createMirrorPod(t *testing.T, ctx context.Context, client kubernetes.Interface, ns string) *corev1.Pod {
	t.Helper()
	created, err := client.CoreV1().Pods(ns).Create(ctx, newMirrorPod("nginx:1.27"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a mirror-annotated pod in %s: %v", ns, err)
	}
	got, err := kube.Client().CoreV1().Pods(ns).Get(ctx, created.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestMirrorPodAnnotationIsNoOptOut: the mirror-Pod annotation skips the
// mutator only on a node's request. A tenant's Pod that carries it (with a
// node name, as a mirror Pod must) is mutated, by the webhook with the
// shipped matchConditions and by the policies `mutator policy` prints; the
// same Pod created as system:node:node-a is left as its manifest says.
func TestMirrorPodAnnotationIsNoOptOut(t *testing.T) {
	m := setUpParity(t, "mirror-pod", cfgAll)
	ctx := testContext(t)
	tenant, node := mirrorPodClients(t, ctx)
	for _, mode := range []struct{ name, ns string }{{"webhook", m.webhookNS}, {"policy", m.polNS}} {
		t.Run(mode.name+"/tenant", func(t *testing.T) {
			got := createMirrorPod(t, ctx, tenant, mode.ns)
			if img := got.Spec.Containers[0].Image; img != mirror+"/nginx:1.27" {
				t.Errorf("a tenant's mirror-annotated pod was stored with image %q, want %s/nginx:1.27", img, mirror)
			}
			checkPulledFromMirror(t, got)
		})
		t.Run(mode.name+"/node", func(t *testing.T) {
			got := createMirrorPod(t, ctx, node, mode.ns)
			if img := got.Spec.Containers[0].Image; img != "nginx:1.27" {
				t.Errorf("a node's mirror pod was stored with image %q, want it as written (nginx:1.27)", img)
			}
			if len(got.Spec.ImagePullSecrets) > 0 {
				t.Errorf("a node's mirror pod got pull secrets %v", got.Spec.ImagePullSecrets)
			}
		})
	}
}
