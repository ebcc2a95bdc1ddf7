package events

import (
	"context"
	"errors"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// TestSend: an event built elsewhere goes through the same queue and
// worker to the sink; a full queue and a closed emitter drop it at once,
// with an error and counted.
func TestSend(t *testing.T) {
	ev := func(id string) cloudevents.Event {
		e := cloudevents.NewEvent()
		e.SetID(id)
		e.SetSource("test")
		e.SetType("dev.mutator.test")
		if err := e.SetData(cloudevents.ApplicationJSON, map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
		return e
	}

	s := startSink(t, nil)
	e, err := New(context.Background(), Options{Sink: s.url})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Send(ev("a")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got := s.events
	s.mu.Unlock()
	if sent, _, _ := e.Stats(); sent != 1 || len(got) != 1 || got[0].ID() != "a" {
		t.Errorf("sent %d, sink got %d events", sent, len(got))
	}
	if err := e.Send(ev("b")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}

	blocked, err := New(context.Background(), Options{Sink: blockedSink(t), QueueSize: 1, Retries: -1, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var full int
	for i := range 10 {
		if err := blocked.Send(ev(string(rune('a' + i)))); errors.Is(err, ErrQueueFull) {
			full++
		} else if err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if d := time.Since(start); d > time.Second || full < 8 {
		t.Errorf("%d of 10 refused as full in %s; want at least 8, at once", full, d)
	}
	if _, dropped, _ := blocked.Stats(); dropped != uint64(full) {
		t.Errorf("%d dropped counted, want %d", dropped, full)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = blocked.Close(ctx)
}
