package knative

import (
	"context"
	"fmt"
	"k8s.io/utils/ptr"
	"strconv"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	kjson "knative.dev/pkg/webhook/json"
	"knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
)

// knativeCreateContext builds the context Knative Serving's own admission
// webhooks give SetDefaults and Validate for a `kubectl apply` that creates
// the Service: the serving config store (here: the defaults that stock,
// empty config-defaults / config-features / config-autoscaler ConfigMaps
// produce), the requesting user and the CREATE operation.
func knativeCreateContext(t *testing.T) context.Context {
	t.Helper()
	defaults, err := config.NewDefaultsConfigFromMap(map[string]string{})
	if err != nil {
		t.Fatalf("building config-defaults: %v", err)
	}
	features, err := config.NewFeaturesConfigFromMap(map[string]string{})
	if err != nil {
		t.Fatalf("building config-features: %v", err)
	}
	autoscaler, err := asconfig.NewConfigFromMap(map[string]string{})
	if err != nil {
		t.Fatalf("building config-autoscaler: %v", err)
	}
	ctx := config.ToContext(context.Background(), &config.Config{
		Defaults:   defaults,
		Features:   features,
		Autoscaler: autoscaler,
	})
	ctx = apis.WithUserInfo(ctx, &authenticationv1.UserInfo{Username: "kubernetes-admin"})
	return apis.WithinCreate(ctx)
}

// decodeService decodes a Service the way Knative's webhook does
// (knative.dev/pkg/webhook/json). Unknown fields are rejected: on a real
// cluster the CRD's structural schema plus kubectl's default
// --validate=strict reject them too, and a typo in a field name would
// otherwise be silently dropped.
func decodeService(js []byte) (*servingv1.Service, error) {
	svc := &servingv1.Service{}
	if err := kjson.Decode(js, svc, true); err != nil {
		return nil, fmt.Errorf("decoding serving.knative.dev/v1 Service: %w", err)
	}
	return svc, nil
}

// admit runs Knative's defaulting and then its validation, in the order the
// mutating and validating webhooks run, and returns only error-level
// diagnostics (warnings are returned separately).
func admit(ctx context.Context, svc *servingv1.Service) (errs, warnings *apis.FieldError) {
	svc.SetDefaults(ctx)
	fe := svc.Validate(ctx)
	return fe.Filter(apis.ErrorLevel), fe.Filter(apis.WarningLevel)
}

func loadService(t *testing.T) (manifest, *servingv1.Service) {
	t.Helper()
	m := findOne(t, loadManifests(t), "serving.knative.dev/v1", "Service")
	svc, err := decodeService(m.JSON)
	if err != nil {
		t.Fatalf("%v: %v", m, err)
	}
	return m, svc
}

func TestServiceValidatesWithKnative(t *testing.T) {
	m, svc := loadService(t)
	ctx := knativeCreateContext(t)
	errs, warnings := admit(ctx, svc)
	if errs != nil {
		t.Fatalf("%v: Knative Serving rejects the Service:\n%v", m, errs)
	}
	if warnings != nil {
		t.Errorf("%v: Knative Serving warns about the Service:\n%v", m, warnings)
	}
}

