// Package queueproxy runs the mutator function behind Knative's real
// queue-proxy, as the two containers of the Pod Knative would create from
// deploy/knative/service.yaml.
//
// queue-proxy binds fixed ports (8012, 8022, 9090, ...), so both processes
// run in a private network namespace: TestQueueProxy builds the binaries,
// then runs itself again with CLONE_NEWUSER|CLONE_NEWNET (`unshare -rn`),
// where the same test finds it is inside the namespace and does the work.
package queueproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/mutator-dev/mutator/internal/testkit/syncbuf"
	"github.com/mutator-dev/mutator/test/knative/internal/fnbuild"
	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

const (
	// Set in the re-executed test: the paths of the two binaries.
	envFunctionBin = "MUTATOR_QP_FUNCTION_BIN"
	envQueueBin    = "MUTATOR_QP_QUEUE_BIN"
	// MUTATOR_DRAIN_RUNS repeats the drain under load (each takes
	// queue-proxy's fixed 30 s quiet period); default 1.
	envDrainRuns = "MUTATOR_DRAIN_RUNS"

	buildTimeout = 20 * time.Minute
	startTimeout = 60 * time.Second
	// stopTimeout bounds a process' exit after SIGTERM outside a drain.
	stopTimeout = 15 * time.Second
	// drainTimeout bounds a whole kubelet-order drain: queue-proxy's 30 s
	// quiet period plus shutdown.
	drainTimeout = 90 * time.Second
	// propagation models the time endpoints take to stop sending a
	// terminating Pod new requests; queue-proxy's quiet period exists to
	// cover it, so load keeps coming for this long after its SIGTERM.
	propagation = 2 * time.Second
	loadWorkers = 4
)

func TestQueueProxy(t *testing.T) {
	if os.Getenv(envQueueBin) != "" {
		inPod(t)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), buildTimeout)
	defer cancel()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	queue := queueProxyBinary(t, ctx)
	t.Logf("queue-proxy binary ready after %v: %s", time.Since(start).Round(time.Millisecond), queue)
	start = time.Now()
	fnBin := filepath.Join(t.TempDir(), "mutator-function")
	if err := fnbuild.Build(ctx, root, t.TempDir(), fnBin, runtime.GOOS, runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	t.Logf("function built after %v", time.Since(start).Round(time.Millisecond))

	args := []string{"-test.run=^TestQueueProxy$", "-test.v", "-test.count=1"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), envQueueBin+"="+queue, envFunctionBin+"="+fnBin)
	// `unshare -rn`: a user namespace in which the test is root, owning a
	// new network namespace with only a loopback interface.
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	t.Logf("in the private network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("queue-proxy test in the network namespace failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: TestQueueProxy")) {
		t.Fatalf("the re-executed test did not report a pass")
	}
}

