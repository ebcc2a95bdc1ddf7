package knative

import (
	"fmt"
	"strconv"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/utils/ptr"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// productionProblems says what is wrong with running the webhook wh in
// front of the Knative Service svc. A webhook that fails closed makes every
// matched Pod creation wait for the function, so the function must be warm
// (no cold start in the admission path), reached without the activator (no
// extra hop, no queueing behind a scale-up) and given the short budget
// Knative's own webhooks use, so that a sick backend stalls the apiserver
// for seconds rather than half a minute. Scale to zero is fine only with
// failurePolicy Ignore.
func productionProblems(wh admissionregistrationv1.MutatingWebhook, svc *servingv1.Service) []string {
	var problems []string
	ann := svc.Spec.Template.Annotations
	minScale, err := strconv.Atoi(ann[autoscaling.MinScaleAnnotationKey])
	if err != nil {
		minScale = 0 // Knative's default when the annotation is absent
	}
	failClosed := wh.FailurePolicy == nil || *wh.FailurePolicy == admissionregistrationv1.Fail
	if failClosed {
		if minScale < 1 {
			problems = append(problems, fmt.Sprintf("failurePolicy Fail with min-scale %d: a cold start is in the admission path", minScale))
		}
		if got := ann[autoscaling.TargetBurstCapacityKey]; got != "0" {
			problems = append(problems, fmt.Sprintf("failurePolicy Fail with target-burst-capacity %q: the activator stays in the warm path", got))
		}
		if wh.TimeoutSeconds == nil || *wh.TimeoutSeconds > 10 {
			problems = append(problems, fmt.Sprintf("failurePolicy Fail with timeoutSeconds %v: want at most 10", deref(wh.TimeoutSeconds)))
		}
	}
	if ts := svc.Spec.Template.Spec.TimeoutSeconds; ts == nil {
		problems = append(problems, "the revision has no timeoutSeconds (Knative's default is 300 s)")
	} else if wh.TimeoutSeconds != nil && *ts > int64(*wh.TimeoutSeconds) {
		problems = append(problems, fmt.Sprintf("revision timeoutSeconds %d outlives the webhook's %d: requests nobody waits for keep running", *ts, *wh.TimeoutSeconds))
	}
	return problems
}

func TestProductionDefaults(t *testing.T) {
	_, svc := loadService(t)
	cfg := loadWebhookConfig(t)
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("want 1 webhook, got %d", len(cfg.Webhooks))
	}
	wh := cfg.Webhooks[0]
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy = %v, want Fail by default (mirror bypass otherwise)", deref(wh.FailurePolicy))
	}
	for _, p := range productionProblems(wh, svc) {
		t.Error(p)
	}
}

// TestProductionDefaultsBrokenCopiesFail shows the rule rejects each unsafe
// combination and accepts the documented scale-to-zero opt-in.
func TestProductionDefaultsBrokenCopiesFail(t *testing.T) {
	_, original := loadService(t)
	cfg := loadWebhookConfig(t)
	tests := []struct {
		name     string
		policy   admissionregistrationv1.FailurePolicyType
		timeout  int32
		mutate   func(*servingv1.Service)
		problems int
	}{{
		name: "shipped", policy: admissionregistrationv1.Fail, timeout: 10,
		mutate: func(*servingv1.Service) {},
	}, {
		name: "old defaults: Fail, 30 s, scale to zero", policy: admissionregistrationv1.Fail, timeout: 30,
		mutate: func(s *servingv1.Service) {
			s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] = "0"
			delete(s.Spec.Template.Annotations, autoscaling.TargetBurstCapacityKey)
			s.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(30))
		},
		problems: 3,
	}, {
		name: "Fail without min-scale", policy: admissionregistrationv1.Fail, timeout: 10,
		mutate: func(s *servingv1.Service) {
			delete(s.Spec.Template.Annotations, autoscaling.MinScaleAnnotationKey)
		},
		problems: 1,
	}, {
		name: "revision timeout longer than the webhook's", policy: admissionregistrationv1.Fail, timeout: 10,
		mutate:   func(s *servingv1.Service) { s.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(300)) },
		problems: 1,
	}, {
		name: "scale-to-zero opt-in with Ignore", policy: admissionregistrationv1.Ignore, timeout: 10,
		mutate: func(s *servingv1.Service) {
			s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] = "0"
			delete(s.Spec.Template.Annotations, autoscaling.TargetBurstCapacityKey)
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := original.DeepCopy()
			tc.mutate(svc)
			wh := *cfg.Webhooks[0].DeepCopy()
			wh.FailurePolicy = &tc.policy
			wh.TimeoutSeconds = &tc.timeout
			if got := productionProblems(wh, svc); len(got) != tc.problems {
				t.Errorf("got %d problems, want %d: %q", len(got), tc.problems, got)
			}
		})
	}
}
