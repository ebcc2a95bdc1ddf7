package knative

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xeipuuv/gojsonschema"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	fn "knative.dev/func/pkg/functions"
	"knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/serving"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

// funcModuleVersion is the func release whose schema and loader we check
// against; go.mod pins the same version.
const funcModuleVersion = "v0.50.1"

// funcSchema compiles the func.yaml JSON schema shipped in the func module.
func funcSchema(t *testing.T) *gojsonschema.Schema {
	t.Helper()
	dir, version, err := repo.ModuleDir("knative.dev/func")
	if err != nil {
		t.Fatal(err)
	}
	if version != funcModuleVersion {
		t.Fatalf("knative.dev/func resolves to %s, want %s", version, funcModuleVersion)
	}
	path := filepath.Join(dir, "schema", "func_yaml-schema.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading func's schema: %v", err)
	}
	schema, err := gojsonschema.NewSchema(gojsonschema.NewBytesLoader(data))
	if err != nil {
		t.Fatalf("compiling %s: %v", path, err)
	}
	return schema
}

// funcYAMLJSON returns the repository's func.yaml converted to JSON.
func funcYAMLJSON(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), fn.FunctionFile))
	if err != nil {
		t.Fatalf("reading func.yaml: %v", err)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatalf("func.yaml is not valid YAML: %v", err)
	}
	return js
}

func schemaErrors(t *testing.T, schema *gojsonschema.Schema, js []byte) []string {
	t.Helper()
	res, err := schema.Validate(gojsonschema.NewBytesLoader(js))
	if err != nil {
		t.Fatalf("running schema validation: %v", err)
	}
	var out []string
	for _, e := range res.Errors() {
		out = append(out, e.String())
	}
	return out
}

// loadWithFunc loads a function directory the way the func CLI does
// (parse + migrate) and then runs func's own logical validation.
func loadWithFunc(root string) (fn.Function, error) {
	f, err := fn.NewFunction(root)
	if err != nil {
		return f, err
	}
	return f, f.Validate()
}

func TestFuncYAMLMatchesSchema(t *testing.T) {
	if errs := schemaErrors(t, funcSchema(t), funcYAMLJSON(t)); len(errs) > 0 {
		t.Errorf("func.yaml does not validate against func %s's schema:\n  %s", funcModuleVersion, strings.Join(errs, "\n  "))
	}
}

func TestFuncYAMLLoadsWithFunc(t *testing.T) {
	f, err := loadWithFunc(repoRoot(t))
	if err != nil {
		t.Fatalf("func %s rejects func.yaml: %v", funcModuleVersion, err)
	}
	if !f.Initialized() {
		t.Fatalf("func does not see an initialized function at the repository root")
	}
	if f.SpecVersion != fn.LastSpecVersion() {
		// An older specVersion makes func migrate (and rewrite) the file.
		t.Errorf("specVersion = %q, want func %s's latest %q", f.SpecVersion, funcModuleVersion, fn.LastSpecVersion())
	}
	if f.Name != "mutator" || f.Runtime != "go" {
		t.Errorf("name/runtime = %q/%q, want mutator/go", f.Name, f.Runtime)
	}
	if f.Registry != "" && !strings.Contains(f.Registry, "/") {
		t.Errorf("registry %q should be [registry]/[namespace] or left unset", f.Registry)
	}
	s := f.Deploy.Options.Scale
	if s == nil {
		t.Fatalf("deploy.options.scale is not set")
	}
	if s.Min == nil || *s.Min != 0 || s.Max == nil || *s.Max != 10 {
		t.Errorf("deploy.options.scale min/max = %v/%v, want 0/10 (scale to zero, bounded burst)", deref(s.Min), deref(s.Max))
	}
}

