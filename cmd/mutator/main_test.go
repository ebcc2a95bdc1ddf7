package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		stdin      string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{"version", []string{"version"}, nil, "", 0, []string{"mutator "}, nil},
		{"--version", []string{"--version"}, nil, "", 0, []string{"mutator "}, nil},
		{"help", []string{"help"}, nil, "", 0, []string{"mutator mutate -f FILE", "mutator version"}, nil},
		{"-h", []string{"-h"}, nil, "", 0, []string{"usage:"}, nil},
		{"mutate --help", []string{"mutate", "--help"}, nil, "", 0, []string{"usage: mutator mutate -f FILE", "-f string"}, nil},
		{"serve -h", []string{"serve", "-h"}, nil, "", 0, []string{"usage: mutator serve", "-kubeconfig", "WEBHOOK_SECRET_NAME"}, nil},
		{"unknown command", []string{"explode"}, nil, "", 2, nil, []string{`unknown command "explode"`}},
		{"mutate without -f", []string{"mutate"}, nil, "", 2, nil, []string{"-f FILE is required"}},
		{"mutate with an unknown flag", []string{"mutate", "-x"}, nil, "", 2, nil, []string{"flag provided but not defined: -x"}},
		{"mutate with a bad configuration", []string{"mutate", "-f", "-"},
			map[string]string{"IMAGE_PULL_SECRET_APPEND": "yes", "MODE": "x"}, "", 1, nil,
			[]string{`IMAGE_PULL_SECRET_APPEND: "yes" is not a boolean (true or false)`}},
		{"mutate from stdin", []string{"mutate", "-f", "-"}, map[string]string{"REGISTRY": "registry.example.com/mirror"},
			"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: nginx\n", 0,
			[]string{"image: registry.example.com/mirror/nginx"}, []string{"1 of 1 documents changed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"REGISTRY", "IMAGE_PULL_SECRET_APPEND", "MODE"} {
				t.Setenv(k, "") // restored after the test
				os.Unsetenv(k)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

// commandCase is one run of a command: its arguments and environment, and
// what its exit status, standard output and standard error must (or must
// not) hold.
type commandCase struct {
	name       string
	args       []string
	env        map[string]string
	wantCode   int
	wantStdout []string
	notStdout  []string
	wantStderr []string
}

// runCommandCases runs each case on an environment cleared of the
// variables any case sets.
func runCommandCases(t *testing.T, tests []commandCase) {
	t.Helper()
	var vars []string
	for _, tt := range tests {
		for k := range tt.env {
			vars = append(vars, k)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range vars {
				t.Setenv(k, "") // restored after the test
				os.Unsetenv(k)
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, strings.NewReader(""), &stdout, &stderr); code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%.2000s", w, stdout.String())
				}
			}
			for _, w := range tt.notStdout {
				if strings.Contains(stdout.String(), w) {
					t.Errorf("stdout has %q:\n%.2000s", w, stdout.String())
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}
