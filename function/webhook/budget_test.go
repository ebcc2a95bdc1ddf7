package webhook_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/webhook"
)

// countingBody is a request body that counts the bytes read from it and,
// when gate is set, blocks its first read until the gate is closed.
type countingBody struct {
	r       io.Reader
	read    atomic.Int64
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.gate != nil {
		b.once.Do(func() { close(b.entered) })
		<-b.gate
	}
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return nil }

func budgetHandler(t *testing.T, budget int64) *webhook.Handler {
	t.Helper()
	c, err := admission.New(config.Config{Registry: "registry.example.com", ImagePullPolicyToForce: "Always", Mode: config.Enforce}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := webhook.New(context.Background(), webhook.Options{BodyBudget: budget}, c)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func budgetRequest(body *countingBody, length int64) *http.Request {
	req := httptest.NewRequest(http.MethodPost, admission.Path, nil)
	req.Body, req.ContentLength = body, length
	req.Header.Set("Content-Type", "application/json")
	return req
}

// TestBodyBudget: a body over the limit is refused (413) and one that does
// not fit the budget (429, with Retry-After) is refused before any byte of
// it is read; ordinary reviews still get through while large bodies hold
// the budget.
func TestBodyBudget(t *testing.T) {
	review, err := os.ReadFile("../../test/testdata/pod-review.json")
	if err != nil {
		t.Fatal(err)
	}
	const budget = 8 << 20 // room for two 3 MiB bodies in the large share (6 MiB)
	h := budgetHandler(t, budget)

	t.Run("declared too large", func(t *testing.T) {
		body := &countingBody{r: strings.NewReader(strings.Repeat("x", 100))}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, budgetRequest(body, webhook.MaxBodyBytes+1))
		if rec.Code != http.StatusRequestEntityTooLarge || body.read.Load() != 0 {
			t.Fatalf("status %d after reading %d bytes; want 413 without reading", rec.Code, body.read.Load())
		}
	})

	// Two large bodies stall in the handler, holding 6 MiB of the budget.
	gate := make(chan struct{})
	var wg sync.WaitGroup
	var stalled []*countingBody
	for range 2 {
		b := &countingBody{r: bytes.NewReader(make([]byte, 3<<20)), gate: gate, entered: make(chan struct{})}
		stalled = append(stalled, b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.ServeHTTP(httptest.NewRecorder(), budgetRequest(b, 3<<20))
		}()
	}
	for _, b := range stalled {
		select {
		case <-b.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a large body never reached the handler")
		}
	}

	t.Run("large body over the budget", func(t *testing.T) {
		body := &countingBody{r: bytes.NewReader(make([]byte, 1<<20))}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, budgetRequest(body, 1<<20))
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || body.read.Load() != 0 {
			t.Fatalf("status %d, Retry-After %q, %d bytes read; want 429 with Retry-After without reading", rec.Code, rec.Header().Get("Retry-After"), body.read.Load())
		}
		if !strings.Contains(rec.Body.String(), "budget") {
			t.Errorf("429 body %q does not say why", rec.Body)
		}
	})
	t.Run("ordinary review during the flood", func(t *testing.T) {
		for i := range 20 {
			rec := post(h, review, "application/json")
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"allowed":true`) {
				t.Fatalf("review %d answered %d: %.200s", i, rec.Code, rec.Body)
			}
		}
	})
	close(gate)
	wg.Wait()
	t.Run("budget released", func(t *testing.T) {
		body := &countingBody{r: bytes.NewReader(review)}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, budgetRequest(body, int64(len(review))))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d after the large bodies finished", rec.Code)
		}
	})
}
