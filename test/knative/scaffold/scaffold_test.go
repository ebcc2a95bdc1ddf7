package scaffold

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"k8s.io/utils/ptr"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"golang.org/x/mod/modfile"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	fn "knative.dev/func/pkg/functions"
	"knative.dev/func/pkg/scaffolding"

	// func v0.50.1's Go scaffolding requires func-go v0.22.0. Importing it
	// keeps that version in this module's build list (so the test can
	// compare it with the generated go.mod) and in the module cache before
	// the scaffold is built.
	_ "knative.dev/func-go/http"

	"github.com/mutator-dev/mutator/internal/testkit/syncbuf"
	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

const (
	// targetRegistry is passed as REGISTRY to the function under test.
	targetRegistry = "registry.example.com/mirror"
	// buildTimeout bounds the scaffold build, which compiles the mutator and
	// its dependencies (knative.dev/pkg, k8s.io/*) from cold on a slow machine.
	buildTimeout = 20 * time.Minute
	// startTimeout bounds how long the function may take to become ready.
	startTimeout = 60 * time.Second
	// stopTimeout is how long the function may take to exit after SIGTERM.
	stopTimeout = 10 * time.Second
)

// signatures are the scaffoldings func ships for Go, by directory name.
var signatures = []string{"instanced-http", "instanced-cloudevents", "static-http", "static-cloudevents"}

// scaffold writes func's Go scaffolding for the function at src into a
// fresh directory, with the same call and the same embedded template
// repository that func's scaffolders (oci/host, pack, s2i) use.
func scaffold(t *testing.T, src string) (out string, templates fs.FS) {
	t.Helper()
	f, err := fn.NewFunction(src)
	if err != nil {
		t.Fatalf("loading function at %s: %v", src, err)
	}
	if !f.Initialized() {
		t.Fatalf("%s has no func.yaml", src)
	}
	embedded, err := fn.NewRepository("", "") // "" = func's embedded templates
	if err != nil {
		t.Fatalf("loading func's embedded template repository: %v", err)
	}
	out = filepath.Join(t.TempDir(), "build")
	if err := scaffolding.Write(out, f.Root, f.Runtime, f.Invoke, embedded.FS()); err != nil {
		t.Fatalf("scaffolding.Write: %v", err)
	}
	return out, embedded.FS()
}

// writtenSignature reports which scaffolding Write chose, by matching the
// generated main.go against each template's main.go after the module-path
// substitution func applies to it. Write's signature detection is not
// exported, and its choice is visible only in what it wrote.
func writtenSignature(t *testing.T, out, modulePath string, templates fs.FS) string {
	t.Helper()
	main, err := os.ReadFile(filepath.Join(out, "main.go"))
	if err != nil {
		t.Fatalf("reading generated main.go: %v", err)
	}
	var matched []string
	for _, sig := range signatures {
		tmpl, err := fs.ReadFile(templates, path.Join("go", "scaffolding", sig, "main.go"))
		if err != nil {
			t.Fatalf("reading template %s: %v", sig, err)
		}
		if bytes.Equal(bytes.ReplaceAll(tmpl, []byte("function"), []byte(modulePath)), main) {
			matched = append(matched, sig)
		}
	}
	if len(matched) != 1 {
		t.Fatalf("generated main.go matches templates %v, want exactly one:\n%s", matched, main)
	}
	return matched[0]
}

