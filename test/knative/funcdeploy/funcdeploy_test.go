// Package funcdeploy runs func's Knative deployer library (what `func
// deploy` calls) against a real kube-apiserver with Knative Serving's CRDs,
// acts as the Knative controller far enough to mark the Service Ready, and
// compares the Service func created with deploy/knative/service.yaml.
package funcdeploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	fn "knative.dev/func/pkg/functions"
	"knative.dev/func/pkg/knative"
	kjson "knative.dev/pkg/webhook/json"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/e2e/cluster"
	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

// envParityRoot points the comparison at another checkout (a directory
// with func.yaml and deploy/knative/service.yaml), e.g. an older revision
// extracted with `git archive`, to report how far it was from parity.
const envParityRoot = "MUTATOR_PARITY_ROOT"

var (
	servicesGVR = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}
	routesGVR   = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "routes"}
)

// inexpressible are the differences func v0.50.1's deployer leaves however
// func.yaml is written; docs/knative.md says how to set each after `func
// deploy`. Any other difference fails the test: change func.yaml (or
// service.yaml) until they agree.
var inexpressible = map[string]string{
	"spec.template.spec.timeoutSeconds":                                                              "func.yaml has no revision timeout",
	"spec.template.spec.automountServiceAccountToken":                                                "func.yaml has no such option",
	"spec.template.spec.enableServiceLinks":                                                          "func.yaml has no such option",
	"spec.template.metadata.annotations[autoscaling.knative.dev/target-burst-capacity]":              "options.scale has no burst capacity, and deploy.annotations also land on the Service, where Knative rejects autoscaling keys",
	"spec.template.metadata.annotations[autoscaling.knative.dev/scale-to-zero-pod-retention-period]": "options.scale has no retention period, and deploy.annotations also land on the Service, where Knative rejects autoscaling keys",
	"container.securityContext.readOnlyRootFilesystem":                                               "func sets its own securityContext without it",
	"container.env[ADDRESS]":                                                                         "func always adds ADDRESS=0.0.0.0 (ignored: func-go reads LISTEN_ADDRESS)",
	"container.ports[0].containerPort":                                                               "func declares no port; Knative's default for an unnamed one (8080, HTTP/1.1) is service.yaml's http1 8080",
	"container.env[BUILT]":                                                                           "func always adds the deploy time",
}

