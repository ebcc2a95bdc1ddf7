package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// TestPolicyLatency measures, on the real kube-apiserver, what each way of
// applying the rules adds to a Pod create (an init container and two
// containers, one pull secret) and to a label-only update, over a namespace
// with no admission at all: the webhook, the policies of `mutator policy`
// (reinvocationPolicy Never, the default, and IfNeeded), the webhook with
// the image guard of `mutator policy --guard`, the policies as printed
// before issue #21 (testdata/policies-before-21.yaml) as they are and with
// reinvocationPolicy Never (what the API server change in hack/ would make
// of them), and a trivial MutatingAdmissionPolicy (one constant patch: the
// API server's own cost for any policy that patches).
//
// The modes are interleaved request by request in one run, so that
// whatever else loads the machine loads all of them alike, in an order
// shuffled anew for every round of requests (with a fixed seed): a request
// leaves work behind (garbage for the collector, above all), which the
// next one pays for, and a fixed order would charge each mode for its
// predecessor's. Timings are logged, never asserted. E2E_LATENCY_RUNS
// (default 1) repeats the measurement and E2E_LATENCY_REQUESTS sets the
// requests per mode and run (default 40, to keep the suite short; the
// figures of docs/policies.md are of 300). Then, mode by mode, 50 creates
// and 50 label-only updates are counted in the API server's metrics:
// mutations evaluated, matchConditions that decided against, webhook calls
// and rounds of the mutating chain per request. The mutation counts are
// asserted where they are the point of the design: one per create and
// none per label-only update for the policies, two of each before #21.
func TestPolicyLatency(t *testing.T) {
	runs := envInt(t, "E2E_LATENCY_RUNS", 1)
	n := envInt(t, "E2E_LATENCY_REQUESTS", 40)
	modes := setUpLatencyModes(t)
	client := protobufClient(t)

	spec := corev1.PodSpec{
		InitContainers:   []corev1.Container{c("init", "busybox:1.36", "")},
		Containers:       []corev1.Container{c("app", "ghcr.io/org/app:v1", ""), c("sidecar", "nginx:1.27", "")},
		ImagePullSecrets: secrets("a"),
	}
	type sample struct{ create, update []time.Duration }
	rng := rand.New(rand.NewPCG(21, 20))
	order := make([]int, len(modes))
	for j := range order {
		order[j] = j
	}
	added := make([][2][]time.Duration, len(modes)) // per mode: create, update p50 minus the floor's, per run
	for run := range runs {
		const warmup = 20
		samples := make([]sample, len(modes))
		pods := make([][]string, len(modes))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		for i := range warmup + n {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			for _, j := range order {
				m := modes[j]
				began := time.Now()
				created, err := client.CoreV1().Pods(m.ns).Create(ctx, newPod("latency", spec), metav1.CreateOptions{})
				took := time.Since(began)
				if err != nil {
					cancel()
					t.Fatalf("%s: create %d: %v", m.name, i, err)
				}
				if i == 0 && run == 0 {
					m.checkCreated(t, created)
				}
				pods[j] = append(pods[j], created.Name)
				if i >= warmup {
					samples[j].create = append(samples[j].create, took)
				}
			}
		}
		for i := range warmup + n {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			for _, j := range order {
				patch := fmt.Appendf(nil, `{"metadata":{"labels":{"touched":"%d"}}}`, run)
				began := time.Now()
				_, err := client.CoreV1().Pods(modes[j].ns).Patch(ctx, pods[j][i], types.MergePatchType, patch, metav1.PatchOptions{})
				took := time.Since(began)
				if err != nil {
					cancel()
					t.Fatalf("%s: label-only update %d: %v", modes[j].name, i, err)
				}
				if i >= warmup {
					samples[j].update = append(samples[j].update, took)
				}
			}
		}
		cancel()
		t.Logf("run %d of %d: %d creates and %d label-only updates per mode, interleaved (init + 2 containers, 1 pull secret):", run+1, runs, n, n)
		t.Logf("  %-26s %9s %9s %9s   %9s %9s %9s", "mode", "create", "p99", "added", "update", "p99", "added")
		floor := [2]time.Duration{quantile(samples[0].create, 0.5), quantile(samples[0].update, 0.5)}
		for j, m := range modes {
			c50, u50 := quantile(samples[j].create, 0.5), quantile(samples[j].update, 0.5)
			added[j][0] = append(added[j][0], c50-floor[0])
			added[j][1] = append(added[j][1], u50-floor[1])
			t.Logf("  %-26s %9s %9s %9s   %9s %9s %9s", m.name,
				ms(c50), ms(quantile(samples[j].create, 0.99)), ms(c50-floor[0]),
				ms(u50), ms(quantile(samples[j].update, 0.99)), ms(u50-floor[1]))
		}
	}
	if runs > 1 {
		t.Logf("added at p50 over %q, median of %d runs [lowest, highest]:", modes[0].name, runs)
		t.Logf("  %-26s %-28s %-28s", "mode", "create", "label-only update")
		for j, m := range modes[1:] {
			t.Logf("  %-26s %-28s %-28s", m.name, spread(added[j+1][0]), spread(added[j+1][1]))
		}
	}
	countEvaluations(t, client, modes, spec)
}

