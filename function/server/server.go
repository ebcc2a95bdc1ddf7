// Package server runs the webhook's HTTP(S) listener for the standalone mode:
// timeouts, TLS with certificates reloaded from disk, and a drain on shutdown
// that loses no review of a keep-alive client. The function mode does not use
// it: func-go's runtime owns the listener there, behind Knative's queue-proxy.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	knativetls "knative.dev/pkg/network/tls"
)

// Options configure Serve.
type Options struct {
	Handler http.Handler
	// Ready is switched off when draining starts, so that readiness probes
	// fail and endpoints stop routing new reviews here.
	Ready func(bool)
	// TLSCertFile and TLSKeyFile enable HTTPS; both or neither.
	TLSCertFile, TLSKeyFile string
	// GetCertificate, when set instead, enables HTTPS with certificates
	// from elsewhere (the Secret the standalone mode manages).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// ShutdownDelay is how long to keep serving after the stop signal while
	// endpoints are updated; ShutdownTimeout bounds the drain after that.
	ShutdownDelay, ShutdownTimeout time.Duration
	Logger                         *zap.Logger
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout and
	// MaxHeaderBytes override the defaults below when positive; tests use
	// them to run in milliseconds.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                                            int
	// ClientCAFile, with TLS on, asks clients for a certificate and verifies
	// one signed by this CA (PEM). It is not required at the handshake, so
	// that the kubelet's probes still work; the handler requires it on the
	// admission path (webhook.Options.RequireClientCert).
	ClientCAFile string
	// EnableHTTP2 offers HTTP/2 over TLS and h2c besides HTTP/1.1. The
	// API server never uses it for a webhook it reaches through a Service
	// (k8s.io/apiserver pkg/util/webhook/client.go offers only http/1.1
	// unless the URL's host is loopback), so it is off by default: one
	// protocol less to expose to anyone who can reach the port.
	EnableHTTP2 bool
}

// Timeouts. The API server gives a webhook at most 30 s, so nothing here
// waits longer than that for a client; a slow or idle client cannot hold a
// connection or a goroutine forever. A connection that never sends a
// request is closed after readHeaderTimeout.
//
// idleTimeout is longer than the API server's own idle timeout for pooled
// webhook connections (90 s, k8s.io/apimachinery's transport defaults), so
// that the client, not the server, closes an idle keep-alive connection: a
// server that closes one races a client that is about to reuse it.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 35 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	// HTTP/2 only: a short idle timeout and few streams per connection
	// bound what idle or abusive HTTP/2 clients hold.
	h2IdleTimeout           = 30 * time.Second
	h2MaxConcurrentStreams  = 32
	errorLogPerSecond       = 5
	errorLogBurst           = 20
	errorLogSuppressedEvery = time.Minute
)

