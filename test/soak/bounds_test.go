//go:build linux && soak

package soak

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mutator-dev/mutator/test/load/loadgen"

	"github.com/mutator-dev/mutator/internal/testkit"
)

// memoryLimit is the memory limit of the shipped manifests (128Mi): the
// process must stay below it whatever it is sent.
const memoryLimit = 128 << 20

// keepAliveClient is an HTTP/1.1 keep-alive client, as the API server's
// webhook client is (k8s.io/apiserver pkg/util/webhook: http/1.1 only for
// Service references).
func keepAliveClient(t *testing.T, conns int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:     clientTLS(t),
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext:         dial,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: bound}
}

// review posts body and returns the status, or an error for a failed
// exchange. A 200 answer that denies the review returns the code of its
// status instead (the webhook refuses what it will not process that way,
// so that the API server cannot fail open), as a negative number.
func review(ctx context.Context, c *http.Client, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode == http.StatusOK {
		var r admissionv1.AdmissionReview
		if err := json.Unmarshal(answer, &r); err != nil || r.Response == nil {
			return resp.StatusCode, fmt.Errorf("200 without an AdmissionReview: %.200s", answer)
		}
		if !r.Response.Allowed && r.Response.Result != nil {
			return -int(r.Response.Result.Code), nil
		}
	}
	return resp.StatusCode, nil
}

// peakRSS samples the process's resident set until stop is closed and
// returns the largest sample and the kernel's high-water mark.
func peakRSS(t *testing.T, m *mutator, stop <-chan struct{}) (peak int64, hwm int64) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if rss, err := loadgen.RSS(m.pid()); err == nil && rss > peak {
			peak = rss
		}
		select {
		case <-stop:
			return peak, statusField(t, m.pid(), "VmHWM:")
		case <-tick.C:
		}
	}
}

