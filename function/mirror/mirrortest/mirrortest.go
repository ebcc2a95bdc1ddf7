// Package mirrortest runs a real OCI registry (go-containerregistry's
// pkg/registry, in process) on 127.0.0.1 for tests of the mirror check, with
// switches for the failures the check must survive: a registry that hangs
// (its manifests, or everything), references that are slow to answer, one
// that answers an error status, one that needs credentials. It counts the
// requests it gets, and when they end, so that tests can say how many
// lookups a check cost and whether any went on after a deadline.
package mirrortest

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options configure New.
type Options struct {
	// Username and Password, when set, are required (HTTP basic) on every
	// request, as a private mirror would.
	Username, Password string
}

// Registry is a registry on loopback, plain HTTP (go-containerregistry
// speaks plain HTTP to loopback hosts).
type Registry struct {
	// Host is host:port, the registry part of its image references.
	Host string

	server        *httptest.Server
	opts          Options
	requests      atomic.Int64
	manifestHeads atomic.Int64
	inFlight      atomic.Int64
	maxInFlight   atomic.Int64

	mu        sync.Mutex
	hang      chan struct{} // non-nil: manifest requests (with hangAll, all requests) wait for it to close
	hangAll   bool
	status    int // non-zero: every request is answered with it
	slow      map[string]time.Duration
	slowPing  time.Duration
	digestHdr *string     // non-nil: manifest responses carry it as Docker-Content-Digest ("" leaves the header out)
	answered  []time.Time // when each counted request was answered
	abandoned int64       // counted requests whose client gave up first
}

// New starts a registry; it stops when the test ends.
func New(tb testing.TB, opts Options) *Registry {
	tb.Helper()
	r := &Registry{opts: opts}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.serve(w, req, inner)
	}))
	r.Host = strings.TrimPrefix(r.server.URL, "http://")
	tb.Cleanup(func() {
		r.SetHang(false)
		r.server.Close()
	})
	return r
}

// pushHeader marks Push's own requests, which are not counted.
const pushHeader = "X-Mirrortest-Push"

func (r *Registry) serve(w http.ResponseWriter, req *http.Request, inner http.Handler) {
	manifest := strings.Contains(req.URL.Path, "/manifests/")
	counted := req.Header.Get(pushHeader) == ""
	if counted {
		r.requests.Add(1)
		if manifest && req.Method == http.MethodHead {
			r.manifestHeads.Add(1)
		}
		n := r.inFlight.Add(1)
		defer r.inFlight.Add(-1)
		for m := r.maxInFlight.Load(); n > m && !r.maxInFlight.CompareAndSwap(m, n); m = r.maxInFlight.Load() {
		}
		defer func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if req.Context().Err() != nil {
				r.abandoned++
				return
			}
			r.answered = append(r.answered, time.Now())
		}()
	}
	r.mu.Lock()
	hang, hangAll, status, digestHdr := r.hang, r.hangAll, r.status, r.digestHdr
	delay := r.slowFor(req.URL.Path)
	if req.URL.Path == "/v2/" {
		delay = r.slowPing
	}
	r.mu.Unlock()
	if hang != nil && hangAll {
		select {
		case <-hang:
		case <-req.Context().Done():
			return
		}
	}
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if r.opts.Username != "" {
		user, pass, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(r.opts.Username)) != 1 ||
			subtle.ConstantTimeCompare([]byte(pass), []byte(r.opts.Password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="mirrortest"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
	}
	if manifest && hang != nil {
		select {
		case <-hang:
		case <-req.Context().Done():
			return
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-req.Context().Done():
			return
		}
	}
	if manifest && digestHdr != nil && counted {
		w = &digestWriter{ResponseWriter: w, digest: *digestHdr}
	}
	inner.ServeHTTP(w, req)
}

// digestWriter replaces the Docker-Content-Digest header of a response.
type digestWriter struct {
	http.ResponseWriter
	digest string
}

func (w *digestWriter) WriteHeader(code int) {
	if w.digest == "" {
		w.Header().Del("Docker-Content-Digest")
	} else {
		w.Header().Set("Docker-Content-Digest", w.digest)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *digestWriter) Write(b []byte) (int, error) { return w.ResponseWriter.Write(b) }

// SetDigestHeader makes manifest responses (Push's left out) carry d as
// their Docker-Content-Digest header, "" none at all: a registry, or a
// proxy in front of it, that answers with a digest that is not the
// manifest's or does not parse. ResetDigestHeader serves the true one
// again.
func (r *Registry) SetDigestHeader(d string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.digestHdr = &d
}

// ResetDigestHeader undoes SetDigestHeader.
func (r *Registry) ResetDigestHeader() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.digestHdr = nil
}

// slowFor is the delay of manifest requests under path; r.mu is held.
func (r *Registry) slowFor(path string) time.Duration {
	if !strings.Contains(path, "/manifests/") {
		return 0
	}
	for prefix, d := range r.slow {
		if strings.HasPrefix(path, "/v2/"+prefix) {
			return d
		}
	}
	return 0
}

