package mutation_test

import (
	"bytes"
	"encoding/json"
	"k8s.io/utils/ptr"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mutation"
	"github.com/mutator-dev/mutator/internal/testkit"
)

const (
	mirror = "registry.example.com/mirror"
	secret = "regcred"
	digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// baseConfig rewrites to mirror, sets the pull secret in replace mode and
// forces Always.
func baseConfig() config.Env {
	return config.Env{
		Registry:               mirror,
		ImagePullSecret:        secret,
		ForceImagePullPolicy:   true,
		ImagePullPolicyToForce: string(corev1.PullAlways),
	}
}

// with returns baseConfig changed by f.
func with(f func(*config.Env)) config.Env {
	c := baseConfig()
	f(&c)
	return c
}

func newRules(t *testing.T, cfg config.Env) *mutation.Rules {
	t.Helper()
	return mutation.New(testkit.Config(t, cfg).Rules)
}

// applyChanges encodes the changes as a patch and applies it to doc with the
// JSON patch library the API server uses; no changes return doc as it is.
func applyChanges(t *testing.T, doc []byte, changes []mutation.Change) []byte {
	t.Helper()
	p, err := mutation.Patch(changes)
	if err != nil {
		t.Fatalf("Patch: %v", err)
	}
	if len(changes) == 0 {
		if p != nil {
			t.Fatalf("Patch(no changes) = %s, want nil", p)
		}
		return doc
	}
	return testkit.ApplyPatch(t, doc, p)
}

// podJSON wraps a pod spec in a Pod.
func podJSON(spec string) []byte {
	return []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns"},"spec":` + spec + `}`)
}

// ctr is what a test expects of one container after the patch.
type ctr struct {
	name, image string
	policy      corev1.PullPolicy
}

func assertContainers(t *testing.T, list string, got []corev1.Container, want []ctr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d containers, want %d", list, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Image != w.image || g.ImagePullPolicy != w.policy {
			t.Errorf("%s[%d] = {%s %q %q}, want {%s %q %q}", list, i, g.Name, g.Image, g.ImagePullPolicy, w.name, w.image, w.policy)
		}
	}
}

func assertEphemeral(t *testing.T, got []corev1.EphemeralContainer, want []ctr) {
	t.Helper()
	cs := make([]corev1.Container, len(got))
	for i, e := range got {
		cs[i] = corev1.Container{Name: e.Name, Image: e.Image, ImagePullPolicy: e.ImagePullPolicy}
	}
	assertContainers(t, "ephemeralContainers", cs, want)
}

// vol is an expected volume: its name and, for an image volume, its reference.
type vol struct{ name, reference string }

// assertVolumes checks the volumes' names and image references, and that
// every image volume carries the forced pull policy when one is configured.
func assertVolumes(t *testing.T, got []corev1.Volume, want []vol, cfg config.Env) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d volumes, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		ref := ""
		if g.Image != nil {
			ref = g.Image.Reference
			if cfg.ForceImagePullPolicy && string(g.Image.PullPolicy) != cfg.ImagePullPolicyToForce {
				t.Errorf("volumes[%d] pull policy %q, want %q", i, g.Image.PullPolicy, cfg.ImagePullPolicyToForce)
			}
		}
		if g.Name != w.name || ref != w.reference {
			t.Errorf("volumes[%d] = {%s %q}, want {%s %q}", i, g.Name, ref, w.name, w.reference)
		}
	}
}

// assertProblems checks that the refused references are exactly those
// named, in order, each with a reason.
func assertProblems(t *testing.T, got []mutation.Problem, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("problems %v, want problems for %q", got, want)
	}
	for i, w := range want {
		if got[i].Where != w || got[i].Err == nil || !strings.Contains(got[i].String(), "cannot be pulled from an allowed registry") {
			t.Errorf("problem %d = %v, want one for %s", i, got[i], w)
		}
	}
}

func assertSecrets(t *testing.T, got []corev1.LocalObjectReference, want []string) {
	t.Helper()
	names := make([]string, 0, len(got))
	for _, s := range got {
		names = append(names, s.Name)
	}
	if len(names) != len(want) || (len(want) > 0 && !reflect.DeepEqual(names, want)) {
		t.Errorf("imagePullSecrets = %q, want %q", names, want)
	}
}

// specOf decodes the rules' view of a pod spec from a Pod document.
func specOf(t *testing.T, doc []byte) *mutation.PodSpec {
	t.Helper()
	var pod mutation.Pod
	if err := mutation.Decode(doc, &pod, "Pod"); err != nil {
		t.Fatal(err)
	}
	return &pod.Spec
}

