package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// `mutator policy` parity: the admission corpus of this package (every
// rule, the bypass cases, UPDATE and ephemeral containers) goes through the
// real kube-apiserver twice, once in a namespace of a mutator webhook and
// once in a namespace of the policies `mutator policy` prints for the same
// configuration, and what the API server stores (or the refusal) must be
// the same, object by object.

// policyScopeLabel ties a namespace to one printed policy set: the test adds
// it to the bindings' namespaceSelector, so that the policies act on the
// parity namespaces only.
const policyScopeLabel = "e2e.mutator.dev/policy"

// parityExcluded are EXCLUDE_NAMESPACES of the parity configurations: one
// in each mode's scope.
var parityExcluded = [2]string{"e2e-parity-excluded-webhook", "e2e-parity-excluded-policy"}

// The parity configurations: REGISTRY with everything, the append mode,
// REGISTRY_MAP alone (registries not listed left alone), and REGISTRY_MAP
// with "*", IGNORED_REGISTRIES normalisation and pull policy Always.
var parityConfigs = []struct {
	name string
	cfg  env
}{
	{"parity-all", cfgAll.with(env{"EXCLUDE_NAMESPACES": strings.Join(parityExcluded[:], ",")})},
	{"parity-append", cfgAllAppend.with(env{"EXCLUDE_NAMESPACES": ""})},
	{"parity-map", cfgRegistryMap},
	{"parity-map-star", env{
		"REGISTRY":                   mirror,
		"REGISTRY_MAP":               "docker.io=harbor.example.com/dockerhub,Quay.io:443=harbor.example.com/quay,*=harbor.example.com/other",
		"IGNORED_REGISTRIES":         "docker.io/library/busybox,registry.k8s.io,ghcr.io/allowed/",
		"FORCE_IMAGE_PULL_POLICY":    "true",
		"IMAGE_PULL_POLICY_TO_FORCE": "Always",
	}},
}

// parityRefusals are configurations `mutator policy` must refuse.
var parityRefusals = []struct {
	name string
	cfg  env
	want string // in the refusal
}{
	{"audit mode", cfgAudit, "MODE=audit"},
	{"warnings", cfgImages.with(env{"WARNINGS": "true"}), "WARNINGS=true"},
	{"CloudEvents audit trail", cfgImages.with(env{"K_SINK": "http://127.0.0.1:1/"}), "K_SINK"},
	{"mirror check", cfgImages.with(env{"MIRROR_CHECK": "true"}), "MIRROR_CHECK"},
	{"nothing configured", env{"LOG_LEVEL": "info"}, "no rule is configured"},
}

