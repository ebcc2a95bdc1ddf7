// Package image tests the function image `make image` builds with ko: it
// pushes it to a real OCI registry on loopback, pulls it back and checks
// what a cluster would run.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/mutator-dev/mutator/test/knative/internal/image"
	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

const (
	buildTimeout = 20 * time.Minute
	startTimeout = 60 * time.Second
	// maxImageBytes bounds the compressed image: a static Go binary and a
	// few base files. A source tree or a distro base would exceed it.
	maxImageBytes = 40 << 20
)

func TestImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), buildTimeout)
	defer cancel()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}

	t.Run(".ko.yaml names the generated base", func(t *testing.T) {
		base, err := image.ConfiguredBase(root)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := image.Base()
		if err != nil {
			t.Fatal(err)
		}
		digest, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(base, "@"+digest.String()) {
			t.Errorf(".ko.yaml defaultBaseImage = %s, the generator writes @%s", base, digest)
		}
		again, _ := image.Base()
		if d2, _ := again.Digest(); d2 != digest {
			t.Errorf("base digest not reproducible: %s then %s", digest, d2)
		}
	})

	// A real OCI registry (go-containerregistry's) on loopback.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	repoName := host + "/mutator/function"

	start := time.Now()
	ref, out, err := image.Build(ctx, image.Options{Repo: repoName, Platforms: "linux/amd64", Tags: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ko build and push: %v, %s", time.Since(start).Round(time.Millisecond), ref)
	digestRef, err := name.NewDigest(ref)
	if err != nil {
		t.Fatalf("ko printed %q, not a digest reference: %v\n%s", ref, err, out)
	}

	// Pull it back, by tag, as a cluster would.
	tagRef, err := name.NewTag(repoName + ":test")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(tagRef, remote.WithContext(ctx), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatalf("pulling %s: %v", tagRef, err)
	}
	desc, err := remote.Get(tagRef, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != digestRef.DigestStr() {
		t.Errorf("tag %s resolves to %s, ko pushed %s", tagRef, desc.Digest, digestRef.DigestStr())
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("config: non-root, entrypoint, env", func(t *testing.T) {
		if cf.OS != "linux" || cf.Architecture != "amd64" {
			t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
		}
		user, _, _ := strings.Cut(cf.Config.User, ":")
		if uid, err := strconv.Atoi(user); err != nil || uid == 0 {
			// Numeric, so that runAsNonRoot can check it without /etc/passwd.
			t.Errorf("user %q, want a numeric non-root uid", cf.Config.User)
		} else if user != image.NonRoot {
			t.Errorf("user %q, want %s (nonroot)", cf.Config.User, image.NonRoot)
		}
		if len(cf.Config.Entrypoint) != 1 || !strings.HasPrefix(cf.Config.Entrypoint[0], "/ko-app/") {
			t.Errorf("entrypoint %q, want ko's single /ko-app/<binary>", cf.Config.Entrypoint)
		}
		// No configuration baked in (func's host builder bakes run.envs,
		// METRICS_PORT=9090 included): the Service's env is the only one.
		for _, e := range cf.Config.Env {
			k, _, _ := strings.Cut(e, "=")
			if !slices.Contains([]string{"PATH", "SSL_CERT_FILE", "KO_DATA_PATH"}, k) {
				t.Errorf("image env %s: configuration belongs in the Service, not the image", e)
			}
		}
		t.Logf("image config: user %s, entrypoint %v, env %v", cf.Config.User, cf.Config.Entrypoint, cf.Config.Env)
	})

	files, size := imageFiles(t, img)
	digest, _ := img.Digest()
	t.Logf("image %s: %.1f MB compressed, %d files", digest, float64(size)/1e6, len(files))

	t.Run("no source tree, small", func(t *testing.T) {
		for f := range files {
			if strings.HasSuffix(f, ".go") || path.Base(f) == "go.mod" || path.Base(f) == "func.yaml" || strings.HasPrefix(f, "func/") {
				t.Errorf("image contains source file %s", f)
			}
		}
		if size > maxImageBytes {
			t.Errorf("image is %d bytes compressed, want at most %d", size, maxImageBytes)
		}
	})

	t.Run("the binary from the layers answers a review", func(t *testing.T) {
		entry := strings.TrimPrefix(cf.Config.Entrypoint[0], "/")
		data, ok := files[entry]
		if !ok {
			t.Fatalf("entrypoint %s not in the layers", entry)
		}
		bin := filepath.Join(t.TempDir(), "function")
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		answerReview(t, root, bin)
	})

	t.Run("digest reproduces", func(t *testing.T) {
		again, _, err := image.Build(ctx, image.Options{Repo: repoName, Platforms: "linux/amd64", Tags: "again"})
		if err != nil {
			t.Fatal(err)
		}
		d2, err := name.NewDigest(again)
		if err != nil {
			t.Fatal(err)
		}
		if d2.DigestStr() != digestRef.DigestStr() {
			t.Errorf("second build pushed %s, first %s", d2.DigestStr(), digestRef.DigestStr())
		}
	})
}

// imageFiles flattens the image's layers (later layers win) and returns
// the regular files by path, with their contents, and the compressed size
// of config and layers.
func imageFiles(t *testing.T, img v1.Image) (map[string][]byte, int64) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	size := m.Config.Size
	files := map[string][]byte{}
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		size += s
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("reading layer: %v", err)
			}
			p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
			if h.Typeflag != tar.TypeReg {
				files[p+"/"] = nil // directories and links count as present
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[p] = data
		}
		rc.Close()
	}
	return files, size
}

// answerReview runs the extracted binary and posts the sample review.
func answerReview(t *testing.T, root, bin string) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(root, "test", "testdata", "pod-review.json"))
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"LISTEN_ADDRESS=" + addr, "METRICS_PORT=0", "REGISTRY=registry.example.com/mirror"}
	var outBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("function output:\n%s", outBuf.String())
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := client.Post("http://"+addr+"/mutate", "application/json", bytes.NewReader(body))
		if err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got admissionv1.AdmissionReview
			if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &got) != nil || got.Response == nil {
				t.Fatalf("POST /mutate = %d %s", resp.StatusCode, data)
			}
			if !got.Response.Allowed || !bytes.Contains(got.Response.Patch, []byte("registry.example.com/mirror/")) {
				t.Errorf("review answered without the expected image rewrite: %+v (patch %s)", got.Response, got.Response.Patch)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer %v after exec: %v", startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
