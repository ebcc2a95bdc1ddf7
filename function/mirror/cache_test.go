package mirror

import (
	"fmt"
	"testing"
	"time"
)

// TestCacheBound: the cache never holds more than its bytes, evicts the
// least recently used entry first, and drops expired entries.
func TestCacheBound(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := func(i int) string { return fmt.Sprintf("registry.example.com/mirror/app-%04d:v1", i) }
	per := cost(key(0), answer{})
	tests := []struct {
		name        string
		maxEntries  int64 // the cache holds this many entries' bytes
		puts        int
		touch       int // key read after all puts but the last
		wantEntries int
		wantKept    []int
		wantGone    []int
	}{
		{"under the bound", 10, 5, -1, 5, []int{0, 4}, nil},
		{"at the bound", 10, 10, -1, 10, []int{0, 9}, nil},
		{"over the bound evicts the oldest", 10, 15, -1, 10, []int{5, 14}, []int{0, 4}},
		{"a read keeps an entry", 10, 11, 0, 10, []int{0, 10}, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(tt.maxEntries * per)
			for i := range tt.puts {
				if i == tt.puts-1 && tt.touch >= 0 {
					if _, ok := c.get(key(tt.touch), t0); !ok {
						t.Fatalf("key %d gone before the bound was reached", tt.touch)
					}
				}
				c.put(key(i), answer{present: i%2 == 0}, t0.Add(time.Minute))
			}
			n, bytes := c.stats()
			if n != tt.wantEntries || bytes > tt.maxEntries*per {
				t.Errorf("%d entries, %d bytes; want %d entries within %d bytes", n, bytes, tt.wantEntries, tt.maxEntries*per)
			}
			for _, i := range tt.wantKept {
				if v, ok := c.get(key(i), t0); !ok || v.present != (i%2 == 0) {
					t.Errorf("key %d: %v, %v; want kept with present=%v", i, v.present, ok, i%2 == 0)
				}
			}
			for _, i := range tt.wantGone {
				if _, ok := c.get(key(i), t0); ok {
					t.Errorf("key %d kept, want evicted", i)
				}
			}
		})
	}

	c := newCache(10 * per)
	c.put(key(1), answer{present: true}, t0.Add(time.Second))
	if _, ok := c.get(key(1), t0.Add(time.Second)); ok {
		t.Error("entry answered at its expiry")
	}
	if n, bytes := c.stats(); n != 0 || bytes != 0 {
		t.Errorf("expired entry not removed: %d entries, %d bytes", n, bytes)
	}
	c.put(string(make([]byte, 11*per)), answer{present: true}, t0.Add(time.Second))
	if n, _ := c.stats(); n != 0 {
		t.Error("a key larger than the cache was stored")
	}
}

// TestAnswersKeepPresent: a flood of missing answers (made-up references)
// evicts only missing answers; the present answers the cluster's images are
// served from stay, and an answer that flips replaces the other.
func TestAnswersKeepPresent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	later := t0.Add(time.Hour)
	key := func(kind string, i int) string { return fmt.Sprintf("registry.example.com/mirror/%s-%06d:v1", kind, i) }
	a := newAnswers(100 * cost(key("app", 0), answer{}))
	for i := range 50 {
		a.put(key("app", i), answer{present: true}, later)
	}
	for i := range 10_000 {
		a.put(key("made-up", i), answer{}, later)
	}
	for i := range 50 {
		if v, ok := a.get(key("app", i), t0); !ok || !v.present {
			t.Fatalf("present answer %d evicted by missing ones", i)
		}
	}
	if _, ok := a.get(key("made-up", 9_999), t0); !ok {
		t.Error("the latest missing answer is not kept")
	}
	if n, _ := a.missing.stats(); n > 25 {
		t.Errorf("%d missing answers kept, want at most a quarter of the bytes (25 entries)", n)
	}
	a.put(key("app", 0), answer{}, later)
	if v, ok := a.get(key("app", 0), t0); !ok || v.present {
		t.Errorf("flipped to missing: got present %v, ok %v", v.present, ok)
	}
	a.put(key("app", 0), answer{present: true, digest: testDigest}, later)
	if v, ok := a.get(key("app", 0), t0); !ok || !v.present || v.digest != testDigest {
		t.Errorf("flipped back to present: got %+v, ok %v", v, ok)
	}
}

const testDigest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// TestCacheCountsDigests: the bytes bound counts each present answer's
// digest, so that pinning (PIN_DIGESTS) does not let the cache grow past
// MIRROR_CACHE_SIZE; a digest that changes (a tag moved) is accounted anew.
func TestCacheCountsDigests(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := func(i int) string { return fmt.Sprintf("registry.example.com/mirror/app-%04d:v1", i) }
	withDigest := answer{present: true, digest: testDigest}
	per := cost(key(0), withDigest)
	if per != cost(key(0), answer{})+int64(len(testDigest)) {
		t.Fatalf("cost %d does not count the digest", per)
	}
	c := newCache(10 * per)
	for i := range 20 {
		c.put(key(i), withDigest, t0.Add(time.Minute))
	}
	if n, bytes := c.stats(); n != 10 || bytes != 10*per {
		t.Errorf("%d entries, %d bytes; want 10 entries, %d bytes", n, bytes, 10*per)
	}
	if v, ok := c.get(key(19), t0); !ok || v.digest != testDigest {
		t.Errorf("latest entry %+v, %v; want its digest kept", v, ok)
	}
	// Replacing an answer re-counts it: without the digest it costs less.
	c.put(key(19), answer{present: true}, t0.Add(time.Minute))
	if _, bytes := c.stats(); bytes != 9*per+cost(key(19), answer{}) {
		t.Errorf("%d bytes after a digest was dropped, want %d", bytes, 9*per+cost(key(19), answer{}))
	}
	c.put(key(19), withDigest, t0.Add(time.Minute))
	if _, bytes := c.stats(); bytes != 10*per {
		t.Errorf("%d bytes after the digest came back, want %d", bytes, 10*per)
	}
}
