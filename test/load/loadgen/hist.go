package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations in log-linear buckets, in the manner of an HDR
// histogram: values below 2^subBits ns are exact, larger ones are kept to
// subBits+1 significant bits, so a percentile is within 1/2^(subBits+1)
// (0.4 %) of a recorded value whatever the run length. Memory is fixed
// (about 36 KiB) however many values are recorded. Minimum, maximum and mean
// are exact. The zero value is not usable: call NewHistogram. A Histogram is
// not safe for concurrent use; record per goroutine and Merge.
type Histogram struct {
	counts   []uint64
	n        uint64
	sum      float64 // nanoseconds; float64 so a long run cannot overflow
	min, max time.Duration
}

const (
	subBits    = 7
	subBuckets = 1 << subBits // values below this many ns are exact
	// maxShift bounds the range: values below 2^(maxShift+subBits+1) ns
	// (about 73 minutes) get their own bucket, longer ones share the last.
	maxShift   = 34
	numBuckets = (maxShift + 2) * subBuckets
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, numBuckets)}
}

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1 // v>>shift is in [128, 256)
	if shift > maxShift {
		return numBuckets - 1
	}
	return (shift+1)*subBuckets + int(v>>uint(shift)) - subBuckets
}

// bucketRange returns the smallest and largest value in bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subBuckets {
		return uint64(i), uint64(i)
	}
	shift := uint(i/subBuckets - 1)
	mantissa := uint64(i%subBuckets + subBuckets)
	lo = mantissa << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += float64(d)
	h.counts[bucketOf(uint64(d))]++
}

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest recorded value, 0 when empty.
func (h *Histogram) Min() time.Duration { return h.min }

// Max returns the largest recorded value, 0 when empty.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean returns the arithmetic mean, 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.n)))
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100): the
// smallest recorded value that at least p % of values do not exceed, to the
// histogram's precision. It reports the middle of the bucket that value fell
// in, clamped to the exact minimum and maximum, so Percentile(100) is Max
// and the result for values below 128 ns is exact. Empty: 0.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if p >= 100 {
		return h.max
	}
	if p <= 0 {
		return h.min
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen < rank {
			continue
		}
		lo, hi := bucketRange(i)
		v := time.Duration(lo + (hi-lo)/2)
		return min(max(v, h.min), h.max)
	}
	return h.max
}
