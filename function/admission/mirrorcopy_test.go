package admission_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/events"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// copySink is a CloudEvents receiver (sdk-go's HTTP protocol) on an
// httptest server; hold makes it take each event only when released.
type copySink struct {
	URL    string
	mu     sync.Mutex
	events []cloudevents.Event
}

func startCopySink(t *testing.T, hold chan struct{}) *copySink {
	t.Helper()
	s := &copySink{}
	p, err := cloudevents.NewHTTP()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudevents.NewHTTPReceiveHandler(t.Context(), p, func(ctx context.Context, ev cloudevents.Event) cloudevents.Result {
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		s.mu.Lock()
		s.events = append(s.events, ev)
		s.mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if hold != nil {
		t.Cleanup(func() { close(hold) }) // before the server closes
	}
	s.URL = srv.URL + "/"
	return s
}

func (s *copySink) received() []cloudevents.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cloudevents.Event(nil), s.events...)
}

// settable is a clock for the dedupe window and the checker's TTLs.
type settable struct {
	mu  sync.Mutex
	now time.Time
}

func (c *settable) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *settable) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// copySetup is a controller with MIRROR_MISSING=copy checking reg's
// mirror/, sending copy requests to sink through an events.Emitter with
// opts.
type copySetup struct {
	c        *admission.Controller
	emitter  *events.Emitter
	requests *admission.CopyRequests
	clock    *settable
}

func newCopySetup(t *testing.T, reg *mirrortest.Registry, sink string, mode config.Mode, opts events.Options, observers ...admission.Observer) copySetup {
	t.Helper()
	env := config.Env{Registry: reg.Host + "/mirror", Mode: mode, MirrorCheck: true, MirrorMissing: "copy", MirrorUnreachable: "rewrite",
		MirrorCopySink: sink, MirrorCheckTimeout: 2 * time.Second, MirrorCheckReviewBudget: 4 * time.Second}
	clock := &settable{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := testkit.Controller(t, env, nil, observers...)
	checker, err := mirror.New(t.Context(), mirror.Options{Timeout: 2 * time.Second, PositiveTTL: time.Minute, NegativeTTL: 5 * time.Second,
		Failures: 100, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = checker.Close(context.Background()) })
	opts.Sink = sink
	emitter, err := events.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emitter.Close(context.Background()) })
	requests, err := admission.NewCopyRequests(emitter, admission.CopyOptions{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckMirror(checker, testkit.Config(t, env).Mirror, admission.WithCopyRequester(requests)); err != nil {
		t.Fatal(err)
	}
	return copySetup{c: c, emitter: emitter, requests: requests, clock: clock}
}

func createReview(t *testing.T, images ...string) *admissionv1.AdmissionRequest {
	return &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, pod(images...))}
}

