package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// TestKnativeManifests applies deploy/knative with a server-side dry run,
// against Knative Serving's own CRDs (from the knative.dev/serving module the
// Knative tests pin) and stand-ins for cert-manager's kinds.
func TestKnativeManifests(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	root := standaloneRepoRoot(t)

	serving := servingModuleDir(t, ctx, root)
	crds := filepath.Join(serving, "config", "core", "300-resources")
	var files []string
	for _, name := range []string{"service.yaml", "configuration.yaml", "revision.yaml", "route.yaml"} {
		files = append(files, "-f", filepath.Join(crds, name))
	}
	if _, stderr, err := kube.Kubectl(ctx, append([]string{"apply"}, files...)...); err != nil {
		t.Fatalf("installing Knative Serving CRDs from %s: %v\n%s", crds, err, stderr)
	}
	if _, stderr, err := kube.Kubectl(ctx, append([]string{"wait", "--for=condition=Established", "--timeout=30s"}, files...)...); err != nil {
		t.Fatalf("Knative Serving CRDs not established: %v\n%s", err, stderr)
	}
	standaloneCertManagerCRDs(t, ctx)
	err := cluster.WaitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		out, _, err := kube.Kubectl(ctx, "api-resources", "-o", "name")
		return err == nil && strings.Contains(out, "services.serving.knative.dev") && strings.Contains(out, "clusterissuers.cert-manager.io"), nil
	})
	if err != nil {
		t.Fatalf("Knative and cert-manager kinds not discoverable: %v", err)
	}
	// A dry run creates nothing, so the namespaces its objects go into must
	// exist already.
	standaloneEnsureNamespace(t, ctx)
	for _, ns := range []string{"cert-manager"} {
		_, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	dir := filepath.Join(root, "deploy", "knative")
	out, stderr, err := kube.Kubectl(ctx, "apply", "--dry-run=server", "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server -k %s: %v\n%s\n%s", dir, err, out, stderr)
	}
	objs := standaloneRender(t, ctx, dir)
	if n := strings.Count(out, "(server dry run)"); n != len(objs) {
		t.Errorf("server dry run reported %d objects, the kustomization has %d:\n%s", n, len(objs), out)
	}
	for _, want := range []string{"service.serving.knative.dev/mutator", "mutatingwebhookconfiguration.admissionregistration.k8s.io/mutator"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %s:\n%s", want, out)
		}
	}
	// The schema of Knative's CRD is enforced: a broken copy must fail.
	broken := filepath.Join(t.TempDir(), "service.yaml")
	svc, err := os.ReadFile(filepath.Join(dir, "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte(strings.Replace(string(svc), "containerConcurrency: 100", "containerConcurrency: many", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kube.Kubectl(ctx, "apply", "--dry-run=server", "-f", broken); err == nil {
		t.Error("a Service with containerConcurrency: many passed the server-side dry run")
	}
}

// servingModuleDir finds knative.dev/serving in the module cache through the
// test/knative module, which pins it (and downloads it when missing).
func servingModuleDir(t *testing.T, ctx context.Context, root string) string {
	t.Helper()
	// go mod download (unlike go list -m) fetches the module when the
	// cache lacks it, as on a fresh machine where these tests run first.
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", "knative.dev/serving")
	cmd.Dir = filepath.Join(root, "test", "knative")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("downloading knative.dev/serving: %v\n%s", err, out)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("locating knative.dev/serving: %v %s\n%s", err, mod.Error, out)
	}
	return mod.Dir
}
