package helm

import (
	"strings"
	"testing"
)

// TestRefusedValues: values.schema.json (and the template checks it cannot
// express) refuse bad values before anything reaches the cluster, naming
// the value.
func TestRefusedValues(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         string // in the error
	}{
		{"unknown mode", `config: {mode: permissive}`, "/config/mode"},
		{"unknown pull policy to force", `config: {imagePullPolicyToForce: Sometimes}`, "/config/imagePullPolicyToForce"},
		{"unknown image pull policy", `image: {pullPolicy: Sometimes}`, "/image/pullPolicy"},
		{"unknown failure policy", `webhook: {failurePolicy: Retry}`, "/webhook/failurePolicy"},
		{"timeout above the API server's 30s", `webhook: {timeoutSeconds: 31}`, "/webhook/timeoutSeconds"},
		{"zero timeout", `webhook: {timeoutSeconds: 0}`, "/webhook/timeoutSeconds"},
		{"port 0", `config: {port: 0}`, "/config/port"},
		{"port above 65535", `config: {port: 70000}`, "/config/port"},
		{"negative metrics port", `config: {metricsPort: -1}`, "/config/metricsPort"},
		{"metrics port above 65535", `config: {metricsPort: 65536}`, "/config/metricsPort"},
		{"port as a string", `config: {port: "8443"}`, "/config/port"},
		{"no replicas", `replicaCount: 0`, "/replicaCount"},
		{"unknown log level", `config: {logLevel: verbose}`, "/config/logLevel"},
		{"TLS 1.1", `config: {tlsMinVersion: "1.1"}`, "/config/tlsMinVersion"},
		{"unknown certificate source", `certificates: {source: vault}`, "/certificates/source"},
		{"registry with a scheme", `config: {registry: "https://registry.example.com"}`, "/config/registry"},
		{"registry map entry without target", `config: {registryMap: [{source: docker.io}]}`, "/config/registryMap/0"},
		{"registry map as a string", `config: {registryMap: "docker.io=r.example.com"}`, "/config/registryMap"},
		{"exclude list as a string", `config: {excludeNamespaces: "a,b"}`, "/config/excludeNamespaces"},
		{"invalid pull secret name", `config: {imagePullSecret: Bad_Name}`, "/config/imagePullSecret"},
		{"duration without a unit", `config: {shutdownDelay: "5"}`, "/config/shutdownDelay"},
		{"quantity with a typo", `config: {requestBodyBudget: 12MB}`, "/config/requestBodyBudget"},
		{"GOGC that is not a percentage", `config: {goGC: lots}`, "/config/goGC"},
		{"unknown mirror-missing action", `config: {mirror: {missing: ignore}}`, "/config/mirror/missing"},
		{"zero circuit failures", `config: {mirror: {circuitFailures: 0}}`, "/config/mirror/circuitFailures"},
		{"mirror check as a string", `config: {mirror: {check: "yes"}}`, "/config/mirror/check"},
		{"a quote in an admin group (CEL injection)", `namespacePolicy: {adminGroups: ["x']) || true || ('"]}`, "/namespacePolicy/adminGroups/0"},
		{"a quote in a protected namespace", `namespacePolicy: {protectedNamespaces: ["a'b"]}`, "/namespacePolicy/protectedNamespaces/0"},
		{"unknown Pod Security level", `namespace: {podSecurity: {enforce: strict}}`, "/namespace/podSecurity/enforce"},
		{"CIDR without a prefix length", `networkPolicy: {apiServerCIDRs: [10.0.0.1]}`, "/networkPolicy/apiServerCIDRs/0"},
		{"short digest", `image: {digest: "sha256:abc"}`, "/image/digest"},
		{"unknown anti-affinity", `podAntiAffinity: sometimes`, "/podAntiAffinity"},
		{"unknown issuer kind", `certificates: {certManager: {issuerRef: {kind: Vault, name: x}}}`, "/certificates/certManager/issuerRef/kind"},
		{"match condition without expression", `webhook: {matchConditions: [{name: x}]}`, "/webhook/matchConditions/0"},
		{"misspelt top-level key", `replicas: 3`, "replicas"},
		{"misspelt config key", `config: {registy: r.example.com}`, "registy"},
		// Checks in the templates (across values, which the schema cannot do).
		{"PDB that blocks every drain", `podDisruptionBudget: {minAvailable: 2}`, "podDisruptionBudget.minAvailable (2) must be less than replicaCount (2)"},
		{"ServiceMonitor without metrics", `serviceMonitor: {enabled: true}
config: {metricsPort: 0}`, "serviceMonitor.enabled needs config.metricsPort > 0"},
		{"the same port twice", `config: {port: 9095}`, "config.port and config.metricsPort are both 9095"},
		{"existing service account without a name", `serviceAccount: {create: false}`, "serviceAccount.name is required"},
		{"network policy without the API server's addresses", `networkPolicy: {enabled: true}`, "networkPolicy.apiServerCIDRs is required"},
		{"issuer without a name", `certificates: {source: cert-manager, certManager: {issuerRef: {kind: ClusterIssuer}}}`, "issuerRef.name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(t, values(t, tc.values), defaultNS)
			if err == nil {
				t.Fatalf("values %s were accepted", tc.values)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestAcceptedValues: the schema is not stricter than the mutator; edge
// values it accepts render.
func TestAcceptedValues(t *testing.T) {
	for _, tc := range []struct{ name, values string }{
		{"metrics off", `config: {metricsPort: 0}`},
		{"highest ports", `config: {port: 65535, metricsPort: 65534}`},
		{"TLS 1.2", `config: {tlsMinVersion: "1.2"}`},
		{"audit mode, upper-case-free level alias", `config: {mode: audit, logLevel: warning}`},
		{"registry with a port and no path", `config: {registry: "localhost:5000"}`},
		{"registry with a trailing slash", `config: {registry: "r.example.com:443/mirror/"}`},
		{"catch-all registry map", `config: {registryMap: [{source: "*", target: r.example.com/all}, {source: "host:5000", target: r.example.com/h}]}`},
		{"no registry at all", `config: {registry: "", ignoredRegistries: []}`},
		{"GOGC off and as a number", `config: {goGC: 150, goMemLimit: "off"}`},
		{"durations as Go writes them", `config: {shutdownDelay: 1m30s, mirror: {checkTimeout: 250ms, circuitCooldown: 1h}}`},
		{"quantity in bytes", `config: {requestBodyBudget: "25165824"}`},
		{"percentage PDB", `podDisruptionBudget: {minAvailable: 50%}`},
		{"one replica without a PDB", `replicaCount: 1
podDisruptionBudget: {enabled: false}`},
		{"no admin groups at all", `namespacePolicy: {adminGroups: []}`},
		{"group with a colon and spaces", `namespacePolicy: {adminGroups: ["oidc:Platform Admins"]}`},
		{"Pod Security level removed", `namespace: {podSecurity: {warn: "", audit: ""}}`},
		{"IPv6 API server", `networkPolicy: {enabled: true, apiServerCIDRs: ["fd00::/64"]}`},
		{"extra env from a Secret", `extraEnv: [{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderChart(t, values(t, tc.values), defaultNS); err != nil {
				t.Errorf("values %s refused: %v", tc.values, err)
			}
		})
	}
}
