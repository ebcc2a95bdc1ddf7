package events

import (
	"context"
	"errors"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// Errors of Send: the event was dropped.
var (
	ErrClosed    = errors.New("events: emitter is closed")
	ErrQueueFull = errors.New("events: queue is full (the sink is slow or unreachable)")
	ErrTooLarge  = errors.New("events: event larger than the queue's byte budget")
)

// Send queues an event built elsewhere (a copy request of
// MIRROR_MISSING=copy, package admission) for the sink, without ever
// blocking: the same worker sends it, with the same retries, within the
// same bounds (QueueSize, QueueBytes) as the audit events. A non-nil error
// means the event was dropped (counted as such); the caller logs it.
func (e *Emitter) Send(ev cloudevents.Event) error {
	q := queued{ev: ev, size: e.size(ev)}
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		e.countDrop()
		return ErrClosed
	}
	if !e.reserve(q.size) {
		e.mu.RUnlock()
		e.countDrop()
		if q.size > e.budget {
			return ErrTooLarge
		}
		return ErrQueueFull
	}
	select {
	case e.queue <- q:
		e.mu.RUnlock()
		return nil
	default:
		e.mu.RUnlock()
		e.held.Add(-q.size)
		e.countDrop()
		return ErrQueueFull
	}
}

// countDrop counts a dropped event without logging it.
func (e *Emitter) countDrop() {
	e.dropped.Add(1)
	e.mDropped.Add(context.Background(), 1)
}
