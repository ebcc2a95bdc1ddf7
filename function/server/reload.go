package server

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"
)

// keyPairReloader serves the key pair on disk, re-reading it when either
// file's modification time or size changes. A broken update keeps the last
// good pair, so a half-written renewal cannot take the webhook down.
type keyPairReloader struct {
	certFile, keyFile string
	logger            *zap.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	version string
	lastErr string // the last reload error reported, "" when none
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func newKeyPairReloader(certFile, keyFile string, logger *zap.Logger) (*keyPairReloader, error) {
	k := &keyPairReloader{certFile: certFile, keyFile: keyFile, logger: logger}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// GetCertificate implements tls.Config.GetCertificate. It runs once per TLS
// handshake; with keep-alive connections from the API server that is rare,
// so two stat calls per handshake cost nothing measurable.
func (k *keyPairReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	err := k.reload()
	k.mu.Lock()
	defer k.mu.Unlock()
	// Logged when the problem changes, not on every handshake: a broken
	// renewal would otherwise flood the log at the rate of new connections.
	if msg := errString(err); msg != k.lastErr {
		k.lastErr = msg
		if err != nil {
			k.logger.Warn("keeping the previous TLS key pair", zap.Error(err))
		} else {
			k.logger.Info("TLS key pair reloaded")
		}
	}
	return k.cert, nil
}

func (k *keyPairReloader) reload() error {
	v, err := fileVersion(k.certFile, k.keyFile)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && v == k.version {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS key pair %s, %s: %w", k.certFile, k.keyFile, err)
	}
	k.cert, k.version = &cert, v
	return nil
}

func fileVersion(files ...string) (string, error) {
	v := ""
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("reading TLS file: %w", err)
		}
		v += fmt.Sprintf("%s:%d:%d;", f, st.ModTime().UnixNano(), st.Size())
	}
	return v, nil
}
