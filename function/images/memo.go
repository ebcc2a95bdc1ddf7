package images

import "sync"

// The memo's bounds: entries and bytes, whichever is reached first. Entries
// are at most MaxReferenceLength long (longer images never reach the memo),
// so the byte bound is what holds when clients send long images: about
// 1 MiB of strings at most, whatever they send.
const (
	memoEntries = 4096
	memoBytes   = 1 << 20
	// entryOverhead approximates a map entry's own size (two string
	// headers, an error interface and the bucket's share).
	entryOverhead = 64
)

// memoEntry is one remembered Rewrite result.
type memoEntry struct {
	out string
	err error
}

// memo is a bounded map of image to Rewrite result. When full it starts
// over, which keeps it bounded without bookkeeping per entry; images in use
// are back after one review each.
type memo struct {
	mu         sync.RWMutex
	m          map[string]memoEntry
	bytes      int
	maxEntries int
	maxBytes   int
}

func newMemo(maxEntries, maxBytes int) *memo {
	return &memo{m: make(map[string]memoEntry), maxEntries: maxEntries, maxBytes: maxBytes}
}

func (c *memo) get(k string) (memoEntry, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *memo) put(k string, v memoEntry) {
	size := len(k) + entryOverhead
	if v.out != k {
		size += len(v.out)
	}
	c.mu.Lock()
	if _, ok := c.m[k]; !ok {
		if len(c.m) >= c.maxEntries || c.bytes+size > c.maxBytes {
			c.m = make(map[string]memoEntry, len(c.m))
			c.bytes = 0
		}
		c.m[k] = v
		c.bytes += size
	}
	c.mu.Unlock()
}

// size reports the entries and bytes held, for tests.
func (c *memo) size() (entries, bytes int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m), c.bytes
}