// TestMirrorCopy: with MIRROR_MISSING=copy a Pod whose image the mirror
// lacks is denied, saying it is being copied, and one copy request (a
// copier.TypeRequested CloudEvent naming the image as written, spelled
// out, and its mirror reference) reaches the sink; the retries within 30 s
// send none; once the copy has landed (and the missing answer has left the
// cache) the retry is admitted, rewritten to the mirror.
func TestMirrorCopy(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/nginx:1.27")
	sink := startCopySink(t, nil)
	rec := &recorder{}
	s := newCopySetup(t, reg, sink.URL, config.Enforce, events.Options{}, rec)
	target := reg.Host + "/mirror/redis:7"

	resp := s.c.Admit(context.Background(), createReview(t, "nginx:1.27", "redis:7"))
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden {
		t.Fatalf("answer %+v, want a 403", resp)
	}
	want := `container "b": image "redis:7" is not on the mirror yet: being copied from "docker.io/library/redis:7" to "` + target +
		`"; the controller's retry admits the Pod once it is there`
	if !strings.Contains(resp.Result.Message, want) {
		t.Errorf("denial %q lacks %q", resp.Result.Message, want)
	}
	out := rec.outcomes[0]
	if out.Verdict != admission.Denied || len(out.MirrorFallbacks) != 1 || out.MirrorFallbacks[0].Action != admission.MirrorCopy {
		t.Errorf("outcome %s with fallbacks %+v, want denied with one copy", out.Verdict, out.MirrorFallbacks)
	}

	// Retries within the dedupe window: denied, nothing sent again.
	for range 3 {
		s.clock.advance(5 * time.Second)
		if resp := s.c.Admit(context.Background(), createReview(t, "redis:7")); resp.Allowed {
			t.Fatal("retry admitted before the copy landed")
		}
	}
	if st := s.requests.Stats(); st.Queued != 1 || st.Duplicates != 3 || st.Dropped != 0 {
		t.Errorf("requests %+v, want 1 queued, 3 duplicates", st)
	}
	// Past the window, still missing: asked again.
	s.clock.advance(30 * time.Second)
	s.c.Admit(context.Background(), createReview(t, "redis:7"))
	if st := s.requests.Stats(); st.Queued != 2 {
		t.Errorf("requests %+v, want a second one past the dedupe window", st)
	}

	// The copier lands the image; the missing answer is cached for the
	// negative TTL, after which the retry is admitted.
	reg.Push(t, "mirror/redis:7")
	s.clock.advance(time.Second)
	if resp := s.c.Admit(context.Background(), createReview(t, "redis:7")); resp.Allowed {
		t.Error("retry admitted while the missing answer is still cached: want denied until the negative TTL passes")
	}
	s.clock.advance(5 * time.Second)
	req := createReview(t, "redis:7")
	resp = s.c.Admit(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("retry after the copy landed denied: %s", resp.Result.Message)
	}
	if got := patchedImages(t, req.Object.Raw, resp); len(got) != 1 || got[0] != target {
		t.Errorf("images %v, want [%s]", got, target)
	}

	if err := s.emitter.Close(context.Background()); err != nil { // drains the queue
		t.Fatal(err)
	}
	got := sink.received()
	if len(got) != 2 {
		t.Fatalf("the sink got %d events, want 2", len(got))
	}
	ev := got[0]
	if ev.Type() != copier.TypeRequested || ev.Source() != "mutator" || ev.Subject() != target {
		t.Errorf("event type %q source %q subject %q", ev.Type(), ev.Source(), ev.Subject())
	}
	r, err := copier.RequestFromEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if wantReq := (copier.Request{Source: "docker.io/library/redis:7", Target: target, Namespace: "team", Pod: "p"}); r != wantReq {
		t.Errorf("request %+v, want %+v", r, wantReq)
	}
}

// TestMirrorCopyModes: audit mode warns and asks for the copy (it fills the
// mirror ahead of enforcement); a dry run is denied as usual but sends
// nothing (sideEffects NoneOnDryRun); an image the mirror has sends
// nothing.
func TestMirrorCopyModes(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/nginx:1.27")
	dry := true
	tests := []struct {
		name        string
		mode        config.Mode
		images      []string
		dryRun      bool
		wantAllowed bool
		wantText    string
		wantQueued  uint64
	}{
		{"audit: warned, requested", config.Audit, []string{"redis:7"}, false, true,
			`mutator: would deny: container "a": not in the mirror, being copied`, 1},
		{"audit dry run: warned, not requested", config.Audit, []string{"redis:7"}, true, true,
			`mutator: would deny: container "a": not in the mirror, would be copied`, 0},
		{"enforce dry run: denied, not requested", config.Enforce, []string{"redis:7"}, true, false, "being copied", 0},
		{"present: nothing to copy", config.Enforce, []string{"nginx:1.27"}, false, true, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := startCopySink(t, nil)
			s := newCopySetup(t, reg, sink.URL, tt.mode, events.Options{})
			req := createReview(t, tt.images...)
			if tt.dryRun {
				req.DryRun = &dry
			}
			resp := s.c.Admit(context.Background(), req)
			if resp.Allowed != tt.wantAllowed {
				t.Fatalf("allowed %v, want %v: %+v", resp.Allowed, tt.wantAllowed, resp.Result)
			}
			text := strings.Join(resp.Warnings, "\n")
			if !resp.Allowed {
				text = resp.Result.Message
			}
			if !strings.Contains(text, tt.wantText) || tt.wantText == "" && text != "" {
				t.Errorf("%q lacks %q", text, tt.wantText)
			}
			_ = s.emitter.Close(context.Background())
			if st := s.requests.Stats(); st.Queued != tt.wantQueued || uint64(len(sink.received())) != tt.wantQueued {
				t.Errorf("requests %+v, sink got %d; want %d", st, len(sink.received()), tt.wantQueued)
			}
		})
	}
}

