package main

import (
	"fmt"
	"io"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/policy"
)

const policyUsage = `usage: mutator policy [flags]

Prints, for the configuration in env, the MutatingAdmissionPolicy objects (and a
ValidatingAdmissionPolicy for refused images) that make the API server apply the
webhook's rules itself, with their bindings, as YAML for "kubectl apply -f -".
A configuration the policies cannot reproduce exactly (MODE=audit, WARNINGS,
K_SINK, MIRROR_CHECK) prints nothing: the reasons go to standard error and the
exit status is 1. Apply the namespace guard too ("mutator namespace-policy"
with the same environment). See docs/policies.md.

With --guard, prints instead the image guard for the webhook: the validating
part alone, from the same configuration and code, scoped like the webhook, so
that the API server refuses a Pod that would pull from a registry the
configuration does not allow while the webhook is cold, down or unreachable
(deploy/knative/guard.yaml for the shipped Knative configuration).

Flags:
`

// policyCmd is `mutator policy`.
func policyCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("policy", policyUsage, stderr)
	guard := fs.Bool("guard", false, "print the image guard for the webhook instead of the policies that replace it")
	reinvocation := fs.String("reinvocation", string(admissionregistrationv1.NeverReinvocationPolicy),
		"reinvocationPolicy of the Pod policy: Never (an image a later mutating webhook adds is refused) or IfNeeded (it is rewritten)")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if *guard && *reinvocation != string(admissionregistrationv1.NeverReinvocationPolicy) {
		fmt.Fprintln(stderr, "mutator policy: --reinvocation is a setting of the Pod policy, which --guard does not print")
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	// A refusal (*policy.RefusedError) prints no YAML at all, so that
	// "mutator policy | kubectl apply -f -" cannot apply a partial set.
	var set *policy.Set
	if *guard {
		set, err = policy.Guard(cfg)
	} else {
		set, err = policy.Generate(cfg, policy.Options{Reinvocation: admissionregistrationv1.ReinvocationPolicyType(*reinvocation)})
	}
	if err != nil {
		fmt.Fprintln(stderr, "mutator policy:", err)
		return 1
	}
	out, err := set.YAML()
	if err != nil {
		fmt.Fprintln(stderr, "mutator policy:", err)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintln(stderr, "mutator policy: writing:", err)
		return 1
	}
	return 0
}

const namespacePolicyUsage = `usage: mutator namespace-policy [flags]

Prints, for the configuration in env, the namespace guard: a
ValidatingAdmissionPolicy (with its binding) that lets only members of the
administrator groups label a namespace mutator.dev/ignore=true, by any write
of its labels, or create a namespace the mutator exempts by name: those the
shipped webhook configurations exempt and every name of EXCLUDE_NAMESPACES.
Both the webhook and "mutator policy" need it; with no configuration it is
deploy/namespace-policy/policy.yaml. YAML for "kubectl apply -f -".

Flags:
`

// namespacePolicyCmd is `mutator namespace-policy`.
func namespacePolicyCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("namespace-policy", namespacePolicyUsage, stderr)
	groups := fs.String("admin-groups", strings.Join(policy.DefaultAdminGroups, ","),
		"comma-separated groups whose members may opt namespaces out (empty: nobody)")
	protect := fs.String("protect", "", "comma-separated namespace names to protect as well (those an edited namespaceSelector exempts)")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	out, err := policy.NamespaceGuard(cfg, policy.GuardOptions{AdminGroups: commaList(*groups), Protect: commaList(*protect)})
	if err != nil {
		fmt.Fprintln(stderr, "mutator namespace-policy:", err)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintln(stderr, "mutator namespace-policy: writing:", err)
		return 1
	}
	return 0
}

// commaList splits a comma-separated flag value as config.List does: entries
// trimmed, empty ones dropped. An empty value is an empty, non-nil list.
func commaList(s string) []string {
	out := []string{}
	for e := range strings.SplitSeq(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
