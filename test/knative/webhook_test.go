package knative

import (
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// ignoreLabel is the namespace opt-out label the webhook's selector honours.
const ignoreLabel = "mutator.dev/ignore"

// recoveryNamespaces must never be matched by the webhook: they run the
// components that serve it (and kube-system's add-ons must not depend on it).
var recoveryNamespaces = []string{
	"kube-system", "knative-serving", "kourier-system", "istio-system", "cert-manager", "mutator-system",
}

func loadWebhookConfig(t *testing.T) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	m := findOne(t, loadManifests(t), "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	// Strict: unknown or duplicate fields are errors, as with kubectl's
	// default --validate=strict.
	if err := yaml.UnmarshalStrict(m.JSON, cfg); err != nil {
		t.Fatalf("%v: %v", m, err)
	}
	return cfg
}

func TestWebhookConfiguration(t *testing.T) {
	cfg := loadWebhookConfig(t)
	if len(cfg.Webhooks) != 1 {
		t.Fatalf("want 1 webhook, got %d", len(cfg.Webhooks))
	}
	wh := cfg.Webhooks[0]
	if len(strings.Split(wh.Name, ".")) < 3 {
		t.Errorf("webhook name %q must be a fully qualified name with at least three segments", wh.Name)
	}

	_, svc := loadService(t)
	switch s := wh.ClientConfig.Service; {
	case s == nil:
		t.Errorf("clientConfig.service is not set")
	case s.Namespace != svc.Namespace || s.Name != svc.Name:
		t.Errorf("clientConfig.service = %s/%s, want the Knative Service %s/%s", s.Namespace, s.Name, svc.Namespace, svc.Name)
	case s.Path == nil || *s.Path != "/mutate":
		t.Errorf("clientConfig.service.path = %v, want /mutate", deref(s.Path))
	case s.Port == nil || *s.Port != 443:
		t.Errorf("clientConfig.service.port = %v, want 443 (the ingress' cluster-local TLS port)", deref(s.Port))
	}
	if wh.ClientConfig.URL != nil {
		t.Errorf("clientConfig.url and clientConfig.service are mutually exclusive")
	}
	if len(wh.ClientConfig.CABundle) == 0 && cfg.Annotations["cert-manager.io/inject-ca-from"] == "" {
		t.Errorf("neither a caBundle nor cert-manager.io/inject-ca-from: the apiserver could not verify TLS")
	}

	if !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions = %v, want [v1] (the function only speaks admission.k8s.io/v1)", wh.AdmissionReviewVersions)
	}
	if wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
		t.Errorf("sideEffects = %v, want NoneOnDryRun", deref(wh.SideEffects))
	}
	// How timeoutSeconds goes with failurePolicy and the Service's scaling
	// is checked in defaults_test.go; here only the API's bounds.
	if wh.TimeoutSeconds == nil || *wh.TimeoutSeconds < 1 || *wh.TimeoutSeconds > 30 {
		t.Errorf("timeoutSeconds = %v, want 1..30 (the API's bounds)", deref(wh.TimeoutSeconds))
	}
	if wh.FailurePolicy == nil {
		t.Errorf("failurePolicy must be chosen explicitly")
	}
	if wh.ReinvocationPolicy == nil || *wh.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("reinvocationPolicy = %v, want IfNeeded", deref(wh.ReinvocationPolicy))
	}
	if wh.MatchPolicy == nil || *wh.MatchPolicy != admissionregistrationv1.Equivalent {
		t.Errorf("matchPolicy = %v, want Equivalent", deref(wh.MatchPolicy))
	}

	wantRules := []struct {
		resource string
		ops      []admissionregistrationv1.OperationType
	}{
		{"pods", []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}},
		{"pods/ephemeralcontainers", []admissionregistrationv1.OperationType{admissionregistrationv1.Update}},
		{"persistentvolumeclaims", []admissionregistrationv1.OperationType{admissionregistrationv1.Create}},
	}
	for _, want := range wantRules {
		for _, op := range want.ops {
			if !rulesCover(wh.Rules, want.resource, op) {
				t.Errorf("no rule covers %s %s in core/v1", op, want.resource)
			}
		}
	}
}

// rulesCover reports whether a rule matches op on the core/v1 resource.
func rulesCover(rules []admissionregistrationv1.RuleWithOperations, resource string, op admissionregistrationv1.OperationType) bool {
	for _, r := range rules {
		if (slices.Contains(r.Operations, op) || slices.Contains(r.Operations, admissionregistrationv1.OperationAll)) &&
			slices.Contains(r.APIGroups, "") && slices.Contains(r.APIVersions, "v1") &&
			slices.Contains(r.Resources, resource) {
			return true
		}
	}
	return false
}

