package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// modulePath identifies this repository's go.mod when looking for the repo root.
const modulePath = "github.com/mutator-dev/mutator"

// Binary names expected in the assets directory.
const (
	etcdBinary      = "etcd"
	apiserverBinary = "kube-apiserver"
	kubectlBinary   = "kubectl"
)

// AssetsDir returns the directory holding the etcd, kube-apiserver and kubectl
// binaries: $KUBE_ASSETS, else $KUBEBUILDER_ASSETS (so an envtest setup works
// unchanged), else <repo root>/.cache/kube-bin, where `make test-bin` puts them.
// It fails, saying how to get them, if any binary is missing.
func AssetsDir() (string, error) {
	dir, source := os.Getenv("KUBE_ASSETS"), "$KUBE_ASSETS"
	if dir == "" {
		dir, source = os.Getenv("KUBEBUILDER_ASSETS"), "$KUBEBUILDER_ASSETS"
	}
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", fmt.Errorf("locating control-plane binaries: %w; set KUBE_ASSETS", err)
		}
		dir, source = filepath.Join(root, ".cache", "kube-bin"), "the default location"
	}
	if err := checkAssets(dir); err != nil {
		return "", assetsError(dir, source, err)
	}
	return dir, nil
}

// assetsError says which binaries are missing from dir (found via source)
// and how to get them.
func assetsError(dir, source string, err error) error {
	return fmt.Errorf("control-plane binaries not usable in %s (%s): %w; "+
		"run `make test-bin` (hack/tools/build.sh %s) or set KUBE_ASSETS to a directory holding %s, %s and %s",
		dir, source, err, dir, etcdBinary, apiserverBinary, kubectlBinary)
}

// checkAssets reports every missing or non-executable binary at once, so one
// run tells the user everything that is wrong.
func checkAssets(dir string) error {
	var problems []string
	for _, name := range []string{etcdBinary, apiserverBinary, kubectlBinary} {
		fi, err := os.Stat(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			problems = append(problems, name)
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s (%v)", name, err))
		case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
			problems = append(problems, name+" (not an executable file)")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("missing %s", strings.Join(problems, ", "))
	}
	return nil
}

// RepoRoot walks up from the working directory (the package directory under
// `go test`) to the go.mod declaring modulePath. The working directory is used
// rather than runtime.Caller because -trimpath erases source paths.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getting working directory: %w", err)
	}
	for {
		if mod, err := moduleOf(filepath.Join(dir, "go.mod")); err == nil && mod == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// moduleOf returns the module path declared in a go.mod file.
func moduleOf(goMod string) (string, error) {
	f, err := os.Open(goMod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			if i := strings.Index(rest, "//"); i >= 0 {
				rest = rest[:i]
			}
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", goMod, err)
	}
	return "", fmt.Errorf("%s has no module line", goMod)
}
