package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFloorHandler(t *testing.T) {
	pod := testdata(t, "pod-review.json")
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantUID    string // "" when no review is expected
		wantAPI    string
	}{
		{"pod review", http.MethodPost, "/mutate", string(pod), http.StatusOK, "7f3b2a10-4c5d-4e6f-8a9b-0c1d2e3f4a5b", "admission.k8s.io/v1"},
		{
			// The uids of the user and the object come first: only
			// request.uid may be echoed.
			"request.uid after other uids", http.MethodPost, "/any/path",
			`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"userInfo":{"uid":"user"},"object":{"metadata":{"uid":"object"}},"uid":"the-request"}}`,
			http.StatusOK, "the-request", "admission.k8s.io/v1beta1",
		},
		{"uid needing escapes", http.MethodPost, "/mutate", `{"apiVersion":"admission.k8s.io/v1","request":{"uid":"a\"b\\c"}}`, http.StatusOK, `a"b\c`, "admission.k8s.io/v1"},
		{
			"kube-apiserver's shape, uid with an escape", http.MethodPost, "/mutate",
			`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"a\"b"}}`,
			http.StatusOK, `a"b`, "admission.k8s.io/v1",
		},
		{
			"a decoy request before the top-level one", http.MethodPost, "/mutate",
			`{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","x":{"request":{"uid":"decoy"}},"request":{"uid":"real"}}`,
			http.StatusOK, "real", "admission.k8s.io/v1",
		},
		{"kube-apiserver's shape, empty uid", http.MethodPost, "/mutate", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":""}}`, http.StatusBadRequest, "", ""},
		{"not JSON", http.MethodPost, "/mutate", `{"apiVersion":`, http.StatusBadRequest, "", ""},
		{"no request", http.MethodPost, "/mutate", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest, "", ""},
		{"empty uid", http.MethodPost, "/mutate", `{"apiVersion":"admission.k8s.io/v1","request":{"uid":""}}`, http.StatusBadRequest, "", ""},
		{"no apiVersion", http.MethodPost, "/mutate", `{"request":{"uid":"x"}}`, http.StatusBadRequest, "", ""},
		{"readiness", http.MethodGet, ReadinessPath, "", http.StatusOK, "", ""},
		{"GET of the webhook path", http.MethodGet, "/mutate", "", http.StatusMethodNotAllowed, "", ""},
	}
	h := FloorHandler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if tt.wantUID == "" {
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var answer struct {
				Kind       string `json:"kind"`
				APIVersion string `json:"apiVersion"`
				Response   struct {
					UID     string `json:"uid"`
					Allowed bool   `json:"allowed"`
					Patch   []byte `json:"patch"`
				} `json:"response"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, rec.Body.String())
			}
			if answer.Kind != "AdmissionReview" || answer.APIVersion != tt.wantAPI || answer.Response.UID != tt.wantUID ||
				!answer.Response.Allowed || answer.Response.Patch != nil {
				t.Errorf("answer %s, want an AdmissionReview %s allowing uid %q without a patch", rec.Body.String(), tt.wantAPI, tt.wantUID)
			}
		})
	}
}

// What the load client sends takes the floor's quick path, so that the
// floor measures serving, not a JSON decoder; other shapes do not.
func TestQuickReview(t *testing.T) {
	review, err := NewReview(testdata(t, "pod-review.json"))
	if err != nil {
		t.Fatal(err)
	}
	const uid = "0a1b2c3d-0000-0000-0000-000000000001"
	tests := []struct {
		name           string
		body           string
		wantOK         bool
		wantAPI, wantU string
	}{
		{"load client's review", string(review.Body(uid)), true, `"admission.k8s.io/v1"`, `"` + uid + `"`},
		{"testdata as kube-apiserver sends it", string(testdata(t, "pod-review.json")), true, `"admission.k8s.io/v1"`, `"7f3b2a10-4c5d-4e6f-8a9b-0c1d2e3f4a5b"`},
		{"v1beta1", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u"}}`, true, `"admission.k8s.io/v1beta1"`, `"u"`},
		{"other key order", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}`, false, "", ""},
		{"uid not first in request", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"kind":{},"uid":"u"}}`, false, "", ""},
		{"escape in uid", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"a\u0041"}}`, false, "", ""},
		{"non-ASCII uid", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"é"}}`, false, "", ""},
		{"cut off in the uid", `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"abc`, false, "", ""},
		{"empty apiVersion", `{"kind":"AdmissionReview","apiVersion":"","request":{"uid":"u"}}`, false, "", ""},
		{"empty", "", false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api, u, ok := quickReview([]byte(tt.body))
			if ok != tt.wantOK || string(api) != tt.wantAPI || string(u) != tt.wantU {
				t.Errorf("quickReview = %s, %s, %t, want %s, %s, %t", api, u, ok, tt.wantAPI, tt.wantU, tt.wantOK)
			}
		})
	}
}

