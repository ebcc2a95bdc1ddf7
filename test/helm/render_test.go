package helm

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/mutator-dev/mutator/internal/objects"
)

// allOn sets every value the chart has to something other than its
// default (with the cert-manager variant's own values in allOnCertManager).
const allOn = `
fullnameOverride: ""
image: {repository: registry.example.com/mutator, tag: v1.2.3, pullPolicy: IfNotPresent}
imagePullSecrets: [{name: mutator-pull}]
replicaCount: 3
config:
  registry: registry.example.com/mirror
  imagePullSecret: central-pull
  imagePullSecretAppend: true
  forceImagePullPolicy: true
  imagePullPolicyToForce: Always
  defaultStorageClass: standard
  excludeNamespaces: [kube-system, "{{ .Release.Namespace }}", legacy]
  ignoredRegistries: [registry.example.com, registry.k8s.io/pause]
  registryMap:
    - {source: docker.io, target: registry.example.com/dockerhub}
    - {source: quay.io, target: registry.example.com/quay}
  mode: audit
  warnings: false
  recordOriginalImages: true
  logLevel: debug
  port: 9443
  metricsPort: 9096
  shutdownDelay: 8s
  requestBodyBudget: 24Mi
  enableHTTP2: true
  tlsMinVersion: "1.2"
  tlsClientCAFile: /etc/mutator/client-ca/ca.crt
  sink: http://broker-ingress.knative-eventing.svc/mutator/default
  eventSource: mutator-prod
  goGC: "200"
  goMemLimit: 100MiB
  mirror:
    check: true
    checkTimeout: 500ms
    checkReviewBudget: 1500ms
    checkMaxLookups: 16
    checkMaxInFlight: 128
    missing: warn
    copySink: http://mutator-copier.mutator-system.svc
    pinDigests: true
    unreachable: deny
    credentialsSecret: mirror-pull
    cacheTTL: 5m
    negativeCacheTTL: 10s
    cacheSize: 8Mi
    circuitFailures: 3
    circuitCooldown: 1m
    insecure: true
extraEnv: [{name: EXTRA, value: "1"}]
webhook:
  failurePolicy: Ignore
  timeoutSeconds: 10
  objectSelector: {matchExpressions: [{key: mutator.dev/skip, operator: DoesNotExist}]}
  annotations: {example.com/owner: platform}
serviceAccount: {annotations: {example.com/role: mutator}}
podDisruptionBudget: {minAvailable: 2}
networkPolicy: {enabled: true, apiServerCIDRs: [10.0.0.0/24, 10.0.1.0/24]}
serviceMonitor: {enabled: true, labels: {release: prometheus}, interval: 15s, scrapeTimeout: 5s}
namespace:
  podSecurity: {enforceVersion: v1.36}
  labels: {example.com/team: platform}
namespacePolicy: {adminGroups: [platform-admins], protectedNamespaces: [kube-system, "{{ .Release.Namespace }}"]}
podAnnotations: {example.com/scrape: "true"}
podLabels: {example.com/team: platform}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: platform, effect: NoSchedule}]
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/name: mutator}}}
podAntiAffinity: required
terminationGracePeriodSeconds: 40
resources: {requests: {cpu: 100m, memory: 96Mi}, limits: {cpu: "2", memory: 256Mi}}
extraVolumes: [{name: scratch, emptyDir: {}}]
extraVolumeMounts: [{name: scratch, mountPath: /scratch}]
`

// allOnCertManager is allOn with the certificate from cert-manager, signed
// by an existing ClusterIssuer, with cert-manager in a namespace of its own.
const allOnCertManager = allOn + `
certificates:
  source: cert-manager
  certManager: {namespace: cm-system, issuerRef: {kind: ClusterIssuer, name: platform-ca}, clusterDomain: corp.local}
`

// certificateEnv are the variables the certificate source sets (not
// config values).
var certificateEnv = map[string][]string{
	"self-managed": {"WEBHOOK_SECRET_NAME", "WEBHOOK_SERVICE_NAME", "WEBHOOK_CONFIG_NAME", "SYSTEM_NAMESPACE"},
	"cert-manager": {"TLS_CERT_FILE", "TLS_KEY_FILE"},
}

