package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/cluster/node"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

const (
	// mutatorPort is where the mutator process serves reviews, on the
	// node IP: the API server treats a loopback webhook host specially
	// (HTTP/2), and a Service's address would not be loopback either.
	mutatorPort = 8443
	// webhookConfig is the shipped webhook configuration, used as users
	// apply it but for clientConfig.
	webhookConfig = "deploy/standalone/base/webhook.yaml"
)

// mutatorProcess is the mutator binary running in the test's namespaces.
type mutatorProcess struct {
	*cluster.Daemon
}

// startMutator runs bin with the configuration under test and waits for
// its readiness probe over HTTPS.
func startMutator(ctx context.Context, bin, dir string, ca *cluster.CA) (*mutatorProcess, error) {
	certPEM, keyPEM, err := ca.Issue(nil, []net.IP{net.ParseIP(node.NodeIP)})
	if err != nil {
		return nil, fmt.Errorf("issuing the mutator's certificate: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, "mutator.crt"), filepath.Join(dir, "mutator.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	// A clean environment: nothing from the developer's shell changes
	// what is tested.
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"PORT=" + strconv.Itoa(mutatorPort),
		"METRICS_PORT=9095",
		"TLS_CERT_FILE=" + certFile,
		"TLS_KEY_FILE=" + keyFile,
		"REGISTRY=" + mirrorRegistry,
		"IMAGE_PULL_SECRET=" + pullSecret,
		"FORCE_IMAGE_PULL_POLICY=true",
		"IMAGE_PULL_POLICY_TO_FORCE=Always",
	}
	d, err := cluster.StartDaemon("mutator", bin, filepath.Join(dir, "mutator.log"), env, "serve")
	if err != nil {
		return nil, err
	}
	m := &mutatorProcess{d}
	if err := m.waitReady(ctx, ca); err != nil {
		_ = m.stop()
		return nil, err
	}
	return m, nil
}

// url is where the API server calls the mutator.
func (m *mutatorProcess) url() string {
	return "https://" + net.JoinHostPort(node.NodeIP, strconv.Itoa(mutatorPort)) + "/mutate"
}

// waitReady polls /health/readiness, trusting only ca.
func (m *mutatorProcess) waitReady(ctx context.Context, ca *cluster.CA) error {
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}},
	}
	defer client.CloseIdleConnections()
	url := "https://" + net.JoinHostPort(node.NodeIP, strconv.Itoa(mutatorPort)) + "/health/readiness"
	return cluster.WaitHealthy(ctx, client, url, m.Daemon)
}

// stop sends SIGTERM and waits up to 10 s, then kills; nil-safe.
func (m *mutatorProcess) stop() error {
	if m == nil {
		return nil
	}
	return m.Stop(10 * time.Second)
}

// tail returns about the last n lines of the mutator's log.
func (m *mutatorProcess) tail(n int) string {
	if m == nil {
		return ""
	}
	return "==> mutator <==\n" + m.Tail(n)
}

// registerWebhook applies the shipped MutatingWebhookConfiguration (rules,
// namespaceSelector, matchConditions, failurePolicy Fail) with its
// clientConfig pointing at the mutator process, then waits until the API
// server calls it: a server-side dry run of a Pod comes back rewritten.
func registerWebhook(ctx context.Context, client kubernetes.Interface, url string, caPEM []byte) error {
	root, err := node.RepoRoot()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(root, webhookConfig))
	if err != nil {
		return fmt.Errorf("reading the shipped webhook configuration: %w", err)
	}
	var whc admissionregistrationv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(data, &whc); err != nil {
		return fmt.Errorf("decoding %s: %w", webhookConfig, err)
	}
	if len(whc.Webhooks) != 1 {
		return fmt.Errorf("%s has %d webhooks, want 1", webhookConfig, len(whc.Webhooks))
	}
	whc.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	if fp := whc.Webhooks[0].FailurePolicy; fp == nil || *fp != admissionregistrationv1.Fail {
		return fmt.Errorf("%s: failurePolicy is not Fail", webhookConfig)
	}
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &whc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the webhook configuration: %w", err)
	}

	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe", Namespace: metav1.NamespaceDefault},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: originRef("app")}}},
	}
	last := "no answer yet"
	err = cluster.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		got, err := client.CoreV1().Pods(probe.Namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "serviceaccount"):
			last = err.Error() // the default ServiceAccount is not there yet
			return false, nil
		case err != nil:
			last = err.Error()
			return false, nil
		}
		last = "image " + got.Spec.Containers[0].Image
		return got.Spec.Containers[0].Image == mirrorRef("app"), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the webhook to mutate (last: %s): %w", last, err)
	}
	return nil
}
