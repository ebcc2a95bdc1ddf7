// Package copiertest runs OCI registries (go-containerregistry's
// pkg/registry, in process) on 127.0.0.1 for the copier's tests, with or
// without the OCI referrers API, optionally behind HTTP basic auth; it counts
// the requests each gets by kind, and can hold requests back. Push writes the
// test image: a two-platform index with a cosign-style signature tag and an
// SBOM attached as an OCI referrer.
package copiertest

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
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

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options configure New.
type Options struct {
	// Referrers enables the OCI 1.1 referrers API; without it, clients
	// fall back to the "sha256-<hex>" tag scheme.
	Referrers bool
	// Username and Password, when set, are required on every request.
	Username, Password string
}

// Counts are the requests a registry got, by kind.
type Counts struct {
	Requests       int64
	ManifestGets   int64 // GET of a manifest
	ManifestPuts   int64 // PUT of a manifest
	BlobGets       int64 // GET of a blob (a download)
	BlobUploads    int64 // POST starting a blob upload
	ReferrersCalls int64 // GET /v2/<repo>/referrers/<digest>
	Writes         int64 // POST, PUT, PATCH and DELETE of any kind
}

// Registry is a registry on loopback, plain HTTP.
type Registry struct {
	// Host is host:port, the registry part of its references.
	Host string

	opts   Options
	server *httptest.Server

	requests, manifestGets, manifestPuts, blobGets, blobUploads, referrers, writes atomic.Int64

	mu        sync.Mutex
	gate      chan struct{} // non-nil: manifest GETs wait for it to close
	hangBlobs bool          // blob GETs wait for their request to end
}

// New starts a registry; it stops when the test ends.
func New(tb testing.TB, opts Options) *Registry {
	tb.Helper()
	r := &Registry{opts: opts}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(opts.Referrers))
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.serve(w, req, inner)
	}))
	r.Host = strings.TrimPrefix(r.server.URL, "http://")
	tb.Cleanup(r.Close)
	return r
}

// Close stops the registry now, releasing what it stores (New's cleanup
// does it at the end of the test otherwise).
func (r *Registry) Close() {
	r.Release()
	r.server.Close()
	r.server.Config.Handler = http.NotFoundHandler()
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request, inner http.Handler) {
	if r.opts.Username != "" {
		u, p, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(r.opts.Username)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(r.opts.Password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="copiertest"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
	}
	r.requests.Add(1)
	path := req.URL.Path
	manifest, blob := strings.Contains(path, "/manifests/"), strings.Contains(path, "/blobs/")
	switch req.Method {
	case http.MethodGet:
		switch {
		case manifest:
			r.manifestGets.Add(1)
		case blob && !strings.Contains(path, "/uploads/"):
			r.blobGets.Add(1)
		case strings.Contains(path, "/referrers/"):
			r.referrers.Add(1)
		}
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		r.writes.Add(1)
		switch {
		case req.Method == http.MethodPut && manifest:
			r.manifestPuts.Add(1)
		case req.Method == http.MethodPost && strings.HasSuffix(path, "/blobs/uploads/"):
			r.blobUploads.Add(1)
		}
	}
	r.mu.Lock()
	gate, hang := r.gate, r.hangBlobs
	r.mu.Unlock()
	if gate != nil && manifest && req.Method == http.MethodGet {
		select {
		case <-gate:
		case <-req.Context().Done():
			return
		}
	}
	if hang && blob && req.Method == http.MethodGet {
		<-req.Context().Done()
		return
	}
	inner.ServeHTTP(w, req)
}

// Counts returns the requests counted so far.
func (r *Registry) Counts() Counts {
	return Counts{
		Requests: r.requests.Load(), ManifestGets: r.manifestGets.Load(), ManifestPuts: r.manifestPuts.Load(),
		BlobGets: r.blobGets.Load(), BlobUploads: r.blobUploads.Load(), ReferrersCalls: r.referrers.Load(), Writes: r.writes.Load(),
	}
}

// Hold makes manifest GETs wait until Release (or until their request ends).
func (r *Registry) Hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate == nil {
		r.gate = make(chan struct{})
	}
}

// Release lets held and later manifest GETs through.
func (r *Registry) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

// HangBlobs makes blob downloads hang until their request ends.
func (r *Registry) HangBlobs(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hangBlobs = on
}

// Options for go-containerregistry's remote calls to this registry.
func (r *Registry) Options(tb testing.TB) []remote.Option {
	tb.Helper()
	opts := []remote.Option{remote.WithContext(tb.Context())}
	if r.opts.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.opts.Username, Password: r.opts.Password}))
	}
	return opts
}

