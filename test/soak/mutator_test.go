//go:build linux && soak

package soak

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/test/load/loadgen"
)

// bound is how long a step (start-up, exit after SIGTERM, a wait for
// progress) may take before the test counts it as hung. It bounds waits;
// nothing asserts how fast a step is.
const bound = 20 * time.Second

// mutator is one mutator process, a direct child of the test so that
// signals reach it; the kernel kills it if the test binary dies.
type mutator struct {
	name        string
	port        int
	metricsPort int
	url         string // the mutate endpoint
	logPath     string
	cmd         *exec.Cmd
	done        chan struct{} // closed when the process has exited and been reaped
	waitErr     error         // valid once done is closed
}

// mutatorEnv is the configuration every test uses: every rule that applies
// to the Pod review is on, so that answers carry a patch.
var mutatorEnv = []string{
	"REGISTRY=registry.example.com/mirror",
	"IMAGE_PULL_SECRET=regcred",
	"FORCE_IMAGE_PULL_POLICY=true",
	"IMAGE_PULL_POLICY_TO_FORCE=IfNotPresent",
	"DEFAULT_STORAGE_CLASS=standard",
}

// startMutator starts the binary with TLS on port (0: a free one) and waits
// until it is ready. extraEnv adds to or overrides mutatorEnv. The cleanup
// kills the process if a test left it running.
func startMutator(t *testing.T, name string, port int, extraEnv ...string) *mutator {
	t.Helper()
	// A free port can be taken by someone else before the mutator binds
	// it; then try another, a bounded number of times.
	for attempt := 1; ; attempt++ {
		m, err := tryStart(t, name, port, extraEnv)
		if err == nil {
			return m
		}
		if port != 0 || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("starting %s: %v", name, err)
		}
		t.Logf("starting %s: %v; retrying on other ports", name, err)
	}
}

func tryStart(t *testing.T, name string, port int, extraEnv []string) (*mutator, error) {
	var err error
	if port == 0 {
		if port, err = loadgen.FreePort(); err != nil {
			return nil, err
		}
	}
	metricsPort, err := loadgen.FreePort()
	if err != nil {
		return nil, err
	}
	m := &mutator{
		name: name, port: port, metricsPort: metricsPort,
		url:     fmt.Sprintf("https://127.0.0.1:%d/mutate", port),
		logPath: filepath.Join(t.TempDir(), name+".log"),
		done:    make(chan struct{}),
	}
	logFile, err := os.Create(m.logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	defer logFile.Close()
	env := append([]string{
		"PORT=" + strconv.Itoa(port),
		"METRICS_PORT=" + strconv.Itoa(metricsPort),
		"TLS_CERT_FILE=" + certs.Cert,
		"TLS_KEY_FILE=" + certs.Key,
	}, mutatorEnv...)
	m.cmd = exec.Command(mutatorBin, "serve")
	// Only this configuration: nothing from the developer's environment.
	m.cmd.Env = append(env, extraEnv...)
	m.cmd.Stdout, m.cmd.Stderr = logFile, logFile
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", mutatorBin, err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	exited := func() error {
		select {
		case <-m.done:
			return fmt.Errorf("%s exited: %v\n%s", name, m.waitErr, m.tail(20))
		default:
			return nil
		}
	}
	if err := loadgen.WaitReady(ctx, clientTLS(t), m.url, exited); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *mutator) pid() int { return m.cmd.Process.Pid }

func (m *mutator) rss(t *testing.T) int64 {
	t.Helper()
	rss, err := loadgen.RSS(m.pid())
	if err != nil {
		t.Fatalf("%s: %v", m.name, err)
	}
	return rss
}

func (m *mutator) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", m.name, err)
	}
}

// waitExit waits up to bound for the process to exit and fails the test
// unless it exited 0.
func (m *mutator) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-m.done:
	case <-time.After(bound):
		t.Fatalf("%s did not exit within %s of SIGTERM\n%s", m.name, bound, m.tail(20))
	}
	if m.waitErr != nil {
		t.Fatalf("%s: %v\n%s", m.name, m.waitErr, m.tail(20))
	}
}

// stop sends SIGTERM and requires exit status 0.
func (m *mutator) stop(t *testing.T) {
	t.Helper()
	m.signal(t, syscall.SIGTERM)
	m.waitExit(t)
}

func (m *mutator) tail(n int) string {
	data, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s log: %v)", m.name, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// logSummary is what the process logged: the uids it reviewed (with
// LOG_LEVEL=debug) and its warnings and errors.
type logSummary struct {
	reviewed map[string]bool
	problems []string // warn level and above
}

func (m *mutator) readLog(t *testing.T) logSummary {
	t.Helper()
	f, err := os.Open(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := logSummary{reviewed: map[string]bool{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Level, Msg, UID string
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			s.problems = append(s.problems, "not a JSON log line: "+sc.Text())
			continue
		}
		switch {
		case line.Msg == "reviewed":
			if s.reviewed[line.UID] {
				t.Errorf("%s reviewed uid %s twice", m.name, line.UID)
			}
			s.reviewed[line.UID] = true
		case line.Level != "debug" && line.Level != "info":
			s.problems = append(s.problems, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading %s log: %v", m.name, err)
	}
	return s
}

func clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	cfg, err := loadgen.LoadCA(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// tracker keeps every result of a run for the checks afterwards, and
// counts answers so that tests can wait for progress instead of sleeping.
type tracker struct {
	mu      sync.Mutex
	results []loadgen.Result
	okBy    map[string]int // successful answers by target
}

func newTracker() *tracker { return &tracker{okBy: map[string]int{}} }

func (tr *tracker) add(r loadgen.Result) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.results = append(tr.results, r)
	if r.OK() {
		tr.okBy[r.Target]++
	}
}

func (tr *tracker) ok(target string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.okBy[target]
}

func (tr *tracker) snapshot() []loadgen.Result {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]loadgen.Result(nil), tr.results...)
}

// waitOK waits until target has n more successful answers than now.
func (tr *tracker) waitOK(t *testing.T, target string, n int) {
	t.Helper()
	want := tr.ok(target) + n
	deadline := time.Now().Add(bound)
	for tr.ok(target) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d successful answers from %s within %s, want %d", tr.ok(target), target, bound, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// background runs loadgen in a goroutine until stopped.
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
	sum    *loadgen.Summary
	err    error
}

func runBackground(cfg loadgen.Config) *background {
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.sum, b.err = loadgen.Run(ctx, cfg)
	}()
	return b
}

// stop ends the run, letting requests in flight finish, and returns its
// summary.
func (b *background) stop(t *testing.T) *loadgen.Summary {
	t.Helper()
	b.cancel()
	select {
	case <-b.done:
	case <-time.After(bound):
		t.Fatalf("load did not stop within %s", bound)
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.sum
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