// Serve serves on ln until ctx is done, then drains: every response from
// then on carries "Connection: close" so that keep-alive clients open their
// next connection elsewhere, the server keeps answering for ShutdownDelay
// while endpoints are updated, and in-flight reviews finish and their answers
// are written before Serve returns nil.
func Serve(ctx context.Context, ln net.Listener, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	d := &drainer{next: opts.Handler}
	conns := newConnTracker()
	srv := &http.Server{
		ConnState:         conns.track,
		Handler:           d,
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, readHeaderTimeout),
		ReadTimeout:       orDefault(opts.ReadTimeout, readTimeout),
		WriteTimeout:      orDefault(opts.WriteTimeout, writeTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, idleTimeout),
		MaxHeaderBytes:    orDefault(opts.MaxHeaderBytes, maxHeaderBytes),
		// net/http reports TLS handshake failures, bad client
		// certificates and recovered panics here: at warn, so that they
		// show at the default level, and rate-limited, so that a
		// handshake storm cannot flood the log.
		ErrorLog:    newErrorLog(opts.Logger),
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	if opts.EnableHTTP2 {
		srv.Protocols.SetHTTP2(true)
		// h2c lets a plain HTTP listener behind a proxy use it too.
		srv.Protocols.SetUnencryptedHTTP2(true)
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: h2MaxConcurrentStreams}
		if opts.IdleTimeout == 0 {
			srv.IdleTimeout = h2IdleTimeout
		}
	}

	tlsOn := opts.TLSCertFile != "" || opts.TLSKeyFile != "" || opts.GetCertificate != nil
	if tlsOn {
		cfg, err := baseTLSConfig()
		if err != nil {
			return err
		}
		cfg.GetCertificate = opts.GetCertificate
		if cfg.GetCertificate == nil {
			kp, err := newKeyPairReloader(opts.TLSCertFile, opts.TLSKeyFile, opts.Logger)
			if err != nil {
				return err
			}
			cfg.GetCertificate = kp.GetCertificate
		}
		if opts.ClientCAFile != "" {
			pem, err := os.ReadFile(opts.ClientCAFile)
			if err != nil {
				return fmt.Errorf("reading the client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("client CA %s: no PEM certificate in it", opts.ClientCAFile)
			}
			cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
		srv.TLSConfig = cfg
	}

	errc := make(chan error, 1)
	go func() {
		var err error
		if tlsOn {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	opts.Logger.Info("serving", zap.String("address", ln.Addr().String()), zap.Bool("tls", tlsOn), zap.Bool("http2", opts.EnableHTTP2))

	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Stop keep-alives before anything else: a response that tells the
	// client to close is the only way to end an HTTP/1.1 connection
	// without racing a request the client may be writing on it. (Go's
	// SetKeepAlivesEnabled(false) would also close idle connections at
	// once, which is that race.)
	d.draining.Store(true)
	if opts.Ready != nil {
		opts.Ready(false)
	}
	opts.Logger.Info("draining", zap.Duration("delay", opts.ShutdownDelay))
	if opts.ShutdownDelay > 0 {
		time.Sleep(opts.ShutdownDelay)
	}
	// Not http.Server.Shutdown: it drops, unanswered, a request it reads
	// from a connection after it has begun, and it keeps a connection that
	// never sent a request open for five seconds, long enough for a client
	// to use it. Instead: stop accepting, keep serving the connections that
	// are open (each is told to close with its next answer), and close
	// those that stay unused.
	if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		opts.Logger.Warn("closing listener", zap.Error(err))
	}
	if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	if !conns.drain(opts.ShutdownTimeout) {
		// Past the deadline: cut the connections still open rather than
		// leave their goroutines behind.
		_ = srv.Close()
		return fmt.Errorf("draining: connections still busy after %s", opts.ShutdownTimeout)
	}
	_ = srv.Close()
	opts.Logger.Info("stopped")
	return nil
}

// drainer marks every response "Connection: close" once draining starts.
type drainer struct {
	next     http.Handler
	draining atomic.Bool
}

func (d *drainer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.draining.Load() {
		// net/http closes the connection after this response (HTTP/1.x)
		// or sends GOAWAY (HTTP/2).
		w.Header().Set("Connection", "close")
	}
	d.next.ServeHTTP(w, r)
}

func orDefault[T time.Duration | int](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// baseTLSConfig is the server TLS configuration without certificates: TLS
// 1.3 minimum unless WEBHOOK_TLS_MIN_VERSION says 1.2, and the other
// WEBHOOK_TLS_* settings, as in knative.dev/pkg. Certificates come from
// files reloaded when they change (cert-manager renews them in place) or
// from Options.GetCertificate.
func baseTLSConfig() (*tls.Config, error) {
	cfg, err := knativetls.DefaultConfigFromEnv("WEBHOOK_")
	if err != nil {
		return nil, fmt.Errorf("reading TLS settings: %w", err)
	}
	if cfg.MinVersion < tls.VersionTLS12 {
		return nil, fmt.Errorf("WEBHOOK_TLS_MIN_VERSION: TLS below 1.2 is not supported")
	}
	return cfg, nil
}
