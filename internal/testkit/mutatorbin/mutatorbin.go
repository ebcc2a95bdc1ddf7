// Package mutatorbin builds the mutator binary from this repository for the
// tests that run it as a process (end to end, soak).
package mutatorbin

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build builds ./cmd/mutator from the module root into dir and returns the
// binary's path.
func Build(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locating go.mod: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(dir, "mutator")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/mutator")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the mutator in %s: %w\n%s", root, err, out)
	}
	return bin, nil
}
