package images_test

import (
	"path"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/oracle"
)

// fuzzConfig is one fixed configuration FuzzRewrite checks images against.
type fuzzConfig struct {
	name     string
	registry string   // REGISTRY
	ignored  []string // IGNORED_REGISTRIES
	mapping  []string // REGISTRY_MAP
}

// fuzzConfigs cover the core rule (REGISTRY with and without a path, with a
// port, IPv4 and IPv6 hosts), ignored prefixes and REGISTRY_MAP with and
// without "*". FuzzRewrite's cfg argument selects one; a cfg past the end
// uses the fuzzed registry argument as REGISTRY instead.
var fuzzConfigs = []fuzzConfig{
	{"path", "registry.example.com/mirror", []string{"gcr.io", "quay.io/myorg/"}, nil},
	{"host only", "registry.example.com", nil, nil},
	{"host:port", "localhost:5000", []string{"registry.k8s.io"}, nil},
	{"ipv4:port/path", "10.0.0.1:5000/a/b", nil, nil},
	{"ipv6:port/path", "[fd00::1]:5000/mirror", []string{"[::1]:5000"}, nil},
	{"map only", "", nil, []string{"quay.io=harbor.example.com/quay", "ghcr.io=harbor.example.com:8443/ghcr"}},
	{"map docker hub", "", []string{"docker.io/library/busybox"}, []string{"Index.Docker.IO=harbor.example.com/dockerhub", "quay.io=harbor.example.com/quay"}},
	{"map+star+registry", "registry.example.com/mirror", []string{"gcr.io"}, []string{"quay.io=harbor.example.com/quay", "*=star.example.com/all"}},
	{"map+registry", "registry.example.com/mirror", nil, []string{"old.example.com:5000=new.example.com", "[::1]:5000=localhost/v6"}},
	{"star only", "", []string{"docker.io/library"}, []string{"*=localhost:5001"}},
}

// builtConfig is a Rewriter with the prefixes and targets it was built from.
type builtConfig struct {
	fuzzConfig
	r       *images.Rewriter
	targets []string // REGISTRY and every map target, without trailing "/"
	keep    []string // targets and ignored prefixes, without trailing "/"
}

func buildConfig(c fuzzConfig) (*builtConfig, error) {
	r, err := images.New(c.registry, c.ignored, c.mapping)
	if err != nil {
		return nil, err
	}
	rules, err := images.ParseRegistryMap(c.mapping)
	if err != nil {
		return nil, err
	}
	b := &builtConfig{fuzzConfig: c, r: r}
	if reg := strings.TrimSuffix(c.registry, "/"); reg != "" {
		b.targets = append(b.targets, reg)
	}
	for _, rule := range rules {
		b.targets = append(b.targets, rule.Target)
	}
	b.keep = append(b.keep, b.targets...)
	for _, p := range c.ignored {
		if p = strings.TrimSuffix(p, "/"); p != "" {
			b.keep = append(b.keep, p)
		}
	}
	return b, nil
}

// policy is the configuration as the oracle reads it.
func (b *builtConfig) policy() oracle.Policy {
	return oracle.Policy{Registry: b.registry, Ignored: b.ignored, Map: b.mapping}
}

