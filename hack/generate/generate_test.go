package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"sigs.k8s.io/yaml"
)

// TestDiff: the patch diff makes turns a into b, as kustomize applies JSON
// patches (evanphx/json-patch), and is the short patch.
func TestDiff(t *testing.T) {
	env := func(names ...string) string {
		var items []string
		for _, n := range names {
			items = append(items, `{"name":"`+n+`","value":"v-`+n+`"}`)
		}
		return `{"spec":{"containers":[{"name":"c","env":[` + strings.Join(items, ",") + `]}]}}`
	}
	for _, tc := range []struct {
		name string
		a, b string
		ops  int // the patch's length
	}{
		{"equal", env("A", "B"), env("A", "B"), 0},
		{"inserted at the front", env("C", "D"), env("A", "B", "C", "D"), 2},
		{"appended", env("A"), env("A", "B"), 1},
		{"inserted in the middle", env("A", "C"), env("A", "B", "C"), 1},
		{"removed", env("A", "B", "C"), env("A", "C"), 1},
		{"replaced by another name", env("A", "B", "C"), env("A", "X", "C"), 2},
		{"changed in place", env("A", "B"), `{"spec":{"containers":[{"name":"c","env":[{"name":"A","value":"v-A"},{"name":"B","value":"new"}]}]}}`, 1},
		{"a field added and removed", `{"a":1,"b":{"c":2}}`, `{"b":{"c":2,"d":[1]},"e":"x"}`, 3},
		{"a scalar list", `{"v":["kube-system","mutator-system"]}`, `{"v":["kube-system","mutator-system","cert-manager"]}`, 1},
		{"keys to escape", `{"m":{}}`, `{"m":{"a/b":"1","c~d":"2"}}`, 2},
		{"a type change", `{"a":[1]}`, `{"a":{"b":1}}`, 1},
		{"both lists changed", `{"a":[1,2,3],"b":[4]}`, `{"a":[3,2,1],"b":[]}`, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a, b any
			if err := json.Unmarshal([]byte(tc.a), &a); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.b), &b); err != nil {
				t.Fatal(err)
			}
			ops := diff("", a, b)
			if len(ops) != tc.ops {
				t.Errorf("%d operations, want %d: %+v", len(ops), tc.ops, ops)
			}
			if len(ops) == 0 {
				return
			}
			raw, err := json.Marshal(ops)
			if err != nil {
				t.Fatal(err)
			}
			p, err := jsonpatch.DecodePatch(raw)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := p.Apply([]byte(tc.a))
			if err != nil {
				t.Fatalf("applying %s: %v", raw, err)
			}
			var got any
			if err := json.Unmarshal(patched, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, b) {
				t.Errorf("the patch %s makes %s, want %s", raw, patched, tc.b)
			}
		})
	}
}

// copyTree copies the parts of the repository the generator reads into a
// temporary root.
func copyTree(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	src, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"deploy", configDoc, readme, schemaTemplate} {
		err = filepath.WalkDir(filepath.Join(src, from), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(src, p)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			dst := filepath.Join(tmp, rel)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			return os.WriteFile(dst, data, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return tmp
}

func edit(t *testing.T, root, rel, old, new string) {
	t.Helper()
	p := filepath.Join(root, rel)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s has no %q", rel, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckCatchesStaleFiles: -check passes on a tree just generated and
// fails, naming the file, on each way a derived file goes stale; generating
// again fixes it.
func TestCheckCatchesStaleFiles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(t *testing.T, root string)
		stale string // in the error
	}{
		{"a generated file edited by hand", func(t *testing.T, root string) {
			edit(t, root, "deploy/standalone/base/webhook.yaml", "timeoutSeconds: 5", "timeoutSeconds: 7")
		}, "deploy/standalone/base/webhook.yaml"},
		{"a chart default changed", func(t *testing.T, root string) {
			edit(t, root, "deploy/helm/mutator/values.yaml", "  logLevel: info", "  logLevel: debug")
		}, "deploy/standalone/base/deployment.yaml"},
		{"a chart template changed", func(t *testing.T, root string) {
			edit(t, root, "deploy/helm/mutator/templates/certs-cert-manager.yaml", "duration: 2160h", "duration: 2000h")
		}, "deploy/standalone/cert-manager/certs-cert-manager.yaml"},
		{"the schema edited by hand", func(t *testing.T, root string) {
			edit(t, root, schemaFile, `"maximum": 65535`, `"maximum": 65000`)
		}, schemaFile},
		{"a refinement of the schema changed", func(t *testing.T, root string) {
			edit(t, root, schemaTemplate, `"maximum": 65535`, `"maximum": 65000`)
		}, schemaFile},
		{"the configuration table edited by hand", func(t *testing.T, root string) {
			edit(t, root, configDoc, "| `REGISTRY` |", "| `REGISTRY ` |")
		}, configDoc},
		{"the README's summary edited by hand", func(t *testing.T, root string) {
			edit(t, root, readme, "| `MODE` | `enforce` |", "| `MODE` | `audit` |")
		}, readme},
		{"the namespace guard edited by hand", func(t *testing.T, root string) {
			edit(t, root, namespaceGuardFile, "failurePolicy: Fail", "failurePolicy: Ignore")
		}, namespaceGuardFile},
		{"the Knative Service's configuration changed", func(t *testing.T, root string) {
			edit(t, root, knativeService, "value: kube-system,", "value: legacy,kube-system,")
		}, imageGuardFile},
		{"a generated file deleted", func(t *testing.T, root string) {
			if err := os.Remove(filepath.Join(root, "deploy/standalone/deployment-patch.yaml")); err != nil {
				t.Fatal(err)
			}
		}, "deploy/standalone/deployment-patch.yaml (missing)"},
		{"a generated file left over", func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, "deploy/standalone/old.yaml"), []byte(header), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "deploy/standalone/old.yaml (no longer generated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t)
			if err := run(root, false); err != nil {
				t.Fatalf("generating: %v", err)
			}
			if err := run(root, true); err != nil {
				t.Fatalf("checking a tree just generated: %v", err)
			}
			tc.edit(t, root)
			err := run(root, true)
			if err == nil || !strings.Contains(err.Error(), tc.stale) || !strings.Contains(err.Error(), fixCommand) {
				t.Fatalf("check after %s: %v; want %s listed and %q", tc.name, err, tc.stale, fixCommand)
			}
			if err := run(root, false); err != nil {
				t.Fatalf("generating again: %v", err)
			}
			if err := run(root, true); err != nil {
				t.Errorf("checking after generating again: %v", err)
			}
		})
	}
}

