// Package repo locates the mutator repository that these tests check.
package repo

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/mod/modfile"
)

// ModulePath is the module path of the repository root (the function).
const ModulePath = "github.com/mutator-dev/mutator"

// Root returns the repository root: the closest ancestor of the working
// directory (the test package's directory under `go test`) whose go.mod
// declares ModulePath. Walking up rather than hard-coding "../.." keeps the
// helper correct for every package depth in this module.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getting working directory: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		switch {
		case err == nil:
			if modfile.ModulePath(data) == ModulePath {
				return dir, nil
			}
		case !errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("reading %s: %w", filepath.Join(dir, "go.mod"), err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod declaring module %s above the working directory", ModulePath)
		}
		dir = parent
	}
}

// ModuleDir returns the directory and version of a module in this test
// module's build list (`go list -m`), so tests read files such as func's
// JSON schema from exactly the version go.mod pins.
func ModuleDir(module string) (dir, version string, err error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}\t{{.Version}}", module).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", "", fmt.Errorf("go list -m %s: %w: %s", module, err, ee.Stderr)
		}
		return "", "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	dir, version, ok := strings.Cut(strings.TrimSpace(string(out)), "\t")
	if !ok || dir == "" {
		return "", "", fmt.Errorf("go list -m %s: module not downloaded (output %q)", module, out)
	}
	return dir, version, nil
}

// CacheDir returns <repository root>/.cache/knative/<name>, creating it.
// .cache is git-ignored; everything in it is rebuilt by the tests when it
// is missing, so a clean clone needs nothing but the module proxy.
func CacheDir(name string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "knative", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache directory: %w", err)
	}
	return dir, nil
}
