package mutation_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mutation"
)

// fzRuleConfigs are the configurations FuzzPodRules selects from with its
// cfg argument.
var fzRuleConfigs = []config.Config{
	{Registry: "registry.example.com/mirror", IgnoredRegistries: []string{"registry.k8s.io", "quay.io/keep"},
		ImagePullSecret: "regcred", ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always"},
	{Registry: "localhost:5000", RegistryMap: []string{"ghcr.io=harbor.example.com/ghcr"},
		ImagePullSecret: "regcred", ImagePullSecretAppend: true, ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent"},
	{RegistryMap: []string{"quay.io=harbor.example.com/quay", "*=harbor.example.com/all"}, IgnoredRegistries: []string{"gcr.io"}},
	{},
	{Registry: "[fd00::1]:5000/m", ImagePullSecret: "a.b-c", ImagePullSecretAppend: true,
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "Never"},
}

const fzMaxContainers = 12

// fzPodInput is what FuzzPodRules builds a pod from.
type fzPodInput struct {
	update     bool   // PodSpecOnUpdate against an old pod instead of PodSpecOnCreate
	deployment bool   // the pod spec is a Deployment's template (prefix /spec/template/spec)
	images     string // one image per container, "\n"-separated
	names      string // container names, "\n"-separated; missing ones are c<i>
	policies   string // imagePullPolicy per container, "\n"-separated
	layout     uint32 // two bits per container: 0 or 3 init, 1 regular, 2 ephemeral container
	oldMask    uint32 // UPDATE, two bits per container: 0 new, 1 unchanged, 2 other image, 3 other policy
	secrets    string // imagePullSecrets names, "\n"-separated; "" is none
}

// FuzzPodRules builds a Pod (or a Deployment) from fuzzed container images,
// names, pull policies and pull secrets, runs the rules and Patch on it, and
// checks that
//
//   - the patch only touches image, imagePullPolicy and imagePullSecrets at
//     paths under the right prefix, with one operation per change and
//     nil for no change;
//   - it applies (gopkg.in/evanphx/json-patch.v4, as the API server) and the
//     result strictly decodes as a corev1.Pod / appsv1.Deployment;
//   - the result is exactly the input with every image passed through the
//     Rewriter (on UPDATE: only new containers and changed images), the pull
//     policy forced (on UPDATE: only on new containers) and the pull secret
//     set as the mode says (replace: exactly [secret]; append: the old list
//     plus secret if missing; never on UPDATE); nothing else changes;
//   - images under REGISTRY or an ignored prefix are unchanged;
//   - the rules are idempotent: run on the result they change nothing;
//   - every Change describes its field (From, To) and Describe is one line.
func FuzzPodRules(f *testing.F) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	type seed struct {
		cfg uint8
		in  fzPodInput
	}
	for _, s := range []seed{
		{0, fzPodInput{images: "nginx:1.27\nghcr.io/o/api:2@" + dgst + "\nquay.io/prometheus/statsd-exporter:v0.28.0", names: "frontend\napi\nmetrics", policies: "IfNotPresent\n\nAlways", layout: 0b010101, secrets: "ghcr-pull"}},
		{1, fzPodInput{images: "nginx\nghcr.io/o/a:1\nregistry.k8s.io/pause:3.10", layout: 0b100100, secrets: "a\nregcred"}},
		{1, fzPodInput{images: "nginx\nbusybox", layout: 0b0101, secrets: "a\nb"}},
		{0, fzPodInput{images: "registry.example.com/mirror/nginx:1\nquay.io/keep/x\nlocalhost:5000/y", layout: 0b010101, secrets: "regcred\nregcred"}},
		{4, fzPodInput{images: "[::1]:5000/x:1\n[fd00::1]:5000/m/y\nNot A Valid/Image\n", layout: 0b011001}},
		{2, fzPodInput{images: "nginx\nquay.io/a/b:1\ngcr.io/p/c\nharbor.example.com/all/library/nginx", layout: 0b01010101}},
		{3, fzPodInput{images: "nginx\nbusybox", secrets: "x"}},
		{0, fzPodInput{deployment: true, images: "nginx:1\nquay.io/a/b", layout: 0b0100, secrets: "regcred"}},
		// kubectl debug: an ephemeral container added to a running pod.
		{0, fzPodInput{update: true, images: "registry.example.com/mirror/nginx:1\nbusybox:1.36", names: "app\ndebugger", layout: 0b1001, oldMask: 0b0001, secrets: "s"}},
		// An UPDATE that changes an image, one that keeps it, one whose policy differs.
		{1, fzPodInput{update: true, images: "nginx:2\nredis:7\nghcr.io/o/a", names: "web\ncache\nside", policies: "Always\n\nNever", layout: 0b010101, oldMask: 0b110110}},
		{0, fzPodInput{update: true, images: "a\na\na", names: "dup\ndup\ndup", layout: 0b000101, oldMask: 0b011001}},
		{4, fzPodInput{images: "a/" + strings.Repeat("b", 250) + ":1\nNGINX\n\x00\xff", names: "\xff\n\"q\"\nline\nbreak", policies: "\n\xff", layout: 0b101010}},
	} {
		f.Add(s.cfg, s.in.update, s.in.deployment, s.in.images, s.in.names, s.in.policies, s.in.layout, s.in.oldMask, s.in.secrets)
	}
	rules := make([]*mutation.Rules, len(fzRuleConfigs))
	for i, c := range fzRuleConfigs {
		r, err := mutation.New(c)
		if err != nil {
			f.Fatalf("config %d: %v", i, err)
		}
		rules[i] = r
	}
	f.Fuzz(func(t *testing.T, cfg uint8, update, deployment bool, images, names, policies string, layout, oldMask uint32, secrets string) {
		i := int(cfg) % len(fzRuleConfigs)
		in := fzPodInput{update, deployment, images, names, policies, layout, oldMask, secrets}
		checkPodRules(t, fzRuleConfigs[i], rules[i], in)
	})
}

func checkPodRules(t *testing.T, cfg config.Config, rules *mutation.Rules, in fzPodInput) {
	t.Helper()
	spec, old := fzBuildSpecs(in)
	prefix := "/spec"
	if in.deployment {
		prefix = "/spec/template/spec"
	}
	doc := fzDocument(t, spec, in.deployment)
	spec = fzSpecOf(t, doc, in.deployment) // canonical: what survives JSON (invalid UTF-8 is replaced)
	var oldSpec *corev1.PodSpec
	if old != nil {
		oldSpec = fzSpecOf(t, fzDocument(t, old, in.deployment), in.deployment)
	}
	changes := fzRun(t, rules, doc, oldSpec, in.deployment)

	patch, err := mutation.Patch(changes)
	if err != nil {
		t.Fatalf("Patch(%+v): %v", changes, err)
	}
	if (patch == nil) != (len(changes) == 0) {
		t.Fatalf("Patch of %d changes = %s", len(changes), patch)
	}
	got := doc
	if patch != nil {
		ops, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			t.Fatalf("patch %s does not decode: %v", patch, err)
		}
		if len(ops) != len(changes) {
			t.Fatalf("patch %s has %d operations for %d changes", patch, len(ops), len(changes))
		}
		if got, err = ops.Apply(doc); err != nil {
			t.Fatalf("patch %s does not apply to %s: %v", patch, doc, err)
		}
	}
	gotSpec := fzSpecOf(t, got, in.deployment)

	want := fzExpect(t, cfg, rules, spec, oldSpec)
	if a, b := fzMarshal(t, want), fzMarshal(t, gotSpec); !bytes.Equal(a, b) {
		t.Fatalf("config %+v, update %v\ninput spec: %s\npatch:      %s\ngot spec:   %s\nwant spec:  %s", cfg, in.update, fzMarshal(t, spec), patch, b, a)
	}
	fzCheckChanges(t, changes, prefix, spec, gotSpec)

	// Images already on REGISTRY or an ignored registry stay as they are.
	keep := cfg.IgnoredRegistries
	if cfg.Registry != "" {
		keep = append(keep[:len(keep):len(keep)], cfg.Registry)
	}
	before, after := fzImages(spec), fzImages(gotSpec)
	for k, img := range before {
		for _, p := range keep {
			if strings.HasPrefix(img, strings.TrimSuffix(p, "/")+"/") && after[k] != img {
				t.Fatalf("image %q under %q became %q", img, p, after[k])
			}
		}
	}

	// Idempotency: the rules change nothing on their own result.
	if again := fzRun(t, rules, got, oldSpec, in.deployment); len(again) != 0 {
		t.Fatalf("rules not idempotent: on the patched object %s they return %+v", got, again)
	}
}

