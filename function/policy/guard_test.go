package policy

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// shippedImageGuard is the image guard deploy/knative ships.
var shippedImageGuard = filepath.Join("..", "..", "deploy", "knative", "guard.yaml")

// knativeService is the Knative Service whose configuration it is made for.
var knativeService = filepath.Join("..", "..", "deploy", "knative", "service.yaml")

// envOf returns the literal env of the first container of the Pod template
// in a shipped manifest (a Deployment or a Knative Service).
func envOf(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Spec struct {
			Template struct {
				Spec corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	env := map[string]string{}
	for _, e := range obj.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom != nil {
			t.Fatalf("%s: %s comes from %v, which this test cannot read", path, e.Name, e.ValueFrom)
		}
		env[e.Name] = e.Value
	}
	return env
}

// update rewrites the shipped files the tests compare with the generator.
var update = flag.Bool("update", false, "rewrite deploy/knative/guard.yaml from the generator")

// TestShippedImageGuard: deploy/knative/guard.yaml is byte for byte what
// `mutator policy --guard` prints for the configuration of
// deploy/knative/service.yaml (its env), so it cannot drift from the
// generator or from that configuration. Regenerate it with
// `go test ./function/policy -run TestShippedImageGuard -update`.
func TestShippedImageGuard(t *testing.T) {
	env := envOf(t, knativeService)
	set, err := Guard(load(t, env))
	if err != nil {
		t.Fatalf("Guard with the env of %s (%v): %v", knativeService, env, err)
	}
	out, err := set.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(shippedImageGuard, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shipped, err := os.ReadFile(shippedImageGuard)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, shipped) {
		t.Errorf("%s differs from `mutator policy --guard` with the env of %s; regenerate it. The generator prints:\n%s", shippedImageGuard, knativeService, out)
	}
	// The Knative components that bring the function up (and the
	// function's own namespace) are never guarded: with a guard there, a
	// function whose image is not under an allowed registry could never
	// start again.
	checkScope(t, set.ProvenanceBinding.Spec.MatchResources, ProtectedNamespaces(load(t, env), nil))
	for _, ns := range []string{"knative-serving", "mutator-system", "kube-system"} {
		if !slices.Contains(set.ProvenanceBinding.Spec.MatchResources.NamespaceSelector.MatchExpressions[0].Values, ns) {
			t.Errorf("the shipped guard applies in %s", ns)
		}
	}
}

// TestGuard: what the guard is made of, what it accepts and refuses.
func TestGuard(t *testing.T) {
	cfg := load(t, with(all, map[string]string{"EXCLUDE_NAMESPACES": "legacy", "WARNINGS": "true", "K_SINK": "http://sink.example.com"}))
	set, err := Guard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if set.Pods != nil || set.PVCs != nil || set.Provenance == nil {
		t.Fatalf("the guard prints mutating policies or no validating one: %+v", set)
	}
	p, b := set.Provenance, set.ProvenanceBinding
	if p.Name != GuardName || b.Name != GuardName || b.Spec.PolicyName != GuardName {
		t.Errorf("names: policy %q, binding %q for %q; want %q", p.Name, b.Name, b.Spec.PolicyName, GuardName)
	}
	if *p.Spec.FailurePolicy != admissionregistrationv1.Fail || len(p.Spec.Validations) != 1 || *p.Spec.Validations[0].Reason != metav1.StatusReasonForbidden {
		t.Errorf("guard %+v: want failurePolicy Fail and one Forbidden validation", p.Spec)
	}
	if !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("validationActions %v, want [Deny]", b.Spec.ValidationActions)
	}
	checkPodRules(t, p.Spec.MatchConstraints, admissionregistrationv1.Create, admissionregistrationv1.Update)
	// The webhook's scope: every name the webhook configurations exempt,
	// and EXCLUDE_NAMESPACES.
	checkScope(t, b.Spec.MatchResources, append(slices.Clone(ExemptNamespaces), "legacy"))
	var conds []string
	for _, c := range p.Spec.MatchConditions {
		conds = append(conds, c.Name)
	}
	if want := []string{"not-a-mirror-pod", "create-or-images-changed", "an-image-to-check"}; !slices.Equal(conds, want) {
		t.Errorf("guard matchConditions %q, want %q", conds, want)
	}
	msg := p.Spec.Validations[0].MessageExpression
	for _, w := range []string{"cold, down or unreachable", "controller will retry", GuardName, "cannot be pulled from an allowed registry"} {
		if !strings.Contains(msg, w) {
			t.Errorf("the guard's message lacks %q: %s", w, msg)
		}
	}
	out, err := set.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, []byte("# Generated by `mutator policy --guard`")) {
		t.Errorf("the guard's YAML does not say how it was generated:\n%.200s", out)
	}
	checkYAML(t, set)

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			env  map[string]string
			want string
		}{
			{"audit mode", with(all, map[string]string{"MODE": "audit"}), "MODE=audit"},
			{"mirror check that admits as written", with(all, map[string]string{"MIRROR_CHECK": "true", "MIRROR_MISSING": "original"}), "MIRROR_MISSING=original"},
			{"registry host beyond DNS", map[string]string{"REGISTRY": strings.Repeat("a", 250) + ".example.com/m"}, "longer than 259 characters"},
			{"a namespace name no selector can hold", with(all, map[string]string{"EXCLUDE_NAMESPACES": "Team_X"}), `"Team_X" is not a namespace name`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				set, err := Guard(load(t, tc.env))
				var refused *UnsupportedError
				if !errors.As(err, &refused) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Guard = (%v, %v), want a *UnsupportedError naming %s", set, err, tc.want)
				}
			})
		}
		if _, err := Guard(load(t, map[string]string{"IMAGE_PULL_SECRET": "regcred"})); !errors.Is(err, ErrNothingToGuard) {
			t.Errorf("Guard without image rules: %v, want ErrNothingToGuard", err)
		}
	})
	t.Run("original images recorded: the guard is unaffected", func(t *testing.T) {
		if _, err := Guard(load(t, with(all, map[string]string{"RECORD_ORIGINAL_IMAGES": "true"}))); err != nil {
			t.Errorf("Guard with RECORD_ORIGINAL_IMAGES=true: %v", err)
		}
	})
	t.Run("mirror check outcomes that keep provenance", func(t *testing.T) {
		for _, missing := range []string{"deny", "warn"} {
			if _, err := Guard(load(t, with(all, map[string]string{"MIRROR_CHECK": "true", "MIRROR_MISSING": missing, "MIRROR_UNREACHABLE": "rewrite"}))); err != nil {
				t.Errorf("Guard with MIRROR_MISSING=%s: %v", missing, err)
			}
		}
	})
}

