// Package mutation holds the pure rules of the webhook: given the relevant
// parts of a Pod or PVC it returns the changes to make, as data. Decoding the
// request, building the AdmissionResponse and sending events happen elsewhere.
package mutation

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/images"
)

// Kind is what a change touches; it labels metrics and events.
type Kind string

// The kinds of change the rules make.
const (
	KindImage        Kind = "image"
	KindPullSecret   Kind = "pull-secret"
	KindPullPolicy   Kind = "pull-policy"
	KindStorageClass Kind = "storage-class"
	// KindAnnotation records the images as written
	// (OriginalImagesAnnotation); it changes no image.
	KindAnnotation Kind = "annotation"
)

// Change is one field the rules set: where (a JSON pointer), what to write,
// and what it was and becomes in words for warnings, logs and events.
type Change struct {
	Kind  Kind   `json:"kind"`
	Path  string `json:"path"`
	Where string `json:"where,omitempty"` // e.g. `container "app"`
	From  string `json:"from"`
	To    string `json:"to"`

	op    string // JSON patch operation
	value any    // JSON patch value
}

// Describe says what the change does, for warnings; pending selects the
// audit-mode wording.
func (c Change) Describe(pending bool) string {
	verb, set := "became", "set to"
	if pending {
		verb, set = "would become", "would be set to"
	}
	var s string
	switch {
	case c.Kind == KindImage:
		s = fmt.Sprintf("image %q %s %q", c.From, verb, c.To)
	case c.Kind == KindAnnotation:
		// Its value (up to 8 KiB) repeats the image changes beside it.
		record := "records"
		if pending {
			record = "would record"
		}
		s = fmt.Sprintf("annotation %q %s the images as written", OriginalImagesAnnotation, record)
	case c.From == "":
		// Nothing was there: "pull-secret "" became ..." reads as a bug.
		s = fmt.Sprintf("%s %s %q", c.Kind, set, c.To)
	default:
		s = fmt.Sprintf("%s %q %s %q", c.Kind, c.From, verb, c.To)
	}
	if c.Where != "" {
		s += " (" + c.Where + ")"
	}
	return s
}

// WithImage returns an image change that writes image instead: the mirror
// stage pins a rewrite to the digest the mirror serves (PIN_DIGESTS). Other
// changes come back as they are.
func (c Change) WithImage(image string) Change {
	if c.Kind == KindImage {
		c.To, c.value = image, image
	}
	return c
}

// Rules applies the configuration to objects. It is immutable and safe for
// concurrent use.
type Rules struct {
	images       *images.Rewriter
	secret       string
	appendSecret bool
	policy       string // "" when the pull policy is not forced
	storageClass string
	record       bool // RECORD_ORIGINAL_IMAGES
}

// Options are the rules' settings, parsed (config.Env.Parse builds them).
type Options struct {
	Images           images.Plan       // REGISTRY, REGISTRY_MAP, IGNORED_REGISTRIES
	PullSecret       string            // IMAGE_PULL_SECRET; "" injects none
	AppendPullSecret bool              // IMAGE_PULL_SECRET_APPEND
	PullPolicy       corev1.PullPolicy // the forced pull policy; "" forces none
	StorageClass     string            // DEFAULT_STORAGE_CLASS; "" sets none
	RecordOriginal   bool              // RECORD_ORIGINAL_IMAGES
}

// New compiles the rules.
func New(opts Options) *Rules {
	return &Rules{
		images:       images.Compile(opts.Images),
		secret:       opts.PullSecret,
		appendSecret: opts.AppendPullSecret,
		policy:       string(opts.PullPolicy),
		storageClass: opts.StorageClass,
		record:       opts.RecordOriginal,
	}
}

// Images returns the image rewriter the rules use.
func (r *Rules) Images() *images.Rewriter { return r.images }

// Problem is an image the Pod would pull that no allowed registry can serve:
// the object must be refused (or, in audit mode, warned about).
type Problem struct {
	Where string // e.g. `container "app"`, `image volume "data"`
	Err   error  // an *images.RefusedError
}

func (p Problem) String() string { return p.Where + ": " + p.Err.Error() }

// PodSpecOnCreate returns the changes for a new pod spec found at the JSON
// pointer prefix ("/spec" for a Pod, "/spec/template/spec" for a
// Deployment), and the images it cannot place under an allowed registry.
//
// A reference whose effective pull policy is Never is left as written and
// never refused: the kubelet pulls nothing for it and runs the image the
// node holds under that name, so a rewrite would only make the container
// fail with ErrImageNeverPull. The effective policy is the forced one
// (FORCE_IMAGE_PULL_POLICY) where the rules set it, else the reference's
// own; an empty one (a manifest before the API server's defaulting) is not
// Never.
//
// With RECORD_ORIGINAL_IMAGES, a spec decoded as part of a Pod (Decode of a
// Pod, which reads its metadata too) gets the annotation
// OriginalImagesAnnotation when an image is rewritten; a spec decoded on
// its own (a workload's template in `mutator mutate`) never does, nor does
// an UPDATE that adds an ephemeral container (see podSpec).
func (r *Rules) PodSpecOnCreate(prefix string, spec *PodSpec) ([]Change, []Problem) {
	return r.podSpec(prefix, spec, nil)
}