// inPod runs inside the private network namespace.
func inPod(t *testing.T) {
	if err := loopbackUp(); err != nil {
		t.Fatalf("bringing up lo in the network namespace: %v", err)
	}
	p := makePod(t)
	fnBin, queueBin := os.Getenv(envFunctionBin), os.Getenv(envQueueBin)
	userPort := p.User.Ports[0].ContainerPort
	qpPort := int32(0)
	for _, cp := range p.QueueProxy.Ports {
		if cp.Name == "http1" || cp.Name == "queue-port" {
			qpPort = cp.ContainerPort
		}
	}
	if qpPort == 0 {
		t.Fatalf("queue-proxy has no serving port in %+v", p.QueueProxy.Ports)
	}
	probe := p.QueueProxy.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		t.Fatalf("queue-proxy has no HTTP readiness probe: %+v", probe)
	}
	preStop := p.User.Lifecycle
	if preStop == nil || preStop.PreStop == nil || preStop.PreStop.HTTPGet == nil {
		t.Fatalf("user container has no HTTP preStop hook: %+v", preStop)
	}
	pd := &podRun{
		t: t, pod: p, fnBin: fnBin, queueBin: queueBin,
		direct:  fmt.Sprintf("http://127.0.0.1:%d", userPort),
		proxied: fmt.Sprintf("http://127.0.0.1:%d", qpPort),
		client:  &http.Client{Timeout: 15 * time.Second},
	}
	review := reviewBody(t)

	t.Run("ready through the function's readiness endpoint", func(t *testing.T) {
		pd.t = t
		qp := pd.startQueueProxy(t)
		// Without the function, queue-proxy's probe (which forwards to the
		// user container's readinessProbe) must fail.
		if code := pd.probe(t); code == http.StatusOK {
			t.Errorf("queue-proxy is ready with no function behind it")
		}
		fn := pd.startFunction(t)
		ready := pd.waitReady(t, qp, fn)
		t.Logf("queue-proxy ready %v after the function started", ready.Round(time.Millisecond))

		t.Run("same patch through queue-proxy as direct", func(t *testing.T) {
			direct := pd.admit(t, pd.direct, review)
			proxied := pd.admit(t, pd.proxied, review)
			if len(direct.Patch) == 0 {
				t.Fatalf("direct review carries no patch: %+v", direct)
			}
			if !bytes.Equal(direct.Patch, proxied.Patch) || direct.UID != proxied.UID {
				t.Errorf("through queue-proxy: uid %s patch %s\ndirect: uid %s patch %s", proxied.UID, proxied.Patch, direct.UID, direct.Patch)
			}
		})
		t.Run("both stay up with the manifest's ports", func(t *testing.T) {
			// A clash shows as the second process exiting shortly after
			// start; by now both have been serving, check they still are
			// and hold their ports.
			for _, pr := range []*proc{qp, fn} {
				if pr.exited() {
					t.Errorf("%s exited: %v\n%s", pr.name, pr.err, pr.out.String())
				}
			}
			listening, err := listeningPorts()
			if err != nil {
				t.Fatal(err)
			}
			want := []int{int(userPort), int(qpPort), 8022, 9090}
			if mp := envValue(p.User, "METRICS_PORT"); mp != "" && mp != "0" {
				n, _ := strconv.Atoi(mp)
				want = append(want, n)
			}
			for _, port := range want {
				if !slices.Contains(listening, port) {
					t.Errorf("nothing listens on %d; listening: %v", port, listening)
				}
			}
			t.Logf("listening in the Pod's network namespace: %v", listening)
		})
		pd.stop(t, fn)
		pd.stop(t, qp)
	})

	t.Run("METRICS_PORT=9090 clashes with queue-proxy", func(t *testing.T) {
		// The shipped bug, kept as a control: it proves the ports check
		// above can fail.
		pd.t = t
		qp := pd.startQueueProxy(t)
		pd.waitListening(t, qp, int(qpPort))
		fn := pd.startFunction(t, "METRICS_PORT=9090")
		select {
		case <-fn.done:
		case <-qp.done:
		case <-time.After(startTimeout):
			t.Fatalf("both processes still up with the function's metrics on queue-proxy's port 9090")
		}
		if !strings.Contains(fn.out.String()+qp.out.String(), "address already in use") {
			t.Errorf("a process exited without the port clash in its output:\n%s\n%s", fn.out.String(), qp.out.String())
		}
		pd.stop(t, fn)
		pd.stop(t, qp)
	})

	t.Run("exec to first review through queue-proxy", func(t *testing.T) {
		pd.t = t
		var took []time.Duration
		for range 5 {
			start := time.Now()
			qp := pd.startQueueProxy(t)
			fn := pd.startFunction(t)
			for {
				if pd.post(pd.proxied, review) == nil {
					break
				}
				if time.Since(start) > startTimeout {
					t.Fatalf("no review answered through queue-proxy %v after exec\n%s\n%s", startTimeout, qp.out.String(), fn.out.String())
				}
				time.Sleep(time.Millisecond)
			}
			took = append(took, time.Since(start))
			pd.stop(t, fn)
			pd.stop(t, qp)
		}
		slices.Sort(took)
		t.Logf("exec of both containers to the first review answered through queue-proxy: median %v (min %v, max %v, %d runs)",
			took[len(took)/2].Round(100*time.Microsecond), took[0].Round(100*time.Microsecond), took[len(took)-1].Round(100*time.Microsecond), len(took))
	})

	t.Run("function stopped first loses reviews", func(t *testing.T) {
		// The control for the drain below: SIGTERM to the function with
		// no preStop wait must show up as lost reviews, or the load
		// generator could not see a loss at all.
		pd.t = t
		res := pd.drain(t, review, false)
		t.Logf("function stopped first: %d reviews, %d lost", res.sent, res.lost)
		if res.lost == 0 {
			t.Errorf("no review lost with the function stopped under load: the loss check is blind")
		}
	})

	t.Run("kubelet-order drain under load", func(t *testing.T) {
		if testing.Short() {
			t.Skip("takes queue-proxy's 30 s quiet period; run without -short")
		}
		pd.t = t
		runs := 1
		if v := os.Getenv(envDrainRuns); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", envDrainRuns, v)
			}
			runs = n
		}
		total, lost := 0, 0
		for i := range runs {
			res := pd.drain(t, review, true)
			total += res.sent
			lost += res.lost
			t.Logf("drain %d: %d reviews (%d after queue-proxy's SIGTERM), %d lost; last answer %v before the function's SIGTERM; drain took %v",
				i+1, res.sent, res.afterTerm, res.lost, res.lastBeforeFnTerm.Round(time.Millisecond), res.took.Round(time.Millisecond))
			if res.afterTerm == 0 {
				t.Errorf("drain %d: no review was sent after queue-proxy's SIGTERM; the drain was not under load", i+1)
			}
			if res.lastBeforeFnTerm < 0 {
				t.Errorf("drain %d: a review was answered %v after the function's SIGTERM", i+1, -res.lastBeforeFnTerm)
			}
		}
		t.Logf("kubelet-order drains: %d runs, %d reviews, %d lost", runs, total, lost)
		if lost != 0 {
			t.Errorf("%d of %d reviews lost in kubelet-order drains", lost, total)
		}
	})
}

