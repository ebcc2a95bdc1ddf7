package e2e

// The standalone mode with a self-managed certificate (WEBHOOK_SECRET_NAME,
// package function/certs) against the real API server, and the
// deploy/standalone manifests.
//
// The mutator runs as the ServiceAccount of deploy/standalone with exactly
// that overlay's RBAC, authenticated by a TokenRequest token, so the test
// also proves the Role and ClusterRole are sufficient. The API server cannot
// reach a Service here (there is no kube-proxy), so the webhook
// configuration's only job is to receive the caBundle: its webhooks match no
// namespace and ignore failures. Reviews are sent to the process directly,
// over TLS verified against the Secret's CA with the Service's DNS name.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certresources "knative.dev/pkg/webhook/certificates/resources"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

// The names deploy/standalone uses; the test runs the mutator with them so
// that the overlay's RBAC (which names the Secret and the configuration)
// applies unchanged.
const (
	standaloneNS         = "mutator-system"
	standaloneSA         = "mutator"
	standaloneSecret     = "mutator-certs"
	standaloneService    = "mutator"
	standaloneConfig     = "mutator"
	standaloneServerName = standaloneService + "." + standaloneNS + ".svc"
	standaloneHook       = "mutate.mutator.dev"
	// standaloneOtherHook calls another Service: its caBundle is not ours.
	standaloneOtherHook = "other.e2e.mutator.dev"
	// standaloneTimeout bounds the whole certificate test.
	standaloneTimeout = 2 * time.Minute
	// standalonePoll is fast, since it is also what the start-up times
	// are measured with.
	standalonePoll = 5 * time.Millisecond
)

