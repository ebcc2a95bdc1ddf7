package main

// The standalone kustomize manifests, deploy/standalone, are the Helm chart
// rendered with Helm's own library (a client-only dry-run install, what
// `helm template` does), so that kustomize and Helm users get the same
// objects:
//
//   - base/: the chart with no certificate source, one file per template:
//     what both certificate variants share.
//   - . (self-managed, the chart's defaults) and cert-manager/: the objects
//     the variant adds (certs-*.yaml, one file per template) and, for each
//     object of base/ the variant renders differently, a JSON patch (RFC
//     6902) of it (<template>-patch.yaml).
//   - network-policy/: the chart's NetworkPolicy, with a placeholder for the
//     API server's address.
//
// Helm's own labels are left out, and so are hooks and chart tests (a
// client-only install keeps them out of the manifest). The chart's namespace
// policy is not written: kustomize users get it from deploy/namespace-policy,
// which deploy/knative shares. The kustomization.yaml files are kept by
// hand; after writing, every variant is built with kustomize (in memory, on
// the files just generated) and must be object for object what the chart
// renders for it, which also catches a kustomization.yaml that lists the
// wrong files.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/internal/objects"
)

const (
	chartDir      = "deploy/helm/mutator"
	standaloneDir = "deploy/standalone"
	// releaseName makes the chart's fullname "mutator", the name of (nearly)
	// every object, as docs/helm.md installs it.
	releaseName = "mutator"
	// releaseNamespace is written into the objects; kustomize's namespace
	// field overrides it as with any manifest.
	releaseNamespace = "mutator-system"
)

// kubeVersion is the cluster version rendering assumes (the chart's
// kubeVersion constraint is checked against it; no template reads it).
var kubeVersion = &chartutil.KubeVersion{Version: "v1.36.0", Major: "1", Minor: "36"}

// helmLabels are the labels only Helm installations carry (Helm's
// conventions: the chart, the manager, the release and its appVersion); the
// standalone manifests leave them out.
var helmLabels = []string{
	"helm.sh/chart",
	"app.kubernetes.io/managed-by",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
}

// helmLabelLine matches one of helmLabels' lines in a rendered labels map.
var helmLabelLine = regexp.MustCompile(`(?m)^[ \t]+(?:helm\.sh/chart|app\.kubernetes\.io/(?:managed-by|instance|version)):[^\n]*\n`)

// sharedTemplates are the chart's templates the standalone tree takes from
// elsewhere: deploy/namespace-policy (`mutator namespace-policy`'s output,
// shared with deploy/knative), which the kustomizations include.
var sharedTemplates = []string{"namespace-policy.yaml"}

// variant is one directory of deploy/standalone and the chart values that
// make it.
type variant struct {
	dir    string // under deploy/standalone
	values string // chart values (YAML)
	about  string // the values in words, for the files' second line
	// schema: validate the values against values.schema.json. Off only for
	// values the generator needs and the schema rightly refuses.
	schema bool
	// patches is the directory (of another variant) whose objects this one
	// patches rather than repeats; "" writes every object.
	patches string
	// only: the templates written (nil: all but sharedTemplates).
	only []string
}

var variants = []variant{
	{
		dir:    "base",
		values: `certificates: {source: none}`,
		about:  "with no certificate source (certificates.source=none, a value only make generate uses)",
	},
	{
		dir:     ".",
		about:   "with its defaults (certificates.source=self-managed)",
		schema:  true,
		patches: "base",
	},
	{
		dir:     "cert-manager",
		values:  `certificates: {source: cert-manager}`,
		about:   "with certificates.source=cert-manager",
		schema:  true,
		patches: "base",
	},
	{
		// API-SERVER-CIDR is a placeholder the API server refuses, so that
		// the file cannot be applied unedited (the schema refuses it too):
		// network-policy/kustomization.yaml shows the patch that sets it.
		dir:    "network-policy",
		values: `networkPolicy: {enabled: true, apiServerCIDRs: [API-SERVER-CIDR]}`,
		about:  "with networkPolicy.enabled=true and networkPolicy.apiServerCIDRs=[API-SERVER-CIDR] (a placeholder)",
		only:   []string{"networkpolicy.yaml"},
	},
}

// builds are the kustomizations users apply and what each must build to:
// the chart's render for a variant (its only templates, if set).
var builds = []struct{ dir, variant string }{
	{".", "."},
	{"cert-manager", "cert-manager"},
	{"network-policy", "network-policy"},
}

// doc is one rendered object.
type doc struct {
	template string // the chart template's file name, e.g. "deployment.yaml"
	text     string // its YAML as rendered, comments kept, Helm's labels removed
	obj      *unstructured.Unstructured
}

