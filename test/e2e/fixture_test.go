package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// webhookHost is where the API server calls every fixture's mutator; the
// serving certificate names it.
const webhookHost = "0.0.0.0"

const (
	// scopeLabel ties a namespace to one webhook configuration: each
	// configuration's namespaceSelector requires it, so configurations of
	// different tests never act on each other's namespaces.
	scopeLabel = "e2e.mutator.dev/webhook"
	// ignoreLabel is the opt-out the real deployment's selector honours.
	ignoreLabel = "mutator.dev/ignore"
	// setupTimeout bounds starting a mutator and waiting for its webhook.
	setupTimeout = 30 * time.Second
	// pollInterval is the period of every wait in this package.
	pollInterval = 50 * time.Millisecond
	// probeImage is what the activation probe asks for; every configuration
	// under test changes it, its pull policy or its pull secrets, or warns.
	probeImage = "e2e-probe"
)

// fixture is a mutator process and the webhook configuration that sends it
// the reviews for namespaces labelled scopeLabel=configName().
type fixture struct {
	name    string // short name, e.g. "images"
	cfg     env
	policy  admissionregistrationv1.FailurePolicyType
	mutator *mutator
	probeNS string // an ordinary namespace in scope, for activation probes
	probe   kubernetes.Interface
	warns   *warningCollector // collects the probe client's warnings
}

// configName is the MutatingWebhookConfiguration's name.
func (f *fixture) configName() string { return "mutator-e2e-" + f.name }

// hookName is the webhook's name, which API server errors and metrics quote.
func (f *fixture) hookName() string { return f.name + ".e2e.mutator.dev" }

// scope returns the labels that put a namespace under this fixture's webhook.
func (f *fixture) scope() map[string]string { return scopeFor(f.name) }

// scopeFor returns the scope labels of the fixture called name, so that a
// namespace can be put under a webhook that is not registered yet.
func scopeFor(name string) map[string]string {
	return map[string]string{scopeLabel: (&fixture{name: name}).configName()}
}

// shared fixtures live until TestMain stops their mutators; their webhook
// configurations stay registered, harmlessly, since they are scoped.
var shared struct {
	sync.Mutex
	byName map[string]*fixture
}

// sharedFixture returns the fixture for name, starting it on first use. Use
// it for configurations several tests need unchanged.
func sharedFixture(t *testing.T, name string, cfg env) *fixture {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	f := shared.byName[name]
	if f == nil {
		var err error
		if f, err = setUp(t.Context(), name, cfg, admissionregistrationv1.Fail); err != nil {
			t.Fatalf("setting up shared fixture %s: %v", name, err)
		}
		if shared.byName == nil {
			shared.byName = map[string]*fixture{}
		}
		shared.byName[name] = f
	} else if !maps.Equal(f.cfg, cfg) {
		t.Fatalf("shared fixture %s already runs with %v, not %v", name, f.cfg, cfg)
	}
	f.logOnFailure(t)
	return f
}

// newFixture starts a fixture only this test uses; it is torn down when the
// test ends, and the mutator must then exit 0 on SIGTERM.
func newFixture(t *testing.T, name string, cfg env, policy admissionregistrationv1.FailurePolicyType) *fixture {
	t.Helper()
	f, err := setUp(t.Context(), name, cfg, policy)
	if err != nil {
		t.Fatalf("setting up fixture %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, f.configName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting webhook configuration %s: %v", f.configName(), err)
		}
		if err := f.mutator.stopClean(); err != nil {
			t.Error(err)
		}
	})
	f.logOnFailure(t)
	return f
}

// logOnFailure prints the mutator log tail if t fails.
func (f *fixture) logOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mutator %s (port %d) log tail:\n%s", f.name, f.mutator.port, f.mutator.logTail(40))
		}
	})
}