// TestWebhookNamespaceSelector evaluates the selector the way the apiserver
// does, against the labels namespaces really carry (the apiserver adds
// kubernetes.io/metadata.name to every namespace).
func TestWebhookNamespaceSelector(t *testing.T) {
	wh := loadWebhookConfig(t).Webhooks[0]
	if wh.NamespaceSelector == nil {
		t.Fatalf("no namespaceSelector: the webhook would match its own namespace")
	}
	selector, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
	if err != nil {
		t.Fatalf("invalid namespaceSelector: %v", err)
	}
	nsLabels := func(name string, extra map[string]string) labels.Set {
		set := labels.Set{corev1.LabelMetadataName: name}
		for k, v := range extra {
			set[k] = v
		}
		return set
	}

	type selectorCase struct {
		name  string
		set   labels.Set
		match bool
	}
	tests := []selectorCase{
		{"ordinary workload namespace", nsLabels("default", nil), true},
		{"namespace labelled ignore=false", nsLabels("team-a", map[string]string{ignoreLabel: "false"}), true},
		{"namespace opted out by label", nsLabels("team-b", map[string]string{ignoreLabel: "true"}), false},
	}
	for _, ns := range recoveryNamespaces {
		tests = append(tests, selectorCase{"recovery namespace " + ns, nsLabels(ns, nil), false})
	}
	// namespace.yaml as applied: its own labels plus the automatic name label,
	// and its labels alone (they must suffice if the name list is edited).
	ns := findOne(t, loadManifests(t), "v1", "Namespace")
	var namespace corev1.Namespace
	if err := yaml.UnmarshalStrict(ns.JSON, &namespace); err != nil {
		t.Fatalf("%v: %v", ns, err)
	}
	tests = append(tests,
		selectorCase{"namespace.yaml as applied", nsLabels(namespace.Name, namespace.Labels), false},
		selectorCase{"namespace.yaml labels under another name", nsLabels("renamed", namespace.Labels), false},
	)

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := selector.Matches(tc.set); got != tc.match {
				t.Errorf("namespaceSelector matches %v = %v, want %v", tc.set, got, tc.match)
			}
		})
	}

	svc := findOne(t, loadManifests(t), "serving.knative.dev/v1", "Service")
	if svc.Namespace != namespace.Name {
		t.Errorf("Service is in %q but namespace.yaml creates %q", svc.Namespace, namespace.Name)
	}
}

// TestCertificates checks that cert-manager's cainjector can find the CA the
// webhook names, and that the cluster-local issuer is backed by that CA.
func TestCertificates(t *testing.T) {
	all := loadManifests(t)
	cfg := loadWebhookConfig(t)
	ref := cfg.Annotations["cert-manager.io/inject-ca-from"]
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		t.Fatalf("cert-manager.io/inject-ca-from = %q, want <namespace>/<Certificate>", ref)
	}

	type certificate struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			IsCA       bool   `json:"isCA"`
			SecretName string `json:"secretName"`
			IssuerRef  struct {
				Kind string `json:"kind"`
				Name string `json:"name"`
			} `json:"issuerRef"`
		} `json:"spec"`
	}
	type clusterIssuer struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			SelfSigned *struct{} `json:"selfSigned"`
			CA         *struct {
				SecretName string `json:"secretName"`
			} `json:"ca"`
		} `json:"spec"`
	}
	var ca *certificate
	issuers := map[string]clusterIssuer{}
	for _, m := range all {
		switch {
		case m.APIVersion == "cert-manager.io/v1" && m.Kind == "Certificate" && m.Namespace == ns && m.Name == name:
			ca = &certificate{}
			if err := yaml.Unmarshal(m.JSON, ca); err != nil {
				t.Fatalf("%v: %v", m, err)
			}
		case m.APIVersion == "cert-manager.io/v1" && m.Kind == "ClusterIssuer":
			var ci clusterIssuer
			if err := yaml.Unmarshal(m.JSON, &ci); err != nil {
				t.Fatalf("%v: %v", m, err)
			}
			issuers[ci.Metadata.Name] = ci
		}
	}
	if ca == nil {
		t.Fatalf("inject-ca-from names Certificate %s, which no manifest defines", ref)
	}
	if !ca.Spec.IsCA {
		t.Errorf("Certificate %s is not a CA: the caBundle would not verify certificates it issues", ref)
	}
	if ns != "cert-manager" {
		// A ClusterIssuer of type CA reads its Secret from cert-manager's
		// cluster resource namespace.
		t.Errorf("CA Certificate is in %q, want cert-manager", ns)
	}
	if issuer, ok := issuers[ca.Spec.IssuerRef.Name]; ca.Spec.IssuerRef.Kind != "ClusterIssuer" || !ok || issuer.Spec.SelfSigned == nil {
		t.Errorf("CA Certificate is issued by %s %q, want a self-signed ClusterIssuer defined here", ca.Spec.IssuerRef.Kind, ca.Spec.IssuerRef.Name)
	}
	var backed []string
	for n, issuer := range issuers {
		if issuer.Spec.CA != nil && issuer.Spec.CA.SecretName == ca.Spec.SecretName {
			backed = append(backed, n)
		}
	}
	if len(backed) != 1 {
		t.Errorf("want exactly one CA ClusterIssuer backed by Secret %q (for config-certmanager's clusterLocalIssuerRef), got %v", ca.Spec.SecretName, backed)
	}
}