// TestStandaloneCertificates runs `mutator serve` with WEBHOOK_SECRET_NAME
// and checks the whole certificate life cycle: the Secret is filled, the
// caBundle follows it, HTTPS serves the Secret's certificate, rotations are
// picked up without a restart, and SIGTERM drains an in-flight review and
// exits 0.
func TestStandaloneCertificates(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), standaloneTimeout)
	defer cancel()
	client := kube.Client()
	root := standaloneRepoRoot(t)

	standaloneEnsureNamespace(t, ctx)
	// The ServiceAccount, RBAC and the empty Secret, straight from the overlay.
	applied := standaloneApplyKinds(t, ctx, filepath.Join(root, "deploy", "standalone"),
		"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, _, err := kube.Kubectl(ctx, "delete", "--ignore-not-found", "--wait=false", "-f", applied); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})
	standaloneCheckRBAC(t, ctx)
	before := standaloneRegisterWebhook(t, ctx)

	kubeconfig := standaloneSAKubeconfig(t, ctx)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := startStandalone(t, port, "--kubeconfig="+kubeconfig)
	began := p.started

	// Cold start: exec to Secret filled, to caBundle, to first review.
	var secret *corev1.Secret
	standaloneWait(t, ctx, p, "the certificates controller to fill the Secret", func(ctx context.Context) (bool, error) {
		s, err := client.CoreV1().Secrets(standaloneNS).Get(ctx, standaloneSecret, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		secret = s
		return len(s.Data[certresources.CACert]) > 0 && len(s.Data[certresources.ServerCert]) > 0 && len(s.Data[certresources.ServerKey]) > 0, nil
	})
	secretFilled := time.Since(began)
	ca := secret.Data[certresources.CACert]
	var reviewErr error
	standaloneWait(t, ctx, p, "an answered review over HTTPS", func(ctx context.Context) (bool, error) {
		reviewErr = standaloneReview(ctx, addr, ca)
		return reviewErr == nil, nil
	})
	firstReview := time.Since(began)
	standaloneWaitCABundle(t, ctx, p, ca)
	caBundleSet := time.Since(began)
	t.Logf("cold start (exec to): Secret filled %s, first answered review %s, caBundle set %s",
		secretFilled.Round(time.Millisecond), firstReview.Round(time.Millisecond), caBundleSet.Round(time.Millisecond))

	t.Run("certificate", func(t *testing.T) {
		leaf, proto := standaloneHandshake(t, addr, ca)
		// Offered both, the server picks HTTP/1.1: what the API server
		// offers a webhook behind a Service, and all it serves unless
		// ENABLE_HTTP2.
		if proto != "http/1.1" {
			t.Errorf("ALPN negotiated %q, want http/1.1", proto)
		}
		for _, name := range []string{standaloneServerName, standaloneServerName + ".cluster.local"} {
			if err := leaf.VerifyHostname(name); err != nil {
				t.Errorf("serving certificate: %v", err)
			}
		}
		if !bytes.Equal(leaf.Raw, standaloneLeaf(t, secret).Raw) {
			t.Error("served certificate is not the Secret's server-cert.pem")
		}
		// A CA that is not the Secret's must not verify it.
		other, err := cluster.NewCA()
		if err != nil {
			t.Fatal(err)
		}
		if err := standaloneReview(ctx, addr, other.CertPEM()); err == nil {
			t.Error("handshake verified against an unrelated CA")
		}
		if code := standaloneGet(t, addr, ca, "/health/readiness"); code != http.StatusOK {
			t.Errorf("readiness over HTTPS: HTTP %d", code)
		}
	})

	t.Run("only caBundle patched", func(t *testing.T) {
		after, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, standaloneConfig, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		standaloneCheckOnlyCABundle(t, before, after, ca)
		managers := map[string]bool{}
		for _, mf := range after.ManagedFields {
			managers[mf.Manager] = true
		}
		if !managers["mutator"] {
			t.Errorf("managedFields managers %v lack the mutator's field manager", managers)
		}
	})

	t.Run("rotation by emptying the Secret", func(t *testing.T) {
		// What an operator does to force a new CA: the controller sees
		// the missing keys and issues a new CA and certificate.
		s := secret.DeepCopy()
		s.Data = nil
		rotated := time.Now()
		if _, err := client.CoreV1().Secrets(standaloneNS).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("emptying the Secret: %v", err)
		}
		standaloneWait(t, ctx, p, "a new CA in the Secret", func(ctx context.Context) (bool, error) {
			s, err := client.CoreV1().Secrets(standaloneNS).Get(ctx, standaloneSecret, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			secret = s
			newCA := s.Data[certresources.CACert]
			return len(newCA) > 0 && !bytes.Equal(newCA, ca), nil
		})
		ca = secret.Data[certresources.CACert]
		standaloneWaitServed(t, ctx, p, addr, secret)
		standaloneWaitCABundle(t, ctx, p, ca)
		t.Logf("emptied Secret to new certificate served and caBundle updated: %s", time.Since(rotated).Round(time.Millisecond))
	})

	t.Run("rotation by replacing the Secret", func(t *testing.T) {
		// What the certificates controller writes when it renews: a new
		// CA and certificate. Valid for a week, so the controller keeps it.
		key, cert, newCA, err := certresources.CreateCerts(ctx, standaloneService, standaloneNS, time.Now().Add(7*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		s := secret.DeepCopy()
		s.Data = map[string][]byte{certresources.ServerKey: key, certresources.ServerCert: cert, certresources.CACert: newCA}
		rotated := time.Now()
		if secret, err = client.CoreV1().Secrets(standaloneNS).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("replacing the Secret: %v", err)
		}
		ca = newCA
		standaloneWaitServed(t, ctx, p, addr, secret)
		standaloneWaitCABundle(t, ctx, p, ca)
		t.Logf("replaced Secret to new certificate served and caBundle updated: %s", time.Since(rotated).Round(time.Millisecond))
		// The controller must have left our (valid) certificate alone.
		got, err := client.CoreV1().Secrets(standaloneNS).Get(ctx, standaloneSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Data[certresources.CACert], newCA) {
			t.Error("the certificates controller replaced a certificate valid for a week")
		}
		if err := standaloneReview(ctx, addr, ca); err != nil {
			t.Errorf("review after rotation: %v", err)
		}
	})

	t.Run("caBundle repaired", func(t *testing.T) {
		// A re-applied or hand-edited configuration without caBundle (or
		// with a stale one) is repaired from the Secret.
		patch := `[{"op":"test","path":"/webhooks/0/name","value":"` + standaloneHook + `"},` +
			`{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]`
		if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, standaloneConfig,
			types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("removing caBundle: %v", err)
		}
		standaloneWaitCABundle(t, ctx, p, ca)
	})

	if p.exited() {
		t.Fatalf("the mutator exited during the test; log:\n%s", p.logTail(40))
	}
	if p.cmd.Process.Pid != p.pid {
		t.Fatal("the mutator was restarted")
	}

	t.Run("SIGTERM drains and exits 0", func(t *testing.T) {
		standaloneCheckDrain(t, ctx, p, addr, ca)
	})
}

// TestStandaloneManifests validates deploy/standalone and its cert-manager
// overlay against the API server with a server-side dry run, and checks the
// properties the variants promise.
func TestStandaloneManifests(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), standaloneTimeout)
	defer cancel()
	root := standaloneRepoRoot(t)
	// A dry run creates nothing, so the namespace its objects go into must
	// exist already.
	standaloneEnsureNamespace(t, ctx)
	// cert-manager is not installed: minimal CRDs for its two kinds let the
	// server validate everything else of the overlay and accept (without
	// schema checks) the Issuers and Certificates.
	standaloneCertManagerCRDs(t, ctx)

	for _, dir := range []string{"deploy/standalone", "deploy/standalone/cert-manager"} {
		t.Run(dir, func(t *testing.T) {
			out, _, err := kube.Kubectl(ctx, "apply", "--dry-run=server", "-k", filepath.Join(root, dir))
			if err != nil {
				t.Fatal(err)
			}
			objs := standaloneRender(t, ctx, filepath.Join(root, dir))
			if n := strings.Count(out, "(server dry run)"); n != len(objs) {
				t.Errorf("server dry run reported %d objects, the kustomization has %d:\n%s", n, len(objs), out)
			}
			standaloneCheckCommon(t, objs)
			standaloneCheckRestricted(t, ctx, objs)
			if strings.HasSuffix(dir, "cert-manager") {
				standaloneCheckCertManagerVariant(t, objs)
			} else {
				standaloneCheckSelfManagedVariant(t, objs)
			}
		})
	}
}

