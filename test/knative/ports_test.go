package knative

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/observability/runtime"
	"knative.dev/serving/pkg/apis/serving"
	"knative.dev/serving/pkg/networking"

	"github.com/mutator-dev/mutator/function/config"
)

// funcHostListenAddress is what func's host builder bakes into the image
// (pkg/oci goBuilder.Configure) and where func-go listens without an
// explicit LISTEN_ADDRESS.
const funcHostListenAddress = "[::]:8080"

// queueProxyPorts are the ports queue-proxy's source names: what Knative's
// validation reserves, plus the TLS port it opens when system-internal-tls
// is on, which the validation does not list.
var queueProxyPorts = []int32{
	networking.BackendHTTPPort, networking.BackendHTTP2Port, networking.BackendHTTPSPort,
	networking.QueueAdminPort, networking.AutoscalingQueueMetricsPort, networking.UserQueueMetricsPort,
	runtime.ProfilingDefaultPort,
}

// reservedPorts reports whether queue-proxy may bind a port in the Pod:
// one of queueProxyPorts, or one Knative's own validation refuses as a
// containerPort (asked each time, so that a Serving upgrade that reserves
// another port is picked up for the ports the function uses).
type reservedPorts func(int32) bool

func knativeReservedPorts(t *testing.T) reservedPorts {
	t.Helper()
	ctx := knativeCreateContext(t)
	// Both sources must agree on what they share, or one of them moved.
	for _, p := range queueProxyPorts {
		if p != networking.BackendHTTPSPort && !containerPortReserved(ctx, p) {
			t.Errorf("Knative's validation accepts containerPort %d, which queue-proxy binds", p)
		}
	}
	return func(p int32) bool { return slices.Contains(queueProxyPorts, p) || containerPortReserved(ctx, p) }
}

func containerPortReserved(ctx context.Context, p int32) bool {
	errs := serving.ValidatePodSpec(ctx, corev1.PodSpec{Containers: []corev1.Container{{
		Image: "example.com/x",
		Ports: []corev1.ContainerPort{{ContainerPort: p}},
	}}})
	return errs != nil && strings.Contains(errs.Error(), "is a reserved port")
}

// functionPort is one port the function opens, and where it comes from.
type functionPort struct {
	source string
	port   int32
}

