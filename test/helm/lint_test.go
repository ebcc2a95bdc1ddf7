package helm

import (
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/lint/support"
)

// TestLint: `helm lint --strict` finds nothing to warn about, with the
// defaults and with every option on (lint renders the templates with the
// values, so a broken branch shows here).
func TestLint(t *testing.T) {
	for _, tc := range []struct{ name, values string }{
		{"defaults", ``},
		{"every option, self-managed certificate", allOn},
		{"every option, cert-manager", allOnCertManager},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace = defaultNS
			l.KubeVersion = kubeVersion
			res := l.Run([]string{chartDir(t)}, values(t, tc.values))
			if res.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
		})
	}
}
