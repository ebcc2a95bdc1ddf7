// Package images decides where a container image must be pulled from. It is
// pure string work over github.com/distribution/reference, the parser the
// kubelet and container runtimes use: no I/O, no Kubernetes types, so every
// rule can be tested and fuzzed on its own.
//
// Every decision is made on the name the runtime pulls, not on the string as
// written: "nginx", "docker.io/nginx" and "index.docker.io/library/nginx" are
// one image, and "Evil/x" names the registry host "Evil" (a first component
// with an upper-case letter is a host to the runtime).
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

// MaxReferenceLength is longer than any reference a runtime can pull: a
// registry host is a DNS name (at most 253 characters) with a port, the
// repository path at most 255 characters (reference.RepositoryNameTotalLengthMax),
// a tag at most 128 and a digest at most "sha512:" and 128 hex digits, with
// their separators. Longer strings are refused before they reach the parser
// or the memo, so a Pod author cannot make either do work or hold memory in
// proportion to what they send.
const MaxReferenceLength = 253 + len(":65535") + 1 + reference.RepositoryNameTotalLengthMax + 1 + 128 + 1 + len("sha512:") + 128

// Rewriter maps an image reference to the registry it must be pulled from.
// Its rules are immutable after New; it is safe for concurrent use.
type Rewriter struct {
	memo *memo // results of Rewrite; parsing a reference is most of its cost
	plan Plan

	registry string            // REGISTRY as configured, without a trailing "/"; "" turns the core rule off
	bySource map[string]string // REGISTRY_MAP: canonical source domain -> target
	fallback string            // REGISTRY_MAP "*" target; "" when none
	// allowed holds the canonical prefixes images may be pulled from as
	// they are: REGISTRY, the IGNORED_REGISTRIES entries and every
	// REGISTRY_MAP target.
	allowed []string
}

// Plan is the image configuration, parsed and validated once: where images
// go and what is left alone. The webhook's Rewriter, `mutator policy`'s CEL
// and `mutator node-config` are all built from one Plan, so that they cannot
// read the settings differently.
type Plan struct {
	// Registry is REGISTRY without a trailing "/"; "" turns the core rule off.
	Registry string
	// Ignored are the IGNORED_REGISTRIES entries as written, without a
	// trailing "/" (CanonicalPrefix gives their comparison form).
	Ignored []string
	// Map is REGISTRY_MAP in the order written; a Source of "*" is the
	// fallback.
	Map []Rule
}

// ParsePlan parses REGISTRY, IGNORED_REGISTRIES and the REGISTRY_MAP entries
// ("source=target"), reporting every invalid value at once.
func ParsePlan(registry string, ignored, mapping []string) (Plan, error) {
	p := Plan{Registry: strings.TrimSuffix(registry, "/")}
	var errs []error
	// A REGISTRY of "/" trims to "", which would turn the core rule off
	// without a word: a value that is set is validated, even when empty
	// after trimming.
	if registry != "" {
		if err := ValidateRegistry(p.Registry); err != nil {
			errs = append(errs, fmt.Errorf("registry %q: %w", registry, err))
		}
	}
	for _, prefix := range ignored {
		if prefix = strings.TrimSuffix(prefix, "/"); prefix == "" {
			continue
		}
		if _, err := CanonicalPrefix(prefix); err != nil {
			errs = append(errs, fmt.Errorf("ignored registry %q: %w", prefix, err))
			continue
		}
		p.Ignored = append(p.Ignored, prefix)
	}
	rules, err := ParseRegistryMap(mapping)
	if err != nil {
		errs = append(errs, err)
	}
	p.Map = rules
	if err := errors.Join(errs...); err != nil {
		return Plan{}, err
	}
	return p, nil
}

