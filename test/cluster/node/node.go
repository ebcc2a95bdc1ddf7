package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// stopGrace is how long a component may take to exit after SIGTERM.
const stopGrace = 10 * time.Second

// Options configures Start.
type Options struct {
	// CA signs every certificate of the cluster; nil means a new one.
	// Registries the node pulls from should have certificates it signed.
	CA *cluster.CA
	// Registries maps each registry host:port containerd pulls from to
	// its CA certificate (PEM), written to containerd's certs.d.
	Registries map[string][]byte
	// SandboxImage names the Pod sandbox (pause) image, and SandboxTarball
	// is an image tarball holding it under that name, imported into
	// containerd before the kubelet starts: no registry serves it.
	SandboxImage, SandboxTarball string
	// Logf receives progress; nil discards it.
	Logf func(format string, args ...any)
}

// Node is a running single-node cluster.
type Node struct {
	dir        string
	nodeAssets string
	kubectl    string
	pki        *pki
	restConfig *rest.Config
	httpClient *http.Client
	client     kubernetes.Interface
	logf       func(format string, args ...any)
	// readyAfter is the kubelet's start until the node was Ready.
	readyAfter time.Duration

	etcd, apiserver, controllerManager, scheduler *cluster.Daemon
	containerd, kubelet, kubeProxy, dns           *cluster.Daemon
	stopOnce                                      sync.Once
}

// Start brings the cluster up and returns once the node is Ready. It must
// run in the test stage (see Isolate). ctx bounds the start only. On error,
// everything started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	if CurrentStage() != StageTest || WorkDir() == "" {
		return nil, errors.New("node.Start runs only in the test stage of node.Isolate (its namespaces)")
	}
	kubeAssets, err := cluster.AssetsDir()
	if err != nil {
		return nil, err
	}
	nodeAssets, err := NodeAssetsDir()
	if err != nil {
		return nil, err
	}
	prereq, err := findPrerequisites()
	if err != nil {
		return nil, err
	}
	n := &Node{
		dir:        filepath.Join(WorkDir(), "node"),
		nodeAssets: nodeAssets,
		kubectl:    filepath.Join(kubeAssets, "kubectl"),
		logf:       opts.Logf,
	}
	if n.logf == nil {
		n.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating node directory: %w", err)
	}
	ca := opts.CA
	if ca == nil {
		if ca, err = cluster.NewCA(); err != nil {
			return nil, err
		}
	}
	apiURL := "https://127.0.0.1:" + strconv.Itoa(APIServerPort)
	if n.pki, err = writePKI(filepath.Join(n.dir, "pki"), ca, apiURL); err != nil {
		return nil, err
	}
	if err := n.buildClient(apiURL); err != nil {
		return nil, err
	}

	began := time.Now()
	if err := n.startControlPlane(ctx, kubeAssets); err != nil {
		return nil, err
	}
	n.logf("node: control plane ready after %s", time.Since(began).Round(time.Millisecond))
	if err := n.startDNS(ctx); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx, prereq, opts); err != nil {
		return nil, err
	}
	if err := n.startKubelet(); err != nil {
		return nil, err
	}
	kubeletStarted := time.Now()
	if err := n.startKubeProxy(); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	n.readyAfter = time.Since(kubeletStarted)
	n.logf("node: %s Ready %s after the kubelet started (%s after Start)",
		NodeName, n.readyAfter.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	return n, nil
}

// buildClient creates the admin client.
func (n *Node) buildClient(apiURL string) error {
	var err error
	if n.restConfig, err = clientcmd.BuildConfigFromFlags("", n.pki.kubeconfig("admin")); err != nil {
		return fmt.Errorf("loading the admin kubeconfig: %w", err)
	}
	n.restConfig.Host = apiURL
	n.restConfig.QPS, n.restConfig.Burst = 100, 200
	n.restConfig.UserAgent = "mutator-cluster-test"
	// The mutator words each change as a warning (WARNINGS=true); client-go
	// would log every one of thousands of creates. Tests that read them
	// use a client of their own.
	n.restConfig.WarningHandler = rest.NoWarnings{}
	if n.httpClient, err = rest.HTTPClientFor(n.restConfig); err != nil {
		return fmt.Errorf("creating HTTP client: %w", err)
	}
	if n.client, err = kubernetes.NewForConfigAndClient(n.restConfig, n.httpClient); err != nil {
		return fmt.Errorf("creating clientset: %w", err)
	}
	return nil
}

// startContainerd writes containerd's, the registries' and the CNI
// configuration, starts containerd and imports the sandbox image.
func (n *Node) startContainerd(ctx context.Context, prereq prerequisites, opts Options) error {
	certsDir := filepath.Join(n.dir, "certs.d")
	cniConfDir := filepath.Join(n.dir, "cni")
	cas := make(map[string]string, len(opts.Registries))
	for host, caPEM := range opts.Registries {
		file := filepath.Join(n.dir, "registry-ca-"+strings.ReplaceAll(host, ":", "_")+".crt")
		if err := os.WriteFile(file, caPEM, 0o644); err != nil {
			return fmt.Errorf("writing the CA of registry %s: %w", host, err)
		}
		cas[host] = file
	}
	conflist, err := cniConflist()
	if err != nil {
		return fmt.Errorf("encoding CNI configuration: %w", err)
	}
	files := map[string]string{
		"containerd.toml": containerdTOML(containerdConfig{
			runc: prereq.runc, cniBinDir: prereq.cniDir, cniConfDir: cniConfDir,
			certsDir: certsDir, sandboxImage: opts.SandboxImage,
		}),
		filepath.Join("cni", "10-bridge.conflist"): string(conflist),
	}
	for _, f := range registryHosts(cas) {
		files[filepath.Join("certs.d", f[0])] = f[1]
	}
	if err := writeFiles(n.dir, files); err != nil {
		return err
	}
	// containerd finds its shim on PATH.
	env := append(os.Environ(), "PATH="+n.nodeAssets+":"+os.Getenv("PATH"))
	n.containerd, err = n.start("containerd", filepath.Join(n.nodeAssets, "containerd"), env,
		"--config="+filepath.Join(n.dir, "containerd.toml"))
	if err != nil {
		return err
	}
	err = cluster.WaitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := n.containerd.Exited(); done {
			return false, fmt.Errorf("containerd exited during start-up (%v); last log lines:\n%s", err, n.containerd.Tail(30))
		}
		_, err := n.ctr(ctx, "version")
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for containerd: %w", err)
	}
	if opts.SandboxTarball != "" {
		if out, err := n.ctr(ctx, "-n", "k8s.io", "images", "import", opts.SandboxTarball); err != nil {
			return fmt.Errorf("importing the sandbox image: %w: %s", err, out)
		}
	}
	return nil
}

