package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/cluster/knative"
	"github.com/mutator-dev/mutator/test/cluster/node"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

const (
	// knativeImage is the app image the Knative Service runs: its own, as
	// TestDeploymentPullsFromMirror needs the app image's layer never
	// pulled before it.
	knativeImage = "knative"
	// knativeInstallTimeout bounds Install: pushing the images, applying
	// the manifests, Serving's Deployments Available, traefik up.
	knativeInstallTimeout = 5 * time.Minute
	// knativeRepo is where Serving's images go, at the origin (for
	// knative-serving, which the mutator leaves alone) and, for the
	// queue-proxy that Knative adds to the Pods of every Revision, also
	// at the mirror under the path the mutator rewrites it to.
	knativeRepo = "knative"
	// scaleToZeroGrace is config-autoscaler's scale-to-zero-grace-period,
	// the least Serving accepts: how long the autoscaler keeps the last
	// Pod once it decided on zero, so that the activator is in the path
	// first.
	scaleToZeroGrace = "6s"
	// stableWindow is the Revision's autoscaling window (the least), the
	// time without requests after which the autoscaler wants zero Pods.
	stableWindow = "6s"
	// coldStartsEnv sets how many scale-from-zero requests
	// TestKnativeServiceReady times (default 1).
	coldStartsEnv = "MUTATOR_KNATIVE_COLD_STARTS"
)

// knativeSetup is Knative Serving, installed on the shared cluster by the
// first test that needs it (env.knativeServing) and kept for the others.
type knativeSetup struct {
	once    sync.Once
	serving *knative.Serving
	err     error
}

// stop stops traefik and Serving's Pods, if Serving was installed.
func (k *knativeSetup) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.serving.Stop(ctx); err != nil {
		logger.Printf("knative: %v", err)
	}
}

// knativeServing installs Knative Serving with traefik once per run and
// returns it; a failed install fails every test that asks.
//
// knative-serving is opted out of the mutator (the label of the shipped
// webhook's namespaceSelector), and Serving's images come from the origin,
// as a cluster's infrastructure images would from wherever its admin pins
// them: the mutator function runs under Knative (issue 20), so Serving's
// own Pods must never wait for it, or a restarted activator could not be
// admitted while the function it must wake is at zero.
func (e *env) knativeServing(t *testing.T) *knative.Serving {
	t.Helper()
	k := &e.knative
	k.once.Do(func() {
		assets, err := knative.AssetsDir()
		if err != nil {
			k.err = err
			return
		}
		dir := filepath.Join(node.WorkDir(), "knative")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			k.err = fmt.Errorf("creating %s: %w", dir, err)
			return
		}
		// traefik's TLS entrypoint for cluster-local routes presents a
		// certificate of the test CA for the function's cluster-local
		// names (functionHosts), which the webhook's caBundle trusts.
		certPEM, keyPEM, err := e.ca.Issue(functionHosts, nil)
		if err != nil {
			k.err = fmt.Errorf("issuing traefik's certificate: %w", err)
			return
		}
		// Not the test's context: Serving outlives the test that installs it.
		ctx, cancel := context.WithTimeout(context.Background(), knativeInstallTimeout)
		defer cancel()
		began := time.Now()
		k.serving, k.err = knative.Install(ctx, knative.Options{
			Assets:          assets,
			Kube:            e.kube,
			Dir:             dir,
			Publish:         e.publishKnativeImage,
			NamespaceLabels: map[string]string{ignoreLabel: "true"},
			PrivateTLS:      &knative.Certificate{CertPEM: certPEM, KeyPEM: keyPEM},
			Config: map[string]map[string]string{
				// The test CA is not the controller's: it would fail to
				// resolve tags to digests at either registry.
				"config-deployment": {"registries-skipping-tag-resolving": originHost + "," + mirrorHost},
				"config-autoscaler": {"scale-to-zero-grace-period": scaleToZeroGrace},
			},
			Logf: logger.Printf,
		})
		if k.err == nil {
			f := k.serving.Figures()
			t.Logf("figure: Knative Serving %s installed in %s: images pushed in %s, CRDs established in %s, Deployments Available %s after kubectl apply, webhook admitting %s later; traefik up in %s",
				knative.Version, time.Since(began).Round(time.Millisecond), f.Publish.Round(time.Millisecond), f.CRDs.Round(time.Millisecond),
				f.Available.Round(time.Millisecond), f.Webhook.Round(time.Millisecond), f.Traefik.Round(time.Millisecond))
		}
	})
	if k.err != nil {
		t.Fatalf("installing Knative Serving: %v\n%s", k.err, k.serving.TraefikLog(20))
	}
	if err := k.serving.TraefikRunning(); err != nil {
		t.Fatal(err)
	}
	return k.serving
}

