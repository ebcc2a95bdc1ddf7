package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	mirror     = "registry.example.com/mirror"
	excludedNS = "e2e-excluded"

	always       = corev1.PullAlways
	ifNotPresent = corev1.PullIfNotPresent
	never        = corev1.PullNever
)

// The configurations under test. cfgAll is the production-like one most
// tests share.
var (
	cfgImages        = env{"REGISTRY": mirror, "IGNORED_REGISTRIES": "registry.k8s.io"}
	cfgSecretReplace = env{"IMAGE_PULL_SECRET": "regcred"}
	cfgSecretAppend  = env{"IMAGE_PULL_SECRET": "regcred", "IMAGE_PULL_SECRET_APPEND": "true"}
	cfgPolicy        = env{"FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "IfNotPresent"}
	cfgAll           = cfgImages.with(cfgSecretReplace).with(cfgPolicy).with(env{
		"DEFAULT_STORAGE_CLASS": "standard",
		"EXCLUDE_NAMESPACES":    excludedNS,
	})
	cfgAllAppend   = cfgAll.with(env{"IMAGE_PULL_SECRET_APPEND": "true"})
	cfgAudit       = env{"MODE": "audit", "REGISTRY": mirror}
	cfgRegistryMap = env{"REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub,quay.io=harbor.example.com/quay"}
)

// allFixture is the shared fixture running cfgAll.
func allFixture(t *testing.T) *fixture {
	t.Helper()
	return sharedFixture(t, "all", cfgAll)
}

// createAndGet creates the Pod in ns and returns it as stored.
func createAndGet(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := testContext(t)
	pods := kube.Client().CoreV1().Pods(ns)
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s* in %s (%v): %v", pod.GenerateName+pod.Name, ns, viewOf(pod), err)
	}
	got, err := pods.Get(ctx, created.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting pod %s/%s: %v", ns, created.Name, err)
	}
	return got
}

