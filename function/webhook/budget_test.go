package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/webhook"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// stallingBody is a request body that yields its first stallAt bytes, then
// blocks until gate is closed (closing entered when it does), then yields
// the rest: a client that sends part of its body and holds the connection.
type stallingBody struct {
	r       io.Reader
	stallAt int64
	read    atomic.Int64
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if left := b.stallAt - b.read.Load(); left <= 0 {
		b.once.Do(func() { close(b.entered) })
		<-b.gate
	} else if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *stallingBody) Close() error { return nil }

func stalling(body []byte, stallAt int64, gate chan struct{}) *stallingBody {
	return &stallingBody{r: bytes.NewReader(body), stallAt: stallAt, gate: gate, entered: make(chan struct{})}
}

func budgetHandler(t *testing.T, budget int64) *webhook.Handler {
	t.Helper()
	c := testkit.Controller(t, config.Env{Registry: "registry.example.com", ImagePullPolicyToForce: "Always", Mode: config.Enforce}, nil)
	h, err := webhook.New(context.Background(), webhook.Options{BodyBudget: budget}, c)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func budgetRequest(body io.ReadCloser, length int64, client string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, admission.Path, nil)
	req.Body, req.ContentLength = body, length
	req.RemoteAddr = client + ":40000"
	req.Header.Set("Content-Type", "application/json")
	return req
}

// bigReview is a Pod review of about size bytes (a label pads it) with the
// given uid.
func bigReview(uid string, size int) []byte {
	head := `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"` + uid + `","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"labels":{"a":"`
	tail := `"}},"spec":{"containers":[{"name":"a","image":"nginx"}]}}}}`
	return []byte(head + strings.Repeat("x", max(size-len(head)-len(tail), 0)) + tail)
}

// answer decodes a 200 AdmissionReview answer.
func answer(t *testing.T, rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200 with an AdmissionReview: %.300s", rec.Code, rec.Body)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("not an AdmissionReview (%v): %.300s", err, rec.Body)
	}
	return review.Response
}

// TestBodyBudget: bytes that have not arrived hold no budget; a review that
// does not fit is denied with its uid (code 429), never failed open; one
// client cannot take the whole large share; ordinary reviews always get
// through; and everything is given back.
func TestBodyBudget(t *testing.T) {
	review := testdata(t, "pod-review.json")
	const budget = 8 << 20 // large share 6 MiB, 3 MiB per client (the share less one 3 MiB body)
	h := budgetHandler(t, budget)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	hold := func(gate chan struct{}, client string, body []byte, stallAt int64) *stallingBody {
		b := stalling(body, stallAt, gate)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.ServeHTTP(httptest.NewRecorder(), budgetRequest(b, int64(len(body)), client))
		}()
		select {
		case <-b.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a held body never reached the handler")
		}
		return b
	}

	t.Run("headers without a body hold nothing", func(t *testing.T) {
		gate := make(chan struct{})
		defer func() { close(gate); wg.Wait() }()
		// Fifty clients declare 3 MiB bodies and send none of it: on
		// the old code they reserved 150 MiB of an 8 MiB budget.
		for i := range 50 {
			hold(gate, fmt.Sprintf("10.0.0.%d", i), make([]byte, 3<<20), 0)
		}
		big := bigReview("big-during-idle", 2<<20)
		if resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), int64(len(big)), "10.1.0.1"))); !resp.Allowed {
			t.Errorf("a 2 MiB review was refused while only idle connections were open: %+v", resp.Result)
		}
	})

	t.Run("over the budget: denied with the uid", func(t *testing.T) {
		gate := make(chan struct{})
		defer func() { close(gate); wg.Wait() }()
		// Two clients each send 3 MiB minus a byte and stall: the large
		// share (6 MiB) is full of bytes that did arrive.
		for _, client := range []string{"10.2.0.1", "10.2.0.2"} {
			hold(gate, client, bigReview("held", 3<<20), 3<<20-1)
		}
		big := bigReview("uid-over-budget", 1<<20)
		resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), int64(len(big)), "10.1.0.1")))
		if resp.Allowed || resp.UID != "uid-over-budget" || resp.Result == nil || resp.Result.Code != http.StatusTooManyRequests || !strings.Contains(resp.Result.Message, "retry") {
			t.Errorf("answer %+v, want a denial of uid-over-budget with code 429 saying retry", resp)
		}
		for i := range 20 {
			if resp := answer(t, post(h, review, "application/json")); !resp.Allowed {
				t.Fatalf("ordinary review %d refused during the flood: %+v", i, resp.Result)
			}
		}
	})

	t.Run("one client leaves room for another's large review", func(t *testing.T) {
		gate := make(chan struct{})
		defer func() { close(gate); wg.Wait() }()
		hold(gate, "10.3.0.1", bigReview("first", 2<<20), 2<<20-1)
		big := bigReview("uid-same-client", 2<<20)
		resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), int64(len(big)), "10.3.0.1")))
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusTooManyRequests {
			t.Errorf("the same client's second 2 MiB body: %+v, want a 429 denial (per-client cap 3 MiB)", resp)
		}
		if resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), int64(len(big)), "10.3.0.2"))); !resp.Allowed {
			t.Errorf("another client's 2 MiB body was refused: %+v", resp.Result)
		}
	})

	wg.Wait()
	t.Run("budget released", func(t *testing.T) {
		for _, client := range []string{"10.2.0.1", "10.2.0.2", "10.3.0.1"} {
			big := bigReview("after", 3<<20-64)
			if resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), int64(len(big)), client))); !resp.Allowed {
				t.Fatalf("client %s refused after the held bodies finished: %+v", client, resp.Result)
			}
		}
	})
}

