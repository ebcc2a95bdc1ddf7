package cluster

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 50)
	for i := range ds {
		ds[i] = time.Duration(50-i) * time.Second // unsorted
	}
	for _, tt := range []struct {
		p    int
		want time.Duration
	}{{50, 25 * time.Second}, {99, 50 * time.Second}, {1, time.Second}, {100, 50 * time.Second}} {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(p%d) = %s, want %s", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %s, want 0", got)
	}
}
