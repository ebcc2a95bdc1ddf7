package function

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/copier/copiertest"
)

// func-go v0.22.0's instanced CloudEvents interfaces (knative.dev/func-go/
// cloudevents), which func's scaffolding for invoke: cloudevent expects.
var (
	_ interface {
		Handle(context.Context, event.Event) (*event.Event, error)
	} = (*Function)(nil)
	_ interface {
		Start(context.Context, map[string]string) error
	} = (*Function)(nil)
	_ interface{ Stop(context.Context) error } = (*Function)(nil)
	_ interface {
		Ready(context.Context) (bool, error)
	} = (*Function)(nil)
	_ interface {
		Alive(context.Context) (bool, error)
	} = (*Function)(nil)
)

// env is a function's environment for tests.
type env map[string]string

// started starts a Function with cfg and serves it as func-go does: a
// CloudEvents SDK receive handler around Handle.
func started(t *testing.T, cfg env) (*Function, string) {
	t.Helper()
	f := New()
	if err := f.Start(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	p, err := cloudevents.NewHTTP()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudevents.NewHTTPReceiveHandler(t.Context(), p, f.Handle)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// recorder is a K_SINK: it receives events on a channel.
func recorder(t *testing.T) (string, <-chan event.Event) {
	t.Helper()
	got := make(chan event.Event, 16)
	p, err := cloudevents.NewHTTP()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudevents.NewHTTPReceiveHandler(t.Context(), p, func(ev event.Event) { got <- ev })
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, got
}

// ask sends a copy request event to url and returns the reply and status.
func ask(t *testing.T, url string, ev event.Event, structured bool) (*event.Event, int) {
	t.Helper()
	c, err := cloudevents.NewClientHTTP(cehttp.WithTarget(url))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	} else {
		ctx = cloudevents.WithEncodingBinary(ctx)
	}
	reply, res := c.Request(ctx, ev)
	var hr *cehttp.Result
	if !protocol.ResultAs(res, &hr) {
		t.Fatalf("no HTTP result: %v", res)
	}
	return reply, hr.StatusCode
}

func request(t *testing.T, source, target string) event.Event {
	t.Helper()
	ev, err := copier.NewRequestEvent("mutator", copier.Request{Source: source, Target: target, Namespace: "shop", Pod: "web-"})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func resultOf(t *testing.T, ev *event.Event) copier.Result {
	t.Helper()
	if ev == nil {
		t.Fatal("no reply event")
	}
	res, err := copier.ResultFromEvent(*ev)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestHandle posts copy requests in binary and structured mode and reads
// the result events: from the reply, and from K_SINK.
func TestHandle(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "library/app", "1.0", 32<<10, 2)
	sinkURL, recorded := recorder(t)
	_, url := started(t, env{"COPY_TARGETS": mirror.Host + "/mirror", "K_SINK": sinkURL, "LOG_LEVEL": "error"})

	tests := []struct {
		name       string
		source     string
		target     string
		structured bool
		wantStatus int
		wantType   string
		wantReason copier.Reason
	}{
		{"binary mode", img.Ref.String(), mirror.Host + "/mirror/library/app:1.0", false, http.StatusOK, copier.TypeSucceeded, ""},
		{"structured mode, already copied", img.Ref.String(), mirror.Host + "/mirror/library/app:1.0", true, http.StatusOK, copier.TypeSucceeded, ""},
		{"missing at the origin", origin.Host + "/library/app:2.0", mirror.Host + "/mirror/library/app:2.0", false, http.StatusOK, copier.TypeFailed, copier.ReasonNotFound},
		{"target outside COPY_TARGETS", img.Ref.String(), mirror.Host + "/elsewhere/app:1.0", true, http.StatusOK, copier.TypeFailed, copier.ReasonInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply, status := ask(t, url, request(t, tt.source, tt.target), tt.structured)
			if status != tt.wantStatus || reply == nil || reply.Type() != tt.wantType {
				t.Fatalf("status %d, reply %v; want %d with a %s event", status, reply, tt.wantStatus, tt.wantType)
			}
			res := resultOf(t, reply)
			if res.Reason != tt.wantReason || res.Source != tt.source || res.Target != tt.target || reply.Subject() != tt.target {
				t.Errorf("result %+v; want reason %q", res, tt.wantReason)
			}
			if tt.wantReason == "" && (res.Digest != img.Digest.String() || len(res.Referrers) != 2) {
				t.Errorf("result %+v; want digest %s and 2 referrers", res, img.Digest)
			}
			if tt.wantReason == copier.ReasonInvalid {
				return // refused before any copy: nothing recorded
			}
			select {
			case rec := <-recorded:
				if rec.ID() != reply.ID() || rec.Type() != reply.Type() || rec.Source() != copier.DefaultEventSource {
					t.Errorf("recorded %v; want the reply's event %v", rec, reply)
				}
			case <-t.Context().Done():
				t.Fatal("no event at K_SINK")
			}
		})
	}

	t.Run("not a copy request", func(t *testing.T) {
		ev := request(t, img.Ref.String(), mirror.Host+"/mirror/app:1.0")
		ev.SetType("dev.mutator.pod.mutated")
		if reply, status := ask(t, url, ev, false); status != http.StatusBadRequest || reply != nil {
			t.Errorf("status %d, reply %v; want 400 without an event", status, reply)
		}
	})
}

// TestHandleSlow: a copy that outlasts COPY_REPLY_WAIT is answered 202 and
// recorded at K_SINK when done; one that times out is answered 503 (the
// Broker retries) with the failed event.
func TestHandleSlow(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "app", "1.0", 32<<10, 2)
	sinkURL, recorded := recorder(t)
	_, url := started(t, env{"COPY_TARGETS": mirror.Host, "K_SINK": sinkURL, "COPY_REPLY_WAIT": "50ms", "COPY_TIMEOUT": "1s", "LOG_LEVEL": "error"})

	origin.Hold()
	reply, status := ask(t, url, request(t, img.Ref.String(), mirror.Host+"/app:1.0"), false)
	origin.Release()
	if status != http.StatusAccepted || reply != nil {
		t.Fatalf("status %d, reply %v; want 202 without an event", status, reply)
	}
	select {
	case rec := <-recorded:
		if res := resultOf(t, &rec); !res.OK() || res.Digest != img.Digest.String() {
			t.Errorf("recorded %+v; want the completed copy", res)
		}
	case <-t.Context().Done():
		t.Fatal("no event at K_SINK")
	}

	// Another image, whose blobs the mirror does not have yet.
	img2 := copiertest.Push(t, origin, "app2", "1.0", 32<<10, 2)
	origin.HangBlobs(true)
	defer origin.HangBlobs(false)
	reply, status = ask(t, url, request(t, img2.Ref.String(), mirror.Host+"/app2:1.0"), true)
	// The copy takes its whole timeout (1s), longer than the reply wait:
	// 202, then the failure at K_SINK.
	if status != http.StatusAccepted {
		t.Fatalf("status %d, reply %v; want 202", status, reply)
	}
	select {
	case rec := <-recorded:
		if res := resultOf(t, &rec); res.Reason != copier.ReasonTimeout || rec.Type() != copier.TypeFailed {
			t.Errorf("recorded %v; want a timeout", rec)
		}
	case <-t.Context().Done():
		t.Fatal("no event at K_SINK")
	}
}

