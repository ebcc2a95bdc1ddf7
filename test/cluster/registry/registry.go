// Package registry runs an in-memory OCI registry (go-containerregistry's
// pkg/registry) over TLS that records every request it serves, optionally
// behind HTTP basic auth: the "origin" and "mirror" registries of the
// cluster tests, whose logs show who pulled what from where.
package registry

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// Request is one request a registry answered.
type Request struct {
	Time   time.Time
	Method string
	Path   string
	// User is the basic-auth user name the client sent, if any, whether
	// or not it was accepted (Status says).
	User   string
	Status int
}

// String formats the request as its log line.
func (r Request) String() string {
	user := r.User
	if user == "" {
		user = "-"
	}
	return fmt.Sprintf("%s %s %s user=%s status=%d", r.Time.Format("15:04:05.000"), r.Method, r.Path, user, r.Status)
}

// Options configures Start.
type Options struct {
	// Name labels the log ("origin", "mirror").
	Name string
	// Addr is the listen address, e.g. 127.0.0.1:5443.
	Addr string
	// CertPEM and KeyPEM are the TLS serving certificate and key.
	CertPEM, KeyPEM []byte
	// Users are the accepted basic-auth users and passwords; with none,
	// anyone may pull and push.
	Users map[string]string
	// LogPath, if set, gets one line per request.
	LogPath string
}

// Server is a running registry.
type Server struct {
	name     string
	users    map[string]string
	registry http.Handler
	srv      *http.Server
	addr     string
	logFile  *os.File

	mu       sync.Mutex
	requests []Request
}

// Start listens on opts.Addr and serves the registry until Close.
func Start(opts Options) (*Server, error) {
	cert, err := tls.X509KeyPair(opts.CertPEM, opts.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("registry %s: loading certificate: %w", opts.Name, err)
	}
	s := &Server{name: opts.Name, users: opts.Users}
	if opts.LogPath != "" {
		if s.logFile, err = os.OpenFile(opts.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("registry %s: creating log: %w", opts.Name, err)
		}
	}
	// Its own log line per request says nothing about the user; ours does.
	s.registry = ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		s.closeLog()
		return nil, fmt.Errorf("registry %s: %w", opts.Name, err)
	}
	s.addr = l.Addr().String()
	s.srv = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = s.srv.ServeTLS(l, "", "") }()
	return s, nil
}

// ServeHTTP checks basic auth when users are configured, serves the
// registry API and records the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, password, _ := r.BasicAuth()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	if len(s.users) > 0 && !s.authorized(user, password) {
		// A Basic challenge: containerd then retries with the
		// credentials the kubelet gave it from the Pod's pull secret.
		rec.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", s.name))
		http.Error(rec, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
	} else {
		s.registry.ServeHTTP(rec, r)
	}
	req := Request{Time: time.Now(), Method: r.Method, Path: r.URL.Path, User: user, Status: rec.status}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	if s.logFile != nil {
		fmt.Fprintln(s.logFile, req)
	}
	s.mu.Unlock()
}

func (s *Server) authorized(user, password string) bool {
	want, ok := s.users[user]
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(password)) == 1
}

// Addr is the address the registry listens on (host:port).
func (s *Server) Addr() string { return s.addr }

// Requests returns a copy of every request so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Since returns the requests after the first n (n from an earlier
// len(Requests())), so a test sees only what happened during it.
func (s *Server) Since(n int) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > len(s.requests) {
		n = len(s.requests)
	}
	return append([]Request(nil), s.requests[n:]...)
}

// Count returns how many requests were recorded so far.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// Close stops serving at once.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	err := s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.closeLog()
	return err
}

func (s *Server) closeLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
