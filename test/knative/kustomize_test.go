package knative

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizeBuild renders a kustomization with the kustomize library version
// that kubectl v0.36 embeds, i.e. what `kubectl apply -k` would send.
func kustomizeBuild(t *testing.T, fs filesys.FileSystem, dir string) resmap.ResMap {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fs, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return rm
}

// sharedPolicyDir holds the namespace opt-out policy both deploy variants include.
const sharedPolicyDir = "deploy/namespace-policy"

// TestKustomizeBuild checks that `kubectl apply -k deploy/knative` renders
// exactly the manifests of the directory, and that the Service it renders
// still passes Knative's validation.
func TestKustomizeBuild(t *testing.T) {
	dir := filepath.Join(repoRoot(t), manifestDir)
	rm := kustomizeBuild(t, filesys.MakeFsOnDisk(), dir)

	var got, want []string
	for _, r := range rm.Resources() {
		got = append(got, r.GetApiVersion()+" "+r.GetKind()+" "+r.GetNamespace()+"/"+r.GetName())
	}
	// deploy/knative includes the namespace opt-out policy shared with
	// the standalone variant.
	for _, m := range append(loadManifests(t), loadManifestsIn(t, sharedPolicyDir)...) {
		if m.Kind != "Kustomization" {
			want = append(want, m.APIVersion+" "+m.Kind+" "+m.Namespace+"/"+m.Name)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if len(got) != len(want) {
		t.Fatalf("kustomize renders\n  %v\nwant\n  %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("kustomize renders %q, want %q", got[i], want[i])
		}
	}

	svc := renderedService(t, rm)
	if errs, _ := admit(knativeCreateContext(t), svc); errs != nil {
		t.Errorf("rendered Service is rejected by Knative:\n%v", errs)
	}
}

// TestKustomizeImageOverride follows the documented way of deploying a real
// image (`kustomize edit set image`, i.e. an images: entry) and checks that
// it reaches the Knative Service's container, which is not a built-in
// Kubernetes kind.
func TestKustomizeImageOverride(t *testing.T) {
	fs := filesys.MakeFsInMemory()
	// The in-memory tree mirrors deploy/: /base is deploy/knative, whose
	// kustomization includes ../namespace-policy.
	for from, to := range map[string]string{manifestDir: "/base", sharedPolicyDir: "/namespace-policy"} {
		src := filepath.Join(repoRoot(t), from)
		entries, err := os.ReadDir(src)
		if err != nil {
			t.Fatalf("reading %s: %v", src, err)
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatalf("reading %s: %v", e.Name(), err)
			}
			if err := fs.WriteFile(filepath.Join(to, e.Name()), data); err != nil {
				t.Fatalf("writing in-memory %s: %v", e.Name(), err)
			}
		}
	}

	_, original := loadService(t)
	placeholder := original.Spec.Template.Spec.Containers[0].Image
	name, _, _ := cutTag(placeholder)
	overlay := "resources:\n  - ../base\nimages:\n  - name: " + name + "\n    newName: registry.example.com/team/mutator\n    newTag: v1.2.3\n"
	if err := fs.WriteFile("/overlay/kustomization.yaml", []byte(overlay)); err != nil {
		t.Fatalf("writing overlay: %v", err)
	}

	svc := renderedService(t, kustomizeBuild(t, fs, "/overlay"))
	if got, want := svc.Spec.Template.Spec.Containers[0].Image, "registry.example.com/team/mutator:v1.2.3"; got != want {
		t.Errorf("image after override = %q, want %q", got, want)
	}
}

// cutTag splits "name:tag" into name and tag; a colon before the last
// slash belongs to a registry port, not a tag.
func cutTag(image string) (name, tag string, ok bool) {
	i := strings.LastIndex(image, ":")
	if i <= strings.LastIndex(image, "/") {
		return image, "", false
	}
	return image[:i], image[i+1:], true
}

func renderedService(t *testing.T, rm resmap.ResMap) *servingv1.Service {
	t.Helper()
	for _, r := range rm.Resources() {
		if r.GetApiVersion() != "serving.knative.dev/v1" || r.GetKind() != "Service" {
			continue
		}
		js, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("marshalling rendered Service: %v", err)
		}
		svc, err := decodeService(js)
		if err != nil {
			t.Fatalf("rendered Service: %v", err)
		}
		return svc
	}
	t.Fatalf("kustomize output has no Knative Service")
	return nil
}
