package helm

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/mutator-dev/mutator/test/e2e/cluster"

	"github.com/mutator-dev/mutator/internal/objects"
)

// apiServerTimeout bounds the whole test: start-up, dry runs and the live
// install. A generous bound for a shared, slow machine, not a performance
// assertion.
const apiServerTimeout = 5 * time.Minute

// standIns are the kinds of the optional CRDs the chart renders
// (cert-manager and prometheus-operator), installed as schema-less CRDs:
// the API server then knows the kinds and accepts any content, as in
// test/e2e's standaloneCertManagerCRDs.
var standIns = []struct{ group, kind, scope string }{
	{"cert-manager.io", "Issuer", "Namespaced"},
	{"cert-manager.io", "Certificate", "Namespaced"},
	{"cert-manager.io", "ClusterIssuer", "Cluster"},
	{"monitoring.coreos.com", "ServiceMonitor", "Namespaced"},
}

// apiServer is a started cluster with the clients the test uses.
type apiServer struct {
	c      *cluster.Cluster
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// TestAPIServer: the rendered chart is accepted by a real kube-apiserver
// (server-side dry run: schemas, CEL expressions of the matchConditions and
// the ValidatingAdmissionPolicy, RBAC), its Pod passes the namespace's Pod
// Security level, and the install, upgrade and uninstall of docs/helm.md work,
// keeping the data the mutator's certificates controller writes.
func TestAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), apiServerTimeout)
	defer cancel()
	s := startAPIServer(t, ctx)

	for _, tc := range []struct {
		name, values, namespace string
		refused                 string // key() of the one object the API server must refuse
	}{
		{"defaults", ``, defaultNS, ""},
		{"every option, self-managed certificate", allOn, "platform-a", ""},
		{"every option, cert-manager", allOnCertManager, "platform-b", ""},
		{"namespace not created by the chart", `namespace: {create: false}
networkPolicy: {enabled: true, apiServerCIDRs: [192.0.2.10/32]}`, "platform-c", ""},
		// The dry run does check: a CEL expression that does not compile
		// passes the chart's schema but not the API server.
		{"broken match condition", `webhook: {matchConditions: [{name: broken, expression: "request.("}]}`, "platform-d",
			"admissionregistration.k8s.io/MutatingWebhookConfiguration mutator"},
	} {
		t.Run("server dry run/"+tc.name, func(t *testing.T) {
			objs := render(t, tc.values, tc.namespace)
			s.createNamespace(t, ctx, objs, tc.namespace)
			var applied int
			for _, o := range objs {
				err := s.apply(ctx, o, true)
				switch {
				case objects.Key(o) == tc.refused && err == nil:
					t.Errorf("the API server accepted %s", objects.Key(o))
				case objects.Key(o) == tc.refused:
					t.Logf("refused, as it should be: %v", err)
				case err != nil:
					t.Errorf("server dry run of %s: %v", objects.Key(o), err)
				default:
					applied++
				}
			}
			want := len(objs)
			if tc.refused != "" {
				want--
			}
			if applied != want || applied == 0 {
				t.Errorf("the API server accepted %d of %d objects", applied, want)
			}
			s.checkPodSecurity(t, ctx, objs, tc.namespace)
		})
	}

	// Why docs/helm.md creates the namespace first: Helm creates the
	// --create-namespace namespace itself, then fails creating the chart's.
	t.Run("install --create-namespace is refused", func(t *testing.T) {
		const ns = "helm-create-namespace"
		cfg := helmConfig(t, s, ns)
		inst := action.NewInstall(cfg)
		inst.ReleaseName = "other"
		inst.Namespace = ns
		inst.CreateNamespace = true
		inst.TakeOwnership = true
		inst.Timeout = time.Minute
		// Names of their own and Ignore: whatever this leaves behind
		// must not touch the other subtests.
		vals := values(t, `fullnameOverride: other
webhook: {failurePolicy: Ignore}
namespacePolicy: {enabled: false}`)
		_, err := inst.RunWithContext(ctx, loadChart(t), vals)
		if err == nil || !strings.Contains(err.Error(), `namespaces "`+ns+`" already exists`) {
			t.Errorf("helm install --create-namespace --take-ownership: got %v, want the chart's Namespace to clash with Helm's", err)
		}
	})

	// Last: this installs a real webhook configuration (with failurePolicy
	// Ignore, so that nothing else in this cluster depends on it).
	t.Run("install, upgrade, uninstall", func(t *testing.T) {
		s.installUpgradeUninstall(t, ctx)
	})
}

