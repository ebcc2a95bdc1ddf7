package copier

import (
	"errors"
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/google/uuid"
)

// The event contract between the mutator (MIRROR_MISSING=copy) and the
// copier function. Types follow the mutator's audit events
// (dev.mutator.<resource>.<what>, see function/events); data is JSON
// (application/json): Request for TypeRequested, Result for the other two.
const (
	// TypeRequested asks the copier to copy Request.Source to
	// Request.Target. The mutator sends it when it denies a Pod whose
	// image the mirror lacks.
	TypeRequested = "dev.mutator.mirror.copy.requested"
	// TypeSucceeded records a copy that completed: the mirror serves
	// Result.Target at Result.Digest, which equals the origin's digest,
	// with the referrers listed in Result.Referrers.
	TypeSucceeded = "dev.mutator.mirror.copy.succeeded"
	// TypeFailed records a copy that did not complete; Result.Reason and
	// Result.Error say why.
	TypeFailed = "dev.mutator.mirror.copy.failed"
)

// DefaultEventSource is the source attribute of the copier's result events.
const DefaultEventSource = "mutator/copier"

// Request is the data of a TypeRequested event, and Copy's input.
type Request struct {
	// Source is the image reference to copy from (the one the Pod's
	// spec names before the rewrite), by tag or by digest:
	// "docker.io/library/nginx:1.27", "nginx@sha256:...".
	Source string `json:"source"`
	// Target is the mirror reference to copy to (the rewritten image):
	// "registry.example.com/mirror/library/nginx:1.27". A digest in it
	// must equal the source's; a tag in it is set on the mirror.
	Target string `json:"target"`
	// Namespace and Pod say who needed the image, for logs and the
	// result's records; the copy does not depend on them. Pod is the name,
	// or the generateName prefix of a Pod named after admission.
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
}

// Reason classifies a failed copy. Result.Retriable tells the transient
// ones apart.
type Reason string

// The reasons of a failed copy.
const (
	// ReasonInvalid: a reference does not parse, names the same image
	// twice, or is outside the copier's allowed sources or targets.
	ReasonInvalid Reason = "invalid"
	// ReasonNotFound: the origin has no such manifest.
	ReasonNotFound Reason = "not-found"
	// ReasonDenied: a registry refused the copier's credentials (401, 403).
	ReasonDenied Reason = "denied"
	// ReasonTooLarge: the image and its referrers exceed MaxBytes or
	// MaxManifests; nothing was transferred.
	ReasonTooLarge Reason = "too-large"
	// ReasonMismatch: the target names a digest other than the origin's,
	// or the mirror answered with another digest after the copy.
	ReasonMismatch Reason = "digest-mismatch"
	// ReasonTimeout: the copy did not finish within its timeout. What it
	// uploaded stays; the next copy skips it.
	ReasonTimeout Reason = "timeout"
	// ReasonBusy: no copy slot (MaxConcurrent) freed within the timeout.
	ReasonBusy Reason = "busy"
	// ReasonError: any other failure (a registry's 5xx, a refused
	// connection, TLS, the copier shutting down).
	ReasonError Reason = "error"
)

