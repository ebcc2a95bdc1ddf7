package node

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// InitMain is the init stage: PID 1 of the namespaces Isolate created. It
// prepares mounts and network, runs the test stage and returns its exit
// code; the caller must exit with it, which makes the kernel kill whatever
// the test stage left running.
func InitMain() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "node init: %v\n", err)
		return 1
	}
	if err := setupMounts(WorkDir(), strings.Fields(os.Getenv(hostsEnv))); err != nil {
		return fail(err)
	}
	if err := setupNetwork(); err != nil {
		return fail(err)
	}

	// Notify before the start, so that no SIGCHLD is missed.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGINT, syscall.SIGTERM)
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), stageEnv+"=test")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("starting the test stage: %w", err))
	}
	// cmd.Wait is never called: the reaper below collects the test stage
	// along with every orphan (containerd's shims end up here).
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = cmd.Process.Signal(sig)
			continue
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if pid <= 0 {
				break
			}
			if pid == cmd.Process.Pid {
				if status.Signaled() {
					return 128 + int(status.Signal())
				}
				return status.ExitStatus()
			}
		}
	}
	return 1 // unreachable: sigs is never closed
}

// setupMounts makes this mount namespace private, mounts /proc for the new
// PID namespace, tmpfs over privatePaths (the kubelet, containerd and the
// CNI plugins write fixed paths there), the sysctl masks and an /etc/hosts
// resolving hosts to 127.0.0.1.
func setupMounts(workDir string, hosts []string) error {
	// Without this, mounts below would propagate to the host's namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	for _, dir := range privatePaths {
		if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=755"); err != nil {
			return fmt.Errorf("mounting tmpfs on %s: %w", dir, err)
		}
	}
	if err := maskSysctls(filepath.Join(workDir, "sysctl")); err != nil {
		return err
	}
	hostsFile := filepath.Join(workDir, "hosts")
	content := "127.0.0.1 localhost\n::1 localhost\n"
	if len(hosts) > 0 {
		content += "127.0.0.1 " + strings.Join(hosts, " ") + "\n"
	}
	if err := os.WriteFile(hostsFile, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing hosts file: %w", err)
	}
	if err := syscall.Mount(hostsFile, "/etc/hosts", "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting /etc/hosts: %w", err)
	}
	return nil
}

// setupNetwork brings loopback up and gives it the node IP too: the
// kubelet refuses a loopback node IP, and a dummy interface needs a kernel
// module these machines lack. Service addresses are routed to loopback:
// without any route, connecting to one (the API server calling a webhook's
// Service) fails before kube-proxy's rules can rewrite the destination to a
// Pod's. Nothing else exists, so there is no route out.
func setupNetwork() error {
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", NodeIP + "/32", "dev", "lo"},
		{"route", "add", ServiceCIDR, "dev", "lo", "src", NodeIP},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}
