package knative

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/mutator-dev/mutator/test/cluster/node"
	"github.com/mutator-dev/mutator/test/e2e/cluster"
)

const (
	// Namespace is Serving's system namespace, as its manifests name it.
	Namespace = "knative-serving"
	// IngressClass is traefik's Knative provider's class, set as
	// config-network's ingress-class: the provider skips every Ingress
	// of another class.
	IngressClass = "traefik.ingress.networking.knative.dev"
	// Domain is config-domain's only domain: a Route's host is
	// <name>.<namespace>.<Domain>.
	Domain = "example.test"
	// HTTPPort is traefik's public entrypoint on the node's address.
	HTTPPort = 80
	// privatePort is traefik's entrypoint for cluster-local routes, which
	// the provider drops unless one is set.
	privatePort = 8081
	// pingPort serves traefik's /ping, on loopback only.
	pingPort = 8082
	// PrivateTLSPort is traefik's TLS entrypoint for cluster-local routes
	// (Options.PrivateTLS): 443, where the API server dials a webhook's
	// Service of type ExternalName.
	PrivateTLSPort = 443
	// PrivateHost is the private load balancer's name, which Knative makes
	// the ExternalName of each cluster-local Route's Service.
	PrivateHost = privateService + "." + Namespace + ".svc.cluster.local"
	// The Services traefik names as the Ingresses' load balancers.
	publicService  = "traefik"
	privateService = "traefik-internal"
	// throttle is traefik's providers.knative.throttleDuration. With none,
	// the provider marked an Ingress Ready before its route worked (facts
	// in ../shared/knative/README.md); 2s is traefik's own conformance
	// setting, and makes it write the status only after the configuration
	// it belongs to is in use.
	throttle = "2s"
	// availableTimeout bounds the wait for Serving's Deployments and
	// webhook after kubectl apply: images are local, but four Go
	// programs start on two busy cores.
	availableTimeout = 3 * time.Minute
)

// Options configures Install.
type Options struct {
	// Assets is the folder hack/tools/knative-bin.sh filled (AssetsDir).
	Assets string
	// Kube is the cluster to install on.
	Kube *node.Node
	// Dir receives the manifests as applied and traefik's logs.
	Dir string
	// Publish pushes Serving's images; see PublishFunc.
	Publish PublishFunc
	// NamespaceLabels are added to the knative-serving Namespace, e.g. an
	// admission webhook's opt-out.
	NamespaceLabels map[string]string
	// Config adds keys to Serving's ConfigMaps, by ConfigMap name (e.g.
	// config-deployment's registries-skipping-tag-resolving), over the
	// ingress class and domain Install sets.
	Config map[string]map[string]string
	// PrivateTLS, if set, is the certificate and key (PEM) of traefik's
	// TLS entrypoint for cluster-local routes, on PrivateTLSPort: an
	// entrypoint-level default certificate, as the provider takes no other
	// without the Ingress's spec.tls (which only Knative's certificate
	// provider, e.g. net-certmanager, fills).
	PrivateTLS *Certificate
	// Logf receives progress; nil discards it.
	Logf func(format string, args ...any)
}

// Certificate is a PEM certificate chain and its key.
type Certificate struct{ CertPEM, KeyPEM []byte }

// Figures are what Install measured.
type Figures struct {
	// Publish is reading the image layout and pushing the images.
	Publish time.Duration
	// CRDs is kubectl apply of the CRDs until they are Established.
	CRDs time.Duration
	// Available is from kubectl apply of the core manifests until every
	// Deployment of knative-serving is Available.
	Available time.Duration
	// Webhook is from then until Serving's webhook admits a Service.
	Webhook time.Duration
	// Traefik is from its start until /ping answers.
	Traefik time.Duration
}

// Serving is Knative Serving installed, with traefik running.
type Serving struct {
	kube    *node.Node
	traefik *cluster.Daemon
	figures Figures
}