// TestMirrorCopyFullQueue: a sink that does not answer fills the queue;
// reviews go on being answered at once, denied as being copied, and the
// requests that do not fit are dropped and counted, not waited for.
func TestMirrorCopyFullQueue(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	sink := startCopySink(t, make(chan struct{}))
	s := newCopySetup(t, reg, sink.URL, config.Enforce, events.Options{QueueSize: 2, Retries: -1, Timeout: time.Minute})
	const reviews = 50
	start := time.Now()
	var slowest time.Duration
	for i := range reviews {
		image := "team" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "/app:v1"
		t0 := time.Now()
		resp := s.c.Admit(context.Background(), createReview(t, image))
		slowest = max(slowest, time.Since(t0))
		if resp.Allowed || !strings.Contains(resp.Result.Message, "being copied") {
			t.Fatalf("review %d: %+v, want denied as being copied", i, resp.Result)
		}
	}
	st := s.requests.Stats()
	t.Logf("%d reviews in %s, slowest %s; requests %+v", reviews, time.Since(start).Round(time.Millisecond), slowest.Round(time.Microsecond), st)
	if slowest > time.Second {
		t.Errorf("slowest review %s: a full queue held it up", slowest)
	}
	// One in flight (held by the sink), two queued: the rest dropped.
	if st.Queued > 3 || st.Dropped < reviews-3 || st.Queued+st.Dropped != reviews {
		t.Errorf("requests %+v, want at most 3 queued and the rest dropped", st)
	}
	if _, dropped, _ := s.emitter.Stats(); dropped != st.Dropped {
		t.Errorf("the emitter counted %d drops, the requester %d", dropped, st.Dropped)
	}
	// A dropped request is not remembered: the retry asks again.
	if st.Remembered != int(st.Queued) {
		t.Errorf("%d pairs remembered, want the %d queued only", st.Remembered, st.Queued)
	}
	// The sink never answers: shut down without draining.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = s.emitter.Close(ctx)
}

// fakeSender records events, or refuses them.
type fakeSender struct {
	mu     sync.Mutex
	events []cloudevents.Event
	refuse error
}

func (f *fakeSender) Send(ev cloudevents.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return f.refuse
	}
	f.events = append(f.events, ev)
	return nil
}