func TestFuncDeployMatchesService(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	src := root
	if r := os.Getenv(envParityRoot); r != "" {
		src = r
	}

	kube, err := cluster.Start(ctx, cluster.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kube.Stop)
	installServingCRDs(t, ctx, kube)
	if _, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mutator-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kube.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	f, err := fn.NewFunction(src)
	if err != nil {
		t.Fatalf("loading func.yaml: %v", err)
	}
	// A digest on a port nothing listens on: func's pull check only warns.
	f.Deploy.Image = "127.0.0.1:1/mutator@sha256:" + strings.Repeat("0", 64)

	// func reads the cluster from KUBECONFIG, as the CLI does.
	t.Setenv("KUBECONFIG", kube.KubeconfigPath())
	controllerCtx, stopController := context.WithCancel(ctx)
	defer stopController()
	controllerErr := make(chan error, 1)
	go func() { controllerErr <- fakeController(controllerCtx, dyn, f.Namespace, f.Name) }()

	start := time.Now()
	res, err := knative.NewDeployer().Deploy(ctx, f)
	if err != nil {
		t.Fatalf("func deploy: %v", err)
	}
	t.Logf("func deployer returned %v (%s) after %v", res.Status, res.URL, time.Since(start).Round(time.Millisecond))
	stopController()
	if err := <-controllerErr; err != nil {
		t.Fatalf("fake Knative controller: %v", err)
	}

	u, err := dyn.Resource(servicesGVR).Namespace(f.Namespace).Get(ctx, f.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := &servingv1.Service{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, got); err != nil {
		t.Fatal(err)
	}
	want := loadService(t, src)

	diffs := compare(want, got)
	for _, d := range diffs {
		if why, ok := inexpressible[d.field]; ok {
			t.Logf("differs (func cannot express it: %s): %s", why, d)
		}
	}
	unexpected := unexplained(diffs)
	t.Logf("%d differences between func's Service and service.yaml, %d of them not explained by func's limits", len(diffs), len(unexpected))
	for _, d := range unexpected {
		t.Errorf("func's Service differs from service.yaml: %s", d)
	}

	if src != root {
		return // reporting on another checkout
	}
	// The comparison has teeth: what a wrong func.yaml would deploy is
	// reported.
	broken := got.DeepCopy()
	broken.Spec.Template.Annotations["autoscaling.knative.dev/min-scale"] = "1"
	c := &broken.Spec.Template.Spec.Containers[0]
	c.Env = append(c.Env, corev1.EnvVar{Name: "METRICS_PORT", Value: "9090"})
	c.ReadinessProbe.HTTPGet.Path = "/"
	if n := len(unexplained(compare(want, broken))) - len(unexpected); n != 3 {
		t.Errorf("a Service with min-scale 1, METRICS_PORT 9090 and another readiness path shows %d new differences, want 3", n)
	}
}

// unexplained returns the differences func's limits do not explain.
func unexplained(diffs []diff) []string {
	var out []string
	for _, d := range diffs {
		if _, ok := inexpressible[d.field]; !ok {
			out = append(out, d.String())
		}
	}
	return out
}

// fakeController does what Knative's controllers would for the deployer
// to see the Service Ready: the Route with a URL, and Ready conditions for
// the generation it observed.
func fakeController(ctx context.Context, dyn dynamic.Interface, ns, name string) error {
	url := fmt.Sprintf("http://%s.%s.svc.cluster.local", name, ns)
	ready := func(generation int64) map[string]any {
		now := time.Now().UTC().Format(time.RFC3339)
		var conds []any
		for _, c := range []string{"Ready", "ConfigurationsReady", "RoutesReady"} {
			conds = append(conds, map[string]any{"type": c, "status": "True", "lastTransitionTime": now})
		}
		return map[string]any{
			"observedGeneration":        generation,
			"conditions":                conds,
			"url":                       url,
			"address":                   map[string]any{"url": url},
			"latestCreatedRevisionName": name + "-00001",
			"latestReadyRevisionName":   name + "-00001",
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
		svc, err := dyn.Resource(servicesGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || ctx.Err() != nil {
			continue
		}
		if err != nil {
			return fmt.Errorf("getting the Service: %w", err)
		}
		if og, _, _ := unstructured.NestedInt64(svc.Object, "status", "observedGeneration"); og == svc.GetGeneration() {
			continue
		}
		route := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "serving.knative.dev/v1", "kind": "Route",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec":     map[string]any{"traffic": []any{map[string]any{"configurationName": name, "percent": int64(100), "latestRevision": true}}},
		}}
		r, err := dyn.Resource(routesGVR).Namespace(ns).Create(ctx, route, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			r, err = dyn.Resource(routesGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("creating the Route: %w", err)
		}
		r.Object["status"] = ready(r.GetGeneration())
		if _, err := dyn.Resource(routesGVR).Namespace(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("marking the Route ready: %w", err)
		}
		svc.Object["status"] = ready(svc.GetGeneration())
		if _, err := dyn.Resource(servicesGVR).Namespace(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("marking the Service ready: %w", err)
		}
	}
}

// installServingCRDs applies Knative Serving's own CRDs from the module
// this test module pins.
func installServingCRDs(t *testing.T, ctx context.Context, kube *cluster.Cluster) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "knative.dev/serving").Output()
	if err != nil {
		t.Fatalf("go mod download knative.dev/serving: %v", err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("locating knative.dev/serving: %v %s", err, out)
	}
	crds := filepath.Join(mod.Dir, "config", "core", "300-resources")
	var files []string
	for _, name := range []string{"service.yaml", "configuration.yaml", "revision.yaml", "route.yaml"} {
		files = append(files, "-f", filepath.Join(crds, name))
	}
	if _, stderr, err := kube.Kubectl(ctx, append([]string{"apply"}, files...)...); err != nil {
		t.Fatalf("installing Knative Serving CRDs: %v\n%s", err, stderr)
	}
	if _, stderr, err := kube.Kubectl(ctx, append([]string{"wait", "--for=condition=Established", "--timeout=60s"}, files...)...); err != nil {
		t.Fatalf("Knative Serving CRDs not established: %v\n%s", err, stderr)
	}
	err = cluster.WaitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		out, _, err := kube.Kubectl(ctx, "api-resources", "--api-group=serving.knative.dev", "-o", "name")
		return err == nil && strings.Contains(out, "services.serving.knative.dev") && strings.Contains(out, "routes.serving.knative.dev"), nil
	})
	if err != nil {
		t.Fatalf("Knative kinds not discoverable: %v", err)
	}
}

func loadService(t *testing.T, root string) *servingv1.Service {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "deploy", "knative", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	svc := &servingv1.Service{}
	if err := kjson.Decode(js, svc, true); err != nil {
		t.Fatal(err)
	}
	return svc
}

type diff struct {
	field     string
	want, got any
	wantSet   bool
	gotSet    bool
}

func (d diff) String() string {
	return fmt.Sprintf("%s: service.yaml %s, func %s", d.field, show(d.want, d.wantSet), show(d.got, d.gotSet))
}