// FuzzRewrite checks the properties every rewrite must have, judged by the
// runtime's parser (package oracle), not by the code under test:
//
//	(a) Rewrite never panics, and a refused image comes back unchanged;
//	(b) an image the runtime would pull from under REGISTRY, an ignored
//	    prefix or a map target is unchanged and not refused;
//	(c) an image that does not parse (so cannot be pulled) is left alone;
//	    one that parses gives an output that parses, or is refused;
//	(d) Rewrite is idempotent;
//	(e) the provenance invariant: unless refused, what comes back is
//	    permitted (oracle.Policy.Permits);
//	(f) a changed image keeps the last component of its repository path,
//	    its tag and its digest.
func FuzzRewrite(f *testing.F) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	seeds := []string{
		"nginx", "nginx:1.27", "library/nginx", "docker.io/library/nginx:1", "index.docker.io/x",
		"quay.io/argoproj/argocd:v2.13.1", "quay.io/myorg/app:1", "quay.io/myorgx/app",
		"ghcr.io/o/app:1@" + dgst, "nginx@" + dgst, "nginx:1.27@" + dgst,
		"localhost/x", "localhost:5000/x:1", "myhost:5000/team/x:1", "1.2.3.4:5000/x",
		"[::1]:5000/x:1", "[fd00::1]:5000/mirror/x", "[fd00::1]/x",
		"registry.example.com/mirror/nginx:1", "registry.example.com/mirrorx/y",
		"registry.example.com.evil.com/x", "registry.example.com:443/mirror/x",
		"harbor.example.com/quay/a/b", "star.example.com/all/x", "old.example.com:5000/a:1",
		"Nginx:1", "Upper/Case", "a b", "::", "", "nginx@sha256:abc",
		"Evil/payload:1", "LOCALHOST/evil:1", "LocalHost/x:1", "EVIL/x@" + dgst,
		"registry.k8s.io/pause:3.10", "registry.k8s.io/pausex",
		"a/" + strings.Repeat("b", 250) + ":1", "quay.io/" + strings.Repeat("a", 240),
		strings.Repeat("x", 64) + ":" + strings.Repeat("t", 128),
		strings.Repeat("h", 300) + ".io/x:1",
	}
	for i, s := range seeds {
		f.Add(s, uint8(i%len(fuzzConfigs)), "")
	}
	f.Add("nginx:1", uint8(len(fuzzConfigs)), "Mirror.Example.com:443/x")
	f.Add("mirror.example.com/p/a", uint8(len(fuzzConfigs)+1), "mirror.example.com/p")

	// A configuration New rejects is reported once and its inputs are
	// skipped, so that the other configurations are still fuzzed;
	// FuzzParseRegistryMap and the unit tests report the rejection itself.
	built := make([]*builtConfig, len(fuzzConfigs))
	buildErrs := make([]error, len(fuzzConfigs))
	for i, c := range fuzzConfigs {
		built[i], buildErrs[i] = buildConfig(c)
		if buildErrs[i] != nil {
			f.Logf("config %q is rejected, its inputs are skipped: %v", c.name, buildErrs[i])
		}
	}

	f.Fuzz(func(t *testing.T, image string, cfg uint8, registry string) {
		var c *builtConfig
		if int(cfg) < len(built) {
			if c = built[cfg]; c == nil {
				t.Skipf("config %q is rejected: %v", fuzzConfigs[cfg].name, buildErrs[cfg])
			}
		} else {
			// A fuzzed REGISTRY: every value New accepts must give a
			// Rewriter with the same properties.
			fc := fuzzConfig{name: "fuzzed", registry: registry, ignored: []string{"gcr.io"}}
			if cfg%2 == 1 {
				fc.mapping = []string{"quay.io=harbor.example.com/quay"}
			}
			var err error
			if c, err = buildConfig(fc); err != nil {
				return
			}
		}
		checkRewrite(t, c, image)
	})
}

