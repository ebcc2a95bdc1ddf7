package helm

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// helmLabels are the labels only the chart sets (Helm's conventions); they
// are removed from the chart's objects before comparing. Nothing else is.
var helmLabels = []string{
	"helm.sh/chart",
	"app.kubernetes.io/managed-by",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
}

// intendedDifference is a field the chart renders differently from
// deploy/standalone on purpose. Both sides' values are checked, so a
// difference that disappears (or changes) fails the test too, and the list
// cannot go stale.
type intendedDifference struct {
	key    string // object, as key() names it
	path   string // dotted field path, as field() reads it
	chart  any    // the chart's value (nil: absent)
	kust   any    // kustomize's value (nil: absent)
	reason string
}

// intendedDifferences is empty: with its defaults the chart renders exactly
// what deploy/standalone does. Add an entry here, with its reason, for any
// difference that is meant to be.
var intendedDifferences []intendedDifference

// TestChartMatchesKustomize: the chart's defaults are deploy/standalone
// (and each variant switched on by one value is the matching kustomization),
// object by object, so an edit to one side only fails here.
func TestChartMatchesKustomize(t *testing.T) {
	root := repoRoot(t)
	for _, tc := range []struct {
		name   string
		values string
		dirs   []string // kustomizations whose objects together are expected
	}{
		{"self-managed certificate (defaults)", ``, []string{"deploy/standalone"}},
		{"cert-manager", `certificates: {source: cert-manager}`, []string{"deploy/standalone/cert-manager"}},
		// The sample's address is a placeholder, set by an overlay as users do.
		{"network policy", `networkPolicy: {enabled: true, apiServerCIDRs: [192.0.2.10/32]}`, []string{"deploy/standalone", "test/helm/testdata/network-policy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []*unstructured.Unstructured
			for _, d := range tc.dirs {
				want = append(want, kustomizeBuild(t, filepath.Join(root, d))...)
			}
			got := render(t, tc.values, defaultNS)
			if len(got) == 0 || len(want) == 0 {
				t.Fatalf("nothing to compare: chart %d objects, kustomize %d", len(got), len(want))
			}
			for _, p := range diffObjects(got, want, intendedDifferences) {
				t.Error(p)
			}
		})
	}
}

// diffObjects returns every object only one side has and every field that
// differs, after removing Helm's labels and the intended differences.
func diffObjects(chartObjs, kustObjs []*unstructured.Unstructured, intended []intendedDifference) []string {
	var problems []string
	chartByKey := map[string]*unstructured.Unstructured{}
	for _, o := range chartObjs {
		o = o.DeepCopy()
		labels := o.GetLabels()
		for _, l := range helmLabels {
			delete(labels, l)
		}
		o.SetLabels(labels)
		if _, dup := chartByKey[key(o)]; dup {
			problems = append(problems, fmt.Sprintf("the chart renders %s twice", key(o)))
		}
		chartByKey[key(o)] = o
	}
	kustByKey := map[string]*unstructured.Unstructured{}
	for _, o := range kustObjs {
		kustByKey[key(o)] = o.DeepCopy()
	}
	for _, d := range intended {
		c, k := chartByKey[d.key], kustByKey[d.key]
		if c == nil || k == nil {
			continue
		}
		if got := field(c, d.path); !cmp.Equal(got, d.chart) {
			problems = append(problems, fmt.Sprintf("intended difference %s %s (%s): the chart has %v, the list says %v", d.key, d.path, d.reason, got, d.chart))
		}
		if got := field(k, d.path); !cmp.Equal(got, d.kust) {
			problems = append(problems, fmt.Sprintf("intended difference %s %s (%s): kustomize has %v, the list says %v", d.key, d.path, d.reason, got, d.kust))
		}
		removeField(c, d.path)
		removeField(k, d.path)
	}
	for k, want := range kustByKey {
		got, ok := chartByKey[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is in the kustomize output but the chart does not render it", k))
			continue
		}
		if diff := cmp.Diff(want.Object, got.Object); diff != "" {
			problems = append(problems, fmt.Sprintf("%s differs (-kustomize +chart):\n%s", k, diff))
		}
	}
	for k := range chartByKey {
		if _, ok := kustByKey[k]; !ok {
			problems = append(problems, fmt.Sprintf("the chart renders %s, which the kustomize output does not have", k))
		}
	}
	slices.Sort(problems)
	return problems
}

// removeField deletes the field at a dotted path (as field() reads it; the
// last element must be a map key).
func removeField(o *unstructured.Unstructured, path string) {
	i := strings.LastIndex(path, ".")
	if i < 0 {
		delete(o.Object, path)
		return
	}
	if parent, ok := field(o, path[:i]).(map[string]any); ok {
		delete(parent, path[i+1:])
	}
}

// TestDiffObjectsCatchesDrift: the comparison itself fails on an edit to
// either side and on a stale intended difference (a comparison that always
// passed would prove nothing), and accepts a listed one.
func TestDiffObjectsCatchesDrift(t *testing.T) {
	root := repoRoot(t)
	kust := kustomizeBuild(t, filepath.Join(root, "deploy/standalone"))
	timeout := []intendedDifference{{
		key: "admissionregistration.k8s.io/MutatingWebhookConfiguration mutator", path: "webhooks.0.timeoutSeconds",
		chart: float64(7), kust: float64(5), reason: "a test of the list itself",
	}}
	for _, tc := range []struct {
		name     string
		values   string
		edit     func(kust []*unstructured.Unstructured) []*unstructured.Unstructured
		intended []intendedDifference
		want     bool // whether a difference must be reported
	}{
		{"no edit", ``, nil, nil, false},
		{"a listed intended difference", `webhook: {timeoutSeconds: 7}`, nil, timeout, false},
		{"a stale intended difference", ``, nil, timeout, true},
		{"a chart default changed", `webhook: {timeoutSeconds: 7}`, nil, nil, true},
		{"a chart env value changed", `config: {logLevel: debug}`, nil, nil, true},
		{"an object only the chart renders", `serviceMonitor: {enabled: true}`, nil, nil, true},
		{"a kustomize field changed", ``, func(k []*unstructured.Unstructured) []*unstructured.Unstructured {
			dep := find(k, "Deployment", releaseName)
			_ = unstructured.SetNestedField(dep.Object, int64(3), "spec", "replicas")
			return k
		}, nil, true},
		{"an object only kustomize has", ``, func(k []*unstructured.Unstructured) []*unstructured.Unstructured {
			extra := find(k, "Service", releaseName).DeepCopy()
			extra.SetName("extra")
			return append(k, extra)
		}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := make([]*unstructured.Unstructured, 0, len(kust))
			for _, o := range kust {
				want = append(want, o.DeepCopy())
			}
			if tc.edit != nil {
				want = tc.edit(want)
			}
			got := render(t, tc.values, defaultNS)
			problems := diffObjects(got, want, tc.intended)
			if tc.want && len(problems) == 0 {
				t.Errorf("diffObjects found no difference with %s", tc.name)
			}
			if !tc.want && len(problems) > 0 {
				t.Errorf("diffObjects found differences with %s: %v", tc.name, problems)
			}
		})
	}
}
