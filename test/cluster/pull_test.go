package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// replicas is the size of the Deployment whose every Pod must pull from
// the mirror.
const replicas = 20

// TestDeploymentPullsFromMirror: a Deployment naming the origin runs, with
// every container and image volume pulled from the mirror as the pull
// secret's user, the origin untouched, and the image volume readable.
func TestDeploymentPullsFromMirror(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()
	ns := e.newNamespace(t, "pull", false)
	originMark, mirrorMark := e.origin.Count(), e.mirror.Count()

	labels := map[string]string{"app": "pull"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       appPodSpec(originRef("app"), originRef(dataImage)),
			},
		},
	}
	began := time.Now()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the Deployment: %v", err)
	}
	var pods []corev1.Pod
	wait(t, 3*time.Minute, "20 running Pods", func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=pull"})
		if err != nil {
			return false, nil
		}
		pods = slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return !running(&p) })
		return len(pods) == replicas, nil
	})
	t.Logf("%d replicas running %s after the Deployment's creation", replicas, time.Since(began).Round(time.Millisecond))

	for _, pod := range pods {
		checkMutated(t, &pod, "app", dataImage)
		log, err := e.podLog(ctx, ns, pod.Name)
		if err != nil {
			t.Error(err)
		} else if !strings.Contains(log, e.greeting()) {
			t.Errorf("Pod %s did not print the image volume's file; its log:\n%s", pod.Name, log)
		}
	}

	if reqs := e.origin.Since(originMark); len(reqs) > 0 {
		t.Errorf("the origin registry got %d requests, want 0:\n%s", len(reqs), describe(reqs))
	}
	mirrorReqs := e.mirror.Since(mirrorMark)
	for _, repo := range []string{"app", dataImage} {
		reqs := repoRequests(mirrorReqs, mirrorRepo(repo))
		for _, r := range reqs {
			if served(r) && r.User != pullUser {
				t.Errorf("the mirror served %s %s to user %q, want only %q", r.Method, r.Path, r.User, pullUser)
			}
		}
		// Pull policy Always: the kubelet pulls for every Pod.
		if n := pulls(reqs, pullUser); n < replicas {
			t.Errorf("%s pulled %s %d times from the mirror, want at least %d (one per Pod):\n%s",
				pullUser, repo, n, replicas, describe(reqs))
		}
		// The layer is unique to this run: it cannot have come from a cache.
		if n := blobPulls(reqs, pullUser); n == 0 {
			t.Errorf("the mirror served no blob of %s to %s:\n%s", repo, pullUser, describe(reqs))
		}
	}
}

// checkMutated checks that the mutator rewrote a Pod naming the origin's
// image (and dataImage as an image volume, if set): mirror references,
// the pull secret, pull policy Always.
func checkMutated(t *testing.T, pod *corev1.Pod, image, dataImage string) {
	t.Helper()
	c := pod.Spec.Containers[0]
	if c.Image != mirrorRef(image) || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("Pod %s: container image %s (policy %s), want %s (Always)", pod.Name, c.Image, c.ImagePullPolicy, mirrorRef(image))
	}
	if !slices.Contains(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: pullSecret}) {
		t.Errorf("Pod %s: imagePullSecrets %v lack %s", pod.Name, pod.Spec.ImagePullSecrets, pullSecret)
	}
	if len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].ImageID == "" {
		t.Errorf("Pod %s: no image ID in its container status", pod.Name)
	}
	if dataImage == "" {
		return
	}
	v := pod.Spec.Volumes[0].Image
	if v == nil || v.Reference != mirrorRef(dataImage) || v.PullPolicy != corev1.PullAlways {
		t.Errorf("Pod %s: image volume %+v, want %s (Always)", pod.Name, v, mirrorRef(dataImage))
	}
}

// TestMirrorRefusesPullWithoutSecret: the mirror wants credentials, so the
// Deployment above ran only thanks to the secret the mutator injected. A
// Pod the mutator does not see (its namespace opts out) naming the mirror
// without a secret fails to pull; the same image named at the origin, in
// a namespace the mutator serves, runs.
func TestMirrorRefusesPullWithoutSecret(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()
	const image = "locked" // pulled by no other test
	mark := e.mirror.Count()

	ns := e.newNamespace(t, "nosecret", true)
	spec := appPodSpec(mirrorRef(image), "")
	spec.Containers[0].ImagePullPolicy = corev1.PullAlways
	pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nosecret"}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	if len(pod.Spec.ImagePullSecrets) != 0 {
		t.Fatalf("the Pod got imagePullSecrets %v in a namespace the webhook skips", pod.Spec.ImagePullSecrets)
	}
	var reason, message string
	wait(t, 2*time.Minute, "the pull to fail", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		s := p.Status.ContainerStatuses[0]
		if s.State.Running != nil {
			t.Fatalf("the Pod runs: the mirror let an anonymous pull through")
		}
		if w := s.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
			reason, message = w.Reason, w.Message
			return true, nil
		}
		return false, nil
	})
	t.Logf("without the secret: %s: %s", reason, message)
	if lower := strings.ToLower(message); !strings.Contains(lower, "401") && !strings.Contains(lower, "unauthorized") && !strings.Contains(lower, "authoriz") {
		t.Errorf("the pull failed for another reason than authentication: %s", message)
	}
	reqs := repoRequests(e.mirror.Since(mark), mirrorRepo(image))
	if len(reqs) == 0 {
		t.Errorf("the mirror got no request for %s: the pull failed before reaching it", image)
	}
	for _, r := range reqs {
		if served(r) {
			t.Errorf("the mirror served %s %s (user %q) to a Pod without credentials", r.Method, r.Path, r.User)
		}
	}

	mark = e.mirror.Count()
	ns = e.newNamespace(t, "withsecret", false)
	pod, err = client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "withsecret"}, Spec: appPodSpec(originRef(image), "")}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	wait(t, 2*time.Minute, "the mutated Pod to run", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return running(p), nil
	})
	checkMutated(t, pod, image, "")
	if n := pulls(repoRequests(e.mirror.Since(mark), mirrorRepo(image)), pullUser); n == 0 {
		t.Errorf("%s never pulled %s from the mirror", pullUser, image)
	}
}