// longName is pullable, but its rewrite under any registry with a path is
// not: the path passes 255 characters.
var longName = "evil.example.com/" + strings.Repeat("a", 250) + ":1"

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// parityPods is the Pod corpus: TestPodMutation, the provenance tests and
// the normalisation cases of the table in docs/rules.md.
func parityPods() []struct {
	name string
	spec corev1.PodSpec
} {
	imageVolume := func(name, ref string, policy corev1.PullPolicy) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: ref, PullPolicy: policy}}}
	}
	return []struct {
		name string
		spec corev1.PodSpec
	}{
		{"init and regular containers", corev1.PodSpec{
			InitContainers: []corev1.Container{c("init", "nginx:1.27", "")},
			Containers:     []corev1.Container{c("app", "ghcr.io/org/app:v1", ""), c("ignored", "registry.k8s.io/pause:3.10", ""), c("mirrored", mirror+"/busybox:1.36", "")},
		}},
		{"secrets replaced", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}, ImagePullSecrets: secrets("a", "b")}},
		{"secret already first", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}, ImagePullSecrets: secrets("regcred", "a")}},
		{"secret alone", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}, ImagePullSecrets: secrets("regcred")}},
		{"policies", corev1.PodSpec{
			InitContainers: []corev1.Container{c("init", "busybox:latest", "")},
			Containers:     []corev1.Container{c("always", "nginx:1.27", always), c("never", "nginx:1.27", never), c("untagged", "nginx", ""), c("ifnp", "nginx:1", ifNotPresent)},
		}},
		{"docker hub spellings", corev1.PodSpec{Containers: []corev1.Container{
			c("bare", "nginx", ""), c("library", "library/nginx:1", ""), c("docker-io", "docker.io/nginx:1", ""),
			c("index", "index.docker.io/library/nginx:1", ""), c("upper-docker-io", "Docker.io/nginx:1", ""),
			c("namespace", "bitnami/redis:7", ""), c("busybox", "busybox:1.36", ""), c("busybox-sub", "docker.io/library/busybox/x:1", ""),
		}}},
		{"registry hosts", corev1.PodSpec{Containers: []corev1.Container{
			c("localhost-port", "localhost:5000/x", ""), c("localhost", "localhost/x:1", ""), c("ipv6", "[::1]:5000/x:1", ""),
			c("quay", "quay.io/argoproj/argocd:v2", ""), c("quay-443", "QUAY.io:443/x/y:1", ""), c("ghcr-allowed", "ghcr.io/allowed/x:1", ""),
			c("ghcr-allowed-prefix", "ghcr.io/allowedx/y:1", ""), c("not-a-host", "a_b.com/x:1", ""),
		}}},
		{"mirror spellings", corev1.PodSpec{Containers: []corev1.Container{
			c("exact", mirror+"/nginx:1.27", ""), c("case-and-port", "Registry.Example.com:443/mirror/nginx:1.27", ""),
			c("component-boundary", "registry.example.com/mirrorx/nginx:1", ""), c("suffix-host", "registry.example.com.evil.io/x", ""),
			c("harbor", "harbor.example.com/dockerhub/library/nginx:1", ""),
		}}},
		{"upper-case hosts", corev1.PodSpec{
			InitContainers: []corev1.Container{c("init", "LOCALHOST/evil:1", "")},
			Containers:     []corev1.Container{c("app", "Evil/payload:1", ""), c("side", "LocalHost/x:1", "")},
		}},
		{"tags and digests", corev1.PodSpec{Containers: []corev1.Container{
			c("digest", "app@"+digest, ""), c("tag-digest", "ghcr.io/org/app:v1@"+digest, ""),
			c("sha512", "x@sha512:"+strings.Repeat("ab", 64), ""), c("long-tag", "nginx:"+strings.Repeat("t", 128), ""),
		}}},
		{"unparsable left alone", corev1.PodSpec{Containers: []corev1.Container{
			c("spaces", "Not A Valid/Image", ""), c("upper-path", "ghcr.io/Org/app:1", ""), c("id", strings.Repeat("a", 64), ""),
			c("md5", "x@md5:"+strings.Repeat("c", 32), ""), c("tag-too-long", "nginx:"+strings.Repeat("t", 129), ""), c("non-ascii", "ghcr.io/é/x", ""),
		}}},
		{"image volumes", corev1.PodSpec{
			Containers: []corev1.Container{c("db", "ghcr.io/cloudnative-pg/postgresql:17", "")},
			Volumes: []corev1.Volume{
				imageVolume("ext", "ghcr.io/cloudnative-pg/postgis-extension:3.5", always),
				imageVolume("hub", "nginx:1", ""),
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		}},
		{"overlong rewrite in a container", corev1.PodSpec{Containers: []corev1.Container{c("ok", "nginx:1", ""), c("app", longName, "")}}},
		{"overlong rewrite in an image volume", corev1.PodSpec{
			Containers: []corev1.Container{c("app", "nginx", "")},
			Volumes:    []corev1.Volume{imageVolume("data", longName, "")},
		}},
		{"longer than any reference", corev1.PodSpec{Containers: []corev1.Container{c("app", "x/"+strings.Repeat("y", 800), "")}}},
		{"path exactly 255 after the rewrite", corev1.PodSpec{Containers: []corev1.Container{
			c("app", "evil.example.com/"+strings.Repeat("a", 255-len("mirror/")), ""),
			c("map", "quay.io/"+strings.Repeat("b", 255-len("quay/")), ""),
		}}},
	}
}

// parityPVCs is the claim corpus of TestPVCStorageClass, with the beta
// annotation.
func parityPVCs() []struct {
	name        string
	class       *string
	annotations map[string]string
} {
	ptr := func(s string) *string { return &s }
	return []struct {
		name        string
		class       *string
		annotations map[string]string
	}{
		{"no class", nil, nil},
		{"empty class", ptr(""), nil},
		{"other class", ptr("fast"), nil},
		{"beta annotation", nil, map[string]string{"volume.beta.kubernetes.io/storage-class": "slow"}},
	}
}

