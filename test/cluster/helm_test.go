package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/mutator-dev/mutator/test/cluster/node"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

const (
	// helmRelease is the release name docs/helm.md installs with; it makes
	// the chart's fullname "mutator", deploy/standalone's names (and
	// webhookName).
	helmRelease = "mutator"
	// helmNamespace is the release namespace: not deploy/standalone's, so
	// that this test never waits for, or races with, the deletion of the
	// other's namespace.
	helmNamespace = "mutator-helm"
)

// helmValues are the values equivalent to the overlay of
// TestStandaloneDeployment: the image in the mirror, the pull secret the
// mutator's own Pods need, and this cluster's settings. The rest are the
// chart's defaults (two replicas, self-managed certificates, PDB,
// restricted Pod Security on the namespace).
var helmValues = fmt.Sprintf(`image:
  repository: %s
  tag: test
imagePullSecrets:
  - name: %s
config:
  registry: %s
  imagePullSecret: %s
  forceImagePullPolicy: true
  imagePullPolicyToForce: Always
`, standaloneImage, pullSecret, mirrorRegistry, pullSecret)

// TestHelmDeployment installs the Helm chart with Helm's SDK as users do
// (helm install mutator deploy/helm/mutator --create-namespace
// --take-ownership), in place of the mutator process, and checks that two
// replicas get Ready with the certificates of their own certificates
// controller and that the API server reaches them through their Service;
// then uninstalls it. Rollouts and killed replicas are
// TestStandaloneDeployment's: test/helm proves both render the same
// Deployment.
func TestHelmDeployment(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()

	root, err := node.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart, err := loader.Load(filepath.Join(root, "deploy", "helm", "mutator"))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	vals, err := chartutil.ReadValues([]byte(helmValues))
	if err != nil {
		t.Fatalf("parsing the values: %v", err)
	}
	cfg, err := e.helmConfig(helmNamespace)
	if err != nil {
		t.Fatal(err)
	}
	// The namespace is created first, with the pull secret, and the chart
	// takes it over (its Pod Security and opt-out labels).
	e.replaceProcessWebhook(t, helmNamespace, func(ctx context.Context) error {
		// helm uninstall, as docs/helm.md says (it deletes the namespace
		// too). Not with Wait: that waits for the namespace to go, and
		// the release's Secrets with it, so that Helm's purge of them
		// fails ("release: not found").
		un := action.NewUninstall(cfg)
		un.IgnoreNotFound = true
		res, err := un.Run(helmRelease)
		if err != nil {
			return fmt.Errorf("helm uninstall: %w", err)
		}
		if res == nil { // never installed: the namespace is still ours
			err := client.CoreV1().Namespaces().Delete(ctx, helmNamespace, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting %s: %w", helmNamespace, err)
			}
		}
		// Until the replicas are gone: none may touch the webhook
		// configuration of the process once it is back.
		err = cluster.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			_, err := client.CoreV1().Namespaces().Get(ctx, helmNamespace, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			return fmt.Errorf("waiting for %s to be deleted: %w", helmNamespace, err)
		}
		return nil
	})

	began := time.Now()
	inst := action.NewInstall(cfg)
	inst.ReleaseName = helmRelease
	inst.Namespace = helmNamespace
	inst.CreateNamespace = true
	inst.TakeOwnership = true
	inst.Timeout = time.Minute
	rel, err := inst.RunWithContext(ctx, chart, vals.AsMap())
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	t.Logf("helm install: release %s revision %d %s", rel.Name, rel.Version, rel.Info.Status)
	e.waitMutatorReplicas(t, helmNamespace)
	t.Logf("2 mutator replicas ready %s after helm install", time.Since(began).Round(time.Millisecond))

	nsObj, err := client.CoreV1().Namespaces().Get(ctx, helmNamespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l := nsObj.Labels["pod-security.kubernetes.io/enforce"]; l != "restricted" {
		t.Errorf("namespace %s enforces Pod Security %q, want restricted", helmNamespace, l)
	}
	if _, err := client.PolicyV1().PodDisruptionBudgets(helmNamespace).Get(ctx, "mutator", metav1.GetOptions{}); err != nil {
		t.Errorf("the chart's PodDisruptionBudget: %v", err)
	}
	e.checkServedThroughService(t, helmNamespace, "helm")
}

// helmConfig is Helm's action configuration for the admin kubeconfig, with
// releases in Secrets of namespace (Helm's default driver).
func (e *env) helmConfig(namespace string) (*action.Configuration, error) {
	kubeconfig := e.kube.Kubeconfig()
	cacheDir := filepath.Join(e.kube.Dir(), "helm-cache")
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	flags.Namespace = &namespace
	flags.CacheDir = &cacheDir
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, namespace, "secret", func(string, ...any) {}); err != nil {
		return nil, fmt.Errorf("initialising Helm: %w", err)
	}
	return cfg, nil
}
