package policy

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/function/config"
)

// load reads env into a Config through config.Load, on an environment
// cleared of every variable config.Env reads. It is the one place the
// tests, these and the external ones (LoadConfig, export_test.go), build a
// configuration.
func load(t testing.TB, env map[string]string) config.Config {
	t.Helper()
	typ := reflect.TypeFor[config.Env]()
	for i := range typ.NumField() {
		if name := typ.Field(i).Tag.Get("envconfig"); name != "" {
			t.Setenv(name, "") // registers the restore
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatalf("config.Load with %v: %v", env, err)
	}
	return cfg
}

var all = map[string]string{
	"REGISTRY":                   "registry.example.com/mirror",
	"IGNORED_REGISTRIES":         "registry.k8s.io",
	"IMAGE_PULL_SECRET":          "regcred",
	"FORCE_IMAGE_PULL_POLICY":    "true",
	"IMAGE_PULL_POLICY_TO_FORCE": "IfNotPresent",
	"DEFAULT_STORAGE_CLASS":      "standard",
	"EXCLUDE_NAMESPACES":         "team-a, team-b",
}

func with(base map[string]string, more map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// TestPatternsAreTheLibrarys reassembles the grammar pieces the policies use
// into the library's ReferenceRegexp: the pieces cannot drift from the
// parser the webhook uses without this test failing. The tag and digest
// patterns are the library's as written; the expressions check their
// bounds by length instead (see digestExpr and tagPattern).
func TestPatternsAreTheLibrarys(t *testing.T) {
	const (
		tag    = `[\w][\w.-]{0,127}`
		digest = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`
	)
	domain := strings.TrimSuffix(strings.TrimPrefix(domainPattern, "^(?:"), ")$")
	remote := strings.TrimSuffix(strings.TrimPrefix(remoteNamePattern, "^"), "$")
	got := "^((?:" + domain + "/)?" + remote + ")(?::(" + tag + "))?(?:@(" + digest + "))?$"
	if want := reference.ReferenceRegexp.String(); got != want {
		t.Errorf("reassembled reference pattern differs from the library's:\n got %s\nwant %s", got, want)
	}
	if want := `^` + pathComponent + `$`; pathComponentPattern != want {
		t.Errorf("pathComponentPattern = %s, want %s", pathComponentPattern, want)
	}
	if strings.TrimSuffix(strings.TrimPrefix(tagPattern, `^\w[\w.-]*`), "$") != "" || maxTagLength != 128 {
		t.Errorf("tagPattern %s / maxTagLength %d are not the bounded-free form of %s", tagPattern, maxTagLength, tag)
	}
}

func TestGenerateRefusals(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // each in the refusal
	}{
		{"audit mode", with(all, map[string]string{"MODE": "audit"}), []string{"MODE=audit"}},
		{"warnings", with(all, map[string]string{"WARNINGS": "true"}), []string{"WARNINGS=true"}},
		{"CloudEvents", with(all, map[string]string{"K_SINK": "http://sink.example.com"}), []string{"K_SINK"}},
		{"mirror check", with(all, map[string]string{"MIRROR_CHECK": "true"}), []string{"MIRROR_CHECK=true"}},
		{"original images", with(all, map[string]string{"RECORD_ORIGINAL_IMAGES": "true"}), []string{"RECORD_ORIGINAL_IMAGES=true: the policies do not write the mutator.dev/original-images annotation"}},
		{"all at once", with(all, map[string]string{"MODE": "audit", "WARNINGS": "true", "K_SINK": "http://s"}), []string{"MODE=audit", "WARNINGS=true", "K_SINK"}},
		{"registry host beyond DNS", map[string]string{"REGISTRY": strings.Repeat("a", 250) + ".example.com/m"}, []string{"longer than 259 characters"}},
		{"a namespace name no selector can hold", with(all, map[string]string{"EXCLUDE_NAMESPACES": `team-a,we"ird`}), []string{`EXCLUDE_NAMESPACES: "we\"ird" is not a namespace name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Generate(load(t, tt.env), Options{})
			var refused *UnsupportedError
			if !errors.As(err, &refused) {
				t.Fatalf("Generate = (%v, %v), want a *UnsupportedError", set, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not name %q", err, w)
				}
			}
			if len(refused.Reasons) != len(tt.want) {
				t.Errorf("refusal has %d reasons, want %d: %q", len(refused.Reasons), len(tt.want), refused.Reasons)
			}
		})
	}
	t.Run("nothing configured", func(t *testing.T) {
		if _, err := Generate(load(t, nil), Options{}); !errors.Is(err, ErrNothingToDo) {
			t.Errorf("Generate of an empty configuration: %v, want ErrNothingToDo", err)
		}
	})
	t.Run("server settings are not refused", func(t *testing.T) {
		env := with(all, map[string]string{"METRICS_PORT": "9999", "PORT": "8443", "LOG_LEVEL": "debug", "SHUTDOWN_DELAY": "5s"})
		if _, err := Generate(load(t, env), Options{}); err != nil {
			t.Errorf("Generate with server settings: %v", err)
		}
	})
	t.Run("unknown reinvocation policy", func(t *testing.T) {
		if _, err := Generate(load(t, all), Options{Reinvocation: "Always"}); err == nil || !strings.Contains(err.Error(), `"Always"`) {
			t.Errorf("Generate with reinvocation policy Always: %v, want an error naming it", err)
		}
	})
}

