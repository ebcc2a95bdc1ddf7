package mirror_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
)

// clock is a settable clock for TTLs and cool-downs.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newChecker(t *testing.T, opts mirror.Options) *mirror.Checker {
	t.Helper()
	c, err := mirror.New(t.Context(), opts)
	if err != nil {
		t.Fatalf("mirror.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// TestExists covers the answers of a healthy and of a failing registry.
func TestExists(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	byDigest := reg.Push(t, "mirror/app:v1")
	reg.Push(t, "mirror/library/nginx:1.27")
	failing := mirrortest.New(t, mirrortest.Options{})
	failing.Push(t, "mirror/app:v1")
	failing.SetStatus(http.StatusServiceUnavailable)

	tests := []struct {
		name    string
		ref     string
		want    mirror.Outcome
		wantErr bool
	}{
		{"tag present", reg.Host + "/mirror/app:v1", mirror.Present, false},
		{"nested repository present", reg.Host + "/mirror/library/nginx:1.27", mirror.Present, false},
		{"digest present", byDigest, mirror.Present, false},
		{"tag and digest: the digest is checked", reg.Host + "/mirror/app:other@" + byDigest[len(byDigest)-71:], mirror.Present, false},
		{"tag missing", reg.Host + "/mirror/app:v2", mirror.Missing, false},
		{"repository missing", reg.Host + "/mirror/nothing:v1", mirror.Missing, false},
		{"digest missing", reg.Host + "/mirror/app@sha256:" + "0000000000000000000000000000000000000000000000000000000000000000", mirror.Missing, false},
		{"registry answers 503", failing.Host + "/mirror/app:v1", mirror.Error, true},
		{"nothing listens", "127.0.0.1:1/mirror/app:v1", mirror.Error, true},
		{"not a reference", "Not A Reference", mirror.Error, true},
	}
	c := newChecker(t, mirror.Options{Timeout: 2 * time.Second, PositiveTTL: time.Minute, NegativeTTL: time.Minute, Failures: 100})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Exists(t.Context(), tt.ref)
			if res.Outcome != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("Exists(%q) = %+v, %v; want %s (error %v)", tt.ref, res, err, tt.want, tt.wantErr)
			}
			if tt.wantErr {
				t.Logf("error: %v", err)
				return
			}
			// Present and missing are cached, errors are not.
			again, err := c.Exists(t.Context(), tt.ref)
			if err != nil || again.Outcome != tt.want || !again.Cached {
				t.Errorf("second Exists(%q) = %+v, %v; want %s from the cache", tt.ref, again, err, tt.want)
			}
		})
	}
	if heads := failing.ManifestHeads(); heads != 0 {
		t.Errorf("failing registry got %d manifest HEADs; its /v2/ ping fails first, so want 0", heads)
	}
}

// TestHungRegistry: a registry that accepts the request and never answers
// costs each check at most the timeout; after Failures of them its circuit
// opens and checks are answered without asking it; after the cool-down one
// probe goes through and, answered, closes the circuit.
func TestHungRegistry(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/app:v1")
	reg.SetHang(true)
	clk := newClock()
	const timeout = 200 * time.Millisecond
	c := newChecker(t, mirror.Options{Timeout: timeout, PositiveTTL: time.Minute, Failures: 2, Cooldown: 30 * time.Second, Now: clk.Now})
	ref := reg.Host + "/mirror/app:v1"

	steps := []struct {
		name      string
		advance   time.Duration
		hang      bool
		want      mirror.Outcome
		wantHeads int64 // manifest HEADs so far
		wantState mirror.State
	}{
		{"first timeout", 0, true, mirror.Timeout, 1, mirror.Closed},
		{"second timeout opens the circuit", 0, true, mirror.Timeout, 2, mirror.Open},
		{"open: not asked", time.Second, true, mirror.CircuitOpen, 2, mirror.Open},
		{"still open before the cool-down", 28 * time.Second, true, mirror.CircuitOpen, 2, mirror.Open},
		{"half-open probe times out: open again", 2 * time.Second, true, mirror.Timeout, 3, mirror.Open},
		{"open again: not asked", time.Second, true, mirror.CircuitOpen, 3, mirror.Open},
		{"probe after the cool-down answers: closed", 30 * time.Second, false, mirror.Present, 4, mirror.Closed},
	}
	for _, s := range steps {
		clk.advance(s.advance)
		reg.SetHang(s.hang)
		start := time.Now()
		res, err := c.Exists(t.Context(), ref)
		elapsed := time.Since(start)
		t.Logf("%s: %s in %s (%v)", s.name, res.Outcome, elapsed.Round(time.Millisecond), err)
		if res.Outcome != s.want {
			t.Fatalf("%s: outcome %s, want %s (%v)", s.name, res.Outcome, s.want, err)
		}
		if s.want == mirror.CircuitOpen && !errors.Is(err, mirror.ErrCircuitOpen) {
			t.Errorf("%s: error %v does not wrap ErrCircuitOpen", s.name, err)
		}
		if got := reg.ManifestHeads(); got != s.wantHeads {
			t.Errorf("%s: %d manifest HEADs so far, want %d", s.name, got, s.wantHeads)
		}
		if got := c.CircuitState(reg.Host); got != s.wantState {
			t.Errorf("%s: circuit %s, want %s", s.name, got, s.wantState)
		}
	}
}

