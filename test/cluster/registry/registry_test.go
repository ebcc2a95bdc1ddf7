package registry_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/mutator-dev/mutator/test/cluster/image"
	"github.com/mutator-dev/mutator/test/cluster/registry"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// host is the registry's name in references; the transport dials it on
// loopback. (go-containerregistry speaks plain HTTP to localhost and
// 127.0.0.1, so a name is needed to test TLS.)
const host = "registry.test"

func TestRegistryAuthAndLog(t *testing.T) {
	ca, err := cluster.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{host}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "registry.log")
	srv, err := registry.Start(registry.Options{
		Name: "mirror", Addr: "127.0.0.1:0", CertPEM: certPEM, KeyPEM: keyPEM,
		Users: map[string]string{"puller": "secret"}, LogPath: logPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	_, port, _ := net.SplitHostPort(srv.Addr())
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, srv.Addr())
		},
	}
	t.Cleanup(transport.CloseIdleConnections)
	ref := host + ":" + port + "/team/app:1"

	img, err := image.New([]image.File{{Path: "hello.txt", Content: []byte("hello\n"), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	if err := image.Push(t.Context(), img, ref, transport, "", ""); err == nil {
		t.Error("an anonymous push succeeded")
	}
	if err := image.Push(t.Context(), img, ref, transport, "puller", "wrong"); err == nil {
		t.Error("a push with a wrong password succeeded")
	}
	if err := image.Push(t.Context(), img, ref, transport, "puller", "secret"); err != nil {
		t.Fatalf("push with the right password: %v", err)
	}
	mark := srv.Count()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(tag, remote.WithTransport(transport), remote.WithAuth(&authn.Basic{Username: "puller", Password: "secret"}))
	if err != nil {
		t.Fatalf("HEAD of the manifest: %v", err)
	}
	if want, _ := img.Digest(); desc.Digest != want {
		t.Errorf("the registry serves %s, want %s", desc.Digest, want)
	}

	var served, refused int
	for _, r := range srv.Since(mark) {
		switch {
		case r.Status == http.StatusOK && r.User == "puller":
			served++
		case r.Status == http.StatusUnauthorized && r.User == "":
			refused++ // the client's first, anonymous try
		default:
			t.Errorf("unexpected request %s", r)
		}
	}
	if served == 0 {
		t.Errorf("no request recorded as served to puller: %v", srv.Since(mark))
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "HEAD /v2/team/app/manifests/1 user=puller status=200") {
		t.Errorf("the log lacks the manifest HEAD:\n%s", data)
	}
	if strings.Count(string(data), "\n") != srv.Count() {
		t.Errorf("the log has %d lines for %d requests", strings.Count(string(data), "\n"), srv.Count())
	}
}
