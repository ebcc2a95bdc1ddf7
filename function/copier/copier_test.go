package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/mutator-dev/mutator/function/copier/copiertest"
	"github.com/mutator-dev/mutator/function/mirror"
)

// The test image: two platforms of 2 layers of 64 KiB each, a signature and
// an SBOM.
const (
	layerBytes = 64 << 10
	layers     = 2
)

func newCopier(t *testing.T, opts Options) *Copier {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return c
}

// checkMirrored asserts that the mirror serves the image whole under
// target: the index at the origin's digest, each platform manifest by
// digest, the signature tag at the origin's signature digest, and the SBOM
// among the index's referrers (through the API or the fallback tag).
func checkMirrored(t *testing.T, origin, mirror *copiertest.Registry, target string, img copiertest.Image) {
	t.Helper()
	opts := mirror.Options(t)
	ref := mirror.Ref(t, target)
	d, err := remote.Head(ref, opts...)
	if err != nil {
		t.Fatalf("mirror: %s: %v", ref, err)
	}
	if d.Digest != img.Digest {
		t.Errorf("mirror serves %s at %s, origin at %s", ref, d.Digest, img.Digest)
	}
	repo := ref.Context()
	for _, p := range img.Platforms {
		if d, err := remote.Head(repo.Digest(p.String()), opts...); err != nil || d.Digest != p {
			t.Errorf("mirror: platform manifest %s: %v, %v", p, d, err)
		}
	}
	sig, err := remote.Head(repo.Tag(img.SigTag), opts...)
	if err != nil {
		t.Fatalf("mirror: signature tag %s: %v", img.SigTag, err)
	}
	if sig.Digest != img.Signature {
		t.Errorf("mirror: signature tag at %s, origin's at %s", sig.Digest, img.Signature)
	}
	idx, err := remote.Referrers(repo.Digest(img.Digest.String()), opts...)
	if err != nil {
		t.Fatalf("mirror: referrers: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range im.Manifests {
		if m.Digest == img.SBOM {
			found = true
			if m.ArtifactType != copiertest.SBOMArtifactType {
				t.Errorf("mirror: SBOM referrer has artifactType %q, want %q", m.ArtifactType, copiertest.SBOMArtifactType)
			}
		}
	}
	if !found {
		t.Errorf("mirror: referrers of %s = %+v, want the SBOM %s", img.Digest, im.Manifests, img.SBOM)
	}
	// The signature's payload names the origin's digest, which the copy
	// preserves: the bytes are the same.
	want, err := remote.Get(img.Ref.Context().Tag(img.SigTag), origin.Options(t)...)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Get(repo.Tag(img.SigTag), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want.Manifest, got.Manifest) {
		t.Error("mirror: signature manifest differs from the origin's")
	}
}

// TestCopyWhole copies the test image to mirrors with and without the
// referrers API, from origins with and without it, by tag and by digest.
func TestCopyWhole(t *testing.T) {
	tests := []struct {
		name                     string
		originAPI, mirrorAPI     bool
		byDigest, targetByDigest bool
	}{
		{"referrers API on both", true, true, false, false},
		{"mirror without referrers API (fallback tag)", true, false, false, false},
		{"origin without referrers API (fallback tag)", false, true, false, false},
		{"neither has the referrers API", false, false, false, false},
		{"source by digest to a tag", true, true, true, false},
		{"by digest to a digest", true, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			origin := copiertest.New(t, copiertest.Options{Referrers: tt.originAPI})
			mirror := copiertest.New(t, copiertest.Options{Referrers: tt.mirrorAPI})
			img := copiertest.Push(t, origin, "library/app", "1.0", layerBytes, layers)
			c := newCopier(t, Options{})

			source := img.Ref.String()
			if tt.byDigest {
				source = img.Ref.Context().Digest(img.Digest.String()).String()
			}
			target := "mirror/library/app:1.0"
			if tt.targetByDigest {
				target = "mirror/library/app@" + img.Digest.String()
			}
			req := Request{Source: source, Target: mirror.Host + "/" + target}

			first, err := c.Copy(t.Context(), req)
			if err != nil {
				t.Fatalf("copy: %v (%+v)", err, first)
			}
			checkMirrored(t, origin, mirror, target, img)
			if first.Digest != img.Digest.String() || first.Bytes != img.Bytes || first.Uploaded < img.Bytes || first.Manifests != 5 || len(first.Referrers) != 2 {
				t.Errorf("result = %+v; want digest %s, bytes %d, at least as many uploaded, 5 manifests, 2 referrers", first, img.Digest, img.Bytes)
			}
			for _, r := range first.Referrers {
				switch r.Digest {
				case img.SBOM.String():
					if r.ArtifactType != copiertest.SBOMArtifactType || r.Tag != "" || r.Subject != img.Digest.String() {
						t.Errorf("SBOM referrer = %+v", r)
					}
				case img.Signature.String():
					if r.Tag != img.SigTag || r.Subject != img.Digest.String() {
						t.Errorf("signature referrer = %+v", r)
					}
				default:
					t.Errorf("unexpected referrer %+v", r)
				}
			}

			// Idempotence: the second copy reads manifests only, and
			// writes nothing.
			before, beforeOrigin := mirror.Counts(), origin.Counts()
			second, err := c.Copy(t.Context(), req)
			if err != nil {
				t.Fatalf("second copy: %v", err)
			}
			after, afterOrigin := mirror.Counts(), origin.Counts()
			if afterOrigin.BlobGets != beforeOrigin.BlobGets {
				t.Errorf("second copy read %d blobs from the origin, want none", afterOrigin.BlobGets-beforeOrigin.BlobGets)
			}
			if after.Writes != before.Writes || second.Uploaded != 0 || second.Bytes != 0 {
				t.Errorf("second copy wrote %d requests (%d blob uploads, %d manifests), uploaded %d bytes, planned %d; want nothing",
					after.Writes-before.Writes, after.BlobUploads-before.BlobUploads, after.ManifestPuts-before.ManifestPuts, second.Uploaded, second.Bytes)
			}
			if second.Digest != first.Digest || len(second.Referrers) != 2 {
				t.Errorf("second result = %+v", second)
			}
			t.Logf("copy of a 2-platform index (%d layers of %d KiB each) + signature + SBOM, %d bytes: first %d ms (%d mirror requests); "+
				"second %d ms (%d mirror requests, %d writes; %d origin requests, %d blob reads)",
				layers, layerBytes>>10, img.Bytes, first.DurationMs, before.Requests, second.DurationMs, after.Requests-before.Requests,
				after.Writes-before.Writes, afterOrigin.Requests-beforeOrigin.Requests, afterOrigin.BlobGets-beforeOrigin.BlobGets)
		})
	}
}

