package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
)

func TestCA(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		dnsNames []string
		ips      []net.IP
		verifyAs string // host name or IP the certificate must be valid for
	}{
		{"dns name", []string{"webhook.mutator.svc"}, nil, "webhook.mutator.svc"},
		{"loopback ip", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, "127.0.0.1"},
		{"ip only", nil, []net.IP{net.IPv6loopback}, "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tt.dnsNames, tt.ips)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				t.Fatalf("certificate and key do not pair: %v", err)
			}
			verify(t, ca, certPEM, x509.VerifyOptions{DNSName: tt.verifyAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		})
	}

	if _, _, err := ca.Issue(nil, nil); err == nil {
		t.Error("Issue with no names succeeded, want an error")
	}

	certPEM, _, err := ca.IssueClient("admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	cert := verify(t, ca, certPEM, x509.VerifyOptions{KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if cert.Subject.CommonName != "admin" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:masters" {
		t.Errorf("client subject = %v, want CN=admin, O=system:masters", cert.Subject)
	}
}

// verify checks certPEM chains to ca (as trusted through CertPEM, the way a
// caBundle is used) under opts, and returns the parsed certificate.
func verify(t *testing.T, ca *CA, certPEM []byte, opts x509.VerifyOptions) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM block in certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	opts.Roots = x509.NewCertPool()
	if !opts.Roots.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CertPEM is not a usable CA bundle")
	}
	if _, err := cert.Verify(opts); err != nil {
		t.Errorf("verifying certificate: %v", err)
	}
	return cert
}