// publishKnativeImage pushes Serving's image of command name to the origin
// and, for queue-proxy, to the mirror, and returns its origin reference by
// digest.
func (e *env) publishKnativeImage(ctx context.Context, name string, img v1.Image) (string, error) {
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("digest of the %s image: %w", name, err)
	}
	repo := knativeRepo + "/" + name
	if err := e.push(ctx, img, originHost+"/"+repo+":"+knative.Version); err != nil {
		return "", err
	}
	if name == "queue" {
		if err := e.push(ctx, img, mirrorRegistry+"/"+repo+":"+knative.Version); err != nil {
			return "", err
		}
	}
	return originHost + "/" + repo + "@" + digest.String(), nil
}

// TestKnativeServiceReady: on Knative Serving with traefik as its
// networking layer, a Knative Service of the app image becomes Ready, its
// Pod rewritten by the mutator like any other; a request through traefik
// with the Route's host gets the app's answer; without requests the
// Revision scales to zero; and a request then wakes it, through the
// activator, the only endpoint of the Revision while it has no Pod.
func TestKnativeServiceReady(t *testing.T) {
	e := requireEnv(t)
	serving := e.knativeServing(t)
	ctx := t.Context()
	client := e.kube.Client()
	dyn, err := dynamic.NewForConfig(e.kube.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ns := e.newNamespace(t, "knative", false)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s", serving.TraefikLog(30))
		}
	})

	services := dyn.Resource(knative.ServiceResource).Namespace(ns)
	revisions := dyn.Resource(knative.RevisionResource).Namespace(ns)
	ksvc := knative.NewService("hello", ns, originRef(knativeImage), map[string]string{
		"autoscaling.knative.dev/window": stableWindow,
	})
	began := time.Now()
	if _, err := services.Create(ctx, ksvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the Knative Service: %v", err)
	}
	var revisionReady time.Duration
	waitFor(t, 3*time.Minute, "the Knative Service to be Ready", func(ctx context.Context) (bool, string) {
		if revisionReady == 0 {
			if revs, err := revisions.List(ctx, metav1.ListOptions{}); err == nil {
				for _, r := range revs.Items {
					if ok, _ := knative.Ready(&r); ok {
						revisionReady = time.Since(began)
					}
				}
			}
		}
		o, err := services.Get(ctx, "hello", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ksvc = o
		return knative.Ready(o)
	})
	t.Logf("figure: Knative Service Ready %s after its creation (its first Revision Ready after %s)",
		time.Since(began).Round(time.Millisecond), revisionReady.Round(time.Millisecond))
	revision := knative.String(ksvc, "status", "latestReadyRevisionName")
	url := knative.String(ksvc, "status", "url")
	if want := "http://hello." + ns + "." + knative.Domain; url != want {
		t.Fatalf("the Service's URL is %q, want %q", url, want)
	}
	if revision == "" {
		t.Fatal("the Ready Service names no latestReadyRevisionName")
	}

	// The Revision's Pod went through the mutator, both containers.
	selector := "serving.knative.dev/revision=" + revision
	pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("listing the Revision's Pods: %d, %v", len(pods.Items), err)
	}
	checkKnativePod(t, &pods.Items[0])

	// Through traefik: the Route's host, the app's answer. Ready is not
	// trusted alone (an Ingress whose route is not in use yet is Ready
	// too): the URL is polled.
	want := knativeImage + " " + e.nonce + "\n"
	web := serving.HTTPClient(90 * time.Second)
	began = time.Now()
	waitFor(t, time.Minute, "the app's answer through traefik", func(ctx context.Context) (bool, string) {
		got, err := get(ctx, web, url)
		if err != nil {
			return false, err.Error()
		}
		return got == want, fmt.Sprintf("%q", got)
	})
	t.Logf("figure: the app answered through traefik %s after the Service was Ready", time.Since(began).Round(time.Millisecond))

	coldStarts := 1
	if s := os.Getenv(coldStartsEnv); s != "" {
		if coldStarts, err = strconv.Atoi(s); err != nil || coldStarts < 1 {
			t.Fatalf("%s=%q: want a positive number", coldStartsEnv, s)
		}
	}
	var latencies []time.Duration
	for i := range coldStarts {
		lastRequest := time.Now()
		e.waitScaledToZero(t, ns, revision)
		// The grace period runs from when the activator entered the
		// path; with the default target-burst-capacity it never left, so
		// the stable window is what counts here.
		t.Logf("figure: the Revision scaled to zero %s after the last request (stable window %s, grace period %s)",
			time.Since(lastRequest).Round(time.Millisecond), stableWindow, scaleToZeroGrace)
		e.checkActivatorInPath(t, ns, revision)
		before := e.podUIDs(t, ns, selector)

		began := time.Now()
		got, err := get(ctx, web, url)
		took := time.Since(began)
		if err != nil {
			t.Fatalf("request %d from zero: %v", i+1, err)
		}
		if got != want {
			t.Fatalf("request %d from zero answered %q, want %q", i+1, got, want)
		}
		latencies = append(latencies, took)
		// The answer came from a Pod started for it. (The activator
		// probes a new Pod itself and may send it the request before the
		// kubelet reports it ready.)
		started := 0
		for uid, live := range e.podUIDs(t, ns, selector) {
			if _, old := before[uid]; !old && live {
				started++
			}
		}
		if started == 0 {
			t.Fatalf("request %d from zero was answered, yet no Pod of the Revision was started for it", i+1)
		}
	}
	t.Logf("figure: scale-from-zero first-request latency through traefik and the activator: %v", roundAll(latencies))
}