func show(v any, set bool) string {
	if !set {
		return "(unset)"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// compare lists the fields of the Knative Service that decide how the
// webhook runs (timeouts, probes, security context, scaling, resources,
// env, ports) where func's Service and service.yaml differ.
func compare(want, got *servingv1.Service) []diff {
	var out []diff
	field := func(name string, w, g any) {
		wv, gv := deref(w), deref(g)
		if !reflect.DeepEqual(wv, gv) {
			out = append(out, diff{field: name, want: wv, got: gv, wantSet: wv != nil, gotSet: gv != nil})
		}
	}
	wt, gt := want.Spec.Template, got.Spec.Template
	field("metadata.name", want.Name, got.Name)
	field("metadata.labels[networking.knative.dev/visibility]", label(want.Labels, "networking.knative.dev/visibility"), label(got.Labels, "networking.knative.dev/visibility"))
	for _, k := range keys(wt.Annotations, gt.Annotations, "autoscaling.knative.dev/") {
		field("spec.template.metadata.annotations["+k+"]", normNumber(label(wt.Annotations, k)), normNumber(label(gt.Annotations, k)))
	}
	field("spec.template.spec.containerConcurrency", wt.Spec.ContainerConcurrency, gt.Spec.ContainerConcurrency)
	field("spec.template.spec.timeoutSeconds", wt.Spec.TimeoutSeconds, gt.Spec.TimeoutSeconds)
	field("spec.template.spec.automountServiceAccountToken", wt.Spec.AutomountServiceAccountToken, gt.Spec.AutomountServiceAccountToken)
	field("spec.template.spec.enableServiceLinks", wt.Spec.EnableServiceLinks, gt.Spec.EnableServiceLinks)
	if len(wt.Spec.Containers) != 1 || len(gt.Spec.Containers) != 1 {
		return append(out, diff{field: "containers", want: len(wt.Spec.Containers), got: len(gt.Spec.Containers), wantSet: true, gotSet: true})
	}
	wc, gc := wt.Spec.Containers[0], gt.Spec.Containers[0]
	port := int32(8080) // Knative's default and func's
	if len(wc.Ports) == 1 {
		port = wc.Ports[0].ContainerPort
	}
	// service.yaml names its port http1; Knative defaults an unnamed one to
	// HTTP/1 on 8080 as well, so only the number is compared.
	field("container.ports[0].containerPort", portNumber(wc.Ports), portNumber(gc.Ports))
	for _, p := range []struct {
		name string
		w, g *corev1.Probe
	}{{"readinessProbe", wc.ReadinessProbe, gc.ReadinessProbe}, {"livenessProbe", wc.LivenessProbe, gc.LivenessProbe}} {
		field("container."+p.name, normProbe(p.w, port), normProbe(p.g, port))
	}
	ws, gs := wc.SecurityContext, gc.SecurityContext
	if ws == nil {
		ws = &corev1.SecurityContext{}
	}
	if gs == nil {
		gs = &corev1.SecurityContext{}
	}
	field("container.securityContext.runAsNonRoot", ws.RunAsNonRoot, gs.RunAsNonRoot)
	field("container.securityContext.readOnlyRootFilesystem", ws.ReadOnlyRootFilesystem, gs.ReadOnlyRootFilesystem)
	field("container.securityContext.allowPrivilegeEscalation", ws.AllowPrivilegeEscalation, gs.AllowPrivilegeEscalation)
	field("container.securityContext.capabilities", ws.Capabilities, gs.Capabilities)
	field("container.securityContext.seccompProfile", ws.SeccompProfile, gs.SeccompProfile)
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		field("container.resources.requests."+string(r), qty(wc.Resources.Requests, r), qty(gc.Resources.Requests, r))
		field("container.resources.limits."+string(r), qty(wc.Resources.Limits, r), qty(gc.Resources.Limits, r))
	}
	we, ge := envMap(wc.Env), envMap(gc.Env)
	for _, k := range keys(we, ge, "") {
		field("container.env["+k+"]", label(we, k), label(ge, k))
	}
	return out
}

func deref(v any) any {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		return nil
	}
	if rv.Kind() == reflect.Pointer {
		return rv.Elem().Interface()
	}
	if s, ok := v.(string); ok && s == "" {
		return nil
	}
	return v
}

func label(m map[string]string, k string) *string {
	if v, ok := m[k]; ok {
		return &v
	}
	return nil
}

// normNumber makes "50" and func's "50.000000" compare equal.
func normNumber(s *string) *string {
	if s == nil {
		return nil
	}
	if f, err := strconv.ParseFloat(*s, 64); err == nil {
		n := strconv.FormatFloat(f, 'g', -1, 64)
		return &n
	}
	return s
}

func keys(a, b map[string]string, prefix string) []string {
	var out []string
	for _, m := range []map[string]string{a, b} {
		for k := range m {
			if strings.HasPrefix(k, prefix) && !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

func portNumber(ports []corev1.ContainerPort) *int32 {
	if len(ports) == 0 {
		return nil
	}
	return &ports[0].ContainerPort
}

// normProbe drops the probe's port when it is the container port, which
// Knative fills in when it is left out (as service.yaml does).
func normProbe(p *corev1.Probe, port int32) *corev1.Probe {
	if p == nil {
		return nil
	}
	p = p.DeepCopy()
	if p.HTTPGet != nil && p.HTTPGet.Port.IntValue() == int(port) {
		p.HTTPGet.Port = intstr.IntOrString{}
	}
	return p
}

func qty(l corev1.ResourceList, r corev1.ResourceName) *string {
	q, ok := l[r]
	if !ok {
		return nil
	}
	s := q.String()
	return &s
}

func envMap(env []corev1.EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}