// TestCopyPartial: a mirror that has one platform manifest already (an
// interrupted copy, or an index sharing it) gets only the rest, and the
// present platform's manifest and blobs are not read from the origin.
func TestCopyPartial(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "app", "1.0", layerBytes, layers)
	idx, err := remote.Index(img.Ref)
	if err != nil {
		t.Fatal(err)
	}
	one, err := idx.Image(img.Platforms[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mirror.Ref(t, "app@"+img.Platforms[0].String()), one, mirror.Options(t)...); err != nil {
		t.Fatal(err)
	}
	before, beforeOrigin := mirror.Counts(), origin.Counts()
	c := newCopier(t, Options{})
	res, err := c.Copy(t.Context(), Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"})
	if err != nil {
		t.Fatal(err)
	}
	checkMirrored(t, origin, mirror, "app:1.0", img)
	after, afterOrigin := mirror.Counts(), origin.Counts()
	// index + the other platform + signature + SBOM manifests; the other
	// platform's config and layers, the signature's and the SBOM's blobs.
	if got := after.ManifestPuts - before.ManifestPuts; got != 4 {
		t.Errorf("%d manifests written, want 4", got)
	}
	if got := afterOrigin.BlobGets - beforeOrigin.BlobGets; got != 1+layers+2+2 {
		t.Errorf("%d blobs read from the origin, want %d (not the present platform's)", got, 1+layers+2+2)
	}
	if res.Bytes >= img.Bytes {
		t.Errorf("planned %d bytes, want less than the whole image's %d", res.Bytes, img.Bytes)
	}
}

// TestCopyReferrerChain: referrers of referrers (a signature of the SBOM)
// and of a platform manifest are copied too, to mirrors with and without the
// referrers API.
func TestCopyReferrerChain(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("mirror referrers API %v", api), func(t *testing.T) {
			origin := copiertest.New(t, copiertest.Options{Referrers: true})
			mirror := copiertest.New(t, copiertest.Options{Referrers: api})
			img := copiertest.Push(t, origin, "app", "1.0", layerBytes, layers)
			repo := img.Ref.Context()
			sbom, err := remote.Head(repo.Digest(img.SBOM.String()), origin.Options(t)...)
			if err != nil {
				t.Fatal(err)
			}
			const sigType = "application/vnd.dev.sigstore.bundle.v0.3+json"
			sbomSig, _ := copiertest.PushReferrer(t, origin, repo, *sbom, sigType, []byte(`{"bundle":"sbom"}`))
			platform, err := remote.Head(repo.Digest(img.Platforms[1].String()), origin.Options(t)...)
			if err != nil {
				t.Fatal(err)
			}
			platformSig, _ := copiertest.PushReferrer(t, origin, repo, *platform, sigType, []byte(`{"bundle":"arm64"}`))

			c := newCopier(t, Options{})
			res, err := c.Copy(t.Context(), Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"})
			if err != nil {
				t.Fatal(err)
			}
			checkMirrored(t, origin, mirror, "app:1.0", img)
			if len(res.Referrers) != 4 || res.Manifests != 7 {
				t.Errorf("result %+v; want 4 referrers, 7 manifests", res)
			}
			for subject, want := range map[v1.Hash]v1.Hash{img.SBOM: sbomSig, img.Platforms[1]: platformSig} {
				idx, err := remote.Referrers(mirror.Ref(t, "app@"+subject.String()).(name.Digest), mirror.Options(t)...)
				if err != nil {
					t.Fatal(err)
				}
				im, err := idx.IndexManifest()
				if err != nil {
					t.Fatal(err)
				}
				if len(im.Manifests) != 1 || im.Manifests[0].Digest != want || im.Manifests[0].ArtifactType != sigType {
					t.Errorf("mirror: referrers of %s = %+v, want %s", subject, im.Manifests, want)
				}
			}
		})
	}
}

