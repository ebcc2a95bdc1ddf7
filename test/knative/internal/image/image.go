// Package image builds the mutator function's container image without
// Docker: ko (pinned in hack/tools/ko) compiles func's scaffolding of the
// repository root onto a base image given by digest in .ko.yaml, which this
// package writes reproducibly into ko's local cache (KOCACHE) so that ko
// never fetches it. `make image` and test/knative/image share this code.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mutator-dev/mutator/test/knative/internal/fnbuild"
	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

// KoVersion is the ko release hack/tools/ko/go.mod pins.
const KoVersion = "v0.19.1"

// NonRoot is the user the base image declares (distroless' "nonroot").
const NonRoot = "65532"

// basePlatforms are the platforms the base index covers.
var basePlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// baseLayer is a tar with the files a static, non-root Go binary expects:
// passwd and group naming root and nonroot, nonroot's home and /tmp. Fixed
// modes, owners and a zero mtime make it byte-for-byte reproducible; it is
// stored uncompressed so that no compressor version can change its digest.
func baseLayer() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name     string
		mode     int64
		uid, gid int
		body     string
	}{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, body: "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{name: "etc/group", mode: 0o644, body: "root:x:0:\nnonroot:x:65532:\n"},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: 65532, gid: 65532},
		{name: "tmp/", mode: 0o1777},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("writing base layer: %w", err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			return nil, fmt.Errorf("writing base layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing base layer: %w", err)
	}
	return buf.Bytes(), nil
}

// Base returns the base image index: one image per basePlatforms entry,
// all with baseLayer, user NonRoot and no other configuration.
func Base() (v1.ImageIndex, error) {
	data, err := baseLayer()
	if err != nil {
		return nil, err
	}
	layer := static.NewLayer(data, types.OCIUncompressedLayer)
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range basePlatforms {
		img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layer)
		if err != nil {
			return nil, fmt.Errorf("base image: %w", err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("base image config: %w", err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = p.OS, p.Architecture
		cf.Config.User = NonRoot + ":" + NonRoot
		cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, fmt.Errorf("base image config: %w", err)
		}
		platform := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	return idx, nil
}

// WriteBase puts the base index into the OCI layout kocache/img, where ko
// looks a base image given by digest up before fetching it, and returns
// its digest.
func WriteBase(kocache string) (v1.Hash, error) {
	idx, err := Base()
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("base digest: %w", err)
	}
	dir := filepath.Join(kocache, "img")
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return v1.Hash{}, fmt.Errorf("creating OCI layout %s: %w", dir, err)
		}
	}
	if have, err := p.ImageIndex(); err == nil {
		if m, err := have.IndexManifest(); err == nil {
			for _, d := range m.Manifests {
				if d.Digest == digest {
					return digest, nil // already there
				}
			}
		}
	}
	// ko looks every manifest up by digest in the layout's top-level
	// index.json, the per-platform images as well as the index.
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("base index: %w", err)
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("base image %s: %w", d.Digest, err)
		}
		if err := p.AppendImage(img, layout.WithPlatform(*d.Platform)); err != nil {
			return v1.Hash{}, fmt.Errorf("writing base image to %s: %w", dir, err)
		}
	}
	if err := p.AppendIndex(idx); err != nil {
		return v1.Hash{}, fmt.Errorf("writing base image to %s: %w", dir, err)
	}
	return digest, nil
}

// ConfiguredBase returns the defaultBaseImage of the repository's .ko.yaml.
func ConfiguredBase(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, ".ko.yaml"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^defaultBaseImage:\s*(\S+)`).FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf(".ko.yaml has no defaultBaseImage")
	}
	return string(m[1]), nil
}

// Ko returns the path of the pinned ko binary, building it into the cache
// from hack/tools/ko when absent.
func Ko(ctx context.Context, root string) (string, error) {
	cache, err := repo.CacheDir("bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "ko-"+KoVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin+".tmp", "github.com/google/ko")
	cmd.Dir = filepath.Join(root, "hack", "tools", "ko")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ko %s: %w\n%s", KoVersion, err, out)
	}
	return bin, os.Rename(bin+".tmp", bin)
}

// Options says what Build makes.
type Options struct {
	// Repo is KO_DOCKER_REPO: a registry repository to push to, or
	// "ko.local" for the local Docker daemon.
	Repo string
	// Platforms, e.g. "linux/amd64,linux/arm64"; empty means .ko.yaml's.
	Platforms string
	// Tags to push; empty means "latest".
	Tags string
}

// Build writes the base image into the cache, func's scaffolding of the
// repository root into .cache/knative/image/scaffold and runs ko there
// with the repository's .ko.yaml. It returns the pushed reference with its
// digest and ko's output.
func Build(ctx context.Context, opts Options) (ref, output string, err error) {
	root, err := repo.Root()
	if err != nil {
		return "", "", err
	}
	ko, err := Ko(ctx, root)
	if err != nil {
		return "", "", err
	}
	kocache, err := repo.CacheDir("ko")
	if err != nil {
		return "", "", err
	}
	digest, err := WriteBase(kocache)
	if err != nil {
		return "", "", err
	}
	if base, err := ConfiguredBase(root); err != nil {
		return "", "", err
	} else if !strings.HasSuffix(base, "@"+digest.String()) && os.Getenv("KO_DEFAULTBASEIMAGE") == "" {
		return "", "", fmt.Errorf(".ko.yaml's defaultBaseImage %s is not the base this package writes (@%s): update .ko.yaml", base, digest)
	}
	work, err := repo.CacheDir("image")
	if err != nil {
		return "", "", err
	}
	scaffold := filepath.Join(work, "scaffold")
	if err := fnbuild.Scaffold(root, scaffold); err != nil {
		return "", "", err
	}
	refs := filepath.Join(work, "image-refs")
	args := []string{"build", "--bare", "--sbom=none", "--image-refs=" + refs}
	if opts.Platforms != "" {
		args = append(args, "--platform="+opts.Platforms)
	}
	tags := opts.Tags
	if tags == "" {
		tags = "latest"
	}
	args = append(args, "--tags="+tags, ".")
	cmd := exec.CommandContext(ctx, ko, args...)
	cmd.Dir = scaffold
	cmd.Env = append(os.Environ(),
		"KO_DOCKER_REPO="+opts.Repo,
		"KO_CONFIG_PATH="+filepath.Join(root, ".ko.yaml"),
		"KOCACHE="+kocache,
		"GOWORK=off",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", string(out), fmt.Errorf("ko build: %w\n%s", err, out)
	}
	data, err := os.ReadFile(refs)
	if err != nil {
		return "", string(out), fmt.Errorf("reading ko's image reference: %w", err)
	}
	return strings.TrimSpace(string(data)), string(out), nil
}