// TestHandleTransient: a transient failure within the reply wait is answered
// 503 with the failed event.
func TestHandleTransient(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: true})
	img := copiertest.Push(t, origin, "app", "1.0", 32<<10, 2)
	_, url := started(t, env{"COPY_TARGETS": mirror.Host, "COPY_TIMEOUT": "200ms", "LOG_LEVEL": "error"})
	origin.HangBlobs(true)
	defer origin.HangBlobs(false)
	reply, status := ask(t, url, request(t, img.Ref.String(), mirror.Host+"/app:1.0"), false)
	if status != http.StatusServiceUnavailable || reply == nil || reply.Type() != copier.TypeFailed {
		t.Fatalf("status %d, reply %v; want 503 with a failed event", status, reply)
	}
	if res := resultOf(t, reply); res.Reason != copier.ReasonTimeout || !strings.Contains(res.Error, "200ms") {
		t.Errorf("result %+v; want a timeout", res)
	}
}

// TestHandleNotStarted: before Start and after Stop, requests are refused
// with 503 and readiness is false.
func TestHandleNotStarted(t *testing.T) {
	f := New()
	if ok, _ := f.Ready(t.Context()); ok {
		t.Error("ready before Start")
	}
	_, err := f.Handle(t.Context(), request(t, "a.example/x:1", "b.example/x:1"))
	var hr *cehttp.Result
	if !errors.As(err, &hr) || hr.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Handle before Start: %v", err)
	}
	if err := f.Start(t.Context(), env{"COPY_TARGETS": "b.example", "LOG_LEVEL": "error"}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.Ready(t.Context()); !ok {
		t.Error("not ready after Start")
	}
	if err := f.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.Ready(t.Context()); ok {
		t.Error("ready after Stop")
	}
}

