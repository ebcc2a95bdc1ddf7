package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/mutator-dev/mutator/test/cluster/image"
	"github.com/mutator-dev/mutator/test/cluster/node"
)

// sandboxRef names the pause image; containerd has it imported and pinned,
// so no registry ever serves it.
const sandboxRef = "sandbox.test/pause:1"

// appImages each hold the app binary plus a file naming the image and the
// run: one unique layer each, so a pull that succeeds had to fetch it. A
// test that counts pulls has an image no other test pulls.
var appImages = []string{"app", "locked", "restart", "dns", knativeImage, timedImage, functionAppImage}

// dataImage is the image volume's image: one file, no program.
const dataImage = "data"

// greetingPath is where the data image's file is; mounted at /data.
const greetingPath = "greeting.txt"

// greeting is the data image's file content for this run.
func (e *env) greeting() string { return "hello from the image volume, run " + e.nonce }

// buildBinaries compiles the mutator and the copier (from the repository
// root, with the mutator's own module) and the image programs (cmd/app, cmd/pause) into
// dir, and builds the function image there (buildFunctionImage). It runs in the host stage, where the module proxy is reachable.
func buildBinaries(ctx context.Context, dir string) error {
	root, err := node.RepoRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, b := range []struct{ dir, pkg, out string }{
		{root, "./cmd/mutator", "mutator"},
		{root, "./cmd/copier", "copier"}, // TestMirrorCopy's copier
		{".", "./cmd/app", "app"},
		{".", "./cmd/pause", "pause"},
	} {
		if err := image.BuildStatic(ctx, b.dir, b.pkg, filepath.Join(dir, b.out)); err != nil {
			return err
		}
	}
	return buildFunctionImage(ctx, dir)
}

// pushImages builds the test images and pushes each to the origin, under
// the path Pods name, and to the mirror, under the path the mutator
// rewrites that to.
func pushImages(ctx context.Context, e *env) error {
	app, err := os.ReadFile(filepath.Join(e.binDir, "app"))
	if err != nil {
		return fmt.Errorf("reading the app binary: %w", err)
	}
	images := map[string][]image.File{
		dataImage: {{Path: greetingPath, Content: []byte(e.greeting() + "\n"), Mode: 0o644}},
	}
	for _, repo := range appImages {
		images[repo] = []image.File{
			{Path: "app", Content: app, Mode: 0o755},
			{Path: "etc/image", Content: []byte(repo + " " + e.nonce + "\n"), Mode: 0o644},
		}
	}
	for repo, files := range images {
		var entrypoint []string
		if repo != dataImage {
			entrypoint = []string{"/app"}
		}
		img, err := image.New(files, entrypoint...)
		if err != nil {
			return fmt.Errorf("building image %s: %w", repo, err)
		}
		if err := e.push(ctx, img, originRef(repo)); err != nil {
			return err
		}
		if err := e.push(ctx, img, mirrorRef(repo)); err != nil {
			return err
		}
	}
	return nil
}

// push pushes img to ref, at the origin anonymously or at the mirror as
// pushUser, trusting only the test CA.
func (e *env) push(ctx context.Context, img v1.Image, ref string) error {
	user, password := "", ""
	if strings.HasPrefix(ref, mirrorHost+"/") {
		user, password = pushUser, e.pushPassword
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool(), MinVersion: tls.VersionTLS12}}
	defer transport.CloseIdleConnections()
	return image.Push(ctx, img, ref, transport, user, password)
}

// writeSandboxImage writes the pause image as a tarball for containerd.
func writeSandboxImage(binDir, path string) error {
	pause, err := os.ReadFile(filepath.Join(binDir, "pause"))
	if err != nil {
		return fmt.Errorf("reading the pause binary: %w", err)
	}
	img, err := image.New([]image.File{{Path: "pause", Content: pause, Mode: 0o755}}, "/pause")
	if err != nil {
		return fmt.Errorf("building the sandbox image: %w", err)
	}
	return image.WriteTarball(img, sandboxRef, path)
}
