// Package images decides where a container image should be pulled from. It is
// pure string work over github.com/distribution/reference: no I/O, no Kubernetes
// types, so every rule can be tested and fuzzed on its own.
package images

import (
	// The digest algorithms register themselves on import; without sha256 a
	// reference with an @sha256: digest fails to parse.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Rewriter maps an image reference to the registry it should be pulled from.
// Its rules are immutable after New; it is safe for concurrent use.
type Rewriter struct {
	memo *memo // results of Rewrite; parsing a reference is most of its cost

	registry string            // REGISTRY, without a trailing "/"; "" turns the core rule off
	ignored  []string          // prefixes (registry or registry/path) never rewritten
	bySource map[string]string // REGISTRY_MAP: normalised source domain -> target
	fallback string            // REGISTRY_MAP "*" target; "" when none
	keep     []string          // every prefix+"/" an image may already start with to be left alone
}

// New builds a Rewriter. registry is REGISTRY, ignored IGNORED_REGISTRIES and
// mapping the REGISTRY_MAP entries ("source=target").
func New(registry string, ignored, mapping []string) (*Rewriter, error) {
	r := &Rewriter{registry: strings.TrimSuffix(registry, "/"), memo: newMemo(memoSize)}
	if r.registry != "" {
		if err := ValidateRegistry(r.registry); err != nil {
			return nil, fmt.Errorf("registry %q: %w", registry, err)
		}
		r.keep = append(r.keep, foldHost(r.registry)+"/")
	}
	for _, p := range ignored {
		p = strings.TrimSuffix(p, "/")
		if p == "" {
			continue
		}
		r.ignored = append(r.ignored, p)
		r.keep = append(r.keep, foldHost(p)+"/")
	}
	rules, err := ParseRegistryMap(mapping)
	if err != nil {
		return nil, err
	}
	for _, rule := range rules {
		if rule.Source == "*" {
			r.fallback = rule.Target
		} else {
			if r.bySource == nil {
				r.bySource = make(map[string]string, len(rules))
			}
			r.bySource[rule.Source] = rule.Target
		}
		r.keep = append(r.keep, foldHost(rule.Target)+"/")
	}
	return r, nil
}

// Enabled reports whether any rule can change an image.
func (r *Rewriter) Enabled() bool {
	return r.registry != "" || r.fallback != "" || len(r.bySource) > 0
}

// Rewrite returns the image to pull instead of image, and whether it differs.
// Images that are empty, do not parse, or already live under REGISTRY, an
// ignored prefix or a REGISTRY_MAP target are returned unchanged, which also
// makes Rewrite idempotent.
func (r *Rewriter) Rewrite(image string) (string, bool) {
	if image == "" || !r.Enabled() {
		return image, false
	}
	// A cluster runs the same few hundred images in every replica of every
	// rollout, so a small memo answers most calls without the regular
	// expressions of reference parsing.
	if out, ok := r.memo.get(image); ok {
		return out, out != image
	}
	out, changed := r.rewrite(image)
	r.memo.put(image, out)
	return out, changed
}

func (r *Rewriter) rewrite(image string) (string, bool) {
	folded := foldHost(image)
	for _, prefix := range r.keep {
		if strings.HasPrefix(folded, prefix) {
			return image, false
		}
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return image, false
	}
	out, ok := r.mapped(named)
	if !ok {
		if r.registry == "" {
			return image, false
		}
		out = r.core(image)
	}
	// A rewrite that no longer parses (a name pushed past 255 characters by a
	// long registry path) would make the Pod unpullable; keeping the original
	// is the lesser harm and the same as what happens without the webhook.
	if out == image {
		return image, false
	}
	if _, err := reference.ParseNormalizedNamed(out); err != nil {
		return image, false
	}
	return out, true
}

// mapped applies REGISTRY_MAP: the normalised path under the target of the
// image's registry, or under the "*" target.
func (r *Rewriter) mapped(named reference.Named) (string, bool) {
	target, ok := r.bySource[strings.ToLower(reference.Domain(named))]
	if !ok {
		target = r.fallback
	}
	if target == "" {
		return "", false
	}
	var b strings.Builder
	b.WriteString(target)
	b.WriteByte('/')
	b.WriteString(reference.Path(named))
	if t, ok := named.(reference.Tagged); ok {
		b.WriteByte(':')
		b.WriteString(t.Tag())
	}
	if d, ok := named.(reference.Digested); ok {
		b.WriteByte('@')
		b.WriteString(d.Digest().String())
	}
	return b.String(), true
}

// core is the older webhook's rule, kept for compatibility: the first path
// component is replaced with REGISTRY when it names a registry host, and
// REGISTRY is prepended otherwise. Tag and digest stay as written.
func (r *Rewriter) core(image string) string {
	first, rest, found := strings.Cut(image, "/")
	if found && IsRegistryHost(first) {
		return r.registry + "/" + rest
	}
	return r.registry + "/" + image
}

// foldHost lower-cases the first path component: registry host names are
// case-insensitive, so "Registry.Example.com/x" is already on
// "registry.example.com". Paths are not folded; they are lower case in any
// valid reference. It does not allocate when there is nothing to fold.
func foldHost(s string) string {
	end := strings.IndexByte(s, '/')
	if end < 0 {
		end = len(s)
	}
	for i := 0; i < end; i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s[:end]) + s[end:]
		}
	}
	return s
}