// TestCallerDeadline: a caller whose own deadline is shorter than the
// timeout gets Timeout when it passes, and the lookup it started goes on
// and caches its answer for the next check.
func TestCallerDeadline(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/app:v1")
	reg.SetHang(true)
	c := newChecker(t, mirror.Options{Timeout: 10 * time.Second, PositiveTTL: time.Minute})
	ref := reg.Host + "/mirror/app:v1"

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := c.Exists(ctx, ref)
	t.Logf("caller with a 50ms deadline: %s in %s (%v)", res.Outcome, time.Since(start).Round(time.Millisecond), err)
	if res.Outcome != mirror.Timeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exists = %+v, %v; want timeout wrapping context.DeadlineExceeded", res, err)
	}
	reg.SetHang(false) // the lookup in flight is answered now
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, ok := c.Cached(t.Context(), ref); ok {
			if r.Outcome != mirror.Present {
				t.Fatalf("cached %s, want present", r.Outcome)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the abandoned lookup never cached its answer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if heads := reg.ManifestHeads(); heads != 1 {
		t.Errorf("%d manifest HEADs, want 1", heads)
	}
}

// TestCredentials: a mirror that needs credentials gets them from a docker
// config.json, for its host only.
func TestCredentials(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{Username: "robot", Password: "s3cret"})
	reg.Push(t, "mirror/app:v1")
	dir := t.TempDir()
	good := reg.DockerConfig(t, t.TempDir(), "robot", "s3cret")
	wrong := reg.DockerConfig(t, dir, "robot", "wrong")

	tests := []struct {
		name    string
		config  string // "" is no keychain
		ref     string
		want    mirror.Outcome
		wantErr bool
	}{
		{"no credentials", "", "mirror/app:v1", mirror.Error, true},
		{"wrong password", wrong, "mirror/app:v1", mirror.Error, true},
		{"present", good, "mirror/app:v1", mirror.Present, false},
		{"missing", good, "mirror/app:v2", mirror.Missing, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := mirror.Options{Timeout: 2 * time.Second}
			if tt.config != "" {
				kc, err := mirror.NewFileKeychain(tt.config)
				if err != nil {
					t.Fatal(err)
				}
				opts.Keychain = kc
			}
			c := newChecker(t, opts)
			res, err := c.Exists(t.Context(), reg.Host+"/"+tt.ref)
			if res.Outcome != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("Exists = %+v, %v; want %s (error %v)", res, err, tt.want, tt.wantErr)
			}
			if err != nil {
				t.Logf("error: %v", err)
			}
		})
	}
}