// TestProvenanceMessages: the policies' validating part says why an image
// was left as written, differently for each reinvocation policy.
func TestProvenanceMessages(t *testing.T) {
	for _, tc := range []struct {
		reinvocation admissionregistrationv1.ReinvocationPolicyType
		want         string
	}{
		{"", "--reinvocation=IfNeeded"},
		{admissionregistrationv1.IfNeededReinvocationPolicy, "after " + PodPolicyName + "'s last run"},
	} {
		set, err := Generate(load(t, all), Options{Reinvocation: tc.reinvocation})
		if err != nil {
			t.Fatal(err)
		}
		if got := set.PodUpdates.Spec.ReinvocationPolicy; tc.reinvocation != "" && got != tc.reinvocation {
			t.Errorf("reinvocationPolicy %s, want %s", got, tc.reinvocation)
		}
		if msg := set.Provenance.Spec.Validations[0].MessageExpression; !strings.Contains(msg, tc.want) || strings.Contains(msg, "cold") {
			t.Errorf("reinvocation %q: the provenance message does not say %q (or speaks of a webhook): %s", tc.reinvocation, tc.want, msg)
		}
	}
}

// TestLiteralPrefixes pins which allowed prefixes the cheap path takes:
// those whose spelling is how the parser reads a name under them.
func TestLiteralPrefixes(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"REGISTRY": "registry.example.com/mirror", "IGNORED_REGISTRIES": "registry.k8s.io,gcr.io/knative-releases"},
			[]string{"gcr.io/knative-releases/", "registry.example.com/mirror/", "registry.k8s.io/"}},
		// Spelled otherwise than canonically: the canonical spelling.
		{map[string]string{"REGISTRY": "Registry.Example.com:443/mirror", "IGNORED_REGISTRIES": "index.docker.io/library/busybox"},
			[]string{"docker.io/library/busybox/", "registry.example.com/mirror/"}},
		// One under another is left out.
		{map[string]string{"REGISTRY": "registry.example.com/mirror", "IGNORED_REGISTRIES": "registry.example.com,registry.example.com.evil.io"},
			[]string{"registry.example.com.evil.io/", "registry.example.com/"}},
		// A Docker Hub namespace is allowed as docker.io/myorg, which is
		// its literal spelling too; "myorg/x" itself goes to the parser.
		{map[string]string{"REGISTRY": "localhost:5000", "IGNORED_REGISTRIES": "myorg,[::1]:5000/x"},
			[]string{"[::1]:5000/x/", "docker.io/myorg/", "localhost:5000/"}},
		// Not a host to the parser: no literal prefix.
		{map[string]string{"REGISTRY": "a_b.com"}, nil},
	} {
		_, got, err := CheapExpression(load(t, tc.env).Rules.Images, "x")
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%v: literal prefixes %q (%v), want %q", tc.env, got, err, tc.want)
		}
	}
}