// Install installs Serving and starts traefik. On error, s holds what was
// started, for Stop.
func Install(ctx context.Context, opts Options) (s *Serving, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s = &Serving{kube: opts.Kube}
	m, err := loadManifests(filepath.Join(opts.Assets, "config", "core"))
	if err != nil {
		return s, err
	}
	began := time.Now()
	refs, err := publishImages(ctx, filepath.Join(opts.Assets, "images"), opts.Publish)
	if err != nil {
		return s, err
	}
	s.figures.Publish = time.Since(began)
	if err := configure(m, refs, opts); err != nil {
		return s, err
	}
	crdFile, coreFile := filepath.Join(opts.Dir, "serving-crds.yaml"), filepath.Join(opts.Dir, "serving-core.yaml")
	if err := writeYAML(crdFile, m.crds); err != nil {
		return s, err
	}
	if err := writeYAML(coreFile, m.core); err != nil {
		return s, err
	}

	began = time.Now()
	if out, err := opts.Kube.Kubectl(ctx, "apply", "-f", crdFile); err != nil {
		return s, fmt.Errorf("applying Serving's CRDs: %w\n%s", err, out)
	}
	if out, err := opts.Kube.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=1m", "-f", crdFile); err != nil {
		return s, fmt.Errorf("waiting for Serving's CRDs: %w\n%s", err, out)
	}
	s.figures.CRDs = time.Since(began)
	logf("knative: %d CRDs established %s after kubectl apply", len(m.crds), s.figures.CRDs.Round(time.Millisecond))

	began = time.Now()
	if out, err := opts.Kube.Kubectl(ctx, "apply", "-f", coreFile); err != nil {
		return s, fmt.Errorf("applying Serving's core: %w\n%s", err, out)
	}
	if err := s.startTraefik(ctx, opts.Assets, opts.Dir, opts.PrivateTLS); err != nil {
		return s, err
	}
	logf("knative: traefik answers /ping %s after its start", s.figures.Traefik.Round(time.Millisecond))
	if err := s.waitAvailable(ctx); err != nil {
		return s, err
	}
	s.figures.Available = time.Since(began)
	logf("knative: Serving's Deployments Available %s after kubectl apply", s.figures.Available.Round(time.Millisecond))
	began = time.Now()
	if err := s.waitWebhook(ctx); err != nil {
		return s, err
	}
	s.figures.Webhook = time.Since(began)
	logf("knative: Serving's webhook admits Services %s later", s.figures.Webhook.Round(time.Millisecond))
	return s, nil
}

// configure replaces the ko:// references and sets the namespace's labels
// and the ConfigMaps.
func configure(m *manifests, refs map[string]string, opts Options) error {
	if err := replaceKo(m.core, refs); err != nil {
		return err
	}
	ns, err := find(m.core, "Namespace", Namespace)
	if err != nil {
		return err
	}
	labels := ns.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, opts.NamespaceLabels)
	ns.SetLabels(labels)
	config := map[string]map[string]string{
		"config-network": {"ingress-class": IngressClass},
		// The only domain, for every Route.
		"config-domain": {Domain: ""},
	}
	for name, data := range opts.Config {
		if config[name] == nil {
			config[name] = map[string]string{}
		}
		maps.Copy(config[name], data)
	}
	for name, data := range config {
		if err := setConfig(m.core, name, data); err != nil {
			return err
		}
	}
	return nil
}

// startTraefik publishes the load-balancer Services (their endpoints the
// node's address), starts traefik and waits for its /ping.
func (s *Serving) startTraefik(ctx context.Context, assets, dir string, privateTLS *Certificate) error {
	if err := s.applyLoadBalancers(ctx); err != nil {
		return err
	}
	began := time.Now()
	privateEntrypoints := "private"
	if privateTLS != nil {
		privateEntrypoints += ",privatetls"
	}
	args := []string{
		"--entryPoints.web.address=:" + strconv.Itoa(HTTPPort),
		"--entryPoints.private.address=:" + strconv.Itoa(privatePort),
		"--entryPoints.traefik.address=127.0.0.1:" + strconv.Itoa(pingPort),
		"--ping=true",
		"--experimental.knative=true",
		"--providers.knative=true",
		"--providers.knative.throttleDuration=" + throttle,
		"--providers.knative.publicEntrypoints=web",
		"--providers.knative.privateEntrypoints=" + privateEntrypoints,
		"--providers.knative.publicService.namespace=" + Namespace,
		"--providers.knative.publicService.name=" + publicService,
		"--providers.knative.privateService.namespace=" + Namespace,
		"--providers.knative.privateService.name=" + privateService,
		"--global.checkNewVersion=false",
		"--global.sendAnonymousUsage=false",
		"--log.level=INFO",
		"--accessLog=true",
		"--accessLog.filePath=" + filepath.Join(dir, "traefik-access.log"),
	}
	if privateTLS != nil {
		tlsArgs, err := privateTLSArgs(dir, privateTLS)
		if err != nil {
			return err
		}
		args = append(args, tlsArgs...)
	}
	// Outside a Pod: the provider takes the admin kubeconfig from
	// KUBECONFIG. A clean environment otherwise.
	env := []string{"PATH=" + os.Getenv("PATH"), "KUBECONFIG=" + s.kube.Kubeconfig()}
	var err error
	s.traefik, err = cluster.StartDaemon("traefik", filepath.Join(assets, "traefik"), filepath.Join(dir, "traefik.log"), env, args...)
	if err != nil {
		return err
	}
	url := "http://127.0.0.1:" + strconv.Itoa(pingPort) + "/ping"
	if err := cluster.WaitHealthy(ctx, &http.Client{}, url, s.traefik); err != nil {
		return fmt.Errorf("waiting for traefik: %w", err)
	}
	s.figures.Traefik = time.Since(began)
	return nil
}

