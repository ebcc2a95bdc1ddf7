package e2e

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/internal/testkit/mutatorbin"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// Package-wide state, set up once by TestMain and read-only afterwards.
var (
	// kube is the one etcd + kube-apiserver pair every test shares.
	kube *cluster.Cluster
	// mutatorBin is the mutator binary built from ./cmd/mutator.
	mutatorBin string
	// webhookCA signs the mutators' serving certificate; its PEM is the
	// webhook configurations' caBundle.
	webhookCA *cluster.CA
	// servingCert and servingKey are files holding a certificate for
	// 127.0.0.1, shared by every mutator process.
	servingCert, servingKey string
	// workDir holds the binary, the certificate and the mutator logs.
	workDir string
)

const (
	buildTimeout   = 5 * time.Minute
	clusterTimeout = 90 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain sets up, runs the tests and always tears down, mutators first (they
// are stopped by PID in stopAllMutators) and then the cluster.
func runMain(m *testing.M) (code int) {
	logger := log.New(os.Stderr, "e2e: ", log.Ltime|log.Lmicroseconds)
	fail := func(format string, args ...any) int {
		logger.Printf(format, args...)
		return 1
	}

	var err error
	if workDir, err = os.MkdirTemp("", "mutator-e2e-"); err != nil {
		return fail("creating work directory: %v", err)
	}
	defer os.RemoveAll(workDir)

	began := time.Now()
	if mutatorBin, err = buildMutator(workDir); err != nil {
		return fail("%v", err)
	}
	logger.Printf("built %s in %s", mutatorBin, time.Since(began).Round(time.Millisecond))

	if err := writeServingCert(workDir); err != nil {
		return fail("%v", err)
	}

	began = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	kube, err = cluster.Start(ctx, cluster.Options{StartTimeout: clusterTimeout, Logf: logger.Printf})
	cancel()
	if err != nil {
		return fail("starting cluster: %v", err)
	}
	defer kube.Stop()
	logger.Printf("cluster ready at %s in %s", kube.URL(), time.Since(began).Round(time.Millisecond))

	defer func() {
		// Shared mutators outlive the tests that started them; a non-zero
		// exit on SIGTERM fails the run even though no test is left to fail.
		if err := stopAllMutators(); err != nil {
			logger.Printf("stopping mutators: %v", err)
			code = 1
		}
	}()

	code = m.Run()
	if code != 0 {
		logger.Printf("tests failed; control-plane log tails:\n%s", kube.LogTail(30))
	}
	return code
}

// buildMutator builds ./cmd/mutator from the repository root into dir.
func buildMutator(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	return mutatorbin.Build(ctx, dir)
}

// writeServingCert creates the webhook CA and one serving certificate for
// 127.0.0.1 and webhookHost, where the API server calls every mutator.
func writeServingCert(dir string) error {
	var err error
	if webhookCA, err = cluster.NewCA(); err != nil {
		return err
	}
	certPEM, keyPEM, err := webhookCA.Issue([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP(webhookHost)})
	if err != nil {
		return fmt.Errorf("issuing webhook serving certificate: %w", err)
	}
	servingCert, servingKey = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(servingCert, certPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(servingKey, keyPEM, 0o600)
}
