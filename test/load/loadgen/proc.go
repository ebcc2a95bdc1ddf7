package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// ReadinessPath is the webhook's readiness probe.
const ReadinessPath = "/health/readiness"

// RSS returns the resident set size of process pid in bytes, from
// /proc/PID/status (Linux only).
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "VmRSS:"))
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("reading RSS of %d: unexpected line %q", pid, line)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading RSS of %d: %w", pid, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("reading RSS of %d: %w", pid, err)
	}
	return 0, fmt.Errorf("reading RSS of %d: no VmRSS line (a zombie?)", pid)
}

// FreePort returns a TCP port that is free on every interface at the time
// of the call (the mutator listens on ":PORT").
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// LoadCA returns a TLS client configuration that trusts the PEM
// certificates in file.
func LoadCA(file string) (*tls.Config, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// ReadinessURL returns the readiness probe URL of the server that target
// (a webhook URL) points at.
func ReadinessURL(target string) (string, error) {
	u, err := url.Parse(target)
	if err != nil {
		return "", fmt.Errorf("parsing %q: %w", target, err)
	}
	if u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("%q is not an absolute URL", target)
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: ReadinessPath}).String(), nil
}

// Probe makes one readiness request to the server of target with a fresh
// connection and returns its status code.
func Probe(ctx context.Context, tlsConfig *tls.Config, target string) (int, error) {
	u, err := ReadinessURL(target)
	if err != nil {
		return 0, err
	}
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsConfig.Clone(), DisableKeepAlives: true},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("probing readiness: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("probing readiness: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}

// WaitReady polls the readiness probe of target's server every 50 ms
// until it answers 200 or ctx ends. exited, if not nil, is checked on every
// poll so that a server that died is reported at once.
func WaitReady(ctx context.Context, tlsConfig *tls.Config, target string, exited func() error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if exited != nil {
			if err := exited(); err != nil {
				return fmt.Errorf("waiting for readiness: %w", err)
			}
		}
		code, err := Probe(ctx, tlsConfig, target)
		if err == nil && code == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("status %d", code)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for readiness of %s: %w (last: %w)", target, context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

// CheckHTTP2 makes one readiness request to the server of target over a
// fresh connection that offers only HTTP/2, and returns an error unless
// the server negotiated it. The status is not checked: only the protocol.
func CheckHTTP2(ctx context.Context, tlsConfig *tls.Config, target string) error {
	u, err := ReadinessURL(target)
	if err != nil {
		return err
	}
	client := newClient(tlsConfig, false, true, 1)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("checking HTTP/2: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// crypto/tls's alert type is unexported: its text is all there is
		// to tell "no h2 offered" from other failures.
		if strings.Contains(err.Error(), "no application protocol") {
			return fmt.Errorf("%s did not negotiate HTTP/2: the server does not offer h2 (the mutator offers it only with ENABLE_HTTP2=true): %w", u, err)
		}
		return fmt.Errorf("checking HTTP/2 with %s: %w", u, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.ProtoMajor != 2 {
		return fmt.Errorf("%s answered over %s, not HTTP/2", u, resp.Proto)
	}
	return nil
}