func standalone(root string, out *output) error {
	ch, err := loader.Load(filepath.Join(root, chartDir))
	if err != nil {
		return fmt.Errorf("loading the chart: %w", err)
	}
	if schema := out.schema(); schema != nil {
		ch.Schema = schema // this run's, which -check has not written
	}
	rendered := map[string][]doc{}
	for _, v := range variants {
		docs, err := render(ch, v)
		if err != nil {
			return fmt.Errorf("rendering the chart %s: %w", v.about, err)
		}
		rendered[v.dir] = docs
	}
	for _, v := range variants {
		if err := writeVariant(v, rendered, out); err != nil {
			return err
		}
	}
	out.dirs = append(out.dirs, standaloneDir)
	return checkBuilds(root, out, rendered)
}

// render is `helm template mutator deploy/helm/mutator -n mutator-system
// -f <values>`, split into objects.
func render(ch *chart.Chart, v variant) ([]doc, error) {
	vals, err := chartutil.ReadValues([]byte(v.values))
	if err != nil {
		return nil, err
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.ClientOnly = true
	inst.DryRun = true
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = releaseNamespace
	inst.KubeVersion = kubeVersion
	inst.SkipSchemaValidation = !v.schema
	// Hooks and chart tests are rendered into rel.Hooks, never into the
	// manifest: the standalone tree has no use for them.
	rel, err := inst.Run(ch, vals.AsMap())
	if err != nil {
		return nil, err
	}
	return splitManifest(rel.Manifest)
}

// source starts each object of a release's manifest.
var source = regexp.MustCompile(`(?m)^---\n# Source: [^/\n]+/templates/([^\n]+)\n`)

// splitManifest splits a release manifest into its objects, each with the
// template it came from, and removes Helm's labels.
func splitManifest(manifest string) ([]doc, error) {
	marks := source.FindAllStringSubmatchIndex(manifest, -1)
	if len(marks) == 0 || marks[0][0] != 0 {
		return nil, fmt.Errorf("unexpected manifest layout (no leading # Source: line):\n%s", manifest)
	}
	var docs []doc
	for i, m := range marks {
		end := len(manifest)
		if i+1 < len(marks) {
			end = marks[i+1][0]
		}
		d := doc{template: manifest[m[2]:m[3]]}
		raw := manifest[m[1]:end]
		d.text = tidy(helmLabelLine.ReplaceAllString(raw, ""))
		objs, err := objects.Parse(d.text)
		if err != nil || len(objs) != 1 {
			return nil, fmt.Errorf("templates/%s: want one object, got %d (%v):\n%s", d.template, len(objs), err, raw)
		}
		d.obj = objs[0]
		// The lines removed (and the blank ones) must have been exactly
		// Helm's labels.
		orig, err := objects.Parse(raw)
		if err != nil || len(orig) != 1 {
			return nil, fmt.Errorf("templates/%s: %v", d.template, err)
		}
		stripHelmLabels(orig[0])
		if diff := cmp.Diff(orig[0].Object, d.obj.Object); diff != "" {
			return nil, fmt.Errorf("templates/%s: removing Helm's label lines changed more than the labels (-want +got):\n%s", d.template, diff)
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// tidy removes trailing blanks and the blank lines templates leave.
func tidy(text string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimRight(line, " \t")
		if line != "" {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// comment renders text as comment lines of at most 78 columns.
func comment(text string) string {
	var b strings.Builder
	line := "#"
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > 78 && line != "#" {
			b.WriteString(line + "\n")
			line = "#"
		}
		line += " " + w
	}
	return b.String() + line + "\n"
}

func stripHelmLabels(o *unstructured.Unstructured) {
	labels := o.GetLabels()
	if labels == nil {
		return
	}
	for _, l := range helmLabels {
		delete(labels, l)
	}
	o.SetLabels(labels)
}

// written reports whether variant v writes the objects of template t.
func (v variant) written(t string) bool {
	if v.only != nil {
		return slices.Contains(v.only, t)
	}
	return !slices.Contains(sharedTemplates, t)
}

func writeVariant(v variant, rendered map[string][]doc, out *output) error {
	dir := path.Join(standaloneDir, v.dir)
	var base map[string]doc
	if v.patches != "" {
		base = map[string]doc{}
		for _, d := range rendered[v.patches] {
			base[objects.Key(d.obj)] = d
		}
	}
	whole := map[string][]doc{} // file name -> objects written whole
	var order []string
	seen := map[string]bool{}
	for _, d := range rendered[v.dir] {
		if !v.written(d.template) {
			continue
		}
		seen[objects.Key(d.obj)] = true
		if b, ok := base[objects.Key(d.obj)]; ok {
			ops := diff("", b.obj.Object, d.obj.Object)
			if len(ops) == 0 {
				continue
			}
			name := strings.TrimSuffix(d.template, ".yaml") + "-patch.yaml"
			file := path.Join(dir, name)
			if _, dup := out.files[file]; dup {
				return fmt.Errorf("templates/%s renders more than one object that %s patches; give each its own patch file", d.template, v.patches)
			}
			patch, err := yaml.Marshal(ops)
			if err != nil {
				return err
			}
			baseFile, err := filepath.Rel(v.dir, path.Join(v.patches, b.template))
			if err != nil {
				return err
			}
			out.files[file] = []byte(header + comment(fmt.Sprintf("The %s of the chart's templates/%s %s, as a JSON patch (RFC 6902) of %s.",
				d.obj.GetKind(), d.template, v.about, filepath.ToSlash(baseFile))) + "\n" + string(patch))
			continue
		}
		if _, ok := whole[d.template]; !ok {
			order = append(order, d.template)
		}
		whole[d.template] = append(whole[d.template], d)
	}
	for k, b := range base {
		if !seen[k] && v.written(b.template) {
			return fmt.Errorf("%s has %s, which the chart %s does not render: a JSON patch cannot remove it", v.patches, k, v.about)
		}
	}
	for _, t := range order {
		var buf bytes.Buffer
		buf.WriteString(header + comment(fmt.Sprintf("The chart's templates/%s %s, without Helm's labels.", t, v.about)) + "\n")
		for i, d := range whole[t] {
			if i > 0 {
				buf.WriteString("---\n")
			}
			buf.WriteString(d.text)
		}
		out.files[path.Join(dir, t)] = buf.Bytes()
	}
	return nil
}

// checkBuilds builds each kustomization users apply, on the repository's
// deploy/ tree with the files just generated, and compares the objects with
// the chart's render.
func checkBuilds(root string, out *output, rendered map[string][]doc) error {
	mem := filesys.MakeFsInMemory()
	const at = "/repo"
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.HasPrefix(data, []byte(header)) {
			return nil // generated: only this run's files count
		}
		return mem.WriteFile(path.Join(at, filepath.ToSlash(rel)), data)
	})
	if err != nil {
		return err
	}
	for rel, data := range out.files {
		if err := mem.WriteFile(path.Join(at, rel), data); err != nil {
			return err
		}
	}
	var problems []string
	for _, b := range builds {
		dir := path.Join(standaloneDir, b.dir)
		var v variant
		for _, x := range variants {
			if x.dir == b.variant {
				v = x
			}
		}
		var want []*unstructured.Unstructured
		for _, d := range rendered[v.dir] {
			if v.only == nil || slices.Contains(v.only, d.template) {
				want = append(want, d.obj)
			}
		}
		res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, path.Join(at, dir))
		if err != nil {
			problems = append(problems, fmt.Sprintf("kustomize build %s: %v", dir, err))
			continue
		}
		y, err := res.AsYaml()
		if err != nil {
			return err
		}
		got, err := objects.Parse(string(y))
		if err != nil {
			return fmt.Errorf("kustomize build %s: %w", dir, err)
		}
		for _, p := range compareObjects(got, want) {
			problems = append(problems, fmt.Sprintf("kustomize build %s, against the chart %s: %s", dir, v.about, p))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the kustomizations do not build what the chart renders (is a kustomization.yaml missing a generated file, or listing one no longer generated?):\n%s", strings.Join(problems, "\n"))
	}
	return nil
}

// compareObjects lists every object only one side has and every one that
// differs.
func compareObjects(got, want []*unstructured.Unstructured) []string {
	var problems []string
	gotBy := map[string]*unstructured.Unstructured{}
	for _, o := range got {
		gotBy[objects.Key(o)] = o
	}
	wantBy := map[string]*unstructured.Unstructured{}
	for _, o := range want {
		if _, dup := wantBy[objects.Key(o)]; dup {
			problems = append(problems, fmt.Sprintf("the chart renders %s twice", objects.Key(o)))
		}
		wantBy[objects.Key(o)] = o
	}
	for _, k := range sortedKeys(wantBy) {
		g, ok := gotBy[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is missing", k))
			continue
		}
		if d := cmp.Diff(wantBy[k].Object, g.Object); d != "" {
			problems = append(problems, fmt.Sprintf("%s differs (-chart +kustomize):\n%s", k, d))
		}
	}
	for _, k := range sortedKeys(gotBy) {
		if _, ok := wantBy[k]; !ok {
			problems = append(problems, fmt.Sprintf("%s is not the chart's", k))
		}
	}
	return problems
}