// checkKnativePod checks that the mutator rewrote the Pod of a Revision:
// the app and Knative's queue-proxy both from the mirror, pull policy
// Always, the pull secret.
func checkKnativePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if !slices.Contains(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: pullSecret}) {
		t.Errorf("Pod %s: imagePullSecrets %v lack %s", pod.Name, pod.Spec.ImagePullSecrets, pullSecret)
	}
	names := []string{}
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
		wantPrefix := mirrorRegistry + "/" + knativeRepo + "/queue@sha256:"
		if c.Name == "user-container" {
			wantPrefix = mirrorRef(knativeImage)
		}
		if !strings.HasPrefix(c.Image, wantPrefix) || c.ImagePullPolicy != corev1.PullAlways {
			t.Errorf("Pod %s: container %s image %s (policy %s), want %s… (Always)", pod.Name, c.Name, c.Image, c.ImagePullPolicy, wantPrefix)
		}
	}
	if !slices.Equal(names, []string{"user-container", "queue-proxy"}) {
		t.Errorf("Pod %s has containers %v, want user-container and queue-proxy", pod.Name, names)
	}
}

// waitScaledToZero waits until the Revision's Deployment wants no Pod and
// none of its Pods is serving: each is gone or terminating (queue-proxy
// drains for a while after Knative scales to zero; it is out of the
// endpoints meanwhile).
func (e *env) waitScaledToZero(t *testing.T, ns, revision string) {
	t.Helper()
	client := e.kube.Client()
	waitFor(t, 2*time.Minute, "the Revision to scale to zero", func(ctx context.Context) (bool, string) {
		dep, err := client.AppsV1().Deployments(ns).Get(ctx, revision+"-deployment", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/revision=" + revision})
		if err != nil {
			return false, err.Error()
		}
		live := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live++
			}
		}
		replicas := ptr.Deref(dep.Spec.Replicas, 1)
		return replicas == 0 && live == 0, fmt.Sprintf("Deployment replicas %d, %d Pods not terminating", replicas, live)
	})
}

// podUIDs returns the UIDs of the Pods matching selector in ns, each
// with whether it is not terminating.
func (e *env) podUIDs(t *testing.T, ns, selector string) map[types.UID]bool {
	t.Helper()
	pods, err := e.kube.Client().CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("listing the Pods of %s: %v", selector, err)
	}
	uids := make(map[types.UID]bool, len(pods.Items))
	for _, p := range pods.Items {
		uids[p.UID] = p.DeletionTimestamp == nil
	}
	return uids
}

// checkActivatorInPath checks that the Revision's Service, which traefik
// sends its requests to, has the activator's Pods as its only endpoints.
func (e *env) checkActivatorInPath(t *testing.T, ns, revision string) {
	t.Helper()
	ctx := t.Context()
	client := e.kube.Client()
	activators, err := client.CoreV1().Pods(knative.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=activator"})
	if err != nil || len(activators.Items) == 0 {
		t.Fatalf("listing the activator's Pods: %d, %v", len(activators.Items), err)
	}
	var want []string
	for _, p := range activators.Items {
		want = append(want, p.Status.PodIP)
	}
	slices.Sort(want)
	// Knative writes the Endpoints of the Revision's (selector-less)
	// Service itself.
	waitFor(t, 30*time.Second, "the activator as the Revision's only endpoint", func(ctx context.Context) (bool, string) {
		ep, err := client.CoreV1().Endpoints(ns).Get(ctx, revision, metav1.GetOptions{}) //nolint:staticcheck // what Knative writes
		if err != nil {
			return false, err.Error()
		}
		var got []string
		for _, s := range ep.Subsets {
			for _, a := range s.Addresses {
				got = append(got, a.IP)
			}
		}
		slices.Sort(got)
		return slices.Equal(got, want), fmt.Sprintf("endpoints %v, activators %v", got, want)
	})
}

// waitFor polls cond every 200 ms for up to timeout, failing the test
// with what and the last state cond described if it does not come true.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	last := "nothing seen yet"
	err := cluster.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		ok, state := cond(ctx)
		last = state
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s (last: %s): %v", what, last, err)
	}
}

// get GETs url and returns the body of a 200 answer.
func get(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// roundAll rounds each duration to the millisecond, for logs.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