// TestCopyRefused: requests that are refused, and images over the bounds,
// which are refused before anything is written to the mirror.
func TestCopyRefused(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "app", "1.0", layerBytes, layers)
	other := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", 1)}
	tests := []struct {
		name   string
		opts   Options
		source string
		target string
		want   Reason
	}{
		{"bytes over the bound", Options{MaxBytes: img.Bytes - 1}, img.Ref.String(), mirror.Host + "/app:1.0", ReasonTooLarge},
		{"manifests over the bound", Options{MaxManifests: 4}, img.Ref.String(), mirror.Host + "/app:1.0", ReasonTooLarge},
		{"source not found", Options{}, origin.Host + "/app:missing", mirror.Host + "/app:1.0", ReasonNotFound},
		{"target digest differs", Options{}, img.Ref.String(), mirror.Host + "/app@" + other.String(), ReasonMismatch},
		{"target outside the allowed", Options{AllowedTargets: []string{mirror.Host + "/mirror"}}, img.Ref.String(), mirror.Host + "/mirrorx/app:1.0", ReasonInvalid},
		{"source outside the allowed", Options{AllowedSources: []string{"docker.io"}}, img.Ref.String(), mirror.Host + "/app:1.0", ReasonInvalid},
		{"same repository", Options{}, img.Ref.String(), img.Ref.Context().Tag("2.0").String(), ReasonInvalid},
		{"unparsable source", Options{}, "UPPER/case:x", mirror.Host + "/app:1.0", ReasonInvalid},
		{"empty target", Options{}, img.Ref.String(), "", ReasonInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCopier(t, tt.opts)
			before := mirror.Counts()
			res, err := c.Copy(t.Context(), Request{Source: tt.source, Target: tt.target})
			if err == nil || res.Reason != tt.want || res.OK() || res.Retriable() {
				t.Fatalf("copy = %+v, %v; want a permanent failure %q", res, err, tt.want)
			}
			if res.Error == "" || res.Error != err.Error() {
				t.Errorf("result error %q, want %q", res.Error, err)
			}
			if w := mirror.Counts().Writes - before.Writes; w != 0 {
				t.Errorf("%d writes to the mirror, want none", w)
			}
			t.Logf("%s: %s", res.Reason, res.Error)
		})
	}
	// Within the bounds exactly, the same copy succeeds.
	c := newCopier(t, Options{MaxBytes: img.Bytes, MaxManifests: 5})
	if res, err := c.Copy(t.Context(), Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"}); err != nil {
		t.Errorf("copy at the bounds: %v (%+v)", err, res)
	}
}

