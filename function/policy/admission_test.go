package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/cel/environment"

	"github.com/mutator-dev/mutator/function/mutation"
	"github.com/mutator-dev/mutator/function/policy"
)

// This file runs the policies `mutator policy` prints the way the API
// server's admission plugins run them, in process: each policy compiled as
// k8s.io/apiserver's pkg/admission/plugin/policy/{mutating,validating}
// compilePolicy compiles it (the same compilers, environments, matchers,
// JSON patcher and validator), evaluated on typed Pods as the dispatchers
// evaluate them. What it leaves out is the dispatchers' bookkeeping
// (binding and namespace matching, reinvocation, metrics) and defaulting,
// which the e2e tests run on a real kube-apiserver.

var (
	podKind     = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	podResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
)

// objectInterfaces are the API server's scheme, as far as Pods go.
func objectInterfaces(t testing.TB) admission.ObjectInterfaces {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return admission.NewObjectInterfacesFromScheme(scheme)
}

// compiledMAP is a MutatingAdmissionPolicy of one JSON patch mutation,
// compiled as mutating.compilePolicy does.
type compiledMAP struct {
	compiler *plugincel.CompositedCompiler
	matcher  matchconditions.Matcher
	patcher  patch.Patcher
}

func compileMAP(t testing.TB, p *admissionregistrationv1.MutatingAdmissionPolicy) *compiledMAP {
	t.Helper()
	opts := plugincel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: true}
	compiler, conds := compilePolicyCommon(t, p.Spec.Variables, p.Spec.MatchConditions, opts)
	m := &compiledMAP{compiler: compiler}
	if len(conds) > 0 {
		m.matcher = matchconditions.NewMatcher(compiler.CompileCondition(conds, opts, environment.StoredExpressions), p.Spec.FailurePolicy, "policy", "validate", p.Name)
	}
	if len(p.Spec.Mutations) != 1 || p.Spec.Mutations[0].JSONPatch == nil {
		t.Fatalf("policy %s: want one JSON patch mutation", p.Name)
	}
	patchOpts := opts
	patchOpts.HasPatchTypes = true
	eval := compiler.CompileMutatingEvaluator(&patch.JSONPatchCondition{Expression: p.Spec.Mutations[0].JSONPatch.Expression}, patchOpts, environment.StoredExpressions)
	if errs := eval.CompilationErrors(); len(errs) > 0 {
		t.Fatalf("policy %s: the mutation does not compile: %v", p.Name, errs)
	}
	m.patcher = patch.NewJSONPatcher(eval)
	return m
}

