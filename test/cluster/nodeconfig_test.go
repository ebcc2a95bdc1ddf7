package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/test/cluster/image"
)

// nodeConfigImage is pulled by no other test. The origin's and the
// mirror's copies differ in /etc/image, so the running container itself
// says where its layer came from.
const nodeConfigImage = "nodeconfig"

// TestNodeConfig: with the hosts.toml files `mutator node-config` writes
// into containerd's config_path, a Pod the webhook never sees (its
// namespace opts out) naming the origin's image runs the mirror's copy:
// the mirror served the pull, the origin got no request. Three ways of
// saying the same thing: REGISTRY with the origin named in --hosts,
// REGISTRY alone through containerd's _default, and REGISTRY_MAP.
func TestNodeConfig(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	if err := e.pushNodeConfigImages(ctx); err != nil {
		t.Fatal(err)
	}
	certsDir := filepath.Join(e.kube.Dir(), "certs.d")
	caFile := filepath.Join(e.kube.Dir(), "nodeconfig-mirror-ca.crt")
	if err := os.WriteFile(caFile, e.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The control: with the harness's own configuration (the origin's
	// hosts.toml names only the origin), the same Pod runs the origin's
	// copy, so what follows is the generated files' doing.
	t.Run("control without node-config", func(t *testing.T) {
		e.pullOutsideWebhook(t, "control", "origin", true)
	})
	for i, tc := range []struct {
		name string
		env  []string
		args []string
		// dropOrigin removes the harness's own hosts.toml for the
		// origin, which would otherwise win over _default.
		dropOrigin bool
		files      []string // written, relative to certs.d
	}{
		{name: "REGISTRY and --hosts", env: []string{"REGISTRY=" + mirrorRegistry}, args: []string{"--hosts=" + originHost},
			files: []string{"_default/hosts.toml", originHost + "/hosts.toml", mirrorHost + "/hosts.toml"}},
		{name: "REGISTRY through _default", env: []string{"REGISTRY=" + mirrorRegistry}, dropOrigin: true,
			files: []string{"_default/hosts.toml", mirrorHost + "/hosts.toml"}},
		{name: "REGISTRY_MAP", env: []string{"REGISTRY_MAP=" + originHost + "=" + mirrorRegistry, "IGNORED_REGISTRIES=registry.k8s.io"},
			files: []string{originHost + "/hosts.toml", mirrorHost + "/hosts.toml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restore, err := snapshotDir(certsDir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := restore(); err != nil {
					t.Errorf("restoring %s: %v", certsDir, err)
				}
			})
			if tc.dropOrigin {
				if err := os.RemoveAll(filepath.Join(certsDir, originHost)); err != nil {
					t.Fatal(err)
				}
			}
			args := append([]string{"node-config", "--containerd-dir", certsDir, "--ca-file", caFile}, tc.args...)
			stdout := e.runNodeConfig(t, tc.env, args...)
			for _, f := range tc.files {
				path := filepath.Join(certsDir, f)
				if !strings.Contains(stdout, "wrote "+path+"\n") {
					t.Errorf("node-config did not write %s:\n%s", path, stdout)
				}
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s:\n%s", f, data)
			}
			e.pullOutsideWebhook(t, fmt.Sprintf("nodeconfig%d", i), "mirror", i == 0)
		})
	}
}

// pushNodeConfigImages pushes nodeConfigImage to the origin and the
// mirror, each copy naming its registry in /etc/image.
func (e *env) pushNodeConfigImages(ctx context.Context) error {
	app, err := os.ReadFile(filepath.Join(e.binDir, "app"))
	if err != nil {
		return fmt.Errorf("reading the app binary: %w", err)
	}
	for ref, where := range map[string]string{originRef(nodeConfigImage): "origin", mirrorRef(nodeConfigImage): "mirror"} {
		img, err := image.New([]image.File{
			{Path: "app", Content: app, Mode: 0o755},
			{Path: "etc/image", Content: []byte(nodeConfigImage + " from the " + where + " " + e.nonce + "\n"), Mode: 0o644},
		}, "/app")
		if err != nil {
			return fmt.Errorf("building %s: %w", ref, err)
		}
		if err := e.push(ctx, img, ref); err != nil {
			return err
		}
	}
	return nil
}

// runNodeConfig runs the built mutator with only env's settings and
// returns its standard output; its standard error (the notes) is logged.
func (e *env) runNodeConfig(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(e.binDir, "mutator"), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mutator %s (%s): %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), strings.Join(env, " "), err, stdout.String(), stderr.String())
	}
	t.Logf("mutator %s (%s):\n%s%s", strings.Join(args, " "), strings.Join(env, " "), stdout.String(), stderr.String())
	return stdout.String()
}