// TestSignatureDetectionDiscriminates guards writtenSignature itself: a
// function with the static signature must come out as static-http, and one
// declaring both New and Handle must be refused, as func refuses it.
func TestSignatureDetectionDiscriminates(t *testing.T) {
	const module = "example.com/static"
	files := map[string]string{
		"go.mod":    "module " + module + "\n\ngo 1.26.0\n",
		"func.yaml": "specVersion: 0.36.0\nname: static\nruntime: go\ncreated: 2026-01-01T00:00:00Z\n",
		"handle.go": "package static\n\nimport \"net/http\"\n\nfunc Handle(w http.ResponseWriter, r *http.Request) {}\n",
	}
	src := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatalf("writing %s: %v", name, err)
		}
	}
	out, templates := scaffold(t, src)
	if got := writtenSignature(t, out, module, templates); got != "static-http" {
		t.Errorf("static function scaffolded as %s, want static-http", got)
	}

	both := "package static\n\nfunc New() any { return nil }\n"
	if err := os.WriteFile(filepath.Join(src, "new.go"), []byte(both), 0o644); err != nil {
		t.Fatalf("writing new.go: %v", err)
	}
	embedded, err := fn.NewRepository("", "")
	if err != nil {
		t.Fatalf("loading func's embedded template repository: %v", err)
	}
	if err := scaffolding.Write(filepath.Join(t.TempDir(), "build"), src, "go", "", embedded.FS()); err == nil {
		t.Errorf("scaffolding accepted a function with both New and Handle")
	}
}

// TestScaffoldedFunction builds the mutator exactly as `func build` would
// and exercises the resulting binary.
func TestScaffoldedFunction(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the mutator and runs it; skipped with -short")
	}
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	out, templates := scaffold(t, root)

	if sig := writtenSignature(t, out, repo.ModulePath, templates); sig != "instanced-http" {
		t.Fatalf("func detected the %s signature, want instanced-http (New() in handle.go)", sig)
	}
	checkScaffoldGoMod(t, out)

	bin := filepath.Join(t.TempDir(), "mutator-function")
	start := time.Now()
	goBuild(t, out, "-o", bin, ".")
	t.Logf("scaffold built in %v", time.Since(start).Round(time.Millisecond))

	t.Run("implements the optional func-go interfaces", func(t *testing.T) {
		checkContract(t, out)
	})

	t.Run("serves an AdmissionReview and stops cleanly on SIGTERM", func(t *testing.T) {
		p := startFunction(t, bin, "REGISTRY="+targetRegistry)
		readyIn := p.waitReady(t)
		t.Logf("ready %v after start", readyIn.Round(time.Millisecond))
		p.expectStatus(t, "/health/liveness", http.StatusOK)

		pod := podJSON(t, "nginx:1.27")
		mutated := p.admit(t, pod)
		if got, want := imageOf(t, mutated), targetRegistry+"/nginx:1.27"; got != want {
			t.Errorf("image after mutation = %q, want %q", got, want)
		}
		// reinvocationPolicy IfNeeded may send the already mutated Pod again:
		// the image must not be rewritten a second time.
		if got, want := imageOf(t, p.admit(t, mutated)), targetRegistry+"/nginx:1.27"; got != want {
			t.Errorf("image after a second (reinvocation) mutation = %q, want %q unchanged", got, want)
		}

		p.stop(t)
		if code := p.exitCode(); code != 0 {
			t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.output())
		}
	})

	t.Run("cold start", func(t *testing.T) {
		// Measured, not asserted: process exec to the first answered
		// AdmissionReview, the part of a scale-from-zero this code owns.
		body, err := os.ReadFile(filepath.Join(root, "test", "testdata", "pod-review.json"))
		if err != nil {
			t.Fatal(err)
		}
		var took []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			p := startFunction(t, bin, "REGISTRY="+targetRegistry)
			for {
				resp, err := p.client.Post(p.url("/mutate"), "application/json", bytes.NewReader(body))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						break
					}
				}
				if time.Since(start) > startTimeout {
					t.Fatalf("no answered review %v after exec\n%s", startTimeout, p.output())
				}
				time.Sleep(time.Millisecond)
			}
			took = append(took, time.Since(start))
			p.stop(t)
		}
		slices.Sort(took)
		t.Logf("exec to first answered AdmissionReview: median %v (min %v, max %v, %d runs)",
			took[len(took)/2].Round(100*time.Microsecond), took[0].Round(100*time.Microsecond), took[len(took)-1].Round(100*time.Microsecond), len(took))
	})

	t.Run("invalid configuration exits non-zero", func(t *testing.T) {
		p := startFunction(t, bin, "REGISTRY="+targetRegistry, "MODE=sometimes")
		select {
		case <-p.done:
		case <-time.After(startTimeout):
			t.Fatalf("function with MODE=sometimes still running after %v\n%s", startTimeout, p.output())
		}
		if code := p.exitCode(); code == 0 {
			t.Errorf("function with MODE=sometimes exited 0, want a failure\n%s", p.output())
		}
	})
}