// parityTally counts the cases of one configuration.
type parityTally struct {
	equal, denied int
	differ        []string
}

// TestPolicyParity is the parity test; it also logs the API server's
// policy metrics. TestPolicyLatency measures what each mode costs.
func TestPolicyParity(t *testing.T) {
	table := map[string]*parityTally{}
	var order []string
	t.Run("refusals", func(t *testing.T) {
		for _, r := range parityRefusals {
			t.Run(r.name, func(t *testing.T) {
				stdout, stderr, err := runPolicyCommand(t, r.cfg)
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Fatalf("mutator policy with %v: %v, want exit status 1\nstderr: %s", r.cfg, err, stderr)
				}
				if len(stdout) > 0 {
					t.Errorf("a refusal printed %d bytes on stdout, want none:\n%s", len(stdout), stdout)
				}
				if !strings.Contains(stderr, r.want) {
					t.Errorf("refusal %q does not name %q", stderr, r.want)
				}
				t.Logf("refused: %s", strings.TrimSpace(stderr))
			})
		}
	})
	for _, pc := range parityConfigs {
		tally := &parityTally{}
		table[pc.name], order = tally, append(order, pc.name)
		t.Run(pc.name, func(t *testing.T) {
			m := setUpParity(t, pc.name, pc.cfg)
			t.Run("pods", func(t *testing.T) {
				for _, tc := range parityPods() {
					compareCreate(t, m, tally, tc.name, tc.spec)
				}
			})
			t.Run("pvcs", func(t *testing.T) {
				for _, tc := range parityPVCs() {
					comparePVC(t, m, tally, tc.name, tc.class, tc.annotations)
				}
			})
			t.Run("update", func(t *testing.T) { compareUpdate(t, m, tally) })
			t.Run("ephemeral", func(t *testing.T) { compareEphemeral(t, m, tally) })
			t.Run("namespaces", func(t *testing.T) { compareNamespaces(t, m, tally, pc.cfg) })
		})
	}
	t.Logf("parity table (stored objects compared, webhook vs policy):")
	t.Logf("  %-16s %6s %14s %8s", "configuration", "equal", "of which denied", "differ")
	for _, name := range order {
		s := table[name]
		t.Logf("  %-16s %6d %14d %8d", name, s.equal, s.denied, len(s.differ))
		for _, d := range s.differ {
			t.Logf("    differs: %s", d)
		}
	}
	t.Logf("  refused by mutator policy: %d configurations (%s)", len(parityRefusals), refusalNames())
	t.Run("metrics", logPolicyMetrics)
}

func refusalNames() string {
	var names []string
	for _, r := range parityRefusals {
		names = append(names, r.name)
	}
	return strings.Join(names, ", ")
}

// runPolicyCommand runs `mutator policy` with cfg as its whole environment.
func runPolicyCommand(t *testing.T, cfg env) (stdout, stderr string, err error) {
	t.Helper()
	return runMutatorCommand(t, cfg, "policy")
}

