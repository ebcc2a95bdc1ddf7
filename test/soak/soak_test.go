//go:build linux && soak

package soak

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/test/load/loadgen"
)

// Memory bounds for the soak tests: the resident set after the run may
// exceed the one after warm-up by at most maxRSSGrowth, and never
// maxRSS. Generous on purpose: they catch leaks, not tuning.
const (
	maxRSSGrowth = 20 << 20
	maxRSS       = 80 << 20
)

// TestSoak holds a fixed rate with zero errors and flat memory. make test
// runs the short form (500 req/s for 10 s after a 2 s warm-up); make soak
// sets SOAK_DURATION (60s) and SOAK_RATE (1000) for the long one.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped in -short mode")
	}
	duration, rate, warmup := 10*time.Second, 500.0, 2*time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION=%q: not a positive duration", v)
		}
		duration, rate, warmup = d, 1000, 5*time.Second
	}
	if v := os.Getenv("SOAK_RATE"); v != "" {
		var err error
		if rate, err = strconv.ParseFloat(v, 64); err != nil || rate <= 0 {
			t.Fatalf("SOAK_RATE=%q: not a positive number", v)
		}
	}
	soak(t, rate, warmup, duration)
}

// soak runs a fixed rate for warmup, then for duration while sampling the
// mutator's resident set every second, and checks that every request got
// a valid answer and that memory stayed bounded.
func soak(t *testing.T, rate float64, warmup, duration time.Duration) {
	m := startMutator(t, "mutator", 0, "LOG_LEVEL=info")
	idle := m.rss(t)
	cfg := loadgen.Config{
		Targets: []string{m.url}, Body: podReview, Rate: rate, TLS: clientTLS(t), ExpectPatch: true,
	}
	ctx := context.Background()

	cfg.Duration = warmup
	warm, err := loadgen.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if warm.Errors != 0 {
		t.Fatalf("warm-up: %d errors %v %v", warm.Errors, warm.ErrorsByKind, warm.ErrorSamples)
	}
	afterWarmup := m.rss(t)

	samples := make(chan []int64, 1)
	stopSampling := make(chan struct{})
	go func() {
		var s []int64
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				samples <- s
				return
			case <-tick.C:
				if rss, err := loadgen.RSS(m.pid()); err == nil {
					s = append(s, rss)
				}
			}
		}
	}()
	cfg.Duration = duration
	sum, err := loadgen.Run(ctx, cfg)
	close(stopSampling)
	rssSamples := <-samples
	if err != nil {
		t.Fatal(err)
	}
	end := m.rss(t)
	m.stop(t)

	peak := end
	for _, s := range rssSamples {
		peak = max(peak, s)
	}
	t.Logf("%.0f req/s for %s: %d requests, %d ok, %d errors, %d missed, %d late; throughput %.1f req/s",
		rate, duration, sum.Requests, sum.OK, sum.Errors, sum.Missed, sum.Late, sum.Throughput)
	t.Logf("latency p50 %s p90 %s p99 %s max %s (not asserted)", sum.Latency.P50, sum.Latency.P90, sum.Latency.P99, sum.Latency.Max)
	t.Logf("RSS idle %.1f MiB, after warm-up %.1f MiB, end %.1f MiB, peak %.1f MiB (%d samples)",
		mib(idle), mib(afterWarmup), mib(end), mib(peak), len(rssSamples))

	if sum.Requests == 0 || sum.Errors != 0 || sum.OK != sum.Requests {
		t.Errorf("%d requests, %d ok, errors %v %v", sum.Requests, sum.OK, sum.ErrorsByKind, sum.ErrorSamples)
	}
	if end-afterWarmup > maxRSSGrowth {
		t.Errorf("RSS grew by %.1f MiB during the run (%.1f to %.1f MiB), want at most %.0f MiB",
			mib(end-afterWarmup), mib(afterWarmup), mib(end), mib(maxRSSGrowth))
	}
	if end > maxRSS {
		t.Errorf("RSS %.1f MiB at the end, want at most %.0f MiB", mib(end), mib(maxRSS))
	}
	if logs := m.readLog(t); len(logs.problems) > 0 {
		t.Errorf("the mutator logged %d warnings or errors, first: %s", len(logs.problems), logs.problems[0])
	}
}