// checkScaffoldGoMod checks the generated go.mod points at our module and
// uses the func-go runtime this test module pins.
func checkScaffoldGoMod(t *testing.T, out string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "go.mod"))
	if err != nil {
		t.Fatalf("reading scaffold go.mod: %v", err)
	}
	mf, err := modfile.Parse("go.mod", data, nil)
	if err != nil {
		t.Fatalf("parsing scaffold go.mod: %v", err)
	}
	replaced := false
	for _, r := range mf.Replace {
		if r.Old.Path == repo.ModulePath && r.New.Path == "./f" {
			replaced = true
		}
	}
	if !replaced {
		t.Errorf("scaffold go.mod does not replace %s with ./f:\n%s", repo.ModulePath, data)
	}
	_, pinned, err := repo.ModuleDir("knative.dev/func-go")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range mf.Require {
		if r.Mod.Path == "knative.dev/func-go" && r.Mod.Version != pinned {
			t.Errorf("scaffold uses func-go %s, this test module pins %s", r.Mod.Version, pinned)
		}
	}
}

// goBuild runs `go build args...` in dir with the environment func's host
// builder uses (CGO_ENABLED=0 on top of the caller's environment).
func goBuild(t *testing.T, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	// GOWORK=off: a go.work of the caller must not leak into the scaffold.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v in %s: %v\n%s", args, dir, err, out)
	}
}

// checkContract compiles a program in the scaffold module asserting that
// New's result implements every optional interface func-go looks for.
// func-go discovers Start/Stop/Ready/Alive by type assertion at run time, so
// a wrong signature would compile fine and silently never be called (no
// config validation at start, no drain on stop, always ready).
func checkContract(t *testing.T, out string) {
	t.Helper()
	const program = `package main

import (
	fhttp "knative.dev/func-go/http"

	f "` + repo.ModulePath + `"
)

var (
	_ fhttp.Handler           = f.New()
	_ fhttp.Starter           = f.New()
	_ fhttp.Stopper           = f.New()
	_ fhttp.ReadinessReporter = f.New()
	_ fhttp.LivenessReporter  = f.New()
)

func main() {}
`
	dir := filepath.Join(out, "contractcheck")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("creating %s: %v", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644); err != nil {
		t.Fatalf("writing contract check: %v", err)
	}
	goBuild(t, out, "-o", os.DevNull, "./contractcheck")
}

// process is a running function binary.
type process struct {
	cmd    *exec.Cmd
	addr   string
	client *http.Client
	buf    *syncbuf.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, valid after done
}

// startFunction runs the binary with a minimal, controlled environment: the
// function reads its whole configuration from the environment, so the
// test's own environment must not leak into it.
func startFunction(t *testing.T, bin string, env ...string) *process {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir() // func-go reads an optional ./cfg file
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + cmd.Dir,
		"LISTEN_ADDRESS=" + addr,
		// A free port rather than the default 9090, which may be taken.
		"METRICS_PORT=" + strconv.Itoa(freePort(t)),
	}, env...)
	buf := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &process{
		cmd:    cmd,
		addr:   addr,
		client: &http.Client{Timeout: 5 * time.Second},
		buf:    buf,
		done:   make(chan struct{}),
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("function output:\n%s", p.output())
		}
	})
	return p
}

func (p *process) output() string { return p.buf.String() }