// latencyMode is one namespace of TestPolicyLatency and what acts in it.
type latencyMode struct {
	name string
	ns   string
	// What the mode's admission is made of, by the names the API server's
	// metrics use.
	maps, vaps []string
	hook       string
	// rewrites says whether a create comes back rewritten.
	rewrites bool
	// wantMutations is the mutations per create and per label-only update
	// the API server must count; nil: only logged.
	wantMutations *[2]float64
}

func (m *latencyMode) checkCreated(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if got := strings.HasPrefix(pod.Spec.Containers[0].Image, mirror+"/"); got != m.rewrites {
		t.Fatalf("%s: the first create stored image %q; rewritten: %v, want %v", m.name, pod.Spec.Containers[0].Image, got, m.rewrites)
	}
}

// setUpLatencyModes creates the namespaces and what acts in them.
func setUpLatencyModes(t *testing.T) []*latencyMode {
	t.Helper()
	ctx := testContext(t)
	cfg := cfgAll.with(env{"LOG_LEVEL": "info"})
	f := sharedFixture(t, "latency", cfg)
	modes := []*latencyMode{
		{name: "no admission", ns: namespace(t)},
		{name: "webhook", ns: namespace(t, f.scope()), hook: f.hookName(), rewrites: true},
	}
	policies := func(mode, name string, stream string, edit func(any), want *[2]float64) {
		applyEditedPolicies(t, ctx, name, stream, edit)
		m := &latencyMode{
			name: mode, ns: namespace(t, map[string]string{policyScopeLabel: name}), rewrites: true, wantMutations: want,
			maps: []string{"mutator-pods-" + name, "mutator-pod-updates-" + name}, vaps: []string{"mutator-provenance-" + name},
		}
		if err := waitPolicyActive(ctx, &parityModes{name: name, polNS: m.ns, hasImages: true}); err != nil {
			t.Fatal(err)
		}
		modes = append(modes, m)
	}
	printed := func(args ...string) string {
		stdout, stderr, err := runMutatorCommand(t, cfg, args...)
		if err != nil {
			t.Fatalf("mutator %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return stdout
	}
	policies("policies", "lat-never", printed("policy"), nil, &[2]float64{1, 0})
	policies("policies, IfNeeded", "lat-ifneeded", printed("policy", "--reinvocation=IfNeeded"), nil, &[2]float64{1, 0})
	before, err := os.ReadFile(filepath.Join("testdata", "policies-before-21.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policies("before #21", "lat-before", string(before), nil, &[2]float64{2, 2})
	policies("before #21, Never", "lat-before-never", string(before), func(o any) {
		if p, ok := o.(*admissionregistrationv1.MutatingAdmissionPolicy); ok {
			p.Spec.ReinvocationPolicy = admissionregistrationv1.NeverReinvocationPolicy
		}
	}, &[2]float64{1, 1})

	// The webhook with the image guard.
	applyPolicies(t, ctx, "lat-guard", printed("policy", "--guard"))
	waitGuardActive(t, ctx, "lat-guard")
	modes = append(modes, &latencyMode{
		name: "webhook + guard", ns: namespace(t, f.scope(), map[string]string{policyScopeLabel: "lat-guard"}),
		hook: f.hookName(), vaps: []string{"mutator-image-guard-lat-guard"}, rewrites: true,
	})

	// A trivial policy: one constant patch, for creates and updates.
	trivial := trivialPolicy(t, ctx, "lat-trivial")
	modes = append(modes, &latencyMode{name: "trivial policy", ns: namespace(t, map[string]string{policyScopeLabel: "lat-trivial"}), maps: []string{trivial}})
	return modes
}

// waitGuardActive waits until the image guard applied for name refuses a
// Pod the webhook did not rewrite, in a namespace of the guard alone.
func waitGuardActive(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	ns := namespace(t, map[string]string{policyScopeLabel: name})
	last := "no probe yet"
	err := cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		_, err := kube.Client().CoreV1().Pods(ns).Create(ctx, newPod("probe", corev1.PodSpec{Containers: []corev1.Container{c("probe", "nginx:1.27", "")}}),
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			last = "an unrewritten pod was admitted"
			return false, nil
		}
		last = err.Error()
		return strings.Contains(err.Error(), "mutator-image-guard"), nil
	})
	if err != nil {
		t.Fatalf("waiting for the image guard %s (last: %s): %v", name, last, err)
	}
}

// trivialPolicy creates a MutatingAdmissionPolicy that adds one annotation
// to every Pod create and update (reinvocationPolicy Never) and its binding,
// scoped to policyScopeLabel=name, waits until it acts and returns its name.
func trivialPolicy(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	client := kube.Client().AdmissionregistrationV1()
	policyName := "trivial-" + name
	p := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				},
			}}},
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeJSONPatch,
				JSONPatch: &admissionregistrationv1.JSONPatch{Expression: "[JSONPatch{op: 'add', path: '/metadata/annotations', value: {'e2e.mutator.dev/trivial': 'yes'}}]"},
			}},
			ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy,
		},
	}
	b := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{PolicyName: policyName, MatchResources: &admissionregistrationv1.MatchResources{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{policyScopeLabel: name}},
		}},
	}
	if _, err := client.MutatingAdmissionPolicies().Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.MutatingAdmissionPolicyBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, err := range []error{
			client.MutatingAdmissionPolicyBindings().Delete(ctx, policyName, metav1.DeleteOptions{}),
			client.MutatingAdmissionPolicies().Delete(ctx, policyName, metav1.DeleteOptions{}),
		} {
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting %s: %v", policyName, err)
			}
		}
	})
	ns := namespace(t, map[string]string{policyScopeLabel: name})
	err := cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		pod, err := kube.Client().CoreV1().Pods(ns).Create(ctx, newPod("probe", corev1.PodSpec{Containers: []corev1.Container{c("probe", probeImage, "")}}),
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && pod.Annotations["e2e.mutator.dev/trivial"] == "yes", nil
	})
	if err != nil {
		t.Fatalf("waiting for the trivial policy: %v", err)
	}
	return policyName
}