// TestLargeReviews: reviews past knative's 3 MiB limit are processed (the
// API server sends them for objects etcd stores), and one past the largest
// review any API server sends is denied with its uid rather than answered
// with an HTTP error that failurePolicy Ignore would admit.
func TestLargeReviews(t *testing.T) {
	h := budgetHandler(t, 0)
	t.Run("5 MiB review patched", func(t *testing.T) {
		big := bigReview("uid-5m", 5<<20)
		resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), int64(len(big)), "10.0.0.1")))
		if !resp.Allowed || resp.UID != "uid-5m" || !strings.Contains(string(resp.Patch), "registry.example.com/nginx") {
			t.Errorf("answer %+v (patch %s), want the image rewritten for uid-5m", resp, resp.Patch)
		}
	})
	t.Run("chunked 5 MiB review patched", func(t *testing.T) {
		big := bigReview("uid-chunked", 5<<20)
		resp := answer(t, serve(h, budgetRequest(io.NopCloser(bytes.NewReader(big)), -1, "10.0.0.1")))
		if !resp.Allowed || !strings.Contains(string(resp.Patch), "registry.example.com/nginx") {
			t.Errorf("answer %+v, want the image rewritten", resp)
		}
	})
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprintf("over MaxReviewBytes, length declared %v", declared), func(t *testing.T) {
			big := bigReview("uid-huge", webhook.MaxReviewBytes+1)
			length := int64(len(big))
			if !declared {
				length = -1
			}
			body := &stallingBody{r: bytes.NewReader(big), stallAt: math.MaxInt64}
			resp := answer(t, serve(h, budgetRequest(body, length, "10.0.0.1")))
			if resp.Allowed || resp.UID != "uid-huge" || resp.Result == nil || resp.Result.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("answer %+v, want a 413 denial of uid-huge", resp)
			}
			if declared && body.read.Load() > 64<<10 {
				t.Errorf("read %d bytes of a body declared over the limit; want only its start", body.read.Load())
			}
		})
	}
	t.Run("over MaxReviewBytes without a uid", func(t *testing.T) {
		body := io.NopCloser(strings.NewReader(strings.Repeat(" ", webhook.MaxReviewBytes+1)))
		rec := serve(h, budgetRequest(body, -1, "10.0.0.1"))
		if rec.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413 for a body that names no review", rec.Code)
		}
	})
}

// TestIdleBodyCut: a connection that sends a request's headers and no body
// is closed after the body deadline, instead of holding the handler for the
// server's whole read timeout.
func TestIdleBodyCut(t *testing.T) {
	srv := httptest.NewServer(budgetHandler(t, 0))
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 262144\r\n\r\n{", admission.Path)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the connection was not closed by the server: %v (read %q)", err, reply)
	}
	if !strings.Contains(string(reply), "400") {
		t.Errorf("reply %q, want a 400 for the body that never came", reply)
	}
}

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestRequireClientCert: with TLS_CLIENT_CA_FILE only a client whose
// certificate was verified may post reviews; probes need none.
func TestRequireClientCert(t *testing.T) {
	c := testkit.Controller(t, config.Env{Registry: "registry.example.com", ImagePullPolicyToForce: "Always", Mode: config.Enforce}, nil)
	h, err := webhook.New(t.Context(), webhook.Options{RequireClientCert: true}, c)
	if err != nil {
		t.Fatal(err)
	}
	review := testdata(t, "pod-review.json")
	tests := []struct {
		name     string
		tls      *tls.ConnectionState
		path     string
		wantCode int
	}{
		{"no TLS", nil, admission.Path, http.StatusUnauthorized},
		{"TLS without a client certificate", &tls.ConnectionState{}, admission.Path, http.StatusUnauthorized},
		{"verified client certificate", &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}, admission.Path, http.StatusOK},
		{"readiness probe without one", &tls.ConnectionState{}, webhook.ReadinessPath, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodPost
			if tt.path != admission.Path {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, tt.path, bytes.NewReader(review))
			req.Header.Set("Content-Type", "application/json")
			req.TLS = tt.tls
			if rec := serve(h, req); rec.Code != tt.wantCode {
				t.Errorf("status %d, want %d: %.200s", rec.Code, tt.wantCode, rec.Body)
			}
		})
	}
}