// setUp starts a mutator, registers its webhook and waits until the API
// server calls it. On error nothing is left running.
func setUp(ctx context.Context, name string, cfg env, policy admissionregistrationv1.FailurePolicyType) (_ *fixture, err error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	f := &fixture{name: name, cfg: cfg, policy: policy}
	if f.mutator, err = startMutator(ctx, name, 0, cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_, _ = f.mutator.stop()
		}
	}()
	if err := f.register(ctx); err != nil {
		return nil, err
	}
	ns, err := createNamespace(ctx, "probe-"+name+"-", f.scope())
	if err != nil {
		return nil, err
	}
	f.probeNS = ns
	f.warns = &warningCollector{}
	cfgREST := kube.RESTConfig()
	cfgREST.WarningHandler = f.warns
	if f.probe, err = kubernetes.NewForConfig(cfgREST); err != nil {
		return nil, fmt.Errorf("creating probe client: %w", err)
	}
	if err := f.waitActive(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// register creates (or replaces) the fixture's MutatingWebhookConfiguration.
func (f *fixture) register(ctx context.Context) error {
	// 0.0.0.0 reaches this machine without a name lookup, but the API
	// server does not take it for a loopback host (isLocalHost in
	// k8s.io/apiserver pkg/util/webhook/client.go compares the name with
	// "localhost" and IPs with the loopback range), so it calls the webhook
	// over HTTP/1.1 keep-alive, as it calls one behind a Service.
	url := fmt.Sprintf("https://%s/mutate", net.JoinHostPort(webhookHost, strconv.Itoa(f.mutator.port)))
	sideEffects := admissionregistrationv1.SideEffectClassNoneOnDryRun
	reinvocation := admissionregistrationv1.IfNeededReinvocationPolicy
	scope := admissionregistrationv1.NamespacedScope
	policy := f.policy
	timeout := int32(10)
	rule := func(ops []admissionregistrationv1.OperationType, resources ...string) admissionregistrationv1.RuleWithOperations {
		return admissionregistrationv1.RuleWithOperations{
			Operations: ops,
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: resources, Scope: &scope,
			},
		}
	}
	create, update := admissionregistrationv1.Create, admissionregistrationv1.Update
	whc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: f.configName()},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         f.hookName(),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: webhookCA.CertPEM()},
			Rules: []admissionregistrationv1.RuleWithOperations{
				rule([]admissionregistrationv1.OperationType{create, update}, "pods", "pods/ephemeralcontainers"),
				rule([]admissionregistrationv1.OperationType{create}, "persistentvolumeclaims"),
			},
			FailurePolicy: &policy,
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"}},
				{Key: ignoreLabel, Operator: metav1.LabelSelectorOpDoesNotExist},
				{Key: scopeLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{f.configName()}},
			}},
			// The shipped conditions, so that every test runs with them.
			MatchConditions:         shippedMatchConditions(),
			SideEffects:             &sideEffects,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &reinvocation,
		}},
	}
	client := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	if err := client.Delete(ctx, whc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting old webhook configuration %s: %w", whc.Name, err)
	}
	if _, err := client.Create(ctx, whc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating webhook configuration %s: %w", whc.Name, err)
	}
	return nil
}

// shipped holds the matchConditions of deploy/standalone's webhook.
var shipped struct {
	once       sync.Once
	conditions []admissionregistrationv1.MatchCondition
	err        error
}

// shippedMatchConditions returns the matchConditions of the shipped
// standalone webhook configuration; it panics if the file cannot be read,
// which TestShippedMatchConditions reports properly first.
func shippedMatchConditions() []admissionregistrationv1.MatchCondition {
	c, err := loadShippedMatchConditions()
	if err != nil {
		panic(err)
	}
	return c
}

func loadShippedMatchConditions() ([]admissionregistrationv1.MatchCondition, error) {
	shipped.once.Do(func() {
		path := filepath.Join(repoRoot(), "deploy", "standalone", "base", "webhook.yaml")
		b, err := os.ReadFile(path)
		if err != nil {
			shipped.err = err
			return
		}
		var whc admissionregistrationv1.MutatingWebhookConfiguration
		if err := yaml.UnmarshalStrict(b, &whc); err != nil {
			shipped.err = fmt.Errorf("%s: %w", path, err)
			return
		}
		if len(whc.Webhooks) != 1 || len(whc.Webhooks[0].MatchConditions) == 0 {
			shipped.err = fmt.Errorf("%s: want one webhook with matchConditions", path)
			return
		}
		shipped.conditions = whc.Webhooks[0].MatchConditions
	})
	return shipped.conditions, shipped.err
}

