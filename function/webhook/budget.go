package webhook

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// DefaultBodyBudget is how many bytes of request bodies of up to
// knativeMaxBody the handler holds at once unless told otherwise. Each body
// in flight costs the process about five times its size (our buffer,
// knative's decoder buffer and its copy of the body, the decoded object's
// raw bytes). Measured with 200 concurrent 3 MiB bodies (test/soak
// TestLargeBodyFlood): a 24 MiB budget peaked at 119 MiB resident, too
// close to the manifests' 128 MiB limit; 12 MiB (three 3 MiB reviews at
// once, the rest for ordinary ones) peaked at 101 MiB. The bytes of a review
// past knativeMaxBody are not counted here but in the single huge-review
// slot (see reservation.grow).
const DefaultBodyBudget = 12 << 20

// smallBody is the size up to which a body counts as an ordinary review:
// real Pod reviews are a few KB, and the API server's largest objects rarely
// pass 100 KB.
const smallBody = 256 << 10

// budget bounds the bytes of request bodies held at once, counting only
// bytes that have arrived: a client that sends headers and then nothing, or
// trickles its body, holds no more than it has sent. A quarter of it is kept
// for small bodies, so that large ones cannot starve the ordinary reviews
// of the API server; and one client (remote address) may hold at most the
// large share less one largest ordinary body, so that one client alone
// always leaves room for another's large review.
type budget struct {
	size      int64
	total     *semaphore.Weighted // every body's bytes up to knativeMaxBody
	large     *semaphore.Weighted // bytes of bodies over smallBody, also counted in total
	perClient int64               // most bytes of the large share one client may hold

	// huge admits one review over knativeMaxBody at a time: such a review
	// is decoded whole (about twice its size) and may be up to
	// MaxReviewBytes, so two at once could pass the memory limit.
	huge *semaphore.Weighted

	mu      sync.Mutex
	clients map[string]int64 // large-share bytes held, by client
	freed   chan struct{}    // closed (and replaced) when large-share bytes are given back
}

func newBudget(size int64) *budget {
	if size <= 0 {
		size = DefaultBodyBudget
	}
	if size < knativeMaxBody {
		// A budget below the largest ordinary body would refuse every
		// large review outright.
		size = knativeMaxBody
	}
	largeShare := max(size-size/4, knativeMaxBody)
	return &budget{
		size:      size,
		total:     semaphore.NewWeighted(size),
		large:     semaphore.NewWeighted(largeShare),
		perClient: max(largeShare-knativeMaxBody, knativeMaxBody),
		huge:      semaphore.NewWeighted(1),
		clients:   map[string]int64{},
		freed:     make(chan struct{}),
	}
}

// reservation is what one request holds of the budget. It grows as the
// body arrives and is released once, when the request is done.
type reservation struct {
	ctx    context.Context // the request's, bounds the wait for the huge slot
	b      *budget
	client string
	large  bool  // counted in the large share (declared or grown over smallBody)
	held   int64 // bytes held in total (and in large, when large)
	huge   bool  // holds the huge-review slot
}

// reserve starts a reservation for a request from client whose body
// declares length bytes (-1: unknown). Nothing is held yet.
func (b *budget) reserve(ctx context.Context, client string, length int64) *reservation {
	return &reservation{ctx: ctx, b: b, client: client, large: length > smallBody}
}

// hugeWait bounds how long a review past knativeMaxBody waits for the slot
// another one holds, and largeWait how long a large body waits for room in
// the large share. Small bodies never wait: their share is kept for them.
const (
	hugeWait  = 2 * time.Second
	largeWait = time.Second
)

// grow accounts for n more bytes of body that have arrived, total being the
// body's size with them. It reports false, holding what it held before,
// when they do not fit: the request must then be answered without them. Only
// the first byte past knativeMaxBody may wait, for the huge-review slot.
func (r *reservation) grow(n, total int64) bool {
	b := r.b
	if total > knativeMaxBody {
		// Past knative's limit the review is decoded by the handler
		// itself, one at a time; its bytes from here on are counted by
		// that slot (bounded by MaxReviewBytes), not by the budget.
		if !r.huge {
			// Waiting, briefly, rather than refusing: the slot is held
			// for the time one review takes to decode and rewrite,
			// and concurrent large reviews are legitimate (a rollout
			// of a Pod that carries a large annotation).
			ctx, cancel := context.WithTimeout(r.ctx, hugeWait)
			err := b.huge.Acquire(ctx, 1)
			cancel()
			if err != nil {
				return false
			}
			r.huge = true
		}
		n -= total - knativeMaxBody
		if n <= 0 {
			return true
		}
	}
	if !r.large && total > smallBody {
		// A body without a declared length has just become large: what it
		// holds moves into the large share too.
		if !r.acquireLarge(r.held) {
			return false
		}
		r.large = true
	}
	if r.large && !r.acquireLarge(n) && !r.waitLarge(n) {
		return false
	}
	if !b.total.TryAcquire(n) {
		if r.large {
			r.releaseLarge(n)
		}
		return false
	}
	r.held += n
	return true
}

func (r *reservation) acquireLarge(n int64) bool {
	if n == 0 {
		return true
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.clients[r.client]+n > b.perClient || !b.large.TryAcquire(n) {
		return false
	}
	b.clients[r.client] += n
	return true
}

// waitLarge waits, up to largeWait, for n bytes of the large share to be
// given back by other requests: large reviews that come together (a
// rollout) take turns instead of being refused.
func (r *reservation) waitLarge(n int64) bool {
	timer := time.NewTimer(largeWait)
	defer timer.Stop()
	for {
		r.b.mu.Lock()
		freed := r.b.freed
		r.b.mu.Unlock()
		if r.acquireLarge(n) {
			return true
		}
		select {
		case <-freed:
		case <-timer.C:
			return false
		case <-r.ctx.Done():
			return false
		}
	}
}

func (r *reservation) releaseLarge(n int64) {
	if n == 0 {
		return
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.large.Release(n)
	if b.clients[r.client] -= n; b.clients[r.client] <= 0 {
		delete(b.clients, r.client)
	}
	close(b.freed)
	b.freed = make(chan struct{})
}

// release gives back everything the reservation holds.
func (r *reservation) release() {
	if r.large {
		r.releaseLarge(r.held)
	}
	if r.held > 0 {
		r.b.total.Release(r.held)
	}
	if r.huge {
		r.b.huge.Release(1)
	}
	r.held, r.huge = 0, false
}
