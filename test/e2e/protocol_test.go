package e2e

import (
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mutator-dev/mutator/internal/testkit"
)

// TestAPIServerUsesHTTP1 checks the protocol the webhook meets in
// production: the mutator offers HTTP/2 as well here, and the API server,
// calling a host it does not take for loopback, still uses HTTP/1.1
// keep-alive (k8s.io/apiserver pkg/util/webhook/client.go). The mutator's own
// counter of requests by protocol says which it saw.
func TestAPIServerUsesHTTP1(t *testing.T) {
	f := allFixture(t)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	for i := range 5 {
		if _, err := kube.Client().CoreV1().Pods(ns).Create(ctx, newPod("proto-"+strconv.Itoa(i), corev1.PodSpec{
			Containers: []corev1.Container{c("app", "nginx", "")},
		}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
	}
	byProto := map[string]float64{}
	for _, line := range strings.Split(testkit.Metrics(t, f.mutator.metricsPort), "\n") {
		rest, ok := strings.CutPrefix(line, `mutator_http_requests_total{protocol="`)
		if !ok {
			continue
		}
		proto, value, _ := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		byProto[proto] = v
	}
	t.Logf("requests to the webhook by protocol: %v", byProto)
	if byProto["HTTP/1.1"] < 5 {
		t.Errorf("%v HTTP/1.1 requests, want at least the 5 creates", byProto["HTTP/1.1"])
	}
	for proto, n := range byProto {
		if proto != "HTTP/1.1" && n > 0 {
			t.Errorf("%v requests over %s: the API server should call this webhook over HTTP/1.1 only", n, proto)
		}
	}
}