// The load client's own check accepts the floor's answer, without
// -expect-patch only.
func TestFloorAnswerPassesCheck(t *testing.T) {
	review, err := NewReview(testdata(t, "pod-review.json"))
	if err != nil {
		t.Fatal(err)
	}
	const uid = "0a1b2c3d-0000-0000-0000-000000000001"
	rec := httptest.NewRecorder()
	FloorHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(string(review.Body(uid)))))
	if kind, err := review.Check(uid, rec.Body.Bytes(), false); kind != "" || err != nil {
		t.Errorf("Check without expectPatch: %s %v", kind, err)
	}
	if kind, _ := review.Check(uid, rec.Body.Bytes(), true); kind != KindPatch {
		t.Errorf("Check with expectPatch: kind %q, want %q", kind, KindPatch)
	}
	if kind, _ := review.Check("another-uid", rec.Body.Bytes(), false); kind != KindUID {
		t.Errorf("Check of another uid: kind %q, want %q", kind, KindUID)
	}
}

// startFloor runs ServeFloor on a loopback port with a fresh certificate
// and returns its mutate URL, a client TLS config trusting it, and a
// function that stops it and returns ServeFloor's error.
func startFloor(t *testing.T, http2 bool) (url string, tlsConfig *tls.Config, stop func() error) {
	t.Helper()
	files, err := WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if tlsConfig, err = LoadCA(files.CA); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- ServeFloor(ctx, ln, FloorOptions{CertFile: files.Cert, KeyFile: files.Key, HTTP2: http2})
	}()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("ServeFloor did not return after its context ended")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return "https://" + ln.Addr().String() + "/mutate", tlsConfig, stop
}

func TestServeFloor(t *testing.T) {
	body := testdata(t, "pod-review.json")
	tests := []struct {
		name        string
		floorHTTP2  bool
		cfg         Config
		wantProto   string // of every answer; "" when every request must fail
		wantCheckH2 bool   // CheckHTTP2 succeeds
	}{
		{"HTTP/1.1 client, HTTP/1.1 floor", false, Config{HTTP1: true}, "HTTP/1.1", false},
		{"HTTP/2 client, HTTP/1.1 floor", false, Config{HTTP2: true}, "", false},
		{"HTTP/1.1 client, floor offering HTTP/2", true, Config{HTTP1: true}, "HTTP/1.1", true},
		{"HTTP/2 client, floor offering HTTP/2", true, Config{HTTP2: true}, "HTTP/2.0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, tlsConfig, stop := startFloor(t, tt.floorHTTP2)
			if err := WaitReady(context.Background(), tlsConfig, url, nil); err != nil {
				t.Fatal(err)
			}
			err := CheckHTTP2(context.Background(), tlsConfig, url)
			if (err == nil) != tt.wantCheckH2 {
				t.Errorf("CheckHTTP2: %v, want success %t", err, tt.wantCheckH2)
			}
			if err != nil && !strings.Contains(err.Error(), "did not negotiate HTTP/2") {
				t.Errorf("CheckHTTP2 error does not say what is wrong: %v", err)
			}
			cfg := tt.cfg
			cfg.Targets, cfg.Body, cfg.TLS, cfg.Workers, cfg.Requests = []string{url}, body, tlsConfig, 2, 40
			sum, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Requests != 40 {
				t.Fatalf("%d requests, want 40", sum.Requests)
			}
			if tt.wantProto == "" {
				if sum.OK != 0 || sum.ErrorsByKind[KindConnect] != 40 {
					t.Errorf("ok %d, errors %v: want every request refused at the handshake", sum.OK, sum.ErrorsByKind)
				}
			} else if sum.OK != 40 || sum.Protocol != tt.wantProto || sum.Protocols[tt.wantProto] != 40 {
				t.Errorf("ok %d, errors %v %v, protocol %q %v, want 40 ok over %s",
					sum.OK, sum.ErrorsByKind, sum.ErrorSamples, sum.Protocol, sum.Protocols, tt.wantProto)
			}
			if err := stop(); err != nil {
				t.Errorf("ServeFloor after its context ended: %v, want nil", err)
			}
		})
	}
}

// The floor has the mutator's TLS settings: TLS 1.3 at least by default.
func TestServeFloorRefusesTLS12(t *testing.T) {
	url, tlsConfig, _ := startFloor(t, false)
	if err := WaitReady(context.Background(), tlsConfig, url, nil); err != nil {
		t.Fatal(err)
	}
	old := tlsConfig.Clone()
	old.MaxVersion = tls.VersionTLS12
	if code, err := Probe(context.Background(), old, url); err == nil {
		t.Errorf("a TLS 1.2 client got status %d, want a handshake failure", code)
	}
}

func TestServeFloorBadCertificate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = ServeFloor(context.Background(), ln, FloorOptions{CertFile: "/nonexistent/tls.crt", KeyFile: "/nonexistent/tls.key"})
	if err == nil || !strings.Contains(err.Error(), "serving certificate") {
		t.Errorf("ServeFloor with missing certificate files: %v", err)
	}
}

// BenchmarkFloorHandler is the floor's handler alone, without TLS and HTTP:
// what reading the body, finding the uid and answering cost.
func BenchmarkFloorHandler(b *testing.B) {
	review, err := NewReview(testdata(b, "pod-review.json"))
	if err != nil {
		b.Fatal(err)
	}
	body := review.Body("0a1b2c3d-0000-0000-0000-000000000001")
	h := FloorHandler()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