// privateTLSArgs writes cert's files and traefik's file-provider
// configuration making it the default certificate, and returns the flags
// of a TLS entrypoint on PrivateTLSPort (startTraefik makes it a private
// entrypoint: entrypoint-level TLS applies to every router on it).
func privateTLSArgs(dir string, cert *Certificate) ([]string, error) {
	certFile, keyFile := filepath.Join(dir, "private-tls.crt"), filepath.Join(dir, "private-tls.key")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("writing traefik's certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("writing traefik's key: %w", err)
	}
	config := fmt.Sprintf("tls:\n  stores:\n    default:\n      defaultCertificate:\n        certFile: %s\n        keyFile: %s\n", certFile, keyFile)
	configFile := filepath.Join(dir, "traefik-tls.yaml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("writing traefik's TLS configuration: %w", err)
	}
	return []string{
		"--entryPoints.privatetls.address=:" + strconv.Itoa(PrivateTLSPort),
		"--entryPoints.privatetls.http.tls=true",
		"--providers.file.filename=" + configFile,
		"--providers.file.watch=false",
	}, nil
}

// applyLoadBalancers creates the Services traefik reports as the Ingresses'
// load balancers, which Knative points each Route's own Service at (an
// ExternalName): without selectors, and with an EndpointSlice of the node's
// address, where traefik listens.
func (s *Serving) applyLoadBalancers(ctx context.Context) error {
	client := s.kube.Client()
	for _, lb := range []struct {
		name string
		port int32
	}{{publicService, HTTPPort}, {privateService, privatePort}} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: lb.name, Namespace: Namespace, Labels: map[string]string{"app.kubernetes.io/name": "traefik"}},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(lb.port)},
			}},
		}
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: lb.name + "-node", Namespace: Namespace, Labels: map[string]string{
				discoveryv1.LabelServiceName: lb.name,
				discoveryv1.LabelManagedBy:   "mutator-test-knative",
			}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{node.NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(lb.port)}},
		}
		if _, err := client.CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating Service %s/%s: %w", Namespace, lb.name, err)
		}
		if _, err := client.DiscoveryV1().EndpointSlices(Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating EndpointSlice %s/%s: %w", Namespace, slice.Name, err)
		}
	}
	return nil
}

// waitAvailable waits until every Deployment of knative-serving is
// Available with all its replicas updated and ready, failing fast if
// traefik exits.
func (s *Serving) waitAvailable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, availableTimeout)
	defer cancel()
	client := s.kube.Client()
	last := "no Deployments yet"
	err := cluster.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		if err := s.TraefikRunning(); err != nil {
			return false, err
		}
		deps, err := client.AppsV1().Deployments(Namespace).List(ctx, metav1.ListOptions{})
		if err != nil || len(deps.Items) == 0 {
			return false, nil
		}
		var waiting []string
		for _, d := range deps.Items {
			if !available(&d) {
				waiting = append(waiting, fmt.Sprintf("%s (%d/%d ready)", d.Name, d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 1)))
			}
		}
		last = "waiting for " + strings.Join(waiting, ", ")
		return len(waiting) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for Serving's Deployments (%s): %w\n%s", last, err, s.podProblems())
	}
	return nil
}

// available reports whether d is Available with every replica current.
func available(d *appsv1.Deployment) bool {
	want := ptr.Deref(d.Spec.Replicas, 1)
	if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want || d.Status.ReadyReplicas != want {
		return false
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podProblems describes the Pods of knative-serving that are not ready,
// for an error message.
func (s *Serving) podProblems() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := s.kube.Client().CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Sprintf("(listing the Pods of %s: %v)", Namespace, err)
	}
	var b strings.Builder
	for _, p := range pods.Items {
		for _, c := range p.Status.ContainerStatuses {
			if c.Ready {
				continue
			}
			state := "not ready"
			switch {
			case c.State.Waiting != nil:
				state = c.State.Waiting.Reason + ": " + c.State.Waiting.Message
			case c.State.Terminated != nil:
				state = fmt.Sprintf("terminated %s (exit %d): %s", c.State.Terminated.Reason, c.State.Terminated.ExitCode, c.State.Terminated.Message)
			}
			fmt.Fprintf(&b, "Pod %s container %s (%d restarts): %s\n", p.Name, c.Name, c.RestartCount, state)
		}
		if len(p.Status.ContainerStatuses) == 0 {
			fmt.Fprintf(&b, "Pod %s: %s %s\n", p.Name, p.Status.Phase, p.Status.Message)
		}
	}
	return b.String()
}

