package server_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mutator-dev/mutator/function/server"
)

// bound is how long anything in these tests may take before it counts as
// hung. It bounds waits; no test asserts how fast anything happens.
const bound = 10 * time.Second

// testCA issues serving certificates for 127.0.0.1 with chosen serials.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "server-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// certFiles is a key pair on disk that tests replace as cert-manager would.
type certFiles struct {
	cert, key string
	step      int
}

func newCertFiles(t *testing.T, certPEM, keyPEM []byte) *certFiles {
	t.Helper()
	dir := t.TempDir()
	f := &certFiles{cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	f.write(t, certPEM, keyPEM)
	return f
}

// write replaces the files (nil leaves one alone) and moves their
// modification times forward, so that the change is seen even on file
// systems with coarse timestamps.
func (f *certFiles) write(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	f.step++
	when := time.Now().Add(time.Duration(f.step) * time.Minute)
	for _, w := range []struct {
		path string
		data []byte
	}{{f.key, keyPEM}, {f.cert, certPEM}} {
		if w.data == nil {
			continue
		}
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(w.path, when, when); err != nil {
			t.Fatal(err)
		}
	}
}

// served is one Serve call running in the background.
type served struct {
	addr   string
	cancel context.CancelFunc
	errc   chan error
}

// serve starts Serve on a loopback port; the cleanup stops it and fails the
// test if it does not return nil.
func serve(t *testing.T, opts server.Options) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Handler == nil {
		opts.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{addr: ln.Addr().String(), cancel: cancel, errc: make(chan error, 1)}
	go func() { s.errc <- server.Serve(ctx, ln, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := s.wait(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// wait returns what Serve returned, at most once per served.
func (s *served) wait(t *testing.T) error {
	t.Helper()
	select {
	case err, ok := <-s.errc:
		if !ok {
			return nil
		}
		close(s.errc)
		return err
	case <-time.After(bound):
		t.Fatalf("Serve did not return within %s", bound)
		return nil
	}
}

// handshake makes a TLS connection and returns the serial of the server's
// certificate. Every call is a full handshake: no session cache.
func handshake(addr string, cfg *tls.Config) (int64, error) {
	d := &net.Dialer{Timeout: bound}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestTLSReload(t *testing.T) {
	ca := newTestCA(t)
	cert1, key1 := ca.issue(t, 1001)
	files := newCertFiles(t, cert1, key1)
	s := serve(t, server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key})
	client := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}

	expectSerial := func(t *testing.T, want int64) {
		t.Helper()
		got, err := handshake(s.addr, client)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if got != want {
			t.Fatalf("server certificate serial %d, want %d", got, want)
		}
	}
	expectSerial(t, 1001)

	cert2, key2 := ca.issue(t, 1002)
	files.write(t, cert2, key2)
	expectSerial(t, 1002)

	// A broken update keeps the last good pair; each case starts from it.
	cert3, key3 := ca.issue(t, 1003)
	broken := []struct {
		name      string
		cert, key []byte
		remove    string // a file to remove instead
	}{
		{name: "garbage certificate", cert: []byte("not a certificate")},
		{name: "empty key", key: []byte{}},
		{name: "certificate without its key", cert: cert3},
		{name: "key without its certificate", key: key3},
		{name: "truncated certificate", cert: cert3[:len(cert3)/2], key: key3},
		{name: "certificate file removed", remove: files.cert},
	}
	for _, tt := range broken {
		t.Run(tt.name, func(t *testing.T) {
			if tt.remove != "" {
				if err := os.Remove(tt.remove); err != nil {
					t.Fatal(err)
				}
			} else {
				files.write(t, tt.cert, tt.key)
			}
			expectSerial(t, 1002)
			files.write(t, cert2, key2)
			expectSerial(t, 1002)
		})
	}

	// And a good pair after all that is picked up.
	cert4, key4 := ca.issue(t, 1004)
	files.write(t, cert4, key4)
	expectSerial(t, 1004)
}

func TestTLSMinVersion(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 7)
	files := newCertFiles(t, certPEM, keyPEM)
	tests := []struct {
		env        string // WEBHOOK_TLS_MIN_VERSION
		clientMax  uint16
		wantRefuse bool
	}{
		{"", tls.VersionTLS13, false},
		{"", tls.VersionTLS12, true},
		{"", tls.VersionTLS11, true},
		{"1.3", tls.VersionTLS12, true},
		{"1.2", tls.VersionTLS12, false},
		{"1.2", tls.VersionTLS13, false},
		{"1.2", tls.VersionTLS11, true},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("server min %q, client max %s", tt.env, tls.VersionName(tt.clientMax))
		t.Run(name, func(t *testing.T) {
			t.Setenv("WEBHOOK_TLS_MIN_VERSION", tt.env)
			s := serve(t, server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key})
			_, err := handshake(s.addr, &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS10, MaxVersion: tt.clientMax})
			if tt.wantRefuse {
				if err == nil {
					t.Fatal("handshake succeeded, want it refused")
				}
				if !strings.Contains(err.Error(), "protocol version") {
					t.Fatalf("handshake failed for another reason than the version: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
		})
	}
}

func TestServeConfigErrors(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 9)
	files := newCertFiles(t, certPEM, keyPEM)
	tests := []struct {
		name string
		env  string
		opts server.Options
	}{
		{"TLS 1.1 minimum", "1.1", server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key}},
		{"unknown minimum", "tls13", server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key}},
		{"missing certificate", "", server.Options{TLSCertFile: files.cert + ".missing", TLSKeyFile: files.key}},
		{"certificate without key", "", server.Options{TLSCertFile: files.cert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WEBHOOK_TLS_MIN_VERSION", tt.env)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			if err := server.Serve(ctx, ln, tt.opts); err == nil {
				t.Fatal("Serve returned nil, want a configuration error")
			}
		})
	}
	t.Run("listener already closed", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if err := server.Serve(ctx, ln, server.Options{Handler: http.NotFoundHandler()}); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Serve = %v, want the listener's error", err)
		}
	})
}

