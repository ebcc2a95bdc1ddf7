package webhook

import (
	"golang.org/x/sync/semaphore"
)

// DefaultBodyBudget is how many bytes of request bodies the handler holds
// at once unless told otherwise. Each body in flight costs the process about
// five times its size (our buffer, knative's decoder buffer and its copy of
// the body, the decoded object's raw bytes). Measured with 200 concurrent
// 3 MiB bodies (test/soak TestLargeBodyFlood): a 24 MiB budget peaked at
// 119 MiB resident, too close to the manifests' 128 MiB limit; 12 MiB (three
// 3 MiB reviews at once, the rest for ordinary ones) peaked at 101 MiB.
const DefaultBodyBudget = 12 << 20

// smallBody is the size up to which a body counts as an ordinary review:
// real Pod reviews are a few KB, and the API server's largest objects rarely
// pass 100 KB.
const smallBody = 256 << 10

// budget bounds the bytes of request bodies held at once. A quarter of it
// is kept for small bodies, so that a flood of large ones cannot starve the
// ordinary reviews of the API server.
type budget struct {
	size  int64
	total *semaphore.Weighted // every body
	large *semaphore.Weighted // bodies over smallBody, also counted in total
}

func newBudget(size int64) *budget {
	if size <= 0 {
		size = DefaultBodyBudget
	}
	if size < MaxBodyBytes {
		// A budget below the largest body would refuse every large
		// review outright.
		size = MaxBodyBytes
	}
	largeShare := size - size/4
	if largeShare < MaxBodyBytes {
		largeShare = MaxBodyBytes
	}
	return &budget{size: size, total: semaphore.NewWeighted(size), large: semaphore.NewWeighted(largeShare)}
}

// acquire reserves n bytes without waiting; ok is false when they do not
// fit now. release must be called once the body is no longer held.
func (b *budget) acquire(n int64) (release func(), ok bool) {
	if n > smallBody {
		if !b.large.TryAcquire(n) {
			return nil, false
		}
		if !b.total.TryAcquire(n) {
			b.large.Release(n)
			return nil, false
		}
		return func() { b.total.Release(n); b.large.Release(n) }, true
	}
	if !b.total.TryAcquire(n) {
		return nil, false
	}
	return func() { b.total.Release(n) }, true
}