// TestLoadConfig: defaults, and each invalid value refused with its key.
func TestLoadConfig(t *testing.T) {
	cfg, err := LoadConfig(env{"COPY_TARGETS": " registry.example.com/mirror , other.example ", "COPY_MAX_BYTES": "1Gi",
		"COPY_MAX_CONCURRENT": "3", "COPY_TIMEOUT": "5m", "COPY_INSECURE": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) != 2 || cfg.Targets[1] != "other.example" || cfg.MaxBytes != 1<<30 || cfg.MaxConcurrent != 3 ||
		cfg.Timeout != 5*time.Minute || !cfg.Insecure || cfg.ReplyWait != DefaultReplyWait || cfg.EventSource != copier.DefaultEventSource {
		t.Errorf("config = %+v", cfg)
	}
	for _, tt := range []struct {
		env  env
		want string
	}{
		{env{}, "COPY_TARGETS"},
		{env{"COPY_TARGETS": "x", "COPY_MAX_BYTES": "lots"}, "COPY_MAX_BYTES"},
		{env{"COPY_TARGETS": "x", "COPY_MAX_BYTES": "-1"}, "COPY_MAX_BYTES"},
		{env{"COPY_TARGETS": "x", "COPY_MAX_CONCURRENT": "0"}, "COPY_MAX_CONCURRENT"},
		{env{"COPY_TARGETS": "x", "COPY_JOBS": "many"}, "COPY_JOBS"},
		{env{"COPY_TARGETS": "x", "COPY_TIMEOUT": "10"}, "COPY_TIMEOUT"},
		{env{"COPY_TARGETS": "x", "COPY_REPLY_WAIT": "-1s"}, "COPY_REPLY_WAIT"},
		{env{"COPY_TARGETS": "x", "COPY_INSECURE": "maybe"}, "COPY_INSECURE"},
		{env{"COPY_TARGETS": "x", "LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{env{"COPY_TARGETS": "x", "K_SINK": "broker"}, "K_SINK"},
	} {
		if _, err := LoadConfig(tt.env); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadConfig(%v) = %v; want an error naming %s", tt.env, err, tt.want)
		}
	}
	f := New()
	if err := f.Start(t.Context(), env{"COPY_TARGETS": "x", "COPY_MIRROR_CREDENTIALS": "/nonexistent/config.json"}); err == nil ||
		!strings.Contains(err.Error(), "COPY_MIRROR_CREDENTIALS") {
		t.Errorf("Start with a missing credentials file: %v", err)
	}
}