// runMutatorBinary runs the mutator binary with args and cfg as its whole
// environment.
func runMutatorBinary(ctx context.Context, cfg env, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, mutatorBin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range cfg {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errBuf
	err = cmd.Run()
	return out.String(), errBuf.String(), err
}

// parityModes are the two namespaces of a configuration: one under the
// webhook, one under the printed policies.
type parityModes struct {
	name             string
	webhook, policy  map[string]string // scope labels
	webhookNS, polNS string
	hasImages        bool
}

// setUpParity starts (or reuses) the webhook for cfg, applies the policies
// `mutator policy` prints for it, scoped to this configuration's policy
// namespaces, and waits until both act.
func setUpParity(t *testing.T, name string, cfg env) *parityModes {
	t.Helper()
	ctx := testContext(t)
	f := sharedFixture(t, name, cfg)
	m := &parityModes{
		name:      name,
		webhook:   f.scope(),
		policy:    map[string]string{policyScopeLabel: name},
		hasImages: cfg["REGISTRY"] != "" || cfg["REGISTRY_MAP"] != "",
	}
	stdout, stderr, err := runPolicyCommand(t, cfg)
	if err != nil {
		t.Fatalf("mutator policy with %v: %v\n%s", cfg, err, stderr)
	}
	began := time.Now()
	applyPolicies(t, ctx, name, stdout)
	m.webhookNS = namespace(t, m.webhook)
	m.polNS = namespace(t, m.policy)
	if err := waitPolicyActive(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Logf("policies for %s active %s after the create", name, time.Since(began).Round(time.Millisecond))
	return m
}

// applyPolicies creates the printed objects, renamed after the
// configuration and with the bindings scoped to policyScopeLabel=name, and
// deletes them when the test ends.
func applyPolicies(t *testing.T, ctx context.Context, name, stream string) {
	t.Helper()
	applyEditedPolicies(t, ctx, name, stream, nil)
}

// applyEditedPolicies is applyPolicies with edit, if not nil, called on
// each decoded object before it is renamed and created.
func applyEditedPolicies(t *testing.T, ctx context.Context, name, stream string, edit func(obj any)) {
	t.Helper()
	if edit == nil {
		edit = func(any) {}
	}
	client := kube.Client().AdmissionregistrationV1()
	rename := func(n string) string { return n + "-" + name }
	scope := metav1.LabelSelectorRequirement{Key: policyScopeLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{name}}
	var cleanups []func(context.Context) error
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, c := range slices.Backward(cleanups) {
			if err := c(ctx); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting policy objects of %s: %v", name, err)
			}
		}
	})
	docs := strings.Split(stream, "\n---\n")
	kinds := map[string]int{}
	for _, doc := range docs[1:] {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("decoding printed document: %v\n%s", err, doc)
		}
		kinds[meta.Kind]++
		var err error
		switch meta.Kind {
		case "MutatingAdmissionPolicy":
			var p admissionregistrationv1.MutatingAdmissionPolicy
			if err = yaml.UnmarshalStrict([]byte(doc), &p); err == nil {
				edit(&p)
				p.Name = rename(p.Name)
				_, err = client.MutatingAdmissionPolicies().Create(ctx, &p, metav1.CreateOptions{})
				cleanups = append(cleanups, func(ctx context.Context) error {
					return client.MutatingAdmissionPolicies().Delete(ctx, p.Name, metav1.DeleteOptions{})
				})
			}
		case "MutatingAdmissionPolicyBinding":
			var b admissionregistrationv1.MutatingAdmissionPolicyBinding
			if err = yaml.UnmarshalStrict([]byte(doc), &b); err == nil {
				edit(&b)
				b.Name, b.Spec.PolicyName = rename(b.Name), rename(b.Spec.PolicyName)
				sel := b.Spec.MatchResources.NamespaceSelector
				sel.MatchExpressions = append(sel.MatchExpressions, scope)
				_, err = client.MutatingAdmissionPolicyBindings().Create(ctx, &b, metav1.CreateOptions{})
				cleanups = append(cleanups, func(ctx context.Context) error {
					return client.MutatingAdmissionPolicyBindings().Delete(ctx, b.Name, metav1.DeleteOptions{})
				})
			}
		case "ValidatingAdmissionPolicy":
			var p admissionregistrationv1.ValidatingAdmissionPolicy
			if err = yaml.UnmarshalStrict([]byte(doc), &p); err == nil {
				edit(&p)
				p.Name = rename(p.Name)
				_, err = client.ValidatingAdmissionPolicies().Create(ctx, &p, metav1.CreateOptions{})
				cleanups = append(cleanups, func(ctx context.Context) error {
					return client.ValidatingAdmissionPolicies().Delete(ctx, p.Name, metav1.DeleteOptions{})
				})
			}
		case "ValidatingAdmissionPolicyBinding":
			var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
			if err = yaml.UnmarshalStrict([]byte(doc), &b); err == nil {
				edit(&b)
				b.Name, b.Spec.PolicyName = rename(b.Name), rename(b.Spec.PolicyName)
				sel := b.Spec.MatchResources.NamespaceSelector
				sel.MatchExpressions = append(sel.MatchExpressions, scope)
				_, err = client.ValidatingAdmissionPolicyBindings().Create(ctx, &b, metav1.CreateOptions{})
				cleanups = append(cleanups, func(ctx context.Context) error {
					return client.ValidatingAdmissionPolicyBindings().Delete(ctx, b.Name, metav1.DeleteOptions{})
				})
			}
		default:
			t.Fatalf("mutator policy printed a %q", meta.Kind)
		}
		if err != nil {
			t.Fatalf("creating printed %s: %v", meta.Kind, err)
		}
	}
	t.Logf("mutator policy for %s printed %v (%d bytes)", name, kinds, len(stream))
}

