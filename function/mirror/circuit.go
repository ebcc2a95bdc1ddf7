package mirror

import (
	"sync"
	"time"
)

// State is a circuit's state; its value is what the circuit-state gauge
// reports.
type State int

// The states of a registry's circuit.
const (
	// Closed: lookups go to the registry.
	Closed State = 0
	// HalfOpen: the cool-down has passed and one probe lookup is allowed;
	// its answer closes the circuit or opens it again.
	HalfOpen State = 1
	// Open: the registry failed Failures times in a row; lookups are
	// answered CircuitOpen without asking it until the cool-down passes.
	Open State = 2
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return "unknown"
}

// circuit is one registry's breaker. A registry that keeps timing out would
// otherwise cost every review the full timeout; once open, a review pays
// nothing for it until the cool-down has passed.
type circuit struct {
	threshold int
	cooldown  time.Duration

	mu       sync.Mutex
	state    State
	failures int       // consecutive
	openedAt time.Time // when the circuit last opened
	probing  bool      // half-open: the one probe is in flight
}

// allow reports whether a lookup may go to the registry now. In the
// half-open state it lets one probe through and refuses the rest until the
// probe has reported.
func (c *circuit) allow(now time.Time) (ok bool, changed bool, state State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case Open:
		if now.Sub(c.openedAt) < c.cooldown {
			return false, false, c.state
		}
		c.state, c.probing = HalfOpen, true
		return true, true, c.state
	case HalfOpen:
		if c.probing {
			return false, false, c.state
		}
		c.probing = true
	}
	return true, false, c.state
}

// report records a lookup's verdict: ok is an answer from the registry
// (present or missing), !ok an error or a timeout.
func (c *circuit) report(now time.Time, ok bool) (changed bool, state State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.state
	c.probing = false
	if ok {
		c.state, c.failures = Closed, 0
	} else {
		c.failures++
		if c.state == HalfOpen || c.failures >= c.threshold {
			c.state, c.openedAt = Open, now
		}
	}
	return c.state != before, c.state
}

// abandon gives back a probe that never reached the registry, so that the
// next lookup may probe instead.
func (c *circuit) abandon() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probing = false
}