func TestSlowlorisCutOff(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 11)
	files := newCertFiles(t, certPEM, keyPEM)
	// Only the header timeout is short: ReadTimeout (15 s) and IdleTimeout
	// stay far beyond the trickle's own bound, so a cut-off is the header
	// timeout's doing.
	s := serve(t, server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key, ReadHeaderTimeout: 200 * time.Millisecond})

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: bound}, "tcp", s.addr, &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := make(chan error, 1)
	go func() {
		n, err := conn.Read(make([]byte, 1024))
		if n > 0 {
			err = fmt.Errorf("server answered %d bytes", n)
		}
		closed <- err
	}()
	if _, err := io.WriteString(conn, "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	// One header byte every 20 ms, never finishing the headers; at most
	// 250 bytes (5 s) before the test gives up.
	const trickles = 250
	for i := range trickles {
		select {
		case err := <-closed:
			if err != nil && !errors.Is(err, io.EOF) && !isConnReset(err) {
				t.Fatalf("after %d header bytes the connection failed oddly: %v", i, err)
			}
			t.Logf("cut off after %d header bytes", i)
			// A well-behaved client is still served.
			if _, err := handshake(s.addr, &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}); err != nil {
				t.Fatalf("server unusable after the slow client: %v", err)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := conn.Write([]byte{'a'}); err != nil {
			t.Logf("write failed after %d header bytes: %v", i, err)
		}
	}
	t.Fatalf("a client sending headers 1 byte per 20 ms was not cut off after %d bytes", trickles)
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

func TestMaxHeaderBytes(t *testing.T) {
	tests := []struct {
		name       string
		maxHeader  int // Options.MaxHeaderBytes, 0 for the default 64 KiB
		headerSize int
		want       int
	}{
		{"small header, default limit", 0, 1 << 10, http.StatusOK},
		{"60 KiB header, default limit", 0, 60 << 10, http.StatusOK},
		{"100 KiB header, default limit", 0, 100 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"8 KiB header, 1 KiB limit", 1 << 10, 8 << 10, http.StatusRequestHeaderFieldsTooLarge},
	}
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 13)
	files := newCertFiles(t, certPEM, keyPEM)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := serve(t, server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key, MaxHeaderBytes: tt.maxHeader})
			// HTTP/1.1: an HTTP/2 client refuses by itself to send more
			// than the server's advertised header list size.
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}, Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP1(true)
			client := &http.Client{Transport: tr, Timeout: bound}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequest(http.MethodGet, "https://"+s.addr+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Big", strings.Repeat("x", tt.headerSize))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestDrainFinishesInFlight(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 17)
	files := newCertFiles(t, certPEM, keyPEM)
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			entered, release := make(chan struct{}), make(chan struct{})
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			ready := make(chan bool, 4)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					close(entered)
					select {
					case <-release:
					case <-time.After(bound):
					}
				}
				_, _ = io.WriteString(w, "complete answer")
			})
			s := serve(t, server.Options{
				Handler: handler, TLSCertFile: files.cert, TLSKeyFile: files.key,
				Ready: func(b bool) { ready <- b }, EnableHTTP2: proto == "HTTP/2.0",
			})
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}, Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP1(true)
			tr.Protocols.SetHTTP2(proto == "HTTP/2.0")
			client := &http.Client{Transport: tr, Timeout: bound}
			defer tr.CloseIdleConnections()

			type answer struct {
				proto, body string
				status      int
				err         error
			}
			answers := make(chan answer, 1)
			go func() {
				resp, err := client.Get("https://" + s.addr + "/slow")
				if err != nil {
					answers <- answer{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				answers <- answer{proto: resp.Proto, body: string(b), status: resp.StatusCode, err: err}
			}()
			select {
			case <-entered:
			case a := <-answers:
				t.Fatalf("slow request ended early: %+v", a)
			case <-time.After(bound):
				t.Fatal("slow request never reached the handler")
			}

			s.cancel()
			select {
			case b := <-ready:
				if b {
					t.Fatal("Ready(true) on shutdown")
				}
			case <-time.After(bound):
				t.Fatal("Ready(false) not called on shutdown")
			}
			// Wait until the listener is closed, that is Shutdown runs;
			// Serve must then still be waiting for the slow request.
			waitRefused(t, s.addr)
			select {
			case err := <-s.errc:
				t.Fatalf("Serve returned %v with a request in flight", err)
			default:
			}
			close(release)
			a := <-answers
			if a.err != nil || a.status != http.StatusOK || a.body != "complete answer" || a.proto != proto {
				t.Fatalf("in-flight request got %+v, want a complete %s 200", a, proto)
			}
			if err := s.wait(t); err != nil {
				t.Fatalf("Serve after drain: %v", err)
			}
			if _, err := net.DialTimeout("tcp", s.addr, bound); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial after Serve returned: %v, want connection refused", err)
			}
		})
	}
}

