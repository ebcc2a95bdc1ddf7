package main

// The admission policies the manifests ship, printed by the mutator's own
// generator (package policy) as its commands print them:
//
//   - deploy/namespace-policy/policy.yaml: `mutator namespace-policy` with
//     the default configuration (the namespace guard deploy/standalone and
//     deploy/knative include);
//   - deploy/knative/guard.yaml: `mutator policy --guard` with the
//     environment of deploy/knative/service.yaml.
//
// function/policy's TestShippedNamespaceGuard and TestShippedImageGuard
// check the same files byte for byte.

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/mutator-dev/mutator/function/config"
	"github.com/mutator-dev/mutator/function/policy"
)

const (
	namespaceGuardFile = "deploy/namespace-policy/policy.yaml"
	imageGuardFile     = "deploy/knative/guard.yaml"
	knativeService     = "deploy/knative/service.yaml"
)

func policyFiles(root string, out *output) error {
	cfg, err := loadConfig(nil)
	if err != nil {
		return fmt.Errorf("%s: %w", namespaceGuardFile, err)
	}
	guard, err := policy.NamespaceGuard(cfg, policy.GuardOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", namespaceGuardFile, err)
	}
	out.files[namespaceGuardFile] = guard

	env, err := serviceEnv(filepath.Join(root, knativeService))
	if err != nil {
		return err
	}
	if cfg, err = loadConfig(env); err != nil {
		return fmt.Errorf("%s with the env of %s: %w", imageGuardFile, knativeService, err)
	}
	set, err := policy.Guard(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", imageGuardFile, err)
	}
	if out.files[imageGuardFile], err = set.YAML(); err != nil {
		return fmt.Errorf("%s: %w", imageGuardFile, err)
	}
	return nil
}

// loadConfig is config.Load with exactly env set: every variable of the
// configuration is unset first, so the developer's shell changes nothing.
func loadConfig(env map[string]string) (config.Config, error) {
	for _, s := range config.Settings() {
		if err := os.Unsetenv(s.Env); err != nil {
			return config.Config{}, err
		}
	}
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			return config.Config{}, err
		}
		defer os.Unsetenv(k)
	}
	return config.Load()
}

// serviceEnv is the env of the first container of a Knative Service's (or
// any Pod-template owner's) manifest; a valueFrom entry cannot be read.
func serviceEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var obj struct {
		Spec struct {
			Template struct {
				Spec corev1.PodSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", knativeService, err)
	}
	if len(obj.Spec.Template.Spec.Containers) == 0 {
		return nil, fmt.Errorf("%s has no container", knativeService)
	}
	env := map[string]string{}
	for _, e := range obj.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom != nil {
			return nil, fmt.Errorf("%s: %s comes from %v, which the generator cannot read", knativeService, e.Name, e.ValueFrom)
		}
		env[e.Name] = e.Value
	}
	return env, nil
}