// TestGenerateObjects checks which objects each configuration needs and
// how they are wired.
func TestGenerateObjects(t *testing.T) {
	tests := []struct {
		name                      string
		env                       map[string]string
		pods, updates, pvcs, prov bool
		inMutation, notInMut      []string // substrings of the Pod CREATE mutation
	}{
		{"everything", all, true, true, true, true,
			[]string{"variables.allowedPrefixes", `"IfNotPresent"`, `"regcred"`, "'/spec/imagePullSecrets'"}, []string{"imagePullSecrets/-", "variables.todo"}},
		{"append", with(all, map[string]string{"IMAGE_PULL_SECRET_APPEND": "true"}), true, true, true, true,
			[]string{"'/spec/imagePullSecrets/-'"}, nil},
		{"images only", map[string]string{"REGISTRY": "r.example.com"}, true, true, false, true,
			[]string{"variables.allowedPrefixes", "imagePullPolicy) : '') == 'Never' ? [] : "}, []string{"imagePullSecrets", "/imagePullPolicy'"}},
		{"forced Never: no image is rewritten", map[string]string{"REGISTRY": "r.example.com", "FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "Never"}, true, true, false, true,
			[]string{`"Never"`, "'/imagePullPolicy'"}, []string{"'/image'", "'/image/reference'", "variables.allowedPrefixes"}},
		{"forced Always: Never is rewritten", map[string]string{"REGISTRY": "r.example.com", "FORCE_IMAGE_PULL_POLICY": "true"}, true, true, false, true,
			[]string{"'/image'", "'/image/reference'"}, []string{"'Never'"}},
		{"registry map", map[string]string{"REGISTRY_MAP": "docker.io=harbor.example.com/hub"}, true, true, false, true,
			[]string{"variables.registryMap"}, nil},
		{"pull policy only", map[string]string{"FORCE_IMAGE_PULL_POLICY": "true"}, true, true, false, false,
			[]string{`"Always"`}, []string{"variables.allowedPrefixes"}},
		{"pull secret only", map[string]string{"IMAGE_PULL_SECRET": "regcred"}, true, false, false, false,
			[]string{`"regcred"`}, []string{"variables.allowedPrefixes", "imagePullPolicy"}},
		{"storage class only", map[string]string{"DEFAULT_STORAGE_CLASS": "fast"}, false, false, true, false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := load(t, tt.env)
			exempt := append([]string{"kube-system"}, cfg.Review.Exclude...)
			for _, reinvocation := range []admissionregistrationv1.ReinvocationPolicyType{"", admissionregistrationv1.IfNeededReinvocationPolicy} {
				set, err := Generate(cfg, Options{Reinvocation: reinvocation})
				if err != nil {
					t.Fatal(err)
				}
				if (set.Pods != nil) != tt.pods || (set.PodUpdates != nil) != tt.updates || (set.PVCs != nil) != tt.pvcs || (set.Provenance != nil) != tt.prov {
					t.Fatalf("objects: pods %v, pod updates %v, pvcs %v, provenance %v; want %v, %v, %v, %v",
						set.Pods != nil, set.PodUpdates != nil, set.PVCs != nil, set.Provenance != nil, tt.pods, tt.updates, tt.pvcs, tt.prov)
				}
				want := reinvocation
				if want == "" {
					want = admissionregistrationv1.NeverReinvocationPolicy
				}
				for _, p := range []*admissionregistrationv1.MutatingAdmissionPolicy{set.Pods, set.PodUpdates} {
					if p == nil {
						continue
					}
					if got := p.Spec.ReinvocationPolicy; got != want {
						t.Errorf("%s: reinvocationPolicy %s, want %s", p.Name, got, want)
					}
					if len(p.Spec.Mutations) != 1 {
						t.Fatalf("%s has %d mutations, want 1 (a second one would reinvoke the first)", p.Name, len(p.Spec.Mutations))
					}
				}
				if set.Pods != nil {
					checkMutating(t, set.Pods, set.PodsBinding, exempt)
					checkPodRules(t, set.Pods.Spec.MatchConstraints, admissionregistrationv1.Create)
					expr := set.Pods.Spec.Mutations[0].JSONPatch.Expression
					// Never: the mirror Pod condition is folded into the
					// expression, which the API server then evaluates alone;
					// IfNeeded: the conditions stay, so that the second round
					// evaluates them only.
					conds := conditionNames(set.Pods.Spec.MatchConditions)
					if reinvocation == "" {
						if len(conds) != 0 || !strings.HasPrefix(expr, "("+MirrorPodCondition+") ? ") || !strings.HasSuffix(expr, " : []") {
							t.Errorf("pod CREATE policy with Never: matchConditions %q, expression %.200s...; want not-a-mirror-pod folded into it", conds, expr)
						}
					} else if wantConds := []string{"not-a-mirror-pod", "something-to-change"}; !slices.Equal(conds, wantConds) {
						t.Errorf("pod CREATE policy with IfNeeded: matchConditions %q, want %q", conds, wantConds)
					}
					for _, s := range tt.inMutation {
						if !strings.Contains(expr, s) {
							t.Errorf("pod mutation lacks %q:\n%s", s, expr)
						}
					}
					for _, s := range tt.notInMut {
						if strings.Contains(expr, s) {
							t.Errorf("pod mutation contains %q:\n%s", s, expr)
						}
					}
				}
				if set.PodUpdates != nil {
					checkMutating(t, set.PodUpdates, set.PodUpdatesBinding, exempt)
					checkPodRules(t, set.PodUpdates.Spec.MatchConstraints, admissionregistrationv1.Update)
					if got, want := conditionNames(set.PodUpdates.Spec.MatchConditions), []string{"not-a-mirror-pod", "create-or-images-changed", "something-to-change"}; !slices.Equal(got, want) {
						t.Errorf("pod UPDATE policy matchConditions %q, want %q", got, want)
					}
					if expr := set.PodUpdates.Spec.Mutations[0].JSONPatch.Expression; strings.Contains(expr, "imagePullSecrets") {
						t.Errorf("pod UPDATE policy patches pull secrets, which are immutable: %s", expr)
					}
				}
				if set.PVCs != nil {
					checkMutating(t, set.PVCs, set.PVCsBinding, exempt)
					expr := set.PVCs.Spec.Mutations[0].JSONPatch.Expression
					for _, s := range []string{"has(object.spec.storageClassName)", "volume.beta.kubernetes.io/storage-class", `"` + tt.env["DEFAULT_STORAGE_CLASS"] + `"`} {
						if !strings.Contains(expr, s) {
							t.Errorf("PVC mutation lacks %q:\n%s", s, expr)
						}
					}
					ops := set.PVCs.Spec.MatchConstraints.ResourceRules[0].Operations
					if !reflect.DeepEqual(ops, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
						t.Errorf("PVC policy operations %v, want CREATE only", ops)
					}
				}
				if set.Provenance != nil {
					p, b := set.Provenance, set.ProvenanceBinding
					if b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
						t.Errorf("provenance binding %+v does not deny with policy %s", b.Spec, p.Name)
					}
					if *p.Spec.FailurePolicy != admissionregistrationv1.Fail || len(p.Spec.Validations) != 1 || *p.Spec.Validations[0].Reason != metav1.StatusReasonForbidden {
						t.Errorf("provenance policy %+v: want failurePolicy Fail and one Forbidden validation", p.Spec)
					}
					checkScope(t, b.Spec.MatchResources, exempt)
					checkPodRules(t, p.Spec.MatchConstraints, admissionregistrationv1.Create, admissionregistrationv1.Update)
				}
				checkYAML(t, set)
			}
		})
	}
}

