package policy_test

import (
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"

	"github.com/mutator-dev/mutator/function/policy"
)

// latencyPod is the Pod of the e2e latency measurement (TestPolicyLatency):
// an init container and two containers, one pull secret, pull policies as
// defaulting sets them.
func latencyPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "latency-x", Namespace: "team"},
		Spec: corev1.PodSpec{
			InitContainers:   []corev1.Container{{Name: "init", Image: "busybox:1.36", ImagePullPolicy: corev1.PullIfNotPresent}},
			Containers:       []corev1.Container{{Name: "app", Image: "ghcr.io/org/app:v1", ImagePullPolicy: corev1.PullIfNotPresent}, {Name: "sidecar", Image: "nginx:1.27", ImagePullPolicy: corev1.PullIfNotPresent}},
			ImagePullSecrets: []corev1.LocalObjectReference{{Name: "a"}},
		},
	}
}

// latencyConfig is cfgAll of the e2e tests, as env.
var latencyConfig = map[string]string{
	"REGISTRY": "registry.example.com/mirror", "IGNORED_REGISTRIES": "registry.k8s.io",
	"IMAGE_PULL_SECRET": "regcred", "FORCE_IMAGE_PULL_POLICY": "true", "IMAGE_PULL_POLICY_TO_FORCE": "IfNotPresent",
}

// BenchmarkPolicies measures, in process with the admission plugins'
// compilers, what the policies evaluate for a Pod create: the CREATE
// policy's mutation (with its conversion of the Pod and the JSON patch),
// and the provenance policy on the Pod it returns (its matchConditions,
// false there), against a policy of one constant patch.
func BenchmarkPolicies(b *testing.B) {
	set, err := policy.Generate(policy.LoadConfig(b, latencyConfig), policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	o := objectInterfaces(b)
	m := compileMAP(b, set.Pods)
	v := compileVAP(b, set.Provenance)
	trivial := compileMAP(b, &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "trivial"},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{Mutations: []admissionregistrationv1.Mutation{{
			PatchType: admissionregistrationv1.PatchTypeJSONPatch,
			JSONPatch: &admissionregistrationv1.JSONPatch{Expression: "[JSONPatch{op: 'add', path: '/metadata/annotations', value: {'e2e.mutator.dev/trivial': 'yes'}}]"},
		}}},
	})
	create := request{op: admission.Create, pod: latencyPod()}
	_, mutated := m.mutate(b, o, create)
	if mutated.Spec.Containers[0].Image != "registry.example.com/mirror/org/app:v1" {
		b.Fatalf("not rewritten: %s", podJSON(mutated))
	}
	b.Run("mutation", func(b *testing.B) {
		for b.Loop() {
			m.mutate(b, o, create)
		}
	})
	b.Run("trivial mutation", func(b *testing.B) {
		for b.Loop() {
			trivial.mutate(b, o, create)
		}
	})
	b.Run("provenance on the rewritten Pod", func(b *testing.B) {
		r := request{op: admission.Create, pod: mutated}
		for b.Loop() {
			if msg, matched := validate(b, v, r); msg != "" || matched {
				b.Fatalf("validate: %q, %v", msg, matched)
			}
		}
	})
	b.Run("provenance on the Pod as written", func(b *testing.B) {
		for b.Loop() {
			if msg, _ := validate(b, v, create); msg == "" {
				b.Fatal("admitted")
			}
		}
	})
}
