package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// policyContainerLimit is the fewest containers (named c1, c2, ..., each
// nginx:1.27) of a Pod that the policies of `mutator policy` refuse for
// their CEL cost under cfgAll, on this package's kube-apiserver.
// docs/policies.md quotes it (and docs/security.md links there); change it
// with it.
const policyContainerLimit = 3749

// TestPolicyLargePods measures, with the real API server, the Pod size at
// which the policies `mutator policy` prints exceed the API server's CEL
// cost limit, and shows that such a Pod is refused (the safe direction),
// never admitted unmutated, while the webhook admits and rewrites it. The
// limit of short Docker Hub images is the documented figure; that of a
// longer reference under a registry host is logged.
func TestPolicyLargePods(t *testing.T) {
	m := setUpParity(t, "large-pods", cfgAll)
	for _, tc := range []struct {
		image, rewritten string
		want             int // the documented limit; 0: only logged
	}{
		{"nginx:1.27", mirror + "/nginx:1.27", policyContainerLimit},
		{"ghcr.io/example-org/payments/api-server:v1.24.3", mirror + "/example-org/payments/api-server:v1.24.3", 0},
	} {
		t.Run(tc.image, func(t *testing.T) {
			hi := measurePolicyLimit(t, m, tc.image, tc.rewritten)
			if tc.want != 0 && hi != tc.want {
				t.Errorf("the policies refuse pods from %d containers on; docs/policies.md says %d (policyContainerLimit): update it", hi, tc.want)
			}
		})
	}
}

// measurePolicyLimit bisects the fewest containers of image that the
// policies refuse, checks that the refusal names the CEL cost, that one
// container fewer is admitted and rewritten, and that the webhook admits
// and rewrites the refused size. It returns that size.
func measurePolicyLimit(t *testing.T, m *parityModes, image, rewritten string) int {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	create := func(ns string, n int) (*corev1.Pod, error) {
		cs := make([]corev1.Container, n)
		for i := range cs {
			cs[i] = c("c"+strconv.Itoa(i+1), image, "")
		}
		return kube.Client().CoreV1().Pods(ns).Create(ctx, newPod("large", corev1.PodSpec{Containers: cs}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	}
	allRewritten := func(what string, pod *corev1.Pod, n int) {
		t.Helper()
		if len(pod.Spec.Containers) != n {
			t.Fatalf("%s: %d containers came back, want %d", what, len(pod.Spec.Containers), n)
		}
		for _, ctr := range pod.Spec.Containers {
			if ctr.Image != rewritten {
				t.Fatalf("%s: container %s came back with image %q, want %q", what, ctr.Name, ctr.Image, rewritten)
			}
		}
	}

	// Bisect: lo is admitted, hi refused.
	lo, hi := 1, 4000
	if _, err := create(m.polNS, lo); err != nil {
		t.Fatalf("a pod of %d container refused by the policies: %v", lo, err)
	}
	last, err := create(m.polNS, hi)
	if err == nil {
		allRewritten("policy, "+strconv.Itoa(hi)+" containers", last, hi)
		t.Fatalf("the policies admit a pod of %d containers: no limit to measure below it", hi)
	}
	refusal := err
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if _, err := create(m.polNS, mid); err != nil {
			hi, refusal = mid, err
		} else {
			lo = mid
		}
	}
	t.Logf("%s: the policies admit a pod of %d containers and refuse one of %d: %v", image, lo, hi, refusal)
	if !strings.Contains(refusal.Error(), "cost limit exceeded") {
		t.Errorf("the refusal of %d containers does not name the CEL cost: %v", hi, refusal)
	}
	admitted, err := create(m.polNS, lo)
	if err != nil {
		t.Fatalf("the policies now refuse %d containers: %v", lo, err)
	}
	allRewritten("policy, "+strconv.Itoa(lo)+" containers", admitted, lo)
	web, err := create(m.webhookNS, hi)
	if err != nil {
		t.Fatalf("the webhook refuses a pod of %d containers: %v", hi, err)
	}
	allRewritten("webhook, "+strconv.Itoa(hi)+" containers", web, hi)
	return hi
}