// statusField reads a kB field of /proc/PID/status, in bytes.
func statusField(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// largeReview is an AdmissionReview of about size bytes: a Pod whose
// annotation is padding, as a client can send straight to the port.
func largeReview(t *testing.T, size int) []byte {
	t.Helper()
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "team", Annotations: map[string]string{"pad": strings.Repeat("x", size-1024)}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
	return reviewOf(t, &pod)
}

// reviewOf is the AdmissionReview of a CREATE of pod.
func reviewOf(t *testing.T, pod *corev1.Pod) []byte {
	t.Helper()
	return reviewOfOp(t, pod, admissionv1.Create)
}

// reviewOfOp is the AdmissionReview of op on pod; an UPDATE carries pod as
// object and oldObject, as the API server sends it.
func reviewOfOp(t *testing.T, pod *corev1.Pod, op admissionv1.Operation) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	req := &admissionv1.AdmissionRequest{
		UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "team", Operation: op, Object: runtime.RawExtension{Raw: raw},
	}
	if op == admissionv1.Update {
		req.OldObject = req.Object
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLargeBodyFlood sends 200 concurrent 3 MiB AdmissionReviews in a loop
// while an ordinary review is sent every 10 ms. The process must stay
// under the manifests' memory limit, every ordinary review must be
// answered 200, and the flood must be refused (a denial with code 429,
// which the API server retries) rather than queued.
func TestLargeBodyFlood(t *testing.T) {
	m := startMutator(t, "flood", 0)
	big := largeReview(t, 3<<20-4096)
	const flooders = 200
	floodFor := 5 * time.Second
	if testing.Short() {
		floodFor = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()

	stopSampling := make(chan struct{})
	type peaks struct{ rss, hwm int64 }
	sampled := make(chan peaks, 1)
	go func() {
		p, h := peakRSS(t, m, stopSampling)
		sampled <- peaks{p, h}
	}()

	var statuses sync.Map // status code -> *atomic.Int64
	count := func(code int) {
		v, _ := statuses.LoadOrStore(code, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	flood := keepAliveClient(t, flooders, nil)
	var wg sync.WaitGroup
	for range flooders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				code, err := review(ctx, flood, m.url, big)
				if err != nil {
					code = -1 // the server may close a refused request's connection mid-body
				}
				count(code)
			}
		}()
	}

	normal := keepAliveClient(t, 1, nil)
	var latencies []time.Duration
	var failures []string
	for ctx.Err() == nil {
		start := time.Now()
		code, err := review(context.Background(), normal, m.url, podReview)
		latencies = append(latencies, time.Since(start))
		if err != nil || code != http.StatusOK {
			failures = append(failures, fmt.Sprintf("status %d, %v", code, err))
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	close(stopSampling)
	p := <-sampled

	within := 0
	for _, l := range latencies {
		if l <= 2*time.Second {
			within++
		}
	}
	slices.Sort(latencies)
	var summary []string
	statuses.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%v: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(summary)
	t.Logf("flood of %d x %d-byte reviews for %s: answers %v; peak RSS %.1f MiB (VmHWM %.1f MiB); ordinary reviews: %d, %d failed, %.1f%% within 2 s, p50 %s, max %s",
		flooders, len(big), floodFor, summary, mib(p.rss), mib(p.hwm), len(latencies), len(failures),
		100*float64(within)/float64(len(latencies)), latencies[len(latencies)/2], latencies[len(latencies)-1])
	if p.hwm >= memoryLimit {
		t.Errorf("resident set peaked at %.1f MiB, at or over the %.0f MiB limit", mib(p.hwm), mib(memoryLimit))
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d ordinary reviews failed during the flood, first: %s", len(failures), len(latencies), failures[0])
	}
	if v, ok := statuses.Load(-http.StatusTooManyRequests); !ok || v.(*atomic.Int64).Load() == 0 {
		t.Errorf("no large review was denied with code 429: the budget was not exercised (%v)", summary)
	}
	if v, ok := statuses.Load(http.StatusTooManyRequests); ok {
		t.Errorf("%d large reviews were answered HTTP 429, which failurePolicy Ignore admits unmutated (%v)", v.(*atomic.Int64).Load(), summary)
	}
}

// TestHugeReviews: reviews past knative's 3 MiB limit, up to the largest
// an API server sends (an UPDATE of the largest Pod etcd stores, every
// byte escaped), are answered 200 with an AdmissionReview, concurrent ones
// included, and the process stays under the manifests' memory limit.
func TestHugeReviews(t *testing.T) {
	m := startMutator(t, "huge", 0)
	// An annotation of '<', which the review's JSON escapes six-fold.
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "big", Namespace: "team", Annotations: map[string]string{"pad": strings.Repeat("<", 1400<<10)}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
	huge := reviewOfOp(t, pod, admissionv1.Update)
	stop := make(chan struct{})
	type peaks struct{ rss, hwm int64 }
	sampled := make(chan peaks, 1)
	go func() {
		p, h := peakRSS(t, m, stop)
		sampled <- peaks{p, h}
	}()
	const clients, rounds = 3, 5
	client := keepAliveClient(t, clients, nil)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[int]int{}
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				code, err := review(context.Background(), client, m.url, huge)
				if err != nil {
					code = -1
				}
				mu.Lock()
				answers[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	p := <-sampled
	t.Logf("%d x %d-byte UPDATE reviews from %d clients: answers %v (negative: denial code); peak RSS %.1f MiB (VmHWM %.1f MiB)",
		clients*rounds, len(huge), clients, answers, mib(p.rss), mib(p.hwm))
	if len(huge) <= 3<<20 {
		t.Fatalf("precondition: the review is %d bytes, not past knative's 3 MiB", len(huge))
	}
	if answers[http.StatusOK] == 0 {
		t.Errorf("no huge review was processed: %v", answers)
	}
	for code, n := range answers {
		if code != http.StatusOK && code != -http.StatusTooManyRequests {
			t.Errorf("%d huge reviews answered %d; want 200, or a denial with code 429 (retry)", n, code)
		}
	}
	if p.hwm >= memoryLimit {
		t.Errorf("resident set peaked at %.1f MiB, at or over the %.0f MiB limit", mib(p.hwm), mib(memoryLimit))
	}
}

// TestLongImagesBounded posts 50 reviews of 40 containers whose images are
// 64 KiB each, all different: none of them can be pulled, none may be
// remembered, and the process must stay small.
func TestLongImagesBounded(t *testing.T) {
	// A low GOGC keeps uncollected garbage near the live heap, so that the
	// heap figure below says what is kept.
	m := startMutator(t, "long-images", 0, "GOGC=50")
	client := keepAliveClient(t, 1, nil)
	before := m.rss(t)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 50 {
		pod := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"}}
		for j := range 40 {
			image := fmt.Sprintf("quay.io/%d-%d-%d/", i, j, r.Int64()) + strings.Repeat("a", 64<<10)
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "c" + strconv.Itoa(j), Image: image})
		}
		// Denied (403 in the answer): no image of 64 KiB can be pulled.
		code, err := review(context.Background(), client, m.url, reviewOf(t, pod))
		if err != nil || code != -http.StatusForbidden {
			t.Fatalf("review %d: status %d, %v; want a denial with code 403", i, code, err)
		}
	}
	after := m.rss(t)
	heap := metricValue(t, m, "go_memstats_heap_inuse_bytes")
	t.Logf("50 reviews of 40 x 64 KiB images: RSS %.1f -> %.1f MiB, heap in use %.1f MiB", mib(before), mib(after), mib(int64(heap)))
	// 2,000 distinct 64 KiB images are 125 MiB: kept, they would show in
	// the heap; dropped, the heap holds only garbage the collector has not
	// reclaimed yet, under the process's soft memory limit.
	if heap >= 64<<20 {
		t.Errorf("heap in use %.1f MiB after the reviews: the images are being kept", mib(int64(heap)))
	}
	if after >= memoryLimit {
		t.Errorf("resident set %.1f MiB after the reviews, over the %.0f MiB limit", mib(after), mib(memoryLimit))
	}
}

// metricValue scrapes one unlabelled sample from the process's /metrics.
func metricValue(t *testing.T, m *mutator, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(testkit.Metrics(t, m.metricsPort), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// drainRuns is how many rolling restarts TestKeepAliveDrain makes
// (DRAIN_RUNS overrides it).
func drainRuns(t *testing.T) int {
	if v := os.Getenv("DRAIN_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DRAIN_RUNS=%q", v)
		}
		return n
	}
	if testing.Short() {
		return 1
	}
	return 3
}

// endpoints models a Service: the backends whose readiness probe passes,
// refreshed every 100 ms (the kubelet's probe and the endpoint controller),
// and a dialer that opens each new connection to a random ready backend
// (kube-proxy balances connections, not requests).
type endpoints struct {
	mu      sync.Mutex
	all     map[string]bool // address -> ready
	dialer  net.Dialer
	probe   *http.Client
	stopped chan struct{}
}

func newEndpoints(t *testing.T) *endpoints {
	e := &endpoints{all: map[string]bool{}, stopped: make(chan struct{}),
		probe: &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(t), DisableKeepAlives: true}}}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-e.stopped:
				return
			case <-tick.C:
			}
			e.mu.Lock()
			addrs := make([]string, 0, len(e.all))
			for a := range e.all {
				addrs = append(addrs, a)
			}
			e.mu.Unlock()
			for _, a := range addrs {
				resp, err := e.probe.Get("https://" + a + "/health/readiness")
				ready := err == nil && resp.StatusCode == http.StatusOK
				if resp != nil {
					resp.Body.Close()
				}
				e.mu.Lock()
				if _, ok := e.all[a]; ok {
					e.all[a] = ready
				}
				e.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { close(e.stopped) })
	return e
}