func TestPodSpecOnCreate(t *testing.T) {
	t.Parallel()
	appendMode := with(func(c *config.Env) { c.ImagePullSecretAppend = true })
	tests := []struct {
		name        string
		cfg         config.Env
		spec        string
		wantChanges int
		init        []ctr
		containers  []ctr
		ephemeral   []ctr
		volumes     []vol
		secrets     []string
		problems    []string // the Where of each refused reference
	}{
		{
			name: "all container lists, no secrets, no policies",
			cfg:  baseConfig(),
			spec: `{"initContainers":[{"name":"init","image":"busybox:1"}],
				"containers":[{"name":"app","image":"nginx:1.27","env":[{"name":"K","value":"V"}]},{"name":"side","image":"quay.io/org/side@` + digest + `"}],
				"ephemeralContainers":[{"name":"dbg","image":"localhost:5000/debug"}]}`,
			wantChanges: 9,
			init:        []ctr{{"init", mirror + "/busybox:1", "Always"}},
			containers:  []ctr{{"app", mirror + "/nginx:1.27", "Always"}, {"side", mirror + "/org/side@" + digest, "Always"}},
			ephemeral:   []ctr{{"dbg", mirror + "/debug", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "nothing to do",
			cfg:         baseConfig(),
			spec:        `{"containers":[{"name":"app","image":"` + mirror + `/nginx:1","imagePullPolicy":"Always"}],"imagePullSecrets":[{"name":"` + secret + `"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"app", mirror + "/nginx:1", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "empty secret list",
			cfg:         baseConfig(),
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "null secret list",
			cfg:         baseConfig(),
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":null}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "replace mode drops existing secrets",
			cfg:         baseConfig(),
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[{"name":"old1"},{"name":"old2"}]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "replace mode with the secret among others",
			cfg:         baseConfig(),
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[{"name":"old1"},{"name":"` + secret + `"}]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "append mode appends at the end",
			cfg:         appendMode,
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[{"name":"old1"},{"name":"old2"}]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{"old1", "old2", secret},
		},
		{
			name:        "append mode with the secret present",
			cfg:         appendMode,
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[{"name":"` + secret + `"},{"name":"old1"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret, "old1"},
		},
		{
			name:        "append mode without secrets",
			cfg:         appendMode,
			spec:        `{"containers":[{"name":"app","image":"nginx"}]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret},
		},
		{
			name:        "append mode with empty list",
			cfg:         appendMode,
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
			secrets:     []string{secret},
		},
		{
			name: "policy replaced when set otherwise",
			cfg:  with(func(c *config.Env) { c.ImagePullSecret = "" }),
			spec: `{"initContainers":[{"name":"i","image":"` + mirror + `/a","imagePullPolicy":"Never"}],
				"containers":[{"name":"app","image":"` + mirror + `/b","imagePullPolicy":"IfNotPresent"},{"name":"ok","image":"` + mirror + `/c","imagePullPolicy":"Always"}],
				"ephemeralContainers":[{"name":"e","image":"` + mirror + `/d","imagePullPolicy":"IfNotPresent"}]}`,
			wantChanges: 3,
			init:        []ctr{{"i", mirror + "/a", "Always"}},
			containers:  []ctr{{"app", mirror + "/b", "Always"}, {"ok", mirror + "/c", "Always"}},
			ephemeral:   []ctr{{"e", mirror + "/d", "Always"}},
		},
		{
			name:        "other policy forced",
			cfg:         with(func(c *config.Env) { c.ImagePullPolicyToForce = "IfNotPresent"; c.ImagePullSecret = "" }),
			spec:        `{"containers":[{"name":"a","image":"` + mirror + `/a","imagePullPolicy":"Always"},{"name":"b","image":"` + mirror + `/b"},{"name":"c","image":"` + mirror + `/c","imagePullPolicy":"IfNotPresent"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"a", mirror + "/a", "IfNotPresent"}, {"b", mirror + "/b", "IfNotPresent"}, {"c", mirror + "/c", "IfNotPresent"}},
		},
		{
			name:        "policy not forced",
			cfg:         with(func(c *config.Env) { c.ForceImagePullPolicy = false }),
			spec:        `{"containers":[{"name":"a","image":"nginx","imagePullPolicy":"Never"},{"name":"b","image":"nginx"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"a", "nginx", "Never"}, {"b", mirror + "/nginx", ""}},
			secrets:     []string{secret},
		},
		{
			// The kubelet pulls nothing for Never: the image is the one the
			// node holds under that name, and a rewrite would only make the
			// container fail with ErrImageNeverPull. Nor is it refused.
			name: "pull policy Never: left as written in all four places, never refused",
			cfg:  with(func(c *config.Env) { c.ForceImagePullPolicy = false; c.ImagePullSecret = "" }),
			spec: `{"initContainers":[{"name":"i","image":"busybox:1","imagePullPolicy":"Never"}],
				"containers":[{"name":"local","image":"evil.example.com/` + strings.Repeat("a", 250) + `:1","imagePullPolicy":"Never"},
				{"name":"pulled","image":"nginx:1","imagePullPolicy":"IfNotPresent"},{"name":"always","image":"nginx:2","imagePullPolicy":"Always"},{"name":"defaulted","image":"nginx:3"}],
				"ephemeralContainers":[{"name":"e","image":"debug:1","imagePullPolicy":"Never"}],
				"volumes":[{"name":"v","image":{"reference":"ghcr.io/o/data:1","pullPolicy":"Never"}},{"name":"w","image":{"reference":"ghcr.io/o/data:2","pullPolicy":"IfNotPresent"}}]}`,
			wantChanges: 4,
			init:        []ctr{{"i", "busybox:1", "Never"}},
			containers: []ctr{{"local", "evil.example.com/" + strings.Repeat("a", 250) + ":1", "Never"},
				{"pulled", mirror + "/nginx:1", "IfNotPresent"}, {"always", mirror + "/nginx:2", "Always"}, {"defaulted", mirror + "/nginx:3", ""}},
			ephemeral: []ctr{{"e", "debug:1", "Never"}},
			volumes:   []vol{{"v", "ghcr.io/o/data:1"}, {"w", mirror + "/o/data:2"}},
		},
		{
			// A forced policy other than Never makes the container pull:
			// it is rewritten like any other.
			name: "forced Always over Never: rewritten",
			cfg:  with(func(c *config.Env) { c.ImagePullSecret = "" }),
			spec: `{"containers":[{"name":"a","image":"nginx","imagePullPolicy":"Never"}],
				"volumes":[{"name":"v","image":{"reference":"ghcr.io/o/data:1","pullPolicy":"Never"}}]}`,
			wantChanges: 4,
			containers:  []ctr{{"a", mirror + "/nginx", "Always"}},
			volumes:     []vol{{"v", mirror + "/o/data:1"}},
		},
		{
			name:        "forced IfNotPresent over Never: rewritten",
			cfg:         with(func(c *config.Env) { c.ImagePullSecret = ""; c.ImagePullPolicyToForce = "IfNotPresent" }),
			spec:        `{"containers":[{"name":"a","image":"nginx","imagePullPolicy":"Never"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"a", mirror + "/nginx", "IfNotPresent"}},
		},
		{
			// Forced Never: nothing is pulled, so no image is rewritten or
			// refused; only the policy (and the pull secret) are set.
			name: "forced Never: no image rewritten or refused",
			cfg:  with(func(c *config.Env) { c.ImagePullPolicyToForce = "Never" }),
			spec: `{"initContainers":[{"name":"i","image":"busybox","imagePullPolicy":"Always"}],
				"containers":[{"name":"a","image":"nginx"},{"name":"long","image":"evil.example.com/` + strings.Repeat("a", 250) + `:1","imagePullPolicy":"Never"}],
				"volumes":[{"name":"v","image":{"reference":"ghcr.io/o/data:1","pullPolicy":"IfNotPresent"}}]}`,
			wantChanges: 4,
			init:        []ctr{{"i", "busybox", "Never"}},
			containers:  []ctr{{"a", "nginx", "Never"}, {"long", "evil.example.com/" + strings.Repeat("a", 250) + ":1", "Never"}},
			volumes:     []vol{{"v", "ghcr.io/o/data:1"}},
			secrets:     []string{secret},
		},
		{
			name:        "no secret configured",
			cfg:         with(func(c *config.Env) { c.ImagePullSecret = "" }),
			spec:        `{"containers":[{"name":"a","image":"nginx","imagePullPolicy":"Always"}],"imagePullSecrets":[{"name":"old1"}]}`,
			wantChanges: 1,
			containers:  []ctr{{"a", mirror + "/nginx", "Always"}},
			secrets:     []string{"old1"},
		},
		{
			name:        "ignored, unparsable and empty images stay",
			cfg:         with(func(c *config.Env) { c.IgnoredRegistries = []string{"gcr.io/proj"}; c.ImagePullSecret = "" }),
			spec:        `{"containers":[{"name":"a","image":"gcr.io/proj/a:1","imagePullPolicy":"Always"},{"name":"b","image":"Bad Image","imagePullPolicy":"Always"},{"name":"c","imagePullPolicy":"Always"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"a", "gcr.io/proj/a:1", "Always"}, {"b", "Bad Image", "Always"}, {"c", "", "Always"}},
		},
		{
			name: "registry map",
			cfg: with(func(c *config.Env) {
				c.Registry = ""
				c.RegistryMap = []string{"quay.io=harbor.example.com/quay", "*=harbor.example.com/all"}
				c.ImagePullSecret = ""
				c.ForceImagePullPolicy = false
			}),
			spec:        `{"containers":[{"name":"a","image":"quay.io/argoproj/argocd:v2"},{"name":"b","image":"ghcr.io/o/b@` + digest + `"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"a", "harbor.example.com/quay/argoproj/argocd:v2", ""}, {"b", "harbor.example.com/all/o/b@" + digest, ""}},
		},
		{
			name: "image volumes: reference rewritten, pull policy forced",
			cfg:  with(func(c *config.Env) { c.ImagePullSecret = "" }),
			spec: `{"containers":[{"name":"app","image":"` + mirror + `/app:1","imagePullPolicy":"Always"}],
				"volumes":[{"name":"cfg","configMap":{"name":"c"}},{"name":"ext","image":{"reference":"ghcr.io/cloudnative-pg/postgis-extension:3@` + digest + `","pullPolicy":"IfNotPresent"}},
				{"name":"ok","image":{"reference":"` + mirror + `/data:1"}}]}`,
			wantChanges: 3,
			containers:  []ctr{{"app", mirror + "/app:1", "Always"}},
			volumes:     []vol{{"cfg", ""}, {"ext", mirror + "/cloudnative-pg/postgis-extension:3@" + digest}, {"ok", mirror + "/data:1"}},
		},
		{
			name: "upper-case single-label hosts are hosts",
			cfg:  with(func(c *config.Env) { c.ImagePullSecret = ""; c.ForceImagePullPolicy = false }),
			spec: `{"initContainers":[{"name":"i","image":"LOCALHOST/evil:1"}],"containers":[{"name":"a","image":"Evil/payload:1"},{"name":"b","image":"LocalHost/x:1"}],
				"ephemeralContainers":[{"name":"e","image":"EVIL/x@` + digest + `"}]}`,
			wantChanges: 4,
			init:        []ctr{{"i", mirror + "/evil:1", ""}},
			containers:  []ctr{{"a", mirror + "/payload:1", ""}, {"b", mirror + "/x:1", ""}},
			ephemeral:   []ctr{{"e", mirror + "/x@" + digest, ""}},
		},
		{
			name: "a reference with no valid rewrite is a problem, not kept silently",
			cfg:  with(func(c *config.Env) { c.ImagePullSecret = ""; c.ForceImagePullPolicy = false }),
			spec: `{"containers":[{"name":"long","image":"evil.example.com/` + strings.Repeat("a", 250) + `:1"},{"name":"ok","image":"nginx"}],
				"volumes":[{"name":"v","image":{"reference":"a/` + strings.Repeat("b", 250) + `"}}]}`,
			wantChanges: 1,
			containers:  []ctr{{"long", "evil.example.com/" + strings.Repeat("a", 250) + ":1", ""}, {"ok", mirror + "/nginx", ""}},
			volumes:     []vol{{"v", "a/" + strings.Repeat("b", 250)}},
			problems:    []string{`container "long"`, `image volume "v"`},
		},
		{
			name:        "rules off",
			cfg:         config.Env{},
			spec:        `{"containers":[{"name":"a","image":"nginx"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"a", "nginx", ""}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := newRules(t, tt.cfg)
			doc := podJSON(tt.spec)
			changes, problems := rules.PodSpecOnCreate("/spec", specOf(t, doc))
			if len(changes) != tt.wantChanges {
				t.Errorf("%d changes, want %d: %+v", len(changes), tt.wantChanges, changes)
			}
			assertProblems(t, problems, tt.problems)
			patched := applyChanges(t, doc, changes)

			var pod corev1.Pod
			testkit.DecodeStrict(t, patched, &pod)
			assertContainers(t, "initContainers", pod.Spec.InitContainers, tt.init)
			assertContainers(t, "containers", pod.Spec.Containers, tt.containers)
			assertEphemeral(t, pod.Spec.EphemeralContainers, tt.ephemeral)
			assertVolumes(t, pod.Spec.Volumes, tt.volumes, tt.cfg)
			assertSecrets(t, pod.Spec.ImagePullSecrets, tt.secrets)
			if pod.Name != "p" || pod.Namespace != "ns" {
				t.Errorf("metadata changed: %+v", pod.ObjectMeta)
			}

			// Idempotency: the patched object needs nothing more.
			if again, _ := rules.PodSpecOnCreate("/spec", specOf(t, patched)); len(again) != 0 {
				t.Errorf("second pass changes %+v", again)
			}
		})
	}
}

// TestAppendSecretDecodes guards against the older webhook's append, which
// added an array inside imagePullSecrets that the API server cannot decode.
func TestAppendSecretDecodes(t *testing.T) {
	t.Parallel()
	rules := newRules(t, with(func(c *config.Env) { c.ImagePullSecretAppend = true }))
	doc := podJSON(`{"containers":[{"name":"app","image":"` + mirror + `/a","imagePullPolicy":"Always"}],"imagePullSecrets":[{"name":"old1"},{"name":"old2"}]}`)
	changes, _ := rules.PodSpecOnCreate("/spec", specOf(t, doc))
	if len(changes) != 1 || changes[0].Kind != mutation.KindPullSecret {
		t.Fatalf("changes = %+v, want one pull-secret change", changes)
	}
	patched := applyChanges(t, doc, changes)

	var raw struct {
		Spec struct {
			ImagePullSecrets []json.RawMessage `json:"imagePullSecrets"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(patched, &raw); err != nil {
		t.Fatal(err)
	}
	for i, el := range raw.Spec.ImagePullSecrets {
		if !bytes.HasPrefix(bytes.TrimSpace(el), []byte("{")) {
			t.Errorf("imagePullSecrets[%d] = %s, want an object", i, el)
		}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		t.Fatalf("patched Pod does not decode as corev1.Pod: %v\n%s", err, patched)
	}
	want := []corev1.LocalObjectReference{{Name: "old1"}, {Name: "old2"}, {Name: secret}}
	if !reflect.DeepEqual(pod.Spec.ImagePullSecrets, want) {
		t.Errorf("ImagePullSecrets = %+v, want %+v", pod.Spec.ImagePullSecrets, want)
	}
	if c := changes[0]; c.From != "old1,old2" || c.To != "old1,old2,"+secret {
		t.Errorf("change From/To = %q/%q, want %q/%q", c.From, c.To, "old1,old2", "old1,old2,"+secret)
	}
}

func TestPodSpecOnUpdate(t *testing.T) {
	t.Parallel()
	old := `{"containers":[{"name":"app","image":"nginx:1.26","imagePullPolicy":"IfNotPresent"},{"name":"side","image":"quay.io/o/side:1"}],
		"ephemeralContainers":[{"name":"dbg1","image":"busybox","imagePullPolicy":"IfNotPresent"}]}`
	tests := []struct {
		name        string
		cfg         config.Env
		old         string // "" for a nil old spec
		spec        string
		wantChanges int
		containers  []ctr
		ephemeral   []ctr
		secrets     []string
	}{
		{
			name:        "nothing changed, pre-webhook images stay",
			cfg:         baseConfig(),
			old:         old,
			spec:        old,
			wantChanges: 0,
			containers:  []ctr{{"app", "nginx:1.26", "IfNotPresent"}, {"side", "quay.io/o/side:1", ""}},
			ephemeral:   []ctr{{"dbg1", "busybox", "IfNotPresent"}},
		},
		{
			name: "changed image rewritten, policy kept",
			cfg:  baseConfig(),
			old:  old,
			spec: `{"containers":[{"name":"app","image":"nginx:1.27","imagePullPolicy":"IfNotPresent"},{"name":"side","image":"quay.io/o/side:1"}],
				"ephemeralContainers":[{"name":"dbg1","image":"busybox","imagePullPolicy":"IfNotPresent"}]}`,
			wantChanges: 1,
			containers:  []ctr{{"app", mirror + "/nginx:1.27", "IfNotPresent"}, {"side", "quay.io/o/side:1", ""}},
			ephemeral:   []ctr{{"dbg1", "busybox", "IfNotPresent"}},
		},
		{
			name: "new ephemeral container like kubectl debug",
			cfg:  baseConfig(),
			old:  old,
			spec: `{"containers":[{"name":"app","image":"nginx:1.26","imagePullPolicy":"IfNotPresent"},{"name":"side","image":"quay.io/o/side:1"}],
				"ephemeralContainers":[{"name":"dbg1","image":"busybox","imagePullPolicy":"IfNotPresent"},{"name":"dbg2","image":"busybox:1.36","imagePullPolicy":"IfNotPresent"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"app", "nginx:1.26", "IfNotPresent"}, {"side", "quay.io/o/side:1", ""}},
			ephemeral:   []ctr{{"dbg1", "busybox", "IfNotPresent"}, {"dbg2", mirror + "/busybox:1.36", "Always"}},
		},
		{
			name: "new ephemeral container already on the mirror",
			cfg:  baseConfig(),
			old:  old,
			spec: `{"containers":[{"name":"app","image":"nginx:1.26","imagePullPolicy":"IfNotPresent"},{"name":"side","image":"quay.io/o/side:1"}],
				"ephemeralContainers":[{"name":"dbg1","image":"busybox","imagePullPolicy":"IfNotPresent"},{"name":"dbg2","image":"` + mirror + `/busybox"}]}`,
			wantChanges: 1,
			containers:  []ctr{{"app", "nginx:1.26", "IfNotPresent"}, {"side", "quay.io/o/side:1", ""}},
			ephemeral:   []ctr{{"dbg1", "busybox", "IfNotPresent"}, {"dbg2", mirror + "/busybox", "Always"}},
		},
		{
			name:        "image changed to one on the mirror",
			cfg:         baseConfig(),
			old:         old,
			spec:        `{"containers":[{"name":"app","image":"` + mirror + `/nginx:1.27","imagePullPolicy":"IfNotPresent"},{"name":"side","image":"quay.io/o/side:1"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"app", mirror + "/nginx:1.27", "IfNotPresent"}, {"side", "quay.io/o/side:1", ""}},
		},
		{
			name:        "no pull secret on update",
			cfg:         with(func(c *config.Env) { c.ImagePullSecretAppend = true }),
			old:         `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[{"name":"old1"}]}`,
			spec:        `{"containers":[{"name":"app","image":"nginx"}],"imagePullSecrets":[{"name":"old1"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"app", "nginx", ""}},
			secrets:     []string{"old1"},
		},
		{
			// An existing container's policy is immutable, so the forced
			// one is not set: its own Never is what the kubelet uses.
			name:        "changed image of an existing Never container: left as written",
			cfg:         baseConfig(),
			old:         `{"containers":[{"name":"app","image":"app:1","imagePullPolicy":"Never"}]}`,
			spec:        `{"containers":[{"name":"app","image":"app:2","imagePullPolicy":"Never"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"app", "app:2", "Never"}},
		},
		{
			name:        "changed image of an existing IfNotPresent container: rewritten",
			cfg:         with(func(c *config.Env) { c.ImagePullPolicyToForce = "Never" }),
			old:         `{"containers":[{"name":"app","image":"app:1","imagePullPolicy":"IfNotPresent"}]}`,
			spec:        `{"containers":[{"name":"app","image":"app:2","imagePullPolicy":"IfNotPresent"}]}`,
			wantChanges: 1,
			containers:  []ctr{{"app", mirror + "/app:2", "IfNotPresent"}},
		},
		{
			name:        "new Never ephemeral container, no forced policy: left as written",
			cfg:         with(func(c *config.Env) { c.ForceImagePullPolicy = false }),
			old:         `{"containers":[{"name":"app","image":"` + mirror + `/app"}]}`,
			spec:        `{"containers":[{"name":"app","image":"` + mirror + `/app"}],"ephemeralContainers":[{"name":"dbg","image":"busybox","imagePullPolicy":"Never"}]}`,
			wantChanges: 0,
			containers:  []ctr{{"app", mirror + "/app", ""}},
			ephemeral:   []ctr{{"dbg", "busybox", "Never"}},
		},
		{
			name:        "new Never ephemeral container, forced Always: rewritten",
			cfg:         baseConfig(),
			old:         `{"containers":[{"name":"app","image":"` + mirror + `/app"}]}`,
			spec:        `{"containers":[{"name":"app","image":"` + mirror + `/app"}],"ephemeralContainers":[{"name":"dbg","image":"busybox","imagePullPolicy":"Never"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"app", mirror + "/app", ""}},
			ephemeral:   []ctr{{"dbg", mirror + "/busybox", "Always"}},
		},
		{
			name:        "new ephemeral container, forced Never: policy set, image left",
			cfg:         with(func(c *config.Env) { c.ImagePullPolicyToForce = "Never" }),
			old:         `{"containers":[{"name":"app","image":"` + mirror + `/app"}]}`,
			spec:        `{"containers":[{"name":"app","image":"` + mirror + `/app"}],"ephemeralContainers":[{"name":"dbg","image":"busybox","imagePullPolicy":"IfNotPresent"}]}`,
			wantChanges: 1,
			containers:  []ctr{{"app", mirror + "/app", ""}},
			ephemeral:   []ctr{{"dbg", "busybox", "Never"}},
		},
		{
			name:        "nil old: every container is new, still no secret",
			cfg:         baseConfig(),
			spec:        `{"containers":[{"name":"app","image":"nginx"}]}`,
			wantChanges: 2,
			containers:  []ctr{{"app", mirror + "/nginx", "Always"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := newRules(t, tt.cfg)
			doc := podJSON(tt.spec)
			var oldSpec *mutation.PodSpec
			if tt.old != "" {
				oldSpec = specOf(t, podJSON(tt.old))
			}
			changes, _ := rules.PodSpecOnUpdate("/spec", specOf(t, doc), oldSpec)
			if len(changes) != tt.wantChanges {
				t.Errorf("%d changes, want %d: %+v", len(changes), tt.wantChanges, changes)
			}
			for _, c := range changes {
				if c.Kind == mutation.KindPullSecret {
					t.Errorf("pull secret changed on update: %+v", c)
				}
			}
			patched := applyChanges(t, doc, changes)
			var pod corev1.Pod
			testkit.DecodeStrict(t, patched, &pod)
			assertContainers(t, "containers", pod.Spec.Containers, tt.containers)
			assertEphemeral(t, pod.Spec.EphemeralContainers, tt.ephemeral)
			assertSecrets(t, pod.Spec.ImagePullSecrets, tt.secrets)
		})
	}
}

func TestPodSpecUnderPrefix(t *testing.T) {
	t.Parallel()
	deployment := []byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"ns"},
		"spec":{"replicas":2,"selector":{"matchLabels":{"app":"d"}},
		"template":{"metadata":{"labels":{"app":"d"}},
		"spec":{"initContainers":[{"name":"init","image":"busybox"}],"containers":[{"name":"app","image":"nginx:1.27"}],"imagePullSecrets":[{"name":"old1"}]}}}}`)
	spec := func(doc []byte) *mutation.PodSpec {
		t.Helper()
		var d struct {
			Spec struct {
				Template struct {
					Spec mutation.PodSpec `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(doc, &d); err != nil {
			t.Fatal(err)
		}
		return &d.Spec.Template.Spec
	}
	rules := newRules(t, with(func(c *config.Env) { c.ImagePullSecretAppend = true }))
	const prefix = "/spec/template/spec"
	changes, _ := rules.PodSpecOnCreate(prefix, spec(deployment))
	for _, c := range changes {
		if !strings.HasPrefix(c.Path, prefix+"/") {
			t.Errorf("change path %q is not under %q", c.Path, prefix)
		}
	}
	patched := applyChanges(t, deployment, changes)
	var d appsv1.Deployment
	testkit.DecodeStrict(t, patched, &d)
	ps := d.Spec.Template.Spec
	assertContainers(t, "initContainers", ps.InitContainers, []ctr{{"init", mirror + "/busybox", "Always"}})
	assertContainers(t, "containers", ps.Containers, []ctr{{"app", mirror + "/nginx:1.27", "Always"}})
	assertSecrets(t, ps.ImagePullSecrets, []string{"old1", secret})
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 || d.Spec.Template.Labels["app"] != "d" {
		t.Errorf("unrelated fields changed: %+v", d.Spec)
	}
	if again, _ := rules.PodSpecOnCreate(prefix, spec(patched)); len(again) != 0 {
		t.Errorf("second pass changes %+v", again)
	}
}

func TestPVCOnCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		class     string // DEFAULT_STORAGE_CLASS
		meta      string
		spec      string
		wantClass *string
	}{
		{"absent gets the default", "fast", `{"name":"c"}`, `{"accessModes":["ReadWriteOnce"]}`, ptr.To("fast")},
		{"empty string stays", "fast", `{"name":"c"}`, `{"storageClassName":""}`, ptr.To("")},
		{"other class stays", "fast", `{"name":"c"}`, `{"storageClassName":"slow"}`, ptr.To("slow")},
		{"null is absent", "fast", `{"name":"c"}`, `{"storageClassName":null}`, ptr.To("fast")},
		{"no default configured", "", `{"name":"c"}`, `{}`, nil},
		{"beta annotation is a class", "fast", `{"name":"c","annotations":{"volume.beta.kubernetes.io/storage-class":"slow"}}`, `{}`, nil},
		{"beta annotation naming no class is a class", "fast", `{"name":"c","annotations":{"volume.beta.kubernetes.io/storage-class":""}}`, `{}`, nil},
		{"other annotations do not count", "fast", `{"name":"c","annotations":{"volume.kubernetes.io/storage-provisioner":"x"}}`, `{}`, ptr.To("fast")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := newRules(t, config.Env{DefaultStorageClass: tt.class})
			doc := []byte(`{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":` + tt.meta + `,"spec":` + tt.spec + `}`)
			var pvc mutation.PVC
			if err := mutation.Decode(doc, &pvc, "PersistentVolumeClaim"); err != nil {
				t.Fatal(err)
			}
			changes := rules.PVCOnCreate(&pvc)
			patched := applyChanges(t, doc, changes)
			var got corev1.PersistentVolumeClaim
			testkit.DecodeStrict(t, patched, &got)
			switch {
			case tt.wantClass == nil && got.Spec.StorageClassName != nil:
				t.Errorf("storageClassName = %q, want absent", *got.Spec.StorageClassName)
			case tt.wantClass != nil && (got.Spec.StorageClassName == nil || *got.Spec.StorageClassName != *tt.wantClass):
				t.Errorf("storageClassName = %v, want %q", got.Spec.StorageClassName, *tt.wantClass)
			}
			var again mutation.PVC
			if err := mutation.Decode(patched, &again, "PersistentVolumeClaim"); err != nil {
				t.Fatal(err)
			}
			if c := rules.PVCOnCreate(&again); len(c) != 0 {
				t.Errorf("second pass changes %+v", c)
			}
		})
	}
}

func TestPatchEmpty(t *testing.T) {
	t.Parallel()
	for name, changes := range map[string][]mutation.Change{"nil": nil, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			p, err := mutation.Patch(changes)
			if err != nil || p != nil {
				t.Errorf("Patch(%s) = %q, %v; want nil, nil", name, p, err)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		change  mutation.Change
		pending bool
		want    string
	}{
		{"image pending", mutation.Change{Kind: mutation.KindImage, From: "nginx:1.27", To: "r/nginx:1.27", Where: `container "app"`}, true,
			`image "nginx:1.27" would become "r/nginx:1.27" (container "app")`},
		{"image done", mutation.Change{Kind: mutation.KindImage, From: "nginx:1.27", To: "r/nginx:1.27", Where: `container "app"`}, false,
			`image "nginx:1.27" became "r/nginx:1.27" (container "app")`},
		{"storage class, no where", mutation.Change{Kind: mutation.KindStorageClass, From: "", To: "fast"}, true,
			`storage-class would be set to "fast"`},
		{"pull policy", mutation.Change{Kind: mutation.KindPullPolicy, From: "Never", To: "Always", Where: `init container "i"`}, false,
			`pull-policy "Never" became "Always" (init container "i")`},
		{"annotation done", mutation.Change{Kind: mutation.KindAnnotation, To: `{"containers/app":"nginx"}`}, false,
			`annotation "mutator.dev/original-images" records the images as written`},
		{"annotation pending", mutation.Change{Kind: mutation.KindAnnotation, From: `{}`, To: `{"containers/app":"nginx"}`}, true,
			`annotation "mutator.dev/original-images" would record the images as written`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.change.Describe(tt.pending); got != tt.want {
				t.Errorf("Describe(%v) = %q, want %q", tt.pending, got, tt.want)
			}
		})
	}
}

// TestChangeWhere checks the words the rules put in changes for each list.
func TestChangeWhere(t *testing.T) {
	t.Parallel()
	rules := newRules(t, with(func(c *config.Env) {
		c.Registry = "r.example.com"
		c.ForceImagePullPolicy = false
		c.ImagePullSecret = ""
	}))
	doc := podJSON(`{"initContainers":[{"name":"i","image":"a"}],"containers":[{"name":"app","image":"nginx:1.27"}],"ephemeralContainers":[{"name":"e","image":"b"}]}`)
	var got []string
	changes, _ := rules.PodSpecOnCreate("/spec", specOf(t, doc))
	for _, c := range changes {
		got = append(got, c.Describe(true))
	}
	want := []string{
		`image "a" would become "r.example.com/a" (init container "i")`,
		`image "nginx:1.27" would become "r.example.com/nginx:1.27" (container "app")`,
		`image "b" would become "r.example.com/b" (ephemeral container "e")`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("descriptions:\n got %q\nwant %q", got, want)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	t.Run("images", func(t *testing.T) {
		r := newRules(t, baseConfig())
		if got, err := r.Images().Rewrite("nginx"); err != nil || got != mirror+"/nginx" {
			t.Errorf("Images().Rewrite(nginx) = %q, %v", got, err)
		}
	})
}
