package images

import "sync"

// memoSize bounds the memo: a few hundred KiB at most, whatever images
// clients send.
const memoSize = 4096

// memo is a bounded map of image to rewritten image. When full it starts
// over, which keeps it bounded without bookkeeping per entry; images in use
// are back after one review each.
type memo struct {
	mu  sync.RWMutex
	m   map[string]string
	max int
}

func newMemo(max int) *memo { return &memo{m: make(map[string]string), max: max} }

func (c *memo) get(k string) (string, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *memo) put(k, v string) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		c.m = make(map[string]string, c.max)
	}
	c.m[k] = v
	c.mu.Unlock()
}
