// Package admission is the webhook's admission controller in the sense of
// knative.dev/pkg/webhook: Path and Admit. Admit decodes the object, asks the
// pure rules in package mutation for changes and turns them into an
// AdmissionResponse; observers (metrics, the audit trail) are told the outcome.
package admission

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/webhook"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/images"
	"github.com/mutator-dev/mutator/function/mutation"
)

// Path is where the webhook serves AdmissionReviews.
const Path = "/mutate"

// Verdict is what a review came to; it labels metrics, logs, audit
// annotations and events.
type Verdict string

// The verdicts of a review.
const (
	Patched   Verdict = "patched"   // enforce mode, a patch was returned
	Audited   Verdict = "audited"   // audit mode, changes were reported as warnings only
	Unchanged Verdict = "unchanged" // nothing to change
	Excluded  Verdict = "excluded"  // namespace in EXCLUDE_NAMESPACES
	Skipped   Verdict = "skipped"   // a kind, operation or subresource the webhook does not handle
	Rejected  Verdict = "rejected"  // the object could not be decoded
	Denied    Verdict = "denied"    // enforce mode, an image no allowed registry (or the mirror) can serve
)

// Decision is what one review decided. It is built in stages, each a
// function of the one before: the rules (Controller.decide), the mirror
// check (mirrorCheck.apply), then Controller.answer, the one place that
// turns it into the AdmissionResponse and sets the Verdict. Observers are
// told the result. Only Patched and Audited decisions carry changes; Denied
// and Audited ones carry the images that cannot be pulled. Observers must
// not keep Request beyond Observe: it holds the raw objects.
type Decision struct {
	Request *admissionv1.AdmissionRequest
	// Object is the decoded object's metadata: a Pod created from a
	// template has a generateName but no name yet.
	Object  mutation.Metadata
	Verdict Verdict
	Changes []mutation.Change
	// Problems are the images no allowed registry can serve (the rules'),
	// then those the mirror check denies.
	Problems []mutation.Problem
	// MirrorFallbacks are the images whose mirror check (MIRROR_CHECK) did
	// not come back present, and what was done with each.
	MirrorFallbacks []MirrorFallback
	Duration        time.Duration

	err          error              // Rejected: why the object could not be read
	mirrorWarns  []string           // the mirror stage's warnings, given whatever WARNINGS says
	mirrorDenied []mutation.Problem // the mirror stage's denials, worded by mirrorWarns in audit mode
}

// Observer is told the outcome of every review. Observe runs on the request
// path, so it must not block: send anything slow to a queue.
type Observer interface {
	Observe(ctx context.Context, o Decision)
}

// Controller implements knative.dev/pkg/webhook.AdmissionController.
type Controller struct {
	// Stateless: Admit needs no informer, so the webhook answers as soon as
	// it listens, which keeps a scale-from-zero start short.
	webhook.StatelessAdmissionImpl

	rules     *mutation.Rules
	logger    *zap.Logger
	excluded  func(namespace string) bool
	audit     bool
	warnings  bool
	observers []Observer
	mirror    *mirrorCheck // nil: MIRROR_CHECK is off
}

var _ webhook.AdmissionController = (*Controller)(nil)

// New builds the controller from the parsed rules and review settings.
func New(rules mutation.Options, review config.Review, logger *zap.Logger, observers ...Observer) *Controller {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Controller{
		rules:     mutation.New(rules),
		logger:    logger,
		excluded:  review.Excluded,
		audit:     review.Audit(),
		warnings:  review.Warnings,
		observers: observers,
	}
}

// Path implements webhook.AdmissionController.
func (c *Controller) Path() string { return Path }

// Admit implements webhook.AdmissionController.
func (c *Controller) Admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	start := time.Now()
	if req == nil {
		return webhook.MakeErrorStatus("admission review has no request")
	}
	resp, out := c.admit(ctx, req)
	out.Request, out.Duration = req, time.Since(start)
	out.err, out.mirrorWarns, out.mirrorDenied = nil, nil, nil
	// knative's request logger is kept at warn level (see package webhook),
	// so the controller logs through its own.
	if c.logger.Core().Enabled(zap.DebugLevel) {
		c.logger.Debug("reviewed",
			zap.String("uid", string(req.UID)),
			zap.String("kind", req.Kind.Kind),
			zap.String("namespace", req.Namespace),
			zap.String("name", req.Name),
			zap.String("operation", string(req.Operation)),
			zap.String("subresource", req.SubResource),
			zap.Bool("dryRun", req.DryRun != nil && *req.DryRun),
			zap.String("result", string(out.Verdict)),
			zap.Int("changes", len(out.Changes)),
			zap.Duration("duration", out.Duration))
	}
	for _, o := range c.observers {
		o.Observe(ctx, out)
	}
	return resp
}

