package cluster

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/test/cluster/node"
)

const (
	// buildTimeout bounds compiling the mutator and the image programs
	// (a cold Go cache takes most of it for the mutator).
	buildTimeout = 10 * time.Minute
	// setupTimeout bounds bringing up the node, registries and mutator.
	setupTimeout = 3 * time.Minute
	// keepEnv, set to 1, keeps the work directory (logs, configuration).
	keepEnv = "MUTATOR_CLUSTER_KEEP"
)

var (
	logger = log.New(os.Stderr, "cluster: ", log.Ltime|log.Lmicroseconds)
	// skipReason, when set, makes every test skip (see requireEnv).
	skipReason string
	// shared is the cluster every test uses, set up once by runTests.
	shared *env
)

// TestMain runs in one of three stages (see package node): in the host
// stage it builds the binaries and re-runs itself in fresh namespaces,
// where the init stage starts the test stage, which runs the tests.
func TestMain(m *testing.M) {
	switch node.CurrentStage() {
	case node.StageInit:
		os.Exit(node.InitMain())
	case node.StageTest:
		os.Exit(runTests(m))
	default:
		os.Exit(runHost(m))
	}
}

// runHost builds what the namespaces need (the module proxy is out of
// reach from inside), isolates, and reports anything the run left behind.
func runHost(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "needs root: it creates network, mount and PID namespaces and runs a kubelet"
		fmt.Println("test/cluster: skipped: " + skipReason)
		return m.Run()
	}
	code, err := node.Isolate(node.IsolateOptions{
		Prepare: func(workDir string) error {
			began := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
			defer cancel()
			if err := buildBinaries(ctx, filepath.Join(workDir, "bin")); err != nil {
				return err
			}
			logger.Printf("built the mutator and the image programs in %s", time.Since(began).Round(time.Millisecond))
			return nil
		},
		Hosts: []string{originName, mirrorName},
		Keep:  os.Getenv(keepEnv) == "1",
		Logf:  logger.Printf,
	})
	if err != nil {
		logger.Printf("%v", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// runTests sets the cluster up, runs the tests and tears it down; what a
// failure or a panic skips, the init stage's exit takes care of.
func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	e, err := setupEnv(ctx, filepath.Join(node.WorkDir(), "bin"))
	cancel()
	if err != nil {
		logger.Printf("setting the cluster up: %v", err)
		if e != nil && e.kube != nil {
			logger.Printf("log tails:\n%s", e.kube.LogTail(30))
		}
		e.close()
		return 1
	}
	shared = e
	code := m.Run()
	if code != 0 {
		logger.Printf("tests failed; log tails:\n%s\n%s", e.kube.LogTail(30), e.mutator.tail(30))
	}
	e.close()
	return code
}

// requireEnv returns the shared cluster, or skips the test saying why
// there is none.
func requireEnv(t *testing.T) *env {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	return shared
}
