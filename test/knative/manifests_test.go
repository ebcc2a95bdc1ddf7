package knative

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

// manifestDir is deploy/knative relative to the repository root.
const manifestDir = "deploy/knative"

// manifest is one YAML document from one file under deploy/knative.
type manifest struct {
	File       string // path relative to the repository root
	Index      int    // document index within the file
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
	JSON       []byte // the document converted to JSON
}

func (m manifest) String() string {
	return fmt.Sprintf("%s#%d (%s %s/%s)", m.File, m.Index, m.Kind, m.Namespace, m.Name)
}

// repoRoot returns the repository root or stops the test.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// loadManifests parses every YAML document of every *.yaml / *.yml file
// under deploy/knative (kustomization.yaml included: it is a document too).
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	return loadManifestsIn(t, manifestDir)
}

// loadManifestsIn parses every YAML file of dir (relative to the repository).
func loadManifestsIn(t *testing.T, dir string) []manifest {
	t.Helper()
	root := repoRoot(t)
	files, err := filepath.Glob(filepath.Join(root, dir, "*.y*ml"))
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML files in %s", filepath.Join(root, dir))
	}
	sort.Strings(files)
	var all []manifest
	for _, path := range files {
		rel, err := filepath.Rel(root, path)
		if err != nil {
			t.Fatalf("relative path of %s: %v", path, err)
		}
		docs, err := parseYAMLDocs(path)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		for i, doc := range docs {
			m, err := newManifest(rel, i, doc)
			if err != nil {
				t.Fatalf("%s#%d: %v", rel, i, err)
			}
			all = append(all, m)
		}
	}
	return all
}

// parseYAMLDocs splits a multi-document YAML file and converts each
// non-empty document to JSON. Documents holding only comments are skipped.
func parseYAMLDocs(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening manifest: %w", err)
	}
	defer f.Close()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var docs [][]byte
	for {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML document %d: %w", len(docs), err)
		}
		// Strict: duplicate keys are an error, as they are for kubectl.
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("YAML document %d is not valid YAML: %w", len(docs), err)
		}
		if trimmed := bytes.TrimSpace(js); len(trimmed) == 0 || string(trimmed) == "null" {
			continue
		}
		docs = append(docs, js)
	}
}

func newManifest(file string, index int, js []byte) (manifest, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(js, &head); err != nil {
		return manifest{}, fmt.Errorf("decoding apiVersion/kind/metadata: %w", err)
	}
	if head.APIVersion == "" || head.Kind == "" {
		return manifest{}, fmt.Errorf("document has no apiVersion/kind")
	}
	return manifest{
		File:       file,
		Index:      index,
		APIVersion: head.APIVersion,
		Kind:       head.Kind,
		Namespace:  head.Metadata.Namespace,
		Name:       head.Metadata.Name,
		JSON:       js,
	}, nil
}

// findOne returns the single manifest of the given apiVersion and kind.
func findOne(t *testing.T, all []manifest, apiVersion, kind string) manifest {
	t.Helper()
	var found []manifest
	for _, m := range all {
		if m.APIVersion == apiVersion && m.Kind == kind {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %s under %s, found %d: %v", apiVersion, kind, manifestDir, len(found), found)
	}
	return found[0]
}

// TestManifestsParse checks that every document under deploy/knative is a
// well-formed Kubernetes object of a kind we expect there. An unexpected
// kind fails the test so that new files are consciously covered by checks.
func TestManifestsParse(t *testing.T) {
	known := map[string]bool{
		"v1/Namespace":                   true,
		"serving.knative.dev/v1/Service": true,
		"admissionregistration.k8s.io/v1/MutatingWebhookConfiguration": true,
		"cert-manager.io/v1/ClusterIssuer":                             true,
		"cert-manager.io/v1/Certificate":                               true,
		"kustomize.config.k8s.io/v1beta1/Kustomization":                true,
	}
	all := loadManifests(t)
	for _, m := range all {
		if !known[m.APIVersion+"/"+m.Kind] {
			t.Errorf("%v: kind not covered by these tests", m)
		}
		if m.Kind != "Kustomization" && m.Name == "" {
			t.Errorf("%v: metadata.name is empty", m)
		}
	}
	// kubectl apply -k only applies what kustomization.yaml lists; a manifest
	// file left out of it would silently not be deployed.
	kustomization := findOne(t, all, "kustomize.config.k8s.io/v1beta1", "Kustomization")
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(kustomization.JSON, &k); err != nil {
		t.Fatalf("decoding %v: %v", kustomization, err)
	}
	reported := map[string]bool{}
	for _, m := range all {
		base := filepath.Base(m.File)
		if base != "kustomization.yaml" && !slices.Contains(k.Resources, base) && !reported[base] {
			reported[base] = true
			t.Errorf("%s is not listed in kustomization.yaml resources %v", m.File, k.Resources)
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join(repoRoot(t), manifestDir, r)); err != nil {
			t.Errorf("kustomization.yaml lists %q: %v", r, err)
		}
	}
}