func checkRewrite(t *testing.T, c *builtConfig, image string) {
	t.Helper()
	out, err := c.r.Rewrite(image) // (a)
	if err != nil && out != image {
		t.Fatalf("%s: Rewrite(%q) = %q, %v: refused images must come back unchanged", c.name, image, out, err)
	}
	name, parses := oracle.Name(image)
	for _, p := range c.keep { // (b)
		prefix, ok := oracle.Prefix(p)
		if ok && parses && oracle.Under(name, prefix) && (out != image || err != nil) {
			t.Fatalf("%s: Rewrite(%q) = %q, %v, but the image is already under %q", c.name, image, out, err, p)
		}
	}
	if !parses && len(image) <= images.MaxReferenceLength && (out != image || err != nil) { // (c)
		t.Fatalf("%s: Rewrite(%q) = %q, %v although the runtime cannot parse the image", c.name, image, out, err)
	}
	if err != nil {
		if !parses && len(image) <= images.MaxReferenceLength {
			t.Fatalf("%s: Rewrite(%q) refused an image the runtime cannot pull anyway: %v", c.name, image, err)
		}
		return
	}
	if parses {
		if _, ok := oracle.Name(out); !ok {
			t.Fatalf("%s: Rewrite(%q) = %q, which does not parse", c.name, image, out)
		}
	}
	if again, err := c.r.Rewrite(out); again != out || err != nil { // (d)
		t.Fatalf("%s: Rewrite(%q) = %q, but Rewrite(%q) = %q, %v", c.name, image, out, out, again, err)
	}
	if !c.policy().Permits(out) { // (e)
		t.Fatalf("%s: Rewrite(%q) = %q, which the configuration does not permit", c.name, image, out)
	}
	if out == image {
		return
	}
	in, _ := reference.ParseNormalizedNamed(image) // (f)
	outNamed, _ := reference.ParseNormalizedNamed(out)
	if a, b := path.Base(reference.Path(in)), path.Base(reference.Path(outNamed)); a != b {
		t.Fatalf("%s: Rewrite(%q) = %q changed the repository name %q to %q", c.name, image, out, a, b)
	}
	if tag(in) != tag(outNamed) {
		t.Fatalf("%s: Rewrite(%q) = %q changed the tag %q to %q", c.name, image, out, tag(in), tag(outNamed))
	}
	if digestOf(in) != digestOf(outNamed) {
		t.Fatalf("%s: Rewrite(%q) = %q changed the digest %q to %q", c.name, image, out, digestOf(in), digestOf(outNamed))
	}
}

