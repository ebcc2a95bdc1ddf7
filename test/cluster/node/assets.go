package node

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// nodeBinaries are the binaries NodeAssetsDir must hold, beside the
// control plane's (etcd, kube-apiserver, kubectl; see cluster.AssetsDir).
var nodeBinaries = []string{
	"kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy",
	"containerd", "containerd-shim-runc-v2", "ctr", "coredns",
}

// NodeAssetsDir returns the directory holding nodeBinaries: $NODE_ASSETS,
// else <repo root>/.cache/node-bin, where hack/tools/node-bin.sh puts them.
func NodeAssetsDir() (string, error) {
	dir := os.Getenv("NODE_ASSETS")
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", fmt.Errorf("locating node binaries: %w; set NODE_ASSETS", err)
		}
		dir = filepath.Join(root, ".cache", "node-bin")
	}
	var missing []string
	for _, name := range nodeBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("node binaries missing from %s: %s; run `bash hack/tools/node-bin.sh %s` (or `make test-cluster`), or set NODE_ASSETS",
			dir, strings.Join(missing, ", "), dir)
	}
	return dir, nil
}

// cniDirs are where distributions install the CNI plugins (Debian's
// containernetworking-plugins: /usr/lib/cni).
var cniDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// prerequisites are the tools the node needs from the machine.
type prerequisites struct {
	runc   string
	cniDir string
}

// findPrerequisites locates runc, the CNI plugins, iptables and ip, and
// names every missing one at once.
func findPrerequisites() (prerequisites, error) {
	var p prerequisites
	var missing []string
	var err error
	if p.runc, err = exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc")
	}
	for _, tool := range []string{"iptables", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, dir := range cniDirs {
		if hasFiles(dir, "bridge", "host-local", "loopback") {
			p.cniDir = dir
			break
		}
	}
	if p.cniDir == "" {
		missing = append(missing, "CNI plugins bridge, host-local and loopback (in "+strings.Join(cniDirs, " or ")+")")
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("missing %s; on Debian: apt-get install runc containernetworking-plugins iptables iproute2 (hack/tools/node-bin.sh does it as root)",
			strings.Join(missing, ", "))
	}
	return p, nil
}

func hasFiles(dir string, names ...string) bool {
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

// RepoRoot is the repository's root: the directory of the mutator's go.mod
// above the working directory, found as the e2e harness finds it.
func RepoRoot() (string, error) { return cluster.RepoRoot() }
