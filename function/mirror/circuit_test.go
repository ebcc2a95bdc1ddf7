package mirror

import (
	"testing"
	"time"
)

// TestCircuit walks a circuit through its states.
func TestCircuit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at        time.Duration // since t0
		op        string        // "allow", "ok", "fail", "abandon"
		wantAllow bool          // for allow
		wantState State
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"successes keep it closed", []step{
			{0, "allow", true, Closed}, {0, "ok", false, Closed}, {0, "fail", false, Closed}, {0, "ok", false, Closed},
			{0, "fail", false, Closed}, {0, "fail", false, Closed}, {0, "allow", true, Closed},
		}},
		{"threshold consecutive failures open it", []step{
			{0, "fail", false, Closed}, {0, "fail", false, Closed}, {0, "fail", false, Open},
			{time.Second, "allow", false, Open}, {9 * time.Second, "allow", false, Open},
		}},
		{"one probe after the cool-down, success closes", []step{
			{0, "fail", false, Closed}, {0, "fail", false, Closed}, {0, "fail", false, Open},
			{10 * time.Second, "allow", true, HalfOpen}, {10 * time.Second, "allow", false, HalfOpen},
			{11 * time.Second, "ok", false, Closed}, {11 * time.Second, "allow", true, Closed},
		}},
		{"a failed probe opens it again for a full cool-down", []step{
			{0, "fail", false, Closed}, {0, "fail", false, Closed}, {0, "fail", false, Open},
			{10 * time.Second, "allow", true, HalfOpen}, {11 * time.Second, "fail", false, Open},
			{20 * time.Second, "allow", false, Open}, {21 * time.Second, "allow", true, HalfOpen},
		}},
		{"an abandoned probe lets the next one through", []step{
			{0, "fail", false, Closed}, {0, "fail", false, Closed}, {0, "fail", false, Open},
			{10 * time.Second, "allow", true, HalfOpen}, {10 * time.Second, "abandon", false, HalfOpen},
			{10 * time.Second, "allow", true, HalfOpen},
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
					var ok bool
					ok, _, state = c.allow(now)
					if ok != s.wantAllow {
						t.Fatalf("step %d: allow = %v, want %v", i, ok, s.wantAllow)
					}
				case "ok", "fail":
					_, state = c.report(now, s.op == "ok")
				case "abandon":
					c.abandon()
					state = c.state
				}
				if state != s.wantState {
					t.Fatalf("step %d (%s at %s): state %s, want %s", i, s.op, s.at, state, s.wantState)
				}
			}
		})
	}
}