// TestStandaloneNetworkPolicy: the optional NetworkPolicy cannot be applied
// unedited (its API server address is a placeholder the API server refuses,
// so it never ships admitting 0.0.0.0/0), and applies from an overlay that
// sets the address, as its kustomization tells users to.
func TestStandaloneNetworkPolicy(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), standaloneTimeout)
	defer cancel()
	standaloneEnsureNamespace(t, ctx)
	dir := filepath.Join(standaloneRepoRoot(t), "deploy", "standalone", "network-policy")
	out, stderr, err := kube.Kubectl(ctx, "apply", "--dry-run=server", "-k", dir)
	if err == nil || !strings.Contains(stderr, "cidr") {
		t.Errorf("the unedited sample was not refused for its placeholder address: %v\n%s%s", err, out, stderr)
	}
	overlay := t.TempDir()
	rel, err := filepath.Rel(overlay, dir) // kustomize takes no absolute bases
	if err != nil {
		t.Fatal(err)
	}
	kustomization := fmt.Sprintf(`resources: [%q]
patches:
  - target: {kind: NetworkPolicy, name: mutator}
    patch: |
      - op: replace
        path: /spec/ingress/0/from/0/ipBlock/cidr
        value: 192.0.2.10/32
`, rel)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = kube.Kubectl(ctx, "apply", "--dry-run=server", "-k", overlay)
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	if !strings.Contains(out, "networkpolicy.networking.k8s.io/mutator created (server dry run)") {
		t.Errorf("dry run: %s", out)
	}
}

// standaloneCheckRestricted checks that the namespace enforces Pod
// Security "restricted" and that the Deployment's Pod passes it: a Pod made
// from the template is created (dry run) in a namespace with the same labels,
// where the API server's PodSecurity admission judges it.
func standaloneCheckRestricted(t *testing.T, ctx context.Context, objs []*unstructured.Unstructured) {
	t.Helper()
	ns, _ := standaloneTyped(t, objs, "Namespace", standaloneNS, &corev1.Namespace{})
	if ns == nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("namespace %s does not enforce the restricted Pod Security profile", standaloneNS)
	}
	dep, ok := standaloneTyped(t, objs, "Deployment", "mutator", &appsv1.Deployment{})
	if !ok {
		t.Fatal("no Deployment mutator")
	}
	labels := map[string]string{}
	for k, v := range ns.Labels {
		if strings.HasPrefix(k, "pod-security.kubernetes.io/") {
			labels[k] = v
		}
	}
	psaNS, err := createNamespace(ctx, "psa-", labels)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "mutator-psa", Namespace: psaNS}, Spec: dep.Spec.Template.Spec}
	pod.Spec.ServiceAccountName = ""
	if _, err := kube.Client().CoreV1().Pods(psaNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the Deployment's Pod fails Pod Security restricted: %v", err)
	}
	// The check must be able to fail: a privileged variant is refused.
	bad := pod.DeepCopy()
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
	bad.Spec.Containers[0].SecurityContext.RunAsNonRoot = nil
	bad.Spec.SecurityContext.RunAsNonRoot = nil
	bad.Spec.SecurityContext.RunAsUser = nil
	if _, err := kube.Client().CoreV1().Pods(psaNS).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err == nil {
		t.Error("a Pod that may run as root passed the restricted namespace: PodSecurity admission is not judging")
	}
}

// standaloneProc is one `mutator serve` process of these tests.
type standaloneProc struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	logPath string
	done    chan struct{}
	waitErr error
}

// startStandalone starts the mutator in WEBHOOK_SECRET_NAME mode on port
// with the given extra arguments. It does not wait for anything.
func startStandalone(t *testing.T, port int, args ...string) *standaloneProc {
	t.Helper()
	p := &standaloneProc{logPath: filepath.Join(t.TempDir(), "mutator.log"), done: make(chan struct{})}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	p.cmd = exec.Command(mutatorBin, append([]string{"serve"}, args...)...)
	// A clean environment: nothing from the developer's shell (KUBECONFIG,
	// REGISTRY, PORT) changes what is tested.
	p.cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		"PORT=" + strconv.Itoa(port),
		"METRICS_PORT=0",
		"LOG_LEVEL=debug",
		"REGISTRY=" + mirror,
		"WEBHOOK_SECRET_NAME=" + standaloneSecret,
		"SYSTEM_NAMESPACE=" + standaloneNS,
		"WEBHOOK_SERVICE_NAME=" + standaloneService,
		"WEBHOOK_CONFIG_NAME=" + standaloneConfig,
	}
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	p.cmd.SysProcAttr = sysProcAttr()
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting the mutator: %v", err)
	}
	p.pid = p.cmd.Process.Pid
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("mutator log tail:\n%s", p.logTail(60))
		}
	})
	return p
}