// TestPodMutation checks images, pull secrets and pull policies of Pods as
// stored, for each feature alone and all together.
func TestPodMutation(t *testing.T) {
	type podCase struct {
		name string
		spec corev1.PodSpec
		want podView
	}
	configs := []struct {
		name  string
		cfg   env
		cases []podCase
	}{
		{"images", cfgImages, []podCase{{
			name: "init and regular containers",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{c("init", "nginx:1.27", "")},
				Containers: []corev1.Container{
					c("app", "ghcr.io/org/app:v1", ""),
					c("ignored", "registry.k8s.io/pause:3.10", ""),
					c("mirrored", mirror+"/busybox:1.36", ""),
				},
			},
			want: podView{
				Init: []ctr{{"init", mirror + "/nginx:1.27", ifNotPresent}},
				Regular: []ctr{
					{"app", mirror + "/org/app:v1", ifNotPresent},
					{"ignored", "registry.k8s.io/pause:3.10", ifNotPresent},
					{"mirrored", mirror + "/busybox:1.36", ifNotPresent},
				},
			},
		}}},
		{"secret-replace", cfgSecretReplace, []podCase{{
			name: "existing secrets replaced",
			spec: corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}, ImagePullSecrets: secrets("a", "b")},
			want: podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred"}},
		}, {
			name: "no secrets",
			spec: corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}},
			want: podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred"}},
		}}},
		{"secret-append", cfgSecretAppend, []podCase{{
			// The older webhook's append patch nested an array in the
			// array, and the API server rejected the create.
			name: "appended after existing secrets",
			spec: corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}, ImagePullSecrets: secrets("a", "b")},
			want: podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}, Secrets: []string{"a", "b", "regcred"}},
		}, {
			name: "no secrets",
			spec: corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}},
			want: podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred"}},
		}, {
			name: "already present",
			spec: corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}, ImagePullSecrets: secrets("regcred", "a")},
			want: podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred", "a"}},
		}}},
		{"policy", cfgPolicy, []podCase{{
			name: "forced on init and regular containers",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{c("init", "busybox:latest", "")}, // defaults to Always
				Containers: []corev1.Container{
					c("always", "nginx:1.27", always),
					c("never", "nginx:1.27", never),
					c("untagged", "nginx", ""), // defaults to Always
				},
			},
			want: podView{
				Init: []ctr{{"init", "busybox:latest", ifNotPresent}},
				Regular: []ctr{
					{"always", "nginx:1.27", ifNotPresent},
					{"never", "nginx:1.27", ifNotPresent},
					{"untagged", "nginx", ifNotPresent},
				},
			},
		}}},
		{"all", cfgAll, []podCase{{
			name: "mixed",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{c("init", "nginx:latest", always)},
				Containers: []corev1.Container{
					c("app", "ghcr.io/org/app:v1", never),
					c("ignored", "registry.k8s.io/pause:3.10", ""),
					c("mirrored", mirror+"/busybox:1.36", always),
				},
				ImagePullSecrets: secrets("a"),
			},
			want: podView{
				Init: []ctr{{"init", mirror + "/nginx:latest", ifNotPresent}},
				Regular: []ctr{
					{"app", mirror + "/org/app:v1", ifNotPresent},
					{"ignored", "registry.k8s.io/pause:3.10", ifNotPresent},
					{"mirrored", mirror + "/busybox:1.36", ifNotPresent},
				},
				Secrets: []string{"regcred"},
			},
		}}},
		{"all-append", cfgAllAppend, []podCase{{
			name: "mixed",
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{c("init", "nginx:latest", "")},
				Containers: []corev1.Container{
					c("app", "ghcr.io/org/app:v1", never),
					c("mirrored", mirror+"/busybox:1.36", always),
				},
				ImagePullSecrets: secrets("a", "b"),
			},
			want: podView{
				Init: []ctr{{"init", mirror + "/nginx:latest", ifNotPresent}},
				Regular: []ctr{
					{"app", mirror + "/org/app:v1", ifNotPresent},
					{"mirrored", mirror + "/busybox:1.36", ifNotPresent},
				},
				Secrets: []string{"a", "b", "regcred"},
			},
		}}},
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			f := sharedFixture(t, cfg.name, cfg.cfg)
			ns := namespace(t, f.scope())
			for _, tc := range cfg.cases {
				t.Run(tc.name, func(t *testing.T) {
					got := createAndGet(t, ns, newPod("pod", tc.spec))
					checkPod(t, fmt.Sprintf("%s with %v", cfg.name, cfg.cfg), got, tc.want)
				})
			}
		})
	}
}

// TestPVCStorageClass checks that only claims naming no class get the default.
func TestPVCStorageClass(t *testing.T) {
	f := allFixture(t)
	ns := namespace(t, f.scope())
	ptr := func(s string) *string { return &s }
	tests := []struct {
		name  string
		class *string
		want  *string
	}{
		{"no class gets the default", nil, ptr("standard")},
		{"empty class left alone", ptr(""), ptr("")},
		{"other class left alone", ptr("fast"), ptr("fast")},
	}
	show := func(s *string) string {
		if s == nil {
			return "<unset>"
		}
		return strconv.Quote(*s)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			pvcs := kube.Client().CoreV1().PersistentVolumeClaims(ns)
			created, err := pvcs.Create(ctx, newPVC("claim", tt.class), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("creating PVC with storageClassName %s: %v", show(tt.class), err)
			}
			got, err := pvcs.Get(ctx, created.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("getting PVC %s/%s: %v", ns, created.Name, err)
			}
			if show(got.Spec.StorageClassName) != show(tt.want) {
				t.Errorf("stored PVC %s/%s created with storageClassName %s: storageClassName = %s, want %s",
					ns, got.Name, show(tt.class), show(got.Spec.StorageClassName), show(tt.want))
			}
		})
	}
}