func tag(n reference.Named) string {
	if t, ok := n.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

func digestOf(n reference.Named) string {
	if d, ok := n.(reference.Digested); ok {
		return d.Digest().String()
	}
	return ""
}

// wellFormedMap reports whether every entry is source=target where source is
// "*" or the registry host of some image reference (the domain
// reference.ParseNormalizedNamed gives for source+"/x"), target passes
// ValidateRegistry, and no source is given twice, after the normalisation
// ParseRegistryMap documents (white space trimmed, source lower-cased,
// index.docker.io is docker.io, no :443, one trailing "/" dropped from target).
func wellFormedMap(entries []string) bool {
	seen := map[string]bool{}
	for _, e := range entries {
		source, target, ok := strings.Cut(e, "=")
		source, target = strings.ToLower(strings.TrimSpace(source)), strings.TrimSuffix(strings.TrimSpace(target), "/")
		if !ok || source == "" || images.ValidateRegistry(target) != nil {
			return false
		}
		if source == "index.docker.io" {
			source = "docker.io"
		}
		if source != "*" {
			// A host as the runtime reads one: a '.', a ':port',
			// "localhost" or an upper-case letter (the source was
			// lower-cased above, so the case is checked on the original).
			original := strings.TrimSpace(strings.SplitN(e, "=", 2)[0])
			if strings.Contains(source, "/") || !strings.ContainsAny(source, ".:") && source != "localhost" && original == source {
				return false
			}
			named, err := reference.ParseNormalizedNamed(original + "/x")
			if err != nil || strings.ToLower(reference.Domain(named)) != source {
				return false
			}
			if source = strings.TrimSuffix(source, ":443"); source == "index.docker.io" {
				source = "docker.io"
			}
		}
		if seen[source] {
			return false
		}
		seen[source] = true
	}
	return true
}

// FuzzParseRegistryMap checks REGISTRY_MAP parsing on comma-separated entries:
// it never panics; on success there is one rule per entry, every source is
// "*" or a lower-case registry host given once, every target passes
// ValidateRegistry and has no trailing "/", and printing the rules back and
// parsing them again gives the same rules; images.New accepts the entries
// exactly when ParseRegistryMap does; and a Rewriter built from them sends
// every image it changes under one of the targets.
func FuzzParseRegistryMap(f *testing.F) {
	for _, s := range []string{
		"", ",", "garbage", "=", "quay.io=", "=harbor.example.com",
		" Quay.IO = harbor.example.com/quay/ ",
		"index.docker.io=a.example.com,quay.io=a.example.com,docker.io=b.example.com",
		"quay.io=a.example.com,QUAY.IO=b.example.com",
		"*=a.example.com,*=b.example.com",
		"h.example.com:5000=a.example.com,*=b.example.com:443/all",
		"localhost:5000=localhost:5001/x",
		"[::1]:5000=[fd00::1]:5000/v6,[FD00::2]=localhost",
		"quay.io/org=harbor.example.com/quay", "quay=harbor.example.com/quay",
		"quay.io=harbor/quay", "quay.io=harbor.example.com/quay:v1",
		"quay.io=harbor.example.com/Quay", "quay.io=Harbor.Example.com/quay",
		"quay.io=harbor.example.com//quay", "quay.io=harbor.example.com/quay//",
		"a.b=c.d=e.f", "quay.io=harbor.example.com@sha256:abc",
		"quay.io=h.example.com/" + strings.Repeat("p", 250),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var entries []string
		if s != "" {
			entries = strings.Split(s, ",")
		}
		rules, err := images.ParseRegistryMap(entries)
		_, newErr := images.New("", nil, entries)
		if (err == nil) != (newErr == nil) {
			t.Fatalf("ParseRegistryMap(%q) error %v, but images.New error %v", entries, err, newErr)
		}
		_, newErr = images.New("registry.example.com/mirror", []string{"gcr.io"}, entries)
		if (err == nil) != (newErr == nil) {
			t.Fatalf("ParseRegistryMap(%q) error %v, but images.New with a REGISTRY error %v", entries, err, newErr)
		}
		if err != nil {
			// Completeness: a map whose every source is a registry host
			// that image references can carry, given once, and whose
			// every target is valid must be accepted.
			if wellFormedMap(entries) {
				t.Fatalf("ParseRegistryMap(%q) rejects a well-formed map: %v", entries, err)
			}
			return
		}
		if len(rules) != len(entries) {
			t.Fatalf("ParseRegistryMap(%q) = %d rules for %d entries", entries, len(rules), len(entries))
		}
		seen := map[string]bool{}
		printed := make([]string, len(rules))
		for i, r := range rules {
			if seen[r.Source] {
				t.Fatalf("ParseRegistryMap(%q): source %q twice", entries, r.Source)
			}
			seen[r.Source] = true
			if r.Source != strings.ToLower(r.Source) || r.Source != strings.TrimSpace(r.Source) {
				t.Fatalf("ParseRegistryMap(%q): source %q is not normalised", entries, r.Source)
			}
			if r.Source == "index.docker.io" {
				t.Fatalf("ParseRegistryMap(%q): source %q is not normalised to docker.io", entries, r.Source)
			}
			if r.Source != "*" {
				// The runtime's parser must read the source as the
				// registry host of an image.
				printedSource, _, _ := strings.Cut(r.String(), "=")
				named, err := reference.ParseNormalizedNamed(printedSource + "/x")
				if strings.Contains(r.Source, "/") || err != nil || images.CanonicalDomain(reference.Domain(named)) != r.Source {
					t.Fatalf("ParseRegistryMap(%q): source %q is not a registry host", entries, r.Source)
				}
			}
			if err := images.ValidateRegistry(r.Target); err != nil {
				t.Fatalf("ParseRegistryMap(%q): target %q: %v", entries, r.Target, err)
			}
			if strings.HasSuffix(r.Target, "/") {
				t.Fatalf("ParseRegistryMap(%q): target %q ends in /", entries, r.Target)
			}
			printed[i] = r.String()
		}
		again, err := images.ParseRegistryMap(printed)
		if err != nil {
			t.Fatalf("ParseRegistryMap(%q) = %q, which does not parse again: %v", entries, printed, err)
		}
		for i := range again {
			if again[i] != rules[i] {
				t.Fatalf("ParseRegistryMap(%q) = %+v, printed and parsed again %+v", entries, rules, again)
			}
		}
		b, err := buildConfig(fuzzConfig{name: "fuzzed map", mapping: entries})
		if err != nil {
			t.Fatal(err)
		}
		for _, img := range []string{"nginx:1", "quay.io/a/b:1", "localhost:5000/x", "[::1]:5000/x", "h.example.com:5000/y"} {
			checkRewrite(t, b, img)
		}
	})
}