func (p *standaloneProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *standaloneProc) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// standaloneWait polls cond until it holds, failing the test on timeout, on
// an error from cond, or if the mutator exits.
func standaloneWait(t *testing.T, ctx context.Context, p *standaloneProc, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	err := cluster.WaitFor(ctx, standalonePoll, func(ctx context.Context) (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("the mutator exited (%v)", p.waitErr)
		}
		return cond(ctx)
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// standaloneWaitCABundle waits until our webhook's caBundle is ca.
func standaloneWaitCABundle(t *testing.T, ctx context.Context, p *standaloneProc, ca []byte) {
	t.Helper()
	var last []byte
	standaloneWait(t, ctx, p, "the caBundle to equal the Secret's CA", func(ctx context.Context) (bool, error) {
		cfg, err := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, standaloneConfig, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, wh := range cfg.Webhooks {
			if wh.Name == standaloneHook {
				last = wh.ClientConfig.CABundle
				return bytes.Equal(last, ca), nil
			}
		}
		return false, fmt.Errorf("webhook %s missing from %s", standaloneHook, standaloneConfig)
	})
}

// standaloneWaitServed waits until a new handshake, verified against the
// Secret's CA, presents the Secret's certificate.
func standaloneWaitServed(t *testing.T, ctx context.Context, p *standaloneProc, addr string, secret *corev1.Secret) {
	t.Helper()
	want := standaloneLeaf(t, secret)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(secret.Data[certresources.CACert])
	standaloneWait(t, ctx, p, "the new certificate to be served", func(ctx context.Context) (bool, error) {
		conn, err := (&tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: standaloneServerName}}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, nil // still the old certificate, which this CA does not verify
		}
		defer conn.Close()
		got := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
		return bytes.Equal(got.Raw, want.Raw), nil
	})
}

// standaloneLeaf parses the Secret's serving certificate.
func standaloneLeaf(t *testing.T, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(s.Data[certresources.ServerCert], s.Data[certresources.ServerKey])
	if err != nil {
		t.Fatalf("Secret's key pair: %v", err)
	}
	return pair.Leaf
}

// standaloneHandshake connects to addr verifying against ca and the
// Service's DNS name, offering HTTP/2 like the API server, and returns the
// served certificate and the negotiated protocol.
func standaloneHandshake(t *testing.T, addr string, ca []byte) (*x509.Certificate, string) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("the Secret's CA is not PEM")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: standaloneServerName, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatalf("TLS handshake verified against the Secret's CA for %s: %v", standaloneServerName, err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return st.PeerCertificates[0], st.NegotiatedProtocol
}

// standaloneClient is an HTTPS client that trusts only ca and expects the
// Service's DNS name, over a fresh connection each time.
func standaloneClient(ca []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: standaloneServerName},
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
		},
	}
}

func standaloneGet(t *testing.T, addr string, ca []byte, path string) int {
	t.Helper()
	resp, err := standaloneClient(ca).Get("https://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// standaloneReviewBody is a Pod CREATE review whose image REGISTRY rewrites.
func standaloneReviewBody(uid string) []byte {
	pod := corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "standalone", Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27"}}},
	}
	raw, _ := json.Marshal(pod)
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID(uid),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	return body
}

// standaloneCheckAnswer verifies a review answer: allowed, same uid, and a
// patch that rewrites the image.
func standaloneCheckAnswer(status int, body []byte, uid string) error {
	if status != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", status, bytes.TrimSpace(body))
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return fmt.Errorf("decoding review answer: %w", err)
	}
	r := review.Response
	switch {
	case r == nil:
		return errors.New("no response in review answer")
	case string(r.UID) != uid:
		return fmt.Errorf("answer uid %q, want %q", r.UID, uid)
	case !r.Allowed:
		return fmt.Errorf("not allowed: %v", r.Result)
	case !bytes.Contains(r.Patch, []byte(mirror+"/nginx:1.27")):
		return fmt.Errorf("patch %s does not rewrite the image", r.Patch)
	}
	return nil
}

