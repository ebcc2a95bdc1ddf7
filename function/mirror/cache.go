package mirror

import (
	"container/list"
	"sync"
	"time"
)

// entryOverhead estimates the bytes one cache entry costs beyond its key and
// digest: the list element (48), the entry (56), the map slot with its
// string header and pointer (~40) and allocator rounding. It need not be
// exact, only of the right size, so that MIRROR_CACHE_SIZE bounds memory
// rather than a count.
const entryOverhead = 176

// answer is what the cache keeps of a lookup: present or not, and for a
// present manifest the digest its HEAD answered with ("" when the registry
// sent none that parses).
type answer struct {
	present bool
	digest  string
}

// cache is a least-recently-used map from reference to answer, each entry
// with its own expiry, bounded by the bytes of its entries (keys and
// digests). It is safe for concurrent use; every method is O(1).
type cache struct {
	mu    sync.Mutex
	max   int64 // bytes; entries are evicted from the back beyond it
	size  int64
	ll    *list.List // front is most recently used
	items map[string]*list.Element
}

type entry struct {
	key     string
	answer  answer
	expires time.Time
}

func newCache(maxBytes int64) *cache {
	return &cache{max: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

// cost is what an entry is counted for: its key, its digest and the
// overhead.
func cost(key string, a answer) int64 { return int64(len(key)+len(a.digest)) + entryOverhead }

// get returns the cached answer for key; ok is false when there is none or it
// has expired (an expired entry is removed).
func (c *cache) get(key string, now time.Time) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, found := c.items[key]
	if !found {
		return answer{}, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.remove(el)
		return answer{}, false
	}
	c.ll.MoveToFront(el)
	return e.answer, true
}

// put stores an answer until expires, evicting the least recently used
// entries while the cache is over its size. An entry that alone is larger
// than the cache is not stored.
func (c *cache) put(key string, a answer, expires time.Time) {
	n := cost(key, a)
	if n > c.max {
		c.delete(key)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.items[key]; found {
		e := el.Value.(*entry)
		// The digest may have changed (a tag moved): so may the cost.
		c.size += n - cost(e.key, e.answer)
		e.answer, e.expires = a, expires
		c.ll.MoveToFront(el)
	} else {
		c.items[key] = c.ll.PushFront(&entry{key: key, answer: a, expires: expires})
		c.size += n
	}
	for c.size > c.max {
		c.remove(c.ll.Back())
	}
}

// delete removes key's entry, if any.
func (c *cache) delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.items[key]; found {
		c.remove(el)
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*entry)
	delete(c.items, e.key)
	c.size -= cost(e.key, e.answer)
}

// stats returns the number of entries and their estimated bytes.
func (c *cache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len(), c.size
}

// answers keeps present and missing answers apart, each in its own share of
// the bytes: missing answers are what a flood of made-up references leaves
// behind, and they must not evict the present answers that the cluster's
// own images are served from. Present answers get three quarters.
type answers struct {
	present, missing *cache
}

func newAnswers(maxBytes int64) *answers {
	neg := maxBytes / 4
	return &answers{present: newCache(maxBytes - neg), missing: newCache(neg)}
}

func (a *answers) get(key string, now time.Time) (answer, bool) {
	if v, ok := a.present.get(key, now); ok {
		return v, true
	}
	if v, ok := a.missing.get(key, now); ok {
		return v, true
	}
	return answer{}, false
}

// put stores an answer, replacing an opposite one. A missing answer keeps
// no digest.
func (a *answers) put(key string, v answer, expires time.Time) {
	if v.present {
		a.missing.delete(key)
		a.present.put(key, v, expires)
		return
	}
	a.present.delete(key)
	a.missing.put(key, answer{}, expires)
}
