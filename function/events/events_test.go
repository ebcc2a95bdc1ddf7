package events

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mutation"
)

// secret is in every test object; it must never reach the sink.
const secret = "s3cr3t-env-value"

// sink is a real CloudEvents receiver on loopback.
type sink struct {
	url     string
	arrived chan struct{} // one per request that reached the handler

	mu     sync.Mutex
	events []cloudevents.Event
	bodies []string
	cTypes []string
}

// startSink serves fn (nil: accept everything) with sdk-go's HTTP receiver
// until the test ends.
func startSink(t *testing.T, fn func(ctx context.Context, ev cloudevents.Event) cloudevents.Result) *sink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{url: "http://" + l.Addr().String() + "/", arrived: make(chan struct{}, 1<<16)}
	record := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			s.mu.Lock()
			s.bodies = append(s.bodies, string(body))
			s.cTypes = append(s.cTypes, r.Header.Get("Content-Type"))
			s.mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}
	p, err := cloudevents.NewHTTP(cehttp.WithListener(l), cehttp.WithMiddleware(record), cehttp.WithShutdownTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- c.StartReceiver(ctx, func(ctx context.Context, ev cloudevents.Event) cloudevents.Result {
			s.arrived <- struct{}{}
			if fn != nil {
				if res := fn(ctx, ev); !cloudevents.IsACK(res) {
					return res
				}
			}
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	return s
}

func (s *sink) received() ([]cloudevents.Event, []string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cloudevents.Event(nil), s.events...), append([]string(nil), s.bodies...), append([]string(nil), s.cTypes...)
}

// deadSink returns a loopback URL nothing listens on.
func deadSink(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/"
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return url
}

type req struct {
	kind, resource, ns, name, uid, user string
	generateName                        string
	op                                  admissionv1.Operation
	dryRun                              bool
}

// outcome builds a Decision whose object holds a secret env value and
// padding, so that a leak of the object shows in bodies and in memory.
func outcome(r req, result admission.Verdict, changes ...mutation.Change) admission.Decision {
	if r.op == "" {
		r.op = admissionv1.Create
	}
	raw := `{"kind":"` + r.kind + `","apiVersion":"v1","metadata":{"name":"` + r.name + `","generateName":"` + r.generateName +
		`","namespace":"` + r.ns + `"},"spec":{"containers":[{"name":"app","image":"nginx","env":[{"name":"PASSWORD","value":"` + secret +
		`"}],"args":["` + strings.Repeat("x", 4096) + `"]}]}}`
	dry := r.dryRun
	return admission.Decision{
		Request: &admissionv1.AdmissionRequest{
			UID:         types.UID(r.uid),
			Kind:        metav1.GroupVersionKind{Version: "v1", Kind: r.kind},
			Resource:    metav1.GroupVersionResource{Version: "v1", Resource: r.resource},
			Name:        r.name,
			Namespace:   r.ns,
			Operation:   r.op,
			UserInfo:    authenticationv1.UserInfo{Username: r.user},
			Object:      k8sruntime.RawExtension{Raw: []byte(raw)},
			DryRun:      &dry,
			SubResource: "",
		},
		Object:   mutation.Metadata{Name: r.name, GenerateName: r.generateName, Namespace: r.ns},
		Verdict:  result,
		Changes:  changes,
		Duration: time.Millisecond,
	}
}

var (
	imageChange  = mutation.Change{Kind: mutation.KindImage, Path: "/spec/containers/0/image", Where: `container "app"`, From: "nginx", To: "registry.example.com/library/nginx"}
	secretChange = mutation.Change{Kind: mutation.KindPullSecret, Path: "/spec/imagePullSecrets", From: "", To: "regcred"}
	classChange  = mutation.Change{Kind: mutation.KindStorageClass, Path: "/spec/storageClassName", From: "", To: "fast"}
)

func TestEmitsExpectedEvents(t *testing.T) {
	s := startSink(t, nil)
	mp := newRecordingMeterProvider()
	e, err := New(context.Background(), Options{Sink: s.url, Source: "mutator-test", MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		typ, subject string
		data         Data
	}
	tests := []struct {
		name    string
		outcome admission.Decision
		want    *want // nil: no event
	}{{
		name: "patched pod with two changes",
		outcome: outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-1", user: "alice"},
			admission.Patched, imageChange, secretChange),
		want: &want{"dev.mutator.pod.mutated", "team-a/web", Data{
			Operation: "CREATE", Resource: "pods", Namespace: "team-a", Name: "web", UID: "uid-1", User: "alice", Mode: "enforce",
			Changes: []Change{
				{Kind: "image", Path: "/spec/containers/0/image", Where: `container "app"`, From: "nginx", To: "registry.example.com/library/nginx"},
				{Kind: "pull-secret", Path: "/spec/imagePullSecrets", From: "", To: "regcred"},
			},
		}},
	}, {
		name: "audited pvc",
		outcome: outcome(req{kind: "PersistentVolumeClaim", resource: "persistentvolumeclaims", ns: "team-b", name: "data", uid: "uid-2", user: "system:serviceaccount:ci:deployer"},
			admission.Audited, classChange),
		want: &want{"dev.mutator.persistentvolumeclaim.audited", "team-b/data", Data{
			Operation: "CREATE", Resource: "persistentvolumeclaims", Namespace: "team-b", Name: "data", UID: "uid-2",
			User: "system:serviceaccount:ci:deployer", Mode: "audit",
			Changes: []Change{{Kind: "storage-class", Path: "/spec/storageClassName", To: "fast"}},
		}},
	}, {
		name: "pod with generateName only",
		outcome: outcome(req{kind: "Pod", resource: "pods", ns: "team-a", generateName: "web-7d9f-", uid: "uid-3", user: "system:serviceaccount:kube-system:replicaset-controller"},
			admission.Patched, imageChange),
		want: &want{"dev.mutator.pod.mutated", "team-a/web-7d9f-", Data{
			Operation: "CREATE", Resource: "pods", Namespace: "team-a", GenerateName: "web-7d9f-", UID: "uid-3",
			User: "system:serviceaccount:kube-system:replicaset-controller", Mode: "enforce",
			Changes: []Change{{Kind: "image", Path: "/spec/containers/0/image", Where: `container "app"`, From: "nginx", To: "registry.example.com/library/nginx"}},
		}},
	}, {
		name: "denied pod",
		outcome: func() admission.Decision {
			o := outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-denied", user: "alice"}, admission.Denied)
			o.Problems = []mutation.Problem{{Where: `image volume "ext"`, Err: errors.New("image \"x\" cannot be pulled from an allowed registry: too long")}}
			return o
		}(),
		want: &want{"dev.mutator.pod.denied", "team-a/web", Data{
			Operation: "CREATE", Resource: "pods", Namespace: "team-a", Name: "web", UID: "uid-denied", User: "alice", Mode: "enforce",
			Changes: []Change{},
			Refused: []Refusal{{Where: `image volume "ext"`, Reason: "image \"x\" cannot be pulled from an allowed registry: too long"}},
		}},
	}, {
		name: "image left as written by the mirror check, nothing else changed",
		outcome: func() admission.Decision {
			o := outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-mirror-original", user: "alice"}, admission.Unchanged)
			o.MirrorFallbacks = []admission.MirrorFallback{{Where: `container "app"`, Image: "nginx", Mirror: "registry.example.com/library/nginx",
				Reason: mirror.Missing, Action: admission.MirrorOriginal}}
			return o
		}(),
		want: &want{"dev.mutator.pod.mutated", "team-a/web", Data{
			Operation: "CREATE", Resource: "pods", Namespace: "team-a", Name: "web", UID: "uid-mirror-original", User: "alice", Mode: "enforce",
			Changes: []Change{},
			MirrorFallbacks: []MirrorFallback{{Where: `container "app"`, Image: "nginx", Mirror: "registry.example.com/library/nginx",
				Reason: "missing", Action: "original"}},
		}},
	}, {
		name: "image rewritten unchecked: the mirror timed out",
		outcome: func() admission.Decision {
			o := outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-mirror-rewrite", user: "alice"}, admission.Patched, imageChange)
			o.MirrorFallbacks = []admission.MirrorFallback{{Where: `container "app"`, Image: "nginx", Mirror: "registry.example.com/library/nginx",
				Reason: mirror.Timeout, Action: admission.MirrorRewrite}}
			return o
		}(),
		want: &want{"dev.mutator.pod.mutated", "team-a/web", Data{
			Operation: "CREATE", Resource: "pods", Namespace: "team-a", Name: "web", UID: "uid-mirror-rewrite", User: "alice", Mode: "enforce",
			Changes: []Change{{Kind: "image", Path: "/spec/containers/0/image", Where: `container "app"`, From: "nginx", To: "registry.example.com/library/nginx"}},
			MirrorFallbacks: []MirrorFallback{{Where: `container "app"`, Image: "nginx", Mirror: "registry.example.com/library/nginx",
				Reason: "timeout", Action: "rewrite"}},
		}},
	}, {
		name: "dry run",
		outcome: outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-dry", user: "alice", dryRun: true},
			admission.Patched, imageChange),
	}, {
		name:    "no changes",
		outcome: outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-none", user: "alice"}, admission.Unchanged),
	}, {
		name:    "excluded",
		outcome: outcome(req{kind: "Pod", resource: "pods", ns: "kube-system", name: "web", uid: "uid-excluded", user: "alice"}, admission.Excluded),
	}}

	before := time.Now()
	for _, tt := range tests {
		e.Observe(context.Background(), tt.outcome)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	after := time.Now()

	events, bodies, cTypes := s.received()
	byID := map[string]cloudevents.Event{}
	for _, ev := range events {
		if _, dup := byID[ev.ID()]; dup {
			t.Errorf("event %s arrived twice", ev.ID())
		}
		byID[ev.ID()] = ev
	}
	wantEvents := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := string(tt.outcome.Request.UID)
			ev, ok := byID[id]
			if tt.want == nil {
				if ok {
					t.Fatalf("got event %s, want none", ev)
				}
				return
			}
			if !ok {
				t.Fatalf("no event with id %q; got %d events", id, len(events))
			}
			if ev.Type() != tt.want.typ || ev.Source() != "mutator-test" || ev.Subject() != tt.want.subject || ev.SpecVersion() != "1.0" {
				t.Errorf("type, source, subject, specversion = %q, %q, %q, %q; want %q, %q, %q, 1.0",
					ev.Type(), ev.Source(), ev.Subject(), ev.SpecVersion(), tt.want.typ, "mutator-test", tt.want.subject)
			}
			if ev.DataContentType() != cloudevents.ApplicationJSON {
				t.Errorf("datacontenttype = %q", ev.DataContentType())
			}
			if ev.Time().Before(before) || ev.Time().After(after) {
				t.Errorf("time %v not within the test's %v..%v", ev.Time(), before, after)
			}
			var got Data
			if err := ev.DataAs(&got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want.data) {
				t.Errorf("data =\n%+v\nwant\n%+v", got, tt.want.data)
			}
		})
		if tt.want != nil {
			wantEvents++
		}
	}
	if len(events) != wantEvents {
		t.Errorf("sink got %d events, want %d", len(events), wantEvents)
	}
	for i, b := range bodies {
		if strings.Contains(b, secret) || strings.Contains(b, "xxxxxxxx") {
			t.Errorf("request %d carries the object: %s", i, b)
		}
		// Structured mode: the event is one JSON document.
		if !strings.HasPrefix(cTypes[i], "application/cloudevents+json") {
			t.Errorf("request %d content type %q, want structured mode", i, cTypes[i])
		}
	}
	if sent, dropped, failed := e.Stats(); sent != uint64(wantEvents) || dropped != 0 || failed != 0 {
		t.Errorf("Stats() = %d, %d, %d; want %d, 0, 0", sent, dropped, failed, wantEvents)
	}
	if got := mp.value("mutator.events.sent"); got != int64(wantEvents) {
		t.Errorf("mutator.events.sent = %d, want %d", got, wantEvents)
	}
	for _, name := range []string{"mutator.events.sent", "mutator.events.dropped", "mutator.events.failed"} {
		if u := mp.unit(name); u != "{event}" {
			t.Errorf("%s unit = %q, want {event}", name, u)
		}
	}
}