func (e *endpoints) add(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all[addr] = true
}

func (e *endpoints) remove(addr string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.all, addr)
}

func (e *endpoints) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	e.mu.Lock()
	var ready []string
	for a, ok := range e.all {
		if ok {
			ready = append(ready, a)
		}
	}
	e.mu.Unlock()
	if len(ready) == 0 {
		return nil, errors.New("no ready endpoints")
	}
	return e.dialer.DialContext(ctx, network, ready[rand.IntN(len(ready))])
}

// TestKeepAliveDrain is a rolling restart the way a cluster does one, under
// load from 16 HTTP/1.1 keep-alive clients that never retry (a failed
// webhook call is a failed Pod creation): a new instance starts, the old
// one gets SIGTERM, fails readiness, is taken out of the endpoints after
// the next probe, keeps answering for SHUTDOWN_DELAY and exits. No review
// may be lost, run after run.
func TestKeepAliveDrain(t *testing.T) {
	runs := drainRuns(t)
	eps := newEndpoints(t)
	env := []string{"SHUTDOWN_DELAY=2s"}
	current := startMutator(t, "gen0", 0, env...)
	eps.add(addr(current))
	client := keepAliveClient(t, 16, eps.dial)
	// The URL's host is a Service name: the dialer picks the backend.
	const url = "https://127.0.0.1:443/mutate"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent, failed atomic.Int64
	var sigtermAt atomic.Value
	sigtermAt.Store(time.Now())
	var mu sync.Mutex
	var samples []string
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				code, err := review(ctx, client, url, podReview)
				if ctx.Err() != nil {
					return
				}
				sent.Add(1)
				if err != nil || code != http.StatusOK {
					failed.Add(1)
					mu.Lock()
					if len(samples) < 5 {
						samples = append(samples, fmt.Sprintf("%s after the last SIGTERM: status %d, %v", time.Since(sigtermAt.Load().(time.Time)).Round(time.Millisecond), code, err))
					}
					mu.Unlock()
				}
			}
		}()
	}
	lostBefore := int64(0)
	for run := 1; run <= runs; run++ {
		time.Sleep(500 * time.Millisecond) // load on the current instance
		next := startMutator(t, "gen"+strconv.Itoa(run), 0, env...)
		eps.add(addr(next))
		time.Sleep(300 * time.Millisecond) // load on both
		sigtermAt.Store(time.Now())
		current.signal(t, syscall.SIGTERM)
		current.waitExit(t)
		eps.remove(addr(current))
		lost := failed.Load() - lostBefore
		lostBefore = failed.Load()
		t.Logf("restart %d: %s (port %d) replaced by %s (port %d): %d reviews lost (%d sent so far)", run, current.name, current.port, next.name, next.port, lost, sent.Load())
		current = next
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	t.Logf("%d restarts under 16 keep-alive clients: %d reviews sent, %d lost", runs, sent.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d reviews lost, first: %q", failed.Load(), samples)
	}
	current.stop(t)
}

func addr(m *mutator) string { return "127.0.0.1:" + strconv.Itoa(m.port) }