// standaloneReview POSTs a review over HTTPS verified against ca.
func standaloneReview(ctx context.Context, addr string, ca []byte) error {
	uid := "standalone-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/mutate", bytes.NewReader(standaloneReviewBody(uid)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := standaloneClient(ca).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading review answer: %w", err)
	}
	// The client offers HTTP/2; the standalone server must answer over
	// HTTP/1.1, the protocol the API server uses through a Service.
	if resp.Proto != "HTTP/1.1" {
		return fmt.Errorf("answered over %s, want HTTP/1.1 (HTTP/2 is off unless ENABLE_HTTP2)", resp.Proto)
	}
	return standaloneCheckAnswer(resp.StatusCode, body, uid)
}

// standaloneCheckDrain sends SIGTERM while a review is in flight (its body
// half sent), checks that the review is still answered, and that the
// process then exits 0.
func standaloneCheckDrain(t *testing.T, ctx context.Context, p *standaloneProc, addr string, ca []byte) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := (&tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: standaloneServerName, NextProtos: []string{"http/1.1"}}}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uid := "drain"
	body := standaloneReviewBody(uid)
	half := len(body) / 2
	fmt.Fprintf(conn, "POST /mutate HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", standaloneServerName, len(body))
	if _, err := conn.Write(body[:half]); err != nil {
		t.Fatal(err)
	}
	// Let the server read the headers, so the connection is active.
	time.Sleep(100 * time.Millisecond)
	signalled := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if p.exited() {
		t.Fatalf("the mutator exited with a review in flight (%v)", p.waitErr)
	}
	if _, err := conn.Write(body[half:]); err != nil {
		t.Fatalf("sending the rest of the in-flight review: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the in-flight review's answer: %v", err)
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := standaloneCheckAnswer(resp.StatusCode, answer, uid); err != nil {
		t.Errorf("in-flight review during drain: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the mutator did not exit within 10s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("SIGTERM to exit 0: %s (with one review drained)", time.Since(signalled).Round(time.Millisecond))
}

// standaloneRepoRoot is the repository root (go test runs in test/e2e).
func standaloneRepoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "standalone", "kustomization.yaml")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// standaloneEnsureNamespace creates mutator-system as deploy/standalone
// does. It is never deleted (no namespace controller runs here).
func standaloneEnsureNamespace(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: standaloneNS, Labels: map[string]string{ignoreLabel: "true"},
	}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", standaloneNS, err)
	}
}

// standaloneRender returns the objects of a kustomization, rendered by
// kubectl's kustomize.
func standaloneRender(t *testing.T, ctx context.Context, dir string) []*unstructured.Unstructured {
	t.Helper()
	out, _, err := kube.Kubectl(ctx, "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	var objs []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("parsing kustomize output of %s: %v", dir, err)
		}
		if len(obj) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: obj})
		}
	}
	return objs
}

// standaloneApplyKinds applies the objects of the given kinds from a
// kustomization and returns the file it applied, for deletion.
func standaloneApplyKinds(t *testing.T, ctx context.Context, dir string, kinds ...string) string {
	t.Helper()
	list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List"}}
	for _, obj := range standaloneRender(t, ctx, dir) {
		if slices.Contains(kinds, obj.GetKind()) {
			list.Items = append(list.Items, *obj)
		}
	}
	data, err := list.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "selected.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kube.Kubectl(ctx, "apply", "-f", path); err != nil {
		t.Fatal(err)
	}
	return path
}

// standaloneCheckRBAC asks the API server what the overlay's ServiceAccount
// may do: what the certificates need, and not more.
func standaloneCheckRBAC(t *testing.T, ctx context.Context) {
	t.Helper()
	user := "system:serviceaccount:" + standaloneNS + ":" + standaloneSA
	for _, c := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Namespace: standaloneNS, Verb: "update", Resource: "secrets", Name: standaloneSecret}, true},
		{authorizationv1.ResourceAttributes{Namespace: standaloneNS, Verb: "watch", Resource: "secrets"}, true},
		{authorizationv1.ResourceAttributes{Namespace: standaloneNS, Verb: "update", Resource: "secrets", Name: "another"}, false},
		{authorizationv1.ResourceAttributes{Namespace: "default", Verb: "list", Resource: "secrets"}, false},
		{authorizationv1.ResourceAttributes{Namespace: standaloneNS, Verb: "create", Resource: "secrets"}, false},
		{authorizationv1.ResourceAttributes{Namespace: standaloneNS, Verb: "get", Resource: "configmaps", Name: "config-logging"}, false},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Verb: "patch", Resource: "mutatingwebhookconfigurations", Name: standaloneConfig}, true},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Verb: "list", Resource: "mutatingwebhookconfigurations"}, true},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Verb: "patch", Resource: "mutatingwebhookconfigurations", Name: "someone-else"}, false},
		{authorizationv1.ResourceAttributes{Group: "admissionregistration.k8s.io", Verb: "delete", Resource: "mutatingwebhookconfigurations", Name: standaloneConfig}, false},
		{authorizationv1.ResourceAttributes{Group: "coordination.k8s.io", Namespace: standaloneNS, Verb: "create", Resource: "leases"}, false},
	} {
		sar, err := kube.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + standaloneNS, "system:authenticated"}, ResourceAttributes: &c.attrs},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != c.want {
			t.Errorf("RBAC: %s %s %s/%s %q allowed = %v, want %v", user, c.attrs.Verb, c.attrs.Group, c.attrs.Resource, c.attrs.Name, sar.Status.Allowed, c.want)
		}
	}
}