// TestPodUpdate updates a Pod created before the webhook existed: a label
// change must be accepted without touching immutable fields, and a changed
// image must be rewritten.
func TestPodUpdate(t *testing.T) {
	ctx := testContext(t)
	const fixtureName = "update"
	ns := namespace(t, scopeFor(fixtureName))
	before := createAndGet(t, ns, newPod("legacy", corev1.PodSpec{
		InitContainers: []corev1.Container{c("init", "busybox:1.36", always)},
		Containers: []corev1.Container{
			c("app", "nginx:1.27", always),
			c("sidecar", "busybox:1.36", always),
		},
		ImagePullSecrets: secrets("old-secret"),
	}))
	beforeView := viewOf(before)
	checkPod(t, "created before the webhook", before, podView{
		Init:    []ctr{{"init", "busybox:1.36", always}},
		Regular: []ctr{{"app", "nginx:1.27", always}, {"sidecar", "busybox:1.36", always}},
		Secrets: []string{"old-secret"},
	})

	newFixture(t, fixtureName, cfgAll, admissionregistrationv1.Fail)
	pods := kube.Client().CoreV1().Pods(ns)

	steps := []struct {
		name   string
		change func(*corev1.Pod)
		want   podView
	}{{
		name:   "label change",
		change: func(p *corev1.Pod) { p.Labels = map[string]string{"touched": "yes"} },
		want:   beforeView,
	}, {
		name: "image change",
		change: func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Image = "busybox:1.37"
			p.Spec.Containers[0].Image = "nginx:1.28"
		},
		want: podView{
			Init: []ctr{{"init", mirror + "/busybox:1.37", always}},
			Regular: []ctr{
				{"app", mirror + "/nginx:1.28", always},
				{"sidecar", "busybox:1.36", always}, // not changed by the update, so not rewritten
			},
			Secrets: []string{"old-secret"},
		},
	}}
	for _, step := range steps {
		cur, err := pods.Get(ctx, before.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: getting pod: %v", step.name, err)
		}
		step.change(cur)
		if _, err := pods.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("%s: update of pod %s/%s (%v) rejected: %v", step.name, ns, cur.Name, viewOf(cur), err)
		}
		got, err := pods.Get(ctx, before.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: getting pod: %v", step.name, err)
		}
		checkPod(t, "after "+step.name, got, step.want)
	}
}

// TestEphemeralContainers adds debug containers the way kubectl debug does,
// through the ephemeralcontainers subresource.
func TestEphemeralContainers(t *testing.T) {
	f := allFixture(t)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	pod := createAndGet(t, ns, newPod("debug-me", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}))
	want := podView{Regular: []ctr{{"app", mirror + "/nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred"}}
	checkPod(t, "after create", pod, want)

	pods := kube.Client().CoreV1().Pods(ns)
	for _, add := range []struct {
		ephemeral corev1.EphemeralContainer
		want      ctr
	}{
		{
			corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox:1.36", ImagePullPolicy: always},
				TargetContainerName:      "app",
			},
			ctr{"debugger", mirror + "/busybox:1.36", ifNotPresent},
		},
		{
			corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "tools", Image: "ghcr.io/org/tools:v1"}},
			ctr{"tools", mirror + "/org/tools:v1", ifNotPresent},
		},
	} {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, add.ephemeral)
		if _, err := pods.UpdateEphemeralContainers(ctx, pod.Name, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("adding ephemeral container %q (%s): %v", add.ephemeral.Name, add.ephemeral.Image, err)
		}
		got, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want.Ephemeral = append(want.Ephemeral, add.want)
		checkPod(t, "after adding ephemeral container "+add.ephemeral.Name, got, want)
	}
}

// TestNamespaceExclusion checks both ways of leaving a namespace alone, with
// an ordinary namespace as the control.
func TestNamespaceExclusion(t *testing.T) {
	f := allFixture(t)
	ctx := testContext(t)
	// EXCLUDE_NAMESPACES needs a fixed name; a rerun against the same
	// cluster finds the namespace already there.
	_, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: excludedNS, Labels: f.scope()},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", excludedNS, err)
	}
	unchanged := podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}}
	mutated := podView{Regular: []ctr{{"app", mirror + "/nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred"}}
	tests := []struct {
		name string
		ns   string
		want podView
	}{
		{"EXCLUDE_NAMESPACES", excludedNS, unchanged},
		{"label " + ignoreLabel + "=true", namespace(t, f.scope(), map[string]string{ignoreLabel: "true"}), unchanged},
		{"ordinary namespace (control)", namespace(t, f.scope()), mutated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := createAndGet(t, tt.ns, newPod("pod", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}))
			checkPod(t, "in namespace "+tt.ns, got, tt.want)
		})
	}
}