func TestShutdownDelayKeepsServing(t *testing.T) {
	ready := make(chan bool, 4)
	// Long enough that the request below, made right after readiness
	// turned off, cannot miss it on any machine this runs on.
	const delay = 3 * time.Second
	s := serve(t, server.Options{ShutdownDelay: delay, Ready: func(b bool) { ready <- b }})
	s.cancel()
	select {
	case b := <-ready:
		if b {
			t.Fatal("Ready(true) on shutdown")
		}
	case <-time.After(bound):
		t.Fatal("Ready(false) not called on shutdown")
	}
	// Readiness is off, but the listener still accepts during the delay so
	// that clients routed here before endpoints update are still served.
	client := &http.Client{Timeout: bound, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatalf("request during the shutdown delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d during the shutdown delay", resp.StatusCode)
	}
	if err := s.wait(t); err != nil {
		t.Fatal(err)
	}
}

// TestProtocols: HTTP/1.1 only unless EnableHTTP2, over TLS (ALPN) and
// plain HTTP (h2c).
func TestProtocols(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 23)
	files := newCertFiles(t, certPEM, keyPEM)
	for _, enable := range []bool{false, true} {
		echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.Proto) })
		plain := serve(t, server.Options{Handler: echo, EnableHTTP2: enable})
		secure := serve(t, server.Options{Handler: echo, EnableHTTP2: enable, TLSCertFile: files.cert, TLSKeyFile: files.key})
		for _, tc := range []struct {
			name, url string
			h2        bool
		}{
			{"h1", "http://" + plain.addr + "/", false},
			{"h2c", "http://" + plain.addr + "/", true},
			{"h1 over TLS", "https://" + secure.addr + "/", false},
			{"h2 over TLS", "https://" + secure.addr + "/", true},
		} {
			tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}}
			if tc.h2 {
				// Only HTTP/2: a server that does not offer it fails.
				tr.Protocols.SetUnencryptedHTTP2(true)
				tr.Protocols.SetHTTP2(true)
			} else {
				tr.Protocols.SetHTTP1(true)
			}
			client := &http.Client{Transport: tr, Timeout: bound}
			resp, err := client.Get(tc.url)
			var body []byte
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			tr.CloseIdleConnections()
			switch {
			case tc.h2 && !enable:
				if err == nil && string(body) == "HTTP/2.0" {
					t.Errorf("%s with HTTP/2 off: served over HTTP/2", tc.name)
				}
			case err != nil:
				t.Errorf("%s (HTTP/2 enabled %t): %v", tc.name, enable, err)
			case tc.h2 && string(body) != "HTTP/2.0", !tc.h2 && string(body) != "HTTP/1.1":
				t.Errorf("%s (HTTP/2 enabled %t): served over %s", tc.name, enable, body)
			}
		}
	}
}

