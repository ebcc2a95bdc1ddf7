package mutation

import corev1 "k8s.io/api/core/v1"

// The types below are the parts of a Pod and a PVC that the rules read.
// Decoding only these fields skips the allocations of env, volumes, probes and
// the rest of a full corev1.Pod, which is most of the cost of a review.

// Pod is the part of a Pod the rules read.
type Pod struct {
	Metadata Metadata `json:"metadata"`
	Spec     PodSpec  `json:"spec"`
}

// Metadata names the object in warnings, logs and events.
type Metadata struct {
	Name         string `json:"name"`
	GenerateName string `json:"generateName"`
	Namespace    string `json:"namespace"`
}

// PodSpec is the part of a Pod spec (or a pod template's spec) the rules read.
type PodSpec struct {
	InitContainers      []Container                   `json:"initContainers"`
	Containers          []Container                   `json:"containers"`
	EphemeralContainers []Container                   `json:"ephemeralContainers"`
	ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
}

// Container is the part of an init, regular or ephemeral container the rules read.
type Container struct {
	Name            string `json:"name"`
	Image           string `json:"image"`
	ImagePullPolicy string `json:"imagePullPolicy"`
}

// PVC is the part of a PersistentVolumeClaim the rules read.
type PVC struct {
	Metadata Metadata `json:"metadata"`
	Spec     struct {
		// A pointer, because an absent class and "" mean different things:
		// absent asks for the cluster default, "" asks for no class at all.
		StorageClassName *string `json:"storageClassName"`
	} `json:"spec"`
}