// TestServiceSettings pins down the settings the webhook deployment depends
// on; each one is explained in service.yaml.
func TestServiceSettings(t *testing.T) {
	m, svc := loadService(t)
	if svc.Name != "mutator" || svc.Namespace != "mutator-system" {
		t.Errorf("%v: want Service mutator-system/mutator (webhook.yaml points there)", m)
	}
	if got := svc.Labels["networking.knative.dev/visibility"]; got != "cluster-local" {
		t.Errorf("visibility label = %q, want cluster-local (only the apiserver calls the webhook)", got)
	}

	ann := svc.Spec.Template.Annotations
	// Scale to zero (guard.yaml keeps provenance meanwhile), and the
	// activator out of the warm path.
	if got := ann[autoscaling.MinScaleAnnotationKey]; got != "0" {
		t.Errorf("%s = %q, want \"0\" (scale to zero)", autoscaling.MinScaleAnnotationKey, got)
	}
	if got := ann[autoscaling.TargetBurstCapacityKey]; got != "0" {
		t.Errorf("%s = %q, want \"0\" (activator off the warm path)", autoscaling.TargetBurstCapacityKey, got)
	}
	maxScale, err := strconv.Atoi(ann[autoscaling.MaxScaleAnnotationKey])
	if err != nil || maxScale < 1 {
		t.Errorf("%s = %q, want a positive integer", autoscaling.MaxScaleAnnotationKey, ann[autoscaling.MaxScaleAnnotationKey])
	}
	target, err := strconv.ParseFloat(ann[autoscaling.TargetAnnotationKey], 64)
	if err != nil || target <= 0 {
		t.Errorf("%s = %q, want a positive number", autoscaling.TargetAnnotationKey, ann[autoscaling.TargetAnnotationKey])
	}

	spec := svc.Spec.Template.Spec
	if spec.ContainerConcurrency == nil || *spec.ContainerConcurrency < 1 {
		t.Errorf("containerConcurrency = %v, want a positive hard limit", deref(spec.ContainerConcurrency))
	} else if target > float64(*spec.ContainerConcurrency) {
		t.Errorf("autoscaling target %v exceeds containerConcurrency %d", target, *spec.ContainerConcurrency)
	}
	if spec.TimeoutSeconds == nil {
		t.Errorf("timeoutSeconds is not set")
	} else if wh := loadWebhookConfig(t); len(wh.Webhooks) > 0 && wh.Webhooks[0].TimeoutSeconds != nil &&
		*spec.TimeoutSeconds < int64(*wh.Webhooks[0].TimeoutSeconds) {
		// The activator enforces the revision timeout on a request it holds
		// during a cold start: shorter than the apiserver's budget would cut
		// the cold start short for nothing.
		t.Errorf("timeoutSeconds %d is shorter than the webhook's timeoutSeconds %d",
			*spec.TimeoutSeconds, *wh.Webhooks[0].TimeoutSeconds)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken should be false: the mutator does not call the API")
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("want 1 container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image == "" || strings.HasPrefix(c.Image, "ko://") {
		t.Errorf("image %q: want a pullable image reference", c.Image)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 8080 || c.Ports[0].Name != "http1" {
		// func-go's server speaks HTTP/1.1 only; "h2c" would make the
		// queue-proxy send cleartext HTTP/2 it cannot answer.
		t.Errorf("ports = %+v, want one port named http1 on 8080", c.Ports)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if got := env["LISTEN_ADDRESS"]; !strings.HasSuffix(got, ":8080") || strings.HasPrefix(got, "127.") {
		t.Errorf("LISTEN_ADDRESS = %q, want all interfaces on the container port 8080", got)
	}
	if env["REGISTRY"] == "" {
		t.Errorf("REGISTRY is not set")
	}
	probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe}
	for name, p := range probes {
		want := "/health/" + name
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
			t.Errorf("%s probe = %+v, want HTTP GET %s (served by func-go)", name, p, want)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want cpu/memory requests and a memory limit", c.Resources)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("container has no securityContext")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot,
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL":
		t.Errorf("securityContext = %+v, want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, drop ALL", sc)
	}
}

// TestServiceBrokenCopiesFail proves that the validation above has teeth:
// each deliberately broken copy of service.yaml must be rejected by Knative,
// on the field we broke.
func TestServiceBrokenCopiesFail(t *testing.T) {
	_, original := loadService(t)
	tests := []struct {
		name     string
		mutate   func(*servingv1.Service)
		wantPath string // substring of the rejected field's path
	}{{
		name:     "negative containerConcurrency",
		mutate:   func(s *servingv1.Service) { s.Spec.Template.Spec.ContainerConcurrency = ptr.To(int64(-1)) },
		wantPath: "containerConcurrency",
	}, {
		name: "non-numeric min-scale",
		mutate: func(s *servingv1.Service) {
			s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] = "zero"
		},
		wantPath: autoscaling.MinScaleAnnotationKey,
	}, {
		name: "min-scale above max-scale",
		mutate: func(s *servingv1.Service) {
			s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] = "20"
			s.Spec.Template.Annotations[autoscaling.MaxScaleAnnotationKey] = "2"
		},
		wantPath: autoscaling.MinScaleAnnotationKey,
	}, {
		// What func.yaml's deploy.annotations would do if it carried scaling
		// settings: func copies them onto the Service's own metadata.
		name: "autoscaling annotation on the Service metadata",
		mutate: func(s *servingv1.Service) {
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations[autoscaling.MinScaleAnnotationKey] = "0"
		},
		wantPath: "metadata.annotations",
	}, {
		name: "second container port for metrics",
		mutate: func(s *servingv1.Service) {
			c := &s.Spec.Template.Spec.Containers[0]
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: "metrics", ContainerPort: 9090})
		},
		wantPath: "ports",
	}, {
		name: "timeout above Knative's max-revision-timeout-seconds",
		mutate: func(s *servingv1.Service) {
			s.Spec.Template.Spec.TimeoutSeconds = ptr.To(int64(3600))
		},
		wantPath: "timeoutSeconds",
	}, {
		name: "reserved env var PORT",
		mutate: func(s *servingv1.Service) {
			c := &s.Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, corev1.EnvVar{Name: "PORT", Value: "9999"})
		},
		wantPath: "env",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := original.DeepCopy()
			tc.mutate(svc)
			errs, _ := admit(knativeCreateContext(t), svc)
			if errs == nil {
				t.Fatalf("Knative accepted the broken Service")
			}
			if !strings.Contains(errs.Error(), tc.wantPath) {
				t.Errorf("rejected, but not for %q:\n%v", tc.wantPath, errs)
			}
		})
	}

	// A typo in a field name must not be silently dropped.
	t.Run("unknown field", func(t *testing.T) {
		m, _ := loadService(t)
		broken := strings.Replace(string(m.JSON), `"containerConcurrency"`, `"containerConcurency"`, 1)
		if broken == string(m.JSON) {
			t.Fatalf("service.yaml has no containerConcurrency to misspell")
		}
		if _, err := decodeService([]byte(broken)); err == nil {
			t.Errorf("a misspelled field decoded without error")
		}
	})
}