// fzBuildSpecs builds the new pod spec and, for an UPDATE, the old one.
func fzBuildSpecs(in fzPodInput) (spec, old *corev1.PodSpec) {
	images := strings.Split(in.images, "\n")
	if len(images) > fzMaxContainers {
		images = images[:fzMaxContainers]
	}
	names := strings.Split(in.names, "\n")
	policies := strings.Split(in.policies, "\n")
	spec = &corev1.PodSpec{}
	if in.update {
		old = &corev1.PodSpec{}
	}
	used := map[string]bool{}
	for i, img := range images {
		name := "c" + strconv.Itoa(i)
		if i < len(names) && in.names != "" {
			name = names[i]
		}
		if in.update {
			// The API server keeps container names unique in a stored
			// pod; "existed before" is decided by name.
			for used[name] {
				name += "-" + strconv.Itoa(i)
			}
			used[name] = true
		}
		c := corev1.Container{Name: name, Image: img}
		if i < len(policies) {
			c.ImagePullPolicy = corev1.PullPolicy(policies[i])
		}
		list := (in.layout >> (2 * i)) & 3
		fzAppend(spec, list, c)
		if old == nil {
			continue
		}
		switch (in.oldMask >> (2 * i)) & 3 {
		case 0: // a new container
			continue
		case 2:
			c.Image = "old.example.com/previous:" + strconv.Itoa(i)
		case 3:
			c.ImagePullPolicy = corev1.PullNever
			if c.ImagePullPolicy == corev1.PullPolicy(policyOr(policies, i)) {
				c.ImagePullPolicy = corev1.PullAlways
			}
		}
		fzAppend(old, list, c)
	}
	if in.secrets != "" {
		for _, s := range strings.Split(in.secrets, "\n") {
			spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
		}
	}
	if old != nil {
		// A container the update removed, and the secrets as stored.
		if !used["removed"] {
			old.Containers = append(old.Containers, corev1.Container{Name: "removed", Image: "nginx"})
		}
		old.ImagePullSecrets = spec.ImagePullSecrets
	}
	return spec, old
}

