package queueproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	netcfg "knative.dev/networking/pkg/config"
	"knative.dev/pkg/logging"
	kjson "knative.dev/pkg/webhook/json"
	apiconfig "knative.dev/serving/pkg/apis/config"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/deployment"
	"knative.dev/serving/pkg/observability"
	revconfig "knative.dev/serving/pkg/reconciler/revision/config"
	"knative.dev/serving/pkg/reconciler/revision/resources"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/test/knative/internal/repo"
)

// queueSidecarImage is what config-deployment's queue-sidecar-image holds in
// a stock install; MakeDeployment only copies it into the Pod.
const queueSidecarImage = "gcr.io/knative-releases/knative.dev/serving/cmd/queue"

// podInfo stands in for the downward API: the values the kubelet would give
// the fieldRef env vars of the Pod.
var podInfo = map[string]string{
	"metadata.name":      "mutator-00001-deployment-7d4b9c-x2x7q",
	"metadata.namespace": "mutator-system",
	"status.podIP":       "127.0.0.1",
	"status.hostIP":      "127.0.0.1",
}

// pod is the part of the Pod Knative would run that the test needs.
type pod struct {
	QueueProxy, User corev1.Container
}

// makePod turns deploy/knative/service.yaml into the Pod Knative's revision
// reconciler would create: the Service is defaulted as Knative's webhook
// does, its template becomes Revision mutator-00001, and Serving's own
// resources.MakeDeployment adds queue-proxy with its env, ports and probe
// and the user container's preStop hook, under a stock configuration.
func makePod(t *testing.T) pod {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "knative", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("service.yaml: %v", err)
	}
	svc := &servingv1.Service{}
	if err := kjson.Decode(js, svc, true); err != nil {
		t.Fatalf("decoding service.yaml: %v", err)
	}

	must := func(err error, what string) {
		t.Helper()
		if err != nil {
			t.Fatalf("building %s: %v", what, err)
		}
	}
	defaults, err := apiconfig.NewDefaultsConfigFromMap(nil)
	must(err, "config-defaults")
	features, err := apiconfig.NewFeaturesConfigFromMap(nil)
	must(err, "config-features")
	autoscaler, err := asconfig.NewConfigFromMap(nil)
	must(err, "config-autoscaler")
	dep, err := deployment.NewConfigFromMap(map[string]string{deployment.QueueSidecarImageKey: queueSidecarImage})
	must(err, "config-deployment")
	logCfg, err := logging.NewConfigFromMap(nil)
	must(err, "config-logging")
	network, err := netcfg.NewConfigFromMap(nil)
	must(err, "config-network")
	api := &apiconfig.Config{Defaults: defaults, Features: features, Autoscaler: autoscaler}
	ctx := apiconfig.ToContext(context.Background(), api)

	// MakeDeployment reads the controller's own namespace (from its
	// downward API) for queue-proxy's SYSTEM_NAMESPACE.
	t.Setenv("SYSTEM_NAMESPACE", "knative-serving")
	svc.SetDefaults(ctx)
	rev := &servingv1.Revision{
		ObjectMeta: svc.Spec.Template.ObjectMeta,
		Spec:       svc.Spec.Template.Spec,
	}
	rev.Name, rev.Namespace, rev.UID = "mutator-00001", svc.Namespace, "00000000-0000-0000-0000-000000000001"
	if rev.Labels == nil {
		rev.Labels = map[string]string{}
	}
	rev.Labels[serving.ServiceLabelKey] = svc.Name
	rev.Labels[serving.ConfigurationLabelKey] = svc.Name
	rev.SetDefaults(ctx)

	d, err := resources.MakeDeployment(rev, &revconfig.Config{
		Config:        api,
		Deployment:    dep,
		Logging:       logCfg,
		Network:       network,
		Observability: observability.DefaultConfig(),
	})
	if err != nil {
		t.Fatalf("MakeDeployment: %v", err)
	}
	var p pod
	for _, c := range d.Spec.Template.Spec.Containers {
		switch c.Name {
		case resources.QueueContainerName:
			p.QueueProxy = c
		default:
			p.User = c
		}
	}
	if p.QueueProxy.Name == "" || p.User.Name == "" {
		t.Fatalf("MakeDeployment made containers %v, want queue-proxy and the user container", d.Spec.Template.Spec.Containers)
	}
	return p
}

// environ resolves a container's env the way the kubelet would, with
// podInfo for the downward API; any other source stops the test, since the
// test would silently run a different configuration.
func environ(t *testing.T, c corev1.Container, override ...string) []string {
	t.Helper()
	var env []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && podInfo[e.ValueFrom.FieldRef.FieldPath] != "":
			env = append(env, e.Name+"="+podInfo[e.ValueFrom.FieldRef.FieldPath])
		default:
			t.Fatalf("container %s env %s: unsupported source %+v", c.Name, e.Name, e.ValueFrom)
		}
	}
	// Later entries win in os/exec, as in a container spec.
	return append(env, override...)
}

// queueProxyBinary builds knative.dev/serving's ./cmd/queue at the version
// this module pins, inside Serving's own module (so with exactly the
// dependencies Serving ships it with), once per version into the cache.
func queueProxyBinary(t *testing.T, ctx context.Context) string {
	t.Helper()
	dir, version, err := downloadModule(ctx, "knative.dev/serving")
	if err != nil {
		t.Fatal(err)
	}
	cache, err := repo.CacheDir("bin")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(cache, fmt.Sprintf("queue-%s-%s-%s", version, runtime.GOOS, runtime.GOARCH))
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	tmp := bin + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", tmp, "./cmd/queue")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building queue-proxy %s: %v\n%s", version, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// downloadModule returns the module cache directory and version of a
// module this test module requires, downloading it when missing (as on a
// fresh machine; `go list -m` would not).
func downloadModule(ctx context.Context, module string) (dir, version string, err error) {
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", module).Output()
	if err != nil {
		return "", "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	var m struct{ Dir, Version, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download %s: %v %s", module, err, strings.TrimSpace(m.Error))
	}
	return m.Dir, m.Version, nil
}
