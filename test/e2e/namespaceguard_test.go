package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// The namespace guard (the ValidatingAdmissionPolicy
// mutator-namespace-opt-out), through the real API server: every way of
// changing a namespace's labels, and every name the mutator exempts.

// metadataNameLabel is the label the webhook's namespaceSelector exempts
// names by; the API server sets it to the namespace's name.
const metadataNameLabel = "kubernetes.io/metadata.name"

// guardRefusal is in the guard's refusal of the opt-out label.
const guardRefusal = "may label a namespace mutator.dev/ignore=true"

// applyNamespaceGuard applies a namespace guard with kubectl (args: "-k
// DIR" or "-f FILE"), removes it when the test ends, and waits until the
// API server enforces it: a tenant's dry-run create of a namespace named
// probe (or, when probe is "", of a labelled one) is refused.
func applyNamespaceGuard(t *testing.T, ctx context.Context, probe string, args ...string) {
	t.Helper()
	if _, _, err := kube.Kubectl(ctx, append([]string{"apply"}, args...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, _, err := kube.Kubectl(context.Background(), append(append([]string{"delete"}, args...), "--ignore-not-found")...); err != nil {
			t.Errorf("removing the namespace guard: %v", err)
		}
	})
	grantNamespaceCreate(t, ctx)
	prober := userClient(t, "guard-prober", "tenants")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "guard-probe-", Labels: map[string]string{ignoreLabel: "true"}}}
	if probe != "" {
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: probe}}
	}
	// A policy takes effect within a second or so of its creation.
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	err := cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		_, err := prober.CoreV1().Namespaces().Create(ctx, ns, dryRun)
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), nil
	})
	if err != nil {
		t.Fatalf("the namespace guard never refused the tenant: %v", err)
	}
}

// grantRules gives user the rules, cluster-wide, until the test ends.
func grantRules(t *testing.T, ctx context.Context, name, user string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	grant(t, ctx, name, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}, rules...)
}

// grant binds a ClusterRole of the rules, both called name, to subject
// until the test ends.
func grant(t *testing.T, ctx context.Context, name string, subject rbacv1.Subject, rules ...rbacv1.PolicyRule) {
	t.Helper()
	rbac := kube.Client().RbacV1()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{subject},
	}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rbac.ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// impersonating returns an admin client that acts as user in groups.
func impersonating(t *testing.T, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg := kube.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// namespaceSubresources lists the subresources of namespaces the API
// server serves with the update verb, from its discovery document.
func namespaceSubresources(t *testing.T) []string {
	t.Helper()
	list, err := kube.Client().Discovery().ServerResourcesForGroupVersion("v1")
	if err != nil {
		t.Fatal(err)
	}
	var subs []string
	for _, r := range list.APIResources {
		if sub, ok := strings.CutPrefix(r.Name, "namespaces/"); ok && slices.Contains(r.Verbs, "update") {
			subs = append(subs, sub)
		}
	}
	return subs
}

// putNamespace writes ns through the subresource sub ("" for the
// namespace itself) with client and returns what the API server stored.
func putNamespace(ctx context.Context, client kubernetes.Interface, ns *corev1.Namespace, sub string) (*corev1.Namespace, error) {
	req := client.CoreV1().RESTClient().Put().Resource("namespaces").Name(ns.Name)
	if sub != "" {
		req = req.SubResource(sub)
	}
	out := &corev1.Namespace{}
	err := req.Body(ns).Do(ctx).Into(out)
	return out, err
}

// TestNamespaceOptOutSubresources: the subresources of namespaces
// (namespaces/status, namespaces/finalize: whatever discovery lists with
// update) write metadata.labels too. A tenant whose only right is update on
// one of them can change a label through it, but is refused the opt-out
// label by the shipped guard; and no write, through any path, can make
// kubernetes.io/metadata.name (the label the webhook's selector exempts
// names by) anything but the namespace's name.
func TestNamespaceOptOutSubresources(t *testing.T) {
	ctx := testContext(t)
	applyNamespaceGuard(t, ctx, "", "-k", filepath.Join(standaloneRepoRoot(t), "deploy", "namespace-policy"))
	subs := namespaceSubresources(t)
	for _, want := range []string{"status", "finalize"} {
		if !slices.Contains(subs, want) {
			t.Errorf("discovery lists no namespaces/%s with update (lists %v)", want, subs)
		}
	}
	t.Logf("namespaces subresources with update: %v", subs)
	admin := kube.Client().CoreV1().Namespaces()
	fresh := func(t *testing.T) *corev1.Namespace {
		t.Helper()
		ns, err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "optout-sub-"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}
	withLabel := func(ns *corev1.Namespace, k, v string) *corev1.Namespace {
		ns = ns.DeepCopy()
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[k] = v
		return ns
	}
	for _, sub := range subs {
		t.Run(sub, func(t *testing.T) {
			user := "tenant-" + sub + "-writer"
			grantRules(t, ctx, "e2e-namespaces-"+sub+"-writer", user, rbacv1.PolicyRule{
				APIGroups: []string{""}, Resources: []string{"namespaces/" + sub}, Verbs: []string{"update", "patch"},
			})
			tenant := userClient(t, user, "tenants")

			// The control: the subresource writes labels, and this
			// tenant's RBAC is enough to use it.
			ns := fresh(t)
			stored, err := putNamespace(ctx, tenant, withLabel(ns, "team", "a"), sub)
			if err != nil {
				t.Fatalf("a label other than the opt-out through namespaces/%s: %v", sub, err)
			}
			if stored.Labels["team"] != "a" {
				t.Fatalf("namespaces/%s did not store the label (labels %v): the control proves nothing", sub, stored.Labels)
			}

			// The opt-out label through the same path is refused.
			_, err = putNamespace(ctx, tenant, withLabel(stored, ignoreLabel, "true"), sub)
			if err == nil || !strings.Contains(err.Error(), guardRefusal) {
				t.Fatalf("the opt-out label through namespaces/%s: %v, want the guard's refusal", sub, err)
			}
			t.Logf("refusal: %v", err)
			got, err := admin.Get(ctx, ns.Name, metav1.GetOptions{})
			if err != nil || got.Labels[ignoreLabel] != "" {
				t.Fatalf("stored namespace %v (%v) carries the opt-out label", got.Labels, err)
			}

			// The name label cannot be forged, not even by an admin.
			forged, err := putNamespace(ctx, kube.Client(), withLabel(got, metadataNameLabel, "kube-system"), sub)
			if err == nil && forged.Labels[metadataNameLabel] != ns.Name {
				t.Errorf("namespaces/%s stored %s=%q on namespace %s", sub, metadataNameLabel, forged.Labels[metadataNameLabel], ns.Name)
			}
		})
	}
	t.Run("name label through the namespace itself", func(t *testing.T) {
		ns := fresh(t)
		forged, err := putNamespace(ctx, kube.Client(), withLabel(ns, metadataNameLabel, "kube-system"), "")
		if err == nil && forged.Labels[metadataNameLabel] != ns.Name {
			t.Errorf("update stored %s=%q on namespace %s", metadataNameLabel, forged.Labels[metadataNameLabel], ns.Name)
		}
		created, err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			GenerateName: "optout-forged-", Labels: map[string]string{metadataNameLabel: "kube-system"},
		}}, metav1.CreateOptions{})
		if err == nil && created.Labels[metadataNameLabel] != created.Name {
			t.Errorf("create stored %s=%q on namespace %s", metadataNameLabel, created.Labels[metadataNameLabel], created.Name)
		}
	})
}

