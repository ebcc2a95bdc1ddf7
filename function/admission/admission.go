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

// Result labels the outcome of a review in metrics and logs.
type Result string

// The results of a review.
const (
	Patched   Result = "patched"   // enforce mode, a patch was returned
	Audited   Result = "audited"   // audit mode, changes were reported as warnings only
	Unchanged Result = "unchanged" // nothing to change
	Excluded  Result = "excluded"  // namespace in EXCLUDE_NAMESPACES
	Skipped   Result = "skipped"   // a kind, operation or subresource the webhook does not handle
	Rejected  Result = "rejected"  // the object could not be decoded
	Denied    Result = "denied"    // enforce mode, an image no allowed registry can serve
)

// Outcome is what one review did. Only Patched and Audited outcomes carry
// changes; Denied and Audited ones carry the refused images. Observers must
// not keep Request beyond Observe: it holds the raw objects.
type Outcome struct {
	Request *admissionv1.AdmissionRequest
	// Object is the decoded object's metadata: a Pod created from a
	// template has a generateName but no name yet.
	Object   mutation.Metadata
	Result   Result
	Changes  []mutation.Change
	Problems []mutation.Problem
	// MirrorFallbacks are the images whose mirror check (MIRROR_CHECK) did
	// not come back present, and what was done with each.
	MirrorFallbacks []MirrorFallback
	Duration        time.Duration
}

// Observer is told the outcome of every review. Observe runs on the request
// path, so it must not block: send anything slow to a queue.
type Observer interface {
	Observe(ctx context.Context, o Outcome)
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

// New builds the controller from a validated configuration.
func New(cfg config.Config, logger *zap.Logger, observers ...Observer) (*Controller, error) {
	rules, err := mutation.New(cfg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Controller{
		rules:     rules,
		logger:    logger,
		excluded:  cfg.Excluded,
		audit:     cfg.Mode == config.Audit,
		warnings:  cfg.Warnings,
		observers: observers,
	}, nil
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
			zap.String("result", string(out.Result)),
			zap.Int("changes", len(out.Changes)),
			zap.Duration("duration", out.Duration))
	}
	for _, o := range c.observers {
		o.Observe(ctx, out)
	}
	return resp
}

func (c *Controller) admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Outcome) {
	allowed := &admissionv1.AdmissionResponse{Allowed: true}
	if c.excluded(req.Namespace) {
		return allowed, Outcome{Result: Excluded}
	}
	var (
		changes  []mutation.Change
		problems []mutation.Problem
		meta     mutation.Metadata
		err      error
	)
	switch {
	case req.Kind.Group == "" && req.Kind.Version == "v1" && req.Kind.Kind == "Pod":
		changes, problems, meta, err = c.pod(req)
	case req.Kind.Group == "" && req.Kind.Version == "v1" && req.Kind.Kind == "PersistentVolumeClaim":
		changes, meta, err = c.pvc(req)
	default:
		// Allowed with a warning rather than denied: a webhook configuration
		// that matches too much must not stop the cluster, but it should
		// be seen.
		allowed.Warnings = []string{fmt.Sprintf("mutator: %s is not handled (only v1 Pod and PersistentVolumeClaim); check the webhook's rules", req.Kind.String())}
		return allowed, Outcome{Result: Skipped}
	}
	if err != nil {
		return webhook.MakeErrorStatus("mutator: %v", err), Outcome{Result: Rejected}
	}
	if len(problems) > 0 && !c.audit {
		// The provenance guarantee: a Pod that would pull an image no
		// allowed registry serves is refused, never admitted with the
		// original reference.
		resp := deny(problems)
		resp.AuditAnnotations = auditAnnotations(Denied, changes, problems)
		return resp, Outcome{Object: meta, Result: Denied, Problems: problems}
	}
	var (
		fallbacks    []MirrorFallback
		mirrorWarns  []string
		mirrorDenied []mutation.Problem
	)
	if c.mirror != nil && len(changes) > 0 {
		// After the rules, so that they stay pure; only rewritten images
		// are checked, on CREATE and UPDATE alike.
		changes, fallbacks, mirrorWarns, mirrorDenied = c.mirror.check(ctx, changes, c.audit)
		if len(mirrorDenied) > 0 && !c.audit {
			resp := deny(mirrorDenied)
			resp.AuditAnnotations = mirrorAnnotations(auditAnnotations(Denied, changes, mirrorDenied), fallbacks)
			return resp, Outcome{Object: meta, Result: Denied, Problems: mirrorDenied, MirrorFallbacks: fallbacks}
		}
	}
	// In audit mode, fallbacks alone are reported as an audited review.
	if len(changes) == 0 && len(problems) == 0 && len(mirrorDenied) == 0 && (len(fallbacks) == 0 || !c.audit) {
		allowed.Warnings = bounded(mirrorWarns)
		allowed.AuditAnnotations = mirrorAnnotations(nil, fallbacks)
		return allowed, Outcome{Object: meta, Result: Unchanged, MirrorFallbacks: fallbacks}
	}
	if c.audit {
		// mirrorWarns word the mirror's would-be denials themselves.
		allowed.Warnings = bounded(append(append(describe(changes, true), describeProblems(problems)...), mirrorWarns...))
		problems = append(problems, mirrorDenied...)
		allowed.AuditAnnotations = mirrorAnnotations(auditAnnotations(Audited, changes, problems), fallbacks)
		return allowed, Outcome{Object: meta, Result: Audited, Changes: changes, Problems: problems, MirrorFallbacks: fallbacks}
	}
	patch, err := mutation.Patch(changes)
	if err != nil {
		return internalError(err), Outcome{Object: meta, Result: Rejected}
	}
	pt := admissionv1.PatchTypeJSONPatch
	allowed.Patch, allowed.PatchType = patch, &pt
	if c.warnings {
		allowed.Warnings = describe(changes, false)
	}
	// Fallback warnings whatever WARNINGS says: the Pod is not getting
	// what the mirror check promised.
	allowed.Warnings = bounded(append(allowed.Warnings, mirrorWarns...))
	allowed.AuditAnnotations = mirrorAnnotations(auditAnnotations(Patched, changes, nil), fallbacks)
	return allowed, Outcome{Object: meta, Result: Patched, Changes: changes, MirrorFallbacks: fallbacks}
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
func auditAnnotations(result Result, changes []mutation.Change, problems []mutation.Problem) map[string]string {
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