// TestImagesChangedIsTheWebhooks: the policies skip the UPDATEs the
// shipped webhook configurations do not send (their condition
// create-or-images-changed, there restricted to Pods).
func TestImagesChangedIsTheWebhooks(t *testing.T) {
	want := "request.operation != 'UPDATE' || request.resource.resource != 'pods' || " + ImagesChanged
	for _, path := range []string{"standalone/base/webhook.yaml", "knative/webhook.yaml"} {
		checkCondition(t, path, "create-or-images-changed", want)
	}
	set, err := Generate(load(t, all), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, conds := range [][]admissionregistrationv1.MatchCondition{set.PodUpdates.Spec.MatchConditions, set.Provenance.Spec.MatchConditions} {
		if conds[1].Name != "create-or-images-changed" || conds[1].Expression != "request.operation != 'UPDATE' || "+ImagesChanged {
			t.Errorf("policy condition %+v is not the webhook's", conds[1])
		}
	}
}

// TestGuardSkipsWhatTheWebhooksSkip: no namespace the shipped webhook
// configurations exempt by name is guarded, so the guard never refuses a
// Pod the webhook was never asked about (the function's own, Knative's),
// and the opt-out label means the same to both.
func TestGuardSkipsWhatTheWebhooksSkip(t *testing.T) {
	set, err := Guard(load(t, map[string]string{"REGISTRY": "registry.example.com/mirror"}))
	if err != nil {
		t.Fatal(err)
	}
	guard := set.ProvenanceBinding.Spec.MatchResources.NamespaceSelector.MatchExpressions
	for _, path := range []string{"standalone/base/webhook.yaml", "knative/webhook.yaml"} {
		sel := shippedWebhook(t, path).Webhooks[0].NamespaceSelector
		for _, req := range sel.MatchExpressions {
			switch req.Key {
			case "kubernetes.io/metadata.name":
				for _, n := range req.Values {
					if !slices.Contains(guard[0].Values, n) {
						t.Errorf("%s exempts %s, which the guard does not", path, n)
					}
				}
			case IgnoreLabel:
				if !slices.Equal(req.Values, guard[1].Values) || req.Operator != guard[1].Operator {
					t.Errorf("%s: opt-out %+v, the guard's %+v", path, req, guard[1])
				}
			}
		}
	}
}

func shippedWebhook(t *testing.T, path string) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", path))
	if err != nil {
		t.Fatal(err)
	}
	var whc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.Unmarshal(data, &whc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &whc
}

// checkCondition fails the test unless the shipped webhook configuration
// at path has the match condition name with expression want (whitespace
// aside).
func checkCondition(t *testing.T, path, name, want string) {
	t.Helper()
	for _, c := range shippedWebhook(t, path).Webhooks[0].MatchConditions {
		if c.Name == name {
			if got := strings.Join(strings.Fields(c.Expression), " "); got != want {
				t.Errorf("%s: %s is\n  %s\nwant\n  %s", path, name, got, want)
			}
			return
		}
	}
	t.Errorf("%s has no %s condition", path, name)
}
