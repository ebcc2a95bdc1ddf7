package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	knativetls "knative.dev/pkg/network/tls"
)

// The floor is the least a Go HTTPS webhook does per review: TLS, HTTP,
// reading the whole body and writing a fixed "allowed" answer with the
// request's uid. Run under the same load as the mutator, its CPU per review
// is what serving costs; the mutator's CPU per review above it is what its
// handler (decoding, rules, encoding) costs. So the floor does not decode the
// JSON when it need not: see quickReview.

// maxFloorBody bounds a review's body, as kube-apiserver bounds requests
// (3 MiB) plus room for the review around the object.
const maxFloorBody = 4 << 20

// Server timeouts, the values function/server uses: the per-request
// deadline bookkeeping is then the same as the mutator's.
const (
	floorReadHeaderTimeout = 5 * time.Second
	floorReadTimeout       = 15 * time.Second
	floorWriteTimeout      = 35 * time.Second
	floorIdleTimeout       = 120 * time.Second
	floorMaxHeaderBytes    = 64 << 10
)

// FloorOptions configure ServeFloor.
type FloorOptions struct {
	// CertFile and KeyFile are the serving certificate and key (PEM).
	CertFile, KeyFile string
	// HTTP2 offers HTTP/2 as well as HTTP/1.1 over TLS.
	HTTP2 bool
}

var floorBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// floorReview is the part of a review the floor reads when quickReview
// cannot. Decoding into it still scans the whole body.
type floorReview struct {
	APIVersion string `json:"apiVersion"`
	Request    *struct {
		UID string `json:"uid"`
	} `json:"request"`
}

// Reviews as kube-apiserver encodes them (and the load client, which
// re-encodes its template the same way) start with these, in struct order.
var (
	reviewStart   = []byte(`{"kind":"AdmissionReview","apiVersion":"`)
	reviewRequest = []byte(`","request":{"uid":"`)
)

// quickReview returns the apiVersion and request.uid of a review that
// starts the way kube-apiserver encodes one, as JSON strings with their
// quotes, without reading further: a match anchored at the start is the
// top-level request, never a uid inside the object. ok is false for any
// other shape, and for values that are not plain printable ASCII (escapes),
// which the caller then decodes in full.
func quickReview(body []byte) (apiVersion, uid []byte, ok bool) {
	if !bytes.HasPrefix(body, reviewStart) {
		return nil, nil, false
	}
	start := len(reviewStart) - 1 // the opening quote
	end := start + 1 + plainLen(body[start+1:])
	if end == start+1 || !bytes.HasPrefix(body[end:], reviewRequest) {
		return nil, nil, false
	}
	apiVersion = body[start : end+1]
	start = end + len(reviewRequest) - 1
	end = start + 1 + plainLen(body[start+1:])
	if end == start+1 || end >= len(body) || body[end] != '"' {
		return nil, nil, false
	}
	return apiVersion, body[start : end+1], true
}

// plainLen is the length of the leading run of printable ASCII in b other
// than '"' and '\\': bytes that stand for themselves in a JSON string.
func plainLen(b []byte) int {
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return i
		}
	}
	return len(b)
}

// FloorHandler answers every POST with an AdmissionReview that allows the
// request, echoing its apiVersion and uid, and GET ReadinessPath with 200.
func FloorHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ReadinessPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("POST /", serveFloorReview)
	return mux
}

func serveFloorReview(w http.ResponseWriter, r *http.Request) {
	buf := floorBufs.Get().(*bytes.Buffer)
	defer func() {
		// A huge body would keep its buffer alive in the pool.
		if buf.Cap() <= 1<<20 {
			buf.Reset()
			floorBufs.Put(buf)
		}
	}()
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxFloorBody)); err != nil {
		http.Error(w, "reading the review: "+err.Error(), http.StatusBadRequest)
		return
	}
	apiVersion, uid, ok := quickReview(buf.Bytes())
	if !ok {
		var err error
		if apiVersion, uid, err = decodeFloorReview(buf.Bytes()); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	answer := make([]byte, 0, 80+len(apiVersion)+len(uid))
	answer = append(answer, `{"kind":"AdmissionReview","apiVersion":`...)
	answer = append(answer, apiVersion...)
	answer = append(answer, `,"response":{"uid":`...)
	answer = append(answer, uid...)
	answer = append(answer, `,"allowed":true}}`...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer)
}

// decodeFloorReview returns the apiVersion and request.uid of body as JSON
// strings, decoding it in full.
func decodeFloorReview(body []byte) (apiVersion, uid []byte, err error) {
	var review floorReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, nil, fmt.Errorf("decoding the review: %w", err)
	}
	if review.APIVersion == "" || review.Request == nil || review.Request.UID == "" {
		return nil, nil, errors.New("not an AdmissionReview request with a uid")
	}
	if apiVersion, err = json.Marshal(review.APIVersion); err != nil {
		return nil, nil, fmt.Errorf("encoding apiVersion: %w", err)
	}
	if uid, err = json.Marshal(review.Request.UID); err != nil {
		return nil, nil, fmt.Errorf("encoding uid: %w", err)
	}
	return apiVersion, uid, nil
}

// FloorTLSConfig is the mutator's server TLS configuration: TLS 1.3 unless
// WEBHOOK_TLS_MIN_VERSION says 1.2, and the other WEBHOOK_TLS_* settings,
// read the way function/server reads them, with the certificate in files.
func FloorTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cfg, err := knativetls.DefaultConfigFromEnv("WEBHOOK_")
	if err != nil {
		return nil, fmt.Errorf("reading TLS settings: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

// ServeFloor serves FloorHandler over HTTPS on ln until ctx is done, then
// shuts down gracefully: answers in flight are written before it returns
// nil. It closes ln.
func ServeFloor(ctx context.Context, ln net.Listener, opts FloorOptions) error {
	tlsConfig, err := FloorTLSConfig(opts.CertFile, opts.KeyFile)
	if err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           FloorHandler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: floorReadHeaderTimeout,
		ReadTimeout:       floorReadTimeout,
		WriteTimeout:      floorWriteTimeout,
		IdleTimeout:       floorIdleTimeout,
		MaxHeaderBytes:    floorMaxHeaderBytes,
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(opts.HTTP2)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	return nil
}
