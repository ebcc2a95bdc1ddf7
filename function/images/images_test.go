package images_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/mutator-dev/mutator/function/images"
)

const (
	mirror = "registry.example.com/mirror"
	digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// newRewriter builds a Rewriter and fails the test when New does.
func newRewriter(t testing.TB, registry string, ignored, mapping []string) *images.Rewriter {
	t.Helper()
	r, err := images.New(registry, ignored, mapping)
	if err != nil {
		t.Fatalf("images.New(%q, %q, %q): %v", registry, ignored, mapping, err)
	}
	return r
}

// assertRewrite checks one Rewrite call and its idempotency. want == "" with
// refused set means the image must be refused (and returned unchanged).
func assertRewrite(t *testing.T, r *images.Rewriter, in, want string, refused bool) {
	t.Helper()
	got, err := r.Rewrite(in)
	if refused {
		var re *images.RefusedError
		if !errors.As(err, &re) || got != in {
			t.Errorf("Rewrite(%q) = %q, %v; want it refused and unchanged", in, got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Errorf("Rewrite(%q) = %q, %v; want %q", in, got, err, want)
	}
	if again, err := r.Rewrite(got); again != got || err != nil {
		t.Errorf("Rewrite(Rewrite(%q)) = %q, %v; want %q unchanged", in, again, err, got)
	}
	if got != in {
		if _, err := reference.ParseNormalizedNamed(got); err != nil {
			t.Errorf("Rewrite(%q) = %q, which does not parse: %v", in, got, err)
		}
	}
}

func TestRewriteCoreRule(t *testing.T) {
	t.Parallel()
	// The 255-character limit applies to the path after the registry host:
	// "a/" + 250 chars is 252 long; under the mirror it is "mirror/a/..." = 259.
	long := "a/" + strings.Repeat("b", 250)
	tests := []struct {
		name     string
		registry string
		ignored  []string
		in       string
		want     string // "" when the image must be refused
	}{
		{"single component with tag", mirror, nil, "a:v", mirror + "/a:v"},
		{"single component without tag", mirror, nil, "nginx", mirror + "/nginx"},
		{"namespace is prepended", mirror, nil, "a/b:v", mirror + "/a/b:v"},
		{"deep namespace is prepended", mirror, nil, "org/team/app:1", mirror + "/org/team/app:1"},
		{"host with dot replaced", mirror, nil, "a.b/c:v", mirror + "/c:v"},
		{"host with dot and path replaced", mirror, nil, "quay.io/argoproj/argocd:v2", mirror + "/argoproj/argocd:v2"},
		{"localhost with port replaced", mirror, nil, "localhost:5000/x", mirror + "/x"},
		{"localhost without port replaced", mirror, nil, "localhost/x:1", mirror + "/x:1"},
		{"host with port replaced", mirror, nil, "myhost:5000/team/x:1", mirror + "/team/x:1"},
		{"IPv4 with port replaced", mirror, nil, "1.2.3.4:5000/x", mirror + "/x"},
		{"IPv6 with port replaced", mirror, nil, "[::1]:5000/x:1", mirror + "/x:1"},
		{"docker.io keeps library path", mirror, nil, "docker.io/library/nginx:1", mirror + "/library/nginx:1"},
		{"no latest added", mirror, nil, "busybox", mirror + "/busybox"},
		{"digest kept", mirror, nil, "nginx@" + digest, mirror + "/nginx@" + digest},
		{"tag and digest kept", mirror, nil, "nginx:1.27@" + digest, mirror + "/nginx:1.27@" + digest},
		{"host, tag and digest", mirror, nil, "ghcr.io/o/app:1@" + digest, mirror + "/o/app:1@" + digest},
		{"already on REGISTRY", mirror, nil, mirror + "/nginx:1", mirror + "/nginx:1"},
		{"already on REGISTRY host only", "registry.example.com", nil, "registry.example.com/x/y:1", "registry.example.com/x/y:1"},
		{"REGISTRY host as prefix of another host", "r.example.com", nil, "r.example.com.evil.com/x", "r.example.com/x"},
		{"REGISTRY host as prefix of a longer host", "r.example.com", nil, "r.example.comx/y", "r.example.com/y"},
		{"REGISTRY path as prefix of a longer path", mirror, nil, mirror + "x/y", mirror + "/" + "mirrorx/y"},
		{"ignored registry", mirror, []string{"gcr.io"}, "gcr.io/proj/app:1", "gcr.io/proj/app:1"},
		{"ignored registry with trailing slash", mirror, []string{"gcr.io/"}, "gcr.io/proj/app:1", "gcr.io/proj/app:1"},
		{"ignored registry is an exact component", mirror, []string{"gcr.io"}, "gcr.io.evil.com/app:1", mirror + "/app:1"},
		{"ignored registry/path prefix", mirror, []string{"quay.io/myorg"}, "quay.io/myorg/app:1", "quay.io/myorg/app:1"},
		{"ignored path other org", mirror, []string{"quay.io/myorg"}, "quay.io/other/app:1", mirror + "/other/app:1"},
		{"ignored path longer org", mirror, []string{"quay.io/myorg"}, "quay.io/myorgx/app:1", mirror + "/myorgx/app:1"},
		{"ignored empty entry ignored", mirror, []string{""}, "nginx", mirror + "/nginx"},
		{"empty image", mirror, nil, "", ""}, // empty in, empty out: not refused
		{"uppercase repository", mirror, nil, "Nginx:1", "Nginx:1"},
		{"uppercase path", mirror, nil, "quay.io/Org/app", "quay.io/Org/app"},
		{"space", mirror, nil, "nginx latest", "nginx latest"},
		{"double colon", mirror, nil, "::", "::"},
		{"bad digest", mirror, nil, "nginx@sha256:abc", "nginx@sha256:abc"},
		{"result too long is refused", mirror, nil, long + ":1", ""},
		{"longer than any reference is refused", mirror, nil, "a/" + strings.Repeat("b", images.MaxReferenceLength), ""},
		{"long registry host replaced", mirror, nil, strings.Repeat("h", 300) + ".example.com/x:1", mirror + "/x:1"},
		{"upper-case single-label host replaced", mirror, nil, "Evil/payload:1", mirror + "/payload:1"},
		{"upper-case localhost replaced", mirror, nil, "LOCALHOST/evil:1", mirror + "/evil:1"},
		{"mixed-case localhost replaced", mirror, nil, "LocalHost/x:1", mirror + "/x:1"},
		{"upper-case host with digest replaced", mirror, nil, "EVIL/x@" + digest, mirror + "/x@" + digest},
		{"upper-case host on a Docker Hub-like path", mirror, nil, "Library/nginx", mirror + "/nginx"},
		{"index.docker.io replaced", mirror, nil, "index.docker.io/library/nginx:1", mirror + "/library/nginx:1"},
		{"REGISTRY host with explicit :443", mirror, nil, "registry.example.com:443/mirror/x:1", "registry.example.com:443/mirror/x:1"},
		{"REGISTRY with :443, image without", "registry.example.com:443/mirror", nil, "registry.example.com/mirror/x:1", "registry.example.com/mirror/x:1"},
		{"REGISTRY host in upper case", mirror, nil, "Registry.Example.com/mirror/x:1", "Registry.Example.com/mirror/x:1"},
		{"REGISTRY on Docker Hub covers its namespace", "docker.io/org", nil, "org/app:1", "org/app:1"},
		{"REGISTRY on Docker Hub, explicit", "docker.io/org", nil, "docker.io/org/app:1", "docker.io/org/app:1"},
		{"REGISTRY on Docker Hub, other namespace", "docker.io/org", nil, "other/app:1", "docker.io/org/other/app:1"},
		{"ignored repository keeps its tags", mirror, []string{"registry.k8s.io/pause"}, "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"},
		{"ignored repository keeps its digests", mirror, []string{"registry.k8s.io/pause"}, "registry.k8s.io/pause@" + digest, "registry.k8s.io/pause@" + digest},
		{"ignored repository keeps itself", mirror, []string{"registry.k8s.io/pause"}, "registry.k8s.io/pause", "registry.k8s.io/pause"},
		{"ignored repository is a whole component", mirror, []string{"registry.k8s.io/pause"}, "registry.k8s.io/pausex:1", mirror + "/pausex:1"},
		{"ignored docker.io/library keeps short names", mirror, []string{"docker.io/library"}, "nginx", "nginx"},
		{"ignored docker.io/library keeps docker.io/nginx", mirror, []string{"docker.io/library"}, "docker.io/nginx:1", "docker.io/nginx:1"},
		{"ignored docker.io/library keeps library/nginx", mirror, []string{"docker.io/library"}, "library/nginx:1", "library/nginx:1"},
		{"ignored docker.io/library, other namespace", mirror, []string{"docker.io/library"}, "bitnami/redis:7", mirror + "/bitnami/redis:7"},
		{"ignored docker.io keeps all of Docker Hub", mirror, []string{"docker.io"}, "bitnami/redis:7", "bitnami/redis:7"},
		{"ignored host in another case", mirror, []string{"GCR.io"}, "gcr.io/p/a:1", "gcr.io/p/a:1"},
		{"ignored with :443", mirror, []string{"gcr.io:443"}, "gcr.io/p/a:1", "gcr.io/p/a:1"},
		{"no REGISTRY and no map", "", nil, "nginx:1", "nginx:1"},
		{"trailing slash on REGISTRY", mirror + "/", nil, "nginx:1", mirror + "/nginx:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertRewrite(t, newRewriter(t, tt.registry, tt.ignored, nil), tt.in, tt.want, tt.want == "" && tt.in != "")
		})
	}
}

func TestRewriteTooLongPrecondition(t *testing.T) {
	t.Parallel()
	// Guards the "result too long" row above: the original must parse and
	// the naive rewrite must not, or that row tests nothing.
	long := "a/" + strings.Repeat("b", 250) + ":1"
	if _, err := reference.ParseNormalizedNamed(long); err != nil {
		t.Fatalf("original %q should parse: %v", long, err)
	}
	if _, err := reference.ParseNormalizedNamed(mirror + "/" + long); err == nil {
		t.Fatalf("rewritten %q should not parse", mirror+"/"+long)
	}
}

func TestRewriteRegistryMap(t *testing.T) {
	t.Parallel()
	dockerhub := "harbor.example.com/dockerhub"
	quay := "harbor.example.com/quay"
	tests := []struct {
		name     string
		registry string
		ignored  []string
		mapping  []string
		in       string
		want     string
	}{
		{"docker hub short name", "", nil, []string{"docker.io=" + dockerhub}, "nginx:1.27", dockerhub + "/library/nginx:1.27"},
		{"docker hub namespace", "", nil, []string{"docker.io=" + dockerhub}, "bitnami/redis:7", dockerhub + "/bitnami/redis:7"},
		{"docker hub explicit", "", nil, []string{"docker.io=" + dockerhub}, "docker.io/library/nginx", dockerhub + "/library/nginx"},
		{"index.docker.io image", "", nil, []string{"docker.io=" + dockerhub}, "index.docker.io/foo/bar:1", dockerhub + "/foo/bar:1"},
		{"index.docker.io single name", "", nil, []string{"docker.io=" + dockerhub}, "index.docker.io/x", dockerhub + "/library/x"},
		{"index.docker.io source", "", nil, []string{"index.docker.io=" + dockerhub}, "nginx:1", dockerhub + "/library/nginx:1"},
		{"source case-insensitive", "", nil, []string{"Quay.IO=" + quay}, "quay.io/argoproj/argocd:v2", quay + "/argoproj/argocd:v2"},
		{"image domain case-insensitive", "", nil, []string{"quay.io=" + quay}, "Quay.io/argoproj/argocd:v2", quay + "/argoproj/argocd:v2"},
		{"quay", "", nil, []string{"quay.io=" + quay}, "quay.io/argoproj/argocd:v2", quay + "/argoproj/argocd:v2"},
		{"digest kept", "", nil, []string{"quay.io=" + quay}, "quay.io/a/b@" + digest, quay + "/a/b@" + digest},
		{"tag and digest kept", "", nil, []string{"quay.io=" + quay}, "quay.io/a/b:1@" + digest, quay + "/a/b:1@" + digest},
		{"host with port source", "", nil, []string{"old.example.com:5000=new.example.com"}, "old.example.com:5000/a:1", "new.example.com/a:1"},
		{"unmapped domain without fallback stays", "", nil, []string{"quay.io=" + quay}, "ghcr.io/o/a:1", "ghcr.io/o/a:1"},
		{"unmapped domain falls back to star", "", nil, []string{"quay.io=" + quay, "*=star.example.com/all"}, "ghcr.io/o/a:1", "star.example.com/all/o/a:1"},
		{"star normalises docker hub", "", nil, []string{"*=star.example.com/all"}, "nginx", "star.example.com/all/library/nginx"},
		{"unmapped domain falls back to REGISTRY", mirror, nil, []string{"quay.io=" + quay}, "ghcr.io/o/a:1", mirror + "/o/a:1"},
		{"REGISTRY core rule does not normalise", mirror, nil, []string{"quay.io=" + quay}, "nginx:1", mirror + "/nginx:1"},
		{"star wins over REGISTRY", mirror, nil, []string{"*=star.example.com"}, "ghcr.io/o/a:1", "star.example.com/o/a:1"},
		{"rule wins over REGISTRY", mirror, nil, []string{"quay.io=" + quay}, "quay.io/a/b:1", quay + "/a/b:1"},
		{"already under a target", "", nil, []string{"quay.io=" + quay, "docker.io=" + dockerhub}, dockerhub + "/library/nginx:1", dockerhub + "/library/nginx:1"},
		{"already under another target", "", nil, []string{"quay.io=" + quay, "*=star.example.com"}, quay + "/a/b:1", quay + "/a/b:1"},
		{"already under REGISTRY", mirror, nil, []string{"*=star.example.com"}, mirror + "/a:1", mirror + "/a:1"},
		{"ignored wins over map", "", []string{"quay.io/myorg"}, []string{"quay.io=" + quay}, "quay.io/myorg/a:1", "quay.io/myorg/a:1"},
		{"target prefix is an exact component", "", nil, []string{"*=star.example.com"}, "star.example.com.evil.com/a:1", "star.example.com/a:1"},
		{"unparsable stays", "", nil, []string{"*=star.example.com"}, "Upper/Case", "Upper/Case"},
		{"result too long is refused", "", nil, []string{"*=star.example.com/" + strings.Repeat("p", 40)}, "quay.io/" + strings.Repeat("a", 220), ""},
		{"source with explicit :443", "", nil, []string{"quay.io=" + quay}, "quay.io:443/a/b:1", quay + "/a/b:1"},
		{"source given with :443", "", nil, []string{"quay.io:443=" + quay}, "quay.io/a/b:1", quay + "/a/b:1"},
		{"upper-case single-label host falls back to star", "", nil, []string{"quay.io=" + quay, "*=star.example.com"}, "Evil/x:1", "star.example.com/x:1"},
		{"upper-case single-label host unmapped stays", "", nil, []string{"quay.io=" + quay}, "Evil/x:1", "Evil/x:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertRewrite(t, newRewriter(t, tt.registry, tt.ignored, tt.mapping), tt.in, tt.want, tt.want == "")
		})
	}
}

func TestEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		registry string
		mapping  []string
		want     bool
	}{
		{"nothing", "", nil, false},
		{"registry", mirror, nil, true},
		{"map", "", []string{"quay.io=q.example.com"}, true},
		{"star", "", []string{"*=q.example.com"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newRewriter(t, tt.registry, nil, tt.mapping).Enabled(); got != tt.want {
				t.Errorf("Enabled() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		registry string
		mapping  []string
		wantErr  string
	}{
		{"registry without host", "myregistry", nil, "myregistry"},
		{"registry of only a slash", "/", nil, `"/"`},
		{"upper-case single-label registry", "Mirror/x", nil, "Mirror/x"},
		{"registry with tag", "r.example.com/x:tag", nil, "r.example.com/x:tag"},
		{"bad map", mirror, []string{"garbage"}, "garbage"},
		{"duplicate source", mirror, []string{"quay.io=a.example.com", "quay.io=b.example.com"}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := images.New(tt.registry, nil, tt.mapping)
			if err == nil {
				t.Fatalf("images.New(%q, nil, %q) = %v, want an error", tt.registry, tt.mapping, r)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseRegistryMap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		entries []string
		want    []images.Rule
	}{
		{"none", nil, nil},
		{"docker hub", []string{"docker.io=harbor.example.com/dockerhub"}, []images.Rule{{Source: "docker.io", Target: "harbor.example.com/dockerhub"}}},
		{"index.docker.io is docker.io", []string{"index.docker.io=harbor.example.com/dockerhub"}, []images.Rule{{Source: "docker.io", Target: "harbor.example.com/dockerhub"}}},
		{"lower-cased source, trimmed", []string{" Quay.IO = harbor.example.com/quay/ "}, []images.Rule{{Source: "quay.io", Target: "harbor.example.com/quay"}}},
		{"port source and star", []string{"h.example.com:5000=a.example.com", "*=b.example.com:443/all"},
			[]images.Rule{{Source: "h.example.com:5000", Target: "a.example.com"}, {Source: "*", Target: "b.example.com:443/all"}}},
		{"localhost", []string{"localhost:5000=localhost:5001/x"}, []images.Rule{{Source: "localhost:5000", Target: "localhost:5001/x"}}},
		// The runtime reads "somehost:443/x" and "SomeHost/x" as the
		// registry somehost, so both are sources (issue 18).
		{"single-label host with :443", []string{"somehost:443=mirror.example.com/s"}, []images.Rule{{Source: "somehost", Target: "mirror.example.com/s"}}},
		{"upper-case single-label host", []string{"SomeHost=mirror.example.com/s"}, []images.Rule{{Source: "somehost", Target: "mirror.example.com/s"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := images.ParseRegistryMap(tt.entries)
			if err != nil {
				t.Fatalf("ParseRegistryMap(%q): %v", tt.entries, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseRegistryMap(%q) = %+v, want %+v", tt.entries, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("rule %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseRegistryMapErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		entries []string
	}{
		{"no equals", []string{"garbage"}},
		{"empty entry", []string{""}},
		{"empty source", []string{"=harbor.example.com"}},
		{"empty target", []string{"quay.io="}},
		{"target only slash", []string{"quay.io=/"}},
		{"source with a path", []string{"quay.io/org=harbor.example.com/quay"}},
		{"source not a host", []string{"quay=harbor.example.com/quay"}},
		{"target without registry host", []string{"quay.io=harbor/quay"}},
		{"target with a tag", []string{"quay.io=harbor.example.com/quay:v1"}},
		{"target upper-case path", []string{"quay.io=harbor.example.com/Quay"}},
		{"duplicate source", []string{"quay.io=a.example.com", "quay.io=b.example.com"}},
		{"duplicate source, different case", []string{"quay.io=a.example.com", "QUAY.IO=b.example.com"}},
		{"duplicate docker hub spelling", []string{"docker.io=a.example.com", "index.docker.io=b.example.com"}},
		{"duplicate star", []string{"*=a.example.com", "*=b.example.com"}},
		{"one bad among good", []string{"quay.io=a.example.com", "bad"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := images.ParseRegistryMap(tt.entries); err == nil {
				t.Errorf("ParseRegistryMap(%q) = %+v, want an error", tt.entries, got)
			}
			if _, err := images.New("", nil, tt.entries); err == nil {
				t.Errorf("images.New with map %q: want an error", tt.entries)
			}
		})
	}
}

func TestValidateRegistry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		registry string
		ok       bool
	}{
		{"registry.example.com", true},
		{"registry.example.com/path/sub", true},
		{"localhost", true},
		{"localhost:5000", true},
		{"10.0.0.1:5000/x", true},
		{"[::1]:5000", true},
		{"docker.io/myorg", true},
		{"myregistry", false},
		{"myregistry/path", false},
		{"Registry.example.com/UPPER", false},
		{"r.example.com/x:tag", false},
		{"r.example.com/x@" + digest, false},
		{"r.example.com//x", false},
		{"r.example.com/x y", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.registry, func(t *testing.T) {
			err := images.ValidateRegistry(tt.registry)
			if tt.ok && err != nil {
				t.Errorf("ValidateRegistry(%q) = %v, want nil", tt.registry, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("ValidateRegistry(%q) = nil, want an error", tt.registry)
			}
		})
	}
}

// idempotencyInputs are images of every shape the rules distinguish.
var idempotencyInputs = []string{
	"", "a", "a:v", "a/b:v", "a.b/c:v", "localhost", "localhost/x", "localhost:5000/x",
	"1.2.3.4:5000/x", "[::1]:5000/x", "docker.io/library/nginx:1", "index.docker.io/x",
	"nginx@" + digest, "nginx:1.27@" + digest, "quay.io/argoproj/argocd:v2",
	mirror + "/nginx", "registry.example.com/other", "r.example.com.evil.com/x",
	"Nginx", "::", "a b", "a/" + strings.Repeat("b", 250), "quay.io/" + strings.Repeat("b", 240),
	"harbor.example.com/dockerhub/library/nginx", "gcr.io/p/a", "ghcr.io/o/a@" + digest,
	"Evil/x:1", "LOCALHOST/x", "registry.example.com:443/mirror/x", "registry.k8s.io/pause:3.10",
}

// idempotencyRewriters covers the core rule, ignored prefixes and the map.
func idempotencyRewriters(t testing.TB) map[string]*images.Rewriter {
	t.Helper()
	return map[string]*images.Rewriter{
		"core":      newRewriter(t, mirror, []string{"gcr.io", "registry.k8s.io/pause"}, nil),
		"host only": newRewriter(t, "registry.example.com", nil, nil),
		"map":       newRewriter(t, "", nil, []string{"quay.io=harbor.example.com/quay", "ghcr.io=harbor.example.com/ghcr"}),
		"map+star":  newRewriter(t, mirror, nil, []string{"quay.io=harbor.example.com/quay", "*=harbor.example.com/all"}),
	}
}

func TestRewriteIdempotent(t *testing.T) {
	t.Parallel()
	for name, r := range idempotencyRewriters(t) {
		t.Run(name, func(t *testing.T) {
			for _, in := range idempotencyInputs {
				once, err := r.Rewrite(in)
				if err != nil {
					continue // refused: nothing to rewrite again
				}
				if twice, err := r.Rewrite(once); twice != once || err != nil {
					t.Errorf("Rewrite(%q) = %q but Rewrite of that = %q, %v", in, once, twice, err)
				}
			}
		})
	}
}

func FuzzRewriteIdempotent(f *testing.F) {
	for _, in := range idempotencyInputs {
		f.Add(in)
	}
	rewriters := idempotencyRewriters(f)
	f.Fuzz(func(t *testing.T, in string) {
		for name, r := range rewriters {
			once, err := r.Rewrite(in)
			if err != nil && once != in {
				t.Fatalf("%s: Rewrite(%q) = %q with error %v: a refused image must come back unchanged", name, in, once, err)
			}
			if once != in {
				if _, err := reference.ParseNormalizedNamed(once); err != nil {
					t.Fatalf("%s: Rewrite(%q) = %q, which does not parse: %v", name, in, once, err)
				}
			}
			if err != nil {
				continue
			}
			if twice, err := r.Rewrite(once); twice != once || err != nil {
				t.Fatalf("%s: Rewrite(%q) = %q, Rewrite again = %q, %v", name, in, once, twice, err)
			}
		}
	})
}
