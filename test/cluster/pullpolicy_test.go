package cluster

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestForcedAlwaysPullsAgainOnRestart: the Pod names a tagged image, whose
// default pull policy is IfNotPresent; the mutator forces Always, so when
// the kubelet restarts the exited container it pulls from the mirror
// again.
func TestForcedAlwaysPullsAgainOnRestart(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()
	const image = "restart" // pulled by no other test
	ns := e.newNamespace(t, "restart", false)
	mark := e.mirror.Count()

	spec := appPodSpec(originRef(image), "", "-exit-after=1s")
	pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "restart"}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	var restarts int32
	// The kubelet restarts the exited container after a back-off (about
	// a second the first time).
	wait(t, 90*time.Second, "a restart", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, nil
		}
		pod = p
		// The count goes up when the kubelet creates the new container,
		// after its pull.
		restarts = p.Status.ContainerStatuses[0].RestartCount
		return restarts >= 1, nil
	})
	checkMutated(t, pod, image, "")
	reqs := repoRequests(e.mirror.Since(mark), mirrorRepo(image))
	if n := pulls(reqs, pullUser); n < int(restarts)+1 {
		t.Errorf("the container started %d times but %s pulled it %d times from the mirror, want once per start:\n%s",
			restarts+1, pullUser, n, describe(reqs))
	} else {
		t.Logf("%d starts, %d pulls from the mirror", restarts+1, n)
	}
}