// waitWebhook waits until Serving's webhook (failurePolicy Fail) admits a
// Service: a server-side dry run of a minimal one succeeds. It manages its
// own certificate and the webhook configurations' caBundle, which may lag
// behind its Deployment's availability.
func (s *Serving) waitWebhook(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, availableTimeout)
	defer cancel()
	dyn, err := dynamic.NewForConfig(s.kube.RESTConfig())
	if err != nil {
		return fmt.Errorf("creating a dynamic client: %w", err)
	}
	svc := NewService("webhook-probe", metav1.NamespaceDefault, "example.test/probe:1", nil)
	last := "no answer yet"
	err = cluster.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(ServiceResource).Namespace(metav1.NamespaceDefault).Create(ctx, svc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for Serving's webhook (last: %s): %w", last, err)
	}
	return nil
}

// Figures returns what Install measured.
func (s *Serving) Figures() Figures { return s.figures }

// HTTPClient returns a client that sends every request to traefik's public
// entrypoint, whatever the URL's host, as a DNS entry for the Route's host
// pointing at the load balancer would: the request keeps its Host.
func (s *Serving) HTTPClient(timeout time.Duration) *http.Client {
	addr := net.JoinHostPort(node.NodeIP, strconv.Itoa(HTTPPort))
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			// One connection per request: each request is a first one,
			// as a cold caller's would be.
			DisableKeepAlives: true,
		},
	}
}

// TraefikLog returns the last lines of traefik's log.
func (s *Serving) TraefikLog(lines int) string {
	if s == nil || s.traefik == nil {
		return ""
	}
	return "==> traefik (" + s.traefik.LogPath() + ") <==\n" + s.traefik.Tail(lines)
}

// TraefikRunning reports an error if traefik has exited.
func (s *Serving) TraefikRunning() error {
	if s == nil || s.traefik == nil {
		return errors.New("traefik was never started")
	}
	if done, err := s.traefik.Exited(); done {
		return fmt.Errorf("traefik exited (%v); log:\n%s", err, s.traefik.Tail(30))
	}
	return nil
}

// Stop stops traefik and Serving's Pods; nil-safe. Serving's components
// watch the API server for as long as they run, and kube-apiserver, told
// to stop, drains open watches for up to a minute (its request timeout):
// left to die with the node, they would hold it up. So the Deployments are
// scaled to zero, so that nothing restarts, and once every Pod is
// terminating, its processes are killed (no drain: the run is over).
func (s *Serving) Stop(ctx context.Context) error {
	if s == nil {
		return nil
	}
	errs := []error{s.traefik.Stop(10 * time.Second)}
	client := s.kube.Client()
	deps, err := client.AppsV1().Deployments(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("listing Serving's Deployments: %w", err))...)
	}
	for _, d := range deps.Items {
		patch := []byte(`{"spec":{"replicas":0}}`)
		if _, err := client.AppsV1().Deployments(Namespace).Patch(ctx, d.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("scaling %s to zero: %w", d.Name, err))
		}
	}
	var pods []corev1.Pod
	err = cluster.WaitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		for _, p := range pods {
			if p.DeletionTimestamp == nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("waiting for Serving's Pods to terminate: %w", err))
	}
	for _, p := range pods {
		if err := killPod(string(p.UID)); err != nil {
			errs = append(errs, fmt.Errorf("killing Pod %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// KillPod kills the processes of the Pod with uid at once, e.g. one that
// Knative scaled away and queue-proxy drains for 30 s, when a test needs
// it gone.
func KillPod(uid string) error { return killPod(uid) }

// killPod sends SIGKILL to every process in the cgroups of the Pod with
// uid (the kubelet's cgroupfs driver names them pod<uid>).
func killPod(uid string) error {
	paths, err := filepath.Glob("/proc/[0-9]*/cgroup")
	if err != nil {
		return err
	}
	for _, p := range paths {
		cgroups, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cgroups), "/pod"+uid+"/") {
			continue // gone, or not the Pod's
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing %d: %w", pid, err)
		}
	}
	return nil
}
