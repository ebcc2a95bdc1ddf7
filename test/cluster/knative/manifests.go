package knative

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifests are Serving's objects, split as they must be applied: the CRDs
// first (the rest has custom resources), then everything else in the order
// of the release's serving-core.yaml (file paths, sorted).
type manifests struct {
	crds, core []*unstructured.Unstructured
}

// loadManifests reads every YAML document under dir (config/core), in path
// order.
func loadManifests(dir string) (*manifests, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".yaml") {
			paths = append(paths, path) // WalkDir walks in lexical order
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing Serving's manifests in %s: %w", dir, err)
	}
	m := &manifests{}
	for _, path := range paths {
		objs, err := readObjects(path)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if o.GetKind() == "CustomResourceDefinition" {
				m.crds = append(m.crds, o)
			} else {
				m.core = append(m.core, o)
			}
		}
	}
	if len(m.crds) == 0 || len(m.core) == 0 {
		return nil, fmt.Errorf("%s holds %d CRDs and %d other objects; run hack/tools/knative-bin.sh again", dir, len(m.crds), len(m.core))
	}
	return m, nil
}

// readObjects decodes the YAML documents of path, skipping empty ones (a
// document of comments only).
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		var content map[string]any
		if err := yaml.Unmarshal(doc, &content); err != nil {
			return nil, fmt.Errorf("decoding a document of %s: %w", path, err)
		}
		if len(content) == 0 {
			continue
		}
		o := &unstructured.Unstructured{Object: content}
		if o.GetKind() == "" || o.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: a document without kind or apiVersion", path)
		}
		objs = append(objs, o)
	}
}

// find returns the object of kind and name among objs.
func find(objs []*unstructured.Unstructured, kind, name string) (*unstructured.Unstructured, error) {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o, nil
		}
	}
	return nil, fmt.Errorf("no %s %s in Serving's manifests", kind, name)
}

// replaceKo replaces every string value "ko://<import path>" in objs with
// refs' reference for it; one without a reference is an error, as is a
// reference never used.
func replaceKo(objs []*unstructured.Unstructured, refs map[string]string) error {
	used := map[string]bool{}
	var unknown []string
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				v[k] = walk(e)
			}
		case []any:
			for i, e := range v {
				v[i] = walk(e)
			}
		case string:
			if strings.HasPrefix(v, "ko://") {
				ref, ok := refs[v]
				if !ok {
					unknown = append(unknown, v)
					return v
				}
				used[v] = true
				return ref
			}
		}
		return v
	}
	for _, o := range objs {
		walk(o.Object)
	}
	if len(unknown) > 0 {
		return fmt.Errorf("images named in Serving's manifests were not built: %s", strings.Join(unknown, ", "))
	}
	for ko := range refs {
		if !used[ko] {
			return fmt.Errorf("no manifest of Serving names %s", ko)
		}
	}
	return nil
}

// setConfig merges data into the ConfigMap name of knative-serving. Keys
// beside _example are what Serving reads; _example stays as shipped (the
// webhook checks its checksum annotation).
func setConfig(objs []*unstructured.Unstructured, name string, data map[string]string) error {
	cm, err := find(objs, "ConfigMap", name)
	if err != nil {
		return err
	}
	have, _, err := unstructured.NestedStringMap(cm.Object, "data")
	if err != nil {
		return fmt.Errorf("reading the data of ConfigMap %s: %w", name, err)
	}
	if have == nil {
		have = map[string]string{}
	}
	maps.Copy(have, data)
	return unstructured.SetNestedStringMap(cm.Object, have, "data")
}

// writeYAML writes objs as one multi-document YAML file, for kubectl.
func writeYAML(path string, objs []*unstructured.Unstructured) error {
	var b bytes.Buffer
	for _, o := range objs {
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", o.GetKind(), o.GetName(), err)
		}
		b.WriteString("---\n")
		b.Write(data)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