// Ref parses a reference on this registry.
func (r *Registry) Ref(tb testing.TB, ref string) name.Reference {
	tb.Helper()
	p, err := name.ParseReference(r.Host+"/"+ref, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// DockerConfig writes a docker config.json with this registry's credentials
// (the .dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret) and
// returns its path.
func (r *Registry) DockerConfig(tb testing.TB, username, password string) string {
	tb.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	b, err := json.Marshal(map[string]any{"auths": map[string]any{r.Host: map[string]string{"auth": auth}}})
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Image is what Push wrote.
type Image struct {
	// Ref is the index's reference by tag.
	Ref name.Tag
	// Digest is the index's digest; Platforms its two image manifests'.
	Digest    v1.Hash
	Platforms []v1.Hash
	// SigTag is the cosign tag ("sha256-<hex>.sig") and Signature the
	// digest of the signature manifest there.
	SigTag    string
	Signature v1.Hash
	// SBOM is the digest of the SBOM manifest attached as a referrer.
	SBOM v1.Hash
	// Bytes is the size of everything: manifests and distinct blobs.
	Bytes int64
}

// SBOMArtifactType is the SBOM referrer's artifactType.
const SBOMArtifactType = "application/spdx+json"

// Push writes the test image to repo:tag on r: an OCI index of two
// platforms (linux/amd64, linux/arm64), each with layers layers of
// layerBytes random bytes, a cosign-style signature at the
// "sha256-<hex>.sig" tag, and an SBOM manifest with the index as its
// subject (an OCI referrer, artifactType application/spdx+json).
func Push(tb testing.TB, r *Registry, repo, tag string, layerBytes, layers int64) Image {
	tb.Helper()
	opts := r.Options(tb)
	var out Image
	out.Ref = r.Ref(tb, repo+":"+tag).(name.Tag)
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(layerBytes, layers)
		if err != nil {
			tb.Fatal(err)
		}
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
		h, err := img.Digest()
		if err != nil {
			tb.Fatal(err)
		}
		out.Platforms = append(out.Platforms, h)
		out.Bytes += size(tb, img)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	if err := remote.WriteIndex(out.Ref, idx, opts...); err != nil {
		tb.Fatalf("pushing the index: %v", err)
	}
	var err error
	if out.Digest, err = idx.Digest(); err != nil {
		tb.Fatal(err)
	}
	raw, err := idx.RawManifest()
	if err != nil {
		tb.Fatal(err)
	}
	out.Bytes += int64(len(raw))

	// cosign's tag scheme: a manifest whose layer is the signed payload,
	// the signature in an annotation.
	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`,
		out.Ref.Context().Name(), out.Digest)
	sig, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), mutate.Addendum{
		Layer:       static.NewLayer([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": "MEUCIQDtestsignature"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	out.SigTag = out.Digest.Algorithm + "-" + out.Digest.Hex + ".sig"
	if err := remote.Write(out.Ref.Context().Tag(out.SigTag), sig, opts...); err != nil {
		tb.Fatalf("pushing the signature: %v", err)
	}
	if out.Signature, err = sig.Digest(); err != nil {
		tb.Fatal(err)
	}
	out.Bytes += size(tb, sig)

	var n int64
	out.SBOM, n = PushReferrer(tb, r, out.Ref.Context(), v1.Descriptor{MediaType: types.OCIImageIndex, Digest: out.Digest, Size: int64(len(raw))},
		SBOMArtifactType, []byte(`{"spdxVersion":"SPDX-2.3","name":"test"}`))
	out.Bytes += n
	return out
}

// PushReferrer writes an OCI 1.1 artifact whose subject is subject to repo
// (by digest, as referrers are) and returns its digest and its size with
// its blobs. Its layer is content, its config the empty JSON object but
// with the artifact type as media type (as artifacts had before OCI 1.1),
// because pkg/registry's referrers API reports a referrer's config media
// type as its artifactType, ignoring the manifest's artifactType field.
func PushReferrer(tb testing.TB, r *Registry, repo name.Repository, subject v1.Descriptor, artifactType string, content []byte) (v1.Hash, int64) {
	tb.Helper()
	opts := r.Options(tb)
	cfg := static.NewLayer([]byte("{}"), types.MediaType(artifactType))
	doc := static.NewLayer(content, types.MediaType(artifactType))
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Config:        descriptor(tb, cfg),
		Layers:        []v1.Descriptor{descriptor(tb, doc)},
		Subject:       &subject,
	}
	var n int64
	for _, l := range []v1.Layer{cfg, doc} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			tb.Fatalf("pushing a referrer's blob: %v", err)
		}
		n += descriptor(tb, l).Size
	}
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.Put(repo.Digest(h.String()), rawManifest{b, types.OCIManifestSchema1}, opts...); err != nil {
		tb.Fatalf("pushing a referrer: %v", err)
	}
	return h, n + int64(len(b))
}

// size is an image's manifest, config and layers, in bytes.
func size(tb testing.TB, img v1.Image) int64 {
	tb.Helper()
	m, err := img.Manifest()
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		tb.Fatal(err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

func descriptor(tb testing.TB, l v1.Layer) v1.Descriptor {
	tb.Helper()
	h, err := l.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	n, err := l.Size()
	if err != nil {
		tb.Fatal(err)
	}
	mt, err := l.MediaType()
	if err != nil {
		tb.Fatal(err)
	}
	return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }
