package images

import (
	"fmt"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

var benchImages = []string{
	"nginx:1.27",
	"bitnami/redis:7.2",
	"ghcr.io/org/app:v1.4.2",
	"quay.io/prometheus/statsd-exporter:v0.28.0",
	"localhost:5000/tools/debug",
	"example/shop-api:2.14.1@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	"registry.example.com/mirror/nginx:1.27", // already on REGISTRY
	"registry.k8s.io/pause:3.10",             // ignored
}

func benchRewriter(b *testing.B, mapping []string) *Rewriter {
	r, err := New("registry.example.com/mirror", []string{"registry.k8s.io"}, mapping)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// BenchmarkRewrite is the image rule over a table of references, as served:
// repeated images come from the memo.
func BenchmarkRewrite(b *testing.B) {
	for _, bc := range []struct {
		name    string
		mapping []string
	}{
		{"core", nil},
		{"registry-map", []string{"docker.io=harbor.example.com/dockerhub", "quay.io=harbor.example.com/quay"}},
	} {
		r := benchRewriter(b, bc.mapping)
		b.Run(bc.name+"/memoized", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, img := range benchImages {
					r.Rewrite(img)
				}
			}
		})
		b.Run(bc.name+"/parsed", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, img := range benchImages {
					r.rewrite(img)
				}
			}
		})
	}
}

func TestMemoBounded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                string
		maxEntries, maxByte int
		keys                []string
	}{
		{"entries", 3, 1 << 20, []string{"a", "b", "c", "d"}},
		{"bytes", 1000, 3 * (100 + entryOverhead), []string{strings.Repeat("a", 100), strings.Repeat("b", 100), strings.Repeat("c", 100), strings.Repeat("d", 100)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemo(tt.maxEntries, tt.maxByte)
			for _, k := range tt.keys {
				m.put(k, memoEntry{out: k})
				if n, b := m.size(); n > tt.maxEntries || b > tt.maxByte {
					t.Fatalf("memo holds %d entries, %d bytes; bounds are %d, %d", n, b, tt.maxEntries, tt.maxByte)
				}
			}
			last := tt.keys[len(tt.keys)-1]
			if v, ok := m.get(last); !ok || v.out != last {
				t.Fatalf("latest entry lost: %q %v", v.out, ok)
			}
		})
	}
}

// TestMemoBoundedByLongImages: images of every length a client may send
// keep the memo within its byte bound, and the longest are never stored.
func TestMemoBoundedByLongImages(t *testing.T) {
	t.Parallel()
	r, err := New("registry.example.com/mirror", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5000 {
		img := fmt.Sprintf("quay.io/%d/%s", i, strings.Repeat("a", i%(2*MaxReferenceLength)))
		_, _ = r.Rewrite(img)
		if n, b := r.memo.size(); n > memoEntries || b > memoBytes {
			t.Fatalf("after %d images the memo holds %d entries, %d bytes; bounds are %d, %d", i+1, n, b, memoEntries, memoBytes)
		}
	}
	long := "quay.io/" + strings.Repeat("a", 64<<10)
	_, _ = r.Rewrite(long)
	if _, ok := r.memo.get(long); ok {
		t.Fatal("an image longer than MaxReferenceLength was memoized")
	}
}

// TestMemoAgreesWithRules: a memoized answer is the rule's answer.
func TestMemoAgreesWithRules(t *testing.T) {
	t.Parallel()
	r, err := New("registry.example.com/mirror", []string{"registry.k8s.io"}, []string{"quay.io=harbor.example.com/quay"})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range append(benchImages, "", "Not Valid", "UPPER/case", "a/"+strings.Repeat("b", 250)) {
		want, wantErr := r.rewrite(img)
		for i := range 2 {
			if got, err := r.Rewrite(img); got != want || (err == nil) != (wantErr == nil) {
				t.Errorf("Rewrite(%q) call %d = %q, %v; want %q, %v", img, i, got, err, want, wantErr)
			}
		}
	}
}

// TestMaxReferenceLength: the longest reference the parser accepts with a
// host a runtime can resolve is within MaxReferenceLength, so refusing
// longer strings refuses nothing pullable.
func TestMaxReferenceLength(t *testing.T) {
	t.Parallel()
	host := strings.Repeat(strings.Repeat("h", 62)+".", 4) + "io" // 254 > 253, trimmed below
	host = host[len(host)-253:]
	if host[0] == '.' {
		host = "h" + host[1:]
	}
	longest := host + ":65535/" + strings.Repeat("p", 255) + ":" + strings.Repeat("t", 128) + "@sha512:" + strings.Repeat("0", 128)
	if _, err := reference.ParseNormalizedNamed(longest); err != nil {
		t.Fatalf("the longest reference does not parse: %v", err)
	}
	if len(longest) > MaxReferenceLength {
		t.Fatalf("a %d-character reference parses with a resolvable host, above MaxReferenceLength %d", len(longest), MaxReferenceLength)
	}
	if _, err := reference.ParseNormalizedNamed(host + "/" + strings.Repeat("p", 256)); err == nil {
		t.Fatal("a 256-character path parses; the bound's arithmetic is wrong")
	}
}
