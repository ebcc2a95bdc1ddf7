package cluster

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

const (
	// timedImage is the figures' own image, so that the other tests'
	// pulls do not depend on whether these ran first.
	timedImage = "timed"
	// figurePodsEnv sets how many Pods are timed each way: 10 by default,
	// which keeps make test short and still runs every assertion; the
	// figures in docs/performance.md are from 50.
	figurePodsEnv = "MUTATOR_FIGURE_PODS"
	// figureWave is how many Pods (half of each kind, interleaved) are
	// created before waiting for them all to run: the node is busy, but
	// not a hundred Pods at once on two cores.
	figureWave = 10
)

// TestFigures logs, without asserting on them: the node's Ready time, and
// Pod create to Running with and without the webhook (p50 and p99 of
// figurePods each), the create call's latency each way and the mutator's
// memory. The Pods without the webhook (their namespace opts out) are
// written as the mutator would leave them (mirror image, pull secret,
// policy Always), so that only the admission call differs.
func TestFigures(t *testing.T) {
	figurePods := positiveEnv(t, figurePodsEnv, 10)
	e := requireEnv(t)
	ctx := t.Context()
	client := e.kube.Client()
	kinds := []struct {
		name string
		ns   string
		spec func() corev1.PodSpec
	}{
		{"without webhook", e.newNamespace(t, "plain", true), func() corev1.PodSpec {
			spec := appPodSpec(mirrorRef(timedImage), "")
			spec.Containers[0].ImagePullPolicy = corev1.PullAlways
			spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: pullSecret}}
			return spec
		}},
		{"with webhook", e.newNamespace(t, "hooked", false), func() corev1.PodSpec {
			return appPodSpec(originRef(timedImage), "")
		}},
	}

	// Running times come from watches, so that polling adds no delay.
	var mu sync.Mutex
	runningAt := map[string]time.Time{}
	for _, k := range kinds {
		w, err := client.CoreV1().Pods(k.ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("watching Pods: %v", err)
		}
		t.Cleanup(w.Stop)
		go func() {
			for ev := range w.ResultChan() {
				pod, ok := ev.Object.(*corev1.Pod)
				if !ok || ev.Type == watch.Deleted || !running(pod) {
					continue
				}
				mu.Lock()
				if _, seen := runningAt[pod.Namespace+"/"+pod.Name]; !seen {
					runningAt[pod.Namespace+"/"+pod.Name] = time.Now()
				}
				mu.Unlock()
			}
		}()
	}

	created := map[string]time.Time{}
	toRunning := make([][]time.Duration, len(kinds))
	createCall := make([][]time.Duration, len(kinds))
	for wave := 0; wave < 2*figurePods/figureWave; wave++ {
		var names []string
		for i := range figureWave {
			k := i % len(kinds)
			name := fmt.Sprintf("pod-%d", wave*figureWave/len(kinds)+i/len(kinds))
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: kinds[k].spec()}
			began := time.Now()
			got, err := client.CoreV1().Pods(kinds[k].ns).Create(ctx, pod, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("creating Pod %s %s: %v", name, kinds[k].name, err)
			}
			createCall[k] = append(createCall[k], time.Since(began))
			if got.Spec.Containers[0].Image != mirrorRef(timedImage) {
				t.Errorf("Pod %s/%s runs %s, want %s", got.Namespace, name, got.Spec.Containers[0].Image, mirrorRef(timedImage))
			}
			key := got.Namespace + "/" + name
			created[key] = began
			names = append(names, key)
		}
		wait(t, 3*time.Minute, fmt.Sprintf("wave %d of Pods to run", wave), func(ctx context.Context) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, key := range names {
				if _, ok := runningAt[key]; !ok {
					return false, nil
				}
			}
			return true, nil
		})
	}
	mu.Lock()
	for key, began := range created {
		k := 0
		if strings.HasPrefix(key, kinds[1].ns+"/") {
			k = 1
		}
		toRunning[k] = append(toRunning[k], runningAt[key].Sub(began))
	}
	mu.Unlock()

	t.Logf("figure: node Ready %s after the kubelet started", e.kube.ReadyAfter().Round(time.Millisecond))
	for k, kind := range kinds {
		t.Logf("figure: Pod create to Running %s: p50 %s, p99 %s (%d Pods, %d at a time)", kind.name,
			percentile(toRunning[k], 50), percentile(toRunning[k], 99), len(toRunning[k]), figureWave)
	}
	for k, kind := range kinds {
		t.Logf("figure: create call %s: p50 %s, p99 %s", kind.name, percentile(createCall[k], 50), percentile(createCall[k], 99))
	}
	t.Logf("figure: added latency per create (p50 with minus p50 without): %s",
		percentile(createCall[1], 50)-percentile(createCall[0], 50))
	if rss, err := residentMemory(e.mutator.PID()); err != nil {
		t.Logf("mutator memory: %v", err)
	} else {
		t.Logf("figure: mutator resident memory after %d reviews or more: %s", 2*figurePods, rss)
	}
}

// percentile returns the nearest-rank p-th percentile, rounded to 1 ms.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sorted := slices.Clone(ds)
	slices.Sort(sorted)
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1].Round(time.Millisecond)
}

// residentMemory returns a process's VmRSS line from /proc.
func residentMemory(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strings.TrimSpace(rest), nil
		}
	}
	return "", fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