// TestBuildsMustBeTheChart: a kustomization.yaml (kept by hand) that does
// not build what the chart renders fails the generator, with the object.
func TestBuildsMustBeTheChart(t *testing.T) {
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"a generated file not listed", "deploy/standalone/cert-manager/kustomization.yaml", "  - certs-cert-manager.yaml\n", "",
			"cert-manager.io/Certificate mutator-system/mutator-serving is missing"},
		{"a patch not applied", "deploy/standalone/kustomization.yaml", "  - path: deployment-patch.yaml\n    target:\n      group: apps\n      version: v1\n      kind: Deployment\n      name: mutator\n", "",
			"apps/Deployment mutator-system/mutator differs"},
		{"an object the chart does not render", "deploy/standalone/base/kustomization.yaml", "  - webhook.yaml\n", "  - webhook.yaml\n  - extra.yaml\n",
			"/ConfigMap mutator-system/extra is not the chart's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t)
			extra, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "extra", "namespace": "mutator-system"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "deploy/standalone/base/extra.yaml"), extra, 0o644); err != nil {
				t.Fatal(err)
			}
			edit(t, root, tc.file, tc.old, tc.new)
			err = run(root, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("generating with %s: %v; want an error with %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestSchemaMerge: the hand-kept schema refines the generated properties,
// adds the chart's own values, and may not refine a setting that is gone.
func TestSchemaMerge(t *testing.T) {
	parse := func(s string) *object {
		t.Helper()
		v, err := decodeOrdered([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return v.(*object)
	}
	gen := parse(`{"type":"object","properties":{"port":{"type":["integer","null"],"description":"PORT"},"mirror":{"type":"object","properties":{"check":{"type":["boolean","null"]}},"additionalProperties":false}}}`)
	for _, tc := range []struct {
		name, tmpl, want, err string
	}{
		{"refined", `{"type":"object","additionalProperties":false,"properties":{"port":{"type":"integer","minimum":1}}}`,
			`{"type":"object","properties":{"port":{"type":"integer","description":"PORT","minimum":1},"mirror":{"type":"object","properties":{"check":{"type":["boolean","null"]}},"additionalProperties":false}},"additionalProperties":false}`, ""},
		{"the chart's own value", `{"properties":{"mirror":{"properties":{"secret":{"type":"string"}}}}}`,
			`{"type":"object","properties":{"port":{"type":["integer","null"],"description":"PORT"},"mirror":{"type":"object","properties":{"check":{"type":["boolean","null"]},"secret":{"type":"string"}},"additionalProperties":false}}}`, ""},
		{"a refinement of nothing", `{"properties":{"mirror":{"properties":{"gone":{"minimum":1}}}}}`, "", "refines config.mirror.gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeNode("config", parse(tc.tmpl), gen)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("merged\n%s\nwant\n%s", b, tc.want)
			}
		})
	}
}

// TestWithTable: the table goes between the markers, or into a section of
// its own before the first heading when there are none.
func TestWithTable(t *testing.T) {
	block := tableBegin + "\n\nT\n\n" + tableEnd
	for _, tc := range []struct{ name, doc, want, err string }{
		{"markers", "# C\n\n" + tableBegin + "\nold\n" + tableEnd + "\nrest\n", "# C\n\n" + block + "\nrest\n", ""},
		{"no markers", "# C\n\nintro\n\n## Rules\n", "# C\n\nintro\n\n## Every variable\n\n", ""},
		{"one marker", "# C\n" + tableEnd + "\n", "", "missing or they are out of order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := withTable(tc.doc, "T\n")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, block) {
				t.Errorf("got\n%s\nwant it to start with\n%s\nand hold\n%s", got, tc.want, block)
			}
		})
	}
}