// Targets returns REGISTRY and every REGISTRY_MAP target, in that order,
// without repeats: the registries images are rewritten to.
func (p Plan) Targets() []string {
	var out []string
	seen := map[string]bool{"": true}
	for _, t := range append([]string{p.Registry}, p.mapTargets()...) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

func (p Plan) mapTargets() []string {
	out := make([]string, 0, len(p.Map))
	for _, r := range p.Map {
		out = append(out, r.Target)
	}
	return out
}

// AllowedPrefixes returns the canonical prefixes (CanonicalPrefix) images
// may be pulled from as they are: REGISTRY, the IGNORED_REGISTRIES entries
// and every REGISTRY_MAP target, in that order.
func (p Plan) AllowedPrefixes() []string {
	var out []string
	add := func(prefix string) {
		c, err := CanonicalPrefix(prefix)
		if err != nil {
			// ParsePlan validated every entry, and ValidateRegistry is
			// stricter than CanonicalPrefix.
			panic(fmt.Sprintf("images: validated prefix %q has no canonical form: %v", prefix, err))
		}
		out = append(out, c)
	}
	if p.Registry != "" {
		add(p.Registry)
	}
	for _, prefix := range p.Ignored {
		add(prefix)
	}
	for _, rule := range p.Map {
		add(rule.Target)
	}
	return out
}

// Enabled reports whether any rule of the plan can change an image.
func (p Plan) Enabled() bool { return p.Registry != "" || len(p.Map) > 0 }

// New parses the settings into a Plan and compiles it: registry is REGISTRY,
// ignored IGNORED_REGISTRIES and mapping the REGISTRY_MAP entries.
func New(registry string, ignored, mapping []string) (*Rewriter, error) {
	p, err := ParsePlan(registry, ignored, mapping)
	if err != nil {
		return nil, err
	}
	return Compile(p), nil
}

// Compile builds the Rewriter of a plan ParsePlan returned.
func Compile(p Plan) *Rewriter {
	r := &Rewriter{plan: p, registry: p.Registry, allowed: p.AllowedPrefixes(), memo: newMemo(memoEntries, memoBytes)}
	for _, rule := range p.Map {
		if rule.Source == "*" {
			r.fallback = rule.Target
			continue
		}
		if r.bySource == nil {
			r.bySource = make(map[string]string, len(p.Map))
		}
		r.bySource[rule.Source] = rule.Target
	}
	return r
}

// Plan returns the plan the Rewriter was compiled from.
func (r *Rewriter) Plan() Plan { return r.plan }

// Enabled reports whether any rule can change an image.
func (r *Rewriter) Enabled() bool {
	return r.registry != "" || r.fallback != "" || len(r.bySource) > 0
}

// Rewrite returns the image to pull instead of image; it is image itself
// when nothing changes. Images that the runtime cannot parse (so cannot
// pull), images under an allowed prefix, and images whose registry the
// configuration leaves alone on purpose (a REGISTRY_MAP without "*" and no
// REGISTRY) come back unchanged, which also makes Rewrite idempotent.
//
// The error is a *RefusedError when image can be pulled but no valid
// reference under an allowed registry exists for it: the caller must refuse
// the object (or warn, in audit mode) rather than let it pull from elsewhere.
func (r *Rewriter) Rewrite(image string) (string, error) {
	if image == "" || !r.Enabled() {
		return image, nil
	}
	if len(image) > MaxReferenceLength {
		return image, &RefusedError{Image: image, Reason: fmt.Sprintf("it is %d characters long, longer than any reference a runtime can pull (%d)", len(image), MaxReferenceLength)}
	}
	// A cluster runs the same few hundred images in every replica of every
	// rollout, so a small memo answers most calls without the regular
	// expressions of reference parsing.
	if e, ok := r.memo.get(image); ok {
		return e.out, e.err
	}
	out, err := r.rewrite(image)
	r.memo.put(image, memoEntry{out: out, err: err})
	return out, err
}

func (r *Rewriter) rewrite(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		// The kubelet refuses to pull what it cannot parse
		// (InvalidImageName), so leaving it is safe.
		return image, nil
	}
	if r.Allowed(named) {
		return image, nil
	}
	out, ok := r.mapped(named)
	if !ok {
		if r.registry == "" {
			// A REGISTRY_MAP without "*" and no REGISTRY: registries
			// not in the map are left alone by configuration.
			return image, nil
		}
		out = r.core(image, named)
	}
	rewritten, err := reference.ParseNormalizedNamed(out)
	if err != nil {
		return image, &RefusedError{Image: image, Rewritten: out, Reason: fmt.Sprintf("its rewrite %s is not a valid reference: %v", Quote(out), err)}
	}
	if !r.Allowed(rewritten) {
		// Unreachable by construction; checked because keeping an
		// image from elsewhere is the one outcome that must not happen.
		return image, &RefusedError{Image: image, Rewritten: out, Reason: fmt.Sprintf("its rewrite %s is not under an allowed registry", Quote(out))}
	}
	return out, nil
}