// IsRegistryHost reports whether the first component of an image reference
// names a registry rather than a Docker Hub namespace; this is the test the
// container runtimes themselves apply.
func IsRegistryHost(component string) bool {
	return strings.ContainsAny(component, ".:") || component == "localhost"
}

// ValidateRegistry checks a REGISTRY value or a REGISTRY_MAP target: a
// registry host, optionally with a port and a path, and nothing else.
func ValidateRegistry(registry string) error {
	if registry == "" {
		return errors.New("is empty")
	}
	first, _, _ := strings.Cut(registry, "/")
	if !IsRegistryHost(first) {
		return fmt.Errorf("%q does not start with a registry host: it needs a '.', a ':port' or to be 'localhost', otherwise container runtimes read it as a Docker Hub namespace", registry)
	}
	// Two components after the registry: with one, the library would
	// normalise "docker.io/x" to "docker.io/library/x" and call it
	// non-canonical, rejecting Docker Hub itself.
	probe := registry + "/x/x"
	named, err := reference.ParseNamed(probe)
	if err != nil {
		return fmt.Errorf("%q is not a registry host with an optional path: %w", registry, err)
	}
	if named.String() != probe {
		return fmt.Errorf("%q is not a registry host with an optional path", registry)
	}
	return nil
}

// Rule is one REGISTRY_MAP entry.
type Rule struct {
	Source string // a registry host ("docker.io", "quay.io", "host:5000") or "*"
	Target string // registry host with an optional path
}

// ParseRegistryMap parses REGISTRY_MAP entries of the form source=target.
// Sources are normalised the way image references are (lower case,
// index.docker.io is docker.io); a source given twice is an error rather than
// a silent override.
func ParseRegistryMap(entries []string) ([]Rule, error) {
	var rules []Rule
	seen := map[string]bool{}
	var errs []error
	for _, e := range entries {
		source, target, ok := strings.Cut(e, "=")
		source, target = strings.ToLower(strings.TrimSpace(source)), strings.TrimSuffix(strings.TrimSpace(target), "/")
		if !ok || source == "" || target == "" {
			errs = append(errs, fmt.Errorf("%q is not of the form source=target", e))
			continue
		}
		if source == "index.docker.io" {
			source = "docker.io"
		}
		if source != "*" && (strings.Contains(source, "/") || ValidateRegistry(source) != nil) {
			errs = append(errs, fmt.Errorf("%q: source %q is not a registry host (such as docker.io, quay.io, host:5000) or *", e, source))
			continue
		}
		if err := ValidateRegistry(target); err != nil {
			errs = append(errs, fmt.Errorf("%q: target %w", e, err))
			continue
		}
		if seen[source] {
			errs = append(errs, fmt.Errorf("%q: source %q is mapped twice", e, source))
			continue
		}
		seen[source] = true
		rules = append(rules, Rule{Source: source, Target: target})
	}
	return rules, errors.Join(errs...)
}