// ctr runs containerd's client against the node's containerd.
func (n *Node) ctr(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.nodeAssets, "ctr"), append([]string{"--address", containerdSocket}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startKubelet writes the kubelet's configuration and starts it.
func (n *Node) startKubelet() error {
	config, err := kubeletConfig(n.pki, os.Getenv(cgroupEnv))
	if err != nil {
		return fmt.Errorf("encoding kubelet configuration: %w", err)
	}
	if err := writeFiles(n.dir, map[string]string{"kubelet.json": string(config)}); err != nil {
		return err
	}
	n.kubelet, err = n.start("kubelet", filepath.Join(n.nodeAssets, "kubelet"), nil,
		"--config="+filepath.Join(n.dir, "kubelet.json"),
		"--kubeconfig="+n.pki.kubeconfig("kubelet"),
		"--node-ip="+NodeIP,
		"--hostname-override="+NodeName,
		"--v=1",
	)
	return err
}

// startKubeProxy writes kube-proxy's configuration and starts it.
func (n *Node) startKubeProxy() error {
	config, err := kubeProxyConfig(n.pki)
	if err != nil {
		return fmt.Errorf("encoding kube-proxy configuration: %w", err)
	}
	if err := writeFiles(n.dir, map[string]string{"kube-proxy.json": string(config)}); err != nil {
		return err
	}
	n.kubeProxy, err = n.start("kube-proxy", filepath.Join(n.nodeAssets, "kube-proxy"), nil,
		"--config="+filepath.Join(n.dir, "kube-proxy.json"))
	return err
}

// waitReady waits for the node's Ready condition, failing fast if a node
// component exits.
func (n *Node) waitReady(ctx context.Context) error {
	last := "not registered yet"
	err := cluster.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, p := range []*cluster.Daemon{n.containerd, n.kubelet, n.apiserver} {
			if done, err := p.Exited(); done {
				return false, fmt.Errorf("%s exited (%v); last log lines:\n%s", p.Name(), err, p.Tail(30))
			}
		}
		node, err := n.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				last = fmt.Sprintf("Ready=%s: %s", c.Status, c.Message)
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("waiting for node %s to be Ready (last: %s): %w; kubelet log:\n%s", NodeName, last, err, n.kubelet.Tail(30))
	}
	return err
}

// start starts one component with its log in the node directory.
func (n *Node) start(name, path string, env []string, args ...string) (*cluster.Daemon, error) {
	return cluster.StartDaemon(name, path, filepath.Join(n.dir, name+".log"), env, args...)
}

// components lists the started components, node first: the order to stop.
func (n *Node) components() []*cluster.Daemon {
	var ps []*cluster.Daemon
	for _, p := range []*cluster.Daemon{n.kubeProxy, n.kubelet, n.dns, n.scheduler, n.controllerManager, n.containerd, n.apiserver, n.etcd} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// Stop stops every component, the kubelet's side first, then the API
// server before etcd. Containers still running die with the namespace's
// init. It is idempotent and a no-op on nil.
func (n *Node) Stop() {
	if n == nil {
		return
	}
	n.stopOnce.Do(func() {
		for _, p := range n.components() {
			if err := p.Stop(stopGrace); err != nil {
				n.logf("node: %v", err)
			}
		}
	})
}

// Client returns an admin (system:masters) clientset.
func (n *Node) Client() kubernetes.Interface { return n.client }

// RESTConfig returns a copy of the admin client configuration.
func (n *Node) RESTConfig() *rest.Config { return rest.CopyConfig(n.restConfig) }

// ReadyAfter is how long the node took from the kubelet's start to Ready.
func (n *Node) ReadyAfter() time.Duration { return n.readyAfter }

// Dir holds the node's configuration, certificates and logs.
func (n *Node) Dir() string { return n.dir }

// Kubeconfig is the path of the admin kubeconfig (for clients that take
// one, such as Helm's).
func (n *Node) Kubeconfig() string { return n.pki.kubeconfig("admin") }

// Kubectl runs kubectl as admin; the error includes stderr.
func (n *Node) Kubectl(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	base := []string{"--kubeconfig=" + n.pki.kubeconfig("admin"), "--cache-dir=" + filepath.Join(n.dir, "kubectl-cache")}
	cmd := exec.CommandContext(ctx, n.kubectl, append(base, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// LogTail returns the last lines of each component's log, for a failing
// test to print.
func (n *Node) LogTail(lines int) string {
	var b strings.Builder
	for _, p := range n.components() {
		fmt.Fprintf(&b, "==> %s (%s) <==\n%s\n", p.Name(), p.LogPath(), p.Tail(lines))
	}
	return b.String()
}

// writeFiles writes each file (a path relative to dir) with its parents.
func writeFiles(dir string, files map[string]string) error {
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
