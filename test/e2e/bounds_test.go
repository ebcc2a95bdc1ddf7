package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// TestLargestReview: the AdmissionReview the API server sends is larger than
// the request it received ('<' is escaped six-fold, an UPDATE carries object
// and oldObject, managedFields ride along). Under failurePolicy Ignore a
// webhook that refuses such a review with an HTTP error lets the change in
// unmutated; here every one must be processed, shown by what is stored.
func TestLargestReview(t *testing.T) {
	f := newFixture(t, "large", cfgAll, admissionregistrationv1.Ignore)
	ctx := testContext(t)
	ns := namespace(t, f.scope())
	pods := kube.Client().CoreV1().Pods(ns)
	withEnv := func(name string, n int) *corev1.Pod {
		app := c("main", "nginx:1", "")
		app.Env = []corev1.EnvVar{{Name: "PAD", Value: strings.Repeat("<", n)}}
		return newPod(name, corev1.PodSpec{Containers: []corev1.Container{app}})
	}

	t.Run("create of 560,000 '<'", func(t *testing.T) {
		got := createAndGet(t, ns, withEnv("create-lt", 560_000))
		checkPulledFromMirror(t, got)
		if img := got.Spec.Containers[0].Image; img != mirror+"/nginx:1" {
			t.Errorf("stored image %q, want %s/nginx:1", img, mirror)
		}
	})

	// The largest Pod this etcd stores (1.5 MiB requests), to 4,000
	// characters: an env value of '<'. Its image update is a review of
	// object and oldObject, each about six times the stored size.
	n := 1_580_000 // over the limit: the first try must fail
	var stored *corev1.Pod
	for ; stored == nil && n > 0; n -= 4_000 {
		p, err := pods.Create(ctx, withEnv("largest", n), metav1.CreateOptions{})
		if err == nil {
			stored = p
			break
		}
	}
	if stored == nil {
		t.Fatal("no large Pod could be stored")
	}
	if n == 1_580_000 {
		t.Fatalf("a Pod of %d '<' was stored: etcd's limit is higher than this test assumes, so it does not find the largest", n)
	}
	checkPulledFromMirror(t, stored)
	t.Logf("largest Pod stored: %d '<' (review of an update about %d bytes)", n, updateReviewSize(t, stored))

	t.Run("image update of the largest Pod", func(t *testing.T) {
		patch := fmt.Appendf(nil, `{"spec":{"containers":[{"name":"main","image":%q}]}}`, "ghcr.io/evil/payload:1")
		got, err := pods.Patch(ctx, stored.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if err != nil {
			t.Fatalf("patching the image: %v", err)
		}
		if img := got.Spec.Containers[0].Image; img != mirror+"/evil/payload:1" {
			t.Errorf("stored image after the update %q, want %s/evil/payload:1 (the review failed open)", img, mirror)
		}
		checkPulledFromMirror(t, got)
	})

	t.Run("debug container on the largest Pod", func(t *testing.T) {
		cur, err := pods.Get(ctx, stored.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.EphemeralContainers = append(cur.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg", Image: "ghcr.io/evil/dbg:1", TerminationMessagePolicy: corev1.TerminationMessageReadFile},
		})
		got, err := pods.UpdateEphemeralContainers(ctx, cur.Name, cur, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("adding the debug container: %v", err)
		}
		if len(got.Spec.EphemeralContainers) != 1 || got.Spec.EphemeralContainers[0].Image != mirror+"/evil/dbg:1" {
			t.Errorf("stored ephemeral containers %+v, want the image under %s", got.Spec.EphemeralContainers, mirror)
		}
		checkPulledFromMirror(t, got)
	})
}

// updateReviewSize is the size of the AdmissionReview of an UPDATE of pod
// as the API server encodes it (encoding/json: the same escaping), object
// and oldObject with their managedFields.
func updateReviewSize(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{
		Object: runtime.RawExtension{Raw: raw}, OldObject: runtime.RawExtension{Raw: raw},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// TestIdleConnections: clients that reach the webhook's port and send a
// request's headers but no body (declaring 256 KiB, or chunked) must not
// hold the memory budget: with 15, 50 and 200 of them open, reopened as the
// webhook closes them, for 25 s, Pod creates through the API server under
// failurePolicy Fail are still admitted and mutated.
func TestIdleConnections(t *testing.T) {
	f := newFixture(t, "idle", cfgAll, admissionregistrationv1.Fail)
	ns := namespace(t, f.scope())
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(f.mutator.port))
	// 25 s in the measurement (E2E_IDLE_HOLD=25s); each connection
	// is closed and reopened every couple of seconds, so 10 s is enough to
	// show the budget is not held.
	hold := 10 * time.Second
	if v, err := time.ParseDuration(os.Getenv("E2E_IDLE_HOLD")); err == nil {
		hold = v
	}
	for _, conns := range []int{15, 50, 200} {
		t.Run(strconv.Itoa(conns), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(testContext(t), hold)
			defer cancel()
			var opened atomic.Int64
			var wg sync.WaitGroup
			for i := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						if holdIdle(ctx, addr, i%5 == 0) {
							opened.Add(1)
						}
					}
				}()
			}
			var (
				latencies []time.Duration
				failed    []string
			)
			pods := kube.Client().CoreV1().Pods(ns)
			for ctx.Err() == nil {
				start := time.Now()
				got, err := pods.Create(context.Background(), newPod("idle", corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1", "")}}), metav1.CreateOptions{})
				latencies = append(latencies, time.Since(start))
				switch {
				case err != nil:
					failed = append(failed, err.Error())
				case got.Spec.Containers[0].Image != mirror+"/nginx:1":
					failed = append(failed, "stored unmutated: "+got.Spec.Containers[0].Image)
				}
				time.Sleep(100 * time.Millisecond)
			}
			wg.Wait()
			slices.Sort(latencies)
			t.Logf("%d idle connections (%d opened in %s): %d creates, %d failed, p50 %s, p99 %s, max %s",
				conns, opened.Load(), hold, len(latencies), len(failed), latencies[len(latencies)/2],
				latencies[len(latencies)*99/100], latencies[len(latencies)-1])
			if len(latencies) < 10 {
				t.Fatalf("only %d creates in %s", len(latencies), hold)
			}
			if 100*len(failed) > len(latencies) {
				t.Errorf("%d of %d creates failed or were stored unmutated (more than 1%%), first: %s", len(failed), len(latencies), failed[0])
			}
		})
	}
}

// holdIdle opens a TLS connection to the webhook, sends the headers of a
// review and no body, and waits until the webhook closes it or ctx ends.
// It reports whether the request was sent.
func holdIdle(ctx context.Context, addr string, chunked bool) bool {
	d := tls.Dialer{Config: &tls.Config{RootCAs: webhookCA.Pool(), NextProtos: []string{"http/1.1"}}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		time.Sleep(50 * time.Millisecond)
		return false
	}
	defer conn.Close()
	framing := "Content-Length: 262144"
	if chunked {
		framing = "Transfer-Encoding: chunked"
	}
	if _, err := fmt.Fprintf(conn, "POST /mutate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s\r\n\r\n", addr, framing); err != nil {
		return false
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	_, _ = io.Copy(io.Discard, conn)
	return true
}
