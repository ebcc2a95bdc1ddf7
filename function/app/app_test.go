package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mutator-dev/mutator/function/app"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/internal/testkit"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startApp assembles the webhook with metrics on a free port, closed when
// the test ends.
func startApp(t *testing.T) (*app.App, int) {
	t.Helper()
	port := freePort(t)
	cfg := config.Env{Registry: "registry.example.com/mirror", ImagePullPolicyToForce: "Always",
		Mode: config.Enforce, LogLevel: "error", MetricsPort: port}
	a, err := app.New(context.Background(), testkit.Config(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	if err := a.StartMetrics(); err != nil {
		t.Fatal(err)
	}
	return a, port
}

// TestAppServesReviewsAndMetrics assembles the webhook as every mode does and
// checks that one review shows in both our metrics and knative's.
func TestAppServesReviewsAndMetrics(t *testing.T) {
	a, port := startApp(t)
	body, err := os.ReadFile("../../test/testdata/pod-review.json")
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	a.Handler.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"patch"`) {
		t.Fatalf("review answered %d: %.300s", rec.Code, rec.Body)
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`mutator_reviews_total{operation="CREATE",resource="pods",result="patched"} 1`,
		`mutator_changes_total{kind="image"} 4`,
		`kn_webhook_handler_duration_seconds_count`,
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestAppRejectsBadSink(t *testing.T) {
	cfg := config.Env{ImagePullPolicyToForce: "Always", Mode: config.Enforce, LogLevel: "error", Sink: "not a url"}
	if _, err := app.New(context.Background(), testkit.Config(t, cfg)); err == nil || !strings.Contains(err.Error(), "K_SINK") {
		t.Fatalf("bad sink accepted or unclear error: %v", err)
	}
}

// TestMetricsBoundedUnderRandomKinds posts reviews of made-up kinds,
// groups, versions, operations and subresources straight to the handler, as
// anyone who reaches the port can, and checks that they create no new
// series: knative's handler metric takes its labels from the review.
func TestMetricsBoundedUnderRandomKinds(t *testing.T) {
	a, port := startApp(t)
	scrape := func() string {
		t.Helper()
		return testkit.Metrics(t, port)
	}
	post := func(i int) {
		body := fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u%d",
			"kind":{"group":"g%d.example.com","version":"v%d","kind":"Kind%d"},"resource":{"group":"g%d","version":"v%d","resource":"r%d"},
			"subResource":"s%d","operation":"OP%d","namespace":"ns","object":{}}}`, i, i, i, i, i, i, i, i, i)
		req := httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		a.Handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("review %d answered %d: %.300s", i, rec.Code, rec.Body)
		}
	}
	series := func(text string) int {
		n := 0
		for _, line := range strings.Split(text, "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				n++
			}
		}
		return n
	}
	for i := range 10 {
		post(i)
	}
	before := scrape()
	for i := 10; i < 2000; i++ {
		post(i)
	}
	after := scrape()
	t.Logf("/metrics after 10 random-kind reviews: %d bytes, %d series; after 2,000: %d bytes, %d series",
		len(before), series(before), len(after), series(after))
	// Go runtime and process collectors may add a few series as the
	// process runs; made-up labels would add thousands.
	if series(after) > series(before)+20 || strings.Contains(after, "Kind1999") || strings.Contains(after, "OP1999") {
		t.Fatalf("series grew from %d to %d with made-up kinds", series(before), series(after))
	}
}