func checkMutating(t *testing.T, p *admissionregistrationv1.MutatingAdmissionPolicy, b *admissionregistrationv1.MutatingAdmissionPolicyBinding, exempt []string) {
	t.Helper()
	if b.Spec.PolicyName != p.Name {
		t.Errorf("binding %s names policy %q, want %q", b.Name, b.Spec.PolicyName, p.Name)
	}
	if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("policy %s: failurePolicy %v, want Fail like the webhook", p.Name, p.Spec.FailurePolicy)
	}
	for _, m := range p.Spec.Mutations {
		if m.PatchType != admissionregistrationv1.PatchTypeJSONPatch || m.JSONPatch == nil || m.JSONPatch.Expression == "" {
			t.Errorf("policy %s: mutation %+v is not a JSON patch", p.Name, m)
		}
	}
	checkScope(t, b.Spec.MatchResources, exempt)
}

// checkScope: a binding leaves the exempt names (sorted, once each) and
// opted-out namespaces alone.
func checkScope(t *testing.T, m *admissionregistrationv1.MatchResources, exempt []string) {
	t.Helper()
	names := slices.Clone(exempt)
	slices.Sort(names)
	want := []metav1.LabelSelectorRequirement{
		{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: slices.Compact(names)},
		{Key: IgnoreLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}},
	}
	if m == nil || m.NamespaceSelector == nil || !reflect.DeepEqual(m.NamespaceSelector.MatchExpressions, want) {
		t.Errorf("binding scope %+v, want namespaceSelector %+v", m, want)
	}
}

