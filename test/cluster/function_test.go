package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/cluster/knative"
	"github.com/mutator-dev/mutator/test/cluster/node"
)

const (
	// functionImage is where the function image `make image` builds goes,
	// in the mirror: mutator-system is opted out of the webhook, so its
	// Pods name the mirror themselves.
	functionImage = mirrorRegistry + "/mutator-dev/mutator-function"
	// functionNamespace and functionName are deploy/knative's Service.
	functionNamespace = standaloneNamespace
	functionName      = "mutator"
	// functionRetention is the test's
	// scale-to-zero-pod-retention-period, short as stableWindow is.
	functionRetention = "2s"
	// functionColdStartsEnv sets how many cold starts
	// TestScaleFromZeroFunction times (default 10).
	functionColdStartsEnv = "MUTATOR_FUNCTION_COLD_STARTS"
	// functionWarmCreates is how many creates it times warm.
	functionWarmCreates = 50
	// functionAppImage is the image of the Pods the test stores (dry runs
	// name the app image, which they never pull): its own, as
	// TestDeploymentPullsFromMirror needs the app image's layer never
	// pulled before it.
	functionAppImage = "fnapp"
)

// functionHosts are the cluster-local names of the function's Route: the
// API server sends the first (the webhook's service reference) as SNI and
// Host, and traefik's certificate covers them all.
var functionHosts = []string{
	functionName + "." + functionNamespace + ".svc",
	functionName + "." + functionNamespace + ".svc.cluster.local",
	functionName + "." + functionNamespace,
}

// function is the mutator function deployed from deploy/knative.
type function struct {
	dir      string // the kustomize overlay
	revision string // the Ready Revision
	services dynamic.ResourceInterface
}