// podRun holds what the scenarios share.
type podRun struct {
	t               *testing.T
	pod             pod
	fnBin, queueBin string
	direct, proxied string
	client          *http.Client
}

type drainResult struct {
	sent, afterTerm, lost int
	// lastBeforeFnTerm is how long before the function's SIGTERM the last
	// review was answered (negative: after it).
	lastBeforeFnTerm time.Duration
	took             time.Duration
}

// drain runs both containers under load and terminates the Pod. In kubelet
// order (preStop true) queue-proxy gets SIGTERM at once while the user
// container's preStop hook (queue-proxy's /wait-for-drain) blocks, and the
// function gets SIGTERM only when the hook returns. Otherwise the function
// gets SIGTERM at once.
func (pd *podRun) drain(t *testing.T, review []byte, preStop bool) drainResult {
	qp := pd.startQueueProxy(t)
	fn := pd.startFunction(t)
	pd.waitReady(t, qp, fn)

	var (
		stopLoad  atomic.Bool
		termAt    atomic.Int64 // unix nanos of queue-proxy's (or the function's) SIGTERM
		sent      atomic.Int64
		afterTerm atomic.Int64
		lost      atomic.Int64
		lastDone  atomic.Int64
		firstErr  atomic.Pointer[string]
		wg        sync.WaitGroup
	)
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: loadWorkers}}
	for range loadWorkers {
		wg.Go(func() {
			for !stopLoad.Load() {
				if at := termAt.Load(); at != 0 {
					afterTerm.Add(1)
				}
				sent.Add(1)
				err := postWith(client, pd.proxied, review)
				now := time.Now().UnixNano()
				for {
					old := lastDone.Load()
					if now <= old || lastDone.CompareAndSwap(old, now) {
						break
					}
				}
				if err != nil {
					lost.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
		})
	}
	// Let the load reach a steady state before terminating.
	for sent.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}

	start := time.Now()
	var fnTermAt time.Time
	if preStop {
		hook := pd.pod.User.Lifecycle.PreStop.HTTPGet
		hookDone := make(chan error, 1)
		go func() {
			// The kubelet calls the hook on the Pod IP; here that is loopback.
			c := &http.Client{Timeout: drainTimeout}
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", hook.Port.IntValue(), hook.Path))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("preStop hook answered %s", resp.Status)
				}
			}
			hookDone <- err
		}()
		termAt.Store(time.Now().UnixNano())
		pd.signal(t, qp, syscall.SIGTERM)
		time.Sleep(propagation)
		stopLoad.Store(true) // the endpoint is gone: no new requests
		select {
		case err := <-hookDone:
			if err != nil {
				t.Errorf("preStop hook: %v", err)
			}
		case <-time.After(drainTimeout):
			t.Fatalf("preStop hook still blocked after %v", drainTimeout)
		}
		fnTermAt = time.Now()
		pd.signal(t, fn, syscall.SIGTERM)
	} else {
		termAt.Store(time.Now().UnixNano())
		fnTermAt = time.Now()
		pd.signal(t, fn, syscall.SIGTERM)
		time.Sleep(propagation)
		stopLoad.Store(true)
		// The losses are counted; queue-proxy's 30 s drain would add
		// nothing to this control.
		pd.signal(t, qp, syscall.SIGKILL)
	}
	wg.Wait()
	for _, pr := range []*proc{qp, fn} {
		select {
		case <-pr.done:
		case <-time.After(drainTimeout):
			t.Fatalf("%s still running %v after SIGTERM", pr.name, drainTimeout)
		}
	}
	res := drainResult{
		sent:             int(sent.Load()),
		afterTerm:        int(afterTerm.Load()),
		lost:             int(lost.Load()),
		lastBeforeFnTerm: fnTermAt.Sub(time.Unix(0, lastDone.Load())),
		took:             time.Since(start),
	}
	if msg := firstErr.Load(); preStop && msg != nil {
		t.Logf("first loss: %s", *msg)
	}
	return res
}