// countEvaluations creates 50 Pods and makes 50 label-only updates in each
// mode, one mode after the other, and logs per request what the API server
// counted: mutations evaluated (apiserver_mutating_admission_policy_check_total),
// matchConditions of the mutating and validating policies that decided
// against ("skips": apiserver_admission_match_condition_evaluation_seconds_count,
// which the matcher observes only then), webhook calls and runs of the
// MutatingAdmissionPolicy plugin (its rounds:
// apiserver_admission_controller_admission_duration_seconds_count). In
// 1.36 the validating policies' check_total counts refusals and errors
// only, so their validations are not counted.
func countEvaluations(t *testing.T, client kubernetes.Interface, modes []*latencyMode, spec corev1.PodSpec) {
	const k = 50
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	t.Logf("per request, %d of each, mode after mode, from the API server's metrics:", k)
	t.Logf("  %-26s %-9s %9s %9s %9s %9s %9s", "mode", "request", "mutations", "MAP skips", "VAP skips", "webhook", "rounds")
	for _, m := range modes {
		var names []string
		before := scrape(t, ctx)
		for i := range k {
			p, err := client.CoreV1().Pods(m.ns).Create(ctx, newPod("count", spec), metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("%s: counted create %d: %v", m.name, i, err)
			}
			names = append(names, p.Name)
		}
		middle := scrape(t, ctx)
		for i, pod := range names {
			if _, err := client.CoreV1().Pods(m.ns).Patch(ctx, pod, types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"labels":{"counted":"%d"}}}`, i), metav1.PatchOptions{}); err != nil {
				t.Fatalf("%s: counted label-only update %d: %v", m.name, i, err)
			}
		}
		after := scrape(t, ctx)
		for i, op := range []string{"CREATE", "UPDATE"} {
			from, to := before, middle
			if op == "UPDATE" {
				from, to = middle, after
			}
			per := func(d float64) float64 { return d / k }
			var mutations, mapConds, vapConds float64
			for _, p := range m.maps {
				mutations += to.sum("apiserver_mutating_admission_policy_check_total", "policy", p) - from.sum("apiserver_mutating_admission_policy_check_total", "policy", p)
				mapConds += to.sum("apiserver_admission_match_condition_evaluation_seconds_count", "name", p, "operation", op) -
					from.sum("apiserver_admission_match_condition_evaluation_seconds_count", "name", p, "operation", op)
			}
			for _, p := range m.vaps {
				vapConds += to.sum("apiserver_admission_match_condition_evaluation_seconds_count", "name", p, "operation", op) -
					from.sum("apiserver_admission_match_condition_evaluation_seconds_count", "name", p, "operation", op)
			}
			var hook float64
			if m.hook != "" {
				hook = to.sum("apiserver_admission_webhook_admission_duration_seconds_count", "name", m.hook, "operation", op, "type", "admit") -
					from.sum("apiserver_admission_webhook_admission_duration_seconds_count", "name", m.hook, "operation", op, "type", "admit")
			}
			rounds := to.sum("apiserver_admission_controller_admission_duration_seconds_count", "name", "MutatingAdmissionPolicy", "operation", op, "type", "admit") -
				from.sum("apiserver_admission_controller_admission_duration_seconds_count", "name", "MutatingAdmissionPolicy", "operation", op, "type", "admit")
			t.Logf("  %-26s %-9s %9.2f %9.2f %9.2f %9.2f %9.2f", m.name, strings.ToLower(op), per(mutations), per(mapConds), per(vapConds), per(hook), per(rounds))
			if m.wantMutations != nil && per(mutations) != m.wantMutations[i] {
				t.Errorf("%s: the API server evaluated %.2f mutations per %s, want %.0f", m.name, per(mutations), strings.ToLower(op), m.wantMutations[i])
			}
		}
	}
}

// samples are the API server's metrics: metric name -> label sets and values.
type samples map[string][]sampleValue

type sampleValue struct {
	labels map[string]string
	value  float64
}

// scrape reads the API server's metrics.
func scrape(t *testing.T, ctx context.Context) samples {
	t.Helper()
	text, err := kube.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := samples{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, hasLabels := strings.Cut(line, "{")
		labels := map[string]string{}
		var value string
		if hasLabels {
			var body string
			body, value, _ = strings.Cut(rest, "} ")
			for kv := range strings.SplitSeq(body, ",") {
				k, v, _ := strings.Cut(kv, "=")
				labels[k] = strings.Trim(v, `"`)
			}
		} else {
			name, value, _ = strings.Cut(line, " ")
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		out[name] = append(out[name], sampleValue{labels, v})
	}
	return out
}

// sum adds up the samples of metric whose labels include the pairs kv.
func (s samples) sum(metric string, kv ...string) float64 {
	var total float64
	for _, sv := range s[metric] {
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if sv.labels[kv[i]] != kv[i+1] {
				ok = false
				break
			}
		}
		if ok {
			total += sv.value
		}
	}
	return total
}

// protobufClient is an admin client that speaks protobuf, as controllers do.
func protobufClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg := kube.RESTConfig()
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// quantile returns the q-quantile of d (nearest rank), sorting d.
func quantile(d []time.Duration, q float64) time.Duration {
	slices.Sort(d)
	return d[int(q*float64(len(d)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

// spread is the median of xs and its range.
func spread(xs []time.Duration) string {
	s := slices.Clone(xs)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%s [%s, %s]", ms(s[len(s)/2]), ms(s[0]), ms(s[len(s)-1]))
}
