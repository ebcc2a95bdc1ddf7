// Package server runs the webhook's HTTP(S) listener for the standalone mode:
// timeouts, TLS with certificates reloaded from disk, HTTP/2, and a graceful
// drain on shutdown. The function mode does not use it: func-go's runtime owns
// the listener there.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
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
}

// Timeouts. The API server gives a webhook at most 30 s, so nothing here
// waits longer than that for a client; a slow or idle client cannot hold a
// connection or a goroutine forever.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 35 * time.Second
	idleTimeout       = 90 * time.Second
	maxHeaderBytes    = 64 << 10
)

// Serve serves on ln until ctx is done, then drains: in-flight reviews finish
// and their answers are written before Serve returns nil.
func Serve(ctx context.Context, ln net.Listener, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	srv := &http.Server{
		Handler:           opts.Handler,
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, readHeaderTimeout),
		ReadTimeout:       orDefault(opts.ReadTimeout, readTimeout),
		WriteTimeout:      orDefault(opts.WriteTimeout, writeTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, idleTimeout),
		MaxHeaderBytes:    orDefault(opts.MaxHeaderBytes, maxHeaderBytes),
		ErrorLog:          zap.NewStdLog(opts.Logger.WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	// The API server speaks HTTP/2 to webhooks over TLS; h2c lets a plain
	// HTTP listener behind a proxy (queue-proxy) use it too.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

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
	opts.Logger.Info("serving", zap.String("address", ln.Addr().String()), zap.Bool("tls", tlsOn))

	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	if opts.Ready != nil {
		opts.Ready(false)
	}
	opts.Logger.Info("draining", zap.Duration("delay", opts.ShutdownDelay))
	if opts.ShutdownDelay > 0 {
		time.Sleep(opts.ShutdownDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Past the deadline: cut the connections still open rather than
		// leave their goroutines behind.
		_ = srv.Close()
		return fmt.Errorf("draining: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	}
	opts.Logger.Info("stopped")
	return nil
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