// compilePolicyCommon does what the API server does first for either kind
// of policy: a compiler in the base environment, the variables compiled and
// stored, and the match conditions as expressions.
func compilePolicyCommon(t testing.TB, variables []admissionregistrationv1.Variable, matchConditions []admissionregistrationv1.MatchCondition,
	opts plugincel.OptionalVariableDeclarations) (*plugincel.CompositedCompiler, []plugincel.ExpressionAccessor) {
	t.Helper()
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		t.Fatal(err)
	}
	var vars []plugincel.NamedExpressionAccessor
	for _, v := range variables {
		vars = append(vars, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	compiler.CompileAndStoreVariables(vars, opts, environment.StoredExpressions)
	var conds []plugincel.ExpressionAccessor
	for i := range matchConditions {
		conds = append(conds, (*matchconditions.MatchCondition)(&matchConditions[i]))
	}
	return compiler, conds
}

// compileVAP compiles a ValidatingAdmissionPolicy as
// validating.compilePolicy does.
func compileVAP(t testing.TB, p *admissionregistrationv1.ValidatingAdmissionPolicy) *compiledVAP {
	t.Helper()
	opts := plugincel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: true}
	msgOpts := plugincel.OptionalVariableDeclarations{HasParams: false, HasAuthorizer: false}
	compiler, conds := compilePolicyCommon(t, p.Spec.Variables, p.Spec.MatchConditions, opts)
	var validations, messages []plugincel.ExpressionAccessor
	for _, v := range p.Spec.Validations {
		validations = append(validations, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason})
		messages = append(messages, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
	}
	v := validating.NewValidator(
		compiler.CompileCondition(validations, opts, environment.StoredExpressions),
		matchconditions.NewMatcher(compiler.CompileCondition(conds, opts, environment.StoredExpressions), p.Spec.FailurePolicy, "policy", "validate", p.Name),
		compiler.CompileCondition(nil, opts, environment.StoredExpressions),
		compiler.CompileCondition(messages, msgOpts, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)
	if err := v.CompileError(); err != nil {
		t.Fatalf("policy %s does not compile: %v", p.Name, err)
	}
	return &compiledVAP{v, compiler}
}

// compiledVAP creates the variables' context per evaluation, as the
// validating dispatcher does.
type compiledVAP struct {
	validating.Validator
	compiler *plugincel.CompositedCompiler
}

func (v *compiledVAP) run(attr *admission.VersionedAttributes) validating.ValidateResult {
	return v.Validate(v.compiler.CreateContext(context.Background()), podResource, attr, nil, namespaceObject,
		celconfig.RuntimeCELCostBudget, authorizerfactory.NewAlwaysAllowAuthorizer())
}

// request is one Pod write as the admission plugins see it.
type request struct {
	op          admission.Operation
	subresource string
	pod, old    *corev1.Pod
	user        string
}

func (r request) attributes() *admission.VersionedAttributes {
	var old runtime.Object
	if r.old != nil {
		old = r.old
	}
	var opts runtime.Object = &metav1.CreateOptions{}
	if r.op == admission.Update {
		opts = &metav1.UpdateOptions{}
	}
	name := r.user
	if name == "" {
		name = "alice"
	}
	a := admission.NewAttributesRecord(r.pod, old, podKind, "team", r.pod.Name, podResource, r.subresource, r.op, opts, false, &user.DefaultInfo{Name: name})
	return &admission.VersionedAttributes{Attributes: a, VersionedObject: r.pod, VersionedOldObject: old, VersionedKind: podKind}
}

var namespaceObject = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team", Labels: map[string]string{"kubernetes.io/metadata.name": "team"}}}

// mutate runs the mutating policy on r: whether its matchConditions hold
// (true when it has none), and the Pod after the mutation, which is run
// whatever they say (so that tests can check what skipping it leaves out).
func (m *compiledMAP) mutate(t testing.TB, o admission.ObjectInterfaces, r request) (matched bool, out *corev1.Pod) {
	t.Helper()
	attr := r.attributes()
	matched = true
	if m.matcher != nil {
		res := m.matcher.Match(m.compiler.CreateContext(context.Background()), attr, nil, authorizerfactory.NewAlwaysAllowAuthorizer())
		if res.Error != nil {
			t.Fatalf("matchConditions on %s: %v", podJSON(r.pod), res.Error)
		}
		matched = res.Matches
	}
	ctx := m.compiler.CreateContext(context.Background())
	obj, err := m.patcher.Patch(ctx, patch.Request{
		MatchedResource:     podResource,
		VersionedAttributes: attr,
		ObjectInterfaces:    o,
		OptionalVariables:   plugincel.OptionalVariableBindings{Authorizer: authorizerfactory.NewAlwaysAllowAuthorizer()},
		Namespace:           namespaceObject,
	}, celconfig.RuntimeCELCostBudget)
	if err != nil {
		t.Fatalf("mutation of %s: %v", podJSON(r.pod), err)
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		t.Fatalf("the mutation returned a %T", obj)
	}
	return matched, pod
}

// validate runs a validating policy on r: "" when it admits the Pod, else
// the refusal's message. matched says whether its matchConditions held.
func validate(t testing.TB, v *compiledVAP, r request) (refusal string, matched bool) {
	t.Helper()
	res := v.run(r.attributes())
	if len(res.Decisions) == 0 {
		return "", false
	}
	for _, d := range res.Decisions {
		switch {
		case d.Evaluation == validating.EvalError:
			t.Fatalf("validation of %s failed: %s", podJSON(r.pod), d.Message)
		case d.Action == validating.ActionDeny:
			if d.Reason != metav1.StatusReasonForbidden {
				t.Errorf("refusal of %s with reason %s, want Forbidden", podJSON(r.pod), d.Reason)
			}
			return d.Message, true
		}
	}
	return "", true
}

// webhook is the webhook's answer to r with rules (function/admission's
// handling of Pods, without the transport): the Pod it admits, or the
// reasons it refuses it.
func webhook(t testing.TB, rules *mutation.Rules, r request) (*corev1.Pod, []mutation.Problem) {
	t.Helper()
	raw, err := json.Marshal(r.pod)
	if err != nil {
		t.Fatal(err)
	}
	var pod mutation.Pod
	if err := mutation.Decode(raw, &pod, "Pod"); err != nil {
		t.Fatal(err)
	}
	var changes []mutation.Change
	var problems []mutation.Problem
	if r.op == admission.Create {
		changes, problems = rules.PodSpecOnCreate("/spec", &pod.Spec)
	} else {
		oldRaw, err := json.Marshal(r.old)
		if err != nil {
			t.Fatal(err)
		}
		var old mutation.Pod
		if err := mutation.Decode(oldRaw, &old, "old Pod"); err != nil {
			t.Fatal(err)
		}
		changes, problems = rules.PodSpecOnUpdate("/spec", &pod.Spec, &old.Spec)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	p, err := mutation.Patch(changes)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		return r.pod.DeepCopy(), nil
	}
	ops, err := jsonpatch.DecodePatch(p)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := ops.Apply(raw)
	if err != nil {
		t.Fatalf("applying the webhook's patch %s: %v", p, err)
	}
	var out corev1.Pod
	if err := json.Unmarshal(patched, &out); err != nil {
		t.Fatal(err)
	}
	return &out, nil
}

func podJSON(p *corev1.Pod) string {
	if p == nil {
		return "<nil>"
	}
	b, _ := json.Marshal(p.Spec)
	return string(b)
}

// podGen builds Pods from a list of image strings, deterministically:
// one to four containers, sometimes init and ephemeral containers and an
// image volume, pull policies as defaulting leaves them or set, pull
// secrets or none.
type podGen struct {
	images []string
	xorshift
}

func (g *podGen) image() string { return g.images[g.next()%uint64(len(g.images))] }

func (g *podGen) policy() corev1.PullPolicy {
	return []corev1.PullPolicy{corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever, corev1.PullIfNotPresent}[g.next()%4]
}

func (g *podGen) containers(prefix string, n int) []corev1.Container {
	var out []corev1.Container
	for i := range n {
		out = append(out, corev1.Container{Name: fmt.Sprintf("%s%d", prefix, i), Image: g.image(), ImagePullPolicy: g.policy()})
	}
	return out
}

func (g *podGen) pod() *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"}}
	p.Spec.Containers = g.containers("c", int(g.next()%4)+1)
	if g.next()%3 == 0 {
		p.Spec.InitContainers = g.containers("i", 1)
	}
	if g.next()%5 == 0 {
		p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: g.image(), PullPolicy: g.policy()}}}}
	}
	switch g.next() % 4 {
	case 0:
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	case 1:
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "a"}, {Name: "regcred"}}
	}
	return p
}

