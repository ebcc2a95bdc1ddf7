package admission

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/reference"
	"go.uber.org/zap"
	"knative.dev/pkg/apis"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/copier"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mutation"
)

// MirrorChecker answers whether the mirror serves a rewritten reference;
// *mirror.Checker implements it.
type MirrorChecker interface {
	// Cached answers from memory only; ok is false when it cannot.
	Cached(ctx context.Context, ref string) (mirror.Lookup, bool)
	// Exists asks the registry; the error is nil exactly when the outcome
	// is Present or Missing.
	Exists(ctx context.Context, ref string) (mirror.Lookup, error)
}

// MirrorAction is what was done with an image whose mirror check did not
// come back present.
type MirrorAction string

// The actions, from MIRROR_MISSING (deny, original, warn, copy) and
// MIRROR_UNREACHABLE (rewrite, deny).
const (
	MirrorDeny     MirrorAction = "deny"     // the review was denied
	MirrorOriginal MirrorAction = "original" // the image was left as written: no provenance for it
	MirrorWarn     MirrorAction = "warn"     // rewritten anyway, with a warning
	MirrorRewrite  MirrorAction = "rewrite"  // rewritten unchecked: the check could not tell
	// MirrorCopy: the review was denied, as with deny, and the copier
	// asked to copy the image into the mirror; a retry once it is there
	// is admitted.
	MirrorCopy MirrorAction = "copy"
)

// CopyRequester asks for an image the mirror lacks to be copied into it
// (MIRROR_MISSING=copy); *CopyRequests implements it. RequestCopy is called
// on the review's path: it must not block, and it cannot fail the review.
type CopyRequester interface {
	RequestCopy(ctx context.Context, req copier.Request)
}

// MirrorOption configures CheckMirror.
type MirrorOption func(*mirrorCheck)

// WithCopyRequester gives the mirror stage where to send copy requests;
// MIRROR_MISSING=copy needs one.
func WithCopyRequester(r CopyRequester) MirrorOption {
	return func(m *mirrorCheck) { m.copies = r }
}

// MirrorFallback is one image whose mirror check did not come back present.
type MirrorFallback struct {
	Where  string        // e.g. `container "app"`
	Image  string        // as the Pod wrote it
	Mirror string        // the rewritten reference that was checked
	Reason mirror.Status // missing, error, timeout, circuit-open or skipped (not checked: over the review's lookup limit)
	Action MirrorAction
	Err    error // for reasons other than missing: why the check could not tell
	// More counts further images with the same action and reason that
	// are not listed, past the first 32 fallbacks of a review: this entry
	// stands for 1+More images. 0 for every entry of an ordinary Pod.
	More int
}

// mirrorCheck is the controller's MIRROR_CHECK; nil when it is off.
type mirrorCheck struct {
	checker     MirrorChecker
	missing     MirrorAction // deny, original, warn or copy
	unreachable MirrorAction // rewrite or deny
	budget      time.Duration
	maxLookups  int
	pin         bool // PIN_DIGESTS
	logger      *zap.Logger
	copies      CopyRequester // MIRROR_MISSING=copy
	// notChecked and untracked are the errors of images not checked, one
	// value each for every review.
	notChecked, untracked error
}

// The bounds of one review's mirror check. Whoever reaches the webhook's
// port can send a review, and a 3 MiB Pod can list tens of thousands of
// distinct images: nothing the check does for a review grows with them.
const (
	// maxConcurrentChecks bounds the lookups one review runs at once.
	maxConcurrentChecks = 8
	// DefaultMirrorLookups is MIRROR_CHECK_MAX_LOOKUPS when a
	// configuration built in code leaves it 0.
	DefaultMirrorLookups = 32
	// maxTracked bounds the distinct images of one review that get a
	// verdict of their own (from the cache, a lookup, or "over the
	// limit"). Images past it are answered by the cache or not checked
	// (no Pod has that many).
	maxTracked = config.MaxMirrorLookups
	// maxListedFallbacks bounds the fallbacks (and denied images) listed
	// one by one; past it they are counted in summary entries.
	maxListedFallbacks = 32
	// maxMirrorWarnings bounds the fallback warnings written one by one;
	// one more line counts the rest, within the maxWarnings of a review.
	maxMirrorWarnings = maxWarnings - 1
	// DefaultWebhookTimeout is the API server's timeout for a webhook
	// that sets no timeoutSeconds, assumed when a request does not say.
	DefaultWebhookTimeout = 10 * time.Second
)