// checkPodRules: the operations ops of pods, and UPDATE of
// pods/ephemeralcontainers where ops has UPDATE.
func checkPodRules(t *testing.T, m *admissionregistrationv1.MatchResources, ops ...admissionregistrationv1.OperationType) {
	t.Helper()
	got := map[string][]admissionregistrationv1.OperationType{}
	for _, r := range m.ResourceRules {
		for _, res := range r.Resources {
			got[res] = r.Operations
		}
	}
	want := map[string][]admissionregistrationv1.OperationType{"pods": ops}
	if slices.Contains(ops, admissionregistrationv1.Update) {
		want["pods/ephemeralcontainers"] = []admissionregistrationv1.OperationType{admissionregistrationv1.Update}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("pod policy rules %v, want %v", got, want)
	}
}

func conditionNames(conds []admissionregistrationv1.MatchCondition) []string {
	var out []string
	for _, c := range conds {
		out = append(out, c.Name)
	}
	return out
}

// checkYAML: the printed stream decodes strictly into the same objects.
func checkYAML(t *testing.T, set *Set) {
	t.Helper()
	out, err := set.YAML()
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "\n---\n")[1:]
	objs := set.Objects()
	if len(docs) != len(objs) {
		t.Fatalf("YAML has %d documents, want %d", len(docs), len(objs))
	}
	for i, doc := range docs {
		fresh := reflect.New(reflect.TypeOf(objs[i]).Elem()).Interface()
		if err := yaml.UnmarshalStrict([]byte(doc), fresh); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if !reflect.DeepEqual(fresh, objs[i]) {
			t.Errorf("document %d does not decode into the object it was printed from", i)
		}
	}
}

