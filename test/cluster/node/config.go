package node

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The cluster's fixed addresses. They exist only inside the test's network
// namespace, so they cannot clash with anything on the machine.
const (
	NodeName = "node-1"
	// NodeIP is the kubelet's address (on loopback, see setupNetwork); the
	// API server advertises it too, so Pods can reach it.
	NodeIP        = "10.200.0.1"
	PodSubnet     = "10.244.0.0/24"
	podGateway    = "10.244.0.1"
	ServiceCIDR   = "10.96.0.0/24"
	APIServiceIP  = "10.96.0.1"
	APIServerPort = 6443
	etcdPort      = 2379
	etcdPeerPort  = 2380
	// containerdSocket is containerd's default; /run is the namespace's own.
	containerdSocket = "/run/containerd/containerd.sock"
)

// containerdConfig is what containerdTOML needs.
type containerdConfig struct {
	runc         string // runc binary
	cniBinDir    string
	cniConfDir   string
	certsDir     string // registry hosts: certs.d/<host:port>/hosts.toml
	sandboxImage string
}

// containerdTOML renders containerd 2's configuration (version 3 schema,
// which 2.x migrates). Everything not set keeps containerd's default;
// root and state are the defaults under the namespace's own tmpfs.
func containerdTOML(c containerdConfig) string {
	q := strconv.Quote // a Go string literal of plain ASCII is a TOML basic string
	return fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
# Never the machine's /etc/containerd/conf.d.
imports = []

[grpc]
  address = %s

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %s
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %s

[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE: runc fails every sandbox asked to
  # lower its oom_score_adj (the kubelet asks for -998) unless containerd
  # clamps the value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = %s
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%s]
    conf_dir = %s

[plugins."io.containerd.nri.v1.nri"]
  disable = true
`, q(containerdSocket), q(c.sandboxImage), q(c.certsDir), q(c.runc), q(c.cniBinDir), q(c.cniConfDir))
}

// hostsTOML renders containerd's certs.d/<host>/hosts.toml for an HTTPS
// registry whose certificate caFile signed.
func hostsTOML(host, caFile string) string {
	q := strconv.Quote
	server := "https://" + host
	return fmt.Sprintf("server = %s\n\n[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %s\n", q(server), q(server), q(caFile))
}

// cniConflist is a bridge network for PodSubnet with host-local addresses.
// No masquerading: there is nowhere to go.
func cniConflist() ([]byte, error) {
	type m = map[string]any
	return json.MarshalIndent(m{
		"cniVersion": "1.0.0",
		"name":       "mutator-test",
		"plugins": []m{{
			"type":        "bridge",
			"bridge":      "cni0",
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": m{
				"type":   "host-local",
				"ranges": [][]m{{{"subnet": PodSubnet, "gateway": podGateway}}},
				"routes": []m{{"dst": "0.0.0.0/0"}},
			},
		}},
	}, "", "  ")
}

// kubeletConfig returns the KubeletConfiguration (JSON is YAML).
func kubeletConfig(p *pki, cgroupRoot string) ([]byte, error) {
	type m = map[string]any
	return json.MarshalIndent(m{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		// These machines mount cgroup v1, which kubelet 1.36 refuses
		// unless told not to; the cgroupfs driver, as there is no systemd.
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               "/" + cgroupRoot,
		"containerRuntimeEndpoint": "unix://" + containerdSocket,
		// Only the API server (a client certificate from the CA) talks to
		// the kubelet, for logs and exec.
		"authentication": m{
			"anonymous": m{"enabled": false},
			"webhook":   m{"enabled": false},
			"x509":      m{"clientCAFile": p.path("ca.crt")},
		},
		"authorization":      m{"mode": "AlwaysAllow"},
		"tlsCertFile":        p.path("kubelet-serving.crt"),
		"tlsPrivateKeyFile":  p.path("kubelet-serving.key"),
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		// Pods get the cluster's DNS (dns.go) and none of the machine's
		// name servers, which they could not reach anyway.
		"resolvConf":    "",
		"clusterDNS":    []string{ClusterDNSIP},
		"clusterDomain": ClusterDomain,
		"failSwapOn":    false,
		"maxPods":       250,
		// Eviction and image garbage collection would act on the machine's
		// disk and memory, which other work shares: only in extremity.
		"evictionHard": m{
			"memory.available":  "100Mi",
			"nodefs.available":  "1%",
			"imagefs.available": "1%",
			"nodefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"serializeImagePulls":         false,
		// The default (5 a second, bursts of 10) fails most of a
		// Deployment's pulls at first ("pull QPS exceeded") and delays
		// them by the image back-off.
		"registryPullQPS":     0,
		"shutdownGracePeriod": "0s",
	}, "", "  ")
}

// kubeProxyConfig returns the KubeProxyConfiguration: iptables rules in
// the namespace. The conntrack settings are machine-wide (nf_conntrack_max)
// or not needed, so kube-proxy is told to leave them alone.
func kubeProxyConfig(p *pki) ([]byte, error) {
	type m = map[string]any
	return json.MarshalIndent(m{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"clientConnection":   m{"kubeconfig": p.kubeconfig("kube-proxy")},
		"hostnameOverride":   NodeName,
		"mode":               "iptables",
		"clusterCIDR":        PodSubnet,
		"metricsBindAddress": "127.0.0.1:10249",
		"healthzBindAddress": "127.0.0.1:10256",
		"conntrack": m{
			"maxPerCore":            0,
			"min":                   0,
			"tcpEstablishedTimeout": "0s",
			"tcpCloseWaitTimeout":   "0s",
		},
	}, "", "  ")
}

// registryHosts returns the certs.d layout for registries (host:port to
// CA file): the relative path of each hosts.toml and its content, sorted.
func registryHosts(registries map[string]string) [][2]string {
	hosts := make([]string, 0, len(registries))
	for h := range registries {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	files := make([][2]string, 0, len(hosts))
	for _, h := range hosts {
		// containerd names the directory host_port only on Windows.
		files = append(files, [2]string{filepath.Join(strings.TrimSpace(h), "hosts.toml"), hostsTOML(h, registries[h])})
	}
	return files
}
