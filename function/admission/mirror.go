package admission

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/mirror"
	"github.com/mutator-dev/mutator/function/mutation"
)

// MirrorChecker answers whether the mirror serves a rewritten reference;
// *mirror.Checker implements it.
type MirrorChecker interface {
	// Cached answers from memory only; ok is false when it cannot.
	Cached(ctx context.Context, ref string) (mirror.Result, bool)
	// Exists asks the registry; the error is nil exactly when the outcome
	// is Present or Missing.
	Exists(ctx context.Context, ref string) (mirror.Result, error)
}

// MirrorAction is what was done with an image whose mirror check did not
// come back present.
type MirrorAction string

// The actions, from MIRROR_MISSING (deny, original, warn) and
// MIRROR_UNREACHABLE (rewrite, deny).
const (
	MirrorDeny     MirrorAction = "deny"     // the review was denied
	MirrorOriginal MirrorAction = "original" // the image was left as written: no provenance for it
	MirrorWarn     MirrorAction = "warn"     // rewritten anyway, with a warning
	MirrorRewrite  MirrorAction = "rewrite"  // rewritten unchecked: the check could not tell
)

// MirrorFallback is one image whose mirror check did not come back present.
type MirrorFallback struct {
	Where  string         // e.g. `container "app"`
	Image  string         // as the Pod wrote it
	Mirror string         // the rewritten reference that was checked
	Reason mirror.Outcome // missing, error, timeout or circuit-open
	Action MirrorAction
	Err    error // for reasons other than missing: why the check could not tell
}

// mirrorCheck is the controller's MIRROR_CHECK; nil when it is off.
type mirrorCheck struct {
	checker     MirrorChecker
	missing     MirrorAction // deny, original or warn
	unreachable MirrorAction // rewrite or deny
	budget      time.Duration
}

// maxConcurrentChecks bounds the lookups one review runs at once; a Pod
// lists few distinct images, but a crafted one may list hundreds.
const maxConcurrentChecks = 8

// CheckMirror turns the mirror check on with cfg's MIRROR_* policies. Call
// it before the controller serves: it is not safe concurrently with Admit.
func (c *Controller) CheckMirror(checker MirrorChecker, cfg config.Config) error {
	if checker == nil {
		return errors.New("admission: CheckMirror needs a checker")
	}
	m := &mirrorCheck{checker: checker, missing: MirrorAction(cfg.MirrorMissing),
		unreachable: MirrorAction(cfg.MirrorUnreachable), budget: cfg.MirrorCheckReviewBudget}
	switch m.missing {
	case MirrorDeny, MirrorOriginal, MirrorWarn:
	default:
		return fmt.Errorf("admission: MIRROR_MISSING %q is not one of deny, original, warn", cfg.MirrorMissing)
	}
	switch m.unreachable {
	case MirrorRewrite, MirrorDeny:
	default:
		return fmt.Errorf("admission: MIRROR_UNREACHABLE %q is not one of rewrite, deny", cfg.MirrorUnreachable)
	}
	if m.budget <= 0 {
		return fmt.Errorf("admission: MIRROR_CHECK_REVIEW_BUDGET %s must be positive", m.budget)
	}
	c.mirror = m
	return nil
}

// verdict is one reference's check.
type verdict struct {
	res mirror.Result
	err error
}

