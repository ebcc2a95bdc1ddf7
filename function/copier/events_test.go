package copier

import (
	"encoding/json"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// TestEventContract pins the event types and the JSON field names, which
// the mutator and the copier (and any sink reading the records) share.
func TestEventContract(t *testing.T) {
	req := Request{Source: "docker.io/library/nginx:1.27", Target: "registry.example.com/mirror/library/nginx:1.27", Namespace: "shop", Pod: "web-"}
	ev, err := NewRequestEvent("mutator", req)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type() != "dev.mutator.mirror.copy.requested" || ev.Source() != "mutator" || ev.Subject() != req.Target || ev.ID() == "" ||
		ev.DataContentType() != cloudevents.ApplicationJSON {
		t.Errorf("request event attributes: %v", ev)
	}
	if got := string(ev.Data()); got != `{"source":"docker.io/library/nginx:1.27","target":"registry.example.com/mirror/library/nginx:1.27","namespace":"shop","pod":"web-"}` {
		t.Errorf("request data = %s", got)
	}
	back, err := RequestFromEvent(ev)
	if err != nil || back != req {
		t.Errorf("RequestFromEvent = %+v, %v; want %+v", back, err, req)
	}
	if _, err := NewRequestEvent("mutator", Request{Source: "x"}); err == nil {
		t.Error("request without target accepted")
	}
	wrong := ev.Clone()
	wrong.SetType(TypeSucceeded)
	if _, err := RequestFromEvent(wrong); err == nil {
		t.Error("RequestFromEvent accepted a result event")
	}
	bad := ev.Clone()
	if err := bad.SetData(cloudevents.ApplicationJSON, map[string]any{"source": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := RequestFromEvent(bad); err == nil {
		t.Error("RequestFromEvent accepted a number as source")
	}

	ok := Result{Source: req.Source, Target: req.Target, Digest: "sha256:" + strings.Repeat("a", 64), MediaType: "application/vnd.oci.image.index.v1+json",
		Manifests: 5, Bytes: 100, Uploaded: 90, DurationMs: 12, Shared: true,
		Referrers: []Referrer{{Digest: "sha256:" + strings.Repeat("b", 64), Subject: "sha256:" + strings.Repeat("a", 64), Tag: "sha256-" + strings.Repeat("a", 64) + ".sig"}}}
	rev, err := NewResultEvent("", ok)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Type() != "dev.mutator.mirror.copy.succeeded" || rev.Source() != DefaultEventSource || rev.Subject() != req.Target {
		t.Errorf("result event attributes: %v", rev)
	}
	var fields map[string]any
	if err := json.Unmarshal(rev.Data(), &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"source", "target", "digest", "mediaType", "manifests", "bytes", "uploaded", "referrers", "durationMs"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("result data lacks %q: %s", k, rev.Data())
		}
	}
	for _, k := range []string{"reason", "error", "Shared", "shared"} {
		if _, ok := fields[k]; ok {
			t.Errorf("result data of a success has %q: %s", k, rev.Data())
		}
	}
	got, err := ResultFromEvent(rev)
	ok.Shared = false
	if err != nil || got.Digest != ok.Digest || len(got.Referrers) != 1 || got.Referrers[0] != ok.Referrers[0] || !got.OK() {
		t.Errorf("ResultFromEvent = %+v, %v", got, err)
	}

	failed := Result{Source: req.Source, Target: req.Target, Reason: ReasonTooLarge, Error: "copy refused"}
	fev, err := NewResultEvent("copier", failed)
	if err != nil {
		t.Fatal(err)
	}
	if fev.Type() != "dev.mutator.mirror.copy.failed" || !strings.Contains(string(fev.Data()), `"reason":"too-large","error":"copy refused"`) {
		t.Errorf("failed event: %v", fev)
	}
	if _, err := ResultFromEvent(ev); err == nil {
		t.Error("ResultFromEvent accepted a request event")
	}
}

// TestRetriable: only transient reasons are worth asking again.
func TestRetriable(t *testing.T) {
	for _, r := range []Reason{ReasonInvalid, ReasonNotFound, ReasonDenied, ReasonTooLarge, ReasonMismatch, ReasonTimeout, ReasonBusy, ReasonError} {
		want := r == ReasonTimeout || r == ReasonBusy || r == ReasonError
		if got := (Result{Reason: r}).Retriable(); got != want {
			t.Errorf("%s: retriable %v, want %v", r, got, want)
		}
	}
}
