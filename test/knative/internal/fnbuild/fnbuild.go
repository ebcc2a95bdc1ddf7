// Package fnbuild builds the mutator function binary the way func's host
// builder does (knative.dev/func/pkg/oci): func's Go scaffolding written
// around the repository root with func's own code, then `go build` with
// CGO_ENABLED=0 for the target platform.
package fnbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	fn "knative.dev/func/pkg/functions"
	"knative.dev/func/pkg/scaffolding"
)

// Scaffold writes func's scaffolding for the function at root into out,
// with the template repository embedded in func, as func's builders do.
// out/f is a symlink back to root.
func Scaffold(root, out string) error {
	f, err := fn.NewFunction(root)
	if err != nil {
		return fmt.Errorf("loading function at %s: %w", root, err)
	}
	if !f.Initialized() {
		return fmt.Errorf("%s has no func.yaml", root)
	}
	embedded, err := fn.NewRepository("", "") // "" = func's embedded templates
	if err != nil {
		return fmt.Errorf("loading func's embedded templates: %w", err)
	}
	if err := os.RemoveAll(out); err != nil {
		return fmt.Errorf("clearing %s: %w", out, err)
	}
	if err := scaffolding.Write(out, f.Root, f.Runtime, f.Invoke, embedded.FS()); err != nil {
		return fmt.Errorf("writing func's scaffolding: %w", err)
	}
	return nil
}

// Build scaffolds the function at root into a directory under work and
// builds it for goos/goarch into bin, with the environment func's host
// builder pegs (CGO_ENABLED, GOOS, GOARCH) over the caller's.
func Build(ctx context.Context, root, work, bin, goos, goarch string) error {
	out := filepath.Join(work, "scaffold")
	if err := Scaffold(root, out); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = out
	// GOWORK=off: a go.work of the caller must not leak into the scaffold.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build in %s: %w\n%s", out, err, b)
	}
	return nil
}
