// Package cluster runs a real kube-apiserver and etcd on loopback for
// end-to-end tests, in the manner of controller-runtime's envtest but without
// depending on it. There is no scheduler, kubelet or controller manager: Pods
// are stored but never run, which is all an admission webhook test needs.
package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	defaultStartTimeout = 60 * time.Second
	// stopGrace is how long a server may take to exit after SIGTERM;
	// kube-apiserver needs about a second, etcd less.
	stopGrace = 5 * time.Second
	// readyInterval is the /readyz poll period; the apiserver is usually
	// ready 2 to 3 s after start.
	readyInterval = 100 * time.Millisecond
	// probeTimeout bounds each health probe.
	probeTimeout = 2 * time.Second
	// logTailLines is how much of a server log start-up errors quote.
	logTailLines = 30
)

// Options configures Start. The zero value is a working configuration.
type Options struct {
	// AssetsDir holds etcd, kube-apiserver and kubectl; empty means AssetsDir().
	AssetsDir string
	// APIServerArgs are extra kube-apiserver flags. One of the form
	// --flag=value whose flag Start already sets replaces Start's value
	// (e.g. --authorization-mode=AlwaysAllow); any other is appended.
	APIServerArgs []string
	// EtcdArgs are extra etcd flags, merged the same way.
	EtcdArgs []string
	// KeepDir leaves the temporary directory (certificates, kubeconfig, logs,
	// etcd data) in place after Stop, for debugging.
	KeepDir bool
	// StartTimeout bounds Start, including waiting for /readyz; default 60 s.
	StartTimeout time.Duration
	// Logf, if set, receives diagnostics Stop cannot return, such as a
	// server that had to be killed; pass t.Logf.
	Logf func(format string, args ...any)
}

// Cluster is a running etcd and kube-apiserver pair. Its methods are safe for
// concurrent use.
type Cluster struct {
	dir        string
	keepDir    bool
	logf       func(format string, args ...any)
	kubectl    string
	url        string
	kubeconfig string
	ca         *CA
	restConfig *rest.Config
	httpClient *http.Client
	client     kubernetes.Interface

	etcd, apiserver *Daemon
	stopOnce        sync.Once
}

// Process describes one server of a cluster.
type Process struct {
	Name    string
	PID     int
	LogPath string
}

// Start launches etcd and kube-apiserver on free loopback ports and returns
// once /readyz succeeds. ctx bounds only the start-up: the servers keep
// running until Stop, since tests usually cancel their context before their
// cleanups run. On error everything started so far has been stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	assets := opts.AssetsDir
	if assets == "" {
		if assets, err = AssetsDir(); err != nil {
			return nil, err
		}
	} else if err := checkAssets(assets); err != nil {
		return nil, assetsError(assets, "Options.AssetsDir", err)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "mutator-cluster-")
	if err != nil {
		return nil, fmt.Errorf("creating cluster directory: %w", err)
	}
	c := &Cluster{
		dir:        dir,
		keepDir:    opts.KeepDir,
		logf:       opts.Logf,
		kubectl:    filepath.Join(assets, kubectlBinary),
		kubeconfig: filepath.Join(dir, "kubeconfig"),
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	// All three listeners are open at once so the ports differ. Another
	// process could take one before the servers bind it; that shows up as
	// a start-up error quoting "address already in use".
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	etcdPeerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c.url = fmt.Sprintf("https://127.0.0.1:%d", ports[2])

	files, err := c.writeCredentials()
	if err != nil {
		return nil, err
	}

	etcdArgs := mergeArgs([]string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd-data"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=default=" + etcdPeerURL,
		// Durability is pointless for a throwaway store and fsync is slow.
		"--unsafe-no-fsync",
		"--quota-backend-bytes=268435456",
	}, opts.EtcdArgs)
	c.etcd, err = StartDaemon("etcd", filepath.Join(assets, etcdBinary), filepath.Join(dir, "etcd.log"), nil, etcdArgs...)
	if err != nil {
		return nil, err
	}

	// Wait for etcd before starting the apiserver: an apiserver stuck
	// retrying a dead etcd ignores SIGTERM, and "etcd exited" is the
	// clearer error anyway.
	if err := WaitHealthy(ctx, &http.Client{}, etcdURL+"/health", c.etcd); err != nil {
		return nil, err
	}

	apiserverArgs := mergeArgs([]string{
		"--etcd-servers=" + etcdURL,
		fmt.Sprintf("--secure-port=%d", ports[2]),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--tls-cert-file=" + files.servingCert,
		"--tls-private-key-file=" + files.servingKey,
		"--client-ca-file=" + files.caCert,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + files.saPublicKey,
		"--service-account-signing-key-file=" + files.saPrivateKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		// No controller manager creates the "default" ServiceAccount, so
		// this plugin would reject every Pod.
		"--disable-admission-plugins=ServiceAccount",
		// Keeps the apiserver from writing to /var/run/kubernetes.
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
	}, opts.APIServerArgs)
	c.apiserver, err = StartDaemon("kube-apiserver", filepath.Join(assets, apiserverBinary), filepath.Join(dir, "kube-apiserver.log"), nil, apiserverArgs...)
	if err != nil {
		return nil, err
	}

	if err := WaitHealthy(ctx, c.httpClient, c.url+"/readyz", c.etcd, c.apiserver); err != nil {
		return nil, err
	}
	return c, nil
}

