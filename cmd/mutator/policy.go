package main

import (
	"fmt"
	"io"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/policy"
)

const policyUsage = `usage: mutator policy

Prints, for the configuration in env, the MutatingAdmissionPolicy objects (and a
ValidatingAdmissionPolicy for refused images) that make the API server apply the
webhook's rules itself, with their bindings, as YAML for "kubectl apply -f -".
A configuration the policies cannot reproduce exactly (MODE=audit, WARNINGS,
K_SINK, MIRROR_CHECK) prints nothing: the reasons go to standard error and the
exit status is 1. See the README, "No webhook: MutatingAdmissionPolicy".
`

// policyCmd is `mutator policy`.
func policyCmd(args []string, stdout, stderr io.Writer) int {
	if helpRequested(args) {
		fmt.Fprint(stdout, policyUsage)
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "mutator policy: unexpected arguments %q\n%s", args, policyUsage)
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, "mutator:", err)
		return 1
	}
	// A refusal (*policy.RefusedError) prints no YAML at all, so that
	// "mutator policy | kubectl apply -f -" cannot apply a partial set.
	set, err := policy.Generate(cfg)
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