// TestCopyTimeout: a copy whose origin stops answering fails with the
// timeout reason within its timeout, and a retry (after the origin
// recovers) completes what was left.
func TestCopyTimeout(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "app", "1.0", layerBytes, layers)
	origin.HangBlobs(true)
	const timeout = 500 * time.Millisecond
	c := newCopier(t, Options{Timeout: timeout})
	req := Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"}
	start := time.Now()
	res, err := c.Copy(t.Context(), req)
	took := time.Since(start)
	if err == nil || res.Reason != ReasonTimeout || !res.Retriable() || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("copy = %+v, %v; want a timeout", res, err)
	}
	if took > timeout+2*time.Second {
		t.Errorf("timed out after %v, want about %v", took, timeout)
	}
	origin.HangBlobs(false)
	if res, err := c.Copy(t.Context(), req); err != nil {
		t.Fatalf("retry: %v (%+v)", err, res)
	}
	checkMirrored(t, origin, mirror, "app:1.0", img)
}

// TestCopyShared: concurrent requests for the same copy share one; a
// caller that gives up does not stop it; different copies run at most
// MaxConcurrent at a time.
func TestCopyShared(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "app", "1.0", layerBytes, layers)
	c := newCopier(t, Options{MaxConcurrent: 1})
	const callers = 6
	var joined sync.WaitGroup
	joined.Add(callers + 2)
	c.joined = func(bool) { joined.Done() }

	origin.Hold()
	before := origin.Counts()
	req := Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"}
	results := make(chan Result, callers)
	for range callers {
		go func() {
			res, err := c.Copy(t.Context(), req)
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	// A caller that gives up at once: the copy goes on for the others.
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Copy(gone, req); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	// Another copy, to another target: it waits for the only slot.
	other := make(chan error, 1)
	go func() {
		_, err := c.Copy(t.Context(), Request{Source: img.Ref.String(), Target: mirror.Host + "/other:1.0"})
		other <- err
	}()
	joined.Wait()
	if s := c.Stats(); s.InFlight != 2 || s.Running > 1 {
		t.Errorf("stats while held = %+v; want 2 copies in flight, at most 1 running", s)
	}
	origin.Release()

	sharedN := 0
	for range callers {
		res := <-results
		if res.Shared {
			sharedN++
		}
		if !res.OK() || res.Digest != img.Digest.String() {
			t.Errorf("result %+v", res)
		}
	}
	if err := <-other; err != nil {
		t.Errorf("other copy: %v", err)
	}
	// One of the callers started the copy (or the cancelled one did, and
	// all six joined it).
	if sharedN < callers-1 {
		t.Errorf("%d of %d callers shared the copy, want at least %d", sharedN, callers, callers-1)
	}
	s := c.Stats()
	if s.Copies != 2 || s.MaxRunning != 1 {
		t.Errorf("stats = %+v; want 2 copies, at most 1 running at once", s)
	}
	// The origin's index was read by tag once per copy.
	if got := origin.Counts().ManifestGets - before.ManifestGets; got > 2*5 {
		t.Errorf("%d manifest reads on the origin for 2 copies of 5 manifests", got)
	}
	checkMirrored(t, origin, mirror, "app:1.0", img)
	checkMirrored(t, origin, mirror, "other:1.0", img)
}

// TestCopyCredentials: a mirror and an origin behind basic auth, with
// credentials from docker config.json files (the mounted Secrets).
func TestCopyCredentials(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true, Username: "reader", Password: "r-secret"})
	mirrorReg := copiertest.New(t, copiertest.Options{Referrers: true, Username: "writer", Password: "w-secret"})
	img := copiertest.Push(t, origin, "app", "1.0", layerBytes, layers)
	keychain := func(path string) *mirror.FileKeychain {
		k, err := mirror.NewFileKeychain(path)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	req := Request{Source: img.Ref.String(), Target: mirrorReg.Host + "/app:1.0"}

	c := newCopier(t, Options{SourceKeychain: keychain(origin.DockerConfig(t, "reader", "r-secret"))})
	res, err := c.Copy(t.Context(), req)
	if err == nil || res.Reason != ReasonDenied {
		t.Fatalf("copy without mirror credentials = %+v, %v; want denied", res, err)
	}
	c = newCopier(t, Options{
		SourceKeychain: keychain(origin.DockerConfig(t, "reader", "r-secret")),
		TargetKeychain: keychain(mirrorReg.DockerConfig(t, "writer", "w-secret")),
	})
	if res, err := c.Copy(t.Context(), req); err != nil {
		t.Fatalf("copy with credentials: %v (%+v)", err, res)
	}
	checkMirrored(t, origin, mirrorReg, "app:1.0", img)
}

