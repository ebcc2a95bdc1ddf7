package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/test/cluster/image"
	"github.com/mutator-dev/mutator/test/cluster/node"
)

const (
	// standaloneNamespace is where deploy/standalone puts the mutator.
	standaloneNamespace = "mutator-system"
	// standaloneImage is the mutator's image for the in-cluster
	// Deployment, in the mirror (the Pods of mutator-system are not
	// mutated, so their image must name the mirror itself).
	standaloneImage = mirrorRegistry + "/mutator-dev/mutator"
	// webhookName is the shipped configuration's name, which the
	// in-cluster mutator keeps the caBundle of.
	webhookName = "mutator"
	// createWorkers send dry-run Pod creates while the replicas churn.
	createWorkers = 2
)

// overlay deploys deploy/standalone as its kustomization.yaml tells users
// to (an image override), plus this cluster's settings and the pull secret
// the mutator's own Pods need to pull from the mirror.
const overlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: ghcr.io/mutator-dev/mutator
    newName: %s
    newTag: test
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: mutator
        namespace: mutator-system
      spec:
        template:
          spec:
            imagePullSecrets:
              - name: %s
            containers:
              - name: mutator
                env:
                  - name: REGISTRY
                    value: %s
                  - name: IMAGE_PULL_SECRET
                    value: %s
                  - name: FORCE_IMAGE_PULL_POLICY
                    value: "true"
                  - name: IMAGE_PULL_POLICY_TO_FORCE
                    value: Always
