package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// fakeWebhook answers like the mutator: the request's uid, allowed, and a
// JSON patch that applies to the template's Pod. fault, when set, replaces
// the answer.
func fakeWebhook(t *testing.T, fault func(w http.ResponseWriter, r *http.Request, review *admissionv1.AdmissionReview) bool) http.Handler {
	t.Helper()
	jsonPatch := admissionv1.PatchTypeJSONPatch
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		if fault != nil && fault(w, r, &review) {
			return
		}
		review.Response = &admissionv1.AdmissionResponse{
			UID: review.Request.UID, Allowed: true, PatchType: &jsonPatch,
			Patch: []byte(`[{"op":"add","path":"/metadata/labels/loadgen","value":"yes"}]`),
		}
		review.Request = nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&review)
	})
}

// closedPort returns a loopback URL nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/mutate"
}

func TestRunFaults(t *testing.T) {
	body := testdata(t, "pod-review.json")
	hangup := func(w http.ResponseWriter, _ *http.Request, _ *admissionv1.AdmissionReview) bool {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	}
	status := func(code int) func(http.ResponseWriter, *http.Request, *admissionv1.AdmissionReview) bool {
		return func(w http.ResponseWriter, _ *http.Request, _ *admissionv1.AdmissionReview) bool {
			http.Error(w, "failing on purpose", code)
			return true
		}
	}
	otherUID := func(_ http.ResponseWriter, _ *http.Request, review *admissionv1.AdmissionReview) bool {
		review.Request.UID = "someone-else"
		return false
	}
	slow := func(_ http.ResponseWriter, r *http.Request, _ *admissionv1.AdmissionReview) bool {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return true
	}
	tests := []struct {
		name    string
		fault   func(http.ResponseWriter, *http.Request, *admissionv1.AdmissionReview) bool
		targets func(good string) []string
		cfg     Config
		want    string // the only error kind, "" for none
	}{
		{name: "valid answers", cfg: Config{ExpectPatch: true}},
		{name: "status 500", fault: status(http.StatusInternalServerError), want: "http_500"},
		{name: "other uid", fault: otherUID, want: KindUID},
		{name: "hang up", fault: hangup, want: KindUnanswered},
		{name: "timeout", fault: slow, cfg: Config{Timeout: 50 * time.Millisecond}, want: KindTimeout},
		{name: "connection refused", targets: func(string) []string { return []string{closedPort(t)} }, want: KindConnect},
		{
			name:    "connection refused, retried on the next target",
			targets: func(good string) []string { return []string{closedPort(t), good} },
			cfg:     Config{RetryConnect: true, ExpectPatch: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(fakeWebhook(t, tt.fault))
			defer srv.Close()
			cfg := tt.cfg
			cfg.Targets = []string{srv.URL + "/mutate"}
			if tt.targets != nil {
				cfg.Targets = tt.targets(srv.URL + "/mutate")
			}
			cfg.Body, cfg.Workers, cfg.Requests = body, 2, 10
			var (
				mu      sync.Mutex
				results []Result
			)
			cfg.OnResult = func(r Result) {
				mu.Lock()
				defer mu.Unlock()
				results = append(results, r)
			}
			sum, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Requests != 10 || len(results) != 10 {
				t.Fatalf("%d requests, %d results, want 10", sum.Requests, len(results))
			}
			if tt.want == "" {
				if sum.Errors != 0 || sum.OK != 10 {
					t.Fatalf("ok %d, errors %v %v", sum.OK, sum.ErrorsByKind, sum.ErrorSamples)
				}
				if sum.Latency.Max == 0 || sum.Histogram().Count() != 10 {
					t.Errorf("latency not recorded: %+v", sum.Latency)
				}
			} else if sum.ErrorsByKind[tt.want] != 10 || sum.Errors != 10 {
				t.Fatalf("errors %v, want 10 of kind %q (%v)", sum.ErrorsByKind, tt.want, sum.ErrorSamples)
			}
			if cfg.RetryConnect && sum.Retried == 0 {
				t.Errorf("no request was retried on the second target")
			}
			uids := map[string]bool{}
			for _, r := range results {
				if uids[r.UID] {
					t.Errorf("uid %s used twice", r.UID)
				}
				uids[r.UID] = true
				if r.OK() != (tt.want == "") {
					t.Errorf("result %+v", r)
				}
			}
		})
	}
}

