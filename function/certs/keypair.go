package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	certresources "knative.dev/pkg/webhook/certificates/resources"
)

// secretKeyPair serves the key pair of the certificates Secret, read from the
// informer cache on every handshake, as knative's own webhook server does.
// Unlike knative's, it parses a Secret version once rather than on every
// handshake, and it keeps the last good pair while the Secret is broken,
// missing or emptied for a rotation: a certificate that is about to be
// replaced is better than failing every handshake until it is.
type secretKeyPair struct {
	secrets corelisters.SecretNamespaceLister
	name    string
	logger  *zap.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	version string // resourceVersion cert was parsed from
	// badVersion and badErr remember the last version that did not parse,
	// so that it is reported once rather than on every handshake.
	badVersion string
	badErr     error
}

func newSecretKeyPair(secrets corelisters.SecretNamespaceLister, name string, logger *zap.Logger) *secretKeyPair {
	return &secretKeyPair{secrets: secrets, name: name, logger: logger}
}

// GetCertificate implements tls.Config.GetCertificate.
func (k *secretKeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	secret, err := k.secrets.Get(k.name)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		if k.cert != nil {
			return k.cert, nil
		}
		return nil, fmt.Errorf("no serving certificate yet: reading Secret %s: %w", k.name, err)
	}
	if k.cert != nil && secret.ResourceVersion == k.version {
		return k.cert, nil
	}
	if secret.ResourceVersion != k.badVersion {
		cert, err := parseKeyPair(secret)
		if err == nil {
			k.cert, k.version = cert, secret.ResourceVersion
			k.badVersion, k.badErr = "", nil
			k.logger.Info("serving certificate loaded",
				zap.String("secret", k.name),
				zap.String("resourceVersion", secret.ResourceVersion),
				zap.Strings("dnsNames", cert.Leaf.DNSNames),
				zap.Time("notAfter", cert.Leaf.NotAfter))
			return k.cert, nil
		}
		k.badVersion, k.badErr = secret.ResourceVersion, err
		if k.cert != nil {
			k.logger.Warn("keeping the previous serving certificate", zap.Error(err))
		}
	}
	if k.cert != nil {
		return k.cert, nil
	}
	return nil, k.badErr
}

// parseKeyPair reads the server key pair the certificates controller writes.
func parseKeyPair(s *corev1.Secret) (*tls.Certificate, error) {
	certPEM, keyPEM := s.Data[certresources.ServerCert], s.Data[certresources.ServerKey]
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, fmt.Errorf("no serving certificate yet: Secret %s has no %s and %s (the certificates controller fills them)",
			s.Name, certresources.ServerCert, certresources.ServerKey)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("secret %s: parsing %s and %s: %w", s.Name, certresources.ServerCert, certresources.ServerKey, err)
	}
	if cert.Leaf == nil {
		return nil, errors.New("secret " + s.Name + ": no leaf certificate")
	}
	return &cert, nil
}
