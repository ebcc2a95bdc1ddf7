package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mutator-dev/mutator/function/oracle"
)

// The provenance guarantee, shown by what the API server stores: each of
// the ways past the webhook found in review is tried through the real
// kube-apiserver and must end with a stored Pod that pulls only from the
// mirror, or with the Pod refused.

// checkPulledFromMirror fails unless every image the stored Pod pulls is
// under the mirror, judged by the runtime's parser.
func checkPulledFromMirror(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	policy := oracle.Policy{Registry: mirror, Ignored: []string{"registry.k8s.io"}}
	for _, p := range oracle.PodImages(&pod.Spec) {
		if !policy.Permits(p.Image) {
			t.Errorf("stored pod %s/%s pulls %q (%s) from outside the mirror", pod.Namespace, pod.Name, p.Image, p.Where)
		}
	}
}

// TestProvenanceImageVolume: image volumes pull images (ImageVolume is GA
// and locked on in 1.36); their reference is rewritten and their pull
// policy forced like a container's.
func TestProvenanceImageVolume(t *testing.T) {
	f := allFixture(t)
	ns := namespace(t, f.scope())
	const ext = "ghcr.io/cloudnative-pg/postgis-extension:3.5"
	got := createAndGet(t, ns, newPod("image-volume", corev1.PodSpec{
		Containers: []corev1.Container{c("db", "ghcr.io/cloudnative-pg/postgresql:17", "")},
		Volumes: []corev1.Volume{{Name: "ext", VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: ext, PullPolicy: corev1.PullAlways}}}},
	}))
	v := got.Spec.Volumes[0].Image
	if v == nil || v.Reference != mirror+"/cloudnative-pg/postgis-extension:3.5" || v.PullPolicy != ifNotPresent {
		t.Errorf("stored image volume %+v, want reference %s/cloudnative-pg/postgis-extension:3.5 and pull policy IfNotPresent", v, mirror)
	}
	checkPulledFromMirror(t, got)
}

