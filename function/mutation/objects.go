package mutation

import (
	"fmt"
	"iter"
	"strconv"

	jsonv2 "github.com/go-json-experiment/json"
	corev1 "k8s.io/api/core/v1"
)

// The types below are the parts of a Pod and a PVC that the rules read.
// Decoding only these fields skips the allocations of env, probes and the
// rest of a full corev1.Pod, which is most of the cost of a review.

// Pod is the part of a Pod the rules read. Decoding one also records in
// its Spec what the rules need of its metadata (see UnmarshalJSONFrom).
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
	Volumes             []Volume                      `json:"volumes"`
	ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`

	// meta is what the rules know of the metadata of the object the spec
	// belongs to: set when the spec was decoded as part of a Pod.
	meta podMeta
}

// Container is the part of an init, regular or ephemeral container the rules read.
type Container struct {
	Name            string `json:"name"`
	Image           string `json:"image"`
	ImagePullPolicy string `json:"imagePullPolicy"`
}

// Volume is the part of a pod volume the rules read: only image volumes
// pull anything.
type Volume struct {
	Name  string       `json:"name"`
	Image *ImageVolume `json:"image"`
}

// ImageVolume is an image volume source (ImageVolume is GA and locked on in
// Kubernetes 1.36): the kubelet pulls Reference with the Pod's pull secrets.
type ImageVolume struct {
	Reference  string `json:"reference"`
	PullPolicy string `json:"pullPolicy"`
}

// PVC is the part of a PersistentVolumeClaim the rules read.
type PVC struct {
	Metadata PVCMetadata `json:"metadata"`
	Spec     struct {
		// A pointer, because an absent class and "" mean different things:
		// absent asks for the cluster default, "" asks for no class at all.
		StorageClassName *string `json:"storageClassName"`
	} `json:"spec"`
}

// PVCMetadata is a claim's metadata: its annotations can name its class.
type PVCMetadata struct {
	Metadata
	Annotations map[string]string `json:"annotations"`
}

// ImageRef is one image reference a pod spec makes the kubelet pull: the
// single definition of "every image this Pod pulls" that the webhook and
// `mutator mutate` share, in the shape of k8s.io/kubernetes pkg/api/pod
// VisitContainersWithPath, with image volumes added.
type ImageRef struct {
	Field      string // "initContainers", "containers", "ephemeralContainers" or "volumes"
	Index      int    // position in that list
	Name       string // the container's or the volume's name
	Image      string
	PullPolicy string
}

// Where names the reference for people: `container "app"`, `image volume "data"`.
func (r ImageRef) Where() string {
	return fieldWords[r.Field] + " " + strconv.Quote(r.Name)
}

// ImagePath is the JSON pointer of the reference under prefix (the pod
// spec's own pointer, "/spec" for a Pod).
func (r ImageRef) ImagePath(prefix string) string {
	if r.Field == "volumes" {
		return r.elem(prefix) + "/image/reference"
	}
	return r.elem(prefix) + "/image"
}

// PolicyPath is the JSON pointer of the reference's pull policy.
func (r ImageRef) PolicyPath(prefix string) string {
	if r.Field == "volumes" {
		return r.elem(prefix) + "/image/pullPolicy"
	}
	return r.elem(prefix) + "/imagePullPolicy"
}

func (r ImageRef) elem(prefix string) string {
	return prefix + "/" + r.Field + "/" + strconv.Itoa(r.Index)
}

var fieldWords = map[string]string{
	"initContainers":      "init container",
	"containers":          "container",
	"ephemeralContainers": "ephemeral container",
	"volumes":             "image volume",
}

// Images yields every image reference the spec pulls, in the order the
// kubelet meets them: init containers, containers, ephemeral containers,
// image volumes.
func (s *PodSpec) Images() iter.Seq[ImageRef] {
	return func(yield func(ImageRef) bool) {
		lists := [...]struct {
			field string
			list  []Container
		}{{"initContainers", s.InitContainers}, {"containers", s.Containers}, {"ephemeralContainers", s.EphemeralContainers}}
		for _, l := range lists {
			for i, c := range l.list {
				if !yield(ImageRef{Field: l.field, Index: i, Name: c.Name, Image: c.Image, PullPolicy: c.ImagePullPolicy}) {
					return
				}
			}
		}
		for i, v := range s.Volumes {
			if v.Image == nil {
				continue
			}
			if !yield(ImageRef{Field: "volumes", Index: i, Name: v.Name, Image: v.Image.Reference, PullPolicy: v.Image.PullPolicy}) {
				return
			}
		}
	}
}

// Decode decodes the JSON of an object (or of the part at hand) into one of
// the types above; what names it in the error. The webhook and `mutator
// mutate` both decode through here, so they read the same fields the same
// way.
//
// github.com/go-json-experiment/json (encoding/json/v2 before it left
// GOEXPERIMENT) decodes the few fields the rules read about three times
// faster than encoding/json, which must scan the object twice. It is also
// case-sensitive, as the API server is: encoding/json would let an "IMAGE"
// member stand in for "image".
func Decode(raw []byte, into any, what string) error {
	if len(raw) == 0 {
		return fmt.Errorf("request has no %s object", what)
	}
	if err := jsonv2.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	return nil
}
