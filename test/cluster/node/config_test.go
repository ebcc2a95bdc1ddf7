package node

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

func TestContainerdTOML(t *testing.T) {
	got := containerdTOML(containerdConfig{
		runc: "/usr/sbin/runc", cniBinDir: "/usr/lib/cni", cniConfDir: "/w/cni",
		certsDir: "/w/certs.d", sandboxImage: "sandbox.test/pause:1",
	})
	for _, want := range []string{
		`address = "/run/containerd/containerd.sock"`,
		`sandbox = "sandbox.test/pause:1"`,
		`config_path = "/w/certs.d"`,
		// Without it every sandbox fails on these machines.
		"restrict_oom_score_adj = true",
		`BinaryName = "/usr/sbin/runc"`,
		`bin_dirs = ["/usr/lib/cni"]`,
		`conf_dir = "/w/cni"`,
		"imports = []",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("containerd configuration lacks %s:\n%s", want, got)
		}
	}
}

func TestRegistryHosts(t *testing.T) {
	got := registryHosts(map[string]string{"mirror.test:5443": "/w/m.crt", "origin.test:5001": "/w/o.crt"})
	if len(got) != 2 || got[0][0] != "mirror.test:5443/hosts.toml" || got[1][0] != "origin.test:5001/hosts.toml" {
		t.Fatalf("registryHosts paths = %q", got)
	}
	want := "server = \"https://mirror.test:5443\"\n\n[host.\"https://mirror.test:5443\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"/w/m.crt\"\n"
	if got[0][1] != want {
		t.Errorf("hosts.toml =\n%s\nwant\n%s", got[0][1], want)
	}
}

func TestKubeletConfig(t *testing.T) {
	data, err := kubeletConfig(&pki{dir: "/w/pki"}, "mutator-node-1")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		// The facts that stopped a node on these machines.
		"failCgroupV1": false,
		"cgroupDriver": "cgroupfs",
		"cgroupRoot":   "/mutator-node-1",
		// A Deployment's pulls must not be throttled into back-off.
		"registryPullQPS": float64(0),
		"kind":            "KubeletConfiguration",
	} {
		if cfg[key] != want {
			t.Errorf("kubelet configuration %s = %v, want %v", key, cfg[key], want)
		}
	}
}

func TestKubeProxyConfigLeavesConntrackAlone(t *testing.T) {
	data, err := kubeProxyConfig(&pki{dir: "/w/pki"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Mode      string         `json:"mode"`
		Conntrack map[string]any `json:"conntrack"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	// nf_conntrack_max is machine-wide: kube-proxy must not touch it.
	if cfg.Mode != "iptables" || cfg.Conntrack["maxPerCore"] != float64(0) || cfg.Conntrack["min"] != float64(0) {
		t.Errorf("kube-proxy configuration: mode %q, conntrack %v", cfg.Mode, cfg.Conntrack)
	}
}

func TestCNIConflist(t *testing.T) {
	data, err := cniConflist()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type": "bridge"`, `"subnet": "` + PodSubnet + `"`, `"ipMasq": false`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("CNI configuration lacks %s:\n%s", want, data)
		}
	}
}

func TestWritePKI(t *testing.T) {
	ca, err := cluster.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	p, err := writePKI(t.TempDir(), ca, "https://127.0.0.1:6443")
	if err != nil {
		t.Fatal(err)
	}
	for component := range componentUsers {
		cfg, err := clientcmd.BuildConfigFromFlags("", p.kubeconfig(component))
		if err != nil {
			t.Errorf("kubeconfig of %s: %v", component, err)
		} else if cfg.Host != "https://127.0.0.1:6443" {
			t.Errorf("kubeconfig of %s: server %s", component, cfg.Host)
		}
	}
	// Pods reach the API server through the kubernetes Service, the
	// kubelet and tests through the node IP or loopback.
	data, err := os.ReadFile(p.path("apiserver.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", NodeIP, APIServiceIP, "kubernetes.default.svc"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()}); err != nil {
			t.Errorf("the API server's certificate is not valid for %s: %v", name, err)
		}
	}
}
