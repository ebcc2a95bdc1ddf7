package app

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"testing"
)

// rootsChildEnv marks the re-executed test binary of TestPublicRootsWithoutSystemCertificates.
const rootsChildEnv = "MUTATOR_TEST_ROOTS_CHILD"

// TestPublicRootsWithoutSystemCertificates: with no system certificates
// (SSL_CERT_FILE and SSL_CERT_DIR name nothing, as in an image without
// /etc/ssl), a public root still verifies: the binary carries its own.
// The system pool is computed once per process, so the check runs in a
// child process with that environment.
func TestPublicRootsWithoutSystemCertificates(t *testing.T) {
	if os.Getenv(rootsChildEnv) == "1" {
		verifyPublicRoot(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPublicRootsWithoutSystemCertificates$", "-test.v")
	empty := t.TempDir()
	cmd.Env = append(os.Environ(), rootsChildEnv+"=1", "SSL_CERT_FILE="+empty+"/none.pem", "SSL_CERT_DIR="+empty)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a process without system certificates: %v\n%s", err, out)
	}
}

// verifyPublicRoot verifies ISRG Root X1 (Let's Encrypt's root, valid to
// 2035) against the system pool: it verifies only if the pool holds it.
func verifyPublicRoot(t *testing.T) {
	data, err := os.ReadFile("testdata/isrg-root-x1.pem")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("testdata/isrg-root-x1.pem holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		t.Fatalf("no system pool: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("a public root does not verify without system certificates: %v", err)
	}
}