func startAPIServer(t *testing.T, ctx context.Context) *apiServer {
	t.Helper()
	c, err := cluster.Start(ctx, cluster.Options{Logf: t.Logf})
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(c.Stop)
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	s := &apiServer{
		c:      c,
		dyn:    dyn,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client().Discovery())),
	}
	s.installStandIns(t, ctx)
	return s
}

// installStandIns creates the stand-in CRDs and waits until discovery
// serves their kinds.
func (s *apiServer) installStandIns(t *testing.T, ctx context.Context) {
	t.Helper()
	crds := s.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, si := range standIns {
		plural := strings.ToLower(si.kind) + "s"
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1",
			"kind":       "CustomResourceDefinition",
			"metadata":   map[string]any{"name": plural + "." + si.group},
			"spec": map[string]any{
				"group": si.group,
				"scope": si.scope,
				"names": map[string]any{"kind": si.kind, "listKind": si.kind + "List", "plural": plural, "singular": strings.ToLower(si.kind)},
				"versions": []any{map[string]any{
					"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
				}},
			},
		}}
		if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating the %s stand-in CRD: %v", si.kind, err)
		}
	}
	err := cluster.WaitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		s.mapper.Reset()
		for _, si := range standIns {
			if _, err := s.mapper.RESTMapping(schema.GroupKind{Group: si.group, Kind: si.kind}, "v1"); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("stand-in CRDs not served: %v", err)
	}
}

// createNamespace creates the release namespace for real (a dry run
// creates nothing, so the namespaced objects would have nowhere to go),
// with the chart's Namespace labels when it renders one: the Pod Security
// check needs them.
func (s *apiServer) createNamespace(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if o := find(objs, "Namespace", name); o != nil {
		ns.Labels = o.GetLabels()
	}
	if _, err := s.c.Client().CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// apply is a server-side apply of one object, as `kubectl apply
// --server-side [--dry-run=server]` does it.
func (s *apiServer) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("mapping %s: %w", gvk, err)
	}
	var r dynamic.ResourceInterface = s.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		r = s.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: "test-helm", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := r.Apply(ctx, o.GetName(), o, opts); err != nil {
		return fmt.Errorf("applying: %w", err)
	}
	return nil
}

