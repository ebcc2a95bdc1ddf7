package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/mutator-dev/mutator/test/cluster/node"
)

// functionLayout is the mutator function's image as `make image` builds
// it, an OCI layout in the binary folder: the host stage builds it (ko needs the module
// proxy), the tests push it to the mirror.
const functionLayout = "function-image"

// buildFunctionImage builds the function image as users do (`make image`:
// test/knative's cmd/image, ko with the repository's .ko.yaml, func's
// scaffolding around handle.go), pushing it to a registry served for the
// purpose on loopback (ko only pushes), and saves it in dir.
func buildFunctionImage(ctx context.Context, dir string) error {
	root, err := node.RepoRoot()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("serving a registry for ko: %w", err)
	}
	srv := &http.Server{Handler: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	// go-containerregistry (ko's) speaks plain HTTP to 127.0.0.1.
	repo := ln.Addr().String() + "/mutator"
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/image", "-repo", repo, "-platform", "linux/amd64", "-tags", "test")
	cmd.Dir = filepath.Join(root, "test", "knative")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return fmt.Errorf("building the function image (cd test/knative && go run ./cmd/image -repo %s): %w\n%s", repo, err, stderr)
	}
	ref, err := name.ParseReference(strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("ko's reference %q: %w", out, err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("reading %s back: %w", ref, err)
	}
	// An OCI layout keeps ko's manifest and layers byte for byte.
	path, err := layout.Write(filepath.Join(dir, functionLayout), empty.Index)
	if err != nil {
		return fmt.Errorf("writing the function image's layout: %w", err)
	}
	return path.AppendImage(img)
}

// pushFunctionImage pushes the function image the host stage built to the
// mirror, at functionImage:test, and returns its digest reference.
func (e *env) pushFunctionImage(ctx context.Context) (string, error) {
	index, err := layout.ImageIndexFromPath(filepath.Join(e.binDir, functionLayout))
	if err != nil {
		return "", fmt.Errorf("reading the function image: %w", err)
	}
	manifest, err := index.IndexManifest()
	if err != nil || len(manifest.Manifests) != 1 {
		return "", fmt.Errorf("the function image's layout holds no single image: %v", err)
	}
	img, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		return "", fmt.Errorf("reading the function image: %w", err)
	}
	if err := e.push(ctx, img, functionImage+":test"); err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	return functionImage + "@" + digest.String(), nil
}