// check asks the mirror about every rewritten image of changes and applies
// the policies. It returns the changes to make (the input itself when every
// image is present), the fallbacks taken, their warnings, and the images
// that deny the review. The rules stay pure: this is the only place the
// webhook's answer depends on something outside the request.
func (m *mirrorCheck) check(ctx context.Context, changes []mutation.Change, pending bool) ([]mutation.Change, []MirrorFallback, []string, []mutation.Problem) {
	var verdicts map[string]verdict
	var lookups []string
	for _, ch := range changes {
		if ch.Kind != mutation.KindImage {
			continue
		}
		if verdicts == nil {
			verdicts = make(map[string]verdict, len(changes))
		}
		if _, seen := verdicts[ch.To]; seen {
			continue
		}
		// The cache first, without a goroutine or a deadline: with a warm
		// cache that is all a review costs.
		if res, ok := m.checker.Cached(ctx, ch.To); ok {
			verdicts[ch.To] = verdict{res: res}
			continue
		}
		verdicts[ch.To] = verdict{}
		lookups = append(lookups, ch.To)
	}
	if len(lookups) > 0 {
		m.lookup(ctx, lookups, verdicts)
	}

	var (
		kept      []mutation.Change
		fallbacks []MirrorFallback
		warnings  []string
		denied    []mutation.Problem
	)
	for i, ch := range changes {
		v, checked := verdicts[ch.To]
		if ch.Kind != mutation.KindImage || !checked || (v.err == nil && v.res.Outcome == mirror.Present) {
			if kept != nil {
				kept = append(kept, ch)
			}
			continue
		}
		f := MirrorFallback{Where: ch.Where, Image: ch.From, Mirror: ch.To, Reason: v.res.Outcome, Err: v.err, Action: m.unreachable}
		if v.err == nil { // missing
			f.Action = m.missing
		}
		fallbacks = append(fallbacks, f)
		switch f.Action {
		case MirrorDeny:
			denied = append(denied, mutation.Problem{Where: ch.Where, Err: &MirrorError{f}})
			if pending {
				warnings = append(warnings, "mutator: would deny: "+ch.Where+": "+shortReason(f))
			}
		case MirrorOriginal:
			if kept == nil {
				kept = append(make([]mutation.Change, 0, len(changes)), changes[:i]...)
			}
			warnings = append(warnings, fmt.Sprintf("mutator: image %q %s as written: %s (%s)", ch.From, verb(pending, "left", "would be left"), shortReason(f), ch.Where))
			continue // the image change is dropped; its pull policy change is kept
		case MirrorWarn, MirrorRewrite:
			warnings = append(warnings, fmt.Sprintf("mutator: image %q %s %q: %s (%s)", ch.From, verb(pending, "became", "would become"), ch.To, shortReason(f), ch.Where))
		}
		if kept != nil {
			kept = append(kept, ch)
		}
	}
	if kept == nil {
		kept = changes
	}
	return kept, fallbacks, warnings, denied
}

// lookup checks refs concurrently (at most maxConcurrentChecks at once)
// within the review's budget and records the verdicts.
func (m *mirrorCheck) lookup(ctx context.Context, refs []string, verdicts map[string]verdict) {
	ctx, cancel := context.WithTimeout(ctx, m.budget)
	defer cancel()
	if len(refs) == 1 {
		res, err := m.checker.Exists(ctx, refs[0])
		verdicts[refs[0]] = verdict{res, err}
		return
	}
	out := make([]verdict, len(refs))
	slots := make(chan struct{}, maxConcurrentChecks)
	var wg sync.WaitGroup
	for i, ref := range refs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			res, err := m.checker.Exists(ctx, ref)
			out[i] = verdict{res, err}
		})
	}
	wg.Wait()
	for i, ref := range refs {
		verdicts[ref] = out[i]
	}
}

func verb(pending bool, done, would string) string {
	if pending {
		return would
	}
	return done
}

// shortReason words a fallback for a one-line warning.
func shortReason(f MirrorFallback) string {
	if f.Reason == mirror.Missing {
		return "not in the mirror"
	}
	return "mirror check failed (" + string(f.Reason) + ")"
}

// MirrorError is the reason a review was denied by the mirror check; it
// names the image and the mirror reference.
type MirrorError struct{ Fallback MirrorFallback }

func (e *MirrorError) Error() string {
	f := e.Fallback
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
	a["mirror-fallbacks"] = strconv.Itoa(len(fallbacks))
	return a
}