// CheckMirror turns the mirror check on: every rewritten image is looked up
// through checker before the review is answered, and policy says what
// happens to images the mirror lacks or the check cannot answer for, and
// whether present ones are pinned to their digest (PIN_DIGESTS).
// MIRROR_MISSING=copy needs WithCopyRequester. Call it before the
// controller serves: it is not safe concurrently with Admit.
func (c *Controller) CheckMirror(checker MirrorChecker, policy config.Mirror, opts ...MirrorOption) error {
	if checker == nil {
		return errors.New("admission: CheckMirror needs a checker")
	}
	m := &mirrorCheck{checker: checker, missing: MirrorAction(policy.Missing),
		unreachable: MirrorAction(policy.Unreachable), budget: policy.ReviewBudget, maxLookups: policy.MaxLookups,
		pin: policy.PinDigests, logger: c.logger.Named("mirror")}
	for _, o := range opts {
		o(m)
	}
	switch m.missing {
	case MirrorDeny, MirrorOriginal, MirrorWarn:
	case MirrorCopy:
		if m.copies == nil {
			return errors.New("admission: MIRROR_MISSING copy needs a copy requester (MIRROR_COPY_SINK)")
		}
	default:
		return fmt.Errorf("admission: MIRROR_MISSING %q is not one of deny, original, warn, copy", policy.Missing)
	}
	switch m.unreachable {
	case MirrorRewrite, MirrorDeny:
	default:
		return fmt.Errorf("admission: MIRROR_UNREACHABLE %q is not one of rewrite, deny", policy.Unreachable)
	}
	if m.budget <= 0 {
		return fmt.Errorf("admission: MIRROR_CHECK_REVIEW_BUDGET %s must be positive", m.budget)
	}
	if m.maxLookups == 0 {
		m.maxLookups = DefaultMirrorLookups
	}
	if m.maxLookups < 1 || m.maxLookups > maxTracked {
		return fmt.Errorf("admission: MIRROR_CHECK_MAX_LOOKUPS %d must be between 1 and %d", m.maxLookups, maxTracked)
	}
	m.notChecked = fmt.Errorf("not checked: the review has more than %d distinct images the cache cannot answer (MIRROR_CHECK_MAX_LOOKUPS)", m.maxLookups)
	m.untracked = fmt.Errorf("not checked: the review has more than %d distinct rewritten images", maxTracked)
	c.mirror = m
	return nil
}

// verdict is one reference's check.
type verdict struct {
	res mirror.Lookup
	err error
}

// apply is the mirror stage of a review: it checks d's rewritten images and
// records what became of each in d. With MIRROR_MISSING=copy it asks for
// the images the mirror lacks to be copied, in audit mode too (so that the
// mirror is filled before enforcement), never for a dry run (the webhook
// declares sideEffects NoneOnDryRun).
func (m *mirrorCheck) apply(ctx context.Context, d *Decision, pending bool) {
	copying := m.copies != nil && (d.Request == nil || d.Request.DryRun == nil || !*d.Request.DryRun)
	d.Changes, d.MirrorFallbacks, d.mirrorWarns, d.mirrorDenied = m.check(ctx, d.Changes, pending, copying)
	if copying {
		m.requestCopies(ctx, d)
	}
}

// requestCopies asks for each listed fallback that MIRROR_MISSING=copy
// denied to be copied: at most maxListedFallbacks a review (the images of a
// larger Pod are asked for on its retries). The requester deduplicates.
func (m *mirrorCheck) requestCopies(ctx context.Context, d *Decision) {
	var namespace string
	if d.Request != nil {
		namespace = d.Request.Namespace
	}
	pod := d.Object.Name
	if pod == "" {
		pod = d.Object.GenerateName
	}
	n := 0
	for _, f := range d.MirrorFallbacks {
		if f.Action != MirrorCopy || n == maxListedFallbacks {
			continue
		}
		source, ok := copySource(f.Image)
		if !ok {
			continue
		}
		m.copies.RequestCopy(ctx, copier.Request{Source: source, Target: f.Mirror, Namespace: namespace, Pod: pod})
		n++
	}
}

// copySource is the image as the Pod wrote it, as a full reference: its
// registry, repository and tag spelled out ("nginx" is
// "docker.io/library/nginx:latest"), its digest kept.
func copySource(image string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", false
	}
	return reference.TagNameOnly(named).String(), true
}

