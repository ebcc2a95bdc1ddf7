package loadgen

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestRSS(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if rss < 1<<20 {
		t.Fatalf("RSS of this test is %d bytes, want at least 1 MiB", rss)
	}
	if _, err := RSS(-1); err == nil {
		t.Fatal("RSS of pid -1 succeeded")
	}
}

func TestWriteCertsServe(t *testing.T) {
	files, err := WriteCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ReadinessPath, func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Handler: mux, ReadHeaderTimeout: time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}}
	go func() { _ = srv.ListenAndServeTLS("", "") }()
	defer srv.Close()
	clientTLS, err := LoadCA(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitReady(ctx, clientTLS, "https://127.0.0.1:"+strconv.Itoa(port)+"/mutate", nil); err != nil {
		t.Fatal(err)
	}
}