// waitPolicyActive polls dry-run creates in the policy namespace until the
// policies act: the probe Pod comes back changed and, with image rules, an
// overlong rewrite is refused and an UPDATE of an image is rewritten (the
// API server loads each policy on its own: one acting says nothing of the
// others).
func waitPolicyActive(ctx context.Context, m *parityModes) error {
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	pods := kube.Client().CoreV1().Pods(m.polNS)
	last := "no probe yet"
	var updated *corev1.Pod
	err := cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		pod, err := pods.Create(ctx, newPod("probe", corev1.PodSpec{Containers: []corev1.Container{c("probe", probeImage, "")}}), dryRun)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if ctr := pod.Spec.Containers[0]; ctr.Image == probeImage && ctr.ImagePullPolicy == always && len(pod.Spec.ImagePullSecrets) == 0 {
			last = "the probe pod came back unchanged"
			return false, nil
		}
		if !m.hasImages {
			return true, nil
		}
		_, err = pods.Create(ctx, newPod("probe", corev1.PodSpec{Containers: []corev1.Container{c("probe", "x/"+strings.Repeat("y", 800), "")}}), dryRun)
		if err == nil {
			last = "the provenance policy admitted an overlong image"
			return false, nil
		}
		if updated == nil {
			if updated, err = pods.Create(ctx, newPod("probe", corev1.PodSpec{Containers: []corev1.Container{c("probe", probeImage, "")}}), metav1.CreateOptions{}); err != nil {
				last = err.Error()
				return false, nil
			}
		}
		patch := fmt.Appendf(nil, `{"spec":{"containers":[{"name":"probe","image":%q}]}}`, probeImage+":2")
		pod, err = pods.Patch(ctx, updated.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || pod.Spec.Containers[0].Image == probeImage+":2" {
			last = fmt.Sprintf("an UPDATE of the image was not rewritten (%v)", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the policies of %s (last: %s): %w", m.name, last, err)
	}
	return nil
}

// outcome is what the API server did with one request: the stored object's
// spec as JSON, or the refusal.
type outcome struct {
	spec string
	err  error
}

func (o outcome) String() string {
	if o.err != nil {
		return "refused: " + o.err.Error()
	}
	return o.spec
}

// equalOutcomes compares two outcomes: the same stored spec, or both
// refused with the same HTTP status.
func equalOutcomes(a, b outcome) bool {
	if a.err != nil || b.err != nil {
		return a.err != nil && b.err != nil && apierrors.ReasonForError(a.err) == apierrors.ReasonForError(b.err) &&
			statusCode(a.err) == statusCode(b.err)
	}
	return a.spec == b.spec
}

func statusCode(err error) int32 {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Code
	}
	return 0
}

func specJSON(t *testing.T, spec any) string {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// record compares the outcomes of one case and counts it.
func record(t *testing.T, m *parityModes, tally *parityTally, what string, web, pol outcome) {
	t.Helper()
	if !equalOutcomes(web, pol) {
		tally.differ = append(tally.differ, what)
		t.Errorf("%s / %s: the API server stored different results\n  webhook: %v\n  policy:  %v", m.name, what, web, pol)
		return
	}
	tally.equal++
	if web.err != nil {
		tally.denied++
		t.Logf("%s: both refused\n  webhook: %v\n  policy:  %v", what, web.err, pol.err)
	}
}

// createPod creates the Pod in ns and returns the stored spec, or the refusal.
func createPod(t *testing.T, ns string, spec corev1.PodSpec) (outcome, *corev1.Pod) {
	t.Helper()
	ctx := testContext(t)
	pods := kube.Client().CoreV1().Pods(ns)
	created, err := pods.Create(ctx, newPod("parity", *spec.DeepCopy()), metav1.CreateOptions{})
	if err != nil {
		return outcome{err: err}, nil
	}
	got, err := pods.Get(ctx, created.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting pod %s/%s: %v", ns, created.Name, err)
	}
	return outcome{spec: specJSON(t, got.Spec)}, got
}

func compareCreate(t *testing.T, m *parityModes, tally *parityTally, name string, spec corev1.PodSpec) {
	t.Helper()
	web, _ := createPod(t, m.webhookNS, spec)
	pol, _ := createPod(t, m.polNS, spec)
	record(t, m, tally, "create pod: "+name, web, pol)
}

func comparePVC(t *testing.T, m *parityModes, tally *parityTally, name string, class *string, annotations map[string]string) {
	t.Helper()
	ctx := testContext(t)
	get := func(ns string) outcome {
		pvc := newPVC("parity", class)
		pvc.Annotations = annotations
		pvcs := kube.Client().CoreV1().PersistentVolumeClaims(ns)
		created, err := pvcs.Create(ctx, pvc, metav1.CreateOptions{})
		if err != nil {
			return outcome{err: err}
		}
		got, err := pvcs.Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("getting PVC %s/%s: %v", ns, created.Name, err)
		}
		return outcome{spec: specJSON(t, got.Spec) + " annotations=" + specJSON(t, got.Annotations)}
	}
	record(t, m, tally, "create pvc: "+name, get(m.webhookNS), get(m.polNS))
}

// compareUpdate is TestPodUpdate in both modes: Pods created before their
// namespace came under the webhook or the policy, then updated (a label,
// changed images, an upper-case host and an overlong image by a strategic
// merge patch, as kubectl patch sends it).
func compareUpdate(t *testing.T, m *parityModes, tally *parityTally) {
	ctx := testContext(t)
	legacy := corev1.PodSpec{
		InitContainers:   []corev1.Container{c("init", "busybox:1.36", always)},
		Containers:       []corev1.Container{c("app", "nginx:1.27", always), c("sidecar", "busybox:1.36", always)},
		ImagePullSecrets: secrets("old-secret"),
	}
	type side struct {
		ns, pod string
		scope   map[string]string
	}
	sides := []*side{{scope: m.webhook}, {scope: m.policy}}
	for _, s := range sides {
		s.ns = namespace(t) // out of scope for now
		out, pod := createPod(t, s.ns, legacy)
		if out.err != nil {
			t.Fatalf("creating the legacy pod: %v", out.err)
		}
		s.pod = pod.Name
	}
	// Bring both namespaces under their mode, and wait until a dry run
	// shows it (the API server sees namespace labels through an informer).
	for _, s := range sides {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": s.scope}})
		if _, err := kube.Client().CoreV1().Namespaces().Patch(ctx, s.ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		err := cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
			pod, err := kube.Client().CoreV1().Pods(s.ns).Create(ctx, newPod("probe", corev1.PodSpec{Containers: []corev1.Container{c("probe", probeImage, "")}}),
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				return false, nil
			}
			p := pod.Spec.Containers[0]
			return p.Image != probeImage || p.ImagePullPolicy != always || len(pod.Spec.ImagePullSecrets) > 0, nil
		})
		if err != nil {
			t.Fatalf("namespace %s never came under its mode: %v", s.ns, err)
		}
	}
	steps := []struct {
		name  string
		patch string // strategic merge patch
	}{
		{"label only", `{"metadata":{"labels":{"touched":"yes"}}}`},
		{"images changed", `{"spec":{"initContainers":[{"name":"init","image":"busybox:1.37"}],"containers":[{"name":"app","image":"nginx:1.28"}]}}`},
		{"upper-case host", `{"spec":{"containers":[{"name":"app","image":"EVIL/x:2"}]}}`},
		{"same image again", `{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}`},
		{"overlong rewrite", fmt.Sprintf(`{"spec":{"containers":[{"name":"sidecar","image":%q}]}}`, longName)},
		{"to the mirror", fmt.Sprintf(`{"spec":{"containers":[{"name":"sidecar","image":%q}]}}`, mirror+"/busybox:1.37")},
	}
	for _, step := range steps {
		var outs []outcome
		for _, s := range sides {
			pods := kube.Client().CoreV1().Pods(s.ns)
			_, err := pods.Patch(ctx, s.pod, types.StrategicMergePatchType, []byte(step.patch), metav1.PatchOptions{})
			if err != nil {
				outs = append(outs, outcome{err: err})
				continue
			}
			got, err := pods.Get(ctx, s.pod, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, outcome{spec: specJSON(t, got.Spec) + " labels=" + specJSON(t, got.Labels)})
		}
		record(t, m, tally, "update: "+step.name, outs[0], outs[1])
	}
}