// credentialFiles are the paths writeCredentials produced.
type credentialFiles struct {
	caCert, servingCert, servingKey, saPrivateKey, saPublicKey string
}

// writeCredentials creates the CA, the apiserver serving certificate, the
// admin client certificate (group system:masters, which RBAC always allows),
// the service-account signing key and the kubeconfig, and builds the clients.
func (c *Cluster) writeCredentials() (credentialFiles, error) {
	var files credentialFiles
	ca, err := NewCA()
	if err != nil {
		return files, err
	}
	c.ca = ca
	servingCert, servingKey, err := ca.Issue([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return files, fmt.Errorf("issuing apiserver serving certificate: %w", err)
	}
	adminCert, adminKey, err := ca.IssueClient("admin", "system:masters")
	if err != nil {
		return files, fmt.Errorf("issuing admin client certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return files, fmt.Errorf("generating service-account key: %w", err)
	}
	saPrivate, err := privateKeyPEM(saKey)
	if err != nil {
		return files, err
	}
	saPublicDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return files, fmt.Errorf("marshaling service-account public key: %w", err)
	}

	c.restConfig = &rest.Config{
		Host: c.url,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   ca.CertPEM(),
			CertData: adminCert,
			KeyData:  adminKey,
		},
		// The client-go default of 5 QPS would throttle busy tests.
		QPS:       100,
		Burst:     200,
		UserAgent: "mutator-e2e",
	}
	if c.httpClient, err = rest.HTTPClientFor(c.restConfig); err != nil {
		return files, fmt.Errorf("creating HTTP client: %w", err)
	}
	if c.client, err = kubernetes.NewForConfigAndClient(c.restConfig, c.httpClient); err != nil {
		return files, fmt.Errorf("creating clientset: %w", err)
	}
	kubeconfig, err := kubeconfigJSON(c.url, ca.CertPEM(), adminCert, adminKey)
	if err != nil {
		return files, err
	}

	files = credentialFiles{
		caCert:       filepath.Join(c.dir, "ca.crt"),
		servingCert:  filepath.Join(c.dir, "apiserver.crt"),
		servingKey:   filepath.Join(c.dir, "apiserver.key"),
		saPrivateKey: filepath.Join(c.dir, "sa.key"),
		saPublicKey:  filepath.Join(c.dir, "sa.pub"),
	}
	for _, f := range []struct {
		path string
		data []byte
	}{
		{files.caCert, ca.CertPEM()},
		{files.servingCert, servingCert},
		{files.servingKey, servingKey},
		{files.saPrivateKey, saPrivate},
		{files.saPublicKey, encodePEM("PUBLIC KEY", saPublicDER)},
		{filepath.Join(c.dir, "admin.crt"), adminCert},
		{filepath.Join(c.dir, "admin.key"), adminKey},
		{c.kubeconfig, kubeconfig},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return files, fmt.Errorf("writing %s: %w", filepath.Base(f.path), err)
		}
	}
	return files, nil
}