// update returns an UPDATE of old: a label, a changed image, or an added
// ephemeral container through the subresource.
func (g *podGen) update(old *corev1.Pod) request {
	pod := old.DeepCopy()
	switch g.next() % 3 {
	case 0:
		pod.Labels = map[string]string{"touched": "yes"}
		return request{op: admission.Update, pod: pod, old: old}
	case 1:
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: g.image(), ImagePullPolicy: g.policy()},
		})
		return request{op: admission.Update, subresource: "ephemeralcontainers", pod: pod, old: old}
	}
	pod.Spec.Containers[g.next()%uint64(len(pod.Spec.Containers))].Image = g.image()
	return request{op: admission.Update, pod: pod, old: old}
}

// policyConfigs are the configurations of the in-process comparisons (as
// env, read by policy.LoadConfig): each kind of rule with the cheap path,
// and the e2e parity configurations.
var policyConfigs = []map[string]string{
	{"REGISTRY": "registry.example.com/mirror", "IGNORED_REGISTRIES": "registry.k8s.io,docker.io/library/busybox",
		"IMAGE_PULL_SECRET": "regcred", "FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "IfNotPresent"},
	{"REGISTRY": "registry.example.com/mirror", "IMAGE_PULL_SECRET": "regcred", "IMAGE_PULL_SECRET_APPEND": "true", "FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "Always"},
	{"REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub,quay.io=harbor.example.com/quay"},
	{"REGISTRY": "registry.example.com/mirror", "REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub,Quay.io:443=harbor.example.com/quay,*=harbor.example.com/other",
		"IGNORED_REGISTRIES": "ghcr.io/allowed/"},
	{"REGISTRY": "a_b.com", "IGNORED_REGISTRIES": "docker.io", "REGISTRY_MAP": "*=a_b.com/x"},
	// Forced Never: the kubelet pulls nothing, so no image is rewritten or
	// refused. (The generator's references have each pull policy, Never
	// included, and so each combination with the forced ones above and
	// with none.)
	{"REGISTRY": "registry.example.com/mirror", "IMAGE_PULL_SECRET": "regcred", "FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "Never"},
}

// podImages are the images the Pods are made of: the cases, a share of the
// fuzz corpus and of the generated strings, and images already under the
// configurations' registries, as the webhook or the policies leave them.
// Not "": the API server's validation refuses a container without an
// image, and the webhook's own create-or-images-changed condition fails on
// the UPDATE of one, whichever admits it.
func podImages(t *testing.T) []string {
	var out []string
	c := corpus(t)
	for i := 0; i < len(c); i += 7 {
		out = append(out, c[i])
	}
	out = slices.DeleteFunc(append(append(out, cases...), generated(300)...), func(s string) bool { return s == "" })
	for _, p := range []string{"registry.example.com/mirror/", "harbor.example.com/dockerhub/library/", "registry.k8s.io/", "a_b.com/x/", "docker.io/"} {
		out = append(out, p+"nginx:1.27", p+"org/app:v1", p+"Bad Image")
	}
	return out
}

// TestPoliciesAgreeWithTheWebhook runs generated Pods, on CREATE and on
// UPDATE (an image changed, an ephemeral container added), through the
// printed policies as the admission plugins run them and through the
// webhook's rules: the Pod stored, or the refusal, is the same. It also
// checks what the policies' matchConditions claim: where
// something-to-change is false the mutation changes nothing, and where
// an-image-to-check is false the validation admits.
func TestPoliciesAgreeWithTheWebhook(t *testing.T) {
	o := objectInterfaces(t)
	imgs := podImages(t)
	for ci, env := range policyConfigs {
		cfg := policy.LoadConfig(t, env)
		for _, reinvocation := range []admissionregistrationv1.ReinvocationPolicyType{admissionregistrationv1.NeverReinvocationPolicy, admissionregistrationv1.IfNeededReinvocationPolicy} {
			t.Run(fmt.Sprintf("config%d-%s", ci, reinvocation), func(t *testing.T) {
				set, err := policy.Generate(cfg, policy.Options{Reinvocation: reinvocation})
				if err != nil {
					t.Fatal(err)
				}
				rules := mutation.New(cfg.Rules)
				// The API server sends a CREATE to the CREATE policy, an
				// UPDATE to the UPDATE policy.
				byOp := map[admission.Operation]*compiledMAP{admission.Create: compileMAP(t, set.Pods), admission.Update: compileMAP(t, set.PodUpdates)}
				v := compileVAP(t, set.Provenance)
				gen := &podGen{images: imgs, xorshift: xorshift(uint64(ci)*7919 + 1)}
				var creates, updates, refused, skipped, checked int
				check := func(r request) {
					t.Helper()
					want, problems := webhook(t, rules, r)
					matched, got := byOp[r.op].mutate(t, o, r)
					if !matched {
						skipped++
						if !reflect.DeepEqual(got.Spec, r.pod.Spec) {
							t.Errorf("something-to-change is false, but the mutation changes\n  %s\nto\n  %s", podJSON(r.pod), podJSON(got))
						}
						got = r.pod
					}
					after := r
					after.pod = got
					msg, vmatched := validate(t, v, after)
					if vmatched {
						checked++
					}
					switch {
					case len(problems) > 0:
						refused++
						if msg == "" {
							t.Errorf("the webhook refuses %s (%v), the policies store %s", podJSON(r.pod), problems, podJSON(got))
						}
						for _, p := range problems {
							if !strings.Contains(msg, p.Where) {
								t.Errorf("the policies' refusal %q does not name %s", msg, p.Where)
							}
						}
					case msg != "":
						t.Errorf("the webhook stores %s, the policies refuse it: %s", podJSON(want), msg)
					case !reflect.DeepEqual(want.Spec, got.Spec):
						t.Errorf("from %s\n  the webhook stores %s\n  the policies     %s", podJSON(r.pod), podJSON(want), podJSON(got))
					}
				}
				for range 400 {
					pod := gen.pod()
					creates++
					check(request{op: admission.Create, pod: pod})
					// The UPDATE of a Pod as the webhook stored it, and the
					// CREATE of a copy of it (already rewritten: what the
					// matchConditions skip).
					if stored, problems := webhook(t, rules, request{op: admission.Create, pod: pod}); len(problems) == 0 {
						updates++
						check(gen.update(stored))
						creates++
						check(request{op: admission.Create, pod: stored})
					}
				}
				t.Logf("%d creates and %d updates compared, %d refused by both; the mutation skipped by matchConditions for %d, the validation evaluated for %d",
					creates, updates, refused, skipped, checked)
				if skipped == 0 || checked == 0 {
					t.Errorf("the matchConditions never skipped (%d) or never let through (%d): the test does not exercise them", skipped, checked)
				}
			})
		}
	}
}

// TestGuardAgreesWithTheWebhook: everything the webhook admits (rewritten
// or left as written) passes the image guard, and a Pod as its author
// wrote it fails the guard exactly when the webhook would refuse it or
// rewrite one of its images, with the reason for each image.
func TestGuardAgreesWithTheWebhook(t *testing.T) {
	imgs := podImages(t)
	for ci, env := range policyConfigs {
		cfg := policy.LoadConfig(t, env)
		t.Run(fmt.Sprintf("config%d", ci), func(t *testing.T) {
			set, err := policy.Guard(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rules := mutation.New(cfg.Rules)
			v := compileVAP(t, set.Provenance)
			gen := &podGen{images: imgs, xorshift: xorshift(uint64(ci)*104729 + 3)}
			var admitted, refused, unrewritten, pulling int
			forcedNever := cfg.Rules.PullPolicy == corev1.PullNever
			check := func(r request) {
				t.Helper()
				want, problems := webhook(t, rules, r)
				if len(problems) == 0 {
					after := r
					after.pod = want
					if msg, _ := validate(t, v, after); msg != "" {
						t.Errorf("the webhook admits %s, the guard refuses it: %s", podJSON(want), msg)
					}
				}
				msg, _ := validate(t, v, r)
				imagesChanged := want != nil && !maps.Equal(specImages(r.pod.Spec), specImages(want.Spec))
				switch {
				case len(problems) > 0:
					refused++
					for _, p := range problems {
						if !strings.Contains(msg, p.Where+": image ") || !strings.Contains(msg, "cannot be pulled from an allowed registry") {
							t.Errorf("the webhook refuses %s (%s); the guard says %q", podJSON(r.pod), p, msg)
						}
					}
				case imagesChanged:
					unrewritten++
					if !strings.Contains(msg, "is not from a registry the mutator allows") || !strings.Contains(msg, "cold, down or unreachable") {
						t.Errorf("the webhook rewrites %s to %s; unrewritten, the guard says %q", podJSON(r.pod), podJSON(want), msg)
					}
				case msg != "" && forcedNever && !reflect.DeepEqual(want.Spec, r.pod.Spec):
					// Forced Never: the webhook leaves the images as written
					// but sets the policy. As written, a reference pulls, and
					// the guard refuses its image unrewritten (the webhook did
					// not run); with the policies the webhook sets, the guard
					// admits it (checked above).
					pulling++
					if !strings.Contains(msg, "is not from a registry the mutator allows") && !strings.Contains(msg, "cannot be pulled from an allowed registry") {
						t.Errorf("the webhook sets pull policy Never on %s; unmutated, the guard says %q", podJSON(r.pod), msg)
					}
				default:
					admitted++
					if msg != "" {
						t.Errorf("the webhook leaves the images of %s as written, the guard refuses them: %s", podJSON(r.pod), msg)
					}
				}
			}
			for range 400 {
				pod := gen.pod()
				check(request{op: admission.Create, pod: pod})
				if stored, problems := webhook(t, rules, request{op: admission.Create, pod: pod}); len(problems) == 0 {
					check(gen.update(stored))
				}
			}
			t.Logf("guard vs webhook: %d left as written by both, %d refused by both, %d unrewritten refused by the guard, %d pulling refused by the guard",
				admitted, refused, unrewritten, pulling)
			if forcedNever {
				// Nothing is rewritten or refused: every image is left as
				// written, and only its policy makes it safe.
				if admitted == 0 || pulling == 0 || refused+unrewritten > 0 {
					t.Errorf("forced Never: %d admitted, %d pulling, %d refused, %d rewritten", admitted, pulling, refused, unrewritten)
				}
			} else if admitted == 0 || refused == 0 || unrewritten == 0 {
				t.Errorf("a kind of case never came up (%d, %d, %d): the test does not exercise it", admitted, refused, unrewritten)
			}
		})
	}
}

// specImages returns the image of each reference of a Pod spec.
func specImages(s corev1.PodSpec) map[string]string {
	out := map[string]string{}
	for _, c := range s.InitContainers {
		out["init/"+c.Name] = c.Image
	}
	for _, c := range s.Containers {
		out["c/"+c.Name] = c.Image
	}
	for _, c := range s.EphemeralContainers {
		out["e/"+c.Name] = c.Image
	}
	for _, v := range s.Volumes {
		if v.Image != nil {
			out["v/"+v.Name] = v.Image.Reference
		}
	}
	return out
}
