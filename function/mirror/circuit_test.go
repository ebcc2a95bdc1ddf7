package mirror

import (
	"testing"
	"time"
)

// TestCircuit walks a circuit through its states: failed lookups alone
// never open it, a failed probe does; the cool-down ends with a probe.
func TestCircuit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at        time.Duration // since t0
		op        string        // "allow", "answered", "failed", "healthy", "unhealthy" (a probe's verdict)
		wantOK    bool          // allow: the lookup may go
		wantProbe bool          // allow, failed: the caller must start a probe
		wantState State
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"answers keep it closed", []step{
			{0, "allow", true, false, Closed}, {0, "answered", false, false, Closed}, {0, "failed", false, false, Closed},
			{0, "answered", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, false, Closed},
			{0, "allow", true, false, Closed},
		}},
		{"threshold failures start a probe, not an opening", []step{
			{0, "failed", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, true, Closed},
			{0, "failed", false, false, Closed}, // one probe at a time
			{0, "allow", true, false, Closed},
		}},
		{"a probe that is answered clears the failures", []step{
			{0, "failed", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, true, Closed},
			{time.Second, "healthy", false, false, Closed},
			{time.Second, "failed", false, false, Closed}, {time.Second, "failed", false, false, Closed},
			{time.Second, "failed", false, true, Closed},
		}},
		{"a failed probe opens it for the cool-down", []step{
			{0, "failed", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, true, Closed},
			{time.Second, "unhealthy", false, false, Open},
			{2 * time.Second, "allow", false, false, Open}, {10 * time.Second, "allow", false, false, Open},
		}},
		{"after the cool-down a probe decides, lookups wait for it", []step{
			{0, "failed", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, true, Closed},
			{0, "unhealthy", false, false, Open},
			{10 * time.Second, "allow", false, true, HalfOpen}, {10 * time.Second, "allow", false, false, HalfOpen},
			{11 * time.Second, "healthy", false, false, Closed}, {11 * time.Second, "allow", true, false, Closed},
		}},
		{"a probe after the cool-down that fails opens it again for a full cool-down", []step{
			{0, "failed", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, true, Closed},
			{0, "unhealthy", false, false, Open},
			{10 * time.Second, "allow", false, true, HalfOpen}, {11 * time.Second, "unhealthy", false, false, Open},
			{20 * time.Second, "allow", false, false, Open}, {21 * time.Second, "allow", false, true, HalfOpen},
		}},
		{"an answer to a lookup begun before the opening closes it", []step{
			{0, "failed", false, false, Closed}, {0, "failed", false, false, Closed}, {0, "failed", false, true, Closed},
			{0, "unhealthy", false, false, Open}, {time.Second, "answered", false, false, Closed},
			{time.Second, "allow", true, false, Closed},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &circuit{threshold: 3, cooldown: 10 * time.Second}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				var state State
				switch s.op {
				case "allow":
					ok, probe, wait, _, st := c.allow(now)
					if ok != s.wantOK || probe != s.wantProbe {
						t.Fatalf("step %d: allow = %v, probe %v; want %v, %v", i, ok, probe, s.wantOK, s.wantProbe)
					}
					if st == HalfOpen && wait == nil {
						t.Fatalf("step %d: half-open without a probe to wait for", i)
					}
					state = st
				case "answered":
					_, state = c.answered(nil)
				case "failed":
					if probe, wait := c.failed(); probe != s.wantProbe || probe != (wait != nil) {
						t.Fatalf("step %d: failed() = %v, %v; want %v with a channel to wait on", i, probe, wait, s.wantProbe)
					}
					state = c.state
				case "healthy", "unhealthy":
					_, state = c.probed(now, s.op == "healthy")
				}
				if state != s.wantState {
					t.Fatalf("step %d (%s at %s): state %s, want %s", i, s.op, s.at, state, s.wantState)
				}
			}
		})
	}
}