// configEnvNames returns the env variables function/config reads: the
// envconfig tags of its non-test sources, parsed rather than imported so
// that this module does not build the mutator's configuration package.
func configEnvNames(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "function", "config")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	var names []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			fld, ok := n.(*ast.Field)
			if !ok || fld.Tag == nil {
				return true
			}
			tag, err := strconv.Unquote(fld.Tag.Value)
			if err != nil {
				t.Fatalf("%s: tag %s: %v", fset.Position(fld.Pos()), fld.Tag.Value, err)
			}
			if name, ok := reflect.StructTag(tag).Lookup("envconfig"); ok {
				names = append(names, name)
			}
			return true
		})
	}
	if len(names) < 20 {
		t.Fatalf("found only %d envconfig tags in %s: %v", len(names), dir, names)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestEveryConfigVariable: every variable function/config reads can be set
// through the chart (a new one fails here until values.yaml has it), and
// the chart sets no variable the mutator does not read.
func TestEveryConfigVariable(t *testing.T) {
	known := configEnvNames(t)
	set := map[string]bool{}
	for _, tc := range []struct{ source, values string }{
		{"self-managed", allOn},
		{"cert-manager", allOnCertManager},
	} {
		e := env(t, render(t, tc.values, defaultNS))
		for name := range e {
			set[name] = true
			if name != "EXTRA" && !slices.Contains(known, name) {
				t.Errorf("%s: the chart sets %s, which function/config does not read", tc.source, name)
			}
		}
		for _, name := range certificateEnv[tc.source] {
			if _, ok := e[name]; !ok {
				t.Errorf("%s: %s is not set", tc.source, name)
			}
		}
	}
	for _, name := range known {
		if !set[name] {
			t.Errorf("%s (function/config) cannot be set through the chart's values", name)
		}
	}
}

// TestConfigValues: each value reaches its variable, spelled the way the
// mutator parses it.
func TestConfigValues(t *testing.T) {
	e := env(t, render(t, allOn, "platform"))
	for name, want := range map[string]string{
		"REGISTRY":                   "registry.example.com/mirror",
		"IMAGE_PULL_SECRET":          "central-pull",
		"IMAGE_PULL_SECRET_APPEND":   "true",
		"FORCE_IMAGE_PULL_POLICY":    "true",
		"IMAGE_PULL_POLICY_TO_FORCE": "Always",
		"DEFAULT_STORAGE_CLASS":      "standard",
		"EXCLUDE_NAMESPACES":         "kube-system,platform,legacy",
		"IGNORED_REGISTRIES":         "registry.example.com,registry.k8s.io/pause",
		"REGISTRY_MAP":               "docker.io=registry.example.com/dockerhub,quay.io=registry.example.com/quay",
		"MODE":                       "audit",
		"WARNINGS":                   "false",
		"LOG_LEVEL":                  "debug",
		"PORT":                       "9443",
		"METRICS_PORT":               "9096",
		"SHUTDOWN_DELAY":             "8s",
		"REQUEST_BODY_BUDGET":        "24Mi",
		"ENABLE_HTTP2":               "true",
		"WEBHOOK_TLS_MIN_VERSION":    "1.2",
		"K_SINK":                     "http://broker-ingress.knative-eventing.svc/mutator/default",
		"EVENT_SOURCE":               "mutator-prod",
		"GOGC":                       "200",
		"GOMEMLIMIT":                 "100MiB",
		"MIRROR_CHECK":               "true",
		"MIRROR_CHECK_TIMEOUT":       "500ms",
		"MIRROR_CHECK_REVIEW_BUDGET": "1500ms",
		"MIRROR_MISSING":             "warn",
		"MIRROR_UNREACHABLE":         "deny",
		"MIRROR_CREDENTIALS":         "/etc/mutator/mirror-credentials/.dockerconfigjson",
		"MIRROR_CACHE_TTL":           "5m",
		"MIRROR_NEGATIVE_CACHE_TTL":  "10s",
		"MIRROR_CACHE_SIZE":          "8Mi",
		"MIRROR_CIRCUIT_FAILURES":    "3",
		"MIRROR_CIRCUIT_COOLDOWN":    "1m",
		"MIRROR_INSECURE":            "true",
		"WEBHOOK_SECRET_NAME":        "mutator-certs",
		"WEBHOOK_SERVICE_NAME":       "mutator",
		"WEBHOOK_CONFIG_NAME":        "mutator",
		"SYSTEM_NAMESPACE":           "valueFrom",
		"EXTRA":                      "1",
	} {
		if got, ok := e[name]; !ok || got != want {
			t.Errorf("%s = %q (set: %v), want %q", name, got, ok, want)
		}
	}
}

// TestUnsetValuesLeaveDefaults: a null or empty value sets no variable, so
// the mutator's own default applies, and METRICS_PORT=0 removes everything
// that would point at a metrics port.
func TestUnsetValuesLeaveDefaults(t *testing.T) {
	objs := render(t, `
config: {registry: "", ignoredRegistries: [], excludeNamespaces: [], mode: "", warnings: null, logLevel: "", shutdownDelay: "", forceImagePullPolicy: null, imagePullPolicyToForce: "", metricsPort: 0}
networkPolicy: {enabled: true, apiServerCIDRs: [192.0.2.10/32]}
`, defaultNS)
	e := env(t, objs)
	var names []string
	for n := range e {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"METRICS_PORT", "PORT", "SYSTEM_NAMESPACE", "WEBHOOK_CONFIG_NAME", "WEBHOOK_SECRET_NAME", "WEBHOOK_SERVICE_NAME"}
	if !slices.Equal(names, want) {
		t.Errorf("env = %v, want only %v", names, want)
	}
	if e["METRICS_PORT"] != "0" {
		t.Errorf("METRICS_PORT = %q, want 0 (metrics off)", e["METRICS_PORT"])
	}
	ports, _ := container(t, objs)["ports"].([]any)
	if len(ports) != 1 {
		t.Errorf("container ports = %v, want only https", ports)
	}
	np := mustFind(t, objs, "NetworkPolicy", releaseName)
	if rules, _ := field(np, "spec.ingress").([]any); len(rules) != 1 {
		t.Errorf("NetworkPolicy ingress = %v, want only the webhook rule", rules)
	}
}

// TestOptions: what each group of values changes in the rendered objects.
func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name, values, namespace string
		check                   func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"another namespace", ``, "platform", func(t *testing.T, objs []*unstructured.Unstructured) {
			mustFind(t, objs, "Namespace", "platform")
			wh := mustFind(t, objs, "MutatingWebhookConfiguration", releaseName)
			if got := str(wh, "webhooks.0.clientConfig.service.namespace"); got != "platform" {
				t.Errorf("webhook calls a Service in %q", got)
			}
			if got := strs(wh, "webhooks.0.namespaceSelector.matchExpressions.0.values"); !slices.Equal(got, []string{"kube-system", "platform"}) {
				t.Errorf("namespaceSelector exempts %v", got)
			}
			vap := mustFind(t, objs, "ValidatingAdmissionPolicy", "mutator-namespace-opt-out")
			if got := str(vap, "spec.validations.1.expression"); !strings.Contains(got, "'platform'") || strings.Contains(got, "mutator-system") {
				t.Errorf("namespace policy protects the wrong names: %s", got)
			}
			if got := env(t, objs)["EXCLUDE_NAMESPACES"]; got != "kube-system,platform" {
				t.Errorf("EXCLUDE_NAMESPACES = %q", got)
			}
			for _, kind := range []string{"RoleBinding", "ClusterRoleBinding"} {
				for _, o := range objs {
					if o.GetKind() == kind && str(o, "subjects.0.namespace") != "platform" {
						t.Errorf("%s %s binds a ServiceAccount in %q", kind, o.GetName(), str(o, "subjects.0.namespace"))
					}
				}
			}
		}},
		{"cert-manager with an existing issuer", allOnCertManager, defaultNS, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, kind := range []string{"Issuer", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Secret"} {
				for _, o := range objs {
					if o.GetKind() == kind {
						t.Errorf("%s %s rendered; an existing issuer needs no CA and cert-manager no API access", kind, o.GetName())
					}
				}
			}
			cert := mustFind(t, objs, "Certificate", "mutator-serving")
			if got := fmt.Sprint(field(cert, "spec.issuerRef")); got != "map[group:cert-manager.io kind:ClusterIssuer name:platform-ca]" {
				t.Errorf("issuerRef = %s", got)
			}
			if got := strs(cert, "spec.dnsNames"); !slices.Equal(got, []string{"mutator.mutator-system.svc", "mutator.mutator-system.svc.corp.local"}) {
				t.Errorf("dnsNames = %v", got)
			}
			wh := mustFind(t, objs, "MutatingWebhookConfiguration", releaseName)
			if got := wh.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != "mutator-system/mutator-serving" {
				t.Errorf("inject-ca-from = %q", got)
			}
			if got := strs(wh, "webhooks.0.namespaceSelector.matchExpressions.0.values"); !slices.Equal(got, []string{"kube-system", "mutator-system", "cm-system"}) {
				t.Errorf("namespaceSelector exempts %v, want cert-manager's namespace added", got)
			}
			vap := mustFind(t, objs, "ValidatingAdmissionPolicy", "mutator-namespace-opt-out")
			if got := str(vap, "spec.validations.1.expression"); !strings.Contains(got, "['cm-system', 'kube-system', 'legacy', 'mutator-system']") {
				t.Errorf("the namespace policy does not protect every name the webhook and EXCLUDE_NAMESPACES exempt: %s", got)
			}
			dep := mustFind(t, objs, "Deployment", releaseName)
			if field(dep, "spec.template.spec.automountServiceAccountToken") != nil {
				t.Error("the cert-manager variant mounts a service account token")
			}
			vols := fmt.Sprint(field(dep, "spec.template.spec.volumes"))
			for _, want := range []string{"secretName:mutator-serving-tls", "secretName:mirror-pull", "name:scratch"} {
				if !strings.Contains(vols, want) {
					t.Errorf("volumes lack %s: %s", want, vols)
				}
			}
		}},
		{"webhook settings and every option", allOn, defaultNS, func(t *testing.T, objs []*unstructured.Unstructured) {
			wh := mustFind(t, objs, "MutatingWebhookConfiguration", releaseName)
			for path, want := range map[string]any{
				"webhooks.0.failurePolicy":                         "Ignore",
				"webhooks.0.timeoutSeconds":                        float64(10),
				"webhooks.0.objectSelector.matchExpressions.0.key": "mutator.dev/skip",
				"webhooks.0.matchConditions.1.name":                "create-or-images-changed",
			} {
				if got := field(wh, path); got != want {
					t.Errorf("webhook %s = %v, want %v", path, got, want)
				}
			}
			if got := wh.GetAnnotations()["example.com/owner"]; got != "platform" {
				t.Errorf("webhook annotations = %v", wh.GetAnnotations())
			}
			dep := mustFind(t, objs, "Deployment", releaseName)
			for path, want := range map[string]any{
				"spec.replicas":                                                                                            float64(3),
				"spec.template.spec.containers.0.image":                                                                    "registry.example.com/mutator:v1.2.3",
				"spec.template.spec.containers.0.imagePullPolicy":                                                          "IfNotPresent",
				"spec.template.spec.containers.0.ports.0.containerPort":                                                    float64(9443),
				"spec.template.spec.containers.0.ports.1.containerPort":                                                    float64(9096),
				"spec.template.spec.containers.0.resources.limits.memory":                                                  "256Mi",
				"spec.template.spec.containers.0.volumeMounts.0.mountPath":                                                 "/etc/mutator/mirror-credentials",
				"spec.template.spec.containers.0.volumeMounts.1.mountPath":                                                 "/scratch",
				"spec.template.spec.imagePullSecrets.0.name":                                                               "mutator-pull",
				"spec.template.spec.priorityClassName":                                                                     "system-cluster-critical",
				"spec.template.spec.tolerations.0.key":                                                                     "dedicated",
				"spec.template.spec.topologySpreadConstraints.0.topologyKey":                                               "topology.kubernetes.io/zone",
				"spec.template.spec.terminationGracePeriodSeconds":                                                         float64(40),
				"spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.topologyKey": "kubernetes.io/hostname",
				"spec.template.spec.volumes.0.secret.secretName":                                                           "mirror-pull",
			} {
				if got := field(dep, path); got != want {
					t.Errorf("Deployment %s = %v, want %v", path, got, want)
				}
			}
			tmpl := field(dep, "spec.template.metadata").(map[string]any)
			if fmt.Sprint(tmpl["labels"]) != "map[app.kubernetes.io/component:webhook app.kubernetes.io/name:mutator app.kubernetes.io/part-of:mutator example.com/team:platform]" ||
				fmt.Sprint(tmpl["annotations"]) != "map[example.com/scrape:true]" {
				t.Errorf("Pod template metadata = %v", tmpl)
			}
			pdb := mustFind(t, objs, "PodDisruptionBudget", releaseName)
			if got := field(pdb, "spec.minAvailable"); got != float64(2) {
				t.Errorf("PDB minAvailable = %v", got)
			}
			np := mustFind(t, objs, "NetworkPolicy", releaseName)
			if got := fmt.Sprint(field(np, "spec.ingress.0.from")); got != "[map[ipBlock:map[cidr:10.0.0.0/24]] map[ipBlock:map[cidr:10.0.1.0/24]]]" {
				t.Errorf("NetworkPolicy API server peers = %s", got)
			}
			sm := mustFind(t, objs, "ServiceMonitor", releaseName)
			if sm.GetLabels()["release"] != "prometheus" || str(sm, "spec.endpoints.0.interval") != "15s" || str(sm, "spec.endpoints.0.scrapeTimeout") != "5s" {
				t.Errorf("ServiceMonitor = %v", sm.Object)
			}
			metrics := mustFind(t, objs, "Service", "mutator-metrics")
			if got := field(metrics, "spec.ports.0.port"); got != float64(9096) {
				t.Errorf("metrics Service port = %v", got)
			}
			// The ServiceMonitor selects the metrics Service, and only it.
			sel, _ := field(sm, "spec.selector.matchLabels").(map[string]any)
			for _, svc := range []*unstructured.Unstructured{metrics, mustFind(t, objs, "Service", releaseName)} {
				matches := len(sel) > 0
				for k, v := range sel {
					if svc.GetLabels()[k] != v {
						matches = false
					}
				}
				if matches != (svc == metrics) {
					t.Errorf("ServiceMonitor selector %v matches Service %s: %v", sel, svc.GetName(), matches)
				}
			}
			ns := mustFind(t, objs, "Namespace", defaultNS)
			for k, want := range map[string]string{
				"mutator.dev/ignore":                         "true",
				"pod-security.kubernetes.io/enforce":         "restricted",
				"pod-security.kubernetes.io/enforce-version": "v1.36",
				"example.com/team":                           "platform",
			} {
				if got := ns.GetLabels()[k]; got != want {
					t.Errorf("Namespace label %s = %q, want %q", k, got, want)
				}
			}
			vap := mustFind(t, objs, "ValidatingAdmissionPolicy", "mutator-namespace-opt-out")
			if got := str(vap, "spec.matchConditions.0.expression"); got != "!request.userInfo.groups.exists(g, g in ['platform-admins'])" {
				t.Errorf("admin groups expression = %s", got)
			}
			// Only the selector's names and EXCLUDE_NAMESPACES once the
			// Knative ones are dropped.
			if got := str(vap, "spec.validations.1.expression"); !strings.HasSuffix(got, "in ['kube-system', 'legacy', 'mutator-system'])") {
				t.Errorf("protected names expression = %s", got)
			}
			sa := mustFind(t, objs, "ServiceAccount", releaseName)
			if sa.GetAnnotations()["example.com/role"] != "mutator" {
				t.Errorf("ServiceAccount annotations = %v", sa.GetAnnotations())
			}
		}},
		{"switched off", `
namespace: {create: false}
namespacePolicy: {enabled: false}
podDisruptionBudget: {enabled: false}
serviceAccount: {create: false, name: existing}
podAntiAffinity: none
webhook: {matchConditions: []}
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
`, defaultNS, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, kind := range []string{"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "PodDisruptionBudget", "ServiceAccount", "NetworkPolicy", "ServiceMonitor"} {
				for _, o := range objs {
					if o.GetKind() == kind {
						t.Errorf("%s %s rendered although switched off", kind, o.GetName())
					}
				}
			}
			dep := mustFind(t, objs, "Deployment", releaseName)
			if got := str(dep, "spec.template.spec.serviceAccountName"); got != "existing" {
				t.Errorf("serviceAccountName = %q", got)
			}
			if field(dep, "spec.template.spec.affinity") != nil {
				t.Errorf("affinity = %v", field(dep, "spec.template.spec.affinity"))
			}
			if got := str(dep, "spec.template.spec.containers.0.image"); got != "ghcr.io/mutator-dev/mutator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
				t.Errorf("image = %q", got)
			}
			wh := mustFind(t, objs, "MutatingWebhookConfiguration", releaseName)
			if field(wh, "webhooks.0.matchConditions") != nil {
				t.Error("matchConditions rendered although empty")
			}
			if got := str(mustFind(t, objs, "RoleBinding", "mutator-certs"), "subjects.0.name"); got != "existing" {
				t.Errorf("RoleBinding subject = %q", got)
			}
		}},
		{"another release name", `fullnameOverride: mw
certificates: {selfManaged: {secretName: mw-tls}}
podDisruptionBudget: {minAvailable: null, maxUnavailable: 1}`, defaultNS, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, o := range objs {
				if o.GetKind() != "Namespace" && !strings.HasPrefix(o.GetName(), "mw") {
					t.Errorf("%s is not named after fullnameOverride", objects.Key(o))
				}
			}
			e := env(t, objs)
			if e["WEBHOOK_CONFIG_NAME"] != "mw" || e["WEBHOOK_SERVICE_NAME"] != "mw" || e["WEBHOOK_SECRET_NAME"] != "mw-tls" {
				t.Errorf("certificate env = %v", e)
			}
			mustFind(t, objs, "Secret", "mw-tls")
			if got := strs(mustFind(t, objs, "Role", "mw-certs"), "rules.0.resourceNames"); !slices.Equal(got, []string{"mw-tls"}) {
				t.Errorf("Role covers Secrets %v", got)
			}
			if got := strs(mustFind(t, objs, "ClusterRole", "mw-webhook-cabundle"), "rules.0.resourceNames"); !slices.Equal(got, []string{"mw"}) {
				t.Errorf("ClusterRole covers webhook configurations %v", got)
			}
			wh := mustFind(t, objs, "MutatingWebhookConfiguration", "mw")
			if got := str(wh, "webhooks.0.clientConfig.service.name"); got != "mw" {
				t.Errorf("webhook calls Service %q", got)
			}
			pdb := mustFind(t, objs, "PodDisruptionBudget", "mw")
			if field(pdb, "spec.maxUnavailable") != float64(1) || field(pdb, "spec.minAvailable") != nil {
				t.Errorf("PDB spec = %v", field(pdb, "spec"))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, render(t, tc.values, tc.namespace))
		})
	}
}

// TestNodeSelectorValue: a map value with a dotted key (which field()
// cannot address) reaches the Pod template.
func TestNodeSelectorValue(t *testing.T) {
	dep := mustFind(t, render(t, allOn, defaultNS), "Deployment", releaseName)
	sel, _ := field(dep, "spec.template.spec.nodeSelector").(map[string]any)
	if sel["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector = %v", sel)
	}
}

// TestChartFilesAreUsed: every template renders something with allOn or
// the cert-manager variant (a template that never renders is dead code or a
// broken condition).
func TestChartFilesAreUsed(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join(chartDir(t), "templates"))
	if err != nil {
		t.Fatalf("reading templates: %v", err)
	}
	rendered := map[string]bool{}
	for _, vals := range []string{allOn, allOnCertManager, `certificates: {source: cert-manager}`} {
		manifest, err := renderChart(t, values(t, vals), defaultNS)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(manifest, "\n") {
			if src, ok := strings.CutPrefix(line, "# Source: mutator/templates/"); ok {
				rendered[src] = true
			}
		}
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "_") || n == "NOTES.txt" {
			continue
		}
		if !rendered[n] {
			t.Errorf("templates/%s renders nothing with any of the test value sets", n)
		}
	}
}