`

// TestStandaloneDeployment deploys the mutator as users do (kubectl apply
// -k with deploy/standalone: two replicas, a Service, its self-managed
// certificate), in place of the mutator process, and checks that the API
// server reaches it through its Service, and that neither a rolling
// restart nor a killed replica loses or lets through an unmutated create.
func TestStandaloneDeployment(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()

	dir, err := writeOverlay()
	if err != nil {
		t.Fatal(err)
	}
	e.replaceProcessWebhook(t, standaloneNamespace, func(ctx context.Context) error {
		if out, err := e.kube.Kubectl(ctx, "delete", "-k", dir, "--ignore-not-found", "--wait=false"); err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		return nil
	})
	began := time.Now()
	if out, err := e.kube.Kubectl(ctx, "apply", "-k", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	e.waitMutatorReplicas(t, standaloneNamespace)
	t.Logf("2 mutator replicas ready %s after kubectl apply", time.Since(began).Round(time.Millisecond))

	ns := e.checkServedThroughService(t, standaloneNamespace, "standalone")

	t.Run("rolling restart", func(t *testing.T) {
		stats := e.createContinuously(ctx, ns)
		if out, err := e.kube.Kubectl(ctx, "rollout", "restart", "deployment/mutator", "-n", standaloneNamespace); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := e.kube.Kubectl(ctx, "rollout", "status", "deployment/mutator", "-n", standaloneNamespace, "--timeout=3m"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// Until the old Pods are gone: their shutdown is what is tested.
		e.waitMutatorReplicas(t, standaloneNamespace)
		// A graceful shutdown (SHUTDOWN_DELAY) must refuse nothing.
		stats.stop(t, true)
	})

	t.Run("killed replica", func(t *testing.T) {
		victim := e.mutatorPods(t, standaloneNamespace)[0]
		stats := e.createContinuously(ctx, ns)
		time.Sleep(time.Second) // creates flowing to both replicas
		killed, err := killContainer(string(victim.UID), "mutator")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("killed mutator %v of Pod %s", killed, victim.Name)
		wait(t, 2*time.Minute, "the killed replica to restart", func(ctx context.Context) (bool, error) {
			p, err := client.CoreV1().Pods(standaloneNamespace).Get(ctx, victim.Name, metav1.GetOptions{})
			return err == nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 && running(p), nil
		})
		// The API server does not retry a webhook call refused by a dead
		// Pod that the Service still lists, so some creates are refused
		// (failurePolicy Fail) until the endpoints drop it; none may be
		// lost to a client that retries, as controllers do.
		stats.stop(t, false)
	})
}

// pushMutatorImage puts the mutator binary the host stage built into an
// image like the Dockerfile's (entrypoint `/mutator serve`) in the mirror.
func (e *env) pushMutatorImage(ctx context.Context) error {
	bin, err := os.ReadFile(filepath.Join(e.binDir, "mutator"))
	if err != nil {
		return fmt.Errorf("reading the mutator binary: %w", err)
	}
	img, err := image.New([]image.File{{Path: "mutator", Content: bin, Mode: 0o755}}, "/mutator", "serve")
	if err != nil {
		return fmt.Errorf("building the mutator image: %w", err)
	}
	return e.push(ctx, img, standaloneImage+":test")
}

// writeOverlay writes the kustomization that deploys deploy/standalone.
func writeOverlay() (string, error) {
	root, err := node.RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(node.WorkDir(), "standalone")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	// kustomize takes bases by relative path.
	base, err := filepath.Rel(dir, filepath.Join(root, "deploy", "standalone"))
	if err != nil {
		return "", fmt.Errorf("locating deploy/standalone: %w", err)
	}
	content := fmt.Sprintf(overlay, base, standaloneImage, pullSecret, mirrorRegistry, pullSecret)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(content), 0o644); err != nil {
		return "", fmt.Errorf("writing the overlay: %w", err)
	}
	return dir, nil
}

// replaceProcessWebhook readies the cluster for the mutator deployed in
// namespace: its image in the mirror, the namespace with the pull secret its
// Pods need, and the mutator process's webhook out of the way (it has the
// shipped name, as the in-cluster one). When the test ends, remove deletes
// the in-cluster mutator and the process's webhook comes back for the tests
// that follow (restoreProcessWebhook).
func (e *env) replaceProcessWebhook(t *testing.T, namespace string, remove func(context.Context) error) {
	t.Helper()
	ctx := t.Context()
	client := e.kube.Client()
	if err := e.pushMutatorImage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, webhookName, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("removing the mutator process's webhook: %v", err)
	}
	t.Cleanup(func() { e.restoreProcessWebhook(t, remove) })

	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating %s: %v", namespace, err)
	}
	secret, err := e.pullSecretObject()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the pull secret: %v", err)
	}
}

// restoreProcessWebhook deletes the in-cluster mutator with remove and
// registers the mutator process's webhook again, for the tests that follow.
func (e *env) restoreProcessWebhook(t *testing.T, remove func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remove(ctx); err != nil {
		t.Errorf("deleting the in-cluster mutator: %v", err)
	}
	// Deleted just now, or still there if the deployment failed first.
	err := e.kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, webhookName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting the in-cluster webhook: %v", err)
	}
	if err := registerWebhook(ctx, e.kube.Client(), e.mutator.url(), e.ca.CertPEM()); err != nil {
		t.Errorf("registering the mutator process's webhook again: %v", err)
	}
}

// checkServedThroughService checks that the in-cluster mutator of namespace
// has the webhook name its Service, waits until a create in a new served
// namespace (prefix-) is mutated, logs the replicas' memory, and returns
// that namespace.
func (e *env) checkServedThroughService(t *testing.T, namespace, prefix string) string {
	t.Helper()
	whc, err := e.kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), webhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cc := whc.Webhooks[0].ClientConfig; cc.Service == nil || cc.URL != nil || cc.Service.Namespace != namespace {
		t.Fatalf("the webhook's clientConfig %+v does not name the Service in %s", cc, namespace)
	}
	ns := e.newNamespace(t, prefix, false)
	last := ""
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last dry-run create: %s", last)
		}
	})
	wait(t, time.Minute, "a create mutated through the Service", func(ctx context.Context) (bool, error) {
		pod, err := dryRunCreate(ctx, e, ns)
		if err != nil {
			if ctx.Err() == nil {
				last = err.Error()
			}
			return false, nil
		}
		last = "image " + pod.Spec.Containers[0].Image
		return pod.Spec.Containers[0].Image == mirrorRef("app"), nil
	})
	for _, pod := range e.mutatorPods(t, namespace) {
		if rss, err := e.podMemory(&pod); err == nil {
			t.Logf("figure: mutator Pod %s resident memory %s", pod.Name, rss)
		}
	}
	return ns
}

// waitMutatorReplicas waits until the mutator's Deployment in namespace
// has exactly two Pods, both current and ready: none starting, none
// shutting down.
func (e *env) waitMutatorReplicas(t *testing.T, namespace string) {
	t.Helper()
	last := ""
	wait(t, 3*time.Minute, "two ready mutator replicas", func(ctx context.Context) (bool, error) {
		dep, err := e.kube.Client().AppsV1().Deployments(namespace).Get(ctx, "mutator", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pods, err := e.kube.Client().CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, p := range pods.Items {
			if running(&p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		s := dep.Status
		last = fmt.Sprintf("%d Pods, %d ready; Deployment: %d updated, %d available", len(pods.Items), ready, s.UpdatedReplicas, s.AvailableReplicas)
		return len(pods.Items) == 2 && ready == 2 && s.UpdatedReplicas == 2 && s.AvailableReplicas == 2 && s.Replicas == 2, nil
	})
	t.Logf("mutator replicas: %s", last)
}

// mutatorPods lists the mutator's Pods in namespace.
func (e *env) mutatorPods(t *testing.T, namespace string) []corev1.Pod {
	t.Helper()
	pods, err := e.kube.Client().CoreV1().Pods(namespace).List(t.Context(), metav1.ListOptions{})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("listing the mutator's Pods: %d, %v", len(pods.Items), err)
	}
	return pods.Items
}
