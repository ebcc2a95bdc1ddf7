//go:build linux && soak

package soak

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mutator-dev/mutator/internal/testkit/mutatorbin"
	"github.com/mutator-dev/mutator/test/load/loadgen"
)

// Set up once by TestMain, read-only afterwards.
var (
	mutatorBin string
	certs      loadgen.CertFiles
	podReview  []byte
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mutator-soak-")
	if err != nil {
		log.Printf("soak: %v", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if mutatorBin, err = binary(dir); err != nil {
		log.Printf("soak: %v", err)
		return 1
	}
	if certs, err = loadgen.WriteCerts(filepath.Join(dir, "certs")); err != nil {
		log.Printf("soak: %v", err)
		return 1
	}
	if podReview, err = os.ReadFile(filepath.Join("..", "testdata", "pod-review.json")); err != nil {
		log.Printf("soak: %v", err)
		return 1
	}
	return m.Run()
}

// binary returns MUTATOR_BIN, or builds ./cmd/mutator into dir.
func binary(dir string) (string, error) {
	if bin := os.Getenv("MUTATOR_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return "", fmt.Errorf("MUTATOR_BIN: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("MUTATOR_BIN: %w", err)
		}
		return abs, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return mutatorbin.Build(ctx, dir)
}
