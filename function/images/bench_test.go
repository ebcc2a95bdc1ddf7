package images

import "testing"

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
	m := newMemo(3)
	for _, k := range []string{"a", "b", "c", "d"} {
		m.put(k, k+"'")
	}
	if len(m.m) > 3 {
		t.Fatalf("memo holds %d entries, bound is 3", len(m.m))
	}
	if v, ok := m.get("d"); !ok || v != "d'" {
		t.Fatalf("latest entry lost: %q %v", v, ok)
	}
}

// TestMemoAgreesWithRules: a memoized answer is the rule's answer.
func TestMemoAgreesWithRules(t *testing.T) {
	r, err := New("registry.example.com/mirror", []string{"registry.k8s.io"}, []string{"quay.io=harbor.example.com/quay"})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range append(benchImages, "", "Not Valid", "UPPER/case") {
		want, wantChanged := r.rewrite(img)
		for i := 0; i < 2; i++ {
			if got, changed := r.Rewrite(img); got != want || changed != wantChanged {
				t.Errorf("Rewrite(%q) call %d = %q %v, want %q %v", img, i, got, changed, want, wantChanged)
			}
		}
	}
}