// TestTargetInfo pins how the parser reads a rewrite under each kind of
// target (see targetInfo).
func TestTargetInfo(t *testing.T) {
	tests := []struct {
		target string
		want   []string
	}{
		{"registry.example.com/mirror", []string{"registry.example.com", "mirror", ""}},
		{"r.example.com", []string{"r.example.com", "", ""}},
		{"Registry.Example.com:443/a/b", []string{"registry.example.com", "a/b", ""}},
		{"docker.io", []string{"docker.io", "", "y"}},
		{"index.docker.io", []string{"docker.io", "", "y"}},
		{"docker.io/mirror", []string{"docker.io", "mirror", ""}},
		{"localhost:5000", []string{"localhost:5000", "", ""}},
		// Not a host to the parser: the whole name is the path.
		{"a_b.com/x", []string{"", "a_b.com/x", ""}},
	}
	for _, tt := range tests {
		got, err := targetInfo(tt.target)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("targetInfo(%q) = %q, %v; want %q", tt.target, got, err, tt.want)
		}
	}
}

// TestExpressionsAreClosed: every comprehension a rewrite binds is closed;
// a cheap guard against a broken template before the API server (or the
// e2e test) compiles it.
func TestExpressionsAreClosed(t *testing.T) {
	set, err := Generate(load(t, with(all, map[string]string{"REGISTRY_MAP": "quay.io=q.example.com/quay,*=o.example.com"})), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, v := range set.Pods.Spec.Variables {
		exprs = append(exprs, v.Expression)
	}
	for _, p := range []*admissionregistrationv1.MutatingAdmissionPolicy{set.Pods, set.PodUpdates} {
		for _, c := range p.Spec.MatchConditions {
			exprs = append(exprs, c.Expression)
		}
		exprs = append(exprs, p.Spec.Mutations[0].JSONPatch.Expression)
	}
	for _, v := range set.Provenance.Spec.Variables {
		exprs = append(exprs, v.Expression)
	}
	for _, c := range set.Provenance.Spec.MatchConditions {
		exprs = append(exprs, c.Expression)
	}
	exprs = append(exprs, set.Pods.Spec.Mutations[0].JSONPatch.Expression, set.Provenance.Spec.Validations[0].MessageExpression)
	for _, e := range exprs {
		if depth := balance(e); depth != 0 {
			t.Errorf("unbalanced brackets (%d) in %s", depth, e)
		}
	}
}

// balance returns the bracket depth at the end of a CEL expression, skipping
// string literals.
func balance(expr string) int {
	depth := 0
	var quote byte
	raw := false
	for i := 0; i < len(expr); i++ {
		ch := expr[i]
		if quote != 0 {
			switch {
			case ch == '\\' && !raw:
				i++
			case ch == quote:
				quote = 0
			}
			continue
		}
		switch ch {
		case '\'', '"':
			quote, raw = ch, i > 0 && expr[i-1] == 'r'
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		}
	}
	return depth
}

// TestMirrorPodConditionIsTheWebhooks: the policies skip mirror Pods under
// the condition the shipped webhook configurations skip them under (there
// restricted to Pods), so that the mirror-Pod annotation is an opt-out in
// neither for anyone but a node.
func TestMirrorPodConditionIsTheWebhooks(t *testing.T) {
	if !strings.Contains(MirrorPodCondition, "request.userInfo.username.startsWith('system:node:')") {
		t.Errorf("MirrorPodCondition %s does not require a node's request", MirrorPodCondition)
	}
	want := "request.resource.resource != 'pods' || " + MirrorPodCondition
	for _, path := range []string{"standalone/base/webhook.yaml", "knative/webhook.yaml"} {
		checkCondition(t, path, "not-a-mirror-pod", want)
	}
}
