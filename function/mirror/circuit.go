package mirror

import (
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// State is a circuit's state; its value is what the circuit-state gauge
// reports.
type State int

// The states of a registry's circuit.
const (
	// Closed: lookups go to the registry.
	Closed State = 0
	// HalfOpen: the cool-down has passed and a probe is asking the
	// registry; its answer closes the circuit or opens it again. Lookups
	// are refused meanwhile.
	HalfOpen State = 1
	// Open: the registry failed Failures lookups in a row and then a
	// probe; lookups are answered CircuitOpen without asking it until the
	// cool-down passes.
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
//
// Consecutive failed lookups do not open it by themselves: the references a
// lookup asks about are chosen by whoever sends the review, and a registry
// can be slow or failing for some references only (a pull-through cache
// asking its upstream, an attacker's made-up names). So when Failures
// lookups in a row have failed, the checker probes the registry with a
// request it chooses itself (see Checker.probe): a reference the registry
// answered present before, or its /v2/ endpoint. Only a failed probe opens
// the circuit; a probe that is answered clears the count. The cool-down's
// end is decided by a probe as well, never by a review's lookup.
type circuit struct {
	threshold int
	cooldown  time.Duration
	registry  name.Registry // what a probe pings

	mu        sync.Mutex
	state     State
	failures  int           // consecutive
	openedAt  time.Time     // when the circuit last opened
	probing   bool          // a probe is in flight
	probeDone chan struct{} // closed when that probe has reported
	known     name.Reference
}

// allow reports whether a lookup may go to the registry now. probe is true
// when the caller must start a probe (the cool-down of an open circuit has
// passed: the circuit is half-open now); wait, when non-nil, is closed once
// the probe in flight has reported, after which allow may say yes.
func (c *circuit) allow(now time.Time) (ok bool, probe bool, wait <-chan struct{}, changed bool, state State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case Open:
		if now.Sub(c.openedAt) < c.cooldown || c.probing {
			return false, false, nil, false, c.state
		}
		c.state = HalfOpen
		c.startProbe()
		return false, true, c.probeDone, true, c.state
	case HalfOpen:
		return false, false, c.probeDone, false, c.state
	}
	return true, false, nil, false, c.state
}

func (c *circuit) startProbe() {
	c.probing = true
	c.probeDone = make(chan struct{})
}

// answered records a lookup the registry answered (present or missing);
// known, when not nil, is a reference it answered present, for later
// probes.
func (c *circuit) answered(known name.Reference) (changed bool, state State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures = 0
	if known != nil {
		c.known = known
	}
	if c.state == Open {
		// A lookup that started before the circuit opened got an
		// answer: the registry is back.
		c.state = Closed
		return true, c.state
	}
	return false, c.state
}

// failed records a lookup that the registry failed (an error status, a
// refused connection, a TLS failure, its own timeout); never a lookup that
// the checker gave up itself. probe is true when the caller must start a
// probe: Failures lookups in a row have failed and none is in flight; wait
// is closed when it has reported.
func (c *circuit) failed() (probe bool, wait <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
	if c.state != Closed || c.failures < c.threshold || c.probing {
		return false, nil
	}
	c.startProbe()
	return true, c.probeDone
}

// probeTarget is what a probe asks: a reference the registry answered
// present, or nil for its /v2/ endpoint.
func (c *circuit) probeTarget() name.Reference {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known
}

// probed records a probe's verdict: healthy closes the circuit and clears
// the failures, otherwise it opens for a cool-down.
func (c *circuit) probed(now time.Time, healthy bool) (changed bool, state State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.state
	c.probing = false
	if c.probeDone != nil {
		close(c.probeDone)
		c.probeDone = nil
	}
	if healthy {
		c.state, c.failures = Closed, 0
	} else {
		c.state, c.openedAt = Open, now
	}
	return c.state != before, c.state
}