// TestDrainStopsKeepAlive: once draining starts, every response tells a
// keep-alive client to close, and its next request goes out on a new
// connection, while the server keeps answering for the shutdown delay.
func TestDrainStopsKeepAlive(t *testing.T) {
	ready := make(chan bool, 4)
	s := serve(t, server.Options{ShutdownDelay: 2 * time.Second, Ready: func(b bool) { ready <- b },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: bound}
	get := func() (reused, closeAfter bool) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+s.addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return reused, resp.Close
	}
	get()
	if reused, closeAfter := get(); !reused || closeAfter {
		t.Fatalf("before draining: reused %v, Connection: close %v; want a kept-alive connection", reused, closeAfter)
	}
	s.cancel()
	<-ready
	if _, closeAfter := get(); !closeAfter {
		t.Fatal("a response during the drain lacks Connection: close")
	}
	if reused, closeAfter := get(); reused || !closeAfter {
		t.Fatalf("after a Connection: close answer: reused %v, Connection: close %v; want a new connection told to close", reused, closeAfter)
	}
	if err := s.wait(t); err != nil {
		t.Fatal(err)
	}
}

// waitRefused polls until a new TCP connection to addr is refused.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, bound)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return
		}
		if err == nil {
			// Read until the server closes it (a listener closed after
			// accept) so that the probe leaves nothing behind.
			_ = conn.SetDeadline(time.Now().Add(50 * time.Millisecond))
			_, _ = bufio.NewReader(conn).ReadByte()
			conn.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s still accepts connections", addr)
}

// TestErrorLogWarnsRateLimited: net/http's own errors (here, failed TLS
// handshakes) reach the logger at warn level, and a storm of them is
// limited to a burst.
func TestErrorLogWarnsRateLimited(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 29)
	files := newCertFiles(t, certPEM, keyPEM)
	core, logs := observer.New(zap.WarnLevel)
	s := serve(t, server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key, Logger: zap.New(core)})
	const storm = 200
	for range storm {
		conn, err := net.DialTimeout("tcp", s.addr, bound)
		if err != nil {
			t.Fatal(err)
		}
		// Plain HTTP to the TLS port: a handshake error for net/http.
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = conn.SetDeadline(time.Now().Add(bound))
		_, _ = io.Copy(io.Discard, conn)
		conn.Close()
	}
	deadline := time.Now().Add(bound)
	for logs.FilterMessageSnippet("TLS handshake error").Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	n := logs.FilterMessageSnippet("TLS handshake error").Len()
	if n == 0 {
		t.Fatal("no TLS handshake error logged at warn level")
	}
	if n >= storm/2 {
		t.Fatalf("%d of %d handshake errors logged: not rate-limited", n, storm)
	}
	t.Logf("%d of %d handshake errors logged", n, storm)
}

// TestClientCA: with a client CA, a client certificate it signed is
// verified (the API server's, TLS_CLIENT_CA_FILE), one it did not sign is
// refused at the handshake, and a client without one (the kubelet's probes)
// still connects, left for the handler to refuse on the admission path.
func TestClientCA(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	certPEM, keyPEM := ca.issue(t, 2)
	files := newCertFiles(t, certPEM, keyPEM)
	caFile := filepath.Join(t.TempDir(), "client-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, server.Options{TLSCertFile: files.cert, TLSKeyFile: files.key, ClientCAFile: caFile,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "verified=%d", len(r.TLS.VerifiedChains))
		})})
	get := func(cert *tls.Certificate) (string, error) {
		cfg := &tls.Config{RootCAs: ca.pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Timeout: bound, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get("https://" + s.addr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	tests := []struct {
		name    string
		cert    *tls.Certificate
		want    string
		wantErr bool
	}{
		{"signed by the client CA", clientCert(t, ca), "verified=1", false},
		{"no client certificate", nil, "verified=0", false},
		{"signed by another CA", clientCert(t, other), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(tt.cert)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func clientCert(t *testing.T, ca *testCA) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
