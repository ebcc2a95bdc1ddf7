package cluster

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/cluster/image"
	"github.com/mutator-dev/mutator/test/cluster/node"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

const (
	// copierUser is the user the copier names to the origin
	// (COPY_ORIGIN_CREDENTIALS): the origin takes anyone, and records the
	// name, so its log tells the copier's reads from anything else's.
	copierUser = "copier"
	// copyBeing is what a review denied with MIRROR_MISSING=copy says.
	copyBeing = "being copied"
	// copyNegativeTTLEnv sets TestMirrorCopy's MIRROR_NEGATIVE_CACHE_TTL
	// (default 1s; with MIRROR_MISSING=copy the mutator caps it at 5s).
	copyNegativeTTLEnv = "MUTATOR_COPY_NEGATIVE_TTL"
	// copySucceeded is function/copier's TypeSucceeded (this module does
	// not import function/copier, which would need CloudEvents' SDK).
	copySucceeded = "dev.mutator.mirror.copy.succeeded"
)

// copyResult is function/copier's Result, as the copier sends it to K_SINK.
type copyResult struct {
	Source     string         `json:"source"`
	Target     string         `json:"target"`
	Digest     string         `json:"digest"`
	MediaType  string         `json:"mediaType"`
	Manifests  int            `json:"manifests"`
	Bytes      int64          `json:"bytes"`
	Uploaded   int64          `json:"uploaded"`
	DurationMs int64          `json:"durationMs"`
	Reason     string         `json:"reason"`
	Error      string         `json:"error"`
	Referrers  []copyReferrer `json:"referrers"`
}

// copyReferrer is function/copier's Referrer.
type copyReferrer struct {
	Digest  string `json:"digest"`
	Subject string `json:"subject"`
	Tag     string `json:"tag"`
}

// copyEvent is one CloudEvent the copier sent to K_SINK.
type copyEvent struct {
	received time.Time
	typ      string
	result   copyResult
}

