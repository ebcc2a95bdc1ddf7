package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestKRMFunctionInKustomize runs the built binary as an exec KRM function
// through kustomize's own Go API (krusty), as `kustomize build
// --enable-exec` would.
func TestKRMFunctionInKustomize(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mutator")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the binary: %v\n%s", err, out)
	}
	files := map[string]string{
		"kustomization.yaml": "resources:\n  - deployment.yaml\ntransformers:\n  - mutator.yaml\n",
		"deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  template:
    spec:
      containers:
        - name: app
          image: nginx:1.27
`,
		"mutator.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: mutator
  annotations:
    config.kubernetes.io/function: |
      exec:
        path: ` + bin + `
        args: [krm]
        envs: [REGISTRY=registry.example.com/mirror, IMAGE_PULL_SECRET=regcred]
`,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := krusty.MakeDefaultOptions()
	opts.PluginConfig = types.EnabledPluginConfig(types.BploUseStaticallyLinked)
	opts.PluginConfig.FnpLoadingOptions.EnableExec = true
	rm, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"image: registry.example.com/mirror/nginx:1.27", "- name: regcred"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kustomize output lacks %q:\n%s", want, out)
		}
	}
}