// TestParseScheme: plain HTTP to loopback registries only, unless Insecure.
func TestParseScheme(t *testing.T) {
	tests := []struct {
		ref      string
		insecure bool
		want     string
	}{
		{"registry.example.com/app:1", false, "https"},
		{"127.0.0.1:5000/app:1", false, "http"},
		{"localhost:5000/app:1", false, "http"},
		{"[::1]:5000/app:1", false, "http"},
		{"registry.example.com/app:1", true, "http"},
		{"nginx", false, "https"},
	}
	for _, tt := range tests {
		c := newCopier(t, Options{Insecure: tt.insecure})
		r, err := c.parse(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Context().Scheme(); got != tt.want {
			t.Errorf("%s (insecure %v): scheme %s, want %s", tt.ref, tt.insecure, got, tt.want)
		}
	}
}

// TestAllowed: prefixes match whole path segments, registries alone and
// Docker Hub's short names as references do.
func TestAllowed(t *testing.T) {
	ps, err := prefixes([]string{"registry.example.com/mirror/", "docker.io", " "})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		repo string
		want bool
	}{
		{"registry.example.com/mirror/app", true},
		{"registry.example.com/mirror/a/b", true},
		{"registry.example.com/mirrorx/app", false},
		{"registry.example.com/app", false},
		{"nginx", true},
		{"index.docker.io/library/nginx", true},
		{"quay.io/app", false},
	}
	for _, tt := range tests {
		r, err := name.NewRepository(tt.repo)
		if err != nil {
			t.Fatal(err)
		}
		if got := allowed(ps, r); got != tt.want {
			t.Errorf("allowed(%v, %s) = %v, want %v", ps, tt.repo, got, tt.want)
		}
	}
}

// BenchmarkCopy measures a first copy of the test image to a fresh mirror
// and the idempotent copy that follows, with small and larger layers.
func BenchmarkCopy(b *testing.B) {
	for _, size := range []struct {
		name          string
		bytes, layers int64
	}{
		{"2x64KiB", layerBytes, layers},
		{"3x8MiB", 8 << 20, 3},
	} {
		origin := copiertest.New(b, copiertest.Options{Referrers: true})
		img := copiertest.Push(b, origin, "app", "1.0", size.bytes, size.layers)
		c, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(context.Background())
		b.Run("first/"+size.name, func(b *testing.B) {
			b.SetBytes(img.Bytes)
			for b.Loop() {
				b.StopTimer()
				mirror := copiertest.New(b, copiertest.Options{Referrers: true})
				b.StartTimer()
				if _, err := c.Copy(b.Context(), Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				mirror.Close() // its copy, in memory
				b.StartTimer()
			}
		})
		b.Run("again/"+size.name, func(b *testing.B) {
			mirror := copiertest.New(b, copiertest.Options{Referrers: true})
			req := Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"}
			if _, err := c.Copy(b.Context(), req); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := c.Copy(b.Context(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