// TestMirrorCopy: with MIRROR_CHECK=true and MIRROR_MISSING=copy, a
// Deployment naming an image only the origin has converges. Its first Pod
// creates are refused as "being copied", and the first refusal asks the
// copier (cmd/copier, a process here, as the mutator is) to copy the image;
// the copier copies the multi-platform index and its cosign signature tag
// from the origin into the mirror, and the ReplicaSet controller's retry,
// once the mutator's negative cache entry has expired, is admitted: the Pod
// names the mirror and the kubelet pulls it from there. The origin serves
// only the copier. Figures: Deployment create to Available, refused
// creates (MUTATOR_COPY_NEGATIVE_TTL sets the mutator's
// MIRROR_NEGATIVE_CACHE_TTL, 1s by default).
func TestMirrorCopy(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()
	repo := "copied-" + randomHex(4) // a repository the mirror never had
	src, dst := originRef(repo), mirrorRef(repo)
	pushed := e.pushCopyImage(t, repo)
	if _, err := e.headMirror(ctx, dst); err == nil {
		t.Fatalf("the mirror has %s before the test", dst)
	}

	sink := startCopySink(t)
	dir := filepath.Join(node.WorkDir(), "copy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copierURL := e.startCopier(t, dir, sink.url)
	e.startCopyMutator(t, dir, copierURL)

	ns := e.newNamespace(t, "copy", false)
	originMark, mirrorMark := e.origin.Count(), e.mirror.Count()
	labels := map[string]string{"app": "copy"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "copied"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       appPodSpec(src, "", "-print=/etc/image"),
			},
		},
	}
	// When the first Pod is admitted (creationTimestamp has seconds only).
	watcher, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "app=copy"})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Stop()
	admittedAt := make(chan time.Time, 1)
	go func() {
		for ev := range watcher.ResultChan() {
			if ev.Type == watch.Added {
				admittedAt <- time.Now()
				return
			}
		}
	}()
	began := time.Now()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the Deployment: %v", err)
	}
	waitFor(t, 3*time.Minute, "the Deployment to be Available", func(ctx context.Context) (bool, string) {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable {
				state := fmt.Sprintf("Available=%s (%s), %d available", c.Status, c.Reason, d.Status.AvailableReplicas)
				return c.Status == corev1.ConditionTrue && d.Status.AvailableReplicas == 1 && d.Status.ObservedGeneration >= d.Generation, state
			}
		}
		return false, "no Available condition yet"
	})
	available := time.Since(began)
	// The registries' logs up to now: the HEADs below are the test's own.
	originReqs := repoRequests(e.origin.Since(originMark), "team/"+repo)
	mirrorReqs := repoRequests(e.mirror.Since(mirrorMark), mirrorRepo(repo))

	// The Pod, as the API server stored it: the mirror's image, pulled.
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=copy"})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if img := p.Spec.Containers[0].Image; img != dst {
			t.Errorf("Pod %s was admitted with image %s, want %s: provenance relaxed", p.Name, img, dst)
		}
		if running(p) {
			pod = p
		}
	}
	if pod == nil {
		t.Fatalf("no running Pod among %d", len(pods.Items))
	}
	checkMutated(t, pod, repo, "")
	if id := pod.Status.ContainerStatuses[0].ImageID; !strings.HasSuffix(id, "@"+pushed.index.String()) {
		t.Errorf("Pod %s runs image %s, want the origin's index %s", pod.Name, id, pushed.index)
	}
	wait(t, 30*time.Second, "the container's /etc/image in its log", func(ctx context.Context) (bool, error) {
		log, err := e.podLog(ctx, ns, pod.Name)
		return err == nil && strings.Contains(log, pushed.content+" amd64"), nil
	})

	// The refused creates: the ReplicaSet's FailedCreate events.
	refused := e.refusedCreates(t, ns, src, dst)
	var admitted time.Duration
	select {
	case at := <-admittedAt:
		admitted = at.Sub(began)
	default:
		t.Errorf("the Pod watch saw no Pod added")
	}

	// The copier: its result event and its log.
	results := sink.events()
	var copied *copyResult
	for _, ev := range results {
		t.Logf("copier result %s at +%s: %+v", ev.typ, ev.received.Sub(began).Round(time.Millisecond), ev.result)
		if ev.typ == copySucceeded && ev.result.Target == dst && copied == nil {
			copied = &ev.result
		}
	}
	if copied == nil {
		t.Fatalf("the copier sent no %s event for %s (got %d events)", copySucceeded, dst, len(results))
	}
	if copied.Source != src || copied.Digest != pushed.index.String() {
		t.Errorf("copy result: %s@%s from %s, want %s from %s", copied.Target, copied.Digest, copied.Source, pushed.index, src)
	}
	if !slices.ContainsFunc(copied.Referrers, func(r copyReferrer) bool {
		return r.Tag == pushed.sigTag && r.Digest == pushed.sig.String()
	}) {
		t.Errorf("the copy result lists no signature at tag %s (%s): %+v", pushed.sigTag, pushed.sig, copied.Referrers)
	}
	copierLog, err := os.ReadFile(filepath.Join(dir, "copier.log"))
	if err != nil {
		t.Fatal(err)
	}
	var copiedLines []string
	for line := range strings.Lines(string(copierLog)) {
		if strings.Contains(line, `"copied"`) && strings.Contains(line, dst) {
			copiedLines = append(copiedLines, strings.TrimSpace(line))
		}
	}
	if len(copiedLines) == 0 {
		t.Errorf("the copier's log has no \"copied\" line for %s:\n%s", dst, copierLog)
	}
	for _, l := range copiedLines {
		t.Logf("copier log: %s", l)
	}

	// The origin served the copier only: no pull by the node.
	t.Logf("the origin's log for team/%s:\n%s", repo, describe(originReqs))
	for _, r := range originReqs {
		if r.User != copierUser {
			t.Errorf("the origin got %s %s from user %q, not the copier's %q: something else read the origin", r.Method, r.Path, r.User, copierUser)
		}
	}
	if n := blobPulls(originReqs, copierUser); n < 3 {
		t.Errorf("the copier read %d blobs from the origin, want at least 3 (two platforms' layers and configs)", n)
	}
	// The mirror: the copier's writes (as pushUser), then the node's pull
	// (as pullUser) of what it wrote.
	t.Logf("the mirror's log for %s:\n%s", mirrorRepo(repo), describe(mirrorReqs))
	var tagPut, firstPull time.Time
	for _, r := range mirrorReqs {
		switch {
		case !served(r):
		case r.User != pullUser && r.User != pushUser:
			t.Errorf("the mirror served %s %s to user %q", r.Method, r.Path, r.User)
		case r.User == pushUser && r.Method == http.MethodPut && strings.HasSuffix(r.Path, "/manifests/1"):
			tagPut = r.Time
		case r.User == pullUser && firstPull.IsZero():
			firstPull = r.Time
		}
	}
	if tagPut.IsZero() {
		t.Errorf("the mirror's log has no PUT of %s's tag by the copier", dst)
	}
	if !firstPull.IsZero() && firstPull.Before(tagPut) {
		t.Errorf("%s read %s from the mirror at %s, before the copier wrote its tag at %s", pullUser, dst, firstPull.Format("15:04:05.000"), tagPut.Format("15:04:05.000"))
	}
	if n := pulls(mirrorReqs, pullUser); n == 0 {
		t.Errorf("%s never pulled %s from the mirror", pullUser, dst)
	}
	if n := blobPulls(mirrorReqs, pullUser); n == 0 {
		t.Errorf("the mirror served no blob of %s to %s", dst, pullUser)
	}

	// The mirror serves the origin's digest, and the signature tag.
	originDigest, err := e.headOrigin(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	mirrorDigest, err := e.headMirror(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if originDigest != pushed.index || mirrorDigest != originDigest {
		t.Errorf("HEAD: origin %s, mirror %s, want both %s", originDigest, mirrorDigest, pushed.index)
	}
	sigRef := mirrorRegistry + "/team/" + repo + ":" + pushed.sigTag
	if d, err := e.headMirror(ctx, sigRef); err != nil {
		t.Errorf("the signature tag on the mirror: %v", err)
	} else if d != pushed.sig {
		t.Errorf("HEAD %s: %s, want the origin's signature %s", sigRef, d, pushed.sig)
	}
	t.Logf("HEAD: origin %s and mirror %s at %s; mirror %s at %s", src, dst, mirrorDigest, sigRef, pushed.sig)

	t.Logf("figure: MIRROR_MISSING=copy (MIRROR_NEGATIVE_CACHE_TTL=%s, which the mutator caps at 5s under copy): Deployment create to Available %s; %d Pod creates refused as %q; copy %d ms (%d manifests, %d bytes uploaded, %d referrer), its tag on the mirror at +%s; Pod admitted at +%s, first pull from the mirror at +%s",
		copyNegativeTTL(), available.Round(time.Millisecond), refused, copyBeing,
		copied.DurationMs, copied.Manifests, copied.Uploaded, len(copied.Referrers), tagPut.Sub(began).Round(time.Millisecond),
		admitted.Round(time.Millisecond), firstPull.Sub(began).Round(time.Millisecond))
}

// refusedCreates waits for the ReplicaSet's FailedCreate events to name the
// copy and returns how many creates they count (an event repeated counts
// each time).
func (e *env) refusedCreates(t *testing.T, ns, src, dst string) (n int) {
	t.Helper()
	var msg string
	var others []string
	waitFor(t, 30*time.Second, "FailedCreate events saying "+copyBeing, func(ctx context.Context) (bool, string) {
		events, err := e.kube.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		n, msg, others = 0, "", nil
		for _, ev := range events.Items {
			if ev.InvolvedObject.Kind != "ReplicaSet" || ev.Reason != "FailedCreate" {
				continue
			}
			if !strings.Contains(ev.Message, copyBeing) {
				others = append(others, ev.Message)
				continue
			}
			count := max(int(ev.Count), 1)
			if ev.Series != nil {
				count = max(count, int(ev.Series.Count))
			}
			n += count
			msg = ev.Message
		}
		return n > 0, fmt.Sprintf("%d refused creates", n)
	})
	t.Logf("refused: %s", msg)
	for _, m := range others {
		t.Errorf("a create was refused for another reason: %s", m)
	}
	if !strings.Contains(msg, src) || !strings.Contains(msg, dst) {
		t.Errorf("the refusal does not name %s and %s: %s", src, dst, msg)
	}
	return n
}

// copyImage is what pushCopyImage wrote to the origin.
type copyImage struct {
	index   v1.Hash // the two-platform index's digest
	sigTag  string  // cosign's tag, sha256-<hex>.sig
	sig     v1.Hash // the signature manifest's digest
	content string  // what the amd64 image's /etc/image says
}

// pushCopyImage pushes repo's image to the origin only, at originRef(repo):
// an index of linux/amd64 (the app, runnable here) and linux/arm64 (its own
// layer, never pulled by the node), and a cosign-style signature of the
// index at its sha256-<hex>.sig tag, as copiertest.Push writes one.
func (e *env) pushCopyImage(t *testing.T, repo string) copyImage {
	t.Helper()
	app, err := os.ReadFile(filepath.Join(e.binDir, "app"))
	if err != nil {
		t.Fatalf("reading the app binary: %v", err)
	}
	out := copyImage{content: repo + " copied " + e.nonce}
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := image.New([]image.File{
			{Path: "app", Content: app, Mode: 0o755},
			{Path: "etc/image", Content: []byte(out.content + " " + arch + "\n"), Mode: 0o644},
		}, "/app")
		if err != nil {
			t.Fatal(err)
		}
		if arch != "amd64" {
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			cfg = cfg.DeepCopy()
			cfg.Architecture = arch
			if img, err = mutate.ConfigFile(img, cfg); err != nil {
				t.Fatal(err)
			}
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.DockerManifestList)
	ref, err := name.NewTag(originRef(repo))
	if err != nil {
		t.Fatal(err)
	}
	transport := e.registryTransport()
	defer transport.CloseIdleConnections()
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context()), remote.WithTransport(transport)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	if out.index, err = idx.Digest(); err != nil {
		t.Fatal(err)
	}

	payload := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`,
		ref.Context().Name(), out.index)
	sig, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), mutate.Addendum{
		Layer:       static.NewLayer([]byte(payload), "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": "MEUCIQDtestsignature" + e.nonce},
	})
	if err != nil {
		t.Fatal(err)
	}
	out.sigTag = out.index.Algorithm + "-" + out.index.Hex + ".sig"
	if err := image.Push(t.Context(), sig, ref.Context().Tag(out.sigTag).String(), transport, "", ""); err != nil {
		t.Fatal(err)
	}
	if out.sig, err = sig.Digest(); err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed %s (index %s) and %s (%s) to the origin only", ref, out.index, out.sigTag, out.sig)
	return out
}

// registryTransport trusts the test CA only.
func (e *env) registryTransport() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool(), MinVersion: tls.VersionTLS12}}
}

// headOrigin and headMirror return the manifest digest a registry serves
// for ref (the mirror as pushUser).
func (e *env) headOrigin(ctx context.Context, ref string) (v1.Hash, error) {
	return e.head(ctx, ref, authn.Anonymous)
}

func (e *env) headMirror(ctx context.Context, ref string) (v1.Hash, error) {
	return e.head(ctx, ref, &authn.Basic{Username: pushUser, Password: e.pushPassword})
}

func (e *env) head(ctx context.Context, ref string, auth authn.Authenticator) (v1.Hash, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	transport := e.registryTransport()
	defer transport.CloseIdleConnections()
	d, err := remote.Head(r, remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(transport))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("HEAD %s: %w", ref, err)
	}
	return d.Digest, nil
}

// copySink is the copier's K_SINK: it records the result events.
type copySink struct {
	url string
	mu  sync.Mutex
	got []copyEvent
}

func (s *copySink) events() []copyEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// startCopySink serves a CloudEvents sink on loopback until the test ends,
// in binary or structured mode.
func startCopySink(t *testing.T) *copySink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &copySink{url: "http://" + ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ev := copyEvent{received: time.Now(), typ: r.Header.Get("Ce-Type")}
		data := body
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents+json") {
			var structured struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(body, &structured); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			ev.typ, data = structured.Type, structured.Data
		}
		if err := json.Unmarshal(data, &ev.result); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.got = append(s.got, ev)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// startCopier runs the copier binary the host stage built, on loopback
// (the mutator process reaches it there), allowed to read the origin and
// write the mirror's "mirror/" prefix as pushUser, sending its results to
// sink; it stops when the test ends. It returns its URL.
func (e *env) startCopier(t *testing.T, dir, sink string) string {
	t.Helper()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, e.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	mirrorCreds := writeDockerConfig(t, filepath.Join(dir, "mirror-config.json"), mirrorHost, pushUser, e.pushPassword)
	originCreds := writeDockerConfig(t, filepath.Join(dir, "origin-config.json"), originHost, copierUser, "any")
	addr := freeAddr(t, "127.0.0.1")
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"LISTEN_ADDRESS=" + addr,
		"COPY_TARGETS=" + mirrorRegistry,
		"COPY_SOURCES=" + originHost,
		"COPY_MIRROR_CREDENTIALS=" + mirrorCreds,
		"COPY_ORIGIN_CREDENTIALS=" + originCreds,
		"SSL_CERT_FILE=" + caFile,
		"K_SINK=" + sink,
		// HTTP/1.1 to the registries. The copier uploads a copy's blobs
		// in parallel (COPY_JOBS); over HTTP/2 they share one connection
		// to the mirror, whose registry (go-containerregistry's
		// pkg/registry) holds one lock while it reads an upload's body:
		// the uploads waiting for the lock fill the connection's 1 MiB
		// receive window, and the one holding it never gets the rest of
		// its body. Registries that read uploads concurrently do not
		// deadlock so; HTTP/1.1 gives each upload its own connection.
		"GODEBUG=http2client=0",
	}
	d, err := cluster.StartDaemon("copier", filepath.Join(e.binDir, "copier"), filepath.Join(dir, "copier.log"), env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("==> copier <==\n%s", d.Tail(40))
		}
		if err := d.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping the copier: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	url := "http://" + addr
	if err := cluster.WaitHealthy(ctx, http.DefaultClient, url+"/health/readiness", d); err != nil {
		t.Fatalf("the copier is not ready: %v\n%s", err, d.Tail(20))
	}
	return url
}

// startCopyMutator runs a second mutator process, the suite's settings
// plus MIRROR_CHECK=true, MIRROR_MISSING=copy, MIRROR_COPY_SINK=copierURL
// and a short negative cache, and points the shipped webhook at it until
// the test ends (then at the suite's mutator again).
func (e *env) startCopyMutator(t *testing.T, dir, copierURL string) {
	t.Helper()
	certPEM, keyPEM, err := e.ca.Issue(nil, []net.IP{net.ParseIP(node.NodeIP)})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "mutator.crt"), filepath.Join(dir, "mutator.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The mutator's lookups as pushUser, so that pullUser's requests on
	// the mirror are the node's.
	creds := writeDockerConfig(t, filepath.Join(dir, "mutator-config.json"), mirrorHost, pushUser, e.pushPassword)
	addr := freeAddr(t, node.NodeIP)
	_, port, _ := net.SplitHostPort(addr)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"PORT=" + port,
		"METRICS_PORT=0",
		"TLS_CERT_FILE=" + certFile,
		"TLS_KEY_FILE=" + keyFile,
		"REGISTRY=" + mirrorRegistry,
		"IMAGE_PULL_SECRET=" + pullSecret,
		"FORCE_IMAGE_PULL_POLICY=true",
		"IMAGE_PULL_POLICY_TO_FORCE=Always",
		"MIRROR_CHECK=true",
		"MIRROR_MISSING=copy",
		"MIRROR_COPY_SINK=" + copierURL,
		"MIRROR_NEGATIVE_CACHE_TTL=" + copyNegativeTTL(),
		"MIRROR_CREDENTIALS=" + creds,
		"SSL_CERT_FILE=" + filepath.Join(dir, "ca.crt"),
	}
	d, err := cluster.StartDaemon("mutator-copy", filepath.Join(e.binDir, "mutator"), filepath.Join(dir, "mutator.log"), env, "serve")
	if err != nil {
		t.Fatal(err)
	}
	m := &mutatorProcess{d}
	stopped := false
	stop := func(context.Context) error {
		if stopped {
			return nil
		}
		stopped = true
		if t.Failed() {
			t.Logf("%s", strings.Replace(m.tail(40), "==> mutator <==", "==> mutator (MIRROR_MISSING=copy) <==", 1))
		}
		return m.stop()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	client := &http.Client{Transport: e.registryTransport()}
	defer client.CloseIdleConnections()
	if err := cluster.WaitHealthy(ctx, client, "https://"+addr+"/health/readiness", d); err != nil {
		_ = stop(ctx)
		t.Fatalf("the MIRROR_MISSING=copy mutator is not ready: %v\n%s", err, d.Tail(20))
	}
	kube := e.kube.Client()
	if err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, webhookName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		_ = stop(ctx)
		t.Fatalf("removing the suite mutator's webhook: %v", err)
	}
	// Deletes the webhook, stops this mutator, registers the suite's again.
	t.Cleanup(func() { e.restoreProcessWebhook(t, stop) })
	if err := registerWebhook(ctx, kube, "https://"+addr+"/mutate", e.ca.CertPEM()); err != nil {
		t.Fatalf("pointing the webhook at the MIRROR_MISSING=copy mutator: %v", err)
	}
}

// writeDockerConfig writes a docker config.json with user's credentials
// for host at path and returns path.
func writeDockerConfig(t *testing.T, path, host, user, password string) string {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	b, err := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freeAddr returns host with a port free now (the kernel's pick).
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// copyNegativeTTL is TestMirrorCopy's MIRROR_NEGATIVE_CACHE_TTL: how long
// the mutator keeps denying from its cache after a miss, so the least time
// from the first refusal to the admission.
func copyNegativeTTL() string {
	if v := os.Getenv(copyNegativeTTLEnv); v != "" {
		return v
	}
	return "1s"
}
