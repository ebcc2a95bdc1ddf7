package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	certresources "knative.dev/pkg/webhook/certificates/resources"
)

const (
	testNS      = "mutator-system"
	testSecret  = "mutator-certs"
	testService = "mutator"
	testConfig  = "mutator"
)

// newTestSecret returns a Secret as knative's certificates controller fills it.
func newTestSecret(t *testing.T, rv string) *corev1.Secret {
	t.Helper()
	key, cert, ca, err := certresources.CreateCerts(context.Background(), testService, testNS, time.Now().Add(48*time.Hour))
	if err != nil {
		t.Fatalf("creating certificates: %v", err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS, ResourceVersion: rv},
		Data: map[string][]byte{
			certresources.ServerKey:  key,
			certresources.ServerCert: cert,
			certresources.CACert:     ca,
		},
	}
}

func serviceWebhook(name, ns, svc string, ca []byte) admissionregistrationv1.MutatingWebhook {
	return admissionregistrationv1.MutatingWebhook{
		Name: name,
		ClientConfig: admissionregistrationv1.WebhookClientConfig{
			Service:  &admissionregistrationv1.ServiceReference{Namespace: ns, Name: svc, Path: ptr.To("/mutate")},
			CABundle: ca,
		},
		SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
		AdmissionReviewVersions: []string{"v1"},
	}
}

func TestCABundlePatchTouchesOnlyOurWebhooks(t *testing.T) {
	ca := newTestSecret(t, "1").Data[certresources.CACert]
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: testConfig},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			serviceWebhook("other-service.example.com", testNS, "other", []byte("keep me")),
			serviceWebhook("pods.mutator.dev", testNS, testService, nil),
			{Name: "url.example.com", ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://example.com")}},
			serviceWebhook("other-namespace.example.com", "elsewhere", testService, nil),
			serviceWebhook("current.mutator.dev", testNS, testService, ca),
			serviceWebhook("stale.mutator.dev", testNS, testService, []byte("old")),
		},
	}
	patch, changed, ours, err := caBundlePatch(cfg, testNS, testService, ca)
	if err != nil {
		t.Fatal(err)
	}
	if ours != 3 {
		t.Errorf("ours = %d, want 3", ours)
	}
	if got, want := strings.Join(changed, ","), "pods.mutator.dev,stale.mutator.dev"; got != want {
		t.Errorf("changed = %s, want %s", got, want)
	}
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch is not JSON: %v", err)
	}
	var paths []string
	for _, op := range ops {
		paths = append(paths, op["op"].(string)+" "+op["path"].(string))
	}
	want := []string{
		"test /webhooks/1/name", "test /webhooks/1/clientConfig/service/namespace", "test /webhooks/1/clientConfig/service/name", "add /webhooks/1/clientConfig/caBundle",
		"test /webhooks/5/name", "test /webhooks/5/clientConfig/service/namespace", "test /webhooks/5/clientConfig/service/name", "add /webhooks/5/clientConfig/caBundle",
	}
	if strings.Join(paths, "\n") != strings.Join(want, "\n") {
		t.Errorf("patch operations:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(want, "\n"))
	}

	// Nothing to do once every webhook of ours has the CA.
	cfg.Webhooks[1].ClientConfig.CABundle = ca
	cfg.Webhooks[5].ClientConfig.CABundle = ca
	if patch, changed, ours, err := caBundlePatch(cfg, testNS, testService, ca); err != nil || patch != nil || changed != nil || ours != 3 {
		t.Errorf("in sync: patch %s, changed %v, ours %d, err %v; want no patch", patch, changed, ours, err)
	}
}