func TestDeadSinkDropsAndStaysBounded(t *testing.T) {
	const n = 10000
	mp := newRecordingMeterProvider()
	e, err := New(context.Background(), Options{Sink: deadSink(t), QueueSize: 8, Timeout: time.Second, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			// A fresh request each time, with a 4 KiB object: retaining
			// requests would grow the heap by 40 MiB or more.
			e.Observe(context.Background(), outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-" + strconv.Itoa(i), user: "alice"},
				admission.Patched, imageChange))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Observe blocked on a dead sink")
	}

	after := heap()
	if growth := int64(after) - int64(before); growth > 16<<20 {
		t.Errorf("heap grew by %d bytes over %d events to a dead sink", growth, n)
	}
	sent, dropped, _ := e.Stats()
	if sent != 0 || dropped == 0 {
		t.Errorf("sent, dropped = %d, %d; want 0, > 0", sent, dropped)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = e.Close(ctx)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v past its 200ms deadline", d)
	}
	sent, dropped, failed := e.Stats()
	if sent != 0 || dropped+failed != n {
		t.Errorf("after Close: sent %d, dropped %d, failed %d; want 0 sent and every one of %d accounted for", sent, dropped, failed, n)
	}
	if got := mp.value("mutator.events.dropped") + mp.value("mutator.events.failed"); got != n {
		t.Errorf("dropped + failed counters = %d, want %d", got, n)
	}
}