func policyOr(policies []string, i int) string {
	if i < len(policies) {
		return policies[i]
	}
	return ""
}

func fzAppend(spec *corev1.PodSpec, list uint32, c corev1.Container) {
	switch list {
	case 1:
		spec.Containers = append(spec.Containers, c)
	case 2:
		spec.EphemeralContainers = append(spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name: c.Name, Image: c.Image, ImagePullPolicy: c.ImagePullPolicy}})
	default:
		spec.InitContainers = append(spec.InitContainers, c)
	}
}

// fzDocument is the JSON the API server would send: a Pod or a Deployment.
func fzDocument(t *testing.T, spec *corev1.PodSpec, deployment bool) []byte {
	t.Helper()
	var obj any = &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"app": "x"}}, Spec: *spec}
	if deployment {
		obj = &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns"},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}}, Spec: *spec}}}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fzSpecOf strictly decodes a Pod or Deployment document (case-sensitive,
// no unknown or duplicate fields, as the API server) and returns its pod spec.
func fzSpecOf(t *testing.T, doc []byte, deployment bool) *corev1.PodSpec {
	t.Helper()
	var obj any = &corev1.Pod{}
	if deployment {
		obj = &appsv1.Deployment{}
	}
	strict, err := sigsjson.UnmarshalStrict(doc, obj)
	if err != nil || len(strict) > 0 {
		t.Fatalf("%s does not strictly decode as %T: %v %v", doc, obj, err, strict)
	}
	if deployment {
		return &obj.(*appsv1.Deployment).Spec.Template.Spec
	}
	return &obj.(*corev1.Pod).Spec
}

// fzRun decodes doc the way package admission does and runs the rules.
func fzRun(t *testing.T, rules *mutation.Rules, doc []byte, old *corev1.PodSpec, deployment bool) []mutation.Change {
	t.Helper()
	var spec mutation.PodSpec
	if deployment {
		var d struct {
			Spec struct {
				Template struct {
					Spec mutation.PodSpec `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := mutation.Decode(doc, &d, "Deployment"); err != nil {
			t.Fatal(err)
		}
		spec = d.Spec.Template.Spec
	} else {
		var p mutation.Pod
		if err := mutation.Decode(doc, &p, "Pod"); err != nil {
			t.Fatal(err)
		}
		spec = p.Spec
	}
	prefix := "/spec"
	if deployment {
		prefix = "/spec/template/spec"
	}
	if old == nil {
		changes, _ := rules.PodSpecOnCreate(prefix, &spec)
		return changes
	}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	var oldSpec mutation.PodSpec
	if err := mutation.Decode(b, &oldSpec, "old pod spec"); err != nil {
		t.Fatal(err)
	}
	changes, _ := rules.PodSpecOnUpdate(prefix, &spec, &oldSpec)
	return changes
}

// fzExpect is the documented result of the rules on spec: docs/rules.md's
// "Images" and "Pull secrets, pull policy, storage class", and the UPDATE
// rules of PodSpecOnUpdate.
func fzExpect(t *testing.T, cfg config.Config, rules *mutation.Rules, spec, old *corev1.PodSpec) *corev1.PodSpec {
	t.Helper()
	var want corev1.PodSpec
	if err := json.Unmarshal(fzMarshal(t, spec), &want); err != nil {
		t.Fatal(err)
	}
	policy := ""
	if cfg.ForceImagePullPolicy {
		policy = cfg.ImagePullPolicyToForce
	}
	apply := func(c *corev1.Container, prev *corev1.Container) {
		if prev == nil || prev.Image != c.Image {
			c.Image, _ = rules.Images().Rewrite(c.Image)
		}
		if policy != "" && prev == nil {
			c.ImagePullPolicy = corev1.PullPolicy(policy)
		}
	}
	find := func(list []corev1.Container, name string) *corev1.Container {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
		return nil
	}
	var oldInit, oldRegular, oldEphemeral []corev1.Container
	if old != nil {
		oldInit, oldRegular = old.InitContainers, old.Containers
		for _, e := range old.EphemeralContainers {
			oldEphemeral = append(oldEphemeral, corev1.Container(e.EphemeralContainerCommon))
		}
	}
	for i := range want.InitContainers {
		apply(&want.InitContainers[i], fzPrev(old, oldInit, want.InitContainers[i].Name, find))
	}
	for i := range want.Containers {
		apply(&want.Containers[i], fzPrev(old, oldRegular, want.Containers[i].Name, find))
	}
	for i := range want.EphemeralContainers {
		c := corev1.Container(want.EphemeralContainers[i].EphemeralContainerCommon)
		apply(&c, fzPrev(old, oldEphemeral, c.Name, find))
		want.EphemeralContainers[i].Image, want.EphemeralContainers[i].ImagePullPolicy = c.Image, c.ImagePullPolicy
	}
	if old == nil && cfg.ImagePullSecret != "" {
		mine := corev1.LocalObjectReference{Name: cfg.ImagePullSecret}
		if !cfg.ImagePullSecretAppend {
			want.ImagePullSecrets = []corev1.LocalObjectReference{mine}
		} else {
			present := false
			for _, s := range want.ImagePullSecrets {
				present = present || s == mine
			}
			if !present {
				want.ImagePullSecrets = append(want.ImagePullSecrets, mine)
			}
		}
	}
	return &want
}

func fzPrev(old *corev1.PodSpec, list []corev1.Container, name string, find func([]corev1.Container, string) *corev1.Container) *corev1.Container {
	if old == nil {
		return nil
	}
	return find(list, name)
}

var fzPathRE = regexp.MustCompile(`^(/spec|/spec/template/spec)/(?:(initContainers|containers|ephemeralContainers)/(0|[1-9][0-9]*)/(image|imagePullPolicy)|imagePullSecrets(/-)?)$`)

// fzCheckChanges checks each Change against the spec before and after.
func fzCheckChanges(t *testing.T, changes []mutation.Change, prefix string, before, after *corev1.PodSpec) {
	t.Helper()
	paths := map[string]bool{}
	for _, c := range changes {
		m := fzPathRE.FindStringSubmatch(c.Path)
		if m == nil || m[1] != prefix {
			t.Fatalf("change %+v: path outside %s/{containers lists}/N/{image,imagePullPolicy} and %s/imagePullSecrets", c, prefix, prefix)
		}
		if paths[c.Path] {
			t.Fatalf("two changes of %s in %+v", c.Path, changes)
		}
		paths[c.Path] = true
		for _, pending := range []bool{false, true} {
			if d := c.Describe(pending); strings.ContainsAny(d, "\n\r") {
				t.Fatalf("Describe(%v) of %+v is not one line: %q", pending, c, d)
			}
		}
		switch c.Kind {
		case mutation.KindImage, mutation.KindPullPolicy:
			if m[2] == "" {
				t.Fatalf("change %+v of kind %s at %s", c, c.Kind, c.Path)
			}
			idx, _ := strconv.Atoi(m[3])
			b, a := fzContainer(before, m[2], idx), fzContainer(after, m[2], idx)
			if b == nil || a == nil {
				t.Fatalf("change %+v: no container %s/%d", c, m[2], idx)
			}
			from, to := b.Image, a.Image
			if c.Kind == mutation.KindPullPolicy {
				from, to = string(b.ImagePullPolicy), string(a.ImagePullPolicy)
			}
			if (c.Kind == mutation.KindImage) != (m[4] == "image") || c.From != from || c.To != to || from == to {
				t.Fatalf("change %+v, but the field went from %q to %q", c, from, to)
			}
			if want := fmt.Sprintf("%q", b.Name); !strings.HasSuffix(c.Where, want) {
				t.Fatalf("change %+v: Where does not name container %s", c, want)
			}
		case mutation.KindPullSecret:
			if m[2] != "" {
				t.Fatalf("change %+v of kind %s at %s", c, c.Kind, c.Path)
			}
		default:
			t.Fatalf("change %+v of unexpected kind", c)
		}
	}
}

func fzContainer(spec *corev1.PodSpec, list string, i int) *corev1.Container {
	switch list {
	case "initContainers":
		if i < len(spec.InitContainers) {
			return &spec.InitContainers[i]
		}
	case "containers":
		if i < len(spec.Containers) {
			return &spec.Containers[i]
		}
	case "ephemeralContainers":
		if i < len(spec.EphemeralContainers) {
			c := corev1.Container(spec.EphemeralContainers[i].EphemeralContainerCommon)
			return &c
		}
	}
	return nil
}

// fzImages lists every container's image, keyed by list and index.
func fzImages(spec *corev1.PodSpec) map[string]string {
	m := map[string]string{}
	for i, c := range spec.InitContainers {
		m["i"+strconv.Itoa(i)] = c.Image
	}
	for i, c := range spec.Containers {
		m["c"+strconv.Itoa(i)] = c.Image
	}
	for i, c := range spec.EphemeralContainers {
		m["e"+strconv.Itoa(i)] = c.Image
	}
	return m
}

func fzMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
