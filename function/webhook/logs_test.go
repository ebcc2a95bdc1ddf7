package webhook_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/webhook"
	"github.com/mutator-dev/mutator/internal/testkit"
)

type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *lockedBuffer) Sync() error { return nil }

// TestLogsHoldNoPodValues runs reviews at the most verbose level (LOG_LEVEL
// trace and debug map to zap's debug) and checks that what reaches the log
// names the request but never carries env values, secret references or
// other object content.
func TestLogsHoldNoPodValues(t *testing.T) {
	buf := &lockedBuffer{}
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zap.DebugLevel))
	cfg := config.Env{Registry: "registry.example.com/mirror", ImagePullSecret: "regcred",
		ImagePullPolicyToForce: "Always", Mode: config.Enforce, Warnings: true}
	c := testkit.Controller(t, cfg, logger)
	h, err := webhook.New(context.Background(), webhook.Options{Logger: logger}, c)
	if err != nil {
		t.Fatal(err)
	}
	body := testdata(t, "pod-review.json")
	for _, b := range [][]byte{body, []byte(`{"request":{"uid":"x","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":5}}}}`), []byte(`{"request":{},"request":null}`)} {
		post(h, b, "application/json")
	}
	out := buf.String()
	if !strings.Contains(out, `"uid":"7f3b2a10-4c5d-4e6f-8a9b-0c1d2e3f4a5b"`) {
		t.Fatalf("debug log lacks the review line with its uid; got:\n%s", out)
	}
	// Values that only appear inside the Pod object.
	for _, secret := range []string{"http://shop-api:8080", "shop-db", "DB_PASSWORD", "LOG_FORMAT", "6f1ed002ab5595859014ebf0951522d9"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains object content %q:\n%s", secret, out)
		}
	}
}
