package admission_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/oracle"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// provenanceCase is one configuration and one Pod for checkProvenance.
type provenanceCase struct {
	registry string   // REGISTRY
	ignored  []string // IGNORED_REGISTRIES
	mapping  []string // REGISTRY_MAP
	refs     []string // every reference the Pod pulls, spread over its four lists
	update   bool     // an UPDATE from a Pod whose containers all ran "nginx"
}

// checkProvenance reviews the case's Pod in enforce mode and checks the
// provenance guarantee with the runtime's parser as the oracle: either the
// review is denied (403, with a message naming a refused reference, and only
// when some reference really has no permitted form), or every reference the
// patched Pod pulls is one the configuration permits, with its tag and
// digest kept. A configuration config.Env.Parse rejects is skipped.
func checkProvenance(t *testing.T, pc provenanceCase) {
	t.Helper()
	cfg := config.Env{
		Registry: pc.registry, IgnoredRegistries: pc.ignored, RegistryMap: pc.mapping,
		ForceImagePullPolicy: true, ImagePullPolicyToForce: "IfNotPresent",
		Mode: config.Enforce, Port: 8080,
		LogLevel: "info",
	}
	parsed, err := testkit.Env(cfg).Parse()
	if err != nil {
		return
	}
	c := admission.New(parsed.Rules, parsed.Review, nil)
	pod := provenancePod(pc.refs)
	req := &admissionv1.AdmissionRequest{
		UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "team", Operation: admissionv1.Create,
	}
	req.Object.Raw = mustJSON(t, pod)
	// considered says whether the review had to decide a reference: all of
	// them on CREATE; on UPDATE only those that differ from the old Pod
	// (image volumes are immutable, and unchanged images were decided
	// when they were written).
	considered := func(oracle.Pulled) bool { return true }
	if pc.update {
		old := pod.DeepCopy()
		for i := range old.Spec.Containers {
			old.Spec.Containers[i].Image = "nginx"
		}
		for i := range old.Spec.InitContainers {
			old.Spec.InitContainers[i].Image = "nginx"
		}
		old.Spec.EphemeralContainers = nil
		req.Operation, req.OldObject.Raw = admissionv1.Update, mustJSON(t, old)
		var oldSent corev1.Pod
		if err := json.Unmarshal(req.OldObject.Raw, &oldSent); err != nil {
			t.Fatal(err)
		}
		was := map[string]string{}
		for _, p := range oracle.PodImages(&oldSent.Spec) {
			was[p.Where] = p.Image
		}
		considered = func(p oracle.Pulled) bool {
			prev, ok := was[p.Where]
			return !ok || prev != p.Image
		}
	}
	resp := c.Admit(context.Background(), req)
	policy := oracle.Policy{Registry: cfg.Registry, Ignored: cfg.IgnoredRegistries, Map: cfg.RegistryMap}

	if !resp.Allowed {
		if resp.Result == nil || resp.Result.Code != http.StatusForbidden || !strings.Contains(resp.Result.Message, "cannot be pulled from an allowed registry") {
			t.Fatalf("%+v: denied without the provenance message: %+v", pc, resp.Result)
		}
		// A denial must be needed: some reference the review considered
		// is pullable (or too long to judge) and not permitted as written.
		var sent corev1.Pod
		if err := json.Unmarshal(req.Object.Raw, &sent); err != nil {
			t.Fatal(err)
		}
		for _, p := range oracle.PodImages(&sent.Spec) {
			if considered(p) && (len(p.Image) > images.MaxReferenceLength || !policy.Permits(p.Image)) {
				return
			}
		}
		t.Fatalf("%+v: denied although every reference is permitted as written: %s", pc, resp.Result.Message)
	}
	patched := testkit.ApplyPatch(t, req.Object.Raw, resp.Patch)
	var after corev1.Pod
	if err := json.Unmarshal(patched, &after); err != nil {
		t.Fatalf("%+v: patched Pod does not decode: %v", pc, err)
	}
	// What was sent, as the API server would have sent it: JSON replaces
	// invalid UTF-8 with U+FFFD, so the Go strings are not the reference.
	var sent corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &sent); err != nil {
		t.Fatal(err)
	}
	before := oracle.PodImages(&sent.Spec)
	for i, p := range oracle.PodImages(&after.Spec) {
		if !considered(before[i]) {
			if p.Image != before[i].Image {
				t.Fatalf("%+v: UPDATE changed %s from %q to %q although the update did not", pc, p.Where, before[i].Image, p.Image)
			}
			continue
		}
		if !policy.Permits(p.Image) {
			t.Fatalf("%+v: admitted Pod pulls %q (%s), which the configuration does not permit; patch %s", pc, p.Image, p.Where, resp.Patch)
		}
		if p.Image != before[i].Image && !sameTagAndDigest(before[i].Image, p.Image) {
			t.Fatalf("%+v: %s %q became %q, losing its tag or digest", pc, p.Where, before[i].Image, p.Image)
		}
	}
}