// TestCacheExpiry: present answers live PositiveTTL, missing ones
// NegativeTTL; after that the registry is asked again, so an image pushed
// to the mirror is seen once the negative answer has expired.
func TestCacheExpiry(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/app:v1")
	clk := newClock()
	c := newChecker(t, mirror.Options{PositiveTTL: 10 * time.Minute, NegativeTTL: 30 * time.Second, Now: clk.Now})
	present, missing := reg.Host+"/mirror/app:v1", reg.Host+"/mirror/app:v2"

	steps := []struct {
		name       string
		advance    time.Duration
		push       string // pushed before the step
		ref        string
		want       mirror.Outcome
		wantCached bool
		wantHeads  int64
	}{
		{"present, first check", 0, "", present, mirror.Present, false, 1},
		{"present, cached", 9 * time.Minute, "", present, mirror.Present, true, 1},
		{"missing, first check", 0, "", missing, mirror.Missing, false, 2},
		{"missing, cached", 29 * time.Second, "", missing, mirror.Missing, true, 2},
		{"pushed meanwhile, negative answer still cached", 0, "mirror/app:v2", missing, mirror.Missing, true, 2},
		{"negative answer expired: present now", 2 * time.Second, "", missing, mirror.Present, false, 3},
		{"positive answer expired: asked again", 10 * time.Minute, "", present, mirror.Present, false, 4},
	}
	for _, s := range steps {
		clk.advance(s.advance)
		if s.push != "" {
			reg.Push(t, s.push)
		}
		res, err := c.Exists(t.Context(), s.ref)
		if err != nil || res.Outcome != s.want || res.Cached != s.wantCached {
			t.Errorf("%s: %+v, %v; want %s, cached %v", s.name, res, err, s.want, s.wantCached)
		}
		if got := reg.ManifestHeads(); got != s.wantHeads {
			t.Errorf("%s: %d manifest HEADs so far, want %d", s.name, got, s.wantHeads)
		}
	}
}

// TestSingleflight: concurrent checks of one reference, as the Pods of a
// 100-replica rollout arrive, cost one registry lookup.
func TestSingleflight(t *testing.T) {
	tests := []struct {
		name     string
		replicas int
		push     bool
		want     mirror.Outcome
	}{
		{"100 replicas, present", 100, true, mirror.Present},
		{"100 replicas, missing", 100, false, mirror.Missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			if tt.push {
				reg.Push(t, "mirror/app:v1")
			}
			before := reg.Requests()
			c := newChecker(t, mirror.Options{Timeout: 10 * time.Second, PositiveTTL: time.Minute, NegativeTTL: time.Minute})
			// Hold the lookup until every check has missed the cache and
			// is waiting, so that all of them are concurrent.
			reg.SetHang(true)
			ref := reg.Host + "/mirror/app:v1"
			results := make([]mirror.Result, tt.replicas)
			errs := make([]error, tt.replicas)
			var wg sync.WaitGroup
			for i := range tt.replicas {
				wg.Go(func() { results[i], errs[i] = c.Exists(t.Context(), ref) })
			}
			for c.Stats().CacheMisses < uint64(tt.replicas) {
				time.Sleep(time.Millisecond)
			}
			// A miss is counted just before joining the flight.
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			reg.SetHang(false)
			wg.Wait()
			t.Logf("%d checks answered %s %s after the registry was released; %d requests to the registry (HEADs and the /v2/ ping)",
				tt.replicas, tt.want, time.Since(start).Round(time.Microsecond), reg.Requests()-before)
			for i := range results {
				if errs[i] != nil || results[i].Outcome != tt.want {
					t.Fatalf("check %d: %+v, %v; want %s", i, results[i], errs[i], tt.want)
				}
			}
			if heads := reg.ManifestHeads(); heads != 1 {
				t.Errorf("%d manifest HEADs for %d concurrent checks, want 1", heads, tt.replicas)
			}
			if s := c.Stats(); s.Lookups != 1 || s.Shared != uint64(tt.replicas) {
				t.Errorf("stats %+v, want 1 lookup shared by all %d checks", s, tt.replicas)
			}
			// And the replicas that come after are answered by the cache.
			if res, err := c.Exists(t.Context(), ref); err != nil || !res.Cached {
				t.Errorf("check after the rollout: %+v, %v; want cached", res, err)
			}
		})
	}
}
