package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	certresources "knative.dev/pkg/webhook/certificates/resources"

	mwcinformer "knative.dev/pkg/client/injection/kube/informers/admissionregistration/v1/mutatingwebhookconfiguration"
	secretinformer "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/secret"
)

// caBundleQueue names the work queue (and the logger) of the caBundle reconciler.
const caBundleQueue = "WebhookCABundle"

// caBundleReconciler keeps the caBundle of our webhooks equal to the CA in
// the certificates Secret. Knative's own webhook reconcilers also do this,
// but they own the whole configuration (rules, selectors), which here the
// manifests own; this one touches caBundle only.
type caBundleReconciler struct {
	client     kubernetes.Interface
	secrets    corelisters.SecretNamespaceLister
	configs    admissionlisters.MutatingWebhookConfigurationLister
	secretName string
	configName string
	// namespace and service identify our webhooks: those whose
	// clientConfig.service is this Service.
	namespace, service string
}

var _ controller.Reconciler = (*caBundleReconciler)(nil)

// newCABundleController reconciles one key, the configuration, whenever the
// Secret or the configuration changes: a re-applied manifest that drops the
// caBundle is repaired as promptly as a rotated CA is published.
func newCABundleController(ctx context.Context, opts Options) *controller.Impl {
	secrets := secretinformer.Get(ctx)
	configs := mwcinformer.Get(ctx)
	r := &caBundleReconciler{
		client:     kubeclient.Get(ctx),
		secrets:    secrets.Lister().Secrets(opts.Namespace),
		configs:    configs.Lister(),
		secretName: opts.SecretName,
		configName: opts.WebhookConfigName,
		namespace:  opts.Namespace,
		service:    opts.ServiceName,
	}
	impl := controller.NewContext(ctx, r, controller.ControllerOptions{
		WorkQueueName: caBundleQueue,
		Logger:        logging.FromContext(ctx).Named(caBundleQueue),
	})
	key := types.NamespacedName{Name: opts.WebhookConfigName}
	enqueue := func(any) { impl.EnqueueKey(key) }
	// AddEventHandler fails only for an informer that has already stopped,
	// which these, created just now, cannot have.
	for _, h := range []struct {
		informer cache.SharedIndexInformer
		filter   func(any) bool
	}{
		{secrets.Informer(), controller.FilterWithNameAndNamespace(opts.Namespace, opts.SecretName)},
		{configs.Informer(), controller.FilterWithName(opts.WebhookConfigName)},
	} {
		if _, err := h.informer.AddEventHandler(cache.FilteringResourceEventHandler{FilterFunc: h.filter, Handler: controller.HandleAll(enqueue)}); err != nil {
			logging.FromContext(ctx).Errorw("watching for caBundle changes", "error", err)
		}
	}
	return impl
}

// Reconcile implements controller.Reconciler.
func (r *caBundleReconciler) Reconcile(ctx context.Context, _ string) error {
	logger := logging.FromContext(ctx)
	secret, err := r.secrets.Get(r.secretName)
	if apierrors.IsNotFound(err) {
		// The manifests create it; its creation enqueues us again.
		logger.Warnf("Secret %s/%s not found: create it (empty) for the certificates controller to fill", r.namespace, r.secretName)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Secret %s/%s: %w", r.namespace, r.secretName, err)
	}
	ca := secret.Data[certresources.CACert]
	if len(ca) == 0 {
		// Not filled yet; the certificates controller's update enqueues us.
		return nil
	}
	if err := checkCABundle(ca); err != nil {
		// Publishing it would break every admission call; retrying cannot
		// fix it, the next change of the Secret will.
		return controller.NewPermanentError(fmt.Errorf("secret %s/%s, %s: %w", r.namespace, r.secretName, certresources.CACert, err))
	}
	cfg, err := r.configs.Get(r.configName)
	if apierrors.IsNotFound(err) {
		logger.Warnf("MutatingWebhookConfiguration %s not found; its caBundle will be set once it exists", r.configName)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", r.configName, err)
	}
	patch, changed, ours, err := caBundlePatch(cfg, r.namespace, r.service, ca)
	if err != nil {
		return controller.NewPermanentError(err)
	}
	if ours == 0 {
		logger.Warnf("no webhook of MutatingWebhookConfiguration %s calls Service %s/%s; caBundle left alone", r.configName, r.namespace, r.service)
		return nil
	}
	if len(changed) == 0 {
		return nil
	}
	if _, err := r.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, r.configName,
		types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		// A failed test operation (the list changed under us) is a 422;
		// the informer has or will have the new list and we retry.
		return fmt.Errorf("patching caBundle of MutatingWebhookConfiguration %s: %w", r.configName, err)
	}
	logger.Infow("caBundle updated", "configuration", r.configName, "webhooks", changed)
	return nil
}

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// caBundlePatch returns a JSON patch setting caBundle on the webhooks of cfg
// whose clientConfig.service is namespace/service and whose caBundle differs,
// the names of those webhooks, and how many webhooks are ours at all. The
// patch addresses webhooks by index, so each "add" is preceded by "test"
// operations pinning the webhook's name and service: if the list was edited
// in between, the API server rejects the whole patch instead of writing the
// CA into someone else's webhook. A JSON patch (rather than an update or a
// server-side apply of the whole object) leaves every other field, and
// every other field manager's ownership, alone.
func caBundlePatch(cfg *admissionregistrationv1.MutatingWebhookConfiguration, namespace, service string, ca []byte) (patch []byte, changed []string, ours int, err error) {
	var ops []jsonPatchOp
	for i, wh := range cfg.Webhooks {
		svc := wh.ClientConfig.Service
		if svc == nil || svc.Namespace != namespace || svc.Name != service {
			continue
		}
		ours++
		if bytes.Equal(wh.ClientConfig.CABundle, ca) {
			continue
		}
		base := "/webhooks/" + strconv.Itoa(i)
		ops = append(ops,
			jsonPatchOp{Op: "test", Path: base + "/name", Value: wh.Name},
			jsonPatchOp{Op: "test", Path: base + "/clientConfig/service/namespace", Value: svc.Namespace},
			jsonPatchOp{Op: "test", Path: base + "/clientConfig/service/name", Value: svc.Name},
			// "add" replaces a member that exists and creates one that
			// does not; "replace" would fail on a webhook without caBundle.
			// []byte marshals to base64, as the API expects.
			jsonPatchOp{Op: "add", Path: base + "/clientConfig/caBundle", Value: ca},
		)
		changed = append(changed, wh.Name)
	}
	if len(ops) == 0 {
		return nil, nil, ours, nil
	}
	patch, err = json.Marshal(ops)
	if err != nil {
		return nil, nil, ours, fmt.Errorf("encoding caBundle patch: %w", err)
	}
	return patch, changed, ours, nil
}

// checkCABundle verifies that ca is one or more PEM certificates and nothing
// else, which is what the API server needs in a caBundle.
func checkCABundle(ca []byte) error {
	rest := bytes.TrimSpace(ca)
	n := 0
	for len(rest) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return errors.New("not PEM")
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("parsing certificate: %w", err)
		}
		rest = bytes.TrimSpace(rest)
		n++
	}
	if n == 0 {
		return errors.New("no certificate")
	}
	return nil
}
