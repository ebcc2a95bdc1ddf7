// Package mutation holds the pure rules of the webhook: given the relevant
// parts of a Pod or PVC it returns the changes to make, as data. Decoding the
// request, building the AdmissionResponse and sending events happen elsewhere.
package mutation

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/function/config"
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
	verb := "became"
	if pending {
		verb = "would become"
	}
	s := fmt.Sprintf("%s %q %s %q", c.Kind, c.From, verb, c.To)
	if c.Kind == KindImage {
		s = fmt.Sprintf("image %q %s %q", c.From, verb, c.To)
	}
	if c.Where != "" {
		s += " (" + c.Where + ")"
	}
	return s
}

// Rules applies the configuration to objects. It is immutable and safe for
// concurrent use.
type Rules struct {
	images       *images.Rewriter
	secret       string
	appendSecret bool
	policy       string // "" when the pull policy is not forced
	storageClass string
}

// New builds the rules from a validated configuration.
func New(cfg config.Config) (*Rules, error) {
	rw, err := images.New(cfg.Registry, cfg.IgnoredRegistries, cfg.RegistryMap)
	if err != nil {
		return nil, fmt.Errorf("building image rules: %w", err)
	}
	r := &Rules{
		images:       rw,
		secret:       cfg.ImagePullSecret,
		appendSecret: cfg.ImagePullSecretAppend,
		storageClass: cfg.DefaultStorageClass,
	}
	if cfg.ForceImagePullPolicy {
		r.policy = cfg.ImagePullPolicyToForce
	}
	return r, nil
}

// Images returns the image rewriter the rules use.
func (r *Rules) Images() *images.Rewriter { return r.images }

// containerList names the three container lists of a pod spec, with their
// JSON field names for patch paths.
var containerLists = [...]struct {
	field string
	word  string
	get   func(*PodSpec) []Container
}{
	{"initContainers", "init container", func(s *PodSpec) []Container { return s.InitContainers }},
	{"containers", "container", func(s *PodSpec) []Container { return s.Containers }},
	{"ephemeralContainers", "ephemeral container", func(s *PodSpec) []Container { return s.EphemeralContainers }},
}

// PodSpecOnCreate returns the changes for a new pod spec found at the JSON
// pointer prefix ("/spec" for a Pod, "/spec/template/spec" for a Deployment).
func (r *Rules) PodSpecOnCreate(prefix string, spec *PodSpec) []Change {
	return r.podSpec(prefix, spec, nil)
}

// PodSpecOnUpdate returns the changes for an updated pod spec. Only what the
// update changed is touched: an image that differs from the old object's is
// rewritten, and a container that did not exist before (an ephemeral container
// added by kubectl debug) is treated as new. Pull secrets and the policies of
// existing containers are immutable, so patching them would make the API
// server reject an otherwise valid update.
func (r *Rules) PodSpecOnUpdate(prefix string, spec, old *PodSpec) []Change {
	if old == nil {
		old = &PodSpec{}
	}
	return r.podSpec(prefix, spec, old)
}

func (r *Rules) podSpec(prefix string, spec, old *PodSpec) []Change {
	var changes []Change
	for _, list := range containerLists {
		var before map[string]Container
		if old != nil {
			before = byName(list.get(old))
		}
		for i, c := range list.get(spec) {
			prev, existed := before[c.Name]
			image, rewrite := "", false
			if old == nil || !existed || prev.Image != c.Image {
				image, rewrite = r.images.Rewrite(c.Image)
			}
			policy := r.policy != "" && (old == nil || !existed) && c.ImagePullPolicy != r.policy
			if !rewrite && !policy {
				continue
			}
			// Paths and descriptions are built only for containers that
			// change: most containers of most reviews do not.
			path := prefix + "/" + list.field + "/" + strconv.Itoa(i)
			where := list.word + " " + strconv.Quote(c.Name)
			if rewrite {
				changes = append(changes, Change{Kind: KindImage, Path: path + "/image", Where: where,
					From: c.Image, To: image, op: "replace", value: image})
			}
			if policy {
				// "add" sets the member whether or not it is present.
				changes = append(changes, Change{Kind: KindPullPolicy, Path: path + "/imagePullPolicy", Where: where,
					From: c.ImagePullPolicy, To: r.policy, op: "add", value: r.policy})
			}
		}
	}
	if old == nil && r.secret != "" {
		if c, ok := r.pullSecret(prefix, spec.ImagePullSecrets); ok {
			changes = append(changes, c)
		}
	}
	return changes
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

// PVCOnCreate defaults the storage class of a new claim that names none.
func (r *Rules) PVCOnCreate(pvc *PVC) []Change {
	if r.storageClass == "" || pvc.Spec.StorageClassName != nil {
		return nil
	}
	return []Change{{Kind: KindStorageClass, Path: "/spec/storageClassName", From: "", To: r.storageClass,
		op: "add", value: r.storageClass}}
}

func byName(cs []Container) map[string]Container {
	m := make(map[string]Container, len(cs))
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
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