// waitActive polls server-side dry-run creates in the probe namespace until
// the answer shows the webhook at work: a changed Pod, a defaulted PVC, or a
// warning from the mutator (audit mode).
func (f *fixture) waitActive(ctx context.Context) error {
	last := "no probe yet"
	err := cluster.WaitFor(ctx, pollInterval, func(ctx context.Context) (bool, error) {
		active, err := f.probeOnce(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if !active {
			last = "dry-run objects came back unmutated and without mutator warnings"
		}
		return active, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for webhook %s to become active (last: %s): %w; mutator log:\n%s",
			f.hookName(), last, err, f.mutator.logTail(20))
	}
	return nil
}

func (f *fixture) probeOnce(ctx context.Context) (bool, error) {
	f.warns.reset()
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	pod, err := f.probe.CoreV1().Pods(f.probeNS).Create(ctx, newPod("probe", corev1.PodSpec{
		Containers: []corev1.Container{{Name: "probe", Image: probeImage}},
	}), dryRun)
	if err != nil {
		return false, fmt.Errorf("dry-run pod create: %w", err)
	}
	c := pod.Spec.Containers[0]
	// Untagged, the image's pull policy defaults to Always.
	if c.Image != probeImage || c.ImagePullPolicy != corev1.PullAlways || len(pod.Spec.ImagePullSecrets) > 0 || f.warns.any("mutator:") {
		return true, nil
	}
	pvc, err := f.probe.CoreV1().PersistentVolumeClaims(f.probeNS).Create(ctx, newPVC("probe", nil), dryRun)
	if err != nil {
		return false, fmt.Errorf("dry-run pvc create: %w", err)
	}
	return pvc.Spec.StorageClassName != nil || f.warns.any("mutator:"), nil
}

// createNamespace creates a namespace named generateName + random suffix.
func createNamespace(ctx context.Context, generateName string, labels map[string]string) (string, error) {
	ns, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: generateName, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("creating namespace %s*: %w", generateName, err)
	}
	return ns.Name, nil
}

// namespace creates a namespace for this test with the union of the label
// sets, usually a fixture's scope and maybe more. Namespaces are never
// deleted: without a controller manager they would stay Terminating, and the
// cluster is thrown away anyway.
func namespace(t *testing.T, labelSets ...map[string]string) string {
	t.Helper()
	labels := map[string]string{}
	for _, set := range labelSets {
		maps.Copy(labels, set)
	}
	ns, err := createNamespace(t.Context(), dnsPrefix(t.Name()), labels)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

var nonDNS = regexp.MustCompile(`[^a-z0-9]+`)

// dnsPrefix turns a test name into a generateName prefix.
func dnsPrefix(name string) string {
	s := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(s) > 40 {
		s = strings.TrimRight(s[:40], "-")
	}
	return s + "-"
}

// testContext bounds a test; nothing in this package should get near it.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newPod returns a Pod to create with a generated name.
func newPod(prefix string, spec corev1.PodSpec) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}, Spec: spec}
}

// newPVC returns a 1Gi ReadWriteOnce claim with the given class.
func newPVC(prefix string, class *string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			StorageClassName: class,
		},
	}
}

// warningCollector is a rest.WarningHandler that keeps the warnings.
type warningCollector struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *warningCollector) HandleWarningHeader(code int, _ string, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningCollector) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = nil
}

func (w *warningCollector) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// any reports whether a warning contains substr.
func (w *warningCollector) any(substr string) bool {
	for _, m := range w.all() {
		if strings.Contains(m, substr) {
			return true
		}
	}
	return false
}

// warningClient returns an admin client whose warnings land in the collector.
func warningClient(t *testing.T) (kubernetes.Interface, *warningCollector) {
	t.Helper()
	w := &warningCollector{}
	cfg := kube.RESTConfig()
	cfg.WarningHandler = w
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	return client, w
}