// validDigest reports whether d is a digest a runtime pulls by: sha256,
// sha384 or sha512 and its lowercase hex. (The checker's client parsed it
// already; this does not rely on it. A reference's own parser is a regular
// expression, slower than the rest of a cached review.)
func validDigest(d string) bool {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok {
		return false
	}
	switch {
	case algo == "sha256" && len(hex) == 64, algo == "sha384" && len(hex) == 96, algo == "sha512" && len(hex) == 128:
	default:
		return false
	}
	for i := range len(hex) {
		if c := hex[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// pinned returns ch with its image pinned to digest (PIN_DIGESTS):
// "mirror/x:tag" becomes "mirror/x:tag@sha256:…". It returns false, and ch,
// for an image that carries a digest already and when the pinned reference
// does not parse (a digest the registry sent that is not one), which is
// logged.
func (m *mirrorCheck) pinned(ch mutation.Change, digest string) (mutation.Change, bool) {
	if digest == "" || strings.ContainsRune(ch.To, '@') {
		return ch, false
	}
	want := ch.To + "@" + digest
	// ch.To is a valid reference (the rules checked it), so a valid digest
	// makes a valid one.
	if !validDigest(digest) {
		m.logger.Warn("not pinning an image: the mirror's digest does not parse as a digest",
			zap.String("image", ch.To), zap.String("digest", digest))
		return ch, false
	}
	return ch.WithImage(want), true
}

// check asks the mirror about every rewritten image of changes and applies
// the policies. It returns the changes to make (the input itself, filtered
// in place when MIRROR_MISSING=original leaves images as written), the
// fallbacks taken, their warnings, and the images that deny the review.
// The rules stay pure: this is the only place the webhook's answer depends
// on something outside the request.
//
// An image that was not checked (past the review's MIRROR_CHECK_MAX_LOOKUPS,
// its deadline passed, no lookup slot) is unknown, like an unreachable
// mirror, and goes to MIRROR_UNREACHABLE: rewrite or deny. Never to
// MIRROR_MISSING=original: only an answer from the mirror that it lacks the
// image may leave it as written, so a review cannot get an image admitted
// from outside the allowed registries by listing more images than the check
// looks up. The rewrite itself is always safe for provenance (the Pod pulls
// from the mirror or not at all), so MIRROR_UNREACHABLE=rewrite costs at
// worst a Pod that does not start; deny refuses the Pod instead, and a
// legitimate one is admitted on a retry once the cache holds its images.
//
// With PIN_DIGESTS, the change of an image found present is pinned to the
// digest the check found. copying says whether copy requests are sent for
// this review (MIRROR_MISSING=copy, not a dry run), for the wording of
// audit-mode warnings.
func (m *mirrorCheck) check(ctx context.Context, changes []mutation.Change, pending, copying bool) ([]mutation.Change, []MirrorFallback, []string, []mutation.Problem) {
	var verdicts map[string]verdict
	var lookups []string
	for _, ch := range changes {
		if ch.Kind != mutation.KindImage {
			continue
		}
		if verdicts == nil {
			verdicts = map[string]verdict{}
		}
		if _, seen := verdicts[ch.To]; seen {
			continue
		}
		if len(verdicts) == maxTracked {
			break // the rest are untracked: answered by the cache or not checked
		}
		// The cache first, without a goroutine or a deadline: with a warm
		// cache that is all a review costs, and it costs no lookup.
		if res, ok := m.checker.Cached(ctx, ch.To); ok {
			verdicts[ch.To] = verdict{res: res}
			continue
		}
		if len(lookups) == m.maxLookups {
			verdicts[ch.To] = verdict{res: mirror.Lookup{Status: mirror.Skipped}, err: m.notChecked}
			continue
		}
		verdicts[ch.To] = verdict{}
		lookups = append(lookups, ch.To)
	}
	if len(lookups) > 0 {
		m.lookup(ctx, lookups, verdicts)
	}

	r := fallbackReport{pending: pending, copying: copying}
	var kept []mutation.Change
	for i, ch := range changes {
		if ch.Kind != mutation.KindImage {
			if kept != nil {
				kept = append(kept, ch)
			}
			continue
		}
		v, tracked := verdicts[ch.To]
		if !tracked {
			// Past maxTracked distinct images: the cache may still
			// answer, nothing else is asked.
			v = verdict{res: mirror.Lookup{Status: mirror.Skipped}, err: m.untracked}
			if res, ok := m.checker.Cached(ctx, ch.To); ok {
				v = verdict{res: res}
			}
		}
		if v.err == nil && v.res.Status == mirror.Present {
			if m.pin {
				// Cached answers pin too: the cache keeps the digest.
				if pinned, ok := m.pinned(ch, v.res.Digest); ok {
					ch = pinned
					if kept == nil {
						changes[i] = ch
					}
				}
			}
			if kept != nil {
				kept = append(kept, ch)
			}
			continue
		}
		f := MirrorFallback{Where: ch.Where, Image: ch.From, Mirror: ch.To, Reason: v.res.Status, Err: v.err, Action: m.unreachable}
		if v.err == nil { // missing
			f.Action = m.missing
		}
		r.add(f)
		if f.Action == MirrorOriginal {
			if kept == nil {
				// Filtered in place: the changes before i are kept as
				// they are, and kept never grows past i.
				kept = changes[:i]
			}
			continue // the image change is dropped; its pull policy change is kept
		}
		if kept != nil {
			kept = append(kept, ch)
		}
	}
	if kept == nil {
		kept = changes
	}
	fallbacks, warnings, denied := r.finish()
	return kept, fallbacks, warnings, denied
}

// fallbackReport gathers a review's fallbacks, warnings and denials within
// fixed bounds: the first maxListedFallbacks are listed one by one, the rest
// are counted (MirrorFallback.More), so that a Pod listing thousands of
// images the check could not vouch for costs a few kilobytes, not an entry
// per image.
type fallbackReport struct {
	pending      bool
	copying      bool // copy requests are sent (MIRROR_MISSING=copy, not a dry run)
	fallbacks    []MirrorFallback
	summaries    map[summaryKey]int // index in fallbacks of the summary entry
	warnings     []string
	moreWarnings int
	denied       []mutation.Problem
	moreDenied   int
}

type summaryKey struct {
	action MirrorAction
	reason mirror.Status
}

func (r *fallbackReport) add(f MirrorFallback) {
	if len(r.fallbacks) < maxListedFallbacks {
		r.fallbacks = append(r.fallbacks, f)
	} else {
		k := summaryKey{f.Action, f.Reason}
		if r.summaries == nil {
			r.summaries = map[summaryKey]int{}
		}
		if i, ok := r.summaries[k]; ok {
			r.fallbacks[i].More++
		} else {
			r.summaries[k] = len(r.fallbacks)
			r.fallbacks = append(r.fallbacks, f)
		}
	}
	switch f.Action {
	case MirrorDeny, MirrorCopy:
		if len(r.denied) < maxListedFallbacks {
			r.denied = append(r.denied, mutation.Problem{Where: f.Where, Err: &MirrorError{f}})
		} else {
			r.moreDenied++
		}
		if r.pending && f.Action == MirrorCopy {
			r.warn(func() string {
				return "mutator: would deny: " + f.Where + ": " + shortReason(f) + ", " + verb(r.copying, "would be copied", "being copied")
			})
		} else if r.pending {
			r.warn(func() string { return "mutator: would deny: " + f.Where + ": " + shortReason(f) })
		}
	case MirrorOriginal:
		r.warn(func() string {
			return fmt.Sprintf("mutator: image %q %s as written: %s (%s)", f.Image, verb(r.pending, "left", "would be left"), shortReason(f), f.Where)
		})
	case MirrorWarn, MirrorRewrite:
		r.warn(func() string {
			return fmt.Sprintf("mutator: image %q %s %q: %s (%s)", f.Image, verb(r.pending, "became", "would become"), f.Mirror, shortReason(f), f.Where)
		})
	}
}

// warn adds a warning, written only while there is room for it.
func (r *fallbackReport) warn(text func() string) {
	if len(r.warnings) < maxMirrorWarnings {
		r.warnings = append(r.warnings, text())
		return
	}
	r.moreWarnings++
}

func (r *fallbackReport) finish() ([]MirrorFallback, []string, []mutation.Problem) {
	if r.moreWarnings > 0 {
		r.warnings = append(r.warnings, fmt.Sprintf("mutator: and %d more images whose mirror check did not come back present", r.moreWarnings))
	}
	if r.moreDenied > 0 {
		// The denial lists maxDenialProblems images: the last place says
		// how many more there are, naming the first of them.
		first := r.denied[maxDenialProblems-1]
		more := len(r.denied) - (maxDenialProblems - 1) + r.moreDenied
		r.denied = append(r.denied[:maxDenialProblems-1],
			mutation.Problem{Where: fmt.Sprintf("and %d more images, the first %s", more, first.Where), Err: first.Err})
	}
	return r.fallbacks, r.warnings, r.denied
}

// lookup checks refs (at most maxLookups) concurrently, at most
// maxConcurrentChecks at once, within the review's deadline, and records
// the verdicts. At the deadline the checks in flight give up (their lookups
// are cancelled unless another review waits for them too) and the refs not
// yet asked are not asked: all are unknown, for MIRROR_UNREACHABLE.
func (m *mirrorCheck) lookup(ctx context.Context, refs []string, verdicts map[string]verdict) {
	budget := m.deadline(ctx)
	ctx, cancel := context.WithTimeout(mirror.WithReview(ctx), budget)
	defer cancel()
	out := make([]verdict, len(refs))
	var next atomic.Int64
	var late error
	var lateOnce sync.Once
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(refs) {
				return
			}
			if ctx.Err() != nil {
				lateOnce.Do(func() {
					late = fmt.Errorf("not checked: the review's %s for mirror checks had passed: %w", budget, context.Cause(ctx))
				})
				out[i] = verdict{res: mirror.Lookup{Status: mirror.Timeout}, err: late}
				continue
			}
			res, err := m.checker.Exists(ctx, refs[i])
			out[i] = verdict{res, err}
		}
	}
	if n := min(len(refs), maxConcurrentChecks); n == 1 {
		work()
	} else {
		var wg sync.WaitGroup
		for range n {
			wg.Go(work)
		}
		wg.Wait()
	}
	for i, ref := range refs {
		verdicts[ref] = out[i]
	}
}

// deadline is how long a review's mirror checks may take:
// MIRROR_CHECK_REVIEW_BUDGET, and no more than four fifths of the API
// server's timeout for the call, which it sends as the timeout query
// parameter of the webhook URL (/mutate?timeout=10s), so that the review is
// answered in time to count whatever timeoutSeconds says. knative.dev/pkg
// hands Admit the HTTP request in the context (apis.WithHTTPRequest); a
// request without the parameter is assumed to have the API server's
// default timeout, 10s. The request's own context is Admit's ctx, so a
// caller that goes away cancels the checks too.
func (m *mirrorCheck) deadline(ctx context.Context) time.Duration {
	d := m.budget
	timeout := DefaultWebhookTimeout
	if r := apis.GetHTTPRequest(ctx); r != nil && r.URL != nil {
		if v := r.URL.Query().Get("timeout"); v != "" && len(v) < 32 {
			if t, err := time.ParseDuration(v); err == nil && t > 0 {
				timeout = t
			}
		}
	}
	return min(d, timeout-timeout/5)
}

func verb(pending bool, done, would string) string {
	if pending {
		return would
	}
	return done
}

// shortReason words a fallback for a one-line warning.
func shortReason(f MirrorFallback) string {
	switch f.Reason {
	case mirror.Missing:
		return "not in the mirror"
	case mirror.Skipped:
		return "not checked (lookup limit)"
	}
	return "mirror check failed (" + string(f.Reason) + ")"
}

// MirrorError is the reason a review was denied by the mirror check; it
// names the image and the mirror reference.
type MirrorError struct{ Fallback MirrorFallback }

func (e *MirrorError) Error() string {
	f := e.Fallback
	if f.Reason == mirror.Missing && f.Action == MirrorCopy {
		source, ok := copySource(f.Image)
		if !ok {
			source = f.Image
		}
		return fmt.Sprintf("image %q is not on the mirror yet: being copied from %q to %q; the controller's retry admits the Pod once it is there (MIRROR_MISSING=copy)",
			f.Image, source, f.Mirror)
	}
	if f.Reason == mirror.Missing {
		return fmt.Sprintf("image %q is not in the mirror: %q was not found (MIRROR_MISSING=deny)", f.Image, f.Mirror)
	}
	return fmt.Sprintf("image %q: cannot tell whether the mirror has %q (MIRROR_UNREACHABLE=deny): %v", f.Image, f.Mirror, f.Err)
}

// mirrorAnnotations adds the fallbacks to a review's audit annotations.
func mirrorAnnotations(a map[string]string, fallbacks []MirrorFallback) map[string]string {
	if len(fallbacks) == 0 {
		return a
	}
	if a == nil {
		a = map[string]string{}
	}
	n := 0
	for _, f := range fallbacks {
		n += 1 + f.More
	}
	a["mirror-fallbacks"] = strconv.Itoa(n)
	return a
}
