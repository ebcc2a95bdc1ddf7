package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// dryRunCreate asks the API server to create (dry run, so that nothing
// runs) a Pod naming the origin, through admission.
func dryRunCreate(ctx context.Context, e *env, ns string) (*corev1.Pod, error) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "dry-"}, Spec: appPodSpec(originRef("app"), "")}
	return e.kube.Client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

// createStats counts dry-run creates sent while replicas churn.
type createStats struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
	total  atomic.Int64
	// denied counts creates refused at the first attempt, lost those
	// still refused after retries (as a controller retries), unmutated
	// those admitted without the rewrite.
	denied, lost, unmutated atomic.Int64
	mu                      sync.Mutex
	failures                []string // the first few, for the report
}

// Retries of a refused create: every retryInterval for up to
// retryFor, about how long endpoints take to drop a dead Pod.
const (
	retryInterval = 250 * time.Millisecond
	retryFor      = 5 * time.Second
)

// createContinuously sends dry-run creates from createWorkers workers
// until stop.
func (e *env) createContinuously(ctx context.Context, ns string) *createStats {
	ctx, cancel := context.WithCancel(ctx)
	s := &createStats{cancel: cancel}
	for range createWorkers {
		s.done.Go(func() {
			for ctx.Err() == nil {
				s.createOne(ctx, e, ns)
			}
		})
	}
	return s
}

// createOne sends one create, retrying it while it is refused.
func (s *createStats) createOne(ctx context.Context, e *env, ns string) {
	deadline := time.Now().Add(retryFor)
	for attempt := 0; ; attempt++ {
		pod, err := dryRunCreate(ctx, e, ns)
		if ctx.Err() != nil {
			return // the stop, not the webhook
		}
		if attempt == 0 {
			s.total.Add(1)
		}
		if err == nil {
			if img := pod.Spec.Containers[0].Image; img != mirrorRef("app") {
				s.unmutated.Add(1)
				s.note("unmutated: " + img)
			}
			return
		}
		if attempt == 0 {
			s.denied.Add(1)
			s.note(err.Error())
		}
		if time.Now().After(deadline) {
			s.lost.Add(1)
			s.note("lost after retries: " + err.Error())
			return
		}
		time.Sleep(retryInterval)
	}
}

func (s *createStats) note(failure string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 5 {
		s.failures = append(s.failures, failure)
	}
}

// stop stops the creates, logs the counts and fails the test on any
// unmutated or lost create, and on any refused one if strict.
func (s *createStats) stop(t *testing.T, strict bool) {
	t.Helper()
	s.cancel()
	s.done.Wait()
	total, denied, lost, unmutated := s.total.Load(), s.denied.Load(), s.lost.Load(), s.unmutated.Load()
	t.Logf("%d creates: %d refused at the first attempt, %d lost after retries, %d unmutated", total, denied, lost, unmutated)
	if total == 0 {
		t.Error("no create was sent")
	}
	if lost > 0 || unmutated > 0 || (strict && denied > 0) {
		t.Errorf("%d refused, %d lost and %d unmutated creates; first failures:\n  %s", denied, lost, unmutated, strings.Join(s.failures, "\n  "))
	}
}

// killContainer SIGKILLs every process named comm in the Pod with uid: a
// crash, which the kubelet answers with a restart. The test's PID namespace
// contains the containers', so their processes are visible here.
func killContainer(uid, comm string) ([]int, error) {
	pids, err := podProcesses(uid, comm)
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("killing %d: %w", pid, err)
		}
	}
	return pids, nil
}

// podProcesses finds the processes named comm in the cgroups of the Pod
// with uid (the cgroupfs driver names them pod<uid>).
func podProcesses(uid, comm string) ([]int, error) {
	paths, err := filepath.Glob("/proc/[0-9]*/cgroup")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, p := range paths {
		cgroups, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cgroups), "/pod"+uid+"/") {
			continue
		}
		dir := filepath.Dir(p)
		name, _ := os.ReadFile(filepath.Join(dir, "comm"))
		if strings.TrimSpace(string(name)) != comm {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(dir)); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process %s in Pod %s", comm, uid)
	}
	return pids, nil
}

// podMemory returns the resident memory of the Pod's mutator process.
func (e *env) podMemory(pod *corev1.Pod) (string, error) {
	pids, err := podProcesses(string(pod.UID), "mutator")
	if err != nil {
		return "", err
	}
	return residentMemory(pids[0])
}
