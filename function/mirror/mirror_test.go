package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

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
		want    mirror.Status
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
			if res.Status != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("Exists(%q) = %+v, %v; want %s (error %v)", tt.ref, res, err, tt.want, tt.wantErr)
			}
			if tt.wantErr {
				t.Logf("error: %v", err)
				return
			}
			// Present and missing are cached, errors are not.
			again, err := c.Exists(t.Context(), tt.ref)
			if err != nil || again.Status != tt.want || !again.Cached {
				t.Errorf("second Exists(%q) = %+v, %v; want %s from the cache", tt.ref, again, err, tt.want)
			}
		})
	}
	if heads := failing.ManifestHeads(); heads != 0 {
		t.Errorf("failing registry got %d manifest HEADs; its /v2/ ping fails first, so want 0", heads)
	}
}

// waitState waits (a few seconds at most) for the registry's circuit to
// reach want: probes report in the background.
func waitState(t *testing.T, c *mirror.Checker, reg string, want mirror.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.CircuitState(reg) != want {
		if time.Now().After(deadline) {
			t.Fatalf("circuit of %s is %s, want %s", reg, c.CircuitState(reg), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHungRegistry: a registry that accepts connections and answers nothing
// (its /v2/ endpoint included) costs each check at most the timeout; after
// Failures of them a probe of /v2/ fails too and the circuit opens, and
// checks are answered without asking it; after the cool-down a probe
// decides, and the check that started it waits for its verdict.
func TestHungRegistry(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/app:v1")
	clk := newClock()
	const timeout = 100 * time.Millisecond
	c := newChecker(t, mirror.Options{Timeout: timeout, PositiveTTL: time.Minute, Failures: 2, Cooldown: 30 * time.Second, Now: clk.Now})
	ref := reg.Host + "/mirror/app:v1"

	steps := []struct {
		name      string
		advance   time.Duration
		hang      bool
		want      mirror.Status
		wantAsked bool // the registry got requests during the step
		wantState mirror.State
		probes    uint64 // probes so far
	}{
		{"first timeout", 0, true, mirror.Timeout, true, mirror.Closed, 0},
		{"second timeout: a probe fails, the circuit opens", 0, true, mirror.Timeout, true, mirror.Open, 1},
		{"open: not asked", time.Second, true, mirror.CircuitOpen, false, mirror.Open, 1},
		{"still open before the cool-down", 28 * time.Second, true, mirror.CircuitOpen, false, mirror.Open, 1},
		{"after the cool-down the probe fails: open again", 2 * time.Second, true, mirror.CircuitOpen, true, mirror.Open, 2},
		{"open again: not asked", time.Second, true, mirror.CircuitOpen, false, mirror.Open, 2},
		{"probe after the cool-down answered: closed, and the check asks", 30 * time.Second, false, mirror.Present, true, mirror.Closed, 3},
	}
	for _, s := range steps {
		clk.advance(s.advance)
		reg.SetHangAll(s.hang)
		before := reg.Requests()
		start := time.Now()
		res, err := c.Exists(t.Context(), ref)
		elapsed := time.Since(start)
		t.Logf("%s: %s in %s (%v)", s.name, res.Status, elapsed.Round(time.Millisecond), err)
		if res.Status != s.want {
			t.Fatalf("%s: outcome %s, want %s (%v)", s.name, res.Status, s.want, err)
		}
		if s.want == mirror.CircuitOpen && !errors.Is(err, mirror.ErrCircuitOpen) {
			t.Errorf("%s: error %v does not wrap ErrCircuitOpen", s.name, err)
		}
		if elapsed > 15*timeout {
			t.Errorf("%s: the check took %s, more than a probe (10×%s) and a lookup (%s)", s.name, elapsed, timeout, timeout)
		}
		waitState(t, c, reg.Host, s.wantState)
		if asked := reg.Requests() > before; asked != s.wantAsked {
			t.Errorf("%s: registry asked %v, want %v", s.name, asked, s.wantAsked)
		}
		if got := c.Stats().Probes; got != s.probes {
			t.Errorf("%s: %d probes so far, want %d", s.name, got, s.probes)
		}
	}
}

// TestChosenReferencesCannotOpenTheCircuit: references that are slow past
// the timeout, or missing, fail (or answer) only for themselves; the
// registry answers the probe, so however many of them are asked the circuit
// stays closed and the images it has are checked. A registry that fails
// everything (503) opens it: the probe fails as well.
func TestChosenReferencesCannotOpenTheCircuit(t *testing.T) {
	tests := []struct {
		name       string
		knownFirst bool   // a present reference was answered first: probes HEAD it
		prefix     string // of the flood's repositories
		status     int    // the registry answers everything with it
		want       mirror.Status
		wantState  mirror.State
		wantProbes bool
	}{
		{"slow references, probe /v2/", false, "mirror/slow", 0, mirror.Timeout, mirror.Closed, true},
		{"slow references, probe a known image", true, "mirror/slow", 0, mirror.Timeout, mirror.Closed, true},
		{"missing references", true, "mirror/nothing", 0, mirror.Missing, mirror.Closed, false},
		{"the registry answers 503: open", true, "mirror/any", http.StatusServiceUnavailable, mirror.Error, mirror.Open, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			reg.Push(t, "mirror/app:v1")
			reg.SetSlow("mirror/slow", 10*time.Second)
			c := newChecker(t, mirror.Options{Timeout: 500 * time.Millisecond, PositiveTTL: time.Minute, NegativeTTL: time.Minute,
				Failures: 3, Cooldown: time.Hour, Logger: zaptest.NewLogger(t)})
			present := reg.Host + "/mirror/app:v1"
			if tt.knownFirst {
				if res, err := c.Exists(t.Context(), present); err != nil || res.Status != mirror.Present {
					t.Fatalf("Exists(%s) = %+v, %v", present, res, err)
				}
			}
			reg.SetStatus(tt.status)
			const flood = 24
			var wg sync.WaitGroup
			for i := range flood {
				wg.Go(func() {
					ref := fmt.Sprintf("%s/%s%03d/app:v1", reg.Host, tt.prefix, i)
					if res, _ := c.Exists(t.Context(), ref); res.Status != tt.want && res.Status != mirror.CircuitOpen {
						t.Errorf("Exists(%s) = %s, want %s", ref, res.Status, tt.want)
					}
				})
			}
			wg.Wait()
			// Probes report in the background, each within the timeout.
			if tt.wantState == mirror.Open {
				waitState(t, c, reg.Host, mirror.Open)
			} else {
				time.Sleep(time.Second)
			}
			s := c.Stats()
			t.Logf("%d lookups, %d probes; circuit %s", s.Lookups, s.Probes, c.CircuitState(reg.Host))
			if got := c.CircuitState(reg.Host); got != tt.wantState {
				t.Fatalf("circuit %s after %d references under %s, want %s", got, flood, tt.prefix, tt.wantState)
			}
			if (s.Probes > 0) != tt.wantProbes {
				t.Errorf("%d probes, want some: %v", s.Probes, tt.wantProbes)
			}
			if tt.wantState == mirror.Closed {
				// The cluster's own image is still checked, by a lookup.
				other := reg.Push(t, "mirror/other:v1")
				if res, err := c.Exists(t.Context(), other); err != nil || res.Status != mirror.Present || res.Cached {
					t.Errorf("Exists(%s) after the flood = %+v, %v; want present from the registry", other, res, err)
				}
			}
		})
	}
}

// TestCallerDeadline: a check whose caller's deadline passes returns then;
// its lookup is cancelled at once (the registry sees the client give up and
// answers nothing after the deadline), nothing is cached and the registry
// is not blamed. A lookup another check still waits for goes on and
// answers that check.
func TestCallerDeadline(t *testing.T) {
	tests := []struct {
		name         string
		patient      bool // a second check without a deadline waits for the same reference
		wantAnswered int  // manifest answers after the deadline
	}{
		{"alone: the lookup is cancelled", false, 0},
		{"shared: the lookup goes on for the other check", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := mirrortest.New(t, mirrortest.Options{})
			reg.Push(t, "mirror/slow/app:v1")
			const delay = 500 * time.Millisecond
			reg.SetSlow("mirror/slow", delay)
			c := newChecker(t, mirror.Options{Timeout: 10 * time.Second, PositiveTTL: time.Minute, Failures: 1})
			ref := reg.Host + "/mirror/slow/app:v1"

			patient := make(chan mirror.Lookup, 1)
			if tt.patient {
				go func() {
					res, _ := c.Exists(t.Context(), ref)
					patient <- res
				}()
				for c.Stats().CacheMisses == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			res, err := c.Exists(ctx, ref)
			deadline := time.Now()
			t.Logf("caller with a 50ms deadline: %s in %s (%v)", res.Status, deadline.Sub(start).Round(time.Millisecond), err)
			if res.Status != mirror.Timeout || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Exists = %+v, %v; want timeout wrapping context.DeadlineExceeded", res, err)
			}
			if tt.patient {
				if r := <-patient; r.Status != mirror.Present {
					t.Errorf("the patient check got %s, want present", r.Status)
				}
			} else {
				time.Sleep(delay + 300*time.Millisecond) // past the moment the registry would answer
				if _, ok := c.Cached(t.Context(), ref); ok {
					t.Error("the cancelled lookup cached an answer")
				}
				if s := c.Stats(); s.Cancelled != 1 {
					t.Errorf("stats %+v, want 1 cancelled lookup", s)
				}
			}
			if got := reg.AnsweredAfter(deadline); got != tt.wantAnswered {
				t.Errorf("%d requests answered after the deadline, want %d", got, tt.wantAnswered)
			}
			if st := c.CircuitState(reg.Host); st != mirror.Closed || c.Stats().Probes != 0 {
				t.Errorf("circuit %s after %d probes, want closed without a probe (Failures is 1)", st, c.Stats().Probes)
			}
		})
	}
}

// TestSharedRepositorySetup: the registry client sets up one connection
// per repository, with the context of the first lookup that needs it; when
// that lookup is cancelled (its review gave up) while another lookup of the
// same repository waits for the setup, the other sets it up again rather
// than fail: a review that gives up early cannot fail another's check.
func TestSharedRepositorySetup(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	reg.Push(t, "mirror/app:v2")
	reg.SetSlowPing(300 * time.Millisecond)
	c := newChecker(t, mirror.Options{Timeout: 5 * time.Second, Failures: 1})

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	gaveUp := make(chan error, 1)
	go func() {
		_, err := c.Exists(ctx, reg.Host+"/mirror/app:v1")
		gaveUp <- err
	}()
	for reg.Requests() == 0 { // the first lookup is setting the repository up
		time.Sleep(time.Millisecond)
	}
	res, err := c.Exists(t.Context(), reg.Host+"/mirror/app:v2")
	if err := <-gaveUp; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the impatient check: %v, want it to give up", err)
	}
	if err != nil || res.Status != mirror.Present {
		t.Fatalf("the patient check of the same repository: %+v, %v; want present", res, err)
	}
	if st := c.CircuitState(reg.Host); st != mirror.Closed || c.Stats().Probes != 0 {
		t.Errorf("circuit %s, %d probes; want closed, no probe", st, c.Stats().Probes)
	}
}

// TestMaxInFlight: however many checks arrive, at most MaxInFlight lookups
// are at the registry at once; a check waits for a slot no longer than its
// deadline, and a lookup that got no slot never reaches the registry.
func TestMaxInFlight(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	// Far past the checks' deadline, so that no lookup frees its slot
	// before the deadline even when a loaded machine runs timers late: the
	// registry answers a lookup only when its client gives up.
	reg.SetSlow("mirror/slow", 10*time.Second)
	const max = 4
	c := newChecker(t, mirror.Options{Timeout: 5 * time.Second, MaxInFlight: max, NegativeTTL: time.Minute})

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	var wg sync.WaitGroup
	var late atomic.Int64
	for i := range 40 {
		wg.Go(func() {
			res, err := c.Exists(mirror.WithReview(ctx), fmt.Sprintf("%s/mirror/slow%02d/app:v1", reg.Host, i))
			if err == nil {
				t.Errorf("check %d: %s, want gave up at the deadline", i, res.Status)
			}
			if time.Since(begin) > 2*time.Second {
				late.Add(1)
			}
		})
	}
	wg.Wait()
	if n := late.Load(); n > 0 {
		t.Errorf("%d checks returned long after their deadline", n)
	}
	time.Sleep(500 * time.Millisecond) // lookups in flight see their cancellation
	s := c.Stats()
	t.Logf("stats %+v; registry: %d requests, at most %d at once", s, reg.Requests(), reg.MaxInFlight())
	if s.MaxInFlight > max || reg.MaxInFlight() > max {
		t.Errorf("%d lookups held a slot at once and the registry served %d requests at once; want at most %d", s.MaxInFlight, reg.MaxInFlight(), max)
	}
	if heads := reg.ManifestHeads(); heads > max {
		t.Errorf("%d manifest HEADs reached the registry, want at most the %d lookups that had a slot before the deadline", heads, max)
	}
	if s.InFlight != 0 || reg.InFlight() != 0 {
		t.Errorf("%d slots and %d registry requests still in use after every check gave up", s.InFlight, reg.InFlight())
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
		want    mirror.Status
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
			if res.Status != tt.want || (err != nil) != tt.wantErr {
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
		want       mirror.Status
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
		if err != nil || res.Status != s.want || res.Cached != s.wantCached {
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
		want     mirror.Status
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
			results := make([]mirror.Lookup, tt.replicas)
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
				if errs[i] != nil || results[i].Status != tt.want {
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