// standaloneRegisterWebhook creates the configuration that receives the
// caBundle: our webhook (service reference, no caBundle) and one calling
// another Service, whose caBundle must stay as it is. Neither matches a
// namespace, and failures are ignored, so no other test is affected.
func standaloneRegisterWebhook(t *testing.T, ctx context.Context) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	other, err := cluster.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	path := "/mutate"
	nowhere := &metav1.LabelSelector{MatchLabels: map[string]string{"e2e.mutator.dev/standalone-matches-nothing": "true"}}
	hook := func(name, service string, ca []byte) admissionregistrationv1.MutatingWebhook {
		scope := admissionregistrationv1.NamespacedScope
		return admissionregistrationv1.MutatingWebhook{
			Name: name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service:  &admissionregistrationv1.ServiceReference{Namespace: standaloneNS, Name: service, Path: &path},
				CABundle: ca,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope},
			}},
			FailurePolicy:           &ignore,
			NamespaceSelector:       nowhere,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	whc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{
			Name:        standaloneConfig,
			Labels:      map[string]string{"app.kubernetes.io/name": "mutator"},
			Annotations: map[string]string{"e2e.mutator.dev/untouched": "yes"},
		},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook(standaloneHook, standaloneService, nil),
			hook(standaloneOtherHook, "other", other.CertPEM()),
		},
	}
	client := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	if err := client.Delete(ctx, whc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	created, err := client.Create(ctx, whc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := client.Delete(ctx, whc.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting webhook configuration %s: %v", whc.Name, err)
		}
	})
	return created
}

// standaloneCheckOnlyCABundle compares the configuration before and after
// the mutator patched it: only our webhook's caBundle may differ.
func standaloneCheckOnlyCABundle(t *testing.T, before, after *admissionregistrationv1.MutatingWebhookConfiguration, ca []byte) {
	t.Helper()
	b, a := before.DeepCopy(), after.DeepCopy()
	if !bytes.Equal(a.Webhooks[0].ClientConfig.CABundle, ca) {
		t.Errorf("caBundle of %s is not the Secret's CA", a.Webhooks[0].Name)
	}
	a.Webhooks[0].ClientConfig.CABundle = b.Webhooks[0].ClientConfig.CABundle
	for _, o := range []*admissionregistrationv1.MutatingWebhookConfiguration{b, a} {
		o.ResourceVersion, o.Generation, o.ManagedFields = "", 0, nil
	}
	bj, _ := json.Marshal(b)
	aj, _ := json.Marshal(a)
	if !bytes.Equal(bj, aj) {
		t.Errorf("the mutator changed more than the caBundle:\nbefore %s\nafter  %s", bj, aj)
	}
}

// standaloneSAKubeconfig returns a kubeconfig that authenticates as the
// overlay's ServiceAccount with a short-lived token.
func standaloneSAKubeconfig(t *testing.T, ctx context.Context) string {
	t.Helper()
	expiry := int64(3600)
	tr, err := kube.Client().CoreV1().ServiceAccounts(standaloneNS).CreateToken(ctx, standaloneSA,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for %s/%s: %v", standaloneNS, standaloneSA, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: kube.URL(), CertificateAuthorityData: kube.CA().CertPEM()}
	cfg.AuthInfos["mutator"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["mutator"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "mutator", Namespace: standaloneNS}
	cfg.CurrentContext = "mutator"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// standaloneCertManagerCRDs installs stand-ins for cert-manager's Issuer,
// Certificate and ClusterIssuer CRDs: the kinds, with any content.
func standaloneCertManagerCRDs(t *testing.T, ctx context.Context) {
	t.Helper()
	var b strings.Builder
	for _, k := range []struct{ kind, scope string }{{"Issuer", "Namespaced"}, {"Certificate", "Namespaced"}, {"ClusterIssuer", "Cluster"}} {
		kind := k.kind
		plural := strings.ToLower(kind) + "s"
		fmt.Fprintf(&b, `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[2]s.cert-manager.io
spec:
  group: cert-manager.io
  scope: %[4]s
  names: {kind: %[1]s, listKind: %[1]sList, plural: %[2]s, singular: %[3]s}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
`, kind, plural, strings.ToLower(kind), k.scope)
	}
	path := filepath.Join(t.TempDir(), "cert-manager-crds.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kube.Kubectl(ctx, "apply", "-f", path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, _, err := kube.Kubectl(ctx, "delete", "--ignore-not-found", "--wait=false", "-f", path); err != nil {
			t.Errorf("deleting cert-manager CRD stand-ins: %v", err)
		}
	})
	if _, _, err := kube.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=30s", "-f", path); err != nil {
		t.Fatal(err)
	}
	// kubectl's discovery must see the new kinds before the dry run.
	err := cluster.WaitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		out, _, err := kube.Kubectl(ctx, "api-resources", "--api-group=cert-manager.io", "-o", "name")
		return err == nil && strings.Contains(out, "certificates") && strings.Count(out, "issuers.cert-manager.io") == 2, nil
	})
	if err != nil {
		t.Fatalf("cert-manager stand-in kinds not discoverable: %v", err)
	}
}