// Allowed reports whether named lies under REGISTRY, an IGNORED_REGISTRIES
// entry or a REGISTRY_MAP target, compared on the canonical name at
// path-component boundaries.
func (r *Rewriter) Allowed(named reference.Named) bool {
	name := Canonical(named)
	for _, p := range r.allowed {
		if Under(name, p) {
			return true
		}
	}
	return false
}

// mapped applies REGISTRY_MAP: the normalised path under the target of the
// image's registry, or under the "*" target.
func (r *Rewriter) mapped(named reference.Named) (string, bool) {
	target, ok := r.bySource[CanonicalDomain(reference.Domain(named))]
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

// core is the older webhook's rule, kept for compatibility: a first path
// component that names a registry host is replaced with REGISTRY, and
// REGISTRY is prepended otherwise. Tag and digest stay as written. Whether
// the first component is a host is the parser's decision, so that the rule
// agrees with the runtime ("Evil/x" and "LOCALHOST/x" are hosts).
func (r *Rewriter) core(image string, named reference.Named) string {
	first, rest, found := strings.Cut(image, "/")
	if found && (first == reference.Domain(named) || first == legacyDockerHub) {
		return r.registry + "/" + rest
	}
	return r.registry + "/" + image
}

// legacyDockerHub is Docker Hub's old name, which the parser rewrites to
// docker.io.
const legacyDockerHub = "index.docker.io"

// Canonical returns the name the runtime pulls named from, in the form
// prefixes are compared in: the registry host lower-cased (host names are
// case-insensitive) and without an explicit :443 (the HTTPS default, the
// same registry), then the normalised repository path.
func Canonical(named reference.Named) string {
	return CanonicalDomain(reference.Domain(named)) + "/" + reference.Path(named)
}

// CanonicalDomain is the comparison form of a registry host: lower case,
// Docker Hub's legacy name as docker.io, and no explicit :443.
func CanonicalDomain(domain string) string {
	domain = strings.TrimSuffix(strings.ToLower(domain), ":443")
	if domain == legacyDockerHub {
		return "docker.io"
	}
	return domain
}

// CanonicalPrefix returns the comparison form of a registry or
// registry/path prefix (REGISTRY, an IGNORED_REGISTRIES entry, a REGISTRY_MAP
// target), normalised the way image names are: "docker.io/library" covers
// "nginx", "registry.k8s.io/pause" covers "registry.k8s.io/pause:3.10". A
// first component that is not a registry host is a Docker Hub namespace, as
// it would be in an image ("myorg" is docker.io/myorg).
func CanonicalPrefix(prefix string) (string, error) {
	if prefix == "" {
		return "", errors.New("is empty")
	}
	// Two components after the prefix: with one, the parser would read a
	// bare "docker.io" prefix as Docker Hub's "library" namespace.
	const probe = "/x/x"
	named, err := reference.ParseNormalizedNamed(prefix + probe)
	if err != nil {
		return "", fmt.Errorf("is not a registry host or registry/path prefix (no tag or digest, lower-case path): %w", err)
	}
	return strings.TrimSuffix(Canonical(named), probe), nil
}

// Under reports whether the canonical name lies under the canonical prefix:
// equal to it, or continuing it after a "/". "registry.k8s.io/pause" covers
// itself and "registry.k8s.io/pause/x", not "registry.k8s.io/pausex".
func Under(name, prefix string) bool {
	return name == prefix || len(name) > len(prefix) && name[len(prefix)] == '/' && strings.HasPrefix(name, prefix)
}

// ValidateRegistry checks a REGISTRY value or a REGISTRY_MAP target: a
// registry host, optionally with a port and a path, and nothing else.
func ValidateRegistry(registry string) error {
	if registry == "" {
		return errors.New("is empty")
	}
	first, _, _ := strings.Cut(registry, "/")
	if !strings.ContainsAny(first, ".:") && first != "localhost" {
		// Stricter than the runtime (which also takes "Mirror" as a host):
		// an upper-case single label as the target registry is almost
		// certainly a typo for a Docker Hub namespace.
		return fmt.Errorf("%q does not start with a registry host: it needs a '.', a ':port' or to be 'localhost', otherwise container runtimes read it as a Docker Hub namespace", registry)
	}
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

// RefusedError says why no allowed registry can serve an image.
type RefusedError struct {
	Image     string // the image as written
	Rewritten string // the rewrite that was rejected, if one was made
	Reason    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("image %s cannot be pulled from an allowed registry: %s", Quote(e.Image), e.Reason)
}

// quoteMax bounds how much of an image a message quotes: messages travel in
// AdmissionResponses, warnings, logs and events, and an image can be
// kilobytes long.
const quoteMax = 100

// Quote quotes s for a message, shortened to its first characters and its
// length when it is long.
func Quote(s string) string { return QuoteN(s, quoteMax) }

// QuoteN is Quote with a bound of n characters.
func QuoteN(s string, n int) string {
	if len(s) <= n {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d characters)", s[:n], len(s))
}

// Rule is one REGISTRY_MAP entry.
type Rule struct {
	Source string // a canonical registry host ("docker.io", "quay.io", "host:5000") or "*"
	Target string // registry host with an optional path
}

// sourceHost reports whether source is a registry host as the runtime reads
// one at the start of an image reference, and returns its comparison form.
// The runtime's parser decides, so every host an image can name is a valid
// source: "somehost:443" and "SomeHost" too (both the registry "somehost",
// which an image can only reach under one of those spellings).
func sourceHost(source string) (string, bool) {
	if source == "" || strings.Contains(source, "/") {
		return "", false
	}
	named, err := reference.ParseNormalizedNamed(source + "/x")
	if err != nil {
		return "", false
	}
	canonical := CanonicalDomain(source)
	if CanonicalDomain(reference.Domain(named)) != canonical {
		// The parser read it as a Docker Hub namespace ("quay/x").
		return "", false
	}
	return canonical, true
}

// String prints the rule as a REGISTRY_MAP entry that parses back to it. A
// source whose comparison form is a single label ("somehost", from
// "somehost:443") gets its ":443" back: alone it would name a Docker Hub
// namespace.
func (r Rule) String() string {
	source := r.Source
	if source != "*" && !strings.ContainsAny(source, ".:") && source != "localhost" {
		source += ":443"
	}
	return source + "=" + r.Target
}

// ParseRegistryMap parses REGISTRY_MAP entries of the form source=target.
// Sources are normalised the way image registries are compared (lower case,
// index.docker.io is docker.io, no :443); a source given twice is an error
// rather than a silent override.
func ParseRegistryMap(entries []string) ([]Rule, error) {
	var rules []Rule
	seen := map[string]bool{}
	var errs []error
	for _, e := range entries {
		source, target, ok := strings.Cut(e, "=")
		source, target = strings.TrimSpace(source), strings.TrimSuffix(strings.TrimSpace(target), "/")
		if !ok || source == "" || target == "" {
			errs = append(errs, fmt.Errorf("%q is not of the form source=target", e))
			continue
		}
		if source != "*" {
			canonical, ok := sourceHost(source)
			if !ok {
				errs = append(errs, fmt.Errorf("%q: source %q is not a registry host (such as docker.io, quay.io, host:5000) or *", e, source))
				continue
			}
			source = canonical
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
