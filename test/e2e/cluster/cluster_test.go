package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// requireAssets fails (never skips) without the binaries: CI always provides
// them, so a skip would only hide a broken setup.
func requireAssets(t *testing.T) string {
	t.Helper()
	dir, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCluster(t *testing.T) {
	assets := requireAssets(t)
	ctx := t.Context()

	began := time.Now()
	c, err := Start(ctx, Options{AssetsDir: assets, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(c.Stop) // in case the test fails before its own Stop
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.LogTail(40))
		}
	})
	t.Logf("cluster ready at %s after %s", c.URL(), time.Since(began).Round(time.Millisecond))

	client := c.Client()
	ns, err := client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns.Name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27"}}},
	}
	if _, err := client.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	got, err := client.CoreV1().Pods(ns.Name).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting pod: %v", err)
	}
	if img := got.Spec.Containers[0].Image; img != "nginx:1.27" {
		t.Errorf("pod image = %q, want nginx:1.27", img)
	}

	stdout, _, err := c.Kubectl(ctx, "get", "pods", "-n", ns.Name, "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	if names := strings.Fields(stdout); !slices.Contains(names, "pod/"+pod.Name) {
		t.Errorf("kubectl get pods -o name = %q, want it to list pod/%s", stdout, pod.Name)
	}

	metrics, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, "apiserver_request_total") {
		t.Errorf("metrics lack apiserver_request_total (got %d bytes)", len(metrics))
	}

	procs := c.Processes()
	if len(procs) != 2 {
		t.Fatalf("Processes() = %v, want kube-apiserver and etcd", procs)
	}
	stopBegan := time.Now()
	c.Stop()
	t.Logf("stopped after %s", time.Since(stopBegan).Round(time.Millisecond))
	c.Stop() // idempotent
	for _, p := range procs {
		if err := signal0(p.PID); err == nil {
			t.Errorf("%s (pid %d) still running after Stop", p.Name, p.PID)
		}
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster directory %s not removed: %v", c.Dir(), err)
	}
}

// signal0 checks for a live process without affecting it.
func signal0(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(syscall.Signal(0))
}

// TestStartFailure checks that a failed Start explains itself and leaves
// nothing behind.
func TestStartFailure(t *testing.T) {
	assets := requireAssets(t)
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"bad apiserver flag", Options{AssetsDir: assets, APIServerArgs: []string{"--no-such-flag"}}, "kube-apiserver exited"},
		{"bad etcd flag", Options{AssetsDir: assets, EtcdArgs: []string{"--no-such-flag"}}, "etcd exited"},
		{"no binaries", Options{AssetsDir: t.TempDir()}, "make test-bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp) // where Start makes its directory
			tt.opts.Logf = t.Logf
			c, err := Start(t.Context(), tt.opts)
			c.Stop() // must be safe on the nil result
			if err == nil {
				t.Fatal("Start succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Start error = %v, want it to mention %q", err, tt.wantErr)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("Start left %v in %s", left, tmp)
			}
		})
	}
}

func TestAssetsDir(t *testing.T) {
	full, partial := t.TempDir(), t.TempDir()
	for _, name := range []string{etcdBinary, apiserverBinary, kubectlBinary} {
		writeExecutable(t, filepath.Join(full, name))
	}
	writeExecutable(t, filepath.Join(partial, etcdBinary))

	tests := []struct {
		name, kubeAssets, kubebuilderAssets string
		want, wantErr                       string
	}{
		{name: "KUBE_ASSETS", kubeAssets: full, want: full},
		{name: "KUBEBUILDER_ASSETS", kubebuilderAssets: full, want: full},
		{name: "KUBE_ASSETS wins", kubeAssets: full, kubebuilderAssets: partial, want: full},
		{name: "missing binaries", kubeAssets: partial, wantErr: "make test-bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBE_ASSETS", tt.kubeAssets)
			t.Setenv("KUBEBUILDER_ASSETS", tt.kubebuilderAssets)
			got, err := AssetsDir()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), kubectlBinary) {
					t.Fatalf("AssetsDir() error = %v, want one naming %s and mentioning %q", err, kubectlBinary, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("AssetsDir() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func writeExecutable(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "test", "e2e", "cluster"); wd != want {
		t.Errorf("RepoRoot() = %s, want the root above %s", root, wd)
	}
}

func TestMergeArgs(t *testing.T) {
	defaults := []string{"--a=1", "--list=x", "--flag"}
	tests := []struct {
		name  string
		extra []string
		want  []string
	}{
		{"none", nil, defaults},
		{"override in place", []string{"--list=y,z"}, []string{"--a=1", "--list=y,z", "--flag"}},
		{"append new", []string{"--b=2", "--c"}, []string{"--a=1", "--list=x", "--flag", "--b=2", "--c"}},
		{"override boolean", []string{"--flag=false"}, []string{"--a=1", "--list=x", "--flag=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeArgs(defaults, tt.extra); !slices.Equal(got, tt.want) {
				t.Errorf("mergeArgs(%q) = %q, want %q", tt.extra, got, tt.want)
			}
		})
	}
}
