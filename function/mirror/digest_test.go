package mirror_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
)

// TestDigest: a present answer carries the digest of the manifest the HEAD
// found, the index's for a multi-platform tag (the Accept header lists the
// OCI index and the Docker manifest list), and the cache keeps it: Cached
// and a second Exists answer with it too. A missing answer has none.
func TestDigest(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	single := reg.Push(t, "mirror/app:v1")
	singleDigest := single[strings.LastIndex(single, "@")+1:]
	index := reg.PushIndex(t, "mirror/multi:v1", "linux/amd64", "linux/arm64")
	c := newChecker(t, mirror.Options{Timeout: 2 * time.Second, PositiveTTL: time.Minute, NegativeTTL: time.Minute, Failures: 100})

	for _, tt := range []struct {
		name, ref  string
		wantStatus mirror.Status
		wantDigest string
	}{
		{"single-platform image", reg.Host + "/mirror/app:v1", mirror.Present, singleDigest},
		{"multi-platform image: the index's digest", reg.Host + "/mirror/multi:v1", mirror.Present, index},
		{"by digest", single, mirror.Present, singleDigest},
		{"missing: no digest", reg.Host + "/mirror/app:v2", mirror.Missing, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Exists(t.Context(), tt.ref)
			if err != nil || res.Status != tt.wantStatus || res.Digest != tt.wantDigest {
				t.Fatalf("Exists(%q) = %+v, %v; want %s with digest %q", tt.ref, res, err, tt.wantStatus, tt.wantDigest)
			}
			cached, ok := c.Cached(t.Context(), tt.ref)
			if !ok || !cached.Cached || cached.Status != tt.wantStatus || cached.Digest != tt.wantDigest {
				t.Errorf("Cached(%q) = %+v, %v; want the digest from the cache", tt.ref, cached, ok)
			}
			again, err := c.Exists(t.Context(), tt.ref)
			if err != nil || !again.Cached || again.Digest != tt.wantDigest {
				t.Errorf("second Exists(%q) = %+v, %v; want the digest from the cache", tt.ref, again, err)
			}
		})
	}
}

// TestDigestUnusable: a registry that answers 200 for the manifest but with
// a Docker-Content-Digest that does not parse, or none, has the image: the
// answer is present (go-containerregistry refuses the response, which
// would otherwise count as an error), with no digest to pin to.
func TestDigestUnusable(t *testing.T) {
	for _, header := range []string{"sha256:not-a-digest", "md5:d41d8cd98f00b204e9800998ecf8427e", ""} {
		t.Run(header, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			reg.Push(t, "mirror/app:v1")
			reg.SetDigestHeader(header)
			c := newChecker(t, mirror.Options{Timeout: 2 * time.Second, PositiveTTL: time.Minute, Failures: 1})
			for range 2 {
				res, err := c.Exists(t.Context(), reg.Host+"/mirror/app:v1")
				if err != nil || res.Status != mirror.Present || res.Digest != "" {
					t.Fatalf("Exists = %+v, %v; want present without a digest", res, err)
				}
			}
			if res, err := c.Exists(t.Context(), reg.Host+"/mirror/app:v2"); err != nil || res.Status != mirror.Missing {
				t.Errorf("missing image: %+v, %v; want missing", res, err)
			}
			if st := c.CircuitState(reg.Host); st != mirror.Closed {
				t.Errorf("circuit %s, want closed: the registry answered", st)
			}
		})
	}
}
