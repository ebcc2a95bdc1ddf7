package knative

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/mutator-dev/mutator/test/cluster/node"
)

// Version is the Knative Serving release hack/tools/knative/go.mod pins.
const Version = "v0.50.0"

// importPrefix is where Serving's commands live; manifests name their images
// ko://<importPrefix><command>.
const importPrefix = "knative.dev/serving/cmd/"

// commands are the Serving commands knative-bin.sh builds images of.
var commands = []string{"activator", "autoscaler", "controller", "queue", "webhook"}

// AssetsDir returns the folder hack/tools/knative-bin.sh fills:
// $KNATIVE_ASSETS, else <repository root>/.cache/knative/cluster, checking
// that it holds traefik, the images and the manifests.
func AssetsDir() (string, error) {
	dir := os.Getenv("KNATIVE_ASSETS")
	if dir == "" {
		root, err := node.RepoRoot()
		if err != nil {
			return "", fmt.Errorf("locating the Knative assets: %w; set KNATIVE_ASSETS", err)
		}
		dir = filepath.Join(root, ".cache", "knative", "cluster")
	}
	var missing []string
	for _, p := range []string{"traefik", filepath.Join("images", "index.json"), filepath.Join("config", "core")} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("the Knative assets in %s lack %s; run `bash hack/tools/knative-bin.sh %s` (or `make test-cluster`), or set KNATIVE_ASSETS",
			dir, strings.Join(missing, ", "), dir)
	}
	return dir, nil
}

// PublishFunc pushes img, the image of Serving's command name (e.g.
// "queue"), where the node can pull it from, and returns the reference
// Serving's manifests are to name it by (with its digest).
type PublishFunc func(ctx context.Context, name string, img v1.Image) (string, error)

// publishImages pushes each image of the OCI layout dir with publish and
// returns the references by ko:// import path. ko writes the images without
// names; each is told by its entrypoint, /ko-app/<command>.
func publishImages(ctx context.Context, dir string, publish PublishFunc) (map[string]string, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("opening the image layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	refs := map[string]string{}
	for _, d := range m.Manifests {
		if !d.MediaType.IsImage() {
			return nil, fmt.Errorf("%s: %s is a %s, want a single-platform image", dir, d.Digest, d.MediaType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading image %s of %s: %w", d.Digest, dir, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("reading the configuration of image %s: %w", d.Digest, err)
		}
		ep := cf.Config.Entrypoint
		if len(ep) != 1 || !strings.HasPrefix(ep[0], "/ko-app/") {
			return nil, fmt.Errorf("image %s has entrypoint %q, not ko's /ko-app/<command>", d.Digest, ep)
		}
		name := strings.TrimPrefix(ep[0], "/ko-app/")
		if !slices.Contains(commands, name) {
			return nil, fmt.Errorf("image %s is of command %q, not one of %v", d.Digest, name, commands)
		}
		if _, dup := refs["ko://"+importPrefix+name]; dup {
			return nil, fmt.Errorf("%s holds two images of %s; run hack/tools/knative-bin.sh again", dir, name)
		}
		ref, err := publish(ctx, name, img)
		if err != nil {
			return nil, fmt.Errorf("publishing the %s image: %w", name, err)
		}
		refs["ko://"+importPrefix+name] = ref
	}
	for _, c := range commands {
		if _, ok := refs["ko://"+importPrefix+c]; !ok {
			return nil, fmt.Errorf("%s has no image of %s; run hack/tools/knative-bin.sh again", dir, c)
		}
	}
	return refs, nil
}
