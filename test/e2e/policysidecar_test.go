package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// injectedImage is what the sidecar injector of TestPolicySidecarInjector
// adds: a Docker Hub image, which the rules rewrite.
const injectedImage = "busybox:1.36"

// startSidecarInjector serves, until the test ends, a mutating webhook
// that adds a container of injectedImage to every Pod create that lacks
// it, as a service mesh's injector does, and registers it for namespaces
// labelled policyScopeLabel=scope. Webhooks run after every
// MutatingAdmissionPolicy, so what it adds comes after mutator-pods.
func startSidecarInjector(t *testing.T, ctx context.Context, scope string) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(servingCert, servingKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", net.JoinHostPort(webhookHost, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var review admissionv1.AdmissionReview
			if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
				http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
				return
			}
			var pod corev1.Pod
			if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
			injected := false
			for _, c := range pod.Spec.Containers {
				injected = injected || c.Name == "injected"
			}
			if !injected {
				patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-", "value": map[string]any{
					"name": "injected", "image": injectedImage, "imagePullPolicy": "IfNotPresent",
				}}})
				resp.Patch, resp.PatchType = patch, ptr.To(admissionv1.PatchTypeJSONPatch)
			}
			review.Response, review.Request = resp, nil
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(review)
		}),
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	// The address the serving certificate names, as the fixtures' webhooks.
	url := fmt.Sprintf("https://%s/inject", net.JoinHostPort(webhookHost, fmt.Sprint(l.Addr().(*net.TCPAddr).Port)))
	name := "e2e-sidecar-injector-" + scope
	whc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "inject.e2e.mutator.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: webhookCA.CertPEM()},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{policyScopeLabel: scope}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		}},
	}
	client := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := client.Create(ctx, whc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s: %v", name, err)
		}
		_ = srv.Shutdown(ctx)
	})
}

// TestPolicySidecarInjector: a mutating webhook that runs after the
// policies adds a container whose image must be rewritten. With the
// default reinvocationPolicy Never, mutator-provenance refuses the Pod,
// naming the container and why; with --reinvocation=IfNeeded the API
// server runs mutator-pods again after the webhook, and the injected image
// is rewritten, at the price of a second evaluation of the mutation for
// such Pods (counted by the API server).
func TestPolicySidecarInjector(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		scope string
		args  []string
	}{
		{"sidecar-never", nil},
		{"sidecar-ifneeded", []string{"--reinvocation=IfNeeded"}},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			stdout, stderr, err := runMutatorCommand(t, cfgAll, append([]string{"policy"}, tc.args...)...)
			if err != nil {
				t.Fatalf("mutator policy %v: %v\n%s", tc.args, err, stderr)
			}
			applyPolicies(t, ctx, tc.scope, stdout)
			ns := namespace(t, map[string]string{policyScopeLabel: tc.scope})
			if err := waitPolicyActive(ctx, &parityModes{name: tc.scope, polNS: ns, hasImages: true}); err != nil {
				t.Fatal(err)
			}
			startSidecarInjector(t, ctx, tc.scope)
			pods := kube.Client().CoreV1().Pods(ns)
			spec := corev1.PodSpec{Containers: []corev1.Container{c("app", "nginx:1.27", "")}}
			// Wait for the injector: a dry run comes back with its
			// container, or refused for it.
			last := "no probe yet"
			err = cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
				pod, err := pods.Create(ctx, newPod("probe", spec), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				if err != nil {
					last = err.Error()
					return strings.Contains(err.Error(), `container "injected"`), nil
				}
				last = fmt.Sprintf("%d containers", len(pod.Spec.Containers))
				return len(pod.Spec.Containers) == 2, nil
			})
			if err != nil {
				t.Fatalf("waiting for the sidecar injector (last: %s): %v", last, err)
			}

			policyName := "mutator-pods-" + tc.scope
			before := scrape(t, ctx)
			const k = 10
			for i := range k {
				created, err := pods.Create(ctx, newPod("injected", spec), metav1.CreateOptions{})
				if tc.args == nil {
					want := `container "injected": image "` + injectedImage + `" is not from a registry the mutator allows (it would pull "` +
						mirror + "/" + injectedImage + `"); it was set after the mutator-pods policy ran, by a later mutation`
					if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--reinvocation=IfNeeded") {
						t.Fatalf("with reinvocationPolicy Never and a sidecar injector: %v; want mutator-provenance's refusal saying\n  %s", err, want)
					}
					if i == 0 {
						t.Logf("refused: %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("with reinvocationPolicy IfNeeded and a sidecar injector: %v", err)
				}
				got := map[string]string{}
				for _, ctr := range created.Spec.Containers {
					got[ctr.Name] = ctr.Image
				}
				if got["app"] != mirror+"/nginx:1.27" || got["injected"] != mirror+"/"+injectedImage {
					t.Fatalf("with reinvocationPolicy IfNeeded and a sidecar injector, stored %v; want both images under %s", got, mirror)
				}
			}
			after := scrape(t, ctx)
			evaluations := (after.sum("apiserver_mutating_admission_policy_check_total", "policy", policyName) -
				before.sum("apiserver_mutating_admission_policy_check_total", "policy", policyName)) / k
			t.Logf("%s: %.2f evaluations of the mutation per create", policyName, evaluations)
			want := 1.0
			if tc.args != nil {
				// Once, then again after the injector changed the Pod.
				want = 2
			}
			if evaluations != want {
				t.Errorf("%s: %.2f evaluations of the mutation per create, want %.0f", policyName, evaluations, want)
			}
		})
	}
}