// standaloneTyped decodes the first object of kind (and name, if given).
func standaloneTyped[T runtime.Object](t *testing.T, objs []*unstructured.Unstructured, kind, name string, into T) (T, bool) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != kind || (name != "" && o.GetName() != name) {
			continue
		}
		data, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, into); err != nil {
			t.Fatalf("decoding %s %s: %v", kind, o.GetName(), err)
		}
		return into, true
	}
	return into, false
}

func standaloneKinds(objs []*unstructured.Unstructured) map[string]int {
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	return kinds
}

// standaloneCheckCommon checks what both variants share.
func standaloneCheckCommon(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ns, ok := standaloneTyped(t, objs, "Namespace", standaloneNS, &corev1.Namespace{})
	if !ok || ns.Labels[ignoreLabel] != "true" {
		t.Errorf("Namespace %s missing or without %s=true", standaloneNS, ignoreLabel)
	}
	dep, ok := standaloneTyped(t, objs, "Deployment", "mutator", &appsv1.Deployment{})
	if !ok {
		t.Fatal("no Deployment mutator")
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 || dep.Spec.Template.Spec.Affinity == nil || dep.Spec.Template.Spec.Affinity.PodAntiAffinity == nil {
		t.Error("Deployment: want 2 replicas with podAntiAffinity")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != "ghcr.io/mutator-dev/mutator:latest" {
		t.Errorf("image %s", c.Image)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container securityContext %+v is not locked down", sc)
	}
	for what, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Scheme != corev1.URISchemeHTTPS || probe.HTTPGet.Path != "/health/"+what {
			t.Errorf("%s probe %+v: want HTTPS /health/%s", what, probe, what)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["PORT"] != "8443" || env["SHUTDOWN_DELAY"] == "" || env["REGISTRY"] == "" {
		t.Errorf("env %v: want PORT 8443, SHUTDOWN_DELAY and REGISTRY", env)
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Error("a preStop hook: the drain is SHUTDOWN_DELAY's job")
	}
	svc, ok := standaloneTyped(t, objs, "Service", standaloneService, &corev1.Service{})
	if !ok || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 {
		t.Error("Service mutator: want port 443")
	} else if tp := svc.Spec.Ports[0].TargetPort; tp.String() != "https" || !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "https" && p.ContainerPort == 8443 }) {
		t.Errorf("Service targetPort %s does not lead to container port 8443", tp.String())
	}
	pdb, ok := standaloneTyped(t, objs, "PodDisruptionBudget", "", &policyv1.PodDisruptionBudget{})
	if !ok || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Namespace != standaloneNS {
		t.Error("PodDisruptionBudget: want minAvailable 1 in " + standaloneNS)
	}
	mwc, ok := standaloneTyped(t, objs, "MutatingWebhookConfiguration", standaloneConfig, &admissionregistrationv1.MutatingWebhookConfiguration{})
	if !ok || len(mwc.Webhooks) != 1 {
		t.Fatal("MutatingWebhookConfiguration mutator with one webhook missing")
	}
	wh := mwc.Webhooks[0]
	if s := wh.ClientConfig.Service; s == nil || s.Name != standaloneService || s.Namespace != standaloneNS || s.Path == nil || *s.Path != "/mutate" {
		t.Errorf("clientConfig %+v: want service %s/%s path /mutate", wh.ClientConfig, standaloneNS, standaloneService)
	}
	if len(wh.ClientConfig.CABundle) != 0 {
		t.Error("caBundle in the manifest: it is the certificate source's to set")
	}
	if *wh.FailurePolicy != admissionregistrationv1.Fail || *wh.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun ||
		*wh.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy || *wh.TimeoutSeconds != 5 ||
		*wh.MatchPolicy != admissionregistrationv1.Equivalent || !slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("webhook settings: %+v", wh)
	}
	var resources []string
	for _, r := range wh.Rules {
		for _, res := range r.Resources {
			resources = append(resources, res+":"+fmt.Sprint(r.Operations))
		}
	}
	if want := []string{"pods:[CREATE UPDATE]", "pods/ephemeralcontainers:[CREATE UPDATE]", "persistentvolumeclaims:[CREATE]"}; !slices.Equal(resources, want) {
		t.Errorf("rules %v, want %v", resources, want)
	}
	sel := fmt.Sprint(wh.NamespaceSelector.MatchExpressions)
	for _, want := range []string{"kube-system", standaloneNS, ignoreLabel} {
		if !strings.Contains(sel, want) {
			t.Errorf("namespaceSelector %s does not exclude %s", sel, want)
		}
	}
}