// TestDrainOnSIGTERM sends SIGTERM under closed-loop load. The server log
// (LOG_LEVEL=debug names every reviewed uid) says which requests the
// server accepted; each of them must have got a complete, valid answer.
// Requests that failed must have failed at the connection level and never
// reached the server: refused after the listener closed, or (HTTP/1.1)
// written onto a keep-alive connection the server closed as idle.
func TestDrainOnSIGTERM(t *testing.T) {
	for _, http1 := range []bool{false, true} {
		name := "HTTP/2"
		if http1 {
			name = "HTTP/1.1"
		}
		t.Run(name, func(t *testing.T) {
			const delay = time.Second
			env := []string{"LOG_LEVEL=debug", "SHUTDOWN_DELAY=" + delay.String()}
			if !http1 {
				env = append(env, "ENABLE_HTTP2=true")
			}
			m := startMutator(t, "mutator", 0, env...)
			tlsCfg := clientTLS(t)
			tr := newTracker()
			load := runBackground(loadgen.Config{
				Targets: []string{m.url}, Body: podReview, Workers: 8, Duration: 2 * bound,
				TLS: tlsCfg, HTTP1: http1, HTTP2: !http1, ExpectPatch: true, OnResult: tr.add,
			})
			tr.waitOK(t, m.url, 200)

			sigterm := time.Now()
			m.signal(t, syscall.SIGTERM)
			// Readiness fails during the delay, while reviews are
			// still served.
			sawNotReady := false
			for !sawNotReady && time.Since(sigterm) < bound {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				code, err := loadgen.Probe(ctx, tlsCfg, m.url)
				cancel()
				if err != nil {
					break // the listener closed
				}
				sawNotReady = code == http.StatusServiceUnavailable
				time.Sleep(20 * time.Millisecond)
			}
			m.waitExit(t)
			exited := time.Now()
			if _, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(m.port), bound); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("connecting after exit: %v, want connection refused", err)
			}
			// Keep sending for a moment after exit: those requests must
			// fail as refused, not hang.
			for time.Since(exited) < 300*time.Millisecond {
				time.Sleep(10 * time.Millisecond)
			}
			sum := load.stop(t)
			logs := m.readLog(t)

			var accepted, refused, unsent, okDuringDelay, failedBeforeSIGTERM int
			for _, r := range tr.snapshot() {
				took := logs.reviewed[r.UID]
				switch {
				case took && !r.OK():
					t.Errorf("LOST: the server reviewed %s but the client got %s: %v", r.UID, r.Kind, r.Err)
				case took:
					accepted++
					if r.Start.After(sigterm) {
						okDuringDelay++
					}
				case r.OK():
					t.Errorf("answer for %s that the server never logged reviewing", r.UID)
				case r.Kind == loadgen.KindConnect:
					refused++
				case r.Kind == loadgen.KindUnanswered && http1:
					unsent++
				default:
					t.Errorf("request %s failed with %s (not a connection-level failure): %v", r.UID, r.Kind, r.Err)
				}
				if !r.OK() && r.Start.Before(sigterm) {
					failedBeforeSIGTERM++
				}
			}
			t.Logf("%d requests: %d accepted and answered (%d of them sent after SIGTERM), %d refused after the listener closed, %d unanswered on connections closed as idle; readiness 503 seen: %t; errors %v",
				sum.Requests, accepted, okDuringDelay, refused, unsent, sawNotReady, sum.ErrorsByKind)
			if len(logs.reviewed) != accepted {
				t.Errorf("the server reviewed %d requests, the client got %d of those answers", len(logs.reviewed), accepted)
			}
			if failedBeforeSIGTERM > 0 {
				t.Errorf("%d requests sent before SIGTERM failed", failedBeforeSIGTERM)
			}
			if !sawNotReady {
				t.Errorf("readiness never answered 503 during the %s shutdown delay", delay)
			}
			if okDuringDelay == 0 {
				t.Errorf("no request sent after SIGTERM was answered: the server stopped serving before the shutdown delay ended")
			}
			if refused == 0 {
				t.Errorf("no request was refused after the process exited")
			}
			if len(logs.problems) > 0 {
				t.Errorf("the mutator logged %d warnings or errors, first: %s", len(logs.problems), logs.problems[0])
			}
		})
	}
}

