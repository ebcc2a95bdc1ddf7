package loadgen

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// CertFiles are the files WriteCerts writes.
type CertFiles struct {
	CA   string // the CA certificate, for clients (-cacert)
	Cert string // the serving certificate (TLS_CERT_FILE)
	Key  string // its private key (TLS_KEY_FILE)
}

// WriteCerts writes a new test CA and a serving certificate signed by it,
// valid for localhost, 127.0.0.1 and ::1, into dir as ca.crt, tls.crt and
// tls.key.
func WriteCerts(dir string) (CertFiles, error) {
	ca, err := cluster.NewCA()
	if err != nil {
		return CertFiles{}, err
	}
	certPEM, keyPEM, err := ca.Issue([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return CertFiles{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CertFiles{}, fmt.Errorf("creating %s: %w", dir, err)
	}
	f := CertFiles{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{f.CA, ca.CertPEM(), 0o644}, {f.Cert, certPEM, 0o644}, {f.Key, keyPEM, 0o600}} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return CertFiles{}, fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	return f, nil
}