// Result is the data of a TypeSucceeded or TypeFailed event, and Copy's
// output.
type Result struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Digest is the origin's manifest digest (the index's, for a
	// multi-platform image), which the mirror now serves for Target.
	// Empty when the origin could not be read.
	Digest string `json:"digest,omitempty"`
	// MediaType is that manifest's media type.
	MediaType string `json:"mediaType,omitempty"`
	// Manifests counts the manifests copied or found present: the image's
	// (index and platform manifests) and its referrers'.
	Manifests int `json:"manifests"`
	// Bytes is the size of what the copy had to transfer: the manifests
	// and distinct blobs of the image and referrers the mirror lacked (by
	// manifest) when the copy started. MaxBytes bounds it, checked before
	// anything is transferred.
	Bytes int64 `json:"bytes"`
	// Uploaded is what was actually sent to the mirror (blob and manifest
	// bodies): less than Bytes when the mirror had some blobs already, 0
	// when it had everything.
	Uploaded int64 `json:"uploaded"`
	// Referrers lists what was copied along with the image: OCI referrers
	// (signatures, SBOMs, attestations; Tag empty) and cosign's tag-scheme
	// signatures, attestations and SBOMs (Tag "sha256-<hex>.sig" etc.).
	Referrers []Referrer `json:"referrers,omitempty"`
	// DurationMs is the copy's wall time in milliseconds, waiting for a
	// slot excluded.
	DurationMs int64 `json:"durationMs"`
	// Reason and Error are set when the copy failed.
	Reason Reason `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Shared is true when this Copy call joined a copy of the same source
	// and target already in flight (and got its result). Not part of the
	// event data.
	Shared bool `json:"-"`
	// ID identifies the copy; NewResultEvent makes it the event's id, so
	// that the reply to a request and the record sent to K_SINK are one
	// event to a sink that deduplicates (by source and id). Not part of
	// the event data.
	ID string `json:"-"`
}

// Referrer is one manifest copied because it refers to the image.
type Referrer struct {
	Digest       string `json:"digest"`
	MediaType    string `json:"mediaType,omitempty"`
	ArtifactType string `json:"artifactType,omitempty"`
	// Subject is the digest of the manifest it refers to: the image's, a
	// platform manifest's or another referrer's.
	Subject string `json:"subject"`
	// Tag is the cosign tag it was found at ("sha256-<hex>.sig", ".att",
	// ".sbom") and copied to; empty for an OCI referrer.
	Tag string `json:"tag,omitempty"`
}

// OK reports whether the copy succeeded.
func (r Result) OK() bool { return r.Reason == "" && r.Error == "" }

// Retriable reports whether a failed copy may succeed if asked again
// without any change: a timeout, no free slot, or another transient
// failure. Invalid requests, missing images, refused credentials, size
// bounds and digest mismatches are not.
func (r Result) Retriable() bool {
	switch r.Reason {
	case ReasonTimeout, ReasonBusy, ReasonError:
		return true
	}
	return false
}

// Validate checks a request's required fields (not the references'
// syntax, which Copy checks).
func (r Request) Validate() error {
	switch {
	case r.Source == "":
		return errors.New("copy request: source is empty")
	case r.Target == "":
		return errors.New("copy request: target is empty")
	}
	return nil
}

// NewRequestEvent builds a TypeRequested event for req with the given
// source attribute (the mutator uses its own, "mutator"). Its id is a fresh
// UUID (set another with SetID, e.g. to let a sink deduplicate retries), its
// subject the target reference.
func NewRequestEvent(source string, req Request) (cloudevents.Event, error) {
	if err := req.Validate(); err != nil {
		return cloudevents.Event{}, err
	}
	return newEvent(source, TypeRequested, req.Target, req)
}

// RequestFromEvent reads a TypeRequested event's data.
func RequestFromEvent(ev cloudevents.Event) (Request, error) {
	if ev.Type() != TypeRequested {
		return Request{}, fmt.Errorf("copy request: event type %q, want %q", ev.Type(), TypeRequested)
	}
	var req Request
	if err := ev.DataAs(&req); err != nil {
		return Request{}, fmt.Errorf("copy request: event data: %w", err)
	}
	return req, req.Validate()
}

// NewResultEvent builds the TypeSucceeded or TypeFailed event recording res,
// with the given source attribute (DefaultEventSource if empty). Its subject
// is the target reference, its id res.ID (a fresh UUID if empty).
func NewResultEvent(source string, res Result) (cloudevents.Event, error) {
	if source == "" {
		source = DefaultEventSource
	}
	typ := TypeSucceeded
	if !res.OK() {
		typ = TypeFailed
	}
	ev, err := newEvent(source, typ, res.Target, res)
	if err == nil && res.ID != "" {
		ev.SetID(res.ID)
	}
	return ev, err
}

// ResultFromEvent reads a TypeSucceeded or TypeFailed event's data.
func ResultFromEvent(ev cloudevents.Event) (Result, error) {
	if ev.Type() != TypeSucceeded && ev.Type() != TypeFailed {
		return Result{}, fmt.Errorf("copy result: event type %q, want %q or %q", ev.Type(), TypeSucceeded, TypeFailed)
	}
	var res Result
	if err := ev.DataAs(&res); err != nil {
		return Result{}, fmt.Errorf("copy result: event data: %w", err)
	}
	return res, nil
}

func newEvent(source, typ, subject string, data any) (cloudevents.Event, error) {
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetSource(source)
	ev.SetType(typ)
	ev.SetSubject(subject)
	ev.SetTime(time.Now())
	if err := ev.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return cloudevents.Event{}, fmt.Errorf("building %s event: %w", typ, err)
	}
	if err := ev.Validate(); err != nil {
		return cloudevents.Event{}, fmt.Errorf("building %s event: %w", typ, err)
	}
	return ev, nil
}