// admit runs the stages of a review: the rules, the mirror check, the
// answer.
func (c *Controller) admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Decision) {
	d := c.decide(req)
	d.Request = req
	// After the rules, so that they stay pure; only rewritten images are
	// checked, on CREATE and UPDATE alike, and not at all when the rules
	// already deny.
	if d.Verdict == "" && c.mirror != nil && len(d.Changes) > 0 && (len(d.Problems) == 0 || c.audit) {
		c.mirror.apply(ctx, &d, c.audit)
	}
	return c.answer(&d), d
}

// decide applies the rules. It sets a Verdict only for the reviews that end
// here: excluded, skipped and rejected.
func (c *Controller) decide(req *admissionv1.AdmissionRequest) Decision {
	if c.excluded(req.Namespace) {
		return Decision{Verdict: Excluded}
	}
	var d Decision
	switch {
	case req.Kind.Group == "" && req.Kind.Version == "v1" && req.Kind.Kind == "Pod":
		d.Changes, d.Problems, d.Object, d.err = c.pod(req)
	case req.Kind.Group == "" && req.Kind.Version == "v1" && req.Kind.Kind == "PersistentVolumeClaim":
		d.Changes, d.Object, d.err = c.pvc(req)
	default:
		return Decision{Verdict: Skipped}
	}
	if d.err != nil {
		return Decision{Verdict: Rejected, err: d.err}
	}
	return d
}