// PodSpecOnUpdate returns the changes for an updated pod spec. Only what the
// update changed is touched: an image that differs from the old object's is
// rewritten, and a container that did not exist before (an ephemeral container
// added by kubectl debug) is treated as new. Pull secrets, image volumes and
// the policies of existing containers are immutable, so patching them would
// make the API server reject an otherwise valid update.
func (r *Rules) PodSpecOnUpdate(prefix string, spec, old *PodSpec) ([]Change, []Problem) {
	if old == nil {
		old = &PodSpec{}
	}
	return r.podSpec(prefix, spec, old)
}

func (r *Rules) podSpec(prefix string, spec, old *PodSpec) ([]Change, []Problem) {
	var (
		changes   []Change
		problems  []Problem
		before    map[containerKey]string // image of each container of old
		originals []original              // the images rewritten, as written
		debug     bool                    // an UPDATE that adds an ephemeral container
	)
	if old != nil {
		before = imagesByContainer(old)
	}
	for ref := range spec.Images() {
		isNew := true
		if old != nil {
			if ref.Field == "volumes" {
				// Immutable: an UPDATE carries the volumes the Pod was
				// created with, which were decided then.
				continue
			}
			prev, existed := before[containerKey{ref.Field, ref.Name}]
			isNew = !existed
			debug = debug || (isNew && ref.Field == "ephemeralContainers")
			if existed && prev == ref.Image {
				continue
			}
		}
		// The forced policy is set on new references only: an existing
		// container's is immutable, so its own is the one the kubelet uses.
		forced := r.policy != "" && isNew
		effective := ref.PullPolicy
		if forced {
			effective = r.policy
		}
		image := ref.Image
		if effective != string(corev1.PullNever) {
			var err error
			if image, err = r.images.Rewrite(ref.Image); err != nil {
				problems = append(problems, Problem{Where: ref.Where(), Err: err})
			}
		}
		rewrite := image != ref.Image
		policy := forced && ref.PullPolicy != r.policy
		if !rewrite && !policy {
			continue
		}
		// Paths and descriptions are built only for references that
		// change: most of most reviews do not.
		where := ref.Where()
		if rewrite {
			changes = append(changes, Change{Kind: KindImage, Path: ref.ImagePath(prefix), Where: where,
				From: ref.Image, To: image, op: "replace", value: image})
			if r.record {
				originals = append(originals, original{ref.Field + "/" + ref.Name, ref.Image})
			}
		}
		if policy {
			// "add" sets the member whether or not it is present.
			changes = append(changes, Change{Kind: KindPullPolicy, Path: ref.PolicyPath(prefix), Where: where,
				From: ref.PullPolicy, To: r.policy, op: "add", value: r.policy})
		}
	}
	if old == nil && r.secret != "" {
		if c, ok := r.pullSecret(prefix, spec.ImagePullSecrets); ok {
			changes = append(changes, c)
		}
	}
	// Only the ephemeralcontainers subresource adds an ephemeral
	// container, and the API server keeps nothing but
	// spec.ephemeralContainers of what it is sent (and of what the webhook
	// patches) there: an annotation change would be dropped, so none is
	// made, nor announced in warnings and events.
	if len(originals) > 0 && !debug {
		if c, ok := recordOriginals(prefix, &spec.meta, originals, old != nil); ok {
			changes = append(changes, c)
		}
	}
	return changes, problems
}

// containerKey identifies a container across an update: container names are
// unique within each list.
type containerKey struct{ field, name string }

func imagesByContainer(spec *PodSpec) map[containerKey]string {
	m := make(map[containerKey]string, len(spec.InitContainers)+len(spec.Containers)+len(spec.EphemeralContainers))
	for ref := range spec.Images() {
		if ref.Field != "volumes" {
			m[containerKey{ref.Field, ref.Name}] = ref.Image
		}
	}
	return m
}

// pullSecret implements the replace and append modes of IMAGE_PULL_SECRET.
func (r *Rules) pullSecret(prefix string, current []corev1.LocalObjectReference) (Change, bool) {
	path := prefix + "/imagePullSecrets"
	want := []corev1.LocalObjectReference{{Name: r.secret}}
	from := secretNames(current)
	if r.appendSecret {
		for _, s := range current {
			if s.Name == r.secret {
				return Change{}, false
			}
		}
		if len(current) > 0 {
			// Append one element. The older webhook's append added an array
			// inside the array, which the API server cannot decode.
			return Change{Kind: KindPullSecret, Path: path + "/-", From: from, To: secretNames(append(current[:len(current):len(current)], want...)),
				op: "add", value: want[0]}, true
		}
	} else if len(current) == 1 && current[0].Name == r.secret {
		return Change{}, false
	}
	return Change{Kind: KindPullSecret, Path: path, From: from, To: r.secret, op: "add", value: want}, true
}

// BetaStorageClassAnnotation is the claim annotation that named a class
// before spec.storageClassName existed; Kubernetes still honours it, and a
// claim that carries it has a class.
const BetaStorageClassAnnotation = "volume.beta.kubernetes.io/storage-class"

// PVCOnCreate defaults the storage class of a new claim that names none.
func (r *Rules) PVCOnCreate(pvc *PVC) []Change {
	if r.storageClass == "" || pvc.Spec.StorageClassName != nil {
		return nil
	}
	if _, ok := pvc.Metadata.Annotations[BetaStorageClassAnnotation]; ok {
		return nil
	}
	return []Change{{Kind: KindStorageClass, Path: "/spec/storageClassName", From: "", To: r.storageClass,
		op: "add", value: r.storageClass}}
}

func secretNames(refs []corev1.LocalObjectReference) string {
	s := ""
	for i, ref := range refs {
		if i > 0 {
			s += ","
		}
		s += ref.Name
	}
	return s
}
