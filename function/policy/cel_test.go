package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"golang.org/x/mod/modfile"

	"k8s.io/apiserver/pkg/cel/environment"
)

// apiserverEnv is the CEL environment the API server compiles stored
// admission policy expressions in (k8s.io/apiserver pkg/cel/environment,
// at the compatibility version of the API server the module pins, with
// its program options: optimisation, cost tracking and the per-call cost
// limit), extended with the string variables of the expressions under
// test.
func apiserverEnv(t testing.TB, vars ...string) *cel.Env {
	t.Helper()
	var opts []cel.EnvOption
	for _, v := range vars {
		opts = append(opts, cel.Variable(v, cel.StringType))
	}
	set, err := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()).Extend(environment.VersionedOptions{
		IntroducedVersion: environment.DefaultCompatibilityVersion(),
		EnvOptions:        opts,
	})
	if err != nil {
		t.Fatalf("extending the API server's CEL environment: %v", err)
	}
	e, err := set.Env(environment.StoredExpressions)
	if err != nil {
		t.Fatalf("the API server's CEL environment: %v", err)
	}
	return e
}

// program compiles src in e as the admission plugin does
// (k8s.io/apiserver pkg/admission/plugin/cel.compile: the environment's
// program options and an interrupt check frequency).
func program(t testing.TB, e *cel.Env, src string) cel.Program {
	t.Helper()
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		t.Fatalf("compiling %.200s: %v", src, iss.Err())
	}
	prg, err := e.Program(ast, cel.InterruptCheckFrequency(100))
	if err != nil {
		t.Fatalf("program for %.200s: %v", src, err)
	}
	return prg
}

func eval(t testing.TB, prg cel.Program, in map[string]any) ref.Val {
	t.Helper()
	out, _, err := prg.Eval(in)
	if err != nil {
		t.Fatalf("evaluating with %v: %v", in, err)
	}
	return out
}

// regexPattern is the costliest pattern of the port (the domain grammar).
const regexPattern = `^(?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?)$`

// BenchmarkRegexConstant measures, in the API server's environment, a
// matches() call with a constant pattern against the same call with the
// pattern in a variable, which the interpreter must compile on every
// evaluation. cel-go's planner compiles constant patterns once
// (interpreter.CompileRegexConstants, enabled by cel.OptOptimize, which the
// API server's environment sets alongside cost tracking): if it did not,
// both would cost the same.
func BenchmarkRegexConstant(b *testing.B) {
	b.Run("constant", func(b *testing.B) { benchRegex(b, `x.matches(r"`+regexPattern+`")`) })
	b.Run("variable", func(b *testing.B) { benchRegex(b, `x.matches(p)`) })
}

// TestRegexConstantsArePrecompiled is BenchmarkRegexConstant's claim in
// a form that does not depend on the machine's load: compiling a pattern
// allocates (the parsed syntax, the program), matching with a compiled one
// hardly does, so a constant pattern that were compiled per evaluation
// would allocate as much per evaluation as the same pattern in a
// variable. The allocations are counted, deterministically; the timings
// are only the benchmark's.
func TestRegexConstantsArePrecompiled(t *testing.T) {
	e := apiserverEnv(t, "x", "p")
	in := map[string]any{"x": "registry.example.com:5000", "p": regexPattern}
	allocs := func(src string) float64 {
		prg := program(t, e, src)
		return testing.AllocsPerRun(200, func() {
			if out := eval(t, prg, in); fmt.Sprint(out) != "true" {
				t.Fatalf("%s = %v", src, out)
			}
		})
	}
	constant, variable := allocs(`x.matches(r"`+regexPattern+`")`), allocs(`x.matches(p)`)
	t.Logf("matches() in the API server's CEL environment, allocations per evaluation: constant pattern %.0f, pattern in a variable %.0f", constant, variable)
	if variable < 2*constant {
		t.Errorf("a constant pattern allocates %.0f times per evaluation, one in a variable %.0f: is the constant still compiled once?", constant, variable)
	}
}

func benchRegex(b *testing.B, src string) {
	e := apiserverEnv(b, "x", "p")
	prg := program(b, e, src)
	in := map[string]any{"x": "registry.example.com:5000", "p": regexPattern}
	for b.Loop() {
		if out := eval(b, prg, in); fmt.Sprint(out) != "true" {
			b.Fatalf("%s = %v", src, out)
		}
	}
}

// TestSameCELAsTheAPIServer: the mutator's module (whose go.mod requires
// k8s.io/apiserver and cel-go for these tests only) builds the CEL
// environment and admission compilers of the same k8s.io/apiserver and
// cel-go as the kube-apiserver the e2e tests run (hack/tools/kube/go.mod),
// so that what these tests evaluate is what the API server evaluates. Both
// go.mod files list every module of the build at the version it is built
// with.
func TestSameCELAsTheAPIServer(t *testing.T) {
	versions := func(path string) map[string]string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := modfile.ParseLax(path, data, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range f.Require {
			out[r.Mod.Path] = r.Mod.Version
		}
		for _, r := range f.Replace {
			out[r.Old.Path] = r.New.Version
		}
		return out
	}
	ours, kube := versions(filepath.Join("..", "..", "go.mod")), versions(filepath.Join("..", "..", "hack", "tools", "kube", "go.mod"))
	for _, path := range []string{"k8s.io/apiserver", "github.com/google/cel-go", "k8s.io/apimachinery", "k8s.io/api"} {
		if ours[path] == "" || ours[path] != kube[path] {
			t.Errorf("%s: the mutator's go.mod builds %q, the e2e kube-apiserver %q (hack/tools/kube/go.mod): pin it in go.mod", path, ours[path], kube[path])
		}
	}
}