// SetSlow makes manifest requests for repositories whose name starts with
// prefix ("mirror/slow") wait d before they are answered, unless the client
// gives up first: references chosen to be slow, as a pull-through cache is
// for images it has to fetch. 0 removes the prefix.
func (r *Registry) SetSlow(prefix string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slow == nil {
		r.slow = map[string]time.Duration{}
	}
	if d <= 0 {
		delete(r.slow, prefix)
		return
	}
	r.slow[prefix] = d
}

// SetSlowPing makes GET /v2/ (the ping a client sends before its first
// request for a repository) wait d, unless the client gives up first.
func (r *Registry) SetSlowPing(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slowPing = d
}

// SetHangAll makes every request wait, the /v2/ ping included, until the
// client gives up or SetHang(false): a registry that is down behind a
// load balancer that still accepts connections.
func (r *Registry) SetHangAll(on bool) {
	r.SetHang(on)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hangAll = on
}

// AnsweredAfter is the number of requests (Push's left out) answered after
// t; requests whose client gave up before the answer are not answered.
func (r *Registry) AnsweredAfter(t time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, at := range r.answered {
		if at.After(t) {
			n++
		}
	}
	return n
}

// Abandoned is the number of requests whose client gave up before the
// answer (Push's left out).
func (r *Registry) Abandoned() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.abandoned
}

// InFlight is the number of requests being served now (Push's left out).
func (r *Registry) InFlight() int64 { return r.inFlight.Load() }

// MaxInFlight is the most requests ever served at once (Push's left out).
func (r *Registry) MaxInFlight() int64 { return r.maxInFlight.Load() }

// SetHang makes manifest requests wait, until the client gives up or
// SetHang(false): a registry that accepts connections and never answers.
func (r *Registry) SetHang(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case on && r.hang == nil:
		r.hang = make(chan struct{})
	case !on && r.hang != nil:
		close(r.hang)
		r.hang = nil
	}
}

// SetStatus answers every request with status (a 5xx, say); 0 serves again.
func (r *Registry) SetStatus(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = status
}

// Requests is the number of requests served so far, Push's left out.
func (r *Registry) Requests() int64 { return r.requests.Load() }

// ManifestHeads is the number of HEAD requests for manifests so far: one per
// lookup of the mirror check. Push's are left out.
func (r *Registry) ManifestHeads() int64 { return r.manifestHeads.Load() }

// Push uploads a small random image as Host/repoTag ("mirror/app:v1") and
// returns its reference by digest (Host/mirror/app@sha256:…).
func (r *Registry) Push(tb testing.TB, repoTag string) string {
	tb.Helper()
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		tb.Fatalf("mirrortest: parsing %q: %v", repoTag, err)
	}
	img, err := random.Image(256, 1)
	if err != nil {
		tb.Fatalf("mirrortest: building image: %v", err)
	}
	opts := []remote.Option{remote.WithContext(context.Background()), remote.WithTransport(pushTransport{})}
	if r.opts.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.opts.Username, Password: r.opts.Password}))
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		tb.Fatalf("mirrortest: pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		tb.Fatalf("mirrortest: digest: %v", err)
	}
	return ref.Context().Digest(d.String()).String()
}

// PushIndex uploads a multi-platform image, an OCI image index of one small
// random image per platform ("linux/amd64", "linux/arm64"), as
// Host/repoTag, and returns the index's digest ("sha256:…"), which is what
// a HEAD of the tag answers with.
func (r *Registry) PushIndex(tb testing.TB, repoTag string, platforms ...string) string {
	tb.Helper()
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		tb.Fatalf("mirrortest: parsing %q: %v", repoTag, err)
	}
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		img, err := random.Image(256, 1)
		if err != nil {
			tb.Fatalf("mirrortest: building image: %v", err)
		}
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			tb.Fatalf("mirrortest: platform %q: %v", p, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	opts := []remote.Option{remote.WithContext(context.Background()), remote.WithTransport(pushTransport{})}
	if r.opts.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.opts.Username, Password: r.opts.Password}))
	}
	if err := remote.WriteIndex(ref, idx, opts...); err != nil {
		tb.Fatalf("mirrortest: pushing %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		tb.Fatalf("mirrortest: digest: %v", err)
	}
	return d.String()
}

// pushTransport marks Push's requests so that the counters leave them out.
type pushTransport struct{}

func (pushTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(pushHeader, "1")
	return http.DefaultTransport.RoundTrip(req)
}

// DockerConfig writes a docker config.json (the content of a
// kubernetes.io/dockerconfigjson Secret) with credentials for this registry
// into dir and returns its path.
func (r *Registry) DockerConfig(tb testing.TB, dir, username, password string) string {
	tb.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	b, err := json.Marshal(map[string]any{"auths": map[string]any{r.Host: map[string]string{"auth": auth}}})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