// TestProvenanceUpperCaseHost: a first component with an upper-case letter
// is a registry host to the runtime, so it is replaced like any host, on
// create and when a running Pod's image is patched.
func TestProvenanceUpperCaseHost(t *testing.T) {
	f := allFixture(t)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	got := createAndGet(t, ns, newPod("upper", corev1.PodSpec{
		InitContainers: []corev1.Container{c("init", "LOCALHOST/evil:1", "")},
		Containers:     []corev1.Container{c("app", "Evil/payload:1", ""), c("side", "LocalHost/x:1", "")},
	}))
	checkPod(t, "created", got, podView{
		Init:    []ctr{{"init", mirror + "/evil:1", ifNotPresent}},
		Regular: []ctr{{"app", mirror + "/payload:1", ifNotPresent}, {"side", mirror + "/x:1", ifNotPresent}},
		Secrets: []string{"regcred"},
	})
	checkPulledFromMirror(t, got)

	// kubectl patch of a container image, as an attacker with update on
	// pods would do it.
	patch := fmt.Appendf(nil, `{"spec":{"containers":[{"name":"app","image":%q}]}}`, "EVIL/x:2")
	patched, err := kube.Client().CoreV1().Pods(ns).Patch(ctx, got.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("patching the image: %v", err)
	}
	stored, err := kube.Client().CoreV1().Pods(ns).Get(ctx, patched.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := stored.Spec.Containers[0].Image; img != mirror+"/x:2" {
		t.Errorf("after the patch the stored image is %q, want %s/x:2", img, mirror)
	}
	checkPulledFromMirror(t, stored)
}

// TestProvenanceOverlongName: when the rewrite of a reference is not a
// valid reference (its path pushed past 255 characters), the Pod is refused
// with a message naming the container, instead of being stored with the
// original, pullable reference.
func TestProvenanceOverlongName(t *testing.T) {
	f := allFixture(t)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	long := "evil.example.com/" + strings.Repeat("a", 250) + ":1"
	if _, ok := oracle.Name(long); !ok {
		t.Fatalf("precondition: %q must be pullable", long)
	}
	cases := []struct {
		name string
		spec corev1.PodSpec
		want string // in the denial
	}{
		{"container", corev1.PodSpec{Containers: []corev1.Container{c("app", long, "")}}, `container "app"`},
		{"image volume", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx", "")},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: long}}}}},
			`image volume "data"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := newPod("overlong-"+strings.ReplaceAll(tc.name, " ", "-"), tc.spec)
			pod.GenerateName, pod.Name = "", pod.GenerateName+"x"
			_, err := kube.Client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			if err == nil {
				t.Fatal("the pod was admitted")
			}
			msg := err.Error()
			for _, want := range []string{f.hookName(), "denied the request", tc.want, "cannot be pulled from an allowed registry", "255 characters"} {
				if !strings.Contains(msg, want) {
					t.Errorf("denial %q lacks %q", msg, want)
				}
			}
			if !apierrors.IsForbidden(err) {
				t.Errorf("denial is not 403 Forbidden: %v", err)
			}
			t.Logf("denial: %s", msg)
			if _, err := kube.Client().CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the refused pod is stored (get: %v)", err)
			}
		})
	}
}

// TestNamespaceOptOutPolicy applies the shipped ValidatingAdmissionPolicy
// and checks who may exempt a namespace: a user who may only create
// namespaces (and Pods) can neither create one already labelled
// mutator.dev/ignore=true, nor label one later, nor create a namespace the
// webhook exempts by name; a member of mutator:namespace-admins can.
func TestNamespaceOptOutPolicy(t *testing.T) {
	ctx := testContext(t)
	applyNamespaceGuard(t, ctx, "", "-k", filepath.Join(standaloneRepoRoot(t), "deploy", "namespace-policy"))
	tenant := userClient(t, "tenant-alice", "tenants")
	admin := userClient(t, "platform-bob", "mutator:namespace-admins")

	labelled := func(prefix string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix, Labels: map[string]string{ignoreLabel: "true"}}}
	}

	t.Run("tenant creates a labelled namespace", func(t *testing.T) {
		_, err := tenant.CoreV1().Namespaces().Create(ctx, labelled("optout-tenant-"), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), guardRefusal) {
			t.Fatalf("create: %v, want the policy's refusal", err)
		}
		t.Logf("refusal: %v", err)
	})
	t.Run("tenant labels a namespace later", func(t *testing.T) {
		ns, err := tenant.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "optout-later-"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("a plain namespace must be allowed: %v", err)
		}
		t.Cleanup(func() {
			_ = kube.Client().CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		})
		patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:"true"}}}`, ignoreLabel)
		if _, err := tenant.CoreV1().Namespaces().Patch(ctx, ns.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err == nil {
			t.Fatal("the tenant labelled the namespace")
		}
		got, err := kube.Client().CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
		if err != nil || got.Labels[ignoreLabel] != "" {
			t.Fatalf("stored namespace %v (%v) carries the opt-out label", got.Labels, err)
		}
	})
	t.Run("tenant creates a namespace the webhook exempts by name", func(t *testing.T) {
		_, err := tenant.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "exempts by name") {
			t.Fatalf("create istio-system: %v, want the policy's refusal", err)
		}
	})
	t.Run("administrator creates a labelled namespace", func(t *testing.T) {
		ns, err := admin.CoreV1().Namespaces().Create(ctx, labelled("optout-admin-"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create by a member of mutator:namespace-admins: %v", err)
		}
		t.Cleanup(func() {
			_ = kube.Client().CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		})
		// Keeping the label on an ordinary update needs no administrator.
		patch := []byte(`{"metadata":{"annotations":{"owner":"team-a"}}}`)
		if _, err := tenant.CoreV1().Namespaces().Patch(ctx, ns.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("a tenant's update that keeps the label: %v", err)
		}
	})
}

// grantNamespaceCreate lets every authenticated user create, update and
// patch namespaces, for TestNamespaceOptOutPolicy; removed when it ends.
func grantNamespaceCreate(t *testing.T, ctx context.Context) {
	t.Helper()
	rbac := kube.Client().RbacV1()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-namespace-creator"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"create", "get", "update", "patch"}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-namespace-creator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:authenticated"}},
	}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbac.ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
}

// userClient returns a client authenticated by a client certificate as
// user in groups.
func userClient(t *testing.T, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	certPEM, keyPEM, err := kube.CA().IssueClient(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: kube.URL(), TLSClientConfig: rest.TLSClientConfig{CAData: kube.CA().CertPEM(), CertData: certPEM, KeyData: keyPEM}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}