// answer is the one place a Decision becomes an AdmissionResponse; it sets
// the Verdict of the reviews the rules did not end.
func (c *Controller) answer(d *Decision) *admissionv1.AdmissionResponse {
	allowed := &admissionv1.AdmissionResponse{Allowed: true}
	switch d.Verdict {
	case Excluded:
		return allowed
	case Skipped:
		// Allowed with a warning rather than denied: a webhook
		// configuration that matches too much must not stop the cluster,
		// but it should be seen.
		allowed.Warnings = []string{fmt.Sprintf("mutator: %s is not handled (only v1 Pod and PersistentVolumeClaim); check the webhook's rules", d.Request.Kind.String())}
		return allowed
	case Rejected:
		return webhook.MakeErrorStatus("mutator: %v", d.err)
	}
	problems := append(d.Problems[:len(d.Problems):len(d.Problems)], d.mirrorDenied...)
	if len(problems) > 0 && !c.audit {
		// The provenance guarantee: a Pod that would pull an image no
		// allowed registry serves is refused, never admitted with the
		// original reference.
		resp := deny(problems)
		resp.AuditAnnotations = mirrorAnnotations(auditAnnotations(Denied, d.Changes, problems), d.MirrorFallbacks)
		d.Verdict, d.Changes, d.Problems = Denied, nil, problems
		return resp
	}
	// In audit mode, fallbacks alone are reported as an audited review.
	if len(d.Changes) == 0 && len(problems) == 0 && (len(d.MirrorFallbacks) == 0 || !c.audit) {
		allowed.Warnings = bounded(d.mirrorWarns)
		allowed.AuditAnnotations = mirrorAnnotations(nil, d.MirrorFallbacks)
		d.Verdict = Unchanged
		return allowed
	}
	if c.audit {
		// mirrorWarns word the mirror's would-be denials themselves.
		allowed.Warnings = bounded(append(append(describe(d.Changes, true), describeProblems(d.Problems)...), d.mirrorWarns...))
		allowed.AuditAnnotations = mirrorAnnotations(auditAnnotations(Audited, d.Changes, problems), d.MirrorFallbacks)
		d.Verdict, d.Problems = Audited, problems
		return allowed
	}
	patch, err := mutation.Patch(d.Changes)
	if err != nil {
		d.Verdict, d.Changes = Rejected, nil
		return internalError(err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	allowed.Patch, allowed.PatchType = patch, &pt
	if c.warnings {
		allowed.Warnings = describe(d.Changes, false)
	}
	// Fallback warnings whatever WARNINGS says: the Pod is not getting
	// what the mirror check promised.
	allowed.Warnings = bounded(append(allowed.Warnings, d.mirrorWarns...))
	allowed.AuditAnnotations = mirrorAnnotations(auditAnnotations(Patched, d.Changes, nil), d.MirrorFallbacks)
	d.Verdict = Patched
	return allowed
}

func (c *Controller) pod(req *admissionv1.AdmissionRequest) ([]mutation.Change, []mutation.Problem, mutation.Metadata, error) {
	switch req.Operation {
	case admissionv1.Create:
		if req.SubResource != "" {
			return nil, nil, mutation.Metadata{}, nil
		}
		var pod mutation.Pod
		if err := mutation.Decode(req.Object.Raw, &pod, "Pod"); err != nil {
			return nil, nil, mutation.Metadata{}, err
		}
		changes, problems := c.rules.PodSpecOnCreate("/spec", &pod.Spec)
		return changes, problems, pod.Metadata, nil
	case admissionv1.Update:
		// Status and other subresources carry no images to rewrite, and the
		// API server ignores spec changes made through them.
		if req.SubResource != "" && req.SubResource != "ephemeralcontainers" {
			return nil, nil, mutation.Metadata{}, nil
		}
		var pod, old mutation.Pod
		if err := mutation.Decode(req.Object.Raw, &pod, "Pod"); err != nil {
			return nil, nil, mutation.Metadata{}, err
		}
		if err := mutation.Decode(req.OldObject.Raw, &old, "old Pod"); err != nil {
			return nil, nil, mutation.Metadata{}, err
		}
		changes, problems := c.rules.PodSpecOnUpdate("/spec", &pod.Spec, &old.Spec)
		return changes, problems, pod.Metadata, nil
	}
	return nil, nil, mutation.Metadata{}, nil
}

func (c *Controller) pvc(req *admissionv1.AdmissionRequest) ([]mutation.Change, mutation.Metadata, error) {
	if req.Operation != admissionv1.Create || req.SubResource != "" {
		return nil, mutation.Metadata{}, nil
	}
	var pvc mutation.PVC
	if err := mutation.Decode(req.Object.Raw, &pvc, "PersistentVolumeClaim"); err != nil {
		return nil, mutation.Metadata{}, err
	}
	return c.rules.PVCOnCreate(&pvc), pvc.Metadata.Metadata, nil
}

func describe(changes []mutation.Change, pending bool) []string {
	out := make([]string, len(changes))
	for i, ch := range changes {
		out[i] = "mutator: " + ch.Describe(pending)
	}
	return out
}

// Warnings are shown to whoever made the request (kubectl prints each on a
// line of its own), so each is kept to one readable line and a Pod with many
// changes gets a summary instead of a screenful; the full list is in the
// audit events (CloudEvents) and the API server's audit annotations.
const (
	maxWarningLen = 120
	maxWarnings   = 8
)

// bounded shortens each warning to maxWarningLen characters and the list to
// maxWarnings, the last saying how many more there were.
func bounded(warnings []string) []string {
	if len(warnings) > maxWarnings {
		more := len(warnings) - (maxWarnings - 1)
		warnings = append(warnings[:maxWarnings-1:maxWarnings-1], fmt.Sprintf("mutator: and %d more changes like these", more))
	}
	for i, w := range warnings {
		if utf8.RuneCountInString(w) > maxWarningLen {
			r := []rune(w)
			warnings[i] = string(r[:maxWarningLen-1]) + "…"
		}
	}
	return warnings
}

// auditAnnotations summarise a review for the cluster's audit log, where
// the API server records them under the webhook's name
// (mutate.mutator.dev/result, .../changes, .../refused).
func auditAnnotations(result Verdict, changes []mutation.Change, problems []mutation.Problem) map[string]string {
	a := map[string]string{"result": string(result), "changes": strconv.Itoa(len(changes))}
	if len(problems) > 0 {
		a["refused"] = strconv.Itoa(len(problems))
	}
	return a
}

// describeProblems words refused images for audit-mode warnings: short
// enough for one line, the full reason is in the audit events.
func describeProblems(problems []mutation.Problem) []string {
	out := make([]string, len(problems))
	for i, p := range problems {
		image := ""
		var re *images.RefusedError
		if errors.As(p.Err, &re) {
			image = re.Image
			if len(image) > 20 {
				image = image[:20] + "…"
			}
			image = " " + strconv.Quote(image)
		}
		out[i] = "mutator: would deny: " + p.Where + ": image" + image + " cannot be pulled from an allowed registry"
	}
	return out
}

// maxDenialProblems bounds how many refused images one denial lists; the
// message travels back to the client through the API server.
const maxDenialProblems = 5

// deny refuses the object, naming each refused image and why.
func deny(problems []mutation.Problem) *admissionv1.AdmissionResponse {
	var b strings.Builder
	b.WriteString("mutator: ")
	for i, p := range problems {
		if i == maxDenialProblems {
			fmt.Fprintf(&b, "; and %d more", len(problems)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: b.String(),
	}}
}

func internalError(err error) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: 500, Reason: metav1.StatusReasonInternalError, Message: err.Error(),
	}}
}