// functionPorts lists what the function binds under each configuration it
// ships with: the container port and func-go's LISTEN_ADDRESS, and the
// metrics listener, METRICS_PORT or the built-in default when unset.
func functionPorts(svcEnv, funcEnv map[string]string, defaults map[string]string, containerPorts []int32) ([]functionPort, error) {
	var out []functionPort
	add := func(source, value string) error {
		p, err := strconv.ParseInt(value, 10, 32)
		if err != nil {
			return fmt.Errorf("%s: port %q: %w", source, value, err)
		}
		if p != 0 { // METRICS_PORT=0 turns the listener off
			out = append(out, functionPort{source, int32(p)})
		}
		return nil
	}
	addAddr := func(source, addr string) error {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", source, addr, err)
		}
		return add(source, port)
	}
	metrics := func(source string, env map[string]string) error {
		if v, ok := env["METRICS_PORT"]; ok {
			return add(source+" METRICS_PORT", v)
		}
		return add(source+" METRICS_PORT (config default)", defaults["METRICS_PORT"])
	}
	for _, p := range containerPorts {
		out = append(out, functionPort{"service.yaml containerPort", p})
	}
	listen := svcEnv["LISTEN_ADDRESS"]
	if listen == "" {
		listen = funcHostListenAddress
	}
	for _, err := range []error{
		addAddr("service.yaml LISTEN_ADDRESS", listen),
		metrics("service.yaml", svcEnv),
		addAddr("func host builder LISTEN_ADDRESS", funcHostListenAddress),
		metrics("func.yaml run.envs", funcEnv),
		metrics("no env at all:", map[string]string{}),
	} {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// configDefaults returns the settings' defaults keyed by env name: what
// the function uses for a variable the manifests leave out.
func configDefaults() map[string]string {
	out := map[string]string{}
	for _, s := range config.Settings() {
		if s.Default != "" {
			out[s.Env] = s.Default
		}
	}
	return out
}

// shippedPortConfig returns the env of service.yaml's container, the env
// func.yaml deploys and service.yaml's container ports.
func shippedPortConfig(t *testing.T) (svcEnv, funcEnv map[string]string, ports []int32) {
	t.Helper()
	_, svc := loadService(t)
	c := svc.Spec.Template.Spec.Containers[0]
	svcEnv = map[string]string{}
	for _, e := range c.Env {
		svcEnv[e.Name] = e.Value
	}
	for _, p := range c.Ports {
		ports = append(ports, p.ContainerPort)
	}
	f, err := loadWithFunc(repoRoot(t))
	if err != nil {
		t.Fatalf("loading func.yaml: %v", err)
	}
	funcEnv = map[string]string{}
	for _, e := range f.Run.Envs {
		if e.Name != nil && e.Value != nil {
			funcEnv[*e.Name] = *e.Value
		}
	}
	return svcEnv, funcEnv, ports
}

func clashes(ports []functionPort, reserved reservedPorts) []string {
	var out []string
	for _, p := range ports {
		if reserved(p.port) {
			out = append(out, fmt.Sprintf("%s: %d is a port queue-proxy binds in the same Pod", p.source, p.port))
		}
	}
	return out
}

// TestFunctionPortsAvoidQueueProxy fails when any port the function opens,
// metrics included, is one Knative Serving reserves for queue-proxy, and
// when func.yaml and service.yaml pick different metrics ports.
func TestFunctionPortsAvoidQueueProxy(t *testing.T) {
	reserved := knativeReservedPorts(t)

	svcEnv, funcEnv, containerPorts := shippedPortConfig(t)
	defaults := configDefaults()
	if defaults["METRICS_PORT"] == "" {
		t.Fatalf("config.Settings() has no METRICS_PORT default")
	}
	ports, err := functionPorts(svcEnv, funcEnv, defaults, containerPorts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clashes(ports, reserved) {
		t.Error(c)
	}
	if svcEnv["METRICS_PORT"] != funcEnv["METRICS_PORT"] {
		t.Errorf("METRICS_PORT: service.yaml %q, func.yaml %q", svcEnv["METRICS_PORT"], funcEnv["METRICS_PORT"])
	}
	if svcEnv["METRICS_PORT"] != defaults["METRICS_PORT"] {
		t.Errorf("METRICS_PORT: service.yaml %q, config default %q (the docs and `make run` should show one port)", svcEnv["METRICS_PORT"], defaults["METRICS_PORT"])
	}
}

// TestFunctionPortsBrokenCopiesFail shows the check catches each way a
// reserved port can come back.
func TestFunctionPortsBrokenCopiesFail(t *testing.T) {
	reserved := knativeReservedPorts(t)
	svcEnv, funcEnv, containerPorts := shippedPortConfig(t)
	tests := []struct {
		name    string
		svc     map[string]string
		fn      map[string]string
		def     string
		clashes int
	}{
		{name: "service.yaml METRICS_PORT=9090 (the shipped bug)", svc: map[string]string{"METRICS_PORT": "9090"}, clashes: 1},
		{name: "func.yaml METRICS_PORT=9091", fn: map[string]string{"METRICS_PORT": "9091"}, clashes: 1},
		{name: "LISTEN_ADDRESS on queue-proxy's serving port", svc: map[string]string{"LISTEN_ADDRESS": "[::]:8012"}, clashes: 1},
		{name: "METRICS_PORT on the system-internal-tls port", svc: map[string]string{"METRICS_PORT": "8112"}, clashes: 1},
		{name: "config default 9090 with METRICS_PORT unset everywhere", svc: map[string]string{"METRICS_PORT": ""}, fn: map[string]string{"METRICS_PORT": ""}, def: "9090", clashes: 3},
		{name: "METRICS_PORT=0 turns metrics off", svc: map[string]string{"METRICS_PORT": "0"}, fn: map[string]string{"METRICS_PORT": "0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			override := func(base, with map[string]string) map[string]string {
				out := map[string]string{}
				for k, v := range base {
					out[k] = v
				}
				for k, v := range with {
					if v == "" {
						delete(out, k)
					} else {
						out[k] = v
					}
				}
				return out
			}
			defaults := configDefaults()
			if tc.def != "" {
				defaults["METRICS_PORT"] = tc.def
			} else {
				defaults["METRICS_PORT"] = "9095"
			}
			ports, err := functionPorts(override(svcEnv, tc.svc), override(funcEnv, tc.fn), defaults, containerPorts)
			if err != nil {
				t.Fatal(err)
			}
			if got := clashes(ports, reserved); len(got) != tc.clashes {
				t.Errorf("got %d clashes, want %d: %q", len(got), tc.clashes, got)
			}
		})
	}
}
