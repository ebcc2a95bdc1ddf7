package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

const (
	// mutatorStartTimeout bounds a mutator's start until /health/readiness.
	mutatorStartTimeout = 20 * time.Second
	// mutatorStopGrace is how long a mutator may drain after SIGTERM before
	// it is killed; with SHUTDOWN_DELAY unset it exits in milliseconds.
	mutatorStopGrace = 10 * time.Second
	readinessPath    = "/health/readiness"
)

// env is a mutator configuration: environment variables by name.
type env map[string]string

// with returns a copy of e with more settings.
func (e env) with(more env) env {
	out := make(env, len(e)+len(more))
	for k, v := range e {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// mutator is one `mutator serve` process in HTTPS mode on 127.0.0.1.
type mutator struct {
	name        string
	port        int
	metricsPort int
	cfg         env
	logPath     string

	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // valid after done is closed
	// stopTook is how long the last stop waited for the exit.
	stopTook time.Duration
}

// live holds every running mutator, so TestMain can stop whatever is left.
var live struct {
	sync.Mutex
	set map[*mutator]bool
}

// startMutator starts the mutator binary with cfg on port (0: a free port)
// and returns once it answers its readiness probe over HTTPS.
func startMutator(ctx context.Context, name string, port int, cfg env) (*mutator, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &mutator{name: name, port: port, metricsPort: metricsPort, cfg: cfg, logPath: filepath.Join(workDir, "mutator-"+name+".log")}
	logFile, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating mutator log: %w", err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "==== %s: starting on port %d\n", time.Now().Format(time.RFC3339Nano), port)

	// A clean environment, so that a REGISTRY or PORT in the developer's
	// shell cannot change what is tested.
	environ := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir()}
	base := env{
		"PORT":         strconv.Itoa(port),
		"METRICS_PORT": strconv.Itoa(metricsPort),
		// Offered so that the protocol the API server picks is its own
		// choice: HTTP/1.1 for a webhook it does not reach on a loopback
		// host (TestAPIServerUsesHTTP1), as in a cluster.
		"ENABLE_HTTP2":  "true",
		"TLS_CERT_FILE": servingCert,
		"TLS_KEY_FILE":  servingKey,
		"LOG_LEVEL":     "debug",
	}
	for k, v := range base.with(cfg) {
		environ = append(environ, k+"="+v)
	}
	slices.Sort(environ)

	m.cmd = exec.Command(mutatorBin, "serve")
	m.cmd.Env = environ
	m.cmd.Stdout = logFile
	m.cmd.Stderr = logFile
	m.cmd.SysProcAttr = sysProcAttr()
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting mutator %s: %w", name, err)
	}
	m.done = make(chan struct{})
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	live.Lock()
	if live.set == nil {
		live.set = map[*mutator]bool{}
	}
	live.set[m] = true
	live.Unlock()

	if err := m.waitReady(ctx); err != nil {
		_, _ = m.stop()
		return nil, err
	}
	return m, nil
}

// waitReady polls the readiness endpoint, trusting only the webhook CA, and
// fails fast if the process exits.
func (m *mutator) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, mutatorStartTimeout)
	defer cancel()
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: webhookCA.Pool()}},
		Timeout:   2 * time.Second,
	}
	defer client.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d%s", m.port, readinessPath)
	last := "no response yet"
	err := cluster.WaitFor(ctx, 20*time.Millisecond, func(ctx context.Context) (bool, error) {
		select {
		case <-m.done:
			return false, fmt.Errorf("mutator %s exited during start-up (%v); log:\n%s", m.name, m.waitErr, m.logTail(30))
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
			return false, nil
		}
		return true, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("waiting for mutator %s at %s (last: %s): %w; log:\n%s", m.name, url, last, err, m.logTail(30))
	}
	return err
}

// stop sends SIGTERM and waits for the exit, killing the process after
// mutatorStopGrace. It returns the exit code (-1 if killed or signalled) and
// an error if the process had to be killed. It is idempotent.
func (m *mutator) stop() (int, error) {
	live.Lock()
	delete(live.set, m)
	live.Unlock()
	select {
	case <-m.done:
		return m.cmd.ProcessState.ExitCode(), nil
	default:
	}
	began := time.Now()
	defer func() { m.stopTook = time.Since(began) }()
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return -1, fmt.Errorf("sending SIGTERM to mutator %s (pid %d): %w", m.name, m.cmd.Process.Pid, err)
	}
	timer := time.NewTimer(mutatorStopGrace)
	defer timer.Stop()
	select {
	case <-m.done:
		return m.cmd.ProcessState.ExitCode(), nil
	case <-timer.C:
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	return -1, fmt.Errorf("mutator %s (pid %d) ignored SIGTERM for %s and was killed; log:\n%s",
		m.name, m.cmd.Process.Pid, mutatorStopGrace, m.logTail(30))
}

// stopClean stops the mutator and reports anything but a prompt exit 0.
func (m *mutator) stopClean() error {
	code, err := m.stop()
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("mutator %s exited with code %d on SIGTERM, want 0; log:\n%s", m.name, code, m.logTail(30))
	}
	return nil
}

// restart starts a new process with the same configuration on the same port.
func (m *mutator) restart(ctx context.Context) (*mutator, error) {
	return startMutator(ctx, m.name, m.port, m.cfg)
}

// logTail returns about the last n lines of the mutator's log.
func (m *mutator) logTail(n int) string {
	data, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", m.logPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// stopAllMutators stops every mutator still running, all at once (each
// takes about a second to drain its HTTP/2 connection from the API server),
// and reports those that did not exit 0 on SIGTERM.
func stopAllMutators() error {
	live.Lock()
	var ms []*mutator
	for m := range live.set {
		ms = append(ms, m)
	}
	live.Unlock()
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = m.stopClean() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