// runMutatorCommand runs the mutator binary with args and cfg as its whole
// environment.
func runMutatorCommand(t *testing.T, cfg env, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runMutatorBinary(testContext(t), cfg, args...)
}

// TestNamespaceGuardExcludedNames: the guard `mutator namespace-policy`
// prints protects every name of EXCLUDE_NAMESPACES as well as the names the
// shipped webhook configurations exempt: with EXCLUDE_NAMESPACES=team-x, a
// tenant allowed to create namespaces is refused team-x, and a member of an
// administrator group creates it.
func TestNamespaceGuardExcludedNames(t *testing.T) {
	ctx := testContext(t)
	const excluded = "team-x"
	cfg := env{"REGISTRY": mirror, "EXCLUDE_NAMESPACES": "kube-system," + excluded}
	stdout, stderr, err := runMutatorCommand(t, cfg, "namespace-policy")
	if err != nil {
		t.Fatalf("mutator namespace-policy: %v\n%s", err, stderr)
	}
	file := filepath.Join(t.TempDir(), "guard.yaml")
	if err := os.WriteFile(file, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	applyNamespaceGuard(t, ctx, excluded, "-f", file)
	tenant := userClient(t, "tenant-dave", "tenants")
	admin := userClient(t, "platform-erin", "mutator:namespace-admins")
	create := func(client kubernetes.Interface, name string) error {
		_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		return err
	}

	t.Run("tenant creates the excluded name", func(t *testing.T) {
		err := create(tenant, excluded)
		if err == nil || !strings.Contains(err.Error(), "exempts by name") {
			t.Fatalf("create %s: %v, want the guard's refusal", excluded, err)
		}
		t.Logf("refusal: %v", err)
	})
	t.Run("tenant creates a name the webhook configurations exempt", func(t *testing.T) {
		if err := create(tenant, "knative-serving"); err == nil || !strings.Contains(err.Error(), "exempts by name") {
			t.Fatalf("create knative-serving: %v, want the guard's refusal", err)
		}
	})
	t.Run("tenant creates a labelled namespace", func(t *testing.T) {
		_, err := tenant.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			GenerateName: "guard-labelled-", Labels: map[string]string{ignoreLabel: "true"},
		}}, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), guardRefusal) {
			t.Fatalf("create: %v, want the guard's refusal", err)
		}
	})
	t.Run("tenant creates an ordinary namespace", func(t *testing.T) {
		if err := create(tenant, fmt.Sprintf("%s-not-excluded", excluded)); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("an ordinary name must be allowed: %v", err)
		}
	})
	t.Run("administrator creates the excluded name", func(t *testing.T) {
		if err := create(admin, excluded); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create %s by a member of mutator:namespace-admins: %v", excluded, err)
		}
	})
}