// checkPodSecurity creates (dry run) a Pod from the Deployment's template
// in the namespace, where the API server's PodSecurity admission judges it
// by the namespace's labels; and, when the chart set the restricted level,
// a Pod that only meets baseline, which must be refused, proving the level
// is enforced.
func (s *apiServer) checkPodSecurity(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured, namespace string) {
	t.Helper()
	dep := mustFind(t, objs, "Deployment", releaseName)
	var spec corev1.PodSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(field(dep, "spec.template.spec").(map[string]any), &spec); err != nil {
		t.Fatalf("decoding the Pod template: %v", err)
	}
	pods := s.c.Client().CoreV1().Pods(namespace)
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "psa-probe"}, Spec: spec}
	if _, err := pods.Create(ctx, pod, dry); err != nil {
		t.Errorf("a Pod of the Deployment's template is refused in %s: %v", namespace, err)
	}
	ns := find(objs, "Namespace", namespace)
	if ns == nil || ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "restricted" {
		return
	}
	// No securityContext at all: fine for baseline, not for restricted.
	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "psa-unrestricted"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "registry.example.com/x"}},
	}}
	if _, err := pods.Create(ctx, bad, dry); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted`) {
		t.Errorf("a Pod without a securityContext in %s: got %v, want Forbidden by Pod Security restricted", namespace, err)
	}
}

// helmConfig is the Helm client configuration for the cluster's admin
// kubeconfig, with releases stored as Secrets in namespace (Helm's default).
func helmConfig(t *testing.T, s *apiServer, namespace string) *action.Configuration {
	t.Helper()
	cfg := new(action.Configuration)
	if err := cfg.Init(kube.GetConfig(s.c.KubeconfigPath(), "", namespace), namespace, "secret", t.Logf); err != nil {
		t.Fatalf("helm configuration: %v", err)
	}
	return cfg
}

// installUpgradeUninstall follows docs/helm.md: create the namespace, `helm
// install --take-ownership` (so the chart adopts it and sets its labels),
// `helm upgrade` with other values, `helm uninstall`.
func (s *apiServer) installUpgradeUninstall(t *testing.T, ctx context.Context) {
	const ns = "helm-live"
	client := s.c.Client()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubectl create namespace %s: %v", ns, err)
	}
	cfg := helmConfig(t, s, ns)
	chrt := loadChart(t)
	live := values(t, `webhook: {failurePolicy: Ignore}`)

	inst := action.NewInstall(cfg)
	inst.ReleaseName = releaseName
	inst.Namespace = ns
	inst.TakeOwnership = true
	inst.Timeout = time.Minute
	rel, err := inst.RunWithContext(ctx, chrt, live)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("release status %s after install", rel.Info.Status)
	}
	nsObj, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"mutator.dev/ignore": "true", "pod-security.kubernetes.io/enforce": "restricted", "app.kubernetes.io/managed-by": "Helm"} {
		if nsObj.Labels[k] != want {
			t.Errorf("after install, namespace label %s = %q, want %q (the chart did not adopt the namespace)", k, nsObj.Labels[k], want)
		}
	}

	// What the mutator's certificates controller writes: the Secret's data
	// and the webhook's caBundle. Neither is in the chart.
	secrets := client.CoreV1().Secrets(ns)
	if _, err := secrets.Patch(ctx, "mutator-certs", types.MergePatchType, []byte(`{"data":{"ca-cert.pem":"Y2E="}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("filling the certificate Secret: %v", err)
	}
	webhooks := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := webhooks.Patch(ctx, releaseName, types.JSONPatchType, []byte(`[{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"Y2E="}]`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("setting caBundle: %v", err)
	}

	up := action.NewUpgrade(cfg)
	up.Namespace = ns
	up.Timeout = time.Minute
	upVals := values(t, `webhook: {failurePolicy: Ignore, timeoutSeconds: 8}
config: {logLevel: debug}`)
	if rel, err = up.RunWithContext(ctx, releaseName, chrt, upVals); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	if rel.Version != 2 || rel.Info.Status != release.StatusDeployed {
		t.Errorf("after upgrade: revision %d, status %s", rel.Version, rel.Info.Status)
	}
	sec, err := secrets.Get(ctx, "mutator-certs", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["ca-cert.pem"]) != "ca" {
		t.Errorf("helm upgrade dropped the certificate Secret's data: %v", sec.Data)
	}
	wh, err := webhooks.Get(ctx, releaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(wh.Webhooks[0].ClientConfig.CABundle) != "ca" {
		t.Errorf("helm upgrade dropped caBundle: %q", wh.Webhooks[0].ClientConfig.CABundle)
	}
	if got := *wh.Webhooks[0].TimeoutSeconds; got != 8 {
		t.Errorf("helm upgrade did not apply timeoutSeconds: %d", got)
	}
	dep, err := client.AppsV1().Deployments(ns).Get(ctx, releaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var level string
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "LOG_LEVEL" {
			level = e.Value
		}
	}
	if level != "debug" {
		t.Errorf("after upgrade LOG_LEVEL = %q", level)
	}

	if _, err := action.NewUninstall(cfg).Run(releaseName); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	// Cluster-scoped objects are gone; the namespace is terminating (no
	// namespace controller runs here to finish deleting it).
	for _, get := range []func() error{
		func() error { _, err := webhooks.Get(ctx, releaseName, metav1.GetOptions{}); return err },
		func() error {
			_, err := client.RbacV1().ClusterRoles().Get(ctx, "mutator-webhook-cabundle", metav1.GetOptions{})
			return err
		},
		func() error {
			_, err := client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "mutator-namespace-opt-out", metav1.GetOptions{})
			return err
		},
	} {
		if err := get(); !apierrors.IsNotFound(err) {
			t.Errorf("after uninstall: %v, want NotFound", err)
		}
	}
	nsObj, err = client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err == nil && nsObj.DeletionTimestamp == nil {
		t.Errorf("namespace %s is not being deleted after uninstall", ns)
	} else if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("getting the namespace after uninstall: %v", err)
	}
}