// TestRestartUnderLoad is a rolling restart of two instances, A and B,
// under load sent round-robin to both by clients that retry a refused
// connection on the other instance: B starts, A drains and exits, A comes
// back on its port, B drains and exits. No request may fail, and every
// request is reviewed by exactly one instance.
func TestRestartUnderLoad(t *testing.T) {
	env := []string{"LOG_LEVEL=debug", "SHUTDOWN_DELAY=1s"}
	a := startMutator(t, "a", 0, env...)
	portB, err := loadgen.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	urlB := "https://127.0.0.1:" + strconv.Itoa(portB) + "/mutate"
	tr := newTracker()
	load := runBackground(loadgen.Config{
		Targets: []string{a.url, urlB}, Body: podReview, Workers: 4, Duration: 6 * bound,
		TLS: clientTLS(t), ExpectPatch: true, RetryConnect: true, OnResult: tr.add,
	})
	var instances []*mutator
	var mu sync.Mutex
	keep := func(m *mutator) *mutator {
		mu.Lock()
		defer mu.Unlock()
		instances = append(instances, m)
		return m
	}
	keep(a)

	tr.waitOK(t, a.url, 100) // B is not up yet: its share is retried on A
	b := keep(startMutator(t, "b", portB, env...))
	tr.waitOK(t, urlB, 100)
	a.stop(t)
	tr.waitOK(t, urlB, 100) // A is gone: its share is retried on B
	a2 := keep(startMutator(t, "a2", a.port, env...))
	tr.waitOK(t, a.url, 100)
	b.stop(t)
	tr.waitOK(t, a.url, 100)
	sum := load.stop(t)
	a2.stop(t)

	reviewedBy := map[string]string{}
	for _, m := range instances {
		logs := m.readLog(t)
		for uid := range logs.reviewed {
			if other, dup := reviewedBy[uid]; dup {
				t.Errorf("uid %s reviewed by both %s and %s", uid, other, m.name)
			}
			reviewedBy[uid] = m.name
		}
		if len(logs.problems) > 0 {
			t.Errorf("%s logged %d warnings or errors, first: %s", m.name, len(logs.problems), logs.problems[0])
		}
	}
	answered := 0
	for _, r := range tr.snapshot() {
		if !r.OK() {
			t.Errorf("request %s to %s failed after %d retries: %s: %v", r.UID, r.Target, r.Retries, r.Kind, r.Err)
			continue
		}
		answered++
		if reviewedBy[r.UID] == "" {
			t.Errorf("answer for %s that no instance logged reviewing", r.UID)
		}
	}
	t.Logf("%d requests, %d answered, %d retried on the other instance, errors %v; reviewed: %d",
		sum.Requests, answered, sum.Retried, sum.ErrorsByKind, len(reviewedBy))
	if sum.Errors != 0 {
		t.Errorf("errors %v %v", sum.ErrorsByKind, sum.ErrorSamples)
	}
	if len(reviewedBy) != answered {
		t.Errorf("%d requests reviewed, %d answered", len(reviewedBy), answered)
	}
	if sum.Retried == 0 {
		t.Errorf("no request was retried: the restart was not exercised")
	}
}
