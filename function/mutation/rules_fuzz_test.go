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
	"github.com/mutator-dev/mutator/internal/testkit"
)

// fzRuleConfigs are the configurations FuzzPodRules selects from with its
// cfg argument.
var fzRuleConfigs = []config.Env{
	{Registry: "registry.example.com/mirror", IgnoredRegistries: []string{"registry.k8s.io", "quay.io/keep"},
		ImagePullSecret: "regcred", ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always"},
	{Registry: "localhost:5000", RegistryMap: []string{"ghcr.io=harbor.example.com/ghcr"},
		ImagePullSecret: "regcred", ImagePullSecretAppend: true, ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent"},
	{RegistryMap: []string{"quay.io=harbor.example.com/quay", "*=harbor.example.com/all"}, IgnoredRegistries: []string{"gcr.io"}},
	{},
	{Registry: "[fd00::1]:5000/m", ImagePullSecret: "a.b-c", ImagePullSecretAppend: true,
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "Never"},
	{Registry: "[fd00::1]:5000/m", IgnoredRegistries: []string{"quay.io/keep"}, RecordOriginalImages: true},
	{Registry: "registry.example.com/mirror", RecordOriginalImages: true, ForceImagePullPolicy: true, ImagePullPolicyToForce: "Always"},
}

const fzMaxContainers = 12

// Bits of fzPodInput.layout past the containers': the Pod has annotations,
// and among them a value of mutation.OriginalImagesAnnotation.
const (
	fzAnnotations = 1 << 30
	fzRecorded    = 1 << 31
)

// fzRecordedValue is the annotation a Pod of the fzRecorded bit has: on
// UPDATE the rules merge it, on CREATE they replace it.
const fzRecordedValue = `{"containers/c0":"recorded:0","volumes/v":"data:1","…":"2 more"}`

// fzPodInput is what FuzzPodRules builds a pod from.
type fzPodInput struct {
	update     bool   // PodSpecOnUpdate against an old pod instead of PodSpecOnCreate
	deployment bool   // the pod spec is a Deployment's template (prefix /spec/template/spec)
	images     string // one image per container, "\n"-separated
	names      string // container names, "\n"-separated; missing ones are c<i>
	policies   string // imagePullPolicy per container, "\n"-separated
	layout     uint32 // two bits per container: 0 or 3 init, 1 regular, 2 ephemeral container; fzAnnotations, fzRecorded
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
//   - a reference whose effective pull policy (the forced one where it is
//     set, else its own) is Never is left as written;
//   - with RECORD_ORIGINAL_IMAGES, a Pod whose images are rewritten gets
//     mutation.OriginalImagesAnnotation: a JSON object of at most
//     MaxOriginalImagesBytes recording, in order, the images as written
//     (merged on UPDATE with the value it had), cut with a count of the
//     rest; other annotations are kept; a workload's template gets none,
//     nor does an UPDATE that adds an ephemeral container;
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
		// Pull policy Never: left as written unless a forced policy pulls.
		{5, fzPodInput{images: "nginx\nbusybox\nghcr.io/o/a", policies: "Never\nIfNotPresent\nNever", layout: 0b100100}},
		{6, fzPodInput{images: "nginx\nbusybox", policies: "Never\nAlways", layout: 0b0100 | fzAnnotations}},
		{3, fzPodInput{images: "nginx\nbusybox", policies: "Never\n", layout: 0b0101}},
		// The original images recorded, merged on UPDATE, replaced on CREATE.
		{5, fzPodInput{images: "nginx:1\nquay.io/keep/x\nbusybox", names: "c0\nc1\nc2", layout: 0b100101 | fzAnnotations | fzRecorded}},
		{5, fzPodInput{update: true, images: "[fd00::1]:5000/m/nginx:1\nbusybox", names: "c0\ndebug", layout: 0b1001 | fzAnnotations | fzRecorded, oldMask: 0b0001}},
		{6, fzPodInput{update: true, images: "nginx:2\nredis", names: "c0\nc1", layout: 0b0101 | fzRecorded, oldMask: 0b0110}},
		{5, fzPodInput{images: strings.Repeat("example.com/"+strings.Repeat("x", 200)+"\n", 12), layout: 0b010101010101010101010101,
			names: strings.Repeat(strings.Repeat("n", 1000)+"\n", 12)}},
		{6, fzPodInput{deployment: true, images: "nginx", layout: 0b01 | fzAnnotations}},
	} {
		f.Add(s.cfg, s.in.update, s.in.deployment, s.in.images, s.in.names, s.in.policies, s.in.layout, s.in.oldMask, s.in.secrets)
	}
	rules := make([]*mutation.Rules, len(fzRuleConfigs))
	for i, c := range fzRuleConfigs {
		rules[i] = mutation.New(testkit.Config(f, c).Rules)
	}
	f.Fuzz(func(t *testing.T, cfg uint8, update, deployment bool, images, names, policies string, layout, oldMask uint32, secrets string) {
		i := int(cfg) % len(fzRuleConfigs)
		in := fzPodInput{update, deployment, images, names, policies, layout, oldMask, secrets}
		checkPodRules(t, fzRuleConfigs[i], rules[i], in)
	})
}

func checkPodRules(t *testing.T, cfg config.Env, rules *mutation.Rules, in fzPodInput) {
	t.Helper()
	spec, old := fzBuildSpecs(in)
	prefix := "/spec"
	if in.deployment {
		prefix = "/spec/template/spec"
	}
	doc := fzDocument(t, spec, in.deployment, in.layout)
	spec = fzSpecOf(t, doc, in.deployment) // canonical: what survives JSON (invalid UTF-8 is replaced)
	var oldSpec *corev1.PodSpec
	if old != nil {
		oldSpec = fzSpecOf(t, fzDocument(t, old, in.deployment, in.layout), in.deployment)
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
	fzCheckChanges(t, changes, prefix, spec, gotSpec, doc, got)
	fzCheckOriginals(t, cfg, in, spec, oldSpec, gotSpec, doc, got)

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

// fzDocument is the JSON the API server would send: a Pod or a Deployment,
// with the annotations layout's high bits ask for.
func fzDocument(t *testing.T, spec *corev1.PodSpec, deployment bool, layout uint32) []byte {
	t.Helper()
	var annotations map[string]string
	if layout&fzAnnotations != 0 {
		annotations = map[string]string{"example.com/other": "x"}
	}
	if layout&fzRecorded != 0 {
		if annotations == nil {
			annotations = map[string]string{}
		}
		annotations[mutation.OriginalImagesAnnotation] = fzRecordedValue
	}
	var obj any = &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"app": "x"}, Annotations: annotations}, Spec: *spec}
	if deployment {
		obj = &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns"},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}, Annotations: annotations}, Spec: *spec}}}
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
func fzExpect(t *testing.T, cfg config.Env, rules *mutation.Rules, spec, old *corev1.PodSpec) *corev1.PodSpec {
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
		// The kubelet pulls nothing for Never: the image stays as written.
		// The forced policy is the one that counts where it is set: on new
		// containers only (an existing one's is immutable).
		effective := string(c.ImagePullPolicy)
		if policy != "" && prev == nil {
			effective = policy
		}
		if (prev == nil || prev.Image != c.Image) && effective != "Never" {
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

// fzAnnotationRE is the path of the annotation's change in a Pod.
var fzAnnotationRE = regexp.MustCompile(`^/metadata(/annotations(/mutator\.dev~1original-images)?)?$`)

// fzCheckChanges checks each Change against the spec (and for the
// annotation, the document) before and after.
func fzCheckChanges(t *testing.T, changes []mutation.Change, prefix string, before, after *corev1.PodSpec, docBefore, docAfter []byte) {
	t.Helper()
	paths := map[string]bool{}
	for _, c := range changes {
		if c.Kind == mutation.KindAnnotation {
			was, had := fzAnnotation(t, docBefore)
			is, _ := fzAnnotation(t, docAfter)
			if prefix != "/spec" || !fzAnnotationRE.MatchString(c.Path) || paths[c.Path] || c.To != is || c.From != was || (!had && c.From != "") || c.From == c.To {
				t.Fatalf("change %+v (prefix %s): the annotation went from %q to %q", c, prefix, was, is)
			}
			paths[c.Path] = true
			continue
		}
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

// fzAnnotation returns the annotation of a Pod document and whether it is there.
func fzAnnotation(t *testing.T, doc []byte) (string, bool) {
	t.Helper()
	var pod struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(doc, &pod); err != nil {
		t.Fatal(err)
	}
	v, ok := pod.Metadata.Annotations[mutation.OriginalImagesAnnotation]
	return v, ok
}

// fzCheckOriginals checks the annotation of the patched document against
// the images the rules rewrote (before and after differ).
func fzCheckOriginals(t *testing.T, cfg config.Env, in fzPodInput, before, old, after *corev1.PodSpec, docBefore, docAfter []byte) {
	t.Helper()
	type entry struct{ key, image string }
	var rewritten []entry
	seen := map[string]bool{}
	lists := []struct {
		field         string
		before, after []corev1.Container
	}{{"initContainers", before.InitContainers, after.InitContainers}, {"containers", before.Containers, after.Containers}}
	var eb, ea []corev1.Container
	for i := range before.EphemeralContainers {
		eb = append(eb, corev1.Container(before.EphemeralContainers[i].EphemeralContainerCommon))
		ea = append(ea, corev1.Container(after.EphemeralContainers[i].EphemeralContainerCommon))
	}
	lists = append(lists, struct {
		field         string
		before, after []corev1.Container
	}{"ephemeralContainers", eb, ea})
	for _, l := range lists {
		for i := range l.before {
			key := l.field + "/" + l.before[i].Name
			if l.before[i].Image != l.after[i].Image && !seen[key] {
				seen[key] = true
				rewritten = append(rewritten, entry{key, l.before[i].Image})
			}
		}
	}
	if in.deployment {
		// The template's metadata is not the rules' business.
		if !bytes.Equal(fzTemplateMeta(t, docBefore), fzTemplateMeta(t, docAfter)) {
			t.Fatalf("the template's metadata changed: %s", docAfter)
		}
		return
	}
	was, had := fzAnnotation(t, docBefore)
	is, has := fzAnnotation(t, docAfter)
	var other struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(docAfter, &other); err != nil {
		t.Fatal(err)
	}
	if in.layout&fzAnnotations != 0 && other.Metadata.Annotations["example.com/other"] != "x" {
		t.Fatalf("another annotation was lost: %s", docAfter)
	}
	// An UPDATE that adds an ephemeral container is the ephemeralcontainers
	// subresource's, where the API server would drop an annotation change.
	debug := false
	if old != nil {
		for _, e := range before.EphemeralContainers {
			found := false
			for _, o := range old.EphemeralContainers {
				found = found || o.Name == e.Name
			}
			debug = debug || !found
		}
	}
	if !cfg.RecordOriginalImages || len(rewritten) == 0 || debug {
		if has != had || is != was {
			t.Fatalf("no image recorded (debug %v), but the annotation went from %q to %q", debug, was, is)
		}
		return
	}
	if !has {
		t.Fatalf("images rewritten (%v), no annotation: %s", rewritten, docAfter)
	}
	// What it should record, in order: on UPDATE the entries of the value
	// it had, a key recorded again taking its new image in place.
	want, more := rewritten, 0
	if in.update && had {
		var prev []entry
		dec := json.NewDecoder(strings.NewReader(was))
		dec.Token()
		for dec.More() {
			k, _ := dec.Token()
			v, _ := dec.Token()
			if k.(string) == mutation.OriginalImagesMore {
				more, _ = strconv.Atoi(strings.TrimSuffix(v.(string), " more"))
				continue
			}
			prev = append(prev, entry{k.(string), v.(string)})
		}
		for _, e := range rewritten {
			found := false
			for i := range prev {
				if prev[i].key == e.key {
					prev[i].image, found = e.image, true
				}
			}
			if !found {
				prev = append(prev, e)
			}
		}
		want = prev
	}
	if len(is) > mutation.MaxOriginalImagesBytes || !json.Valid([]byte(is)) {
		t.Fatalf("annotation of %d bytes, valid JSON %v: %q", len(is), json.Valid([]byte(is)), is)
	}
	dec := json.NewDecoder(strings.NewReader(is))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("annotation %q is not an object", is)
	}
	kept, gotMore, size := 0, -1, 2
	for dec.More() {
		k, _ := dec.Token()
		v, err := dec.Token()
		key, _ := k.(string)
		image, ok := v.(string)
		if err != nil || !ok {
			t.Fatalf("annotation %q: not an object of strings", is)
		}
		if gotMore >= 0 {
			t.Fatalf("annotation %q: %q is not the last member", is, mutation.OriginalImagesMore)
		}
		if key == mutation.OriginalImagesMore {
			gotMore, _ = strconv.Atoi(strings.TrimSuffix(image, " more"))
			continue
		}
		if kept >= len(want) || want[kept] != (entry{key, image}) {
			t.Fatalf("annotation %q: member %d is %q: %q, want the entries %v in order", is, kept, key, image, want)
		}
		size += len(key) + len(image) + 6
		kept++
	}
	switch {
	case kept == len(want) && more == 0:
		if gotMore >= 0 {
			t.Fatalf("annotation %q: every entry and a count", is)
		}
	case gotMore != len(want)-kept+more:
		t.Fatalf("annotation %q: %d of %d entries kept and %d more before, count %d", is, kept, len(want), more, gotMore)
	case kept < len(want) && size+len(want[kept].key)+len(want[kept].image)+6 < mutation.MaxOriginalImagesBytes-200:
		// Escaping can only lengthen the entries; 200 bytes are more than
		// the count's member and the quotes of ordinary images need.
		if !strings.ContainsFunc(want[kept].key+want[kept].image, func(r rune) bool { return r < 0x20 || r > 0x7e || strings.ContainsRune(`"\<>&`, r) }) {
			t.Fatalf("annotation %q: cut at entry %d although the next one fits", is, kept)
		}
	}
}

// fzTemplateMeta is the metadata of a Deployment document's template.
func fzTemplateMeta(t *testing.T, doc []byte) []byte {
	t.Helper()
	var d struct {
		Spec struct {
			Template struct {
				Metadata json.RawMessage `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Metadata
}
