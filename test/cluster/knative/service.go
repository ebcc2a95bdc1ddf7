package knative

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Knative's resources, read and written as unstructured objects: the test
// module need not compile Serving's API packages for a few fields.
var (
	ServiceResource  = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}
	RevisionResource = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "revisions"}
	SKSResource      = schema.GroupVersionResource{Group: "networking.internal.knative.dev", Version: "v1alpha1", Resource: "serverlessservices"}
	IngressResource  = schema.GroupVersionResource{Group: "networking.internal.knative.dev", Version: "v1alpha1", Resource: "ingresses"}
)

// NewService returns a Knative Service running image (one container, the
// port Knative gives it in $PORT), its revision template annotated with
// annotations (e.g. autoscaling.knative.dev/window).
func NewService(name, namespace, image string, annotations map[string]string) *unstructured.Unstructured {
	template := map[string]any{
		"spec": map[string]any{
			"containers": []any{map[string]any{"image": image}},
		},
	}
	if len(annotations) > 0 {
		a := make(map[string]any, len(annotations))
		for k, v := range annotations {
			a[k] = v
		}
		template["metadata"] = map[string]any{"annotations": a}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "serving.knative.dev/v1",
		"kind":       "Service",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec":       map[string]any{"template": template},
	}}
}

// Condition returns the status and message of o's condition typ (a Knative
// resource's status.conditions), or "" if it has none yet.
func Condition(o *unstructured.Unstructured, typ string) (status, message string) {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != typ {
			continue
		}
		status, _ = m["status"].(string)
		reason, _ := m["reason"].(string)
		message, _ = m["message"].(string)
		if reason != "" {
			message = reason + ": " + message
		}
		return status, message
	}
	return "", ""
}

// Ready reports whether o's Ready condition is True for its current
// generation, and if not, why.
func Ready(o *unstructured.Unstructured) (bool, string) {
	observed, _, _ := unstructured.NestedInt64(o.Object, "status", "observedGeneration")
	if observed < o.GetGeneration() {
		return false, fmt.Sprintf("generation %d not observed yet (%d)", o.GetGeneration(), observed)
	}
	status, message := Condition(o, "Ready")
	if status == "" {
		return false, "no Ready condition yet"
	}
	return status == "True", "Ready=" + status + " " + message
}

// String returns the string at path in o, or "".
func String(o *unstructured.Unstructured, path ...string) string {
	s, _, _ := unstructured.NestedString(o.Object, path...)
	return s
}
