package nodeconfig

import (
	"net/url"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/mutator-dev/mutator/function/images"
)

// settings are the webhook's image settings as in the environment.
type settings struct {
	registry string
	ignored  []string
	mapping  []string
}

func (s settings) plan(t *testing.T) images.Plan {
	t.Helper()
	p, err := images.ParsePlan(s.registry, s.ignored, s.mapping)
	if err != nil {
		t.Fatalf("ParsePlan: %v", err)
	}
	return p
}

// wantHosts is what a hosts.toml must say: its server (absent if ""),
// root-level keys, and its [host] entries in order.
type wantHosts struct {
	server string
	root   map[string]any // besides server
	hosts  []hostEntry
}

var pullResolve = []string{"pull", "resolve"}

func TestContainerd(t *testing.T) {
	tests := []struct {
		name  string
		set   settings
		opts  Options
		files map[string]wantHosts
		notes []string // substrings, one note each
	}{{
		name: "registry with a path: _default, the mirror's host, ignored hosts",
		set:  settings{registry: "mirror.example.com/mirror", ignored: []string{"registry.k8s.io", "Quay.io:443"}},
		files: map[string]wantHosts{
			"_default": {hosts: []hostEntry{{url: "https://mirror.example.com/v2/mirror", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			// Left alone: files without a server or a host keep
			// containerd's defaults and keep _default away.
			"mirror.example.com": {},
			"registry.k8s.io":    {},
			"quay.io":            {},
		},
		notes: []string{`"docker.io/nginx"`},
	}, {
		name: "registry without a path needs no override_path",
		set:  settings{registry: "mirror.example.com:5000"},
		opts: Options{CAFiles: []string{"/etc/containerd/certs.d/mirror-ca.pem", `C:\odd "name".pem`}},
		files: map[string]wantHosts{
			"_default": {hosts: []hostEntry{{url: "https://mirror.example.com:5000", keys: map[string]any{
				"capabilities": pullResolve, "ca": []string{"/etc/containerd/certs.d/mirror-ca.pem", `C:\odd "name".pem`},
			}}}},
			"mirror.example.com:5000": {server: "https://mirror.example.com:5000", root: map[string]any{
				"ca": []string{"/etc/containerd/certs.d/mirror-ca.pem", `C:\odd "name".pem`},
			}},
		},
		notes: []string{"library/"},
	}, {
		name: "registry map: one directory per source, docker.io's server, no _default",
		set: settings{mapping: []string{"index.docker.io=harbor.example.com/dockerhub", "quay.io=harbor.example.com/quay", "localhost:5000=harbor.example.com/local"},
			ignored: []string{"quay.io/private"}},
		opts: Options{SkipVerify: true},
		files: map[string]wantHosts{
			"docker.io": {server: "https://registry-1.docker.io", hosts: []hostEntry{{url: "https://harbor.example.com/v2/dockerhub",
				keys: map[string]any{"capabilities": pullResolve, "override_path": true, "skip_verify": true}}}},
			"quay.io": {server: "https://quay.io", hosts: []hostEntry{{url: "https://harbor.example.com/v2/quay",
				keys: map[string]any{"capabilities": pullResolve, "override_path": true, "skip_verify": true}}}},
			// containerd's own default for a local registry (HTTP) is kept.
			"localhost:5000": {hosts: []hostEntry{{url: "https://harbor.example.com/v2/local",
				keys: map[string]any{"capabilities": pullResolve, "override_path": true, "skip_verify": true}}}},
			"harbor.example.com": {server: "https://harbor.example.com", root: map[string]any{"skip_verify": true}},
		},
		notes: []string{"quay.io/private"},
	}, {
		name: "star wins over REGISTRY, ignored host beats its REGISTRY_MAP entry",
		set: settings{registry: "mirror.example.com", ignored: []string{"ghcr.io"},
			mapping: []string{"*=harbor.example.com/all", "ghcr.io=harbor.example.com/ghcr"}},
		opts: Options{PlainHTTP: true},
		files: map[string]wantHosts{
			"_default":           {hosts: []hostEntry{{url: "http://harbor.example.com/v2/all", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"ghcr.io":            {},
			"mirror.example.com": {server: "http://mirror.example.com"},
			"harbor.example.com": {server: "http://harbor.example.com"},
		},
	}, {
		name: "no fallback: the mirror is the server",
		set:  settings{mapping: []string{"docker.io=harbor.example.com/dockerhub", "ghcr.io=harbor.example.com"}},
		opts: Options{NoFallback: true, CAFiles: []string{"ca.pem"}},
		files: map[string]wantHosts{
			"docker.io":          {server: "https://harbor.example.com/v2/dockerhub", root: map[string]any{"capabilities": pullResolve, "override_path": true, "ca": []string{"ca.pem"}}},
			"ghcr.io":            {server: "https://harbor.example.com", root: map[string]any{"capabilities": pullResolve, "ca": []string{"ca.pem"}}},
			"harbor.example.com": {server: "https://harbor.example.com", root: map[string]any{"ca": []string{"ca.pem"}}},
		},
	}, {
		name: "hosts named for the catch-all",
		set:  settings{registry: "mirror.example.com/m", ignored: []string{"registry.k8s.io"}, mapping: []string{"quay.io=harbor.example.com/quay"}},
		opts: Options{Hosts: []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io"}},
		files: map[string]wantHosts{
			"_default":           {hosts: []hostEntry{{url: "https://mirror.example.com/v2/m", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"docker.io":          {server: "https://registry-1.docker.io", hosts: []hostEntry{{url: "https://mirror.example.com/v2/m", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"ghcr.io":            {server: "https://ghcr.io", hosts: []hostEntry{{url: "https://mirror.example.com/v2/m", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"quay.io":            {server: "https://quay.io", hosts: []hostEntry{{url: "https://harbor.example.com/v2/quay", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"registry.k8s.io":    {},
			"mirror.example.com": {},
			"harbor.example.com": {},
		},
		notes: []string{"library/"},
	}, {
		name:  "a mirror's host in --hosts stays as named",
		set:   settings{registry: "mirror.example.com/m"},
		opts:  Options{Hosts: []string{"mirror.example.com"}},
		notes: []string{"--hosts mirror.example.com", "library/"},
		files: map[string]wantHosts{
			"_default":           {hosts: []hostEntry{{url: "https://mirror.example.com/v2/m", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"mirror.example.com": {},
		},
	}, {
		name:  "a mirror's host mapped elsewhere",
		set:   settings{registry: "harbor.example.com/mirror", mapping: []string{"harbor.example.com=other.example.com/h"}},
		notes: []string{"images under harbor.example.com/mirror (REGISTRY)", "library/"},
		files: map[string]wantHosts{
			"_default":           {hosts: []hostEntry{{url: "https://harbor.example.com/v2/mirror", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"harbor.example.com": {server: "https://harbor.example.com", hosts: []hostEntry{{url: "https://other.example.com/v2/h", keys: map[string]any{"capabilities": pullResolve, "override_path": true}}}},
			"other.example.com":  {},
		},
	}, {
		name:  "nothing configured: nothing written",
		set:   settings{},
		files: map[string]wantHosts{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Containerd(tt.set.plan(t), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, f := range res.Files {
				dir, ok := strings.CutSuffix(f.Path, "/hosts.toml")
				if !ok || strings.Contains(dir, "/") {
					t.Fatalf("file %q is not <host>/hosts.toml", f.Path)
				}
				got[dir] = true
				want, ok := tt.files[dir]
				if !ok {
					t.Errorf("unexpected %s:\n%s", f.Path, f.Content)
					continue
				}
				h := parseHosts(t, string(f.Content))
				if s, _ := h.root["server"].(string); s != want.server {
					t.Errorf("%s: server %q, want %q\n%s", f.Path, s, want.server, f.Content)
				}
				root := maps(h.root)
				delete(root, "server")
				if len(root) == 0 {
					root = nil
				}
				if !reflect.DeepEqual(root, want.root) {
					t.Errorf("%s: root keys %v, want %v\n%s", f.Path, root, want.root, f.Content)
				}
				if !reflect.DeepEqual(h.hosts, want.hosts) {
					t.Errorf("%s: hosts %+v, want %+v\n%s", f.Path, h.hosts, want.hosts, f.Content)
				}
			}
			for dir := range tt.files {
				if !got[dir] {
					t.Errorf("no %s/hosts.toml", dir)
				}
			}
			checkNotes(t, res.Notes, tt.notes)
		})
	}
}

func maps(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkNotes wants one note containing each substring, and no others.
func checkNotes(t *testing.T, notes, want []string) {
	t.Helper()
	if len(notes) != len(want) {
		t.Errorf("notes %q, want %d (%q)", notes, len(want), want)
		return
	}
	for _, w := range want {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, w) }) {
			t.Errorf("no note says %q: %q", w, notes)
		}
	}
}

func TestCRIO(t *testing.T) {
	type reg struct {
		prefix, location string
		insecure         bool
		mirrors          []string
		mirrorInsecure   bool
	}
	tests := []struct {
		name  string
		set   settings
		opts  Options
		want  []reg
		notes []string
	}{{
		name: "registry map with an ignored path under a source",
		set:  settings{mapping: []string{"docker.io=harbor.example.com/dockerhub", "quay.io=harbor.example.com/quay"}, ignored: []string{"quay.io/private", "registry.k8s.io"}},
		want: []reg{
			{prefix: "docker.io", location: "docker.io", mirrors: []string{"harbor.example.com/dockerhub"}},
			{prefix: "quay.io", location: "quay.io", mirrors: []string{"harbor.example.com/quay"}},
			{prefix: "quay.io/private", location: "quay.io/private"},
		},
	}, {
		name:  "catch-all only for the hosts named",
		set:   settings{registry: "mirror.example.com/m"},
		opts:  Options{Hosts: []string{"ghcr.io", "docker.io"}, SkipVerify: true},
		notes: []string{"no catch-all", "library/", "plain HTTP"},
		want: []reg{
			{prefix: "docker.io", location: "docker.io", mirrors: []string{"mirror.example.com/m"}, mirrorInsecure: true},
			{prefix: "ghcr.io", location: "ghcr.io", mirrors: []string{"mirror.example.com/m"}, mirrorInsecure: true},
			{prefix: "mirror.example.com/m", location: "mirror.example.com/m", insecure: true},
		},
	}, {
		name:  "no fallback replaces the location",
		set:   settings{mapping: []string{"quay.io=harbor.example.com/quay"}},
		opts:  Options{NoFallback: true, CAFiles: []string{"/ca.pem"}},
		notes: []string{"/etc/containers/certs.d/harbor.example.com/"},
		want:  []reg{{prefix: "quay.io", location: "harbor.example.com/quay"}},
	}, {
		name:  "catch-all without hosts: nothing but a note",
		set:   settings{registry: "mirror.example.com"},
		notes: []string{"(none)"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := CRIO(tt.set.plan(t), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Files) != 1 || res.Files[0].Path != CRIOFile {
				t.Fatalf("files %v, want one %s", res.Files, CRIOFile)
			}
			var got []reg
			for _, r := range parseCRIO(t, string(res.Files[0].Content)) {
				g := reg{prefix: r.keys["prefix"].(string), location: r.keys["location"].(string), insecure: r.keys["insecure"] == true}
				for _, m := range r.mirrors {
					g.mirrors = append(g.mirrors, m["location"].(string))
					g.mirrorInsecure = g.mirrorInsecure || m["insecure"] == true
				}
				got = append(got, g)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("registries %+v, want %+v\n%s", got, tt.want, res.Files[0].Content)
			}
			checkNotes(t, res.Notes, tt.notes)
		})
	}
}

func TestBadOptions(t *testing.T) {
	catchAll := settings{registry: "mirror.example.com"}
	mapOnly := settings{mapping: []string{"quay.io=mirror.example.com"}}
	for _, tt := range []struct {
		name string
		set  settings
		opts Options
		want string
	}{
		{"empty CA", catchAll, Options{CAFiles: []string{""}}, "empty path"},
		{"control character", catchAll, Options{CAFiles: []string{"/a\nb"}}, "control characters"},
		{"plain HTTP with TLS", catchAll, Options{PlainHTTP: true, SkipVerify: true}, "plain HTTP"},
		{"namespace as host", catchAll, Options{Hosts: []string{"quay"}}, "not a registry host"},
		{"path as host", catchAll, Options{Hosts: []string{"quay.io/x"}}, "not a registry host"},
		{"hosts without catch-all", mapOnly, Options{Hosts: []string{"ghcr.io"}}, "no catch-all"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for name, gen := range map[string]func(images.Plan, Options) (Result, error){"containerd": Containerd, "crio": CRIO} {
				if _, err := gen(tt.set.plan(t), tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: error %v, want one saying %q", name, err, tt.want)
				}
			}
		})
	}
}

// propertyImages are references in the spellings Pods use.
var propertyImages = []string{
	"nginx", "nginx:1.27", "library/nginx:1.27", "docker.io/nginx", "docker.io/library/nginx:1.27",
	"index.docker.io/library/busybox:1", "index.docker.io/busybox",
	"bitnami/redis:7.2", "docker.io/bitnami/redis@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	"ghcr.io/org/app:v1.4.2", "ghcr.io/org/team/app:v1@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	"quay.io/prometheus/statsd-exporter:v0.28.0", "quay.io/private/tool:1",
	"registry.k8s.io/pause:3.10", "registry.k8s.io/kube-proxy:v1.36.0",
	"localhost:5000/tools/debug", "host.example.com:5000/a/b/c:d",
	"mirror.example.com/mirror/nginx:1.27", "harbor.example.com/quay/prometheus/x:1", "harbor.example.com/mirror/app:1",
}

// knownDifference reports a documented disagreement between node and
// webhook for image; changed says whether the webhook rewrites it.
type knownDifference func(image string, changed bool) bool

// unlisted: CRI-O has no catch-all, so the images the webhook rewrites by
// REGISTRY or "*" are pulled as named unless their host was listed.
func unlisted(hosts ...string) knownDifference {
	return func(image string, changed bool) bool {
		named, err := reference.ParseNormalizedNamed(image)
		return err == nil && changed && !slices.Contains(hosts, reference.Domain(named))
	}
}

// onMirrorHost: a mirror's host has a file of its own on the node, which
// pulls every image on it as named; the webhook rewrites those outside the
// mirror's path under the catch-all.
func onMirrorHost(hosts ...string) knownDifference {
	return func(image string, changed bool) bool {
		named, err := reference.ParseNormalizedNamed(image)
		return err == nil && changed && slices.Contains(hosts, reference.Domain(named))
	}
}

func either(a, b knownDifference) knownDifference {
	return func(image string, changed bool) bool { return a(image, changed) || b(image, changed) }
}

// dockerShortOfficial: REGISTRY's core rule keeps the path as written, the
// runtimes Docker Hub's normalised "library/..." (dockerCoreNote).
func dockerShortOfficial(image string, _ bool) bool {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil || reference.Domain(named) != "docker.io" || !strings.HasPrefix(reference.Path(named), "library/") {
		return false
	}
	return !strings.Contains(image, "library/")
}

var propertyCases = []struct {
	name string
	set  settings
	opts Options
	// containerd and crio list the images the runtime, by design, pulls
	// from elsewhere than the webhook would; nil means none.
	containerd, crio knownDifference
}{
	{"core rule with a path", settings{registry: "mirror.example.com/mirror", ignored: []string{"registry.k8s.io"}}, Options{Hosts: []string{"docker.io", "quay.io", "ghcr.io", "localhost:5000"}},
		dockerShortOfficial, either(dockerShortOfficial, unlisted("docker.io", "quay.io", "ghcr.io", "localhost:5000"))},
	{"core rule without a path, no fallback", settings{registry: "mirror.example.com"}, Options{NoFallback: true, Hosts: []string{"docker.io"}},
		dockerShortOfficial, either(dockerShortOfficial, unlisted("docker.io"))},
	{"registry map with star", settings{ignored: []string{"registry.k8s.io"}, mapping: []string{"docker.io=harbor.example.com/dockerhub", "quay.io=harbor.example.com/quay", "*=harbor.example.com/other"}},
		Options{Hosts: []string{"ghcr.io", "localhost:5000", "host.example.com:5000"}}, onMirrorHost("harbor.example.com"),
		unlisted("docker.io", "quay.io", "ghcr.io", "localhost:5000", "host.example.com:5000")},
	{"registry map without star", settings{mapping: []string{"docker.io=harbor.example.com:8443/dockerhub", "ghcr.io=harbor.example.com"}}, Options{PlainHTTP: true}, nil, nil},
	{"map and core, ignored path under a source", settings{registry: "mirror.example.com/mirror", ignored: []string{"quay.io/private"}, mapping: []string{"quay.io=harbor.example.com/quay"}}, Options{},
		func(image string, changed bool) bool {
			return dockerShortOfficial(image, changed) || strings.HasPrefix(image, "quay.io/private/") ||
				onMirrorHost("harbor.example.com", "mirror.example.com")(image, changed)
		},
		// CRI-O's longest prefix keeps quay.io/private exact; without
		// --hosts it has no catch-all for the rest.
		unlisted("quay.io")},
	{"a mirror's host mapped elsewhere", settings{registry: "harbor.example.com/mirror", mapping: []string{"harbor.example.com=other.example.com/h"}}, Options{},
		func(image string, changed bool) bool {
			return dockerShortOfficial(image, changed) || strings.HasPrefix(image, "harbor.example.com/mirror/")
		},
		unlisted("harbor.example.com")},
}

// TestPropertyContainerdAgrees: for every image, the first place containerd
// pulls from with the generated files (its host lookup, its URL rules for
// override_path, its repository path) is the reference images.Rewriter
// writes, or the origin when the webhook leaves the image alone; the only
// exceptions are the ones the notes document.
func TestPropertyContainerdAgrees(t *testing.T) {
	for _, tc := range propertyCases {
		t.Run(tc.name, func(t *testing.T) {
			plan := tc.set.plan(t)
			res, err := Containerd(plan, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			files := map[string]hostsFile{}
			for _, f := range res.Files {
				files[strings.TrimSuffix(f.Path, "/hosts.toml")] = parseHosts(t, string(f.Content))
			}
			rw := images.Compile(plan)
			for _, img := range propertyImages {
				got := containerdFirstPull(t, files, img)
				want := webhookPull(t, rw, img)
				differ := tc.containerd != nil && tc.containerd(img, want != normalized(t, img))
				if (got != want) != differ {
					t.Errorf("%s: containerd pulls %s first, the webhook writes %s (documented difference: %v)", img, got, want, differ)
				}
			}
		})
	}
}

// TestPropertyCRIOAgrees is the same for CRI-O's longest-prefix rewrite.
func TestPropertyCRIOAgrees(t *testing.T) {
	for _, tc := range propertyCases {
		t.Run(tc.name, func(t *testing.T) {
			plan := tc.set.plan(t)
			res, err := CRIO(plan, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			regs := parseCRIO(t, string(res.Files[0].Content))
			rw := images.Compile(plan)
			for _, img := range propertyImages {
				got := crioFirstPull(t, regs, img)
				want := webhookPull(t, rw, img)
				differ := tc.crio != nil && tc.crio(img, want != normalized(t, img))
				if (got != want) != differ {
					t.Errorf("%s: CRI-O pulls %s first, the webhook writes %s (documented difference: %v)", img, got, want, differ)
				}
			}
		})
	}
}

// webhookPull is the reference the kubelet pulls for a Pod the webhook
// admitted, in the runtime's normalised form.
func webhookPull(t *testing.T, rw *images.Rewriter, image string) string {
	t.Helper()
	out, err := rw.Rewrite(image)
	if err != nil {
		t.Fatalf("Rewrite(%q): %v", image, err)
	}
	return normalized(t, out)
}

func normalized(t *testing.T, image string) string {
	t.Helper()
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		t.Fatalf("%q: %v", image, err)
	}
	return named.String()
}

// containerdFirstPull follows containerd 2.4's resolver
// (core/remotes/docker/config/hosts.go, resolver.go): the host directory
// ("host_port_", "host:port", then _default), the first [host] entry or
// else the server or the image's own host, the API root (path cleaned,
// "/v2" appended unless override_path or already there), then
// path.Join(root, repository). It returns the reference that request asks
// for.
func containerdFirstPull(t *testing.T, files map[string]hostsFile, image string) string {
	t.Helper()
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		t.Fatalf("%q: %v", image, err)
	}
	host, repo := reference.Domain(named), reference.Path(named)
	var f *hostsFile
	for _, dir := range []string{hostPortDir(host), host, DefaultHost} {
		if hf, ok := files[dir]; ok {
			f = &hf
			break
		}
	}
	origin := named.String()
	if f == nil {
		return origin
	}
	var rawURL string
	var override bool
	switch {
	case len(f.hosts) > 0:
		rawURL, override = f.hosts[0].url, f.hosts[0].keys["override_path"] == true
	case f.root["server"] != nil:
		rawURL, override = f.root["server"].(string), f.root["override_path"] == true
	default:
		return origin
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("host URL %q: %v", rawURL, err)
	}
	if u.Host == host || host == "docker.io" && u.Host == "registry-1.docker.io" {
		return origin
	}
	root := u.Path
	if root != "" {
		root = path.Clean(root)
		if !strings.HasSuffix(root, "/v2") && !override {
			root += "/v2"
		}
	} else if !override {
		root = "/v2"
	}
	p := path.Join("/", root, repo)
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		t.Fatalf("%s: containerd asks %s%s, not under the distribution API's /v2/", image, u.Host, p)
	}
	return u.Host + "/" + rest + strings.TrimPrefix(origin, named.Name())
}

// hostPortDir is containerd 2's first choice of directory for host:port.
func hostPortDir(host string) string {
	if i := strings.LastIndex(host, ":"); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}

// crioFirstPull follows containers/image's sysregistriesv2: the
// [[registry]] with the longest matching prefix (refMatchingPrefix: the
// prefix followed by '/', ':', '@' or nothing), then its first mirror, or
// its location, with the prefix replaced.
func crioFirstPull(t *testing.T, regs []crioRegistry, image string) string {
	t.Helper()
	ref := normalized(t, image)
	best, bestLen := -1, -1
	for i, r := range regs {
		prefix := r.keys["prefix"].(string)
		if !strings.HasPrefix(ref, prefix) {
			continue
		}
		if len(ref) > len(prefix) && !strings.ContainsRune("/:@", rune(ref[len(prefix)])) {
			continue
		}
		if len(prefix) > bestLen {
			best, bestLen = i, len(prefix)
		}
	}
	if best < 0 {
		return ref
	}
	r := regs[best]
	location := r.keys["location"].(string)
	if len(r.mirrors) > 0 {
		location = r.mirrors[0]["location"].(string)
	}
	return normalized(t, location+ref[bestLen:])
}