// proc is one running container process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (pd *podRun) start(t *testing.T, name, bin string, env []string) *proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir() // func-go reads an optional ./cfg file
	cmd.Env = env
	buf := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: buf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, buf.String())
		}
	})
	return p
}

func (pd *podRun) startQueueProxy(t *testing.T) *proc {
	return pd.start(t, "queue-proxy", pd.queueBin, environ(t, pd.pod.QueueProxy))
}

func (pd *podRun) startFunction(t *testing.T, override ...string) *proc {
	return pd.start(t, "function", pd.fnBin, environ(t, pd.pod.User, override...))
}

func (pd *podRun) signal(t *testing.T, p *proc, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
}

func (pd *podRun) stop(t *testing.T, p *proc) {
	t.Helper()
	pd.client.CloseIdleConnections()
	pd.signal(t, p, syscall.SIGKILL) // outside the drain scenarios, only speed matters
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s still running %v after SIGKILL", p.name, stopTimeout)
	}
}

// probe sends the kubelet's readiness probe of the queue-proxy container
// and returns the status code (0 when no answer).
func (pd *podRun) probe(t *testing.T) int {
	t.Helper()
	g := pd.pod.QueueProxy.ReadinessProbe.HTTPGet
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", g.Port.IntValue(), g.Path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Set(h.Name, h.Value)
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	resp, err := pd.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady polls queue-proxy's readiness probe as the kubelet does.
func (pd *podRun) waitReady(t *testing.T, qp, fn *proc) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < startTimeout {
		for _, p := range []*proc{qp, fn} {
			if p.exited() {
				t.Fatalf("%s exited before the Pod was ready: %v\n%s", p.name, p.err, p.out.String())
			}
		}
		if pd.probe(t) == http.StatusOK {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("queue-proxy not ready %v after start", startTimeout)
	return 0
}

func (pd *podRun) waitListening(t *testing.T, p *proc, port int) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < startTimeout {
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
		}
		if ports, err := listeningPorts(); err == nil && slices.Contains(ports, port) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s does not listen on %d after %v", p.name, port, startTimeout)
}

func (pd *podRun) post(base string, body []byte) error { return postWith(pd.client, base, body) }

// postWith posts an AdmissionReview and checks that an allowed answer with
// a patch came back: anything else is a lost review.
func postWith(client *http.Client, base string, body []byte) error {
	resp, err := client.Post(base+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	var got admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &got); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	if got.Response == nil || !got.Response.Allowed || len(got.Response.Patch) == 0 {
		return fmt.Errorf("answer without an allowed patch: %s", data)
	}
	return nil
}

func (pd *podRun) admit(t *testing.T, base string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := pd.client.Post(base+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s/mutate: %v", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s/mutate = %d %s (%v)", base, resp.StatusCode, data, err)
	}
	var got admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &got); err != nil || got.Response == nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return got.Response
}

// reviewBody is the repository's sample Pod review.
func reviewBody(t *testing.T) []byte {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "test", "testdata", "pod-review.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// loopbackUp sets lo up: a new network namespace starts with it down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}

// listeningPorts lists the TCP ports in LISTEN state in this network
// namespace, from /proc/net/tcp and tcp6.
func listeningPorts() ([]int, error) {
	var ports []int
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" { // 0A = TCP_LISTEN
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			port, err := strconv.ParseInt(fields[1][i+1:], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %w", f, fields[1], err)
			}
			if !slices.Contains(ports, int(port)) {
				ports = append(ports, int(port))
			}
		}
	}
	slices.Sort(ports)
	return ports, nil
}
