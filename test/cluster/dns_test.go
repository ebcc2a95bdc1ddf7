package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/test/cluster/node"
)

// TestClusterDNS: a Pod resolves Service names through the cluster's DNS,
// by the short name in its own namespace (the search path the kubelet
// writes) and by the full name of another namespace's Service, as the
// Knative components and any in-cluster client of the mutator do.
func TestClusterDNS(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()
	ns := e.newNamespace(t, "dns", false)

	// No selector and no endpoints: only the name and its ClusterIP
	// matter here.
	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Service: %v", err)
	}
	apiName := "kubernetes.default.svc." + node.ClusterDomain
	spec := appPodSpec(originRef("dns"), "", "-lookup=probe", "-lookup="+apiName)
	// Never restarted: a failed lookup ends the Pod, rather than leaving
	// the test to wait for a back-off.
	spec.RestartPolicy = corev1.RestartPolicyNever
	pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "lookup"}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the Pod: %v", err)
	}
	wait(t, 90*time.Second, "the lookups", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		return running(p) || p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded, nil
	})
	log, err := e.podLog(ctx, ns, pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("the Pod is %s, not running after its lookups; its log:\n%s", pod.Status.Phase, log)
	}
	for _, want := range []string{
		"app: lookup probe: " + svc.Spec.ClusterIP + "\n",
		"app: lookup " + apiName + ": " + node.APIServiceIP + "\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the Pod's log lacks %q; it is:\n%s", want, log)
		}
	}
}
