package app_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/mutator-dev/mutator/function/app"
	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/mirror/mirrortest"
	"github.com/mutator-dev/mutator/internal/testkit"
)

// TestAppMirrorCopy: through app.New and the real handler, with
// MIRROR_MISSING=copy and MIRROR_COPY_SINK, a Pod whose images the mirror
// lacks is denied as being copied, and the copy requests reach the sink
// (a CloudEvents receiver), one per image however often the Pod is
// retried; the audit trail (K_SINK) is a sink of its own.
func TestAppMirrorCopy(t *testing.T) {
	reg := mirrortest.New(t, mirrortest.Options{})
	body, err := os.ReadFile("../../test/testdata/pod-review.json")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string][]cloudevents.Event{}
	sink := func(name string) string {
		p, err := cloudevents.NewHTTP()
		if err != nil {
			t.Fatal(err)
		}
		h, err := cloudevents.NewHTTPReceiveHandler(t.Context(), p, func(ev cloudevents.Event) {
			mu.Lock()
			defer mu.Unlock()
			got[name] = append(got[name], ev)
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL + "/"
	}
	cfg := config.Env{Registry: reg.Host + "/mirror", ImagePullPolicyToForce: "Always", Mode: config.Enforce, LogLevel: "error",
		MirrorCheck: true, MirrorCheckTimeout: time.Second, MirrorCheckReviewBudget: 2 * time.Second,
		MirrorMissing: "copy", MirrorUnreachable: "rewrite", MirrorCacheTTL: time.Minute, MirrorNegativeCacheTTL: time.Minute,
		MirrorCircuitFailures: 5, MirrorCircuitCooldown: time.Minute,
		MirrorCopySink: sink("copy"), Sink: sink("audit")}
	a, err := app.New(context.Background(), testkit.Config(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			a.Close(context.Background())
		}
	}()
	for range 3 {
		req := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		a.Handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("review answered %d: %.300s", rec.Code, rec.Body)
		}
		for _, w := range []string{`"allowed":false`, `is not on the mirror yet: being copied from \"docker.io/library/nginx:1.27.3`,
			`the controller's retry admits the Pod once it is there`} {
			if !strings.Contains(rec.Body.String(), w) {
				t.Fatalf("answer lacks %q: %.900s", w, rec.Body)
			}
		}
	}
	closed = true
	if err := a.Close(context.Background()); err != nil { // drains both queues
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	targets := map[string]bool{}
	for _, ev := range got["copy"] {
		r, err := copier.RequestFromEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(r.Target, reg.Host+"/mirror/") || r.Namespace == "" || targets[r.Target] {
			t.Errorf("request %+v: want a distinct target on the mirror, and the namespace", r)
		}
		targets[r.Target] = true
	}
	// The review's Pod lists four distinct images (one by digest).
	if len(got["copy"]) != 4 {
		t.Errorf("the copy sink got %d requests for 3 reviews, want 4 (one per image): %v", len(got["copy"]), targets)
	}
	for _, ev := range got["audit"] {
		if ev.Type() == copier.TypeRequested {
			t.Error("a copy request reached the audit trail's sink")
		}
	}
	if len(got["audit"]) != 3 {
		t.Errorf("the audit sink got %d events, want 3 (one denial per review)", len(got["audit"]))
	}
}