func TestRunModes(t *testing.T) {
	body := testdata(t, "pod-review.json")
	srv := httptest.NewUnstartedServer(fakeWebhook(t, nil))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	tlsConfig := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	target := []string{srv.URL + "/mutate"}

	tests := []struct {
		name      string
		cfg       Config
		wantReqs  uint64 // exact count when > 0
		wantProto string
	}{
		{"closed loop, request budget, protocol chosen by the server", Config{Workers: 4, Requests: 100}, 100, "HTTP/2.0"},
		{"closed loop, request budget, HTTP/1.1", Config{Workers: 4, Requests: 100, HTTP1: true}, 100, "HTTP/1.1"},
		{"closed loop, request budget, HTTP/2 required", Config{Workers: 4, Requests: 100, HTTP2: true}, 100, "HTTP/2.0"},
		{"open loop, HTTP/1.1", Config{Rate: 500, Requests: 50, HTTP1: true}, 0, "HTTP/1.1"},
		{"closed loop, duration", Config{Workers: 2, Duration: 200 * time.Millisecond}, 0, "HTTP/2.0"},
		{"open loop, request budget", Config{Rate: 500, Requests: 50}, 0, "HTTP/2.0"},
		{"open loop, duration", Config{Rate: 200, Duration: 250 * time.Millisecond, MaxInFlight: 4}, 0, "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Targets, cfg.Body, cfg.TLS, cfg.ExpectPatch = target, body, tlsConfig, true
			sum, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Errors != 0 || sum.OK != sum.Requests || sum.Requests == 0 {
				t.Fatalf("requests %d ok %d errors %v %v", sum.Requests, sum.OK, sum.ErrorsByKind, sum.ErrorSamples)
			}
			if tt.wantReqs > 0 && sum.Requests != tt.wantReqs {
				t.Errorf("%d requests, want %d", sum.Requests, tt.wantReqs)
			}
			if sum.Protocols[tt.wantProto] != sum.Requests || sum.Protocol != tt.wantProto {
				t.Errorf("protocol %q, protocols %v, want all %s", sum.Protocol, sum.Protocols, tt.wantProto)
			}
			if cfg.Rate > 0 {
				if sum.Mode != "open" || sum.Requests+sum.Missed != sum.Scheduled {
					t.Errorf("open loop: mode %s, sent %d + missed %d != scheduled %d", sum.Mode, sum.Requests, sum.Missed, sum.Scheduled)
				}
				if cfg.Requests > 0 && sum.Scheduled != uint64(cfg.Requests) {
					t.Errorf("scheduled %d, want %d", sum.Scheduled, cfg.Requests)
				}
			}
			var text bytes.Buffer
			if err := sum.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"requests", "p50", "p99", "max", fmt.Sprintf("ok %d", sum.OK), "\nprotocol    " + tt.wantProto + "\n"} {
				if !strings.Contains(text.String(), want) {
					t.Errorf("summary lacks %q:\n%s", want, text.String())
				}
			}
			js, err := json.Marshal(sum)
			if err != nil {
				t.Fatal(err)
			}
			var back map[string]any
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatalf("summary JSON %s: %v", js, err)
			}
			if _, ok := back["latencyMs"].(map[string]any)["p99"].(float64); !ok {
				t.Errorf("summary JSON lacks latencyMs.p99: %s", js)
			}
			if back["protocol"] != tt.wantProto {
				t.Errorf("summary JSON protocol %v, want %s", back["protocol"], tt.wantProto)
			}
		})
	}
}

// A summary over two protocols says so rather than naming either.
func TestSummaryMixedProtocols(t *testing.T) {
	r := &runner{cfg: Config{Targets: []string{"x"}}}
	st := newStats()
	st.add(Result{Proto: "HTTP/1.1"})
	st.add(Result{Proto: "HTTP/2.0"})
	st.add(Result{Kind: KindConnect}) // no answer, no protocol
	sum := r.summarize("closed", []*stats{st}, time.Second)
	if sum.Protocol != "mixed" {
		t.Errorf("protocol %q, want mixed", sum.Protocol)
	}
	var text bytes.Buffer
	if err := sum.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if want := "protocol    mixed: HTTP/1.1=1 HTTP/2.0=1\n"; !strings.Contains(text.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, text.String())
	}
	none := r.summarize("closed", []*stats{newStats()}, time.Second)
	if none.Protocol != "" {
		t.Errorf("protocol %q without answers, want none", none.Protocol)
	}
}

func TestRunCancel(t *testing.T) {
	srv := httptest.NewServer(fakeWebhook(t, nil))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	cfg := Config{
		Targets: []string{srv.URL + "/mutate"}, Body: testdata(t, "pod-review.json"),
		Workers: 4, Duration: time.Minute,
		// Cancel after the first answers: the run must end without
		// cutting off the requests in flight.
		OnResult: func(Result) { once.Do(cancel) },
	}
	sum, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Errors != 0 || sum.Requests == 0 {
		t.Fatalf("requests %d, errors %v", sum.Requests, sum.ErrorsByKind)
	}
}

func TestRunConfigErrors(t *testing.T) {
	body := testdata(t, "pod-review.json")
	for name, cfg := range map[string]Config{
		"no target":            {Body: body, Requests: 1},
		"unbounded":            {Targets: []string{"http://127.0.0.1:1/"}, Body: body},
		"negative":             {Targets: []string{"http://127.0.0.1:1/"}, Body: body, Requests: 1, Rate: -1},
		"bad template":         {Targets: []string{"http://127.0.0.1:1/"}, Body: []byte("{}"), Requests: 1},
		"both HTTP1 and HTTP2": {Targets: []string{"http://127.0.0.1:1/"}, Body: body, Requests: 1, HTTP1: true, HTTP2: true},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err                   error
		gotConn, gotFirstByte bool
		want                  string
	}{
		{context.DeadlineExceeded, true, false, KindTimeout},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), false, false, KindTimeout},
		{&net.OpError{Op: "dial", Err: fmt.Errorf("connection refused")}, false, false, KindConnect},
		{fmt.Errorf("EOF"), true, false, KindUnanswered},
		{fmt.Errorf("unexpected EOF"), true, true, KindTransport},
	}
	for _, tt := range tests {
		if got := classify(tt.err, tt.gotConn, tt.gotFirstByte); got != tt.want {
			t.Errorf("classify(%v, conn %t, first byte %t) = %s, want %s", tt.err, tt.gotConn, tt.gotFirstByte, got, tt.want)
		}
	}
}

func TestReadinessURL(t *testing.T) {
	got, err := ReadinessURL("https://127.0.0.1:8443/mutate?x=1")
	if err != nil || got != "https://127.0.0.1:8443/health/readiness" {
		t.Fatalf("ReadinessURL = %q, %v", got, err)
	}
	if _, err := ReadinessURL("/mutate"); err == nil {
		t.Fatal("relative URL accepted")
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		500:                      "500ns",
		850 * time.Microsecond:   "850µs",
		1234 * time.Microsecond:  "1.23ms",
		12345 * time.Microsecond: "12.3ms",
		1500 * time.Millisecond:  "1.50s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