// deployFunction deploys deploy/knative as users do (kubectl apply -k of
// an overlay: the function image `make image` built, this cluster's
// mutator settings, short autoscaling windows and scale to zero), in place
// of the mutator process, with the shipped webhook configuration pointed
// at it through traefik's TLS entrypoint and the image guard generated
// for this configuration, and waits for a Ready Revision that mutates.
func (e *env) deployFunction(t *testing.T, serving *knative.Serving) *function {
	t.Helper()
	ctx := t.Context()
	dyn, err := dynamic.NewForConfig(e.kube.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	f := &function{services: dyn.Resource(knative.ServiceResource).Namespace(functionNamespace)}
	ref, err := e.pushFunctionImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The API server dials the ExternalName of the Route's Service
	// (traefik-internal.knative-serving.svc.cluster.local) with its own
	// resolver, not the cluster's DNS: the node's /etc/hosts has it, as
	// a cluster's resolver would.
	if err := addHost(knative.PrivateHost); err != nil {
		t.Fatal(err)
	}
	f.dir, err = e.writeFunctionOverlay(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	e.replaceProcessWebhook(t, functionNamespace, func(ctx context.Context) error {
		return e.removeFunction(ctx, f.dir)
	})
	began := time.Now()
	if out, err := e.kube.Kubectl(ctx, "apply", "-k", f.dir); err != nil {
		t.Fatalf("kubectl apply -k %s: %v\n%s", f.dir, err, out)
	}
	var ksvc *unstructured.Unstructured
	waitFor(t, 3*time.Minute, "the function's Knative Service to be Ready", func(ctx context.Context) (bool, string) {
		o, err := f.services.Get(ctx, functionName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ksvc = o
		return knative.Ready(o)
	})
	f.revision = knative.String(ksvc, "status", "latestReadyRevisionName")
	t.Logf("figure: the function's Knative Service Ready %s after kubectl apply -k (Revision %s)", time.Since(began).Round(time.Millisecond), f.revision)
	if url, want := knative.String(ksvc, "status", "url"), "http://"+functionHosts[1]; url != want {
		t.Fatalf("the function's URL is %q, want %q (cluster-local)", url, want)
	}
	svc, err := e.kube.Client().CoreV1().Services(functionNamespace).Get(ctx, functionName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeExternalName || svc.Spec.ExternalName != knative.PrivateHost {
		t.Fatalf("the Route's Service is %s %q, want an ExternalName %s (traefik's private load balancer)", svc.Spec.Type, svc.Spec.ExternalName, knative.PrivateHost)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s", serving.TraefikLog(30))
			e.logEvents(t, functionNamespace)
		}
	})
	return f
}

// functionOverlay deploys deploy/knative: its kustomization with the
// function image, the cert-manager objects deleted (there is no
// cert-manager here: traefik presents the certificate, see
// knative.Options.PrivateTLS), JSON patches of the Knative Service and the
// webhook, and the guard generated for this configuration.
const functionOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
%s
images:
  - name: ghcr.io/mutator-dev/mutator
    newName: %s
    digest: %s
patches:
%s`

// functionEnv is what the overlay sets in the function's env: the suite's
// mutator settings (mutator_test.go), the mirror allowed as is.
var functionEnv = [][2]string{
	{"REGISTRY", mirrorRegistry},
	{"IMAGE_PULL_SECRET", pullSecret},
	{"FORCE_IMAGE_PULL_POLICY", "true"},
	{"IMAGE_PULL_POLICY_TO_FORCE", "Always"},
	{"IGNORED_REGISTRIES", mirrorHost},
}

// writeFunctionOverlay writes the overlay for the function image ref
// (repository@digest) and returns its folder.
func (e *env) writeFunctionOverlay(ctx context.Context, ref string) (string, error) {
	root, err := node.RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(node.WorkDir(), "function")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	baseDir := filepath.Join(root, "deploy", "knative")
	base, err := filepath.Rel(dir, baseDir)
	if err != nil {
		return "", err
	}
	out, err := e.kube.Kubectl(ctx, "kustomize", baseDir)
	if err != nil {
		return "", fmt.Errorf("kubectl kustomize deploy/knative: %w\n%s", err, out)
	}
	objs, err := splitObjects(out)
	if err != nil {
		return "", err
	}
	var patches []string
	var ksvc *unstructured.Unstructured
	hasGuard := false
	for _, o := range objs {
		switch {
		case strings.HasPrefix(o.GetAPIVersion(), "cert-manager.io/"):
			patches = append(patches, deletePatch(o))
		case o.GetKind() == "Service" && o.GetAPIVersion() == "serving.knative.dev/v1":
			ksvc = o
		case o.GetKind() == "ValidatingAdmissionPolicy" && o.GetName() == "mutator-image-guard":
			hasGuard = true
		}
	}
	if ksvc == nil {
		return "", fmt.Errorf("deploy/knative has no Knative Service")
	}
	ops, env, err := serviceOps(ksvc)
	if err != nil {
		return "", err
	}
	patches = append(patches, jsonPatch("serving.knative.dev", "Service", functionName, ops))
	patches = append(patches, jsonPatch("admissionregistration.k8s.io", "MutatingWebhookConfiguration", webhookName, []map[string]any{
		{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": base64.StdEncoding.EncodeToString(e.ca.CertPEM())},
	}))
	resources := []string{base}
	// The guard, generated for this configuration: it replaces the
	// shipped one's spec (generated for registry.example.com/mirror).
	guard, err := e.generateGuard(ctx, env)
	if err != nil {
		return "", err
	}
	if hasGuard {
		for _, g := range guard {
			spec, _, _ := unstructured.NestedMap(g.Object, "spec")
			patches = append(patches, jsonPatch("admissionregistration.k8s.io", g.GetKind(), g.GetName(), []map[string]any{
				{"op": "replace", "path": "/spec", "value": spec},
			}))
		}
	} else {
		data, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": guard})
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "guard.yaml"), data, 0o644); err != nil {
			return "", err
		}
		resources = append(resources, "guard.yaml")
	}
	var res strings.Builder
	for _, r := range resources {
		fmt.Fprintf(&res, "  - %s\n", r)
	}
	name, digest, _ := strings.Cut(ref, "@")
	content := fmt.Sprintf(functionOverlay, res.String(), name, digest, strings.Join(patches, ""))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(content), 0o644); err != nil {
		return "", fmt.Errorf("writing the overlay: %w", err)
	}
	return dir, nil
}

// serviceOps returns the JSON patch of the Knative Service: scale to zero
// with the test's short windows, the pull secret for the mirror, and
// functionEnv (replacing a variable the Service sets, by index, checked
// with a test op); and the function's resulting env.
func serviceOps(ksvc *unstructured.Unstructured) ([]map[string]any, map[string]string, error) {
	annotation := func(key string) string {
		return "/spec/template/metadata/annotations/" + strings.ReplaceAll(key, "/", "~1")
	}
	ops := []map[string]any{
		{"op": "add", "path": annotation("autoscaling.knative.dev/min-scale"), "value": "0"},
		{"op": "add", "path": annotation("autoscaling.knative.dev/window"), "value": stableWindow},
		{"op": "add", "path": annotation("autoscaling.knative.dev/scale-to-zero-pod-retention-period"), "value": functionRetention},
		{"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": []any{map[string]any{"name": pullSecret}}},
	}
	containers, _, _ := unstructured.NestedSlice(ksvc.Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		return nil, nil, fmt.Errorf("the Knative Service has %d containers, want 1", len(containers))
	}
	envList, _ := containers[0].(map[string]any)["env"].([]any)
	env := map[string]string{}
	index := map[string]int{}
	for i, v := range envList {
		m, _ := v.(map[string]any)
		name, _ := m["name"].(string)
		value, _ := m["value"].(string)
		env[name] = value
		index[name] = i
	}
	for _, kv := range functionEnv {
		env[kv[0]] = kv[1]
		if i, ok := index[kv[0]]; ok {
			path := "/spec/template/spec/containers/0/env/" + strconv.Itoa(i)
			ops = append(ops,
				map[string]any{"op": "test", "path": path + "/name", "value": kv[0]},
				map[string]any{"op": "replace", "path": path + "/value", "value": kv[1]})
			continue
		}
		ops = append(ops, map[string]any{"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": map[string]any{"name": kv[0], "value": kv[1]}})
	}
	return ops, env, nil
}

// jsonPatch is an overlay patches entry: ops applied to kind/name.
func jsonPatch(group, kind, name string, ops []map[string]any) string {
	data, _ := json.Marshal(ops) // plain values
	return fmt.Sprintf("  - target:\n      group: %s\n      kind: %s\n      name: %s\n    patch: '%s'\n",
		group, kind, name, strings.ReplaceAll(string(data), "'", "''"))
}

// deletePatch is an overlay patches entry deleting o.
func deletePatch(o *unstructured.Unstructured) string {
	meta := "name: " + o.GetName()
	if o.GetNamespace() != "" {
		meta += "\n        namespace: " + o.GetNamespace()
	}
	return fmt.Sprintf("  - patch: |-\n      $patch: delete\n      apiVersion: %s\n      kind: %s\n      metadata:\n        %s\n", o.GetAPIVersion(), o.GetKind(), meta)
}

// generateGuard runs `mutator policy --guard` with env, the function's.
func (e *env) generateGuard(ctx context.Context, env map[string]string) ([]*unstructured.Unstructured, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.binDir, "mutator"), "policy", "--guard")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("mutator policy --guard: %w\n%s", err, stderr.String())
	}
	objs, err := splitObjects(string(out))
	if err != nil {
		return nil, err
	}
	if len(objs) != 2 {
		return nil, fmt.Errorf("mutator policy --guard printed %d objects, want a policy and its binding", len(objs))
	}
	return objs, nil
}

// splitObjects decodes a multi-document YAML stream.
func splitObjects(data string) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, doc := range strings.Split("\n"+data, "\n---") {
		var content map[string]any
		if err := yaml.Unmarshal([]byte(doc), &content); err != nil {
			return nil, fmt.Errorf("decoding YAML: %w", err)
		}
		if len(content) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: content})
		}
	}
	return objs, nil
}

// removeFunction deletes what the overlay applied and waits until
// mutator-system is gone, for the tests that deploy there next; the
// function's Pods get no grace period (queue-proxy would drain for 30 s).
func (e *env) removeFunction(ctx context.Context, dir string) error {
	if out, err := e.kube.Kubectl(ctx, "delete", "-k", dir, "--ignore-not-found", "--wait=false"); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	client := e.kube.Client()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		_, err := client.CoreV1().Namespaces().Get(ctx, functionNamespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		_ = client.CoreV1().Pods(functionNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("%s still there 90 s after its deletion", functionNamespace)
}

// addHost makes name resolve to the node's loopback (where traefik
// listens) in /etc/hosts, the namespace's own (node.IsolateOptions.Hosts).
func addHost(name string) error {
	data, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if slices.Contains(strings.Fields(line), name) {
			return nil
		}
	}
	f, err := os.OpenFile("/etc/hosts", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "127.0.0.1 %s\n", name); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// killDrainingPods kills the function's Pods that Knative scaled away
// and waits until none is left: queue-proxy keeps serving for 30 s after
// its last request while it drains, and the activator may still send a
// request there, which would not be a cold start.
func (e *env) killDrainingPods(t *testing.T, selector string) {
	t.Helper()
	client := e.kube.Client()
	waitFor(t, time.Minute, "the function's Pods to be gone", func(ctx context.Context) (bool, string) {
		pods, err := client.CoreV1().Pods(functionNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				t.Fatalf("Pod %s of the function is not terminating", p.Name)
			}
			if err := knative.KillPod(string(p.UID)); err != nil {
				return false, err.Error()
			}
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d Pods", len(pods.Items))
	})
}

// timedCreate dry-runs the create of a Pod naming the origin in ns and
// returns how long the API server took and the Pod it would store.
func (e *env) timedCreate(ctx context.Context, ns string) (time.Duration, *corev1.Pod, error) {
	began := time.Now()
	pod, err := dryRunCreate(ctx, e, ns)
	return time.Since(began), pod, err
}

// checkRewritten checks a Pod of the app image the function admitted:
// from the mirror, pull policy Always, the pull secret.
func checkRewritten(pod *corev1.Pod) error { return checkRewrittenFrom(pod, "app") }

// checkRewrittenFrom checks a Pod of the app image repo the function
// admitted.
func checkRewrittenFrom(pod *corev1.Pod, repo string) error {
	c := pod.Spec.Containers[0]
	if c.Image != mirrorRef(repo) || c.ImagePullPolicy != corev1.PullAlways || !slices.Contains(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: pullSecret}) {
		return fmt.Errorf("the Pod was not rewritten: image %s, policy %s, pull secrets %v", c.Image, c.ImagePullPolicy, pod.Spec.ImagePullSecrets)
	}
	return nil
}

// accessLogLines counts the lines of traefik's access log that contain
// every one of parts.
func accessLogLines(parts ...string) int {
	data, err := os.ReadFile(filepath.Join(node.WorkDir(), "knative", "traefik-access.log"))
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// TestScaleFromZeroFunction deploys the mutator function from
// deploy/knative on Knative Serving, the API server calling it as
// shipped (webhook.yaml's service reference, failurePolicy Fail) through
// traefik's TLS entrypoint, the activator and queue-proxy: a Pod created
// in a served namespace comes back rewritten; from zero, the first create
// waits for the cold start and is rewritten (latency over
// MUTATOR_FUNCTION_COLD_STARTS cold starts, default 1 (10 or more for
// figures), and over warm
// creates); without creates the Revision scales back to zero; a burst
// from zero loses no create; and with the function crashing, creates are
// refused with a reason (by the webhook's failurePolicy Fail, and by the
// image guard under Ignore), nothing stored pulls from outside the
// mirror, and a ReplicaSet converges once it is back.
func TestScaleFromZeroFunction(t *testing.T) {
	e := requireEnv(t)
	serving := e.knativeServing(t)
	ctx := t.Context()
	f := e.deployFunction(t, serving)
	ns := e.newNamespace(t, "function", false)
	selector := "serving.knative.dev/revision=" + f.revision

	// Admitted through traefik's TLS entrypoint: the API server verified
	// traefik's certificate with the webhook's caBundle.
	tlsRoute := "privatetls-" + functionNamespace + "-" + functionName
	before := accessLogLines(tlsRoute, "POST /mutate")
	began := time.Now()
	last := ""
	wait(t, time.Minute, "a create rewritten by the function", func(ctx context.Context) (bool, error) {
		pod, err := dryRunCreate(ctx, e, ns)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if err := checkRewritten(pod); err != nil {
			last = err.Error()
			return false, nil
		}
		return true, nil
	})
	t.Logf("figure: first create rewritten by the function %s after its Service was Ready (last failure: %q)", time.Since(began).Round(time.Millisecond), last)
	if after := accessLogLines(tlsRoute, "POST /mutate"); after <= before {
		t.Fatalf("traefik's access log shows no POST /mutate on its TLS entrypoint's route %s…", tlsRoute)
	}
	// A Pod stored, not only a dry run.
	pod, err := e.kube.Client().CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "stored"}, Spec: appPodSpec(originRef(functionAppImage), "")}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a Pod: %v", err)
	}
	if err := checkRewrittenFrom(pod, functionAppImage); err != nil {
		t.Fatalf("stored Pod: %v", err)
	}

	coldStarts := positiveEnv(t, functionColdStartsEnv, 1)
	var cold, toZero []time.Duration
	for i := range coldStarts {
		lastCreate := time.Now()
		e.waitScaledToZero(t, functionNamespace, f.revision)
		toZero = append(toZero, time.Since(lastCreate))
		e.killDrainingPods(t, selector)
		e.checkActivatorInPath(t, functionNamespace, f.revision)
		before := e.podUIDs(t, functionNamespace, selector)
		took, pod, err := e.timedCreate(ctx, ns)
		if err != nil {
			t.Fatalf("create %d from zero refused after %s: %v", i+1, took.Round(time.Millisecond), err)
		}
		if err := checkRewritten(pod); err != nil {
			t.Fatalf("create %d from zero: %v", i+1, err)
		}
		cold = append(cold, took)
		started := 0
		for uid, live := range e.podUIDs(t, functionNamespace, selector) {
			if _, old := before[uid]; !old && live {
				started++
			}
		}
		if started == 0 {
			t.Fatalf("create %d from zero was admitted in %s, yet no function Pod was started for it", i+1, took.Round(time.Millisecond))
		}
	}
	t.Logf("figure: the Revision scaled to zero %v after the last create (window %s, retention %s, grace %s)", roundAll(toZero), stableWindow, functionRetention, scaleToZeroGrace)
	t.Logf("figure: admission from zero (dry-run Pod create, API server → traefik TLS → activator → queue-proxy → function): p50 %s, p99 %s over %d cold starts: %v",
		percentile(cold, 50), percentile(cold, 99), len(cold), roundAll(cold))

	var warm []time.Duration
	for i := range functionWarmCreates {
		took, pod, err := e.timedCreate(ctx, ns)
		if err != nil {
			t.Fatalf("warm create %d: %v", i+1, err)
		}
		if err := checkRewritten(pod); err != nil {
			t.Fatalf("warm create %d: %v", i+1, err)
		}
		warm = append(warm, took)
	}
	t.Logf("figure: admission warm (dry-run Pod create): p50 %s, p99 %s over %d creates", percentile(warm, 50), percentile(warm, 99), len(warm))
	lastCreate := time.Now()
	e.waitScaledToZero(t, functionNamespace, f.revision)
	t.Logf("figure: the Revision scaled back to zero %s after the last warm create", time.Since(lastCreate).Round(time.Millisecond))

	t.Run("burst from zero", func(t *testing.T) { e.burstFromZero(t, ns, selector) })
	t.Run("function down", func(t *testing.T) { e.functionDown(t, f, ns) })
}

// Burst: burstCreates dry-run creates from burstWorkers at once, from zero.
const (
	burstCreates = 200
	burstWorkers = 20
	// burstRetryFor is how long a refused create is retried, as a
	// controller would (every retryInterval).
	burstRetryFor = 15 * time.Second
)

// burstFromZero sends burstCreates creates from burstWorkers workers to
// the function at zero: none may be lost or admitted unmutated; it logs
// how many Pods Knative started, and the latencies.
func (e *env) burstFromZero(t *testing.T, ns, selector string) {
	e.killDrainingPods(t, selector)
	ctx := t.Context()
	client := e.kube.Client()
	seen := map[string]bool{}
	var mu sync.Mutex
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() {
		for watchCtx.Err() == nil {
			if pods, err := client.CoreV1().Pods(functionNamespace).List(watchCtx, metav1.ListOptions{LabelSelector: selector}); err == nil {
				mu.Lock()
				for _, p := range pods.Items {
					seen[string(p.UID)] = true
				}
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	var (
		first, total       []time.Duration
		refused, lost, bad int
		failures           []string
		jobs               = make(chan int)
		workers            sync.WaitGroup
	)
	note := func(s string) {
		if len(failures) < 5 {
			failures = append(failures, s)
		}
	}
	began := time.Now()
	for range burstWorkers {
		workers.Go(func() {
			for range jobs {
				start := time.Now()
				deadline := start.Add(burstRetryFor)
				for attempt := 0; ; attempt++ {
					took, pod, err := e.timedCreate(ctx, ns)
					mu.Lock()
					if attempt == 0 {
						first = append(first, took)
					}
					if err == nil {
						total = append(total, time.Since(start))
						if err := checkRewritten(pod); err != nil {
							bad++
							note(err.Error())
						}
						mu.Unlock()
						break
					}
					if attempt == 0 {
						refused++
						note(err.Error())
					}
					if time.Now().After(deadline) {
						lost++
						note("lost after retries: " + err.Error())
						mu.Unlock()
						break
					}
					mu.Unlock()
					time.Sleep(retryInterval)
				}
			}
		})
	}
	for i := range burstCreates {
		jobs <- i
	}
	close(jobs)
	workers.Wait()
	elapsed := time.Since(began)
	stopWatch()
	watching.Wait()
	t.Logf("figure: burst of %d dry-run creates from zero (%d workers) in %s: first attempt p50 %s, p99 %s, max %s; with retries p99 %s; %d refused at the first attempt, %d lost, %d unmutated; %d function Pods started",
		burstCreates, burstWorkers, elapsed.Round(time.Millisecond), percentile(first, 50), percentile(first, 99), percentile(first, 100),
		percentile(total, 99), refused, lost, bad, len(seen))
	if lost > 0 || bad > 0 {
		t.Errorf("%d lost and %d unmutated creates; first failures:\n  %s", lost, bad, strings.Join(failures, "\n  "))
	} else if refused > 0 {
		t.Logf("first refusals:\n  %s", strings.Join(failures, "\n  "))
	}
	if len(seen) == 0 {
		t.Error("the burst was admitted, yet no function Pod was seen")
	}
}

// functionProcess is the function's process name: ko's binary, /ko-app/s.
const functionProcess = "s"

// functionDown keeps one function Pod (min-scale 1, a new Revision) and
// kills its process whenever it runs, queue-proxy still up: with the
// webhook's failurePolicy as shipped and the guard, creates naming the
// origin are refused with a reason, nothing stored pulls from outside the
// mirror, and a ReplicaSet created meanwhile converges once the function
// is back.
func (e *env) functionDown(t *testing.T, f *function, ns string) {
	ctx := t.Context()
	client := e.kube.Client()
	patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"autoscaling.knative.dev/min-scale":"1"}}}}}`)
	if _, err := f.services.Patch(ctx, functionName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("setting min-scale 1: %v", err)
	}
	var revision string
	waitFor(t, 2*time.Minute, "a Ready Revision at min-scale 1", func(ctx context.Context) (bool, string) {
		o, err := f.services.Get(ctx, functionName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ok, why := knative.Ready(o)
		revision = knative.String(o, "status", "latestReadyRevisionName")
		return ok && revision != f.revision, why + ", latest ready " + revision
	})
	selector := "serving.knative.dev/revision=" + revision
	var victim corev1.Pod
	waitFor(t, 2*time.Minute, "the function's Pod at min-scale 1 to run", func(ctx context.Context) (bool, string) {
		pods, err := client.CoreV1().Pods(functionNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if running(&p) && p.DeletionTimestamp == nil {
				victim = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d Pods, none running", len(pods.Items))
	})
	wait(t, time.Minute, "a create rewritten at min-scale 1", func(ctx context.Context) (bool, error) {
		pod, err := dryRunCreate(ctx, e, ns)
		return err == nil && checkRewritten(pod) == nil, nil
	})

	// Down: the function's process is killed whenever it runs.
	killCtx, stopKilling := context.WithCancel(ctx)
	var kills atomic.Int64
	var killing sync.WaitGroup
	killing.Go(func() {
		for killCtx.Err() == nil {
			if pids, err := killContainer(string(victim.UID), functionProcess); err == nil {
				kills.Add(int64(len(pids)))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	defer func() {
		stopKilling()
		killing.Wait()
	}()
	began := time.Now()
	refusal := ""
	var took time.Duration
	waitFor(t, time.Minute, "a create refused while the function is down", func(ctx context.Context) (bool, string) {
		d, pod, err := e.timedCreate(ctx, ns)
		if err == nil {
			if err := checkRewritten(pod); err != nil {
				t.Errorf("admitted while the function is being killed: %v", err)
			}
			return false, "admitted"
		}
		refusal, took = err.Error(), d
		return true, ""
	})
	t.Logf("figure: with the function down, a dry-run create was refused %s after the first kill, the API server answering in %s: %s",
		time.Since(began).Round(time.Millisecond), took.Round(time.Millisecond), refusal)
	if !strings.Contains(refusal, "mutate.mutator.dev") && !strings.Contains(refusal, "mutator-image-guard") {
		t.Errorf("the refusal names neither the webhook nor the guard: %s", refusal)
	}
	// A real create, and a ReplicaSet, while down.
	d, stored, err := func() (time.Duration, *corev1.Pod, error) {
		start := time.Now()
		p, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "while-down"}, Spec: appPodSpec(originRef(functionAppImage), "")}, metav1.CreateOptions{})
		return time.Since(start), p, err
	}()
	switch {
	case err != nil:
		t.Logf("create of Pod while-down (origin image) refused after %s: %v", d.Round(time.Millisecond), err)
	case checkRewrittenFrom(stored, functionAppImage) != nil:
		t.Errorf("Pod while-down stored unmutated: %v", checkRewrittenFrom(stored, functionAppImage))
	}
	labels := map[string]string{"app": "while-down"}
	template := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: appPodSpec(originRef(functionAppImage), "")}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "while-down"},
		Spec:       appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: template},
	}
	if _, err := client.AppsV1().ReplicaSets(ns).Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the ReplicaSet: %v", err)
	}
	failed := ""
	waitFor(t, time.Minute, "the ReplicaSet's creates to be refused", func(ctx context.Context) (bool, string) {
		events, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=while-down,reason=FailedCreate"})
		if err != nil || len(events.Items) == 0 {
			return false, "no FailedCreate event yet"
		}
		failed = events.Items[0].Message
		return true, ""
	})
	t.Logf("the ReplicaSet controller's refused create: %s", failed)

	// The same outage with failurePolicy Ignore: the guard refuses what
	// the webhook could not rewrite.
	whcs := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	setPolicy := func(policy string) {
		p := []byte(`[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"` + policy + `"}]`)
		if _, err := whcs.Patch(context.Background(), webhookName, types.JSONPatchType, p, metav1.PatchOptions{}); err != nil {
			t.Fatalf("setting failurePolicy %s: %v", policy, err)
		}
	}
	shipped := "Fail"
	if whc, err := whcs.Get(ctx, webhookName, metav1.GetOptions{}); err == nil && whc.Webhooks[0].FailurePolicy != nil {
		shipped = string(*whc.Webhooks[0].FailurePolicy)
	}
	setPolicy("Ignore")
	guarded := ""
	waitFor(t, 30*time.Second, "the guard to refuse a create with failurePolicy Ignore", func(ctx context.Context) (bool, string) {
		_, pod, err := e.timedCreate(ctx, ns)
		switch {
		case err == nil && checkRewritten(pod) != nil:
			t.Errorf("with failurePolicy Ignore and the function down, a create was admitted unmutated: %v", checkRewritten(pod))
			return true, ""
		case err == nil:
			return false, "admitted, rewritten (the function answered)"
		case !strings.Contains(err.Error(), "mutator-image-guard"):
			return false, err.Error()
		}
		guarded = err.Error()
		return true, ""
	})
	t.Logf("with failurePolicy Ignore and the function down, the client got: %s", guarded)
	setPolicy(shipped)
	if kills.Load() < 2 {
		// A crash loop: the kubelet restarts the first kill's container at
		// once, the next one only after its back-off.
		wait(t, time.Minute, "the restarted function to be killed again", func(context.Context) (bool, error) { return kills.Load() >= 2, nil })
	}
	stopKilling()
	killing.Wait()
	back := time.Now()
	t.Logf("the function was down %s (%d kills)", back.Sub(began).Round(time.Millisecond), kills.Load())

	waitFor(t, 3*time.Minute, "the ReplicaSet to converge", func(ctx context.Context) (bool, string) {
		got, err := client.AppsV1().ReplicaSets(ns).Get(ctx, "while-down", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return got.Status.ReadyReplicas == 2, fmt.Sprintf("%d Pods, %d ready", got.Status.Replicas, got.Status.ReadyReplicas)
	})
	t.Logf("figure: the ReplicaSet created while the function was down had its 2 Pods ready %s after the killing stopped", time.Since(back).Round(time.Millisecond))

	// What the API server stored: nothing pulls from outside the mirror.
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			if !strings.HasPrefix(c.Image, mirrorHost+"/") {
				t.Errorf("Pod %s stored with container %s pulling %s", p.Name, c.Name, c.Image)
			}
		}
	}
	t.Logf("%d Pods stored in %s, every one pulling from the mirror", len(pods.Items), ns)
}