// compareEphemeral is TestEphemeralContainers in both modes, through the
// ephemeralcontainers subresource as kubectl debug uses it.
func compareEphemeral(t *testing.T, m *parityModes, tally *parityTally) {
	ctx := testContext(t)
	var names [2]string
	nss := [2]string{m.webhookNS, m.polNS}
	for i, ns := range nss {
		out, pod := createPod(t, ns, corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}})
		if out.err != nil {
			t.Fatalf("creating the pod to debug: %v", out.err)
		}
		names[i] = pod.Name
	}
	adds := []corev1.EphemeralContainer{
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox:1.36", ImagePullPolicy: always}, TargetContainerName: "app"},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "tools", Image: "ghcr.io/org/tools:v1"}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "upper", Image: "Evil/debug:1"}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "overlong", Image: longName}},
	}
	for _, add := range adds {
		var outs []outcome
		for i, ns := range nss {
			pods := kube.Client().CoreV1().Pods(ns)
			cur, err := pods.Get(ctx, names[i], metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, add)
			if _, err := pods.UpdateEphemeralContainers(ctx, names[i], cur, metav1.UpdateOptions{}); err != nil {
				outs = append(outs, outcome{err: err})
				continue
			}
			got, err := pods.Get(ctx, names[i], metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, outcome{spec: specJSON(t, got.Spec)})
		}
		record(t, m, tally, "ephemeral container: "+add.Name, outs[0], outs[1])
	}
}

