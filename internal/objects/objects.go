// Package objects reads Kubernetes manifests into unstructured objects for
// comparisons: the generator of the derived manifests (hack/generate) and
// the Helm chart's tests compare renders with it, so both sides of every
// comparison are read the same way.
package objects

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Parse splits a multi-document YAML (or JSON) stream into objects,
// skipping empty documents. Number and octal spellings (defaultMode: 0440)
// decode to the same value, so renders that differ only in spelling compare
// equal.
func Parse(stream string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decoding YAML: %w", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// Key names an object the way the API server does: group, kind, namespace
// and name.
func Key(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	if ns := o.GetNamespace(); ns != "" {
		return fmt.Sprintf("%s/%s %s/%s", gvk.Group, gvk.Kind, ns, o.GetName())
	}
	return fmt.Sprintf("%s/%s %s", gvk.Group, gvk.Kind, o.GetName())
}