// standaloneCheckSelfManagedVariant checks deploy/standalone.
func standaloneCheckSelfManagedVariant(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	dep, _ := standaloneTyped(t, objs, "Deployment", "mutator", &appsv1.Deployment{})
	env := map[string]corev1.EnvVar{}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e
	}
	if env["WEBHOOK_SECRET_NAME"].Value != standaloneSecret || env["SYSTEM_NAMESPACE"].ValueFrom == nil {
		t.Errorf("env: want WEBHOOK_SECRET_NAME=%s and SYSTEM_NAMESPACE from the downward API", standaloneSecret)
	}
	if _, ok := env["TLS_CERT_FILE"]; ok {
		t.Error("TLS_CERT_FILE set alongside WEBHOOK_SECRET_NAME")
	}
	if a := dep.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || !*a {
		t.Error("no service account token: the certificates controller needs one")
	}
	secret, ok := standaloneTyped(t, objs, "Secret", standaloneSecret, &corev1.Secret{})
	if !ok || len(secret.Data) != 0 || secret.Type != corev1.SecretTypeOpaque {
		t.Error("want an empty Opaque Secret " + standaloneSecret)
	}
	role, _ := standaloneTyped(t, objs, "Role", "", &rbacv1.Role{})
	for _, r := range role.Rules {
		if !slices.Equal(r.Resources, []string{"secrets"}) {
			t.Errorf("Role grants %v: only secrets are needed", r.Resources)
		}
		if slices.ContainsFunc(r.Verbs, func(v string) bool { return v == "update" || v == "patch" || v == "get" }) && !slices.Equal(r.ResourceNames, []string{standaloneSecret}) {
			t.Errorf("Role rule %v not limited to %s", r.Verbs, standaloneSecret)
		}
	}
	cr, _ := standaloneTyped(t, objs, "ClusterRole", "", &rbacv1.ClusterRole{})
	for _, r := range cr.Rules {
		if !slices.Equal(r.Resources, []string{"mutatingwebhookconfigurations"}) {
			t.Errorf("ClusterRole grants %v", r.Resources)
		}
		if slices.ContainsFunc(r.Verbs, func(v string) bool { return v == "update" || v == "patch" }) && !slices.Equal(r.ResourceNames, []string{standaloneConfig}) {
			t.Errorf("ClusterRole rule %v not limited to %s", r.Verbs, standaloneConfig)
		}
	}
}

// standaloneCheckCertManagerVariant checks deploy/standalone/cert-manager.
func standaloneCheckCertManagerVariant(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	kinds := standaloneKinds(objs)
	for _, k := range []string{"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret"} {
		if kinds[k] > 0 {
			t.Errorf("the cert-manager variant has a %s; it needs no API access", k)
		}
	}
	if kinds["Issuer"] == 0 || kinds["Certificate"] == 0 {
		t.Errorf("no cert-manager Issuer/Certificate: %v", kinds)
	}
	dep, _ := standaloneTyped(t, objs, "Deployment", "mutator", &appsv1.Deployment{})
	env := map[string]string{}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if _, ok := env["WEBHOOK_SECRET_NAME"]; ok {
		t.Error("WEBHOOK_SECRET_NAME set in the cert-manager variant")
	}
	if env["TLS_CERT_FILE"] == "" || env["TLS_KEY_FILE"] == "" {
		t.Error("TLS_CERT_FILE/TLS_KEY_FILE not set")
	}
	if a := dep.Spec.Template.Spec.AutomountServiceAccountToken; a != nil && *a {
		t.Error("service account token mounted; this variant never calls the API")
	}
	mwc, _ := standaloneTyped(t, objs, "MutatingWebhookConfiguration", standaloneConfig, &admissionregistrationv1.MutatingWebhookConfiguration{})
	from := mwc.Annotations["cert-manager.io/inject-ca-from"]
	if from == "" {
		t.Fatal("no cert-manager.io/inject-ca-from annotation")
	}
	var certOK bool
	for _, o := range objs {
		if o.GetKind() != "Certificate" || o.GetNamespace()+"/"+o.GetName() != from {
			continue
		}
		secretName, _, _ := unstructured.NestedString(o.Object, "spec", "secretName")
		names, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "dnsNames")
		certOK = slices.Contains(names, standaloneServerName) &&
			slices.ContainsFunc(dep.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == secretName })
	}
	if !certOK {
		t.Errorf("inject-ca-from %s: want a Certificate for %s whose Secret the Deployment mounts", from, standaloneServerName)
	}
}