// pullOutsideWebhook runs a Pod naming the origin's image in a namespace
// the webhook skips, and checks that from ("mirror" or "origin") served
// it: the container prints that copy's /etc/image, that registry answered
// the manifest (and, on the first pull, the layers), the other got no
// request for the image. The mirror serves only pullUser.
func (e *env) pullOutsideWebhook(t *testing.T, name, from string, firstPull bool) {
	t.Helper()
	ctx := t.Context()
	client := e.kube.Client()
	ns := e.newNamespace(t, "nodeconfig", true)
	// The kubelet picks a Pod's credentials by the image's own registry,
	// and containerd gives them to whichever host asks: a Pod that names
	// the origin needs the mirror's credentials under the origin's name.
	secret, err := originKeyedSecret(e.pullPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the pull secret: %v", err)
	}
	originMark, mirrorMark := e.origin.Count(), e.mirror.Count()

	spec := appPodSpec(originRef(nodeConfigImage), "", "-print=/etc/image")
	spec.Containers[0].ImagePullPolicy = corev1.PullAlways
	spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: secret.Name}}
	began := time.Now()
	pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	if got := pod.Spec.Containers[0].Image; got != originRef(nodeConfigImage) {
		t.Fatalf("the Pod was admitted with image %s: the webhook changed it; this test needs a Pod it does not see", got)
	}
	wait(t, 2*time.Minute, "the Pod to run", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return running(p), nil
	})
	t.Logf("Pod %s/%s running %s after its creation, image %s (%s)", ns, name, time.Since(began).Round(time.Millisecond),
		pod.Status.ContainerStatuses[0].Image, pod.Status.ContainerStatuses[0].ImageID)

	wantLog := nodeConfigImage + " from the " + from + " " + e.nonce
	wait(t, 30*time.Second, "the container's /etc/image in its log", func(ctx context.Context) (bool, error) {
		log, err := e.podLog(ctx, ns, name)
		return err == nil && strings.Contains(log, nodeConfigImage+" from the "), nil
	})
	if log, err := e.podLog(ctx, ns, name); err != nil {
		t.Error(err)
	} else if !strings.Contains(log, wantLog) {
		t.Errorf("the container does not run the %s's copy; its log:\n%s", from, log)
	} else {
		t.Logf("container log: %s", strings.TrimSpace(log))
	}

	originReqs := repoRequests(e.origin.Since(originMark), "team/"+nodeConfigImage)
	mirrorReqs := repoRequests(e.mirror.Since(mirrorMark), mirrorRepo(nodeConfigImage))
	t.Logf("the origin's log for team/%s:\n%s", nodeConfigImage, describe(originReqs))
	t.Logf("the mirror's log for %s:\n%s", mirrorRepo(nodeConfigImage), describe(mirrorReqs))
	served, other, user := mirrorReqs, originReqs, pullUser
	if from == "origin" {
		// The origin takes anyone: containerd sends credentials only when
		// challenged, so its requests carry no user.
		served, other, user = originReqs, mirrorReqs, ""
	}
	if len(other) > 0 {
		t.Errorf("the registry that should not be asked got %d requests:\n%s", len(other), describe(other))
	}
	if n := pulls(served, user); n == 0 {
		t.Errorf("the %s served no manifest of %s to %s", from, nodeConfigImage, user)
	}
	if n := blobPulls(served, user); firstPull && n == 0 {
		t.Errorf("the %s served no blob of %s to %s on the first pull", from, nodeConfigImage, user)
	}
	if from == "mirror" {
		if reqs := e.origin.Since(originMark); len(reqs) > 0 {
			t.Errorf("the origin registry got %d requests, want 0:\n%s", len(reqs), describe(reqs))
		}
	}
}

// originKeyedSecret holds pullUser's credentials for the mirror under the
// origin's host.
func originKeyedSecret(password string) (*corev1.Secret, error) {
	auth := base64.StdEncoding.EncodeToString([]byte(pullUser + ":" + password))
	config, err := json.Marshal(map[string]any{"auths": map[string]any{
		originHost: map[string]string{"username": pullUser, "password": password, "auth": auth},
	}})
	if err != nil {
		return nil, fmt.Errorf("encoding the pull secret: %w", err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "origin-named-cred"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: config},
	}, nil
}

// snapshotDir records every file under dir and returns a function that
// puts dir back as it was, so the other tests keep the harness's
// registry configuration.
func snapshotDir(dir string) (func() error, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		files[path] = data
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	return func() error {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		for path, data := range files {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return err
			}
		}
		return nil
	}, nil
}