// kubeconfigJSON renders a kubeconfig; kubectl reads JSON as well as YAML,
// and encoding/json base64-encodes the []byte *-data fields as required.
func kubeconfigJSON(server string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	type m = map[string]any
	data, err := json.MarshalIndent(m{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []m{{"name": "mutator-e2e", "cluster": m{
			"server": server, "certificate-authority-data": caPEM}}},
		"users": []m{{"name": "admin", "user": m{
			"client-certificate-data": certPEM, "client-key-data": keyPEM}}},
		"contexts": []m{{"name": "mutator-e2e", "context": m{
			"cluster": "mutator-e2e", "user": "admin"}}},
		"current-context": "mutator-e2e",
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding kubeconfig: %w", err)
	}
	return data, nil
}

// waitHealthy polls url until it answers 200 OK, failing fast with the log
// tail if one of procs exits; the last failure goes into the timeout error.
func WaitHealthy(ctx context.Context, client *http.Client, url string, procs ...*Daemon) error {
	lastStatus := "no response yet"
	err := WaitFor(ctx, readyInterval, func(ctx context.Context) (bool, error) {
		for _, p := range procs {
			if done, waitErr := p.Exited(); done {
				return false, fmt.Errorf("%s exited during start-up (%v); last log lines:\n%s", p.Name(), waitErr, p.Tail(logTailLines))
			}
		}
		// A per-probe timeout, so one hung connection cannot eat the deadline.
		probeCtx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		body, code, err := get(probeCtx, client, url)
		switch {
		case err != nil:
			lastStatus = err.Error()
		case code != http.StatusOK:
			lastStatus = fmt.Sprintf("HTTP %d: %s", code, body)
		default:
			return true, nil
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil {
		last := procs[len(procs)-1]
		return fmt.Errorf("waiting for %s (last: %s): %w; last %s log lines:\n%s",
			url, lastStatus, err, last.Name(), last.Tail(logTailLines))
	}
	return err
}

// get fetches url and returns the body and status code.
func get(ctx context.Context, client *http.Client, url string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("reading %s response: %w", url, err)
	}
	return body, resp.StatusCode, nil
}

// Stop terminates kube-apiserver, then etcd (the apiserver would otherwise
// spend its shutdown retrying a vanished etcd), and removes the temporary
// directory unless Options.KeepDir. It is idempotent and a no-op on nil.
func (c *Cluster) Stop() {
	if c == nil {
		return
	}
	c.stopOnce.Do(func() {
		for _, p := range []*Daemon{c.apiserver, c.etcd} {
			if p == nil {
				continue
			}
			if err := p.Stop(stopGrace); err != nil {
				c.logf("cluster: %v", err)
			}
		}
		if c.keepDir {
			c.logf("cluster: keeping %s", c.dir)
			return
		}
		if err := os.RemoveAll(c.dir); err != nil {
			c.logf("cluster: removing %s: %v", c.dir, err)
		}
	})
}

// RESTConfig returns a copy of the admin (system:masters) client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client returns an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// URL returns the apiserver base URL, https://127.0.0.1:PORT.
func (c *Cluster) URL() string { return c.url }

// CA returns the CA that signed the apiserver and admin certificates; it can
// also issue a webhook serving certificate.
func (c *Cluster) CA() *CA { return c.ca }

// Dir returns the temporary directory holding certificates, kubeconfig and logs.
func (c *Cluster) Dir() string { return c.dir }

// KubeconfigPath returns the path of an admin kubeconfig for kubectl --kubeconfig.
func (c *Cluster) KubeconfigPath() string { return c.kubeconfig }

// KubectlPath returns the path of the kubectl binary.
func (c *Cluster) KubectlPath() string { return c.kubectl }

// Kubectl runs kubectl against the cluster as admin. The error includes
// stderr, so callers can usually just report it.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var outBuf, errBuf bytes.Buffer
	// The cache dir keeps kubectl's discovery cache out of $HOME.
	base := []string{"--kubeconfig=" + c.kubeconfig, "--cache-dir=" + filepath.Join(c.dir, "kubectl-cache")}
	cmd := exec.CommandContext(ctx, c.kubectl, append(base, args...)...)
	cmd.Stdout = &outBuf
	cmd.Stderr = &errBuf
	if err := cmd.Run(); err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errBuf.String()))
		return outBuf.String(), errBuf.String(), err
	}
	return outBuf.String(), errBuf.String(), nil
}

// Metrics returns the apiserver's Prometheus text exposition from /metrics.
func (c *Cluster) Metrics(ctx context.Context) (string, error) {
	body, code, err := get(ctx, c.httpClient, c.url+"/metrics")
	if err != nil {
		return "", fmt.Errorf("fetching apiserver metrics: %w", err)
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("fetching apiserver metrics: HTTP %d: %s", code, body)
	}
	return string(body), nil
}

// Processes describes kube-apiserver and etcd, e.g. to print their logs when
// a test fails. The log files are removed by Stop unless Options.KeepDir.
func (c *Cluster) Processes() []Process {
	var ps []Process
	for _, p := range []*Daemon{c.apiserver, c.etcd} {
		if p != nil {
			ps = append(ps, Process{Name: p.Name(), PID: p.PID(), LogPath: p.LogPath()})
		}
	}
	return ps
}

// LogTail returns the last n lines of each server log, labelled, for a
// failing test to print before Stop removes the logs.
func (c *Cluster) LogTail(n int) string {
	var b strings.Builder
	for _, p := range []*Daemon{c.apiserver, c.etcd} {
		if p != nil {
			fmt.Fprintf(&b, "==> %s (%s) <==\n%s\n", p.Name(), p.LogPath(), p.Tail(n))
		}
	}
	return b.String()
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// mergeArgs returns defaults with extra applied: an extra --flag=value whose
// flag appears in defaults replaces that default in place; any other extra
// is appended. Repeating a flag instead would append to list-valued flags
// such as --disable-admission-plugins rather than replace them.
func mergeArgs(defaults, extra []string) []string {
	args := append([]string(nil), defaults...)
	index := make(map[string]int, len(args))
	for i, a := range args {
		index[flagName(a)] = i
	}
	for _, a := range extra {
		if i, ok := index[flagName(a)]; ok && strings.Contains(a, "=") {
			args[i] = a
			continue
		}
		args = append(args, a)
	}
	return args
}

// flagName returns "--name" for "--name=value" or "--name".
func flagName(arg string) string {
	name, _, _ := strings.Cut(arg, "=")
	return name
}