// TestFuncYAMLBrokenCopiesFail shows both checks can fail, and why the
// schema check is needed besides func's loader: func ignores unknown keys
// and some schema constraints.
func TestFuncYAMLBrokenCopiesFail(t *testing.T) {
	schema := funcSchema(t)
	tests := []struct {
		name       string
		mutate     func(doc map[string]any)
		wantSchema bool // the JSON schema must reject it
		wantFunc   bool // func's loader/validator must reject it
	}{{
		name: "deploy.envs does not exist (envs belong under run)",
		mutate: func(doc map[string]any) {
			obj(doc, "deploy")["envs"] = []any{map[string]any{"name": "REGISTRY", "value": "x"}}
		},
		wantSchema: true,
	}, {
		name:       "negative scale.min",
		mutate:     func(doc map[string]any) { obj(doc, "deploy", "options", "scale")["min"] = -1 },
		wantSchema: true,
		wantFunc:   true,
	}, {
		// A cross-field rule JSON schema cannot express.
		name:     "scale.max below scale.min",
		mutate:   func(doc map[string]any) { obj(doc, "deploy", "options", "scale")["min"] = 20 },
		wantFunc: true,
	}, {
		name:       "created is required",
		mutate:     func(doc map[string]any) { delete(doc, "created") },
		wantSchema: true,
	}, {
		name:       "name must be a DNS label",
		mutate:     func(doc map[string]any) { doc["name"] = "Mutator_Webhook" },
		wantSchema: true,
	}, {
		name: "env name must not start with a digit",
		mutate: func(doc map[string]any) {
			envs := obj(doc, "run")["envs"].([]any)
			envs[0].(map[string]any)["name"] = "1REGISTRY"
		},
		wantSchema: true,
		wantFunc:   true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var doc map[string]any
			if err := json.Unmarshal(funcYAMLJSON(t), &doc); err != nil {
				t.Fatalf("decoding func.yaml: %v", err)
			}
			tc.mutate(doc)
			js, err := json.Marshal(doc)
			if err != nil {
				t.Fatalf("encoding broken func.yaml: %v", err)
			}
			if tc.wantSchema && len(schemaErrors(t, schema, js)) == 0 {
				t.Errorf("schema accepted the broken func.yaml")
			}
			if !tc.wantFunc {
				return
			}
			dir := t.TempDir()
			// JSON is YAML, so func reads this as its func.yaml.
			if err := os.WriteFile(filepath.Join(dir, fn.FunctionFile), js, 0o644); err != nil {
				t.Fatalf("writing broken func.yaml: %v", err)
			}
			if _, err := loadWithFunc(dir); err == nil {
				t.Errorf("func accepted the broken func.yaml")
			}
		})
	}
}

// obj walks nested objects of a decoded JSON document, creating them when
// absent.
func obj(doc map[string]any, path ...string) map[string]any {
	cur := doc
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[p] = next
		}
		cur = next
	}
	return cur
}

