package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/copier/copiertest"
)

// TestRun serves the function on a listener, answers its probes and a copy
// request, and returns when its context ends.
func TestRun(t *testing.T) {
	origin := copiertest.New(t, copiertest.Options{Referrers: true})
	mirror := copiertest.New(t, copiertest.Options{Referrers: false})
	img := copiertest.Push(t, origin, "app", "1.0", 16<<10, 1)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, map[string]string{"COPY_TARGETS": mirror.Host, "LOG_LEVEL": "error"}, ln) }()
	base := "http://" + ln.Addr().String()

	for _, path := range []string{"/health/readiness", "/health/liveness"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
		}
	}

	ev, err := copier.NewRequestEvent("mutator", copier.Request{Source: img.Ref.String(), Target: mirror.Host + "/app:1.0"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(base))
	if err != nil {
		t.Fatal(err)
	}
	reply, res := c.Request(t.Context(), ev)
	if !cloudevents.IsACK(res) || reply == nil || reply.Type() != copier.TypeSucceeded {
		t.Fatalf("reply %v, %v; want a succeeded event", reply, res)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

// TestRunInvalidConfig: an invalid configuration is an error, not a server.
func TestRunInvalidConfig(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), map[string]string{}, ln); err == nil {
		t.Error("run without COPY_TARGETS succeeded")
	}
}
