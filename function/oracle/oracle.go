// Package oracle is the runtime's view of image references, for tests: what
// a kubelet would pull for a Pod, computed from github.com/distribution/reference
// (the parser the kubelet uses) and the k8s.io/api types alone, never from
// the code under test. Tests of the rules, the handler and the end-to-end
// suite judge their results by it.
package oracle

import (
	_ "crypto/sha256" // digest algorithms the parser accepts
	_ "crypto/sha512"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
)

// Name returns the repository a runtime pulls image from, as host/path with
// the host lower-cased and without an explicit :443, and false when the
// runtime cannot parse image (the kubelet then refuses to pull it).
func Name(image string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", false
	}
	return domain(reference.Domain(named)) + "/" + reference.Path(named), true
}

// Domain returns the registry host a runtime pulls image from, in the same
// form as Name, and false when image does not parse.
func Domain(image string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", false
	}
	return domain(reference.Domain(named)), true
}

func domain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ":443")
	if d == "index.docker.io" {
		return "docker.io"
	}
	return d
}

// Prefix returns a registry or registry/path prefix in the form of Name:
// the repository names an image under it can have, without the trailing
// components. False when no image can be under it.
func Prefix(p string) (string, bool) {
	name, ok := Name(strings.TrimSuffix(p, "/") + "/x/x")
	if !ok {
		return "", false
	}
	return strings.TrimSuffix(name, "/x/x"), true
}

// Under reports whether name (from Name) is prefix (from Prefix) or lies
// below it at a path-component boundary.
func Under(name, prefix string) bool {
	return name == prefix || strings.HasPrefix(name, prefix+"/")
}

// Pulled is one image reference a Pod makes the kubelet pull.
type Pulled struct {
	Where string // e.g. `containers[0]`, `volumes[2].image`
	Image string
}

// PodImages lists every image reference in spec that a kubelet pulls: init,
// regular and ephemeral containers, and image volumes (ImageVolume is GA and
// locked on in Kubernetes 1.36).
func PodImages(spec *corev1.PodSpec) []Pulled {
	var out []Pulled
	add := func(where string, i int, image string) {
		out = append(out, Pulled{Where: where + "[" + strconv.Itoa(i) + "]", Image: image})
	}
	for i, c := range spec.InitContainers {
		add("initContainers", i, c.Image)
	}
	for i, c := range spec.Containers {
		add("containers", i, c.Image)
	}
	for i, c := range spec.EphemeralContainers {
		add("ephemeralContainers", i, c.Image)
	}
	for i, v := range spec.Volumes {
		if v.Image != nil {
			add("volumes", i, v.Image.Reference)
		}
	}
	return out
}

// Policy is a configuration as the oracle reads it: REGISTRY,
// IGNORED_REGISTRIES and REGISTRY_MAP ("source=target") entries.
type Policy struct {
	Registry string
	Ignored  []string
	Map      []string
}

// Permits reports whether a Pod may pull image under the policy: the
// runtime cannot parse it (so never pulls it), or it lies under REGISTRY, an
// ignored prefix or a map target, or the policy leaves its registry alone on
// purpose (no REGISTRY, no "*" entry, and its host is not a map source).
func (p Policy) Permits(image string) bool {
	name, ok := Name(image)
	if !ok {
		return true
	}
	allowed := []string{p.Registry}
	allowed = append(allowed, p.Ignored...)
	sources := map[string]bool{}
	for _, e := range p.Map {
		source, target, _ := strings.Cut(e, "=")
		source = strings.TrimSpace(source)
		if source != "*" {
			source = domain(source)
		}
		sources[source] = true
		allowed = append(allowed, strings.TrimSpace(target))
	}
	for _, a := range allowed {
		if a == "" {
			continue
		}
		if prefix, ok := Prefix(a); ok && Under(name, prefix) {
			return true
		}
	}
	if strings.TrimSpace(p.Registry) == "" && !sources["*"] {
		d, _ := Domain(image)
		return !sources[d]
	}
	return false
}