// compareNamespaces checks the ways of leaving a namespace alone:
// EXCLUDE_NAMESPACES (where configured) and the opt-out label.
func compareNamespaces(t *testing.T, m *parityModes, tally *parityTally, cfg env) {
	ctx := testContext(t)
	spec := corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}
	opted := func(scope map[string]string) string {
		return namespace(t, scope, map[string]string{ignoreLabel: "true"})
	}
	web, _ := createPod(t, opted(m.webhook), spec)
	pol, _ := createPod(t, opted(m.policy), spec)
	record(t, m, tally, "namespace labelled "+ignoreLabel+"=true", web, pol)
	if !strings.Contains(cfg["EXCLUDE_NAMESPACES"], parityExcluded[0]) {
		return
	}
	for i, scope := range []map[string]string{m.webhook, m.policy} {
		_, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: parityExcluded[i], Labels: scope},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	web, _ = createPod(t, parityExcluded[0], spec)
	pol, _ = createPod(t, parityExcluded[1], spec)
	record(t, m, tally, "EXCLUDE_NAMESPACES", web, pol)
	// The control: the same Pod is changed in an ordinary namespace.
	if web.err == nil && strings.Contains(web.spec, mirror) {
		t.Errorf("a pod in the excluded namespace %s was mutated: %s", parityExcluded[0], web.spec)
	}
}

// logPolicyMetrics logs what the API server reports about the policies:
// the check counters and latency histograms of the mutating and validating
// admission policy plugins, and CEL compilation and evaluation times.
func logPolicyMetrics(t *testing.T) {
	metrics, err := kube.Metrics(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	for line := range strings.SplitSeq(metrics, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "parity-") && (strings.HasPrefix(line, "apiserver_mutating_admission_policy_") || strings.HasPrefix(line, "apiserver_validating_admission_policy_")) ||
			strings.HasPrefix(line, "apiserver_cel_") {
			if strings.Contains(line, "_bucket{") && !strings.Contains(line, `le="+Inf"`) {
				continue
			}
			seen++
			t.Logf("%s", line)
		}
	}
	if seen == 0 {
		t.Errorf("the API server reports no admission policy metrics for the parity policies")
	}
}