func TestCheckCABundle(t *testing.T) {
	ca := newTestSecret(t, "1").Data[certresources.CACert]
	for _, tc := range []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"one", ca, true},
		{"two", append(append([]byte{}, ca...), ca...), true},
		{"empty", []byte("\n"), false},
		{"garbage", []byte("not a certificate"), false},
		{"trailing garbage", append(append([]byte{}, ca...), "junk"...), false},
		{"key", newTestSecret(t, "1").Data[certresources.ServerKey], false},
	} {
		if err := checkCABundle(tc.in); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestReconcilePatchesCABundleOnly(t *testing.T) {
	secret := newTestSecret(t, "1")
	ca := secret.Data[certresources.CACert]
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: testConfig, Labels: map[string]string{"keep": "me"}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			serviceWebhook("pods.mutator.dev", testNS, testService, nil),
			serviceWebhook("someone-else.example.com", testNS, "other", []byte("theirs")),
		},
	}
	client := fake.NewClientset(secret, cfg)
	secrets := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	configs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := secrets.Add(secret); err != nil {
		t.Fatal(err)
	}
	if err := configs.Add(cfg); err != nil {
		t.Fatal(err)
	}
	r := &caBundleReconciler{
		client:     client,
		secrets:    corelisters.NewSecretLister(secrets).Secrets(testNS),
		configs:    admissionlisters.NewMutatingWebhookConfigurationLister(configs),
		secretName: testSecret, configName: testConfig, namespace: testNS, service: testService,
	}
	ctx := context.Background()
	if err := r.Reconcile(ctx, testConfig); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	got, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, testConfig, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, ca) {
		t.Errorf("our caBundle = %q, want the Secret's CA", got.Webhooks[0].ClientConfig.CABundle)
	}
	if string(got.Webhooks[1].ClientConfig.CABundle) != "theirs" {
		t.Errorf("other webhook's caBundle changed to %q", got.Webhooks[1].ClientConfig.CABundle)
	}
	if got.Labels["keep"] != "me" {
		t.Errorf("labels changed: %v", got.Labels)
	}
	var patches int
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" {
			patches++
		}
	}
	if patches != 1 {
		t.Errorf("%d patches, want 1", patches)
	}

	// In sync (the lister now has the patched object): no further call.
	if err := configs.Update(got); err != nil {
		t.Fatal(err)
	}
	client.ClearActions()
	if err := r.Reconcile(ctx, testConfig); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("second Reconcile made %d API calls, want 0", n)
	}

	// An unfilled Secret is not an error: its update enqueues us again.
	if err := secrets.Update(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(ctx, testConfig); err != nil || len(client.Actions()) != 0 {
		t.Errorf("empty Secret: err %v, %d API calls; want none", err, len(client.Actions()))
	}
}

func TestSecretKeyPair(t *testing.T) {
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	kp := newSecretKeyPair(corelisters.NewSecretLister(indexer).Secrets(testNS), testSecret, zap.NewNop())
	hello := &tls.ClientHelloInfo{}

	if _, err := kp.GetCertificate(hello); err == nil {
		t.Fatal("no Secret: want an error")
	}
	empty := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS, ResourceVersion: "1"}}
	if err := indexer.Add(empty); err != nil {
		t.Fatal(err)
	}
	if _, err := kp.GetCertificate(hello); err == nil || !strings.Contains(err.Error(), "no serving certificate yet") {
		t.Fatalf("empty Secret: err = %v", err)
	}

	first := newTestSecret(t, "2")
	if err := indexer.Update(first); err != nil {
		t.Fatal(err)
	}
	c1, err := kp.GetCertificate(hello)
	if err != nil {
		t.Fatalf("filled Secret: %v", err)
	}
	if again, _ := kp.GetCertificate(hello); again != c1 {
		t.Error("same resourceVersion parsed again")
	}

	// Emptied for a rotation, or broken: keep serving the last good pair.
	if err := indexer.Update(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: testSecret, Namespace: testNS, ResourceVersion: "3"}}); err != nil {
		t.Fatal(err)
	}
	if c, err := kp.GetCertificate(hello); err != nil || c != c1 {
		t.Errorf("emptied Secret: got %p, %v; want the previous pair", c, err)
	}

	second := newTestSecret(t, "4")
	if err := indexer.Update(second); err != nil {
		t.Fatal(err)
	}
	c2, err := kp.GetCertificate(hello)
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c1 || !bytes.Equal(c2.Leaf.Raw, mustParse(t, second).Leaf.Raw) {
		t.Error("rotated Secret: not serving the new certificate")
	}
	if want := testService + "." + testNS + ".svc"; !slices.Contains(c2.Leaf.DNSNames, want) {
		t.Errorf("DNS names %v lack %s", c2.Leaf.DNSNames, want)
	}
}

func mustParse(t *testing.T, s *corev1.Secret) *tls.Certificate {
	t.Helper()
	c, err := parseKeyPair(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOptionsValidate(t *testing.T) {
	t.Setenv("SYSTEM_NAMESPACE", testNS)
	if _, err := New(context.Background(), Options{Namespace: "other", SecretName: "Bad_Name", ServiceName: "svc", WebhookConfigName: "c"}); err == nil ||
		!strings.Contains(err.Error(), "SYSTEM_NAMESPACE") || !strings.Contains(err.Error(), "Bad_Name") || !strings.Contains(err.Error(), "client configuration") {
		t.Errorf("New with bad options: err = %v", err)
	}
}
