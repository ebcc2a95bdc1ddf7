package knative

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/utils/ptr"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// coldStartRoom is the least webhook timeout that leaves room for a cold
// start of the function inside a review: docs/knative.md measures about a
// second or two on a small node, including the image pull.
const coldStartRoom = 5

// productionProblems says what is wrong with running the webhook wh in
// front of the Knative Service svc, guarded or not by the image guard
// (guard.yaml in the kustomization). Provenance must not depend on the
// function being warm: scaling to zero, or a webhook that fails open, needs
// the guard. A webhook that fails closed holds every matched creation
// until the function answers, so it must leave a cold start room and no
// more than the short budget Knative's own webhooks use, and reach a warm
// function without the activator.
func productionProblems(wh admissionregistrationv1.MutatingWebhook, svc *servingv1.Service, guarded bool) []string {
	var problems []string
	ann := svc.Spec.Template.Annotations
	minScale, err := strconv.Atoi(ann[autoscaling.MinScaleAnnotationKey])
	if err != nil {
		minScale = 0 // Knative's default when the annotation is absent
	}
	failClosed := wh.FailurePolicy == nil || *wh.FailurePolicy == admissionregistrationv1.Fail
	if !guarded {
		if minScale < 1 {
			problems = append(problems, fmt.Sprintf("min-scale %d without the image guard: provenance depends on a cold function", minScale))
		}
		if !failClosed {
			problems = append(problems, "failurePolicy Ignore without the image guard: Pods are admitted unmutated while the function is down")
		}
	}
	if failClosed {
		if got := ann[autoscaling.TargetBurstCapacityKey]; got != "0" {
			problems = append(problems, fmt.Sprintf("failurePolicy Fail with target-burst-capacity %q: the activator stays in the warm path", got))
		}
		switch {
		case wh.TimeoutSeconds == nil || *wh.TimeoutSeconds > 10:
			problems = append(problems, fmt.Sprintf("failurePolicy Fail with timeoutSeconds %v: want at most 10", deref(wh.TimeoutSeconds)))
		case minScale < 1 && *wh.TimeoutSeconds < coldStartRoom:
			problems = append(problems, fmt.Sprintf("failurePolicy Fail, min-scale %d and timeoutSeconds %d: no room for a cold start, want at least %d", minScale, *wh.TimeoutSeconds, coldStartRoom))
		}
	}
	if ts := svc.Spec.Template.Spec.TimeoutSeconds; ts == nil {
		problems = append(problems, "the revision has no timeoutSeconds (Knative's default is 300 s)")
	} else if wh.TimeoutSeconds != nil && *ts > int64(*wh.TimeoutSeconds) {
		problems = append(problems, fmt.Sprintf("revision timeoutSeconds %d outlives the webhook's %d: requests nobody waits for keep running", *ts, *wh.TimeoutSeconds))
	}
	return problems
}

// shipsGuard reports whether deploy/knative's kustomization applies the
// image guard.
func shipsGuard(t *testing.T) bool {
	t.Helper()
	kustomization := findOne(t, loadManifests(t), "kustomize.config.k8s.io/v1beta1", "Kustomization")
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(kustomization.JSON, &k); err != nil {
		t.Fatalf("decoding %v: %v", kustomization, err)
	}
	return slices.Contains(k.Resources, "guard.yaml")
}

func TestProductionDefaults(t *testing.T) {
	_, svc := loadService(t)
	cfg := loadWebhookConfig(t)
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("want 1 webhook, got %d", len(cfg.Webhooks))
	}
	wh := cfg.Webhooks[0]
	if wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy = %v, want Fail by default (a review nobody answered admits nothing)", deref(wh.FailurePolicy))
	}
	if got := svc.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey]; got != "0" {
		t.Errorf("min-scale = %q, want \"0\": the function scales to zero by default", got)
	}
	for _, p := range productionProblems(wh, svc, shipsGuard(t)) {
		t.Error(p)
	}
}

// TestProductionDefaultsBrokenCopiesFail shows the rule rejects each unsafe
// combination and accepts the safe ones.
func TestProductionDefaultsBrokenCopiesFail(t *testing.T) {
	_, original := loadService(t)
	cfg := loadWebhookConfig(t)
	tests := []struct {
		name     string
		policy   admissionregistrationv1.FailurePolicyType
		timeout  int32
		unguard  bool
		mutate   func(*servingv1.Service)
		problems int
	}{{
		name: "shipped", policy: admissionregistrationv1.Fail, timeout: 10,
		mutate: func(*servingv1.Service) {},
	}, {
		name: "one warm Pod", policy: admissionregistrationv1.Fail, timeout: 10,
		mutate: func(s *servingv1.Service) { s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] = "1" },
	}, {
		name: "scale to zero without the guard", policy: admissionregistrationv1.Fail, timeout: 10, unguard: true,
		mutate:   func(*servingv1.Service) {},
		problems: 1,
	}, {
		name: "Ignore without the guard, one warm Pod", policy: admissionregistrationv1.Ignore, timeout: 10, unguard: true,
		mutate:   func(s *servingv1.Service) { s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] = "1" },
		problems: 1,
	}, {
		name: "Ignore with the guard", policy: admissionregistrationv1.Ignore, timeout: 10,
		mutate: func(s *servingv1.Service) { delete(s.Spec.Template.Annotations, autoscaling.TargetBurstCapacityKey) },
	}, {
		name: "Fail, 30 s, activator in the warm path", policy: admissionregistrationv1.Fail, timeout: 30,
		mutate: func(s *servingv1.Service) {
			delete(s.Spec.Template.Annotations, autoscaling.TargetBurstCapacityKey)
			s.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(30))
		},
		problems: 2,
	}, {
		name: "no room for a cold start", policy: admissionregistrationv1.Fail, timeout: 3,
		mutate:   func(s *servingv1.Service) { s.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(3)) },
		problems: 1,
	}, {
		name: "revision timeout longer than the webhook's", policy: admissionregistrationv1.Fail, timeout: 10,
		mutate:   func(s *servingv1.Service) { s.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(300)) },
		problems: 1,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := original.DeepCopy()
			tc.mutate(svc)
			wh := *cfg.Webhooks[0].DeepCopy()
			wh.FailurePolicy = &tc.policy
			wh.TimeoutSeconds = &tc.timeout
			if got := productionProblems(wh, svc, !tc.unguard); len(got) != tc.problems {
				t.Errorf("got %d problems, want %d: %q", len(got), tc.problems, got)
			}
		})
	}
}
