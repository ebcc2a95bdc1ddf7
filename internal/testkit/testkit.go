// Package testkit holds the helpers the module's tests share, so that each
// is written once: a configuration built the way the program builds it, the
// admission controller, applying a patch and decoding strictly.
package testkit

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"testing"

	"go.uber.org/zap"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	"github.com/mutator-dev/mutator/function/admission"
	"github.com/mutator-dev/mutator/function/config"
)

// Env returns env laid over config.Defaults(): the fields env sets win, the
// others keep their defaults, as variables left unset do. (A bool cannot be
// set back to false this way; no setting defaults to true.)
func Env(env config.Env) config.Env {
	out := config.Defaults()
	src, dst := reflect.ValueOf(env), reflect.ValueOf(&out).Elem()
	for i := range src.NumField() {
		if !src.Field(i).IsZero() {
			dst.Field(i).Set(src.Field(i))
		}
	}
	return out
}

// Config parses Env(env) as config.Load would, failing the test on an
// invalid configuration.
func Config(tb testing.TB, env config.Env) config.Config {
	tb.Helper()
	c, err := Env(env).Parse()
	if err != nil {
		tb.Fatalf("configuration %+v: %v", env, err)
	}
	return c
}

// Controller builds the admission controller of env, as the webhook does.
func Controller(tb testing.TB, env config.Env, logger *zap.Logger, observers ...admission.Observer) *admission.Controller {
	tb.Helper()
	c := Config(tb, env)
	return admission.New(c.Rules, c.Review, logger, observers...)
}

// ApplyPatch applies a JSON patch to doc with the library the API server
// uses; an empty patch returns doc as it is.
func ApplyPatch(tb testing.TB, doc, patch []byte) []byte {
	tb.Helper()
	if len(patch) == 0 {
		return doc
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		tb.Fatalf("decoding patch %s: %v", patch, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		tb.Fatalf("applying patch %s: %v", patch, err)
	}
	return out
}

// DecodeStrict decodes js into v, failing on unknown fields and type
// errors, so that a patch that writes a misspelt field fails the test.
func DecodeStrict(tb testing.TB, js []byte, v any) {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		tb.Fatalf("decoding %T from %s: %v", v, js, err)
	}
}

// Metrics returns the Prometheus text a process serves on the loopback
// port's /metrics.
func Metrics(tb testing.TB, port int) string {
	tb.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading /metrics: %v", err)
	}
	return string(b)
}
