package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// The identities the components authenticate as. The default RBAC roles
// of kube-apiserver already bind each of these user names.
var componentUsers = map[string][]string{
	"admin":                   {"admin", "system:masters"},
	"kubelet":                 {"system:node:" + NodeName, "system:nodes"},
	"kube-controller-manager": {"system:kube-controller-manager"},
	"kube-scheduler":          {"system:kube-scheduler"},
	"kube-proxy":              {"system:kube-proxy"},
	"coredns":                 {dnsUser},
}

// pki holds the paths of the certificates, keys and kubeconfigs in dir.
type pki struct {
	dir string
	ca  *cluster.CA
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// kubeconfig returns the kubeconfig path of a componentUsers entry.
func (p *pki) kubeconfig(component string) string { return p.path(component + ".kubeconfig") }

// writePKI writes into dir: ca.crt; the apiserver's serving certificate
// (for 127.0.0.1, the node IP and the kubernetes Service), its client
// certificate towards the kubelet, the kubelet's serving certificate, the
// service-account key pair and one kubeconfig per componentUsers entry.
func writePKI(dir string, ca *cluster.CA, apiserverURL string) (*pki, error) {
	p := &pki{dir: dir, ca: ca}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating certificate directory: %w", err)
	}
	files := map[string][]byte{"ca.crt": ca.CertPEM()}
	add := func(name string, cert, key []byte, err error) error {
		if err != nil {
			return fmt.Errorf("issuing %s certificate: %w", name, err)
		}
		files[name+".crt"], files[name+".key"] = cert, key
		return nil
	}
	loopback, nodeIP, serviceIP := net.IPv4(127, 0, 0, 1), net.ParseIP(NodeIP), net.ParseIP(APIServiceIP)
	cert, key, err := ca.Issue([]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc.cluster.local"}, []net.IP{loopback, nodeIP, serviceIP})
	if err := add("apiserver", cert, key, err); err != nil {
		return nil, err
	}
	cert, key, err = ca.IssueClient("kube-apiserver-kubelet-client", "system:masters")
	if err := add("apiserver-kubelet-client", cert, key, err); err != nil {
		return nil, err
	}
	cert, key, err = ca.Issue([]string{NodeName, "localhost"}, []net.IP{nodeIP, loopback})
	if err := add("kubelet-serving", cert, key, err); err != nil {
		return nil, err
	}
	for component, id := range componentUsers {
		cert, key, err := ca.IssueClient(id[0], id[1:]...)
		if err != nil {
			return nil, fmt.Errorf("issuing %s client certificate: %w", component, err)
		}
		if files[component+".kubeconfig"], err = kubeconfigJSON(apiserverURL, ca.CertPEM(), cert, key); err != nil {
			return nil, err
		}
	}
	if files["sa.key"], files["sa.pub"], err = serviceAccountKeys(); err != nil {
		return nil, err
	}
	for name, data := range files {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return p, nil
}

// serviceAccountKeys returns a PEM private key (PKCS #8) and public key
// for signing and checking service-account tokens.
func serviceAccountKeys() (private, public []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating service-account key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshaling service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("marshaling service-account public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// kubeconfigJSON renders a kubeconfig; JSON is YAML, and encoding/json
// base64-encodes the []byte *-data fields as kubeconfig wants.
func kubeconfigJSON(server string, caPEM, certPEM, keyPEM []byte) ([]byte, error) {
	type m = map[string]any
	data, err := json.MarshalIndent(m{
		"apiVersion":      "v1",
		"kind":            "Config",
		"clusters":        []m{{"name": "node", "cluster": m{"server": server, "certificate-authority-data": caPEM}}},
		"users":           []m{{"name": "user", "user": m{"client-certificate-data": certPEM, "client-key-data": keyPEM}}},
		"contexts":        []m{{"name": "node", "context": m{"cluster": "node", "user": "user"}}},
		"current-context": "node",
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding kubeconfig: %w", err)
	}
	return data, nil
}
