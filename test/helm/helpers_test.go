package helm

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mutator-dev/mutator/internal/objects"
)

const (
	// releaseName is the name docs/helm.md installs with; it makes the
	// chart's fullname "mutator", the names deploy/standalone uses.
	releaseName = "mutator"
	// defaultNS is deploy/standalone's namespace.
	defaultNS = "mutator-system"
)

// kubeVersion is what rendering assumes the cluster runs: the version of
// the kube-apiserver the e2e suite builds.
var kubeVersion = &chartutil.KubeVersion{Version: "v1.36.0", Major: "1", Minor: "36"}

// repoRoot is the mutator repository: test/helm's grandparent. go test runs
// in the package directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("getting working directory: %v", err)
	}
	root := filepath.Dir(filepath.Dir(wd))
	if _, err := os.Stat(filepath.Join(root, "deploy", "standalone", "kustomization.yaml")); err != nil {
		t.Fatalf("repository root not found above %s: %v", wd, err)
	}
	return root
}

func chartDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "deploy", "helm", "mutator")
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir(t))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return c
}

// values parses a values file's text (what a user passes with -f).
func values(t *testing.T, text string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(text))
	if err != nil {
		t.Fatalf("parsing values %q: %v", text, err)
	}
	return v.AsMap()
}

// renderChart is `helm template <release> deploy/helm/mutator -n <ns> -f
// <vals>`: a client-only dry-run install, which also validates the values
// against values.schema.json.
func renderChart(t *testing.T, vals map[string]any, namespace string) (string, error) {
	t.Helper()
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion = kubeVersion
	rel, err := inst.Run(loadChart(t), vals)
	if err != nil {
		return "", fmt.Errorf("rendering the chart: %w", err)
	}
	if len(rel.Hooks) > 0 {
		return "", fmt.Errorf("the chart has %d hooks; these tests compare and apply only the manifest", len(rel.Hooks))
	}
	return rel.Manifest, nil
}

// render renders and parses the chart, failing the test on an error.
func render(t *testing.T, valuesText, namespace string) []*unstructured.Unstructured {
	t.Helper()
	manifest, err := renderChart(t, values(t, valuesText), namespace)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := objects.Parse(manifest)
	if err != nil {
		t.Fatalf("parsing the rendered chart: %v\n%s", err, manifest)
	}
	return objs
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, objects.Key(o))
	}
	slices.Sort(out)
	return out
}

// find returns the object of kind and name, or nil.
func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// mustFind is find that fails the test when the object is missing.
func mustFind(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		t.Fatalf("no %s %s among %v", kind, name, keys(objs))
	}
	return o
}

// field returns the value at a dotted path (list elements by index, as in
// "webhooks.0.name"), or nil.
func field(o *unstructured.Unstructured, path string) any {
	var cur any = o.Object
	for _, p := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			var i int
			if _, err := fmt.Sscanf(p, "%d", &i); err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// str is field as a string ("" when absent or not a string).
func str(o *unstructured.Unstructured, path string) string {
	s, _ := field(o, path).(string)
	return s
}

// strs is field as a list of strings.
func strs(o *unstructured.Unstructured, path string) []string {
	l, _ := field(o, path).([]any)
	var out []string
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// container returns the mutator container of the Deployment.
func container(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	var dep *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			dep = o
		}
	}
	if dep == nil {
		t.Fatalf("no Deployment among %v", keys(objs))
	}
	c, _ := field(dep, "spec.template.spec.containers.0").(map[string]any)
	if c == nil || c["name"] != "mutator" {
		t.Fatalf("the Deployment's first container is not mutator: %v", c)
	}
	return c
}

// env returns the mutator container's environment by name; a valueFrom
// entry maps to "valueFrom".
func env(t *testing.T, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	list, _ := container(t, objs)["env"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		name, _ := m["name"].(string)
		if _, dup := out[name]; dup {
			t.Errorf("env %s is set twice", name)
		}
		if v, ok := m["value"].(string); ok {
			out[name] = v
		} else if _, ok := m["valueFrom"]; ok {
			out[name] = "valueFrom"
		} else {
			out[name] = ""
		}
	}
	return out
}
