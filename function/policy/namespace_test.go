package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// shippedGuard is the namespace guard deploy/ ships.
var shippedGuard = filepath.Join("..", "..", "deploy", "namespace-policy", "policy.yaml")

// decodeGuard parses NamespaceGuard's output strictly into its two objects.
func decodeGuard(t *testing.T, out []byte) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	docs := bytes.Split(out, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("%d YAML documents, want 2:\n%s", len(docs), out)
	}
	var p admissionregistrationv1.ValidatingAdmissionPolicy
	var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
	if err := yaml.UnmarshalStrict(docs[0], &p); err != nil {
		t.Fatalf("the policy: %v\n%s", err, docs[0])
	}
	if err := yaml.UnmarshalStrict(docs[1], &b); err != nil {
		t.Fatalf("the binding: %v\n%s", err, docs[1])
	}
	return &p, &b
}

// excludedIn returns EXCLUDE_NAMESPACES of the first container of the Pod
// template in a shipped manifest (a Deployment or a Knative Service).
func excludedIn(t *testing.T, path string) string {
	t.Helper()
	v, ok := envOf(t, path)["EXCLUDE_NAMESPACES"]
	if !ok {
		t.Fatalf("%s sets no EXCLUDE_NAMESPACES", path)
	}
	return v
}

// TestShippedNamespaceGuard: deploy/namespace-policy/policy.yaml is
// byte for byte what `mutator namespace-policy` prints for the default
// configuration, and for the configurations of both deploy variants (whose
// EXCLUDE_NAMESPACES the shipped guard therefore protects), so it cannot
// drift from the generator. Regenerate it with
// `mutator namespace-policy > deploy/namespace-policy/policy.yaml`.
func TestShippedNamespaceGuard(t *testing.T) {
	shipped, err := os.ReadFile(shippedGuard)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("..", "..", "deploy")
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"default configuration", nil},
		{"deploy/standalone", map[string]string{"EXCLUDE_NAMESPACES": excludedIn(t, filepath.Join(root, "standalone", "base", "deployment.yaml"))}},
		{"deploy/knative", map[string]string{"EXCLUDE_NAMESPACES": excludedIn(t, filepath.Join(root, "knative", "service.yaml"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := NamespaceGuard(load(t, tc.env), GuardOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, shipped) {
				t.Errorf("%s differs from `mutator namespace-policy` with %v; regenerate it. The generator prints:\n%s", shippedGuard, tc.env, out)
			}
		})
	}
}

// TestNamespaceGuard: what the guard protects and who may pass it.
func TestNamespaceGuard(t *testing.T) {
	cfg := load(t, map[string]string{"REGISTRY": "r.example.com", "EXCLUDE_NAMESPACES": "team-x, kube-system,legacy"})
	out, err := NamespaceGuard(cfg, GuardOptions{AdminGroups: []string{"platform-admins", "oidc:Platform Admins"}, Protect: []string{"edge", "team-x"}})
	if err != nil {
		t.Fatal(err)
	}
	p, b := decodeGuard(t, out)
	if p.Name != NamespaceGuardName || b.Name != NamespaceGuardName || b.Spec.PolicyName != NamespaceGuardName {
		t.Errorf("names: policy %q, binding %q for %q", p.Name, b.Name, b.Spec.PolicyName)
	}
	if got := p.Spec.FailurePolicy; got == nil || *got != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v, want Fail", got)
	}
	if !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("validationActions %v, want [Deny]", b.Spec.ValidationActions)
	}
	rules := p.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"namespaces", "namespaces/*"}) {
		t.Errorf("resource rules %+v, want namespaces and all its subresources (status and finalize write labels)", rules)
	}
	if got, want := p.Spec.MatchConditions[0].Expression, `!request.userInfo.groups.exists(g, g in ['platform-admins', 'oidc:Platform Admins'])`; got != want {
		t.Errorf("administrator condition %s, want %s", got, want)
	}
	want := "!(object.metadata.name in ['cert-manager', 'edge', 'istio-system', 'knative-serving', 'kourier-system', 'kube-system', 'legacy', 'mutator-system', 'team-x'])"
	if got := p.Spec.Validations[1].Expression; !strings.HasSuffix(got, want) {
		t.Errorf("protected names %s, want every exempt name, EXCLUDE_NAMESPACES and --protect, sorted, once: ...%s", got, want)
	}

	t.Run("no administrators", func(t *testing.T) {
		out, err := NamespaceGuard(cfg, GuardOptions{AdminGroups: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := decodeGuard(t, out); p.Spec.MatchConditions[0].Expression != "!request.userInfo.groups.exists(g, g in [])" {
			t.Errorf("administrator condition %s, want nobody", p.Spec.MatchConditions[0].Expression)
		}
	})
	t.Run("group names are CEL string literals", func(t *testing.T) {
		out, err := NamespaceGuard(cfg, GuardOptions{AdminGroups: []string{`x']) || true || ('`, `a\b`, "tab\there", `"quoted" <&>`}})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := decodeGuard(t, out)
		want := `!request.userInfo.groups.exists(g, g in ['x\']) || true || (\'', 'a\\b', 'tab\u0009here', '"quoted" <&>'])`
		if got := p.Spec.MatchConditions[0].Expression; got != want {
			t.Errorf("administrator condition\n got %s\nwant %s", got, want)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			cfg  map[string]string
			opts GuardOptions
			want string
		}{
			{"a name that is no namespace", map[string]string{"EXCLUDE_NAMESPACES": "Team_X"}, GuardOptions{}, `namespace "Team_X"`},
			{"a protected name that is no namespace", nil, GuardOptions{Protect: []string{"a'b"}}, `namespace "a'b"`},
			{"an empty group", nil, GuardOptions{AdminGroups: []string{""}}, `administrator group ""`},
			{"a group that is not UTF-8", nil, GuardOptions{AdminGroups: []string{"\xff"}}, `administrator group "\xff"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := NamespaceGuard(load(t, tc.cfg), tc.opts)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("NamespaceGuard: %v (printed %d bytes), want an error naming %s", err, len(out), tc.want)
				}
			})
		}
	})
}
