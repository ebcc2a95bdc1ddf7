package admission_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// BenchmarkAdmitPodMirror is Admit on the realistic Pod (its digest-pinned
// image unpinned, so that all four images exist) with the mirror check off,
// on with a warm cache, and on with no cache (MIRROR_CACHE_TTL=0: every
// review HEADs its four images on a registry on loopback), each of the
// latter two with PIN_DIGESTS off and on (pin-…: the four images pinned to
// the digests the check found). It reports p50 and p99 of the reviews and
// the registry HEADs per review.
func BenchmarkAdmitPodMirror(b *testing.B) {
	reg := mirrortest.New(b, mirrortest.Options{})
	for _, img := range []string{"nginx:1.27.3", "example/shop-api:2.14.1", "prometheus/statsd-exporter:v0.28.0", "example/shop-migrate:2.14.1"} {
		reg.Push(b, "mirror/"+img)
	}
	req := loadReview(b, "pod-review.json")
	req.Object.Raw = []byte(strings.Replace(string(req.Object.Raw), "@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "", 1))
	cfg := benchConfig()
	cfg.Registry = reg.Host + "/mirror"
	cfg.MirrorCheck, cfg.MirrorMissing, cfg.MirrorUnreachable = true, "deny", "deny"
	cfg.MirrorCheckTimeout, cfg.MirrorCheckReviewBudget = time.Second, 2*time.Second

	for _, bc := range []struct {
		name   string
		check  bool
		posTTL time.Duration
		pin    bool
	}{{"off", false, 0, false}, {"warm", true, time.Hour, false}, {"pin-warm", true, time.Hour, true},
		{"cold", true, 0, false}, {"pin-cold", true, 0, true}} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := cfg
			cfg.PinDigests = bc.pin
			c := testkit.Controller(b, cfg, nil)
			if bc.check {
				checker, err := mirror.New(b.Context(), mirror.Options{Timeout: time.Second, PositiveTTL: bc.posTTL})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = checker.Close(context.Background()) })
				if err := c.CheckMirror(checker, testkit.Config(b, cfg).Mirror); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			resp := c.Admit(ctx, req) // warms the cache
			if !resp.Allowed || len(resp.Patch) == 0 {
				b.Fatalf("response %+v", resp.Result)
			}
			if pinned := strings.Count(string(resp.Patch), "@sha256:"); bc.pin != (pinned == 4) {
				b.Fatalf("%d images pinned in the patch with PIN_DIGESTS %v: %s", pinned, bc.pin, resp.Patch)
			}
			heads := reg.ManifestHeads()
			var durations []time.Duration
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				resp := c.Admit(ctx, req)
				durations = append(durations, time.Since(start))
				if !resp.Allowed || len(resp.Patch) == 0 {
					b.Fatalf("response %+v", resp.Result)
				}
			}
			slices.Sort(durations)
			b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(durations[len(durations)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(reg.ManifestHeads()-heads)/float64(len(durations)), "HEADs/review")
		})
	}
}