// provenancePod spreads refs over init, regular and ephemeral containers and
// image volumes.
func provenancePod(refs []string) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"},
	}
	for i, ref := range refs {
		name := "c" + strconv.Itoa(i)
		switch i % 4 {
		case 0:
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: name, Image: ref})
		case 1:
			pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: name, Image: ref})
		case 2:
			pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: ref}})
		case 3:
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name,
				VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: ref}}})
		}
	}
	return pod
}

func sameTagAndDigest(a, b string) bool {
	tagOf := func(s string) (tag, digest string) {
		s, digest, _ = strings.Cut(s, "@")
		if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
			tag = s[i+1:]
		}
		return tag, digest
	}
	ta, da := tagOf(a)
	tb, db := tagOf(b)
	return ta == tb && da == db
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The pieces TestProvenanceProperty builds references and configurations
// from: every shape the runtime's parser distinguishes (hosts with dots,
// ports, :443, localhost in any case, upper-case single labels, IPv6, Docker
// Hub's spellings), and lengths around the 255-character path limit.
var (
	propHosts = []string{"", "docker.io/", "index.docker.io/", "quay.io/", "Quay.IO/", "quay.io:443/", "ghcr.io/",
		"localhost/", "LOCALHOST/", "LocalHost/", "localhost:5000/", "Evil/", "EVIL/", "evil/", "1.2.3.4:5000/",
		"[::1]:5000/", "registry.example.com/", "registry.example.com:443/", "Registry.Example.com/",
		"registry.example.com.evil.io/", "registry.k8s.io/", "harbor.example.com/", strings.Repeat("h", 300) + ".io/"}
	propPaths = []string{"nginx", "library/nginx", "mirror/nginx", "mirror", "mirrorx/y", "org/app", "pause", "pausex",
		"cloudnative-pg/postgis", "a/b/c/d", "UPPER/case", "dockerhub/library/nginx", "quay/a/b",
		"a/" + strings.Repeat("b", 200), "a/" + strings.Repeat("b", 250), strings.Repeat("p", 255)}
	propTags    = []string{"", ":1", ":v2.13.1", ":latest", ":" + strings.Repeat("t", 128), ":bad tag"}
	propDigests = []string{"", "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "@sha256:abc"}
	propTargets = []string{"", "registry.example.com/mirror", "registry.example.com", "registry.example.com:443/mirror",
		"localhost:5000", "harbor.example.com/dockerhub", "[fd00::1]:5000/m", "docker.io/org",
		"registry.example.com/" + strings.Repeat("m", 60)}
	propIgnored = []string{"registry.k8s.io", "registry.k8s.io/pause", "docker.io/library", "docker.io", "quay.io/org",
		"GCR.io", "ghcr.io:443", "evil", "localhost"}
	propSources = []string{"docker.io", "index.docker.io", "quay.io", "quay.io:443", "ghcr.io", "localhost:5000", "*", "Evil.io"}
)

func propPick(r *rand.Rand, from []string) string { return from[r.IntN(len(from))] }

func propCase(r *rand.Rand) provenanceCase {
	pc := provenanceCase{update: r.IntN(4) == 0}
	if r.IntN(3) > 0 {
		pc.registry = propPick(r, propTargets)
	}
	for range r.IntN(3) {
		pc.ignored = append(pc.ignored, propPick(r, propIgnored))
	}
	for range r.IntN(3) {
		pc.mapping = append(pc.mapping, propPick(r, propSources)+"="+propPick(r, propTargets[1:]))
	}
	for range 1 + r.IntN(8) {
		pc.refs = append(pc.refs, propPick(r, propHosts)+propPick(r, propPaths)+propPick(r, propTags)+propPick(r, propDigests))
	}
	return pc
}

// TestProvenanceProperty checks the guarantee on thousands of generated
// configurations and Pods (deterministic: a fixed seed); FuzzProvenance
// explores beyond the generator's pieces.
func TestProvenanceProperty(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 500
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		checkProvenance(t, propCase(r))
	}
}

// FuzzProvenance checks the guarantee on fuzzed configurations and
// references: comma-separated IGNORED_REGISTRIES and REGISTRY_MAP, and one
// reference per line.
func FuzzProvenance(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 64 {
		pc := propCase(r)
		f.Add(pc.registry, strings.Join(pc.ignored, ","), strings.Join(pc.mapping, ","), strings.Join(pc.refs, "\n"), pc.update)
	}
	f.Fuzz(func(t *testing.T, registry, ignored, mapping, refs string, update bool) {
		split := func(s string) []string {
			var out []string
			for _, e := range strings.Split(s, ",") {
				if e = strings.TrimSpace(e); e != "" {
					out = append(out, e)
				}
			}
			return out
		}
		lines := strings.Split(refs, "\n")
		if len(lines) > 32 {
			lines = lines[:32]
		}
		checkProvenance(t, provenanceCase{registry: strings.TrimSpace(registry), ignored: split(ignored), mapping: split(mapping), refs: lines, update: update})
	})
}
