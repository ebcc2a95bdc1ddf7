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
	per := cost(key(0))
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
				c.put(key(i), i%2 == 0, t0.Add(time.Minute))
			}
			n, bytes := c.stats()
			if n != tt.wantEntries || bytes > tt.maxEntries*per {
				t.Errorf("%d entries, %d bytes; want %d entries within %d bytes", n, bytes, tt.wantEntries, tt.maxEntries*per)
			}
			for _, i := range tt.wantKept {
				if present, ok := c.get(key(i), t0); !ok || present != (i%2 == 0) {
					t.Errorf("key %d: %v, %v; want kept with present=%v", i, present, ok, i%2 == 0)
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
	c.put(key(1), true, t0.Add(time.Second))
	if _, ok := c.get(key(1), t0.Add(time.Second)); ok {
		t.Error("entry answered at its expiry")
	}
	if n, bytes := c.stats(); n != 0 || bytes != 0 {
		t.Errorf("expired entry not removed: %d entries, %d bytes", n, bytes)
	}
	c.put(string(make([]byte, 11*per)), true, t0.Add(time.Second))
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
	a := newAnswers(100 * cost(key("app", 0)))
	for i := range 50 {
		a.put(key("app", i), true, later)
	}
	for i := range 10_000 {
		a.put(key("made-up", i), false, later)
	}
	for i := range 50 {
		if present, ok := a.get(key("app", i), t0); !ok || !present {
			t.Fatalf("present answer %d evicted by missing ones", i)
		}
	}
	if _, ok := a.get(key("made-up", 9_999), t0); !ok {
		t.Error("the latest missing answer is not kept")
	}
	if n, _ := a.missing.stats(); n > 25 {
		t.Errorf("%d missing answers kept, want at most a quarter of the bytes (25 entries)", n)
	}
	a.put(key("app", 0), false, later)
	if present, ok := a.get(key("app", 0), t0); !ok || present {
		t.Errorf("flipped to missing: got present %v, ok %v", present, ok)
	}
	a.put(key("app", 0), true, later)
	if present, ok := a.get(key("app", 0), t0); !ok || !present {
		t.Errorf("flipped back to present: got present %v, ok %v", present, ok)
	}
}
