package knative

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// knDoc is the page that shows the `kn service create` command.
const knDoc = "docs/knative.md"

// knCommand returns the `kn service create` command of docs/knative.md,
// joined across its line continuations.
func knCommand(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(knDoc)))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "kn service create ") {
			return line
		}
	}
	t.Fatal(knDoc + " has no `kn service create` command")
	return ""
}

// TestREADMEKnCommandMatchesService keeps the kn command of the docs and
// deploy/knative/service.yaml in step: the same env, the same autoscaling
// annotations, concurrency and timeout, so a user who follows either gets
// the same Service.
func TestREADMEKnCommandMatchesService(t *testing.T) {
	cmd := knCommand(t)
	_, svc := loadService(t)
	flags := func(name string) map[string]string {
		out := map[string]string{}
		re := regexp.MustCompile(`--` + name + ` '?([^=' ]+)=([^' ]*)'?`)
		for _, m := range re.FindAllStringSubmatch(cmd, -1) {
			out[m[1]] = m[2]
		}
		return out
	}
	env := flags("env")
	c := svc.Spec.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "IMAGE_PULL_SECRET") || e.Name == "DEFAULT_STORAGE_CLASS" {
			continue // optional in the manifest; shown set in the docs
		}
		got, ok := env[e.Name]
		if !ok {
			t.Errorf(knDoc+" kn command lacks --env %s (service.yaml sets %q)", e.Name, e.Value)
			continue
		}
		if got != e.Value {
			t.Errorf(knDoc+" --env %s=%s, service.yaml %q", e.Name, got, e.Value)
		}
	}
	for name, value := range flags("annotation") {
		if got := svc.Spec.Template.Annotations[name]; got != value {
			t.Errorf(knDoc+" --annotation %s=%s, service.yaml revision template has %q", name, value, got)
		}
	}
	for name, value := range svc.Spec.Template.Annotations {
		if strings.HasPrefix(name, "autoscaling.knative.dev/") && flags("annotation")[name] != value {
			t.Errorf("service.yaml annotation %s=%s is missing from the kn command of "+knDoc, name, value)
		}
	}
	if cc := svc.Spec.Template.Spec.ContainerConcurrency; cc == nil || !strings.Contains(cmd, "--concurrency-limit "+itoa(*cc)) {
		t.Errorf(knDoc+" kn command does not set --concurrency-limit to service.yaml's containerConcurrency %v", deref(cc))
	}
	if ts := svc.Spec.Template.Spec.TimeoutSeconds; ts == nil || !strings.Contains(cmd, "--timeout "+itoa(*ts)) {
		t.Errorf(knDoc+" kn command does not set --timeout to service.yaml's timeoutSeconds %v", deref(ts))
	}
	if port := c.Ports[0]; !strings.Contains(cmd, "--port "+port.Name+":"+itoa(int64(port.ContainerPort))) {
		t.Errorf(knDoc+" kn command does not set --port %s:%d", port.Name, port.ContainerPort)
	}
}

func itoa[T ~int32 | ~int64](v T) string { return strconv.FormatInt(int64(v), 10) }
