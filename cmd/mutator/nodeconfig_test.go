package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeConfigCommand: `mutator node-config` prints or writes the node's
// registry configuration for the environment's image settings, notes on
// standard error, and refuses bad input with a message.
func TestNodeConfigCommand(t *testing.T) {
	runCommandCases(t, []commandCase{
		{"containerd", []string{"node-config"}, map[string]string{"REGISTRY": "mirror.example.com/mirror", "IGNORED_REGISTRIES": "registry.k8s.io"}, 0,
			[]string{"# ==> <config_path>/_default/hosts.toml <==\n", `[host."https://mirror.example.com/v2/mirror"]`, "override_path = true",
				"# ==> <config_path>/registry.k8s.io/hosts.toml <==\n", "# ==> <config_path>/mirror.example.com/hosts.toml <=="},
			nil, []string{"note: Docker Hub official images"}},
		{"registry map with TLS", []string{"node-config", "--ca-file=/etc/mirror-ca.pem", "--ca-file", "/etc/other.pem"},
			map[string]string{"REGISTRY_MAP": "docker.io=harbor.example.com/dockerhub"}, 0,
			[]string{"# ==> <config_path>/docker.io/hosts.toml <==\n", `server = "https://registry-1.docker.io"`,
				`ca = ["/etc/mirror-ca.pem", "/etc/other.pem"]`},
			[]string{"_default"}, nil},
		{"crio", []string{"node-config", "--format=crio", "--hosts", "docker.io, quay.io"}, map[string]string{"REGISTRY": "mirror.example.com"}, 0,
			[]string{"[[registry]]\nprefix = \"docker.io\"", "[[registry]]\nprefix = \"quay.io\"", "[[registry.mirror]]\nlocation = \"mirror.example.com\""},
			[]string{"hosts.toml"}, []string{"note: CRI-O has no catch-all", "(docker.io, quay.io)"}},
		{"no fallback", []string{"node-config", "--no-fallback"}, map[string]string{"REGISTRY_MAP": "quay.io=harbor.example.com/quay"}, 0,
			[]string{`server = "https://harbor.example.com/v2/quay"`}, []string{"[host."}, nil},
		{"nothing configured", []string{"node-config"}, nil, 1, nil, []string{"hosts.toml"}, []string{"nothing to configure"}},
		{"invalid configuration", []string{"node-config"}, map[string]string{"REGISTRY_MAP": "quay.io"}, 1, nil, []string{"hosts.toml"}, []string{"REGISTRY_MAP"}},
		{"unknown format", []string{"node-config", "--format=docker"}, map[string]string{"REGISTRY": "m.example.com"}, 2, nil, nil, []string{`--format "docker" is not one of containerd, crio`}},
		{"directory with crio", []string{"node-config", "--format=crio", "--containerd-dir=/tmp/x"}, map[string]string{"REGISTRY": "m.example.com"}, 2, nil, nil, []string{"--containerd-dir writes containerd's files"}},
		{"plain HTTP with a CA", []string{"node-config", "--plain-http", "--ca-file=/ca.pem"}, map[string]string{"REGISTRY": "m.example.com"}, 1, nil, nil, []string{"plain HTTP mirrors take no TLS settings"}},
		{"bad host", []string{"node-config", "--hosts=quay"}, map[string]string{"REGISTRY": "m.example.com"}, 1, nil, nil, []string{`host "quay" is not a registry host`}},
		{"hosts without a catch-all", []string{"node-config", "--hosts=ghcr.io"}, map[string]string{"REGISTRY_MAP": "quay.io=m.example.com"}, 1, nil, nil, []string{"no catch-all"}},
		{"arguments", []string{"node-config", "extra"}, nil, 2, nil, nil, []string{`unexpected arguments ["extra"]`}},
		{"help", []string{"node-config", "-h"}, nil, 0, []string{"usage: mutator node-config [flags]", "-containerd-dir", "-ca-file", "-skip-verify", "-no-fallback"}, nil, nil},
	})
}

// TestNodeConfigDirectory: --containerd-dir writes DIR/<host>/hosts.toml,
// replacing what a previous run wrote and leaving other hosts' files alone.
func TestNodeConfigDirectory(t *testing.T) {
	clearImageEnv(t)
	t.Setenv("REGISTRY_MAP", "quay.io=harbor.example.com/quay,host.example.com:5000=harbor.example.com/h")
	dir := t.TempDir()
	other := filepath.Join(dir, "ghcr.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(other), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "quay.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "quay.io", "hosts.toml"), []byte("server = \"https://old\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"node-config", "--containerd-dir", dir, "--skip-verify"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, stderr.String())
	}
	for host, want := range map[string]string{
		"quay.io":               `[host."https://harbor.example.com/v2/quay"]`,
		"host.example.com:5000": `server = "https://host.example.com:5000"`,
		"harbor.example.com":    "skip_verify = true",
		"ghcr.io":               "# mine\n",
	} {
		path := filepath.Join(dir, host, "hosts.toml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("reading %s: %v", path, err)
			continue
		}
		if !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %q:\n%s", path, want, data)
		}
		if strings.Contains(string(data), "https://old") {
			t.Errorf("%s kept the old content:\n%s", path, data)
		}
		if host != "ghcr.io" && !strings.Contains(stdout.String(), "wrote "+path+"\n") {
			t.Errorf("stdout does not list %s:\n%s", path, stdout.String())
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v, want 0644", path, fi.Mode().Perm())
		}
	}
	entries, err := filepath.Glob(filepath.Join(dir, "*", ".hosts.toml-*"))
	if err != nil || len(entries) > 0 {
		t.Errorf("temporary files left behind: %v %v", entries, err)
	}
}

// clearImageEnv unsets the image settings for the test (restored after it).
func clearImageEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"REGISTRY", "REGISTRY_MAP", "IGNORED_REGISTRIES"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}