// TestFuncYAMLMatchesService keeps the two deployment paths, `func deploy`
// and `kubectl apply -k deploy/knative`, configured alike.
func TestFuncYAMLMatchesService(t *testing.T) {
	f, err := loadWithFunc(repoRoot(t))
	if err != nil {
		t.Fatalf("loading func.yaml: %v", err)
	}
	_, svc := loadService(t)

	if f.Name != svc.Name || f.Namespace != svc.Namespace {
		t.Errorf("func.yaml deploys %s/%s, service.yaml is %s/%s", f.Namespace, f.Name, svc.Namespace, svc.Name)
	}

	// Envs, LISTEN_ADDRESS included: the ko image bakes none in.
	want := map[string]string{}
	for _, e := range svc.Spec.Template.Spec.Containers[0].Env {
		want[e.Name] = e.Value
	}
	got := map[string]string{}
	for _, e := range f.Run.Envs {
		if e.Name == nil || e.Value == nil {
			t.Errorf("func.yaml env %v: name and value are required here", e)
			continue
		}
		got[*e.Name] = *e.Value
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("env %s: func.yaml %q, service.yaml %q", k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("env %s is in func.yaml but not in service.yaml", k)
		}
	}

	// Scaling and resources: func writes options to the revision template.
	ann := svc.Spec.Template.Annotations
	opts := f.Deploy.Options
	if opts.Scale == nil || opts.Resources == nil || opts.Resources.Limits == nil || opts.Resources.Requests == nil {
		t.Fatalf("func.yaml deploy.options must set scale, resources.requests and resources.limits")
	}
	checkInt := func(field string, got *int64, annotation string) {
		if got == nil || strconv.FormatInt(*got, 10) != annotation {
			t.Errorf("%s = %v, service.yaml has %q", field, deref(got), annotation)
		}
	}
	checkInt("scale.min", opts.Scale.Min, ann[autoscaling.MinScaleAnnotationKey])
	checkInt("scale.max", opts.Scale.Max, ann[autoscaling.MaxScaleAnnotationKey])
	if target, err := strconv.ParseFloat(ann[autoscaling.TargetAnnotationKey], 64); err != nil ||
		opts.Scale.Target == nil || *opts.Scale.Target != target {
		t.Errorf("scale.target = %v, service.yaml has %q", deref(opts.Scale.Target), ann[autoscaling.TargetAnnotationKey])
	}
	if cc := svc.Spec.Template.Spec.ContainerConcurrency; cc == nil {
		t.Errorf("service.yaml has no containerConcurrency")
	} else {
		checkInt("resources.limits.concurrency", opts.Resources.Limits.Concurrency, strconv.FormatInt(*cc, 10))
	}
	res := svc.Spec.Template.Spec.Containers[0].Resources
	checkQty := func(field string, got *string, want resource.Quantity) {
		if got == nil {
			t.Errorf("%s is not set; service.yaml has %s", field, want.String())
			return
		}
		q, err := resource.ParseQuantity(*got)
		if err != nil || q.Cmp(want) != 0 {
			t.Errorf("%s = %q, service.yaml has %s", field, *got, want.String())
		}
	}
	checkQty("resources.requests.cpu", opts.Resources.Requests.CPU, *res.Requests.Cpu())
	checkQty("resources.requests.memory", opts.Resources.Requests.Memory, *res.Requests.Memory())
	checkQty("resources.limits.cpu", opts.Resources.Limits.CPU, *res.Limits.Cpu())
	checkQty("resources.limits.memory", opts.Resources.Limits.Memory, *res.Limits.Memory())

	// func puts deploy.annotations on the Service metadata as well, where
	// Knative rejects autoscaling annotations: check with Knative's rule.
	svcMeta := svc.ObjectMeta.DeepCopy()
	svcMeta.Annotations = f.Deploy.Annotations
	if errs := serving.ValidateObjectMetadata(knativeCreateContext(t), svcMeta, false); errs != nil {
		t.Errorf("func.yaml deploy.annotations would be rejected on the Knative Service: %v", errs)
	}

	labels := map[string]string{}
	for _, l := range f.Deploy.Labels {
		if l.Key != nil && l.Value != nil {
			labels[*l.Key] = *l.Value
		}
	}
	const visibility = "networking.knative.dev/visibility"
	if labels[visibility] != svc.Labels[visibility] {
		t.Errorf("label %s: func.yaml %q, service.yaml %q", visibility, labels[visibility], svc.Labels[visibility])
	}

	c := svc.Spec.Template.Spec.Containers[0]
	he := f.Deploy.HealthEndpoints
	if he.Readiness != probePath(c.ReadinessProbe) || he.Liveness != probePath(c.LivenessProbe) {
		t.Errorf("healthEndpoints %+v differ from service.yaml probes %q / %q",
			he, probePath(c.ReadinessProbe), probePath(c.LivenessProbe))
	}
}

// probePath is the HTTP GET path of a probe, "" if it has none.
func probePath(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	return p.HTTPGet.Path
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}
