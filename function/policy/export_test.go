package policy

import (
	"testing"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/images"
)

// LoadConfig is load for the tests of package policy_test, which compare
// the CEL of the policies with the webhook's Go rules in the API server's
// own CEL environment: the configuration env sets, read through
// config.Load on an environment cleared of every variable config.Env reads.
func LoadConfig(t testing.TB, env map[string]string) config.Config {
	t.Helper()
	return load(t, env)
}

// ImageExpression returns the CEL expression the policies evaluate for an
// image, with the configuration's constants written in, for the string
// expression x: [image to pull] ([x] when it stays), [] when the webhook
// would refuse it, and "" when the plan has no image rules. The tests
// evaluate it against images.Rewriter in the API server's CEL environment.
func ImageExpression(plan images.Plan, x string) (string, error) {
	r := imageRules(plan)
	if !r.enabled() {
		return "", nil
	}
	consts, err := r.constants()
	if err != nil {
		return "", err
	}
	byName := map[string]string{}
	for _, kv := range consts {
		byName[kv[0]] = "(" + kv[1] + ")"
	}
	return r.imageExpr(x, func(name string) string { return byName[name] }), nil
}

// CheapExpression returns the cheap path of the policies for the string
// expression x (true: the webhook leaves x as it is; false: ask the
// parser), and the prefixes it accepts, so that tests can check that it
// never says true where images.Rewriter would change or refuse x.
func CheapExpression(plan images.Plan, x string) (string, []string, error) {
	p := imageRules(plan).literalPrefixes()
	return cheapExpr(p, x), p, nil
}

// FastExpression returns the fast path of the policies for the string
// expression x ([the webhook's rewrite of x], or [] where the full port
// must decide), so that tests can check that it never gives a rewrite the
// webhook would not make.
func FastExpression(plan images.Plan, x string) (string, error) {
	return imageRules(plan).fastExpr(x), nil
}
