package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	// Every value lies in the range of its own bucket, buckets are in
	// order, and the relative width of a bucket is at most 1/128.
	values := []uint64{0, 1, 127, 128, 129, 255, 256, 257, 511, 512, 1000, 1e6, 123456789, 1 << 40, 1<<42 - 1}
	for range 1000 {
		values = append(values, rand.Uint64N(1<<42))
	}
	for _, v := range values {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if v >= subBuckets && float64(hi-lo+1)/float64(lo) > 1.0/subBuckets {
			t.Fatalf("bucket %d = [%d, %d] is wider than 1/%d", i, lo, hi, subBuckets)
		}
		if i > 0 {
			_, prevHi := bucketRange(i - 1)
			if prevHi+1 != lo {
				t.Fatalf("bucket %d starts at %d, bucket %d ends at %d", i, lo, i-1, prevHi)
			}
		}
	}
	if got := bucketOf(math.MaxUint64); got != numBuckets-1 {
		t.Fatalf("bucketOf(max) = %d, want the last bucket %d", got, numBuckets-1)
	}
}

// exactPercentile is the nearest-rank percentile of sorted values.
func exactPercentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestPercentiles(t *testing.T) {
	uniform := make([]time.Duration, 1000)
	for i := range uniform {
		uniform[i] = time.Duration(i+1) * time.Millisecond // 1ms..1000ms
	}
	small := []time.Duration{5, 1, 3, 2, 4} // ns: below 128, exact
	skewed := make([]time.Duration, 0, 10000)
	r := rand.New(rand.NewPCG(1, 2))
	for range 9900 {
		skewed = append(skewed, time.Duration(500_000+r.IntN(1_000_000))) // 0.5..1.5ms
	}
	for range 100 {
		skewed = append(skewed, time.Duration(50+r.IntN(100))*time.Millisecond) // a slow tail
	}
	tests := []struct {
		name   string
		values []time.Duration
		exact  bool // histogram percentiles must equal the exact ones
	}{
		{"uniform", uniform, false},
		{"small exact values", small, true},
		{"one value", []time.Duration{42 * time.Millisecond}, false},
		{"skewed with tail", skewed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for _, v := range tt.values {
				h.Record(v)
			}
			sorted := slices.Sorted(slices.Values(tt.values))
			if got := h.Count(); got != uint64(len(sorted)) {
				t.Errorf("Count = %d, want %d", got, len(sorted))
			}
			if h.Min() != sorted[0] || h.Max() != sorted[len(sorted)-1] {
				t.Errorf("Min, Max = %v, %v, want %v, %v", h.Min(), h.Max(), sorted[0], sorted[len(sorted)-1])
			}
			if h.Percentile(100) != h.Max() {
				t.Errorf("Percentile(100) = %v, want Max %v", h.Percentile(100), h.Max())
			}
			var sum time.Duration
			for _, v := range sorted {
				sum += v
			}
			if want := sum / time.Duration(len(sorted)); absDiff(h.Mean(), want) > 1 {
				t.Errorf("Mean = %v, want %v", h.Mean(), want)
			}
			for _, p := range []float64{1, 50, 90, 99, 99.9} {
				want := exactPercentile(sorted, p)
				got := h.Percentile(p)
				if tt.exact {
					if got != want {
						t.Errorf("p%g = %v, want exactly %v", p, got, want)
					}
					continue
				}
				if rel := float64(absDiff(got, want)) / float64(want); rel > 1.0/256 {
					t.Errorf("p%g = %v, want %v within 1/256 (off by %.4f)", p, got, want, rel)
				}
			}
		})
	}
}

func TestHistogramEmptyAndMerge(t *testing.T) {
	empty := NewHistogram()
	if empty.Percentile(50) != 0 || empty.Mean() != 0 || empty.Max() != 0 || empty.Count() != 0 {
		t.Fatalf("empty histogram: p50 %v mean %v max %v count %d", empty.Percentile(50), empty.Mean(), empty.Max(), empty.Count())
	}
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := range 2000 {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	merged := NewHistogram()
	merged.Merge(a)
	merged.Merge(empty)
	merged.Merge(nil)
	merged.Merge(b)
	if merged.Count() != all.Count() || merged.Min() != all.Min() || merged.Max() != all.Max() || merged.Mean() != all.Mean() {
		t.Fatalf("merged count/min/max/mean %d %v %v %v, want %d %v %v %v",
			merged.Count(), merged.Min(), merged.Max(), merged.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, p := range []float64{50, 90, 99, 99.9} {
		if merged.Percentile(p) != all.Percentile(p) {
			t.Errorf("merged p%g = %v, want %v", p, merged.Percentile(p), all.Percentile(p))
		}
	}
	neg := NewHistogram()
	neg.Record(-time.Second)
	if neg.Min() != 0 || neg.Max() != 0 {
		t.Errorf("a negative duration counts as 0: min %v max %v", neg.Min(), neg.Max())
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}