// TestCopyRequestsDedupe: a source→target pair is sent once per window;
// the pairs remembered are bounded, the oldest forgotten first; a refused
// send is not remembered.
func TestCopyRequestsDedupe(t *testing.T) {
	clock := &settable{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	sender := &fakeSender{}
	r, err := admission.NewCopyRequests(sender, admission.CopyOptions{Source: "test", Dedupe: 30 * time.Second, Remembers: 2, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	req := func(i int) copier.Request {
		return copier.Request{Source: "docker.io/library/app" + string(rune('0'+i)) + ":v1", Target: "mirror.example/app:v1"}
	}
	ctx := context.Background()
	r.RequestCopy(ctx, req(1))
	r.RequestCopy(ctx, req(1)) // duplicate
	clock.advance(29 * time.Second)
	r.RequestCopy(ctx, req(1)) // still a duplicate
	r.RequestCopy(ctx, req(2))
	r.RequestCopy(ctx, req(3)) // over the bound: req(1) forgotten
	r.RequestCopy(ctx, req(1)) // sent again, early; req(2) forgotten
	clock.advance(31 * time.Second)
	r.RequestCopy(ctx, req(3)) // past the window
	sender.refuse = events.ErrQueueFull
	r.RequestCopy(ctx, req(4)) // dropped
	sender.refuse = nil
	r.RequestCopy(ctx, req(4)) // not remembered: sent
	st := r.Stats()
	if st.Queued != 6 || st.Duplicates != 2 || st.Dropped != 1 || st.Remembered > 2 {
		t.Errorf("stats %+v, want 6 queued, 2 duplicates, 1 dropped, at most 2 remembered", st)
	}
	if len(sender.events) != 6 || sender.events[0].Source() != "test" || sender.events[0].Type() != copier.TypeRequested {
		t.Errorf("%d events, first %v", len(sender.events), sender.events[0])
	}
}

// TestCheckMirrorCopyNeedsRequester: MIRROR_MISSING=copy without a copy
// requester is refused.
func TestCheckMirrorCopyNeedsRequester(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	env := config.Env{Registry: reg.Host + "/mirror", Mode: config.Enforce, MirrorCheck: true, MirrorMissing: "copy", MirrorUnreachable: "rewrite",
		MirrorCopySink: "http://sink.example/"}
	c := testkit.Controller(t, env, nil)
	checker, err := mirror.New(t.Context(), mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer checker.Close(context.Background())
	if err := c.CheckMirror(checker, testkit.Config(t, env).Mirror); err == nil || !strings.Contains(err.Error(), "copy requester") {
		t.Errorf("CheckMirror = %v, want an error about the copy requester", err)
	}
}

// countingRequester records copy requests.
type countingRequester struct {
	mu   sync.Mutex
	reqs []copier.Request
}

func (c *countingRequester) RequestCopy(_ context.Context, r copier.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
}

// TestMirrorCopyPerReview: a review asks for at most 32 copies, however
// many images its Pod lacks on the mirror; the Pod's retries ask for the
// rest once the first are there. Its generateName names a Pod without a
// name yet.
func TestMirrorCopyPerReview(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	env := config.Env{Registry: reg.Host + "/mirror", Mode: config.Enforce, MirrorCheck: true, MirrorMissing: "copy", MirrorUnreachable: "rewrite",
		MirrorCopySink: "http://sink.example/", MirrorCheckTimeout: 2 * time.Second, MirrorCheckReviewBudget: 4 * time.Second, MirrorCheckMaxLookups: 64}
	c := testkit.Controller(t, env, nil)
	checker, err := mirror.New(t.Context(), mirror.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer checker.Close(context.Background())
	requester := &countingRequester{}
	if err := c.CheckMirror(checker, testkit.Config(t, env).Mirror, admission.WithCopyRequester(requester)); err != nil {
		t.Fatal(err)
	}
	p := podOf(refs("team%02d/app:v1", 40))
	p.Name, p.GenerateName = "", "web-7d9f-"
	resp := c.Admit(context.Background(), &admissionv1.AdmissionRequest{UID: "1", Kind: podGVK, Operation: admissionv1.Create, Namespace: "team", Object: raw(t, p)})
	if resp.Allowed {
		t.Fatal("admitted")
	}
	if len(requester.reqs) != 32 {
		t.Errorf("%d copy requests, want 32", len(requester.reqs))
	}
	if r := requester.reqs[0]; r.Pod != "web-7d9f-" || r.Namespace != "team" || r.Source != "docker.io/team00/app:v1" || r.Target != reg.Host+"/mirror/team00/app:v1" {
		t.Errorf("first request %+v", r)
	}
}