// TestKubectlServerDryRun checks that kubectl's server-side dry run shows the
// mutation and stores nothing.
func TestKubectlServerDryRun(t *testing.T) {
	f := allFixture(t)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: dry-run
  namespace: %s
spec:
  containers:
  - name: app
    image: nginx:1.27
`, ns)
	path := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := kube.Kubectl(ctx, "apply", "--dry-run=server", "-f", path, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal([]byte(stdout), &pod); err != nil {
		t.Fatalf("parsing kubectl output: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	checkPod(t, "kubectl apply --dry-run=server output", &pod,
		podView{Regular: []ctr{{"app", mirror + "/nginx:1.27", ifNotPresent}}, Secrets: []string{"regcred"}})

	got, err := kube.Client().CoreV1().Pods(ns).Get(ctx, "dry-run", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("after a dry run, GET pod %s/dry-run = (%v, %v), want NotFound", ns, viewOf(orEmpty(got)), err)
	}
}

func orEmpty(p *corev1.Pod) *corev1.Pod {
	if p == nil {
		return &corev1.Pod{}
	}
	return p
}

// TestFailurePolicy stops the mutator under each failure policy, then
// restarts it on the same port and expects mutation to resume.
func TestFailurePolicy(t *testing.T) {
	tests := []struct {
		name    string
		policy  admissionregistrationv1.FailurePolicyType
		wantErr bool // Fail: the create is rejected; Ignore: stored unmutated
	}{
		{"failure-fail", admissionregistrationv1.Fail, true},
		{"failure-ignore", admissionregistrationv1.Ignore, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.policy), func(t *testing.T) {
			t.Parallel() // independent fixtures, namespaces and ports
			f := newFixture(t, tt.name, cfgImages, tt.policy)
			ctx := testContext(t)
			ns := namespace(t, f.scope())
			spec := corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}

			if err := f.mutator.stopClean(); err != nil {
				t.Fatal(err)
			}
			t.Logf("mutator stopped (exit 0) %s after SIGTERM", f.mutator.stopTook.Round(time.Millisecond))
			pods := kube.Client().CoreV1().Pods(ns)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "while-down"}, Spec: spec}
			_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
			if tt.wantErr {
				if err == nil {
					got, _ := pods.Get(ctx, pod.Name, metav1.GetOptions{})
					t.Fatalf("with failurePolicy Fail and the webhook down, creating a pod succeeded (stored %v), want it rejected", viewOf(orEmpty(got)))
				}
				for _, want := range []string{"failed calling webhook", f.hookName()} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("rejection %q does not mention %q", err, want)
					}
				}
				if _, err := pods.Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("GET of the rejected pod: %v, want NotFound", err)
				}
			} else {
				if err != nil {
					t.Fatalf("with failurePolicy Ignore and the webhook down, creating a pod failed: %v", err)
				}
				got, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				checkPod(t, "created while the webhook was down", got, podView{Regular: []ctr{{"app", "nginx:1.27", ifNotPresent}}})
			}

			began := time.Now()
			restarted, err := f.mutator.restart(ctx)
			if err != nil {
				t.Fatalf("restarting the mutator on port %d: %v", f.mutator.port, err)
			}
			f.mutator = restarted // the fixture's cleanup stops this one
			if err := f.waitActive(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("mutator restarted on port %d and called again %s later", f.mutator.port, time.Since(began).Round(time.Millisecond))
			got := createAndGet(t, ns, newPod("after-restart", spec))
			checkPod(t, "created after the restart", got, podView{Regular: []ctr{{"app", mirror + "/nginx:1.27", ifNotPresent}}})
		})
	}
}

// TestAuditMode checks that audit mode stores objects unchanged and warns
// the client about what enforce mode would do.
func TestAuditMode(t *testing.T) {
	f := sharedFixture(t, "audit", cfgAudit)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	client, warnings := warningClient(t)
	pods := client.CoreV1().Pods(ns)
	created, err := pods.Create(ctx, newPod("audited", corev1.PodSpec{Containers: []corev1.Container{c("web", "nginx:1.27", "")}}), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	got, err := pods.Get(ctx, created.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkPod(t, "audit mode", got, podView{Regular: []ctr{{"web", "nginx:1.27", ifNotPresent}}})
	const want = `image "nginx:1.27" would become "registry.example.com/mirror/nginx:1.27"`
	if !warnings.any(want) {
		t.Errorf("warnings on create = %q, want one containing %s", warnings.all(), want)
	}
	for _, w := range warnings.all() {
		t.Logf("warning: %s", w)
	}
}

// TestRegistryMap checks REGISTRY_MAP through the real API server.
func TestRegistryMap(t *testing.T) {
	f := sharedFixture(t, "registry-map", cfgRegistryMap)
	ns := namespace(t, f.scope())
	got := createAndGet(t, ns, newPod("mapped", corev1.PodSpec{Containers: []corev1.Container{
		c("web", "nginx:1.27", ""),
		c("argocd", "quay.io/argoproj/argocd:v2", ""),
		c("unmapped", "ghcr.io/org/app:v1", ""),
	}}))
	checkPod(t, fmt.Sprintf("REGISTRY_MAP=%s", cfgRegistryMap["REGISTRY_MAP"]), got, podView{Regular: []ctr{
		{"web", "harbor.example.com/dockerhub/library/nginx:1.27", ifNotPresent},
		{"argocd", "harbor.example.com/quay/argoproj/argocd:v2", ifNotPresent},
		{"unmapped", "ghcr.io/org/app:v1", ifNotPresent},
	}})
}

// TestAPIServerWebhookLatency reads the latency the API server observed for
// our webhooks from its admission histogram.
func TestAPIServerWebhookLatency(t *testing.T) {
	f := allFixture(t)
	ns := namespace(t, f.scope())
	createAndGet(t, ns, newPod("measured", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}))

	metrics, err := kube.Metrics(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	const metric = "apiserver_admission_webhook_admission_duration_seconds"
	series := webhookSeries(metrics, metric)
	stats := map[string]histogramStats{}
	for _, s := range series {
		st := stats[s.webhook]
		switch s.suffix {
		case "_sum":
			st.sum += s.value
		case "_count":
			st.count += s.value
		}
		stats[s.webhook] = st
		// Buckets only for the webhook under test; sum and count for all.
		if s.webhook == f.hookName() || s.suffix != "_bucket" {
			t.Logf("%s", s.line)
		}
	}
	names := make([]string, 0, len(stats))
	for name := range stats {
		names = append(names, name)
	}
	sort.Strings(names)
	var total histogramStats
	for _, name := range names {
		s := stats[name]
		total.sum += s.sum
		total.count += s.count
		t.Logf("webhook %s: %.0f calls, mean %s", name, s.count, s.mean())
	}
	t.Logf("all e2e webhooks: %.0f calls, mean %s", total.count, total.mean())
	if s := stats[f.hookName()]; s.count <= 0 {
		t.Errorf("%s_count for webhook %s = %v, want > 0 (webhooks seen: %q)", metric, f.hookName(), s.count, names)
	}
}

type histogramStats struct{ sum, count float64 }

func (s histogramStats) mean() string {
	if s.count == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fms", s.sum/s.count*1000)
}

// series is one sample line of a counter or a histogram.
type series struct {
	line    string
	suffix  string // _bucket, _sum or _count; "" for a counter
	webhook string // the name label
	value   float64
}

var nameLabel = regexp.MustCompile(`[{,]name="([^"]*)"`)

// webhookSeries returns the sample lines of histogram metric whose name
// label is one of this package's webhooks.
func webhookSeries(exposition, metric string) []series {
	var out []series
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric)
		if !ok {
			continue
		}
		suffix, _, ok := strings.Cut(rest, "{")
		if !ok || (suffix != "" && suffix != "_bucket" && suffix != "_sum" && suffix != "_count") {
			continue
		}
		m := nameLabel.FindStringSubmatch(line)
		if m == nil || !strings.HasSuffix(m[1], ".e2e.mutator.dev") {
			continue
		}
		value, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		out = append(out, series{line: line, suffix: suffix, webhook: m[1], value: value})
	}
	return out
}
