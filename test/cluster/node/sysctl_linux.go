package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// kubeletSysctls are the machine-wide settings the kubelet changes at start
// (setupKernelTunables in pkg/kubelet/cm). They are not namespaced, so the
// init stage hides each behind a file of its own; the host stage checks
// that they are unchanged afterwards.
var kubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// readSysctls returns the current value of each kubelet sysctl.
func readSysctls() (map[string]string, error) {
	values := make(map[string]string, len(kubeletSysctls))
	for _, name := range kubeletSysctls {
		data, err := os.ReadFile(filepath.Join("/proc/sys", name))
		if err != nil {
			return nil, fmt.Errorf("reading sysctl %s: %w", name, err)
		}
		values[name] = strings.TrimSpace(string(data))
	}
	return values, nil
}

// maskSysctls bind-mounts over each kubelet sysctl a file in dir holding its
// current value: the kubelet reads and writes the file, and the machine's
// setting stays as it was. The files show what the kubelet wrote.
func maskSysctls(dir string) error {
	values, err := readSysctls()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating sysctl mask directory: %w", err)
	}
	for name, value := range values {
		file := filepath.Join(dir, strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(file, []byte(value+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing sysctl mask: %w", err)
		}
		if err := syscall.Mount(file, filepath.Join("/proc/sys", name), "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("masking sysctl %s: %w", name, err)
		}
	}
	return nil
}

// restoreSysctls puts back any kubelet sysctl that differs from before and
// reports it: with the masks in place none should.
func restoreSysctls(before map[string]string) error {
	after, err := readSysctls()
	if err != nil {
		return err
	}
	var problems []error
	for name, want := range before {
		if got := after[name]; got != want {
			problems = append(problems, fmt.Errorf("sysctl %s changed from %s to %s during the run", name, want, got))
			if err := os.WriteFile(filepath.Join("/proc/sys", name), []byte(want), 0o644); err != nil {
				problems = append(problems, fmt.Errorf("restoring sysctl %s: %w", name, err))
			}
		}
	}
	return errors.Join(problems...)
}

// reportMasks logs what the kubelet wrote into each sysctl mask in dir
// that the machine kept as it was (before).
func reportMasks(dir string, before map[string]string, logf func(string, ...any)) {
	for _, name := range kubeletSysctls {
		data, err := os.ReadFile(filepath.Join(dir, strings.ReplaceAll(name, "/", ".")))
		if err != nil {
			continue
		}
		if got := strings.TrimSpace(string(data)); got != before[name] {
			logf("node: the kubelet set %s to %s in the test's namespaces; the machine kept %s", name, got, before[name])
		}
	}
}
