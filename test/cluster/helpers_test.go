package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/cluster/registry"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// ignoreLabel is the opt-out of the shipped webhook's namespaceSelector.
const ignoreLabel = "mutator.dev/ignore"

// newNamespace creates a namespace holding the pull secret, opted out of
// the webhook if ignored, and waits for its default ServiceAccount (the
// controller manager creates it; Pods are refused until then). It is
// deleted when the test ends.
func (e *env) newNamespace(t *testing.T, prefix string, ignored bool) string {
	t.Helper()
	ctx := t.Context()
	client := e.kube.Client()
	labels := map[string]string{}
	if ignored {
		labels[ignoreLabel] = "true"
	}
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		// Not waited for: the next test need not pay for the Pods' end.
		err := client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", ns.Name, err)
		}
	})
	// Cleanups run last first: this one before the deletion.
	t.Cleanup(func() {
		if t.Failed() {
			e.logEvents(t, ns.Name)
		}
	})
	secret, err := e.pullSecretObject()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(ns.Name).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the pull secret: %v", err)
	}
	wait(t, time.Minute, "the default ServiceAccount of "+ns.Name, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return ns.Name
}

// logEvents logs the namespace's events, oldest first, for a failing test.
func (e *env) logEvents(t *testing.T, namespace string) {
	t.Helper()
	events, err := e.kube.Client().CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Logf("listing the events of %s: %v", namespace, err)
		return
	}
	items := events.Items
	slices.SortStableFunc(items, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	for _, ev := range items {
		t.Logf("event %s %s/%s %s: %s", eventTime(ev).Format("15:04:05.000"), namespace, ev.InvolvedObject.Name, ev.Reason, ev.Message)
	}
}

// eventTime is when an event happened, whichever field has it.
func eventTime(ev corev1.Event) time.Time {
	if !ev.EventTime.IsZero() {
		return ev.EventTime.Time
	}
	return ev.FirstTimestamp.Time
}

// pullSecretObject is pullSecret: pullUser's credentials for the mirror.
func (e *env) pullSecretObject() (*corev1.Secret, error) {
	auth := base64.StdEncoding.EncodeToString([]byte(pullUser + ":" + e.pullPassword))
	config, err := json.Marshal(map[string]any{"auths": map[string]any{
		mirrorHost: map[string]string{"username": pullUser, "password": e.pullPassword, "auth": auth},
	}})
	if err != nil {
		return nil, fmt.Errorf("encoding the pull secret: %w", err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: pullSecret},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: config},
	}, nil
}

// appPodSpec runs image's app with args; with dataImage set, it mounts
// that image as a volume at /data and prints its greeting.
func appPodSpec(image, dataImage string, args ...string) corev1.PodSpec {
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", Image: image, Args: args}},
		// The app exits on SIGTERM at once; deleting namespaces is quick.
		TerminationGracePeriodSeconds: ptr.To[int64](1),
	}
	if dataImage != "" {
		spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: dataImage},
		}}}
		spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		spec.Containers[0].Args = append([]string{"-print=/data/" + greetingPath}, args...)
	}
	return spec
}

// wait polls cond every 200 ms for up to timeout, failing the test with
// what if it does not come true.
func wait(t *testing.T, timeout time.Duration, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	if err := cluster.WaitFor(ctx, 200*time.Millisecond, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// running reports whether the Pod runs with every container ready.
func running(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.ContainerStatuses {
		if !c.Ready {
			return false
		}
	}
	return len(pod.Status.ContainerStatuses) > 0
}

// podLog returns the log of the Pod's app container.
func (e *env) podLog(ctx context.Context, namespace, name string) (string, error) {
	data, err := e.kube.Client().CoreV1().Pods(namespace).GetLogs(name, &corev1.PodLogOptions{Container: "app"}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the log of %s/%s: %w", namespace, name, err)
	}
	return string(data), nil
}

// repoRequests keeps the requests for repository repo (e.g.
// "mirror/team/app"): its manifests and blobs.
func repoRequests(reqs []registry.Request, repo string) []registry.Request {
	var out []registry.Request
	for _, r := range reqs {
		if strings.HasPrefix(r.Path, "/v2/"+repo+"/") {
			out = append(out, r)
		}
	}
	return out
}

// served reports whether the registry answered the request with success.
func served(r registry.Request) bool { return r.Status >= 200 && r.Status < 300 }

// pulls counts the pulls by user: containerd starts each by resolving the
// tag with a HEAD of its manifest, and fetches the manifest (GET) only when
// it does not have it yet, so HEADs count pulls and GETs do not.
func pulls(reqs []registry.Request, user string) int {
	n := 0
	for _, r := range reqs {
		if served(r) && r.User == user && r.Method == "HEAD" && strings.Contains(r.Path, "/manifests/") {
			n++
		}
	}
	return n
}

// blobPulls counts the successful blob downloads by user.
func blobPulls(reqs []registry.Request, user string) int {
	n := 0
	for _, r := range reqs {
		if served(r) && r.User == user && r.Method == "GET" && strings.Contains(r.Path, "/blobs/") {
			n++
		}
	}
	return n
}

// describe lists requests one per line for failure messages.
func describe(reqs []registry.Request) string {
	lines := make([]string, len(reqs))
	for i, r := range reqs {
		lines[i] = "  " + r.String()
	}
	return strings.Join(lines, "\n")
}

// mirrorRepo is the mirror's repository of a test image.
func mirrorRepo(repo string) string { return "mirror/team/" + repo }

// positiveEnv returns the positive whole number in the variable name, or
// def when it is unset: how many samples a figure takes.
func positiveEnv(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}
