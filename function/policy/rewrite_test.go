package policy_test

// The tests of package policy_test evaluate the CEL of `mutator policy` in
// the API server's own CEL environment (k8s.io/apiserver pkg/cel/environment
// and the admission plugins' compilers, at the version of the e2e tests'
// kube-apiserver; cel_test.go) against the webhook's own rules: the image
// expression against images.Rewriter on the fuzz corpora, the cases of
// docs/rules.md and generated strings (this file), and the generated
// policies, compiled and run as the admission plugins run them, against
// mutation.Rules on generated Pods (admission_test.go). The e2e parity test
// checks the same on a real kube-apiserver for a smaller corpus.

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"

	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/policy"
)

// corpus returns the string inputs of the rewriter's fuzz corpus.
func corpus(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "images", "testdata", "fuzz", "FuzzRewrite", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fuzz corpus (%v)", err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if arg, ok := strings.CutPrefix(sc.Text(), "string("); ok {
				if s, err := strconv.Unquote(strings.TrimSuffix(arg, ")")); err == nil {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// cases are the examples of docs/rules.md and the edges of the port.
var cases = []string{
	"registry.example.com/mirror", "registry.example.com/mirror/", "registry.example.com/mirror/x", "registry.example.com/mirror//x",
	"registry.example.com/mirror/X", "registry.example.com/mirror/x:", "registry.example.com/mirror/:t", "registry.example.com/mirror/@x",
	"registry.k8s.io/" + strings.Repeat("p", 800), "registry.k8s.io/pause:3.10@sha256:" + strings.Repeat("a", 64),
	"", "nginx", "nginx:1.27", "bitnami/redis:7", "ghcr.io/org/app:v1", "localhost:5000/x", "Evil/payload:1", "LOCALHOST/x:1",
	"app@sha256:" + strings.Repeat("a", 64), "registry.example.com/mirror/nginx:1.27", "R.Example.com:443/mirror/nginx:1.27",
	"r.example.com.evil.io/x", "registry.k8s.io/pause:3.10", "docker.io/nginx", "library/nginx", "Not A Valid/Image",
	"evil.io/" + strings.Repeat("a", 250), "evil.example.com/" + strings.Repeat("a", 250) + ":1", strings.Repeat("a", 64),
	strings.Repeat("a", 63), "a_b.com/x", "Docker.io/nginx", "index.docker.io/nginx", "INDEX.docker.io/nginx", "index.docker.io:443/x/y",
	"quay.io/argoproj/argocd:v2", "quay.io:443/a", "[::1]:5000/x", "[::1]/x", "x@sha384:" + strings.Repeat("b", 96),
	"x@sha512:" + strings.Repeat("c", 128), "x@md5:" + strings.Repeat("c", 32), "x@sha256:" + strings.Repeat("A", 64),
	"x:tag@sha256:" + strings.Repeat("a", 64), "Evil.com/x", "é/x", "x/é", "harbor.example.com/dockerhub/library/nginx",
	"a/B", "a:b/c", "a.b/c:d:e", "foo/bar:" + strings.Repeat("t", 128), "foo/bar:" + strings.Repeat("t", 129),
	strings.Repeat("x", 781), "x/" + strings.Repeat("é", 400), "-a/b", "a-/b", "a__b.c/x", "localhost", "localhost/x", "docker.io",
	"docker.io/x/y", "Quay.IO/x/y", "ghcr.io/" + strings.Repeat("a/", 127) + "b", "a" + strings.Repeat("/b", 130), "x@", "x:", "a@b/c",
}

// generated returns n strings built from the pieces references are made of.
func generated(n int) []string {
	pieces := []string{"a", "b", "Z", ".", ":", "/", "@", "_", "__", "-", "5000", "443", "docker.io", "index.docker.io", "library",
		"localhost", "LOCALHOST", "sha256:" + strings.Repeat("a", 64), "registry.example.com", "mirror", "quay.io", "harbor.example.com",
		"dockerhub", "[::1]", "é", " ", strings.Repeat("x", 60), "registry.k8s.io", "pause"}
	x := xorshift(42)
	out := make([]string, 0, n)
	for range n {
		var b strings.Builder
		for range int(x.next()%8) + 1 {
			b.WriteString(pieces[x.next()%uint64(len(pieces))])
		}
		out = append(out, b.String())
	}
	return out
}

// xorshift generates the tests' inputs, deterministically.
type xorshift uint64

func (x *xorshift) next() uint64 {
	*x ^= *x << 13
	*x ^= *x >> 7
	*x ^= *x << 17
	return uint64(*x)
}

// configs are the image configurations the expressions are compared under
// (as env, read by policy.LoadConfig): every kind of target, and prefixes
// spelled otherwise than canonically.
var configs = []map[string]string{
	{"REGISTRY": "registry.example.com/mirror", "IGNORED_REGISTRIES": "registry.k8s.io,docker.io/library"},
	{"REGISTRY": "r.example.com", "REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub,quay.io=harbor.example.com:5000/quay"},
	{"REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub,*=h.example.com/all"},
	{"REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub"},
	{"REGISTRY": "localhost:5000", "IGNORED_REGISTRIES": "Quay.IO:443/x"},
	{"REGISTRY": "docker.io", "REGISTRY_MAP": "ghcr.io=docker.io/mirror"},
	{"REGISTRY": "a_b.com", "IGNORED_REGISTRIES": "docker.io", "REGISTRY_MAP": "*=a_b.com/x"},
	{"REGISTRY": "Registry.Example.com:443/mirror", "REGISTRY_MAP": "[::1]:5000=[::1]:5000/m,quay.io=docker.io"},
}

func TestRewriteMatchesTheWebhook(t *testing.T) {
	inputs := append(append(corpus(t), cases...), generated(5000)...)
	e := apiserverEnv(t, "x")
	for _, env := range configs {
		plan := policy.LoadConfig(t, env).Rules.Images
		rw := images.Compile(plan)
		src, err := policy.ImageExpression(plan, "x")
		if err != nil {
			t.Fatal(err)
		}
		ast, iss := e.Compile(src)
		if iss.Err() != nil {
			t.Fatalf("compiling the expression for %s: %v", desc(env), iss.Err())
		}
		prg, err := e.Program(ast, cel.InterruptCheckFrequency(100))
		if err != nil {
			t.Fatal(err)
		}
		var maxCost uint64
		var refused int
		for _, img := range inputs {
			want, werr := rw.Rewrite(img)
			out, det, err := prg.Eval(map[string]any{"x": img})
			if err != nil {
				t.Errorf("%q: evaluation failed: %v", images.Quote(img), err)
				continue
			}
			v, err := out.ConvertToNative(reflect.TypeFor[[]string]())
			if err != nil {
				t.Fatal(err)
			}
			got := v.([]string)
			switch {
			case werr != nil:
				refused++
				if len(got) != 0 {
					t.Errorf("%s: %s: the webhook refuses it (%v), the policy rewrites it to %q", desc(env), images.Quote(img), werr, got)
				}
			case len(got) != 1 || got[0] != want:
				t.Errorf("%s: %s: the webhook makes it %s, the policy %q", desc(env), images.Quote(img), images.Quote(want), got)
			}
			if c := det.ActualCost(); c != nil && *c > maxCost {
				maxCost = *c
			}
		}
		t.Logf("%s: %d inputs compared (%d refused by both), expression %d characters, highest cost %d",
			desc(env), len(inputs), refused, len(src), maxCost)
	}
}

// underPrefixes returns, for each prefix, the prefix followed by each of
// the tails: the strings the cheap path says yes to.
func underPrefixes(prefixes, tails []string) []string {
	var out []string
	for _, p := range prefixes {
		for _, tail := range tails {
			out = append(out, p+tail)
		}
	}
	return out
}

// TestShortcutsAreSound: wherever the policies' cheap path says an image
// stays as written, the webhook leaves it as written (no rewrite, no
// refusal), and wherever the fast path gives a rewrite, the webhook makes
// that rewrite. Checked on every input of TestRewriteMatchesTheWebhook and
// on those inputs written under each prefix the cheap path accepts and
// after hosts and Docker Hub names the fast path takes, so that most of
// them take a shortcut.
func TestShortcutsAreSound(t *testing.T) {
	e := apiserverEnv(t, "x")
	tails := append(append(corpus(t), cases...), generated(3000)...)
	for _, env := range append(slices.Clone(configs), map[string]string{"REGISTRY": "registry.example.com", "IGNORED_REGISTRIES": "myorg,[::1]:5000/x,docker.io"}) {
		plan := policy.LoadConfig(t, env).Rules.Images
		rw := images.Compile(plan)
		cheapSrc, prefixes, err := policy.CheapExpression(plan, "x")
		if err != nil {
			t.Fatal(err)
		}
		fastSrc, err := policy.FastExpression(plan, "x")
		if err != nil {
			t.Fatal(err)
		}
		cheap, fast := program(t, e, cheapSrc), program(t, e, fastSrc)
		inputs := append(slices.Clone(tails), underPrefixes(prefixes, tails)...)
		inputs = append(inputs, underPrefixes([]string{"ghcr.io/", "quay.io/", "a.b/", "library/", "org/", "localhost/"}, tails)...)
		var cheapTaken, fastTaken int
		for _, img := range inputs {
			want, werr := rw.Rewrite(img)
			if out := eval(t, cheap, map[string]any{"x": img}); out == types.True {
				cheapTaken++
				if werr != nil || want != img {
					t.Errorf("%s: the cheap path keeps %s, the webhook makes it %s (%v)", desc(env), images.Quote(img), images.Quote(want), werr)
				}
			}
			v, err := eval(t, fast, map[string]any{"x": img}).ConvertToNative(reflect.TypeFor[[]string]())
			if err != nil {
				t.Fatal(err)
			}
			if got := v.([]string); len(got) == 1 {
				fastTaken++
				if werr != nil || want != got[0] {
					t.Errorf("%s: the fast path makes %s %s, the webhook %s (%v)", desc(env), images.Quote(img), images.Quote(got[0]), images.Quote(want), werr)
				}
			}
		}
		if cheapTaken < len(prefixes)*len(tails)*9/10 {
			t.Errorf("%s: the cheap path took %d of %d inputs: the test no longer exercises it", desc(env), cheapTaken, len(inputs))
		}
		if fastSrc != "[]" && fastTaken < len(tails)/10 {
			t.Errorf("%s: the fast path took %d of %d inputs: the test no longer exercises it", desc(env), fastTaken, len(inputs))
		}
		t.Logf("%s: prefixes %q; of %d inputs, %d took the cheap path, %d the fast path", desc(env), prefixes, len(inputs), cheapTaken, fastTaken)
	}
}

// desc names a configuration by its env.
func desc(env map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, fmt.Sprintf("%s=%q", k, env[k]))
	}
	return strings.Join(out, " ")
}