func TestSlowSinkDoesNotBlockObserve(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	s := startSink(t, func(ctx context.Context, _ cloudevents.Event) cloudevents.Result {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	t.Cleanup(unblock) // registered after startSink, so it runs before the receiver's shutdown

	e, err := New(context.Background(), Options{Sink: s.url, QueueSize: 8, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	observe := func(i int) {
		e.Observe(context.Background(), outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-" + strconv.Itoa(i), user: "alice"},
			admission.Patched, imageChange))
	}
	observe(0)
	select {
	case <-s.arrived: // the worker is now stuck in a send
	case <-time.After(10 * time.Second):
		t.Fatal("first event never reached the sink")
	}

	const n = 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			observe(i)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Observe blocked on a slow sink")
	}
	if _, dropped, _ := e.Stats(); dropped == 0 {
		t.Error("no events dropped although the queue (8) is smaller than the backlog")
	}

	unblock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	sent, dropped, failed := e.Stats()
	if sent+dropped != n+1 || failed != 0 || sent < 2 {
		t.Errorf("sent %d, dropped %d, failed %d; want the in-flight and queued events sent and the rest of %d dropped", sent, dropped, failed, n+1)
	}
	if events, _, _ := s.received(); uint64(len(events)) != sent {
		t.Errorf("sink got %d events, emitter says %d sent", len(events), sent)
	}
}

func TestCloseIdempotentAndObserveAfterClose(t *testing.T) {
	s := startSink(t, nil)
	e, err := New(context.Background(), Options{Sink: s.url})
	if err != nil {
		t.Fatal(err)
	}
	var observed atomic.Uint64
	observe := func(i int) {
		e.Observe(context.Background(), outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-" + strconv.Itoa(i), user: "alice"},
			admission.Patched, imageChange))
		observed.Add(1)
	}

	// Observe races Close: it must never send on the closed queue.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				observe(g*1000 + i)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- e.Close(ctx) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	wg.Wait()
	if err := e.Close(ctx); err != nil {
		t.Errorf("third Close: %v", err)
	}

	_, droppedBefore, _ := e.Stats()
	observe(-1)
	sent, dropped, failed := e.Stats()
	if dropped != droppedBefore+1 {
		t.Errorf("Observe after Close: dropped %d, want %d", dropped, droppedBefore+1)
	}
	if total := sent + dropped + failed; total != observed.Load() {
		t.Errorf("sent %d + dropped %d + failed %d = %d, want every one of %d observed", sent, dropped, failed, total, observed.Load())
	}
	if events, _, _ := s.received(); uint64(len(events)) != sent {
		t.Errorf("sink got %d events, emitter says %d sent", len(events), sent)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name       string
		status     []int // answers in order, then 200
		retries    int
		sent, fail uint64
		attempts   int
	}{
		{"503 then accepted", []int{503, 503}, 3, 1, 0, 3},
		{"retries exhausted", []int{503, 503, 503, 503}, 2, 0, 1, 3},
		{"400 is final", []int{400}, 3, 0, 1, 1},
		{"no retries", []int{429}, -1, 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			s := startSink(t, func(context.Context, cloudevents.Event) cloudevents.Result {
				if i := int(calls.Add(1)) - 1; i < len(tt.status) {
					return cehttp.NewResult(tt.status[i], "test answer")
				}
				return nil
			})
			e, err := New(context.Background(), Options{Sink: s.url, Retries: tt.retries, Backoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			e.Observe(context.Background(), outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-retry", user: "alice"},
				admission.Patched, imageChange))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if sent, _, failed := e.Stats(); sent != tt.sent || failed != tt.fail {
				t.Errorf("sent, failed = %d, %d; want %d, %d", sent, failed, tt.sent, tt.fail)
			}
			if got := int(calls.Load()); got != tt.attempts {
				t.Errorf("%d attempts, want %d", got, tt.attempts)
			}
			if _, bodies, _ := s.received(); len(bodies) > 1 && bodies[0] != bodies[len(bodies)-1] {
				t.Errorf("retry sent a different event:\n%s\n%s", bodies[0], bodies[len(bodies)-1])
			}
		})
	}
}

func TestNewValidatesSink(t *testing.T) {
	tests := []struct {
		sink string
		ok   bool
	}{
		{"", false},
		{"broker-ingress/default", false},
		{"/default/broker", false},
		{"ftp://example.com/", false},
		{"http://", false},
		{"http://%zz", false},
		{"http://broker-ingress.knative-eventing.svc.cluster.local/default/default", true},
		{"https://127.0.0.1:8443", true},
	}
	for _, tt := range tests {
		t.Run(tt.sink, func(t *testing.T) {
			e, err := New(context.Background(), Options{Sink: tt.sink})
			if tt.ok {
				if err != nil {
					t.Fatalf("New(%q): %v", tt.sink, err)
				}
				if err := e.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New(%q) accepted it", tt.sink)
			}
			if !strings.Contains(err.Error(), "K_SINK") {
				t.Errorf("error %q does not name K_SINK", err)
			}
		})
	}
}

func TestRetriable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{errors.New("connection refused"), true},
		{cehttp.NewResult(404, "not ready"), true},
		{cehttp.NewResult(429, "slow down"), true},
		{cehttp.NewResult(503, "unavailable"), true},
		{cehttp.NewResult(400, "bad"), false},
		{cehttp.NewResult(501, "not implemented"), false},
	}
	for _, tt := range tests {
		if got := retriable(tt.err); got != tt.want {
			t.Errorf("retriable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// recordingMeterProvider counts what the emitter adds to each counter.
type recordingMeterProvider struct {
	noop.MeterProvider
	meter *recordingMeter
}

type recordingMeter struct {
	noop.Meter
	mu       sync.Mutex
	counters map[string]*recordingCounter
}

type recordingCounter struct {
	noop.Int64Counter
	unit string
	n    atomic.Int64
}

func newRecordingMeterProvider() *recordingMeterProvider {
	return &recordingMeterProvider{meter: &recordingMeter{counters: map[string]*recordingCounter{}}}
}

func (p *recordingMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return p.meter }

func (m *recordingMeter) Int64Counter(name string, opts ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &recordingCounter{unit: metric.NewInt64CounterConfig(opts...).Unit()}
	m.counters[name] = c
	return c, nil
}

func (c *recordingCounter) Add(_ context.Context, n int64, _ ...metric.AddOption) { c.n.Add(n) }

func (p *recordingMeterProvider) counter(name string) *recordingCounter {
	p.meter.mu.Lock()
	defer p.meter.mu.Unlock()
	return p.meter.counters[name]
}

func (p *recordingMeterProvider) value(name string) int64 {
	if c := p.counter(name); c != nil {
		return c.n.Load()
	}
	return -1
}

func (p *recordingMeterProvider) unit(name string) string {
	if c := p.counter(name); c != nil {
		return c.unit
	}
	return ""
}

// manyChanges is the change list of a Pod of n containers, every image
// rewritten.
func manyChanges(n int) []mutation.Change {
	changes := make([]mutation.Change, n)
	for i := range changes {
		changes[i] = mutation.Change{Kind: mutation.KindImage, Path: "/spec/containers/" + strconv.Itoa(i) + "/image",
			Where: `container "app-` + strconv.Itoa(i) + `"`, From: "nginx:1.27", To: "registry.example.com/library/nginx:1.27"}
	}
	return changes
}

// blockedSink returns the URL of a sink that accepts connections and reads
// nothing: every send hangs until it is aborted or the test ends. It keeps no
// event, so that the heap measures the emitter alone.
func blockedSink(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: handlers return, then the server closes
	return srv.URL + "/"
}

// heapAlloc is the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestQueueBoundedInBytes floods an emitter whose sink never answers with the
// events of 3,000-container Pods, the finding of issue 18: the queue used to
// hold up to 1,024 of them whatever their size (216 MiB for 488). The bytes
// held must stay within the budget, small events must still get in once the
// large ones no longer fit, and everything must be released on Close.
func TestQueueBoundedInBytes(t *testing.T) {
	const floods = 488
	tests := []struct {
		name      string
		maxListed int
		// budget is QueueBytes given the size of one large event; nil
		// leaves the default.
		budget     func(large int64) int64
		wantQueued int // large events accepted; -1: whatever fits
	}{{
		name:       "full lists, room for three and a half large events",
		maxListed:  3000,
		budget:     func(large int64) int64 { return 3*large + large/2 },
		wantQueued: 3, // the one in flight and two waiting
	}, {
		name:       "one event larger than the whole budget",
		maxListed:  3000,
		budget:     func(large int64) int64 { return large / 2 },
		wantQueued: 0,
	}, {
		name:       "defaults: summarised events, 4 MiB",
		wantQueued: -1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := blockedSink(t)
			changes := manyChanges(3000)
			large := func(i int) admission.Decision {
				return outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-large-" + strconv.Itoa(1000+i), user: "system:anonymous"},
					admission.Patched, changes...)
			}
			small := outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-small", user: "alice"}, admission.Patched, imageChange)

			opts := Options{Sink: url, MaxListed: tt.maxListed, Timeout: time.Minute, MeterProvider: newRecordingMeterProvider()}
			probe, err := New(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			largeSize, _ := probe.EventSize(large(0))
			smallSize, _ := probe.EventSize(small)
			if err := probe.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			budget := int64(DefaultQueueBytes)
			if tt.budget != nil {
				budget = tt.budget(largeSize)
				opts.QueueBytes = budget
			}

			mp := newRecordingMeterProvider()
			opts.MeterProvider = mp
			e, err := New(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			before := heapAlloc()
			for i := range floods {
				e.Observe(context.Background(), large(i))
				if held, _ := e.HeldBytes(); held > budget {
					t.Fatalf("after %d events %d bytes held, over the budget of %d", i+1, held, budget)
				}
			}
			during := heapAlloc()

			held, peak := e.HeldBytes()
			_, dropped, _ := e.Stats()
			if peak > budget || held > budget {
				t.Errorf("held %d, peak %d bytes; budget %d", held, peak, budget)
			}
			queued := floods - int(dropped)
			if tt.wantQueued >= 0 && queued != tt.wantQueued {
				t.Errorf("%d of %d large events (%d bytes each) queued, want %d in %d bytes", queued, floods, largeSize, tt.wantQueued, budget)
			}
			if tt.wantQueued < 0 && (dropped == 0 || queued == 0) {
				t.Errorf("%d of %d large events (%d bytes each) queued in %d bytes; want some queued and some dropped", queued, floods, largeSize, budget)
			}
			if int64(queued)*largeSize > budget+floods { // sizes differ by a few bytes of uid
				t.Errorf("%d events of %d bytes queued in a budget of %d", queued, largeSize, budget)
			}
			if got := mp.value("mutator.events.dropped"); got != int64(dropped) {
				t.Errorf("mutator.events.dropped = %d, Stats says %d", got, dropped)
			}
			// Honest accounting: what the heap holds is the budget, give or
			// take the in-flight event's encoding in the HTTP client.
			if growth := int64(during) - int64(before); growth > 2*budget+1<<20 {
				t.Errorf("heap grew by %d bytes for %d events held in a budget of %d", growth, queued, budget)
			}

			// Large events no longer fit; a small one still does, if the
			// budget has room for it.
			observed := uint64(floods)
			if budget-held >= smallSize {
				e.Observe(context.Background(), small)
				observed++
				if _, d, _ := e.Stats(); d != dropped {
					t.Errorf("small event (%d bytes) dropped with %d of %d bytes held", smallSize, held, budget)
				}
				if h, _ := e.HeldBytes(); h != held+smallSize {
					t.Errorf("held %d bytes after the small event, want %d", h, held+smallSize)
				}
			} else if tt.wantQueued >= 0 {
				t.Fatalf("the test's budget leaves no room for a small event (%d bytes)", smallSize)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if err := e.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Close: %v", err)
			}
			if held, _ := e.HeldBytes(); held != 0 {
				t.Errorf("%d bytes still held after Close", held)
			}
			sent, dropped, failed := e.Stats()
			if sent+dropped+failed != observed {
				t.Errorf("sent %d, dropped %d, failed %d; want all %d events accounted for", sent, dropped, failed, observed)
			}
			if after := heapAlloc(); int64(after)-int64(before) > 1<<20 {
				t.Errorf("heap %d bytes above its level before the flood after Close; the queue's memory was not released", int64(after)-int64(before))
			}
		})
	}
}

// TestEventListsSummarised checks that an event carries at most MaxListed
// entries of each list, the first ones in order, and counts the rest, and
// that an event with nothing left out has none of the summary fields.
func TestEventListsSummarised(t *testing.T) {
	problems := func(n int) []mutation.Problem {
		ps := make([]mutation.Problem, n)
		for i := range ps {
			ps[i] = mutation.Problem{Where: `container "app-` + strconv.Itoa(i) + `"`, Err: errors.New(`image "evil.example/x:` + strconv.Itoa(i) + `" cannot be pulled from an allowed registry`)}
		}
		return ps
	}
	fallbacks := func(n int) []admission.MirrorFallback {
		fs := make([]admission.MirrorFallback, n)
		for i := range fs {
			fs[i] = admission.MirrorFallback{Where: `container "app-` + strconv.Itoa(i) + `"`, Image: "nginx:" + strconv.Itoa(i),
				Mirror: "registry.example.com/library/nginx:" + strconv.Itoa(i), Reason: mirror.Missing, Action: admission.MirrorOriginal}
		}
		return fs
	}
	tests := []struct {
		name                       string
		maxListed                  int
		result                     admission.Verdict
		changes, refused, fallback int
		wantListed                 [3]int
		wantOmitted                [3]int
	}{
		{"small pod: all listed", 0, admission.Patched, 2, 0, 1, [3]int{2, 0, 1}, [3]int{}},
		{"exactly the default limit", 0, admission.Patched, DefaultMaxListed, DefaultMaxListed, DefaultMaxListed, [3]int{100, 100, 100}, [3]int{}},
		{"one over the limit", 0, admission.Patched, DefaultMaxListed + 1, 0, 0, [3]int{100, 0, 0}, [3]int{1, 0, 0}},
		{"3,000-container pod", 0, admission.Patched, 3000, 0, 0, [3]int{100, 0, 0}, [3]int{2900, 0, 0}},
		{"3,000 refused images", 0, admission.Denied, 0, 3000, 0, [3]int{0, 100, 0}, [3]int{0, 2900, 0}},
		{"3,000 mirror fallbacks", 0, admission.Unchanged, 0, 0, 3000, [3]int{0, 0, 100}, [3]int{0, 0, 2900}},
		{"all three lists over a limit of 5", 5, admission.Patched, 7, 6, 5, [3]int{5, 5, 5}, [3]int{2, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSink(t, nil)
			e, err := New(context.Background(), Options{Sink: s.url, MaxListed: tt.maxListed})
			if err != nil {
				t.Fatal(err)
			}
			o := outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-summary", user: "alice"}, tt.result, manyChanges(tt.changes)...)
			o.Problems = problems(tt.refused)
			o.MirrorFallbacks = fallbacks(tt.fallback)
			e.Observe(context.Background(), o)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.Close(ctx); err != nil {
				t.Fatal(err)
			}
			events, bodies, _ := s.received()
			if len(events) != 1 || len(bodies) != 1 {
				t.Fatalf("sink got %d events, want 1", len(events))
			}
			var got Data
			if err := events[0].DataAs(&got); err != nil {
				t.Fatal(err)
			}

			want := Data{Changes: []Change{}}
			for _, c := range o.Changes[:tt.wantListed[0]] {
				want.Changes = append(want.Changes, Change{Kind: string(c.Kind), Path: c.Path, Where: c.Where, From: c.From, To: c.To})
			}
			for _, p := range o.Problems[:tt.wantListed[1]] {
				want.Refused = append(want.Refused, Refusal{Where: p.Where, Reason: p.Err.Error()})
			}
			for _, f := range o.MirrorFallbacks[:tt.wantListed[2]] {
				want.MirrorFallbacks = append(want.MirrorFallbacks, MirrorFallback{Where: f.Where, Image: f.Image, Mirror: f.Mirror, Reason: string(f.Reason), Action: string(f.Action)})
			}
			if !reflect.DeepEqual(got.Changes, want.Changes) || !reflect.DeepEqual(got.Refused, want.Refused) || !reflect.DeepEqual(got.MirrorFallbacks, want.MirrorFallbacks) {
				t.Errorf("listed %d changes, %d refused, %d fallbacks; want the first %v of each, in order",
					len(got.Changes), len(got.Refused), len(got.MirrorFallbacks), tt.wantListed)
			}
			omitted := [3]int{got.OmittedChanges, got.OmittedRefused, got.OmittedMirrorFallbacks}
			truncated := tt.wantOmitted != [3]int{}
			if omitted != tt.wantOmitted || got.Truncated != truncated {
				t.Errorf("omitted %v, truncated %v; want %v, %v", omitted, got.Truncated, tt.wantOmitted, truncated)
			}

			// Backward compatible: the summary fields appear only when
			// something was left out, and then with their counts.
			body := bodies[0]
			for field, want := range map[string]bool{
				`"truncated":true`: truncated,
				`"omittedChanges":` + strconv.Itoa(tt.wantOmitted[0]):         tt.wantOmitted[0] > 0,
				`"omittedRefused":` + strconv.Itoa(tt.wantOmitted[1]):         tt.wantOmitted[1] > 0,
				`"omittedMirrorFallbacks":` + strconv.Itoa(tt.wantOmitted[2]): tt.wantOmitted[2] > 0,
				`"truncated"`:              truncated,
				`"omittedChanges"`:         tt.wantOmitted[0] > 0,
				`"omittedRefused"`:         tt.wantOmitted[1] > 0,
				`"omittedMirrorFallbacks"`: tt.wantOmitted[2] > 0,
			} {
				if strings.Contains(body, field) != want {
					t.Errorf("body has %s: %v, want %v", field, !want, want)
				}
			}
			// Bounded whatever the Pod: 100 entries of each list.
			if len(body) > 64<<10 {
				t.Errorf("event of %d bytes for %d changes, %d refused, %d fallbacks", len(body), tt.changes, tt.refused, tt.fallback)
			}
		})
	}
}

// TestEventCountsSummarisedFallbacks: the admission controller summarises
// a long list of mirror fallbacks itself (an entry with More stands for
// 1+More images); the event counts those images as omitted.
func TestEventCountsSummarisedFallbacks(t *testing.T) {
	s := startSink(t, nil)
	e, err := New(context.Background(), Options{Sink: s.url})
	if err != nil {
		t.Fatal(err)
	}
	o := outcome(req{kind: "Pod", resource: "pods", ns: "team-a", name: "web", uid: "uid-more", user: "alice"}, admission.Patched, manyChanges(1)...)
	o.MirrorFallbacks = []admission.MirrorFallback{
		{Where: `container "a"`, Image: "nginx:1", Mirror: "registry.example.com/library/nginx:1", Reason: mirror.Timeout, Action: admission.MirrorRewrite},
		{Where: `container "b"`, Image: "nginx:2", Mirror: "registry.example.com/library/nginx:2", Reason: mirror.Timeout, Action: admission.MirrorRewrite, More: 967},
	}
	e.Observe(context.Background(), o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	events, _, _ := s.received()
	if len(events) != 1 {
		t.Fatalf("sink got %d events, want 1", len(events))
	}
	var got Data
	if err := events[0].DataAs(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.MirrorFallbacks) != 2 || got.OmittedMirrorFallbacks != 967 || !got.Truncated {
		t.Errorf("fallbacks listed %d, omitted %d, truncated %v; want 2, 967, true", len(got.MirrorFallbacks), got.OmittedMirrorFallbacks, got.Truncated)
	}
}