func (p *process) url(pathname string) string { return "http://" + p.addr + pathname }

// exitCode is the process' exit code, or -1 if a signal killed it.
func (p *process) exitCode() int {
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// waitReady polls the readiness endpoint as Knative's queue-proxy does.
func (p *process) waitReady(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("function exited before becoming ready (code %d)\n%s", p.exitCode(), p.output())
		default:
		}
		resp, err := p.client.Get(p.url("/health/readiness"))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("function not ready after %v\n%s", startTimeout, p.output())
	return 0
}

func (p *process) expectStatus(t *testing.T, pathname string, want int) {
	t.Helper()
	resp, err := p.client.Get(p.url(pathname))
	if err != nil {
		t.Fatalf("GET %s: %v", pathname, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		body, _ := io.ReadAll(resp.Body)
		t.Errorf("GET %s = %d %s, want %d", pathname, resp.StatusCode, body, want)
	}
}

// admit POSTs a CREATE AdmissionReview for the Pod to /mutate, checks the
// response envelope and returns the Pod with the returned patch applied.
func (p *process) admit(t *testing.T, pod []byte) []byte {
	t.Helper()
	uid := types.UID(fmt.Sprintf("test-%d", time.Now().UnixNano()))
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       uid,
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Name:      "web",
			Namespace: "default",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: pod},
			DryRun:    ptr.To(false),
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatalf("encoding AdmissionReview: %v", err)
	}
	resp, err := p.client.Post(p.url("/mutate"), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /mutate: %v", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading /mutate response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /mutate = %d: %s", resp.StatusCode, respBody)
	}
	var got admissionv1.AdmissionReview
	if err := json.Unmarshal(respBody, &got); err != nil {
		t.Fatalf("decoding /mutate response %s: %v", respBody, err)
	}
	if got.APIVersion != "admission.k8s.io/v1" || got.Kind != "AdmissionReview" {
		t.Errorf("response is %s %s, want admission.k8s.io/v1 AdmissionReview", got.APIVersion, got.Kind)
	}
	r := got.Response
	if r == nil {
		t.Fatalf("AdmissionReview without response: %s", respBody)
	}
	if r.UID != uid {
		t.Errorf("response uid = %q, want the request's %q", r.UID, uid)
	}
	if !r.Allowed {
		t.Fatalf("request not allowed: %+v", r.Result)
	}
	if len(r.Patch) == 0 {
		return pod
	}
	if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType = %v, want JSONPatch", r.PatchType)
	}
	patch, err := jsonpatch.DecodePatch(r.Patch)
	if err != nil {
		t.Fatalf("decoding JSONPatch %s: %v", r.Patch, err)
	}
	patched, err := patch.Apply(pod)
	if err != nil {
		t.Fatalf("applying JSONPatch %s: %v", r.Patch, err)
	}
	return patched
}

// stop sends SIGTERM, as the kubelet does when Knative scales a Pod down,
// and waits for the process to exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	// Idle keep-alive connections would only delay the server's shutdown.
	p.client.CloseIdleConnections()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("sending SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatalf("function still running %v after SIGTERM\n%s", stopTimeout, p.output())
	}
}

func podJSON(t *testing.T, image string) []byte {
	t.Helper()
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", Image: image}},
		},
	}
	data, err := json.Marshal(pod)
	if err != nil {
		t.Fatalf("encoding Pod: %v", err)
	}
	return data
}

func imageOf(t *testing.T, podJSON []byte) string {
	t.Helper()
	var pod corev1.Pod
	if err := json.Unmarshal(podJSON, &pod); err != nil {
		t.Fatalf("decoding patched Pod %s: %v", podJSON, err)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("patched Pod has %d containers, want 1: %s", len(pod.Spec.Containers), podJSON)
	}
	return pod.Spec.Containers[0].Image
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before the function binds it; on a test machine that is rare
// enough, and the function then fails loudly rather than silently.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
