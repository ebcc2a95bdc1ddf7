package helm

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/policy"

	"github.com/mutator-dev/mutator/internal/objects"
)

// TestNamespacePolicyIsTheGenerators: the chart's namespace policy is what
// `mutator namespace-policy` prints for the chart's configuration (its
// EXCLUDE_NAMESPACES and administrator groups), spec for spec, so that Helm
// and kustomize users get the same guard: every name of
// config.excludeNamespaces protected, every write of a namespace's labels
// (namespaces/status and namespaces/finalize too) guarded.
func TestNamespacePolicyIsTheGenerators(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		exclude      []string // the EXCLUDE_NAMESPACES the values render
		groups       []string // nil: the defaults
	}{
		{"defaults", ``, []string{"kube-system", defaultNS}, nil},
		{"more excluded names", `config: {excludeNamespaces: [kube-system, "{{ .Release.Namespace }}", team-x, legacy]}`,
			[]string{"kube-system", defaultNS, "team-x", "legacy"}, nil},
		{"other administrators", `namespacePolicy: {adminGroups: [platform-admins, "oidc:Platform Admins"]}`,
			[]string{"kube-system", defaultNS}, []string{"platform-admins", "oidc:Platform Admins"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.values, defaultNS)
			if got := strings.Join(tc.exclude, ","); env(t, objs)["EXCLUDE_NAMESPACES"] != got {
				t.Fatalf("the chart renders EXCLUDE_NAMESPACES=%q, the test expects %q", env(t, objs)["EXCLUDE_NAMESPACES"], got)
			}
			out, err := policy.NamespaceGuard(config.Config{Review: config.Review{Exclude: tc.exclude}}, policy.GuardOptions{AdminGroups: tc.groups})
			if err != nil {
				t.Fatal(err)
			}
			generated, err := objects.Parse(string(out))
			if err != nil {
				t.Fatal(err)
			}
			for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
				want := mustFind(t, generated, kind, policy.NamespaceGuardName)
				got := mustFind(t, objs, kind, releaseName+"-namespace-opt-out")
				if diff := cmp.Diff(want.Object["spec"], got.Object["spec"]); diff != "" {
					t.Errorf("the chart's %s differs from `mutator namespace-policy` (-generator +chart):\n%s", kind, diff)
				}
			}
			vap := mustFind(t, objs, "ValidatingAdmissionPolicy", releaseName+"-namespace-opt-out")
			for _, name := range tc.exclude {
				if !strings.Contains(str(vap, "spec.validations.1.expression"), "'"+name+"'") {
					t.Errorf("the excluded namespace %s is not protected: %s", name, str(vap, "spec.validations.1.expression"))
				}
			}
		})
	}
}
