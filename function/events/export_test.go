package events

import "github.com/mutator-dev/mutator/function/admission"

// HeldBytes returns the bytes reserved now by the events queued or in
// flight, and the most ever reserved.
func (e *Emitter) HeldBytes() (held, peak int64) {
	return e.held.Load(), e.peak.Load()
}

// EventSize returns what the outcome's event is counted for in the queue's
// byte budget; false when the outcome gets no event.
func (e *Emitter) EventSize(o admission.Decision) (int64, bool) {
	ev, ok := e.event(o)
	if !ok {
		return 0, false
	}
	return e.size(ev), true
}
