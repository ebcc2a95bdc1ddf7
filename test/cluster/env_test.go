package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"

	"github.com/mutator-dev/mutator/test/cluster/node"
	"github.com/mutator-dev/mutator/test/cluster/registry"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// The registries, as containerd and the mutator see them: names that the
// namespace's /etc/hosts resolves to 127.0.0.1 (node.IsolateOptions.Hosts).
const (
	originName = "origin.test"
	mirrorName = "mirror.test"
	originHost = originName + ":5001"
	mirrorHost = mirrorName + ":5443"
	// mirrorRegistry is the mutator's REGISTRY: it replaces the origin's
	// host, so origin.test:5001/team/app:1 becomes
	// mirror.test:5443/mirror/team/app:1.
	mirrorRegistry = mirrorHost + "/mirror"
	// pullSecret is the mutator's IMAGE_PULL_SECRET; every test namespace
	// has it, holding pullUser's credentials for the mirror.
	pullSecret = "mirror-cred"
	pullUser   = "puller"
	// pushUser is how the test itself fills the mirror, so that its own
	// requests never count as pulls.
	pushUser = "pusher"
)

// originRef and mirrorRef name a test image at the origin and where the
// mutator sends it.
func originRef(repo string) string { return originHost + "/team/" + repo + ":1" }
func mirrorRef(repo string) string { return mirrorRegistry + "/team/" + repo + ":1" }

// env is the cluster the tests share.
type env struct {
	ca             *cluster.CA
	kube           *node.Node
	origin, mirror *registry.Server
	mutator        *mutatorProcess
	pullPassword   string
	// pushPassword is pushUser's, for images pushed during the tests.
	pushPassword string
	// binDir holds the binaries the host stage built.
	binDir string
	// nonce makes this run's image layers unique, and is what the image
	// volume's file says.
	nonce string
	// knative is Knative Serving, installed by the first test that needs it.
	knative knativeSetup
}

// setupEnv starts the registries, fills them, brings the node up and
// registers the mutator. On error, e holds what was started, for close.
func setupEnv(ctx context.Context, binDir string) (e *env, err error) {
	e = &env{nonce: randomHex(8), pullPassword: randomHex(16), pushPassword: randomHex(16), binDir: binDir}
	if e.ca, err = cluster.NewCA(); err != nil {
		return e, err
	}
	dir := node.WorkDir()
	if e.origin, err = startRegistry(e.ca, "origin", originName, originHost, nil, dir); err != nil {
		return e, err
	}
	users := map[string]string{pullUser: e.pullPassword, pushUser: e.pushPassword}
	if e.mirror, err = startRegistry(e.ca, "mirror", mirrorName, mirrorHost, users, dir); err != nil {
		return e, err
	}
	if err := pushImages(ctx, e); err != nil {
		return e, err
	}
	sandbox := filepath.Join(dir, "sandbox.tar")
	if err := writeSandboxImage(binDir, sandbox); err != nil {
		return e, err
	}
	e.kube, err = node.Start(ctx, node.Options{
		CA:             e.ca,
		Registries:     map[string][]byte{originHost: e.ca.CertPEM(), mirrorHost: e.ca.CertPEM()},
		SandboxImage:   sandboxRef,
		SandboxTarball: sandbox,
		Logf:           logger.Printf,
	})
	if err != nil {
		return e, err
	}
	if e.mutator, err = startMutator(ctx, filepath.Join(binDir, "mutator"), dir, e.ca); err != nil {
		return e, err
	}
	if err := registerWebhook(ctx, e.kube.Client(), e.mutator.url(), e.ca.CertPEM()); err != nil {
		return e, err
	}
	return e, nil
}

// startRegistry serves a registry on 127.0.0.1 at host's port with a
// certificate for name, logging to dir/registry-<label>.log.
func startRegistry(ca *cluster.CA, label, name, host string, users map[string]string, dir string) (*registry.Server, error) {
	_, port, err := net.SplitHostPort(host)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", label, err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{name}, nil)
	if err != nil {
		return nil, fmt.Errorf("issuing the %s registry's certificate: %w", label, err)
	}
	return registry.Start(registry.Options{
		Name: label, Addr: net.JoinHostPort("127.0.0.1", port), CertPEM: certPEM, KeyPEM: keyPEM,
		Users: users, LogPath: filepath.Join(dir, "registry-"+label+".log"),
	})
}

// close stops the mutator, the node and the registries; nil-safe.
func (e *env) close() {
	if e == nil {
		return
	}
	e.knative.stop()
	if err := e.mutator.stop(); err != nil {
		logger.Printf("%v", err)
	}
	e.kube.Stop()
	for _, r := range []*registry.Server{e.origin, e.mirror} {
		if err := r.Close(); err != nil {
			logger.Printf("closing registry: %v", err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}
