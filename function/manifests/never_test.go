package manifests_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mutation"
)

// TestMutateNever: `mutator mutate` leaves a reference whose effective pull
// policy is Never as written, as the webhook does, and refuses none; an
// empty policy (a manifest before the API server's defaulting) is not
// Never; a forced policy other than Never rewrites it like any other.
// It never records the original images: the manifest is the record.
func TestMutateNever(t *testing.T) {
	t.Parallel()
	long := "evil.example.com/" + strings.Repeat("a", 250)
	in := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"template":{"metadata":{"annotations":{"a":"b"}},"spec":{
		"initContainers":[{"name":"i","image":"busybox","imagePullPolicy":"Never"}],
		"containers":[{"name":"local","image":"` + long + `","imagePullPolicy":"Never"},{"name":"pulled","image":"nginx","imagePullPolicy":"IfNotPresent"},{"name":"bare","image":"redis"}],
		"volumes":[{"name":"v","image":{"reference":"ghcr.io/o/v:1","pullPolicy":"Never"}},{"name":"w","image":{"reference":"ghcr.io/o/w:1"}}]}}}}`
	noForce := func(c *config.Env) { c.ForceImagePullPolicy = false }
	tests := []struct {
		name         string
		cfg          func(*config.Env)
		wantImages   []string // init containers', containers', image volumes'
		wantPolicies []string
		wantProblems []string
	}{
		{"no forced policy", noForce,
			[]string{"busybox", long, mirror + "/nginx", mirror + "/redis", "ghcr.io/o/v:1", mirror + "/o/w:1"},
			[]string{"Never", "Never", "IfNotPresent", "", "Never", ""}, nil},
		{"no forced policy, original images on", func(c *config.Env) { noForce(c); c.RecordOriginalImages = true },
			[]string{"busybox", long, mirror + "/nginx", mirror + "/redis", "ghcr.io/o/v:1", mirror + "/o/w:1"},
			[]string{"Never", "Never", "IfNotPresent", "", "Never", ""}, nil},
		{"forced Always: pulled, so rewritten", func(*config.Env) {},
			[]string{mirror + "/busybox", long, mirror + "/nginx", mirror + "/redis", mirror + "/o/v:1", mirror + "/o/w:1"},
			[]string{"Always", "Always", "Always", "Always", "Always", "Always"}, []string{`container "local"`}},
		{"forced Never: nothing rewritten or refused", func(c *config.Env) { c.ImagePullPolicyToForce = "Never" },
			[]string{"busybox", long, "nginx", "redis", "ghcr.io/o/v:1", "ghcr.io/o/w:1"},
			[]string{"Never", "Never", "Never", "Never", "Never", "Never"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.cfg(&cfg)
			res, out := mutate(t, cfg, []byte(in))
			var obj struct {
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}
			if err := json.Unmarshal(out, &obj); err != nil {
				t.Fatalf("output %s: %v", out, err)
			}
			spec := obj.Spec.Template.Spec
			var images, policies []string
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				images, policies = append(images, c.Image), append(policies, string(c.ImagePullPolicy))
			}
			for _, v := range spec.Volumes {
				images, policies = append(images, v.Image.Reference), append(policies, string(v.Image.PullPolicy))
			}
			if !reflect.DeepEqual(images, tt.wantImages) || !reflect.DeepEqual(policies, tt.wantPolicies) {
				t.Errorf("images %q, policies %q\nwant   %q, policies %q", images, policies, tt.wantImages, tt.wantPolicies)
			}
			var problems []string
			for _, p := range res.Problems {
				problems = append(problems, p.Where)
			}
			if !reflect.DeepEqual(problems, tt.wantProblems) {
				t.Errorf("problems %q, want %q", problems, tt.wantProblems)
			}
			if a := obj.Spec.Template.Annotations; len(a) != 1 || a["a"] != "b" {
				t.Errorf("template annotations %v, want only a: b", a)
			}
			if strings.Contains(string(out), mutation.OriginalImagesAnnotation) {
				t.Errorf("output records the original images: %s", out)
			}
		})
	}
}
