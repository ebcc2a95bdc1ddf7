package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// leftoverTimeout is how long the host stage waits for the kernel to finish
// killing the namespace's processes before it calls one a leftover.
const leftoverTimeout = 20 * time.Second

// IsolateOptions configures Isolate.
type IsolateOptions struct {
	// Prepare, if set, runs in the host stage with the work directory
	// before the namespaces exist, e.g. to compile binaries while the Go
	// module proxy is still reachable. An error ends the run.
	Prepare func(workDir string) error
	// Hosts are names that resolve to 127.0.0.1 inside the namespaces, such
	// as the registries' (containerd resolves them through /etc/hosts).
	Hosts []string
	// Keep leaves the work directory (configuration, logs) in place.
	Keep bool
	// Logf receives progress and leftover reports; nil discards them.
	Logf func(format string, args ...any)
}

// Isolate runs this test binary again, with the same arguments, as PID 1 of
// new PID, mount and network namespaces (the init stage, which starts the
// test stage), and returns its exit code. It must be called as root from the
// host stage. It creates the work directory (WorkDir in the test stage) and
// removes it at the end unless opts.Keep.
//
// Before, it removes what earlier runs that were killed left: their work
// directories and cgroups. After, it checks that nothing survived this run
// and returns an error naming each leftover: a process in the PID
// namespace, a mount of the run visible here, a cgroup it could not remove,
// a global sysctl that changed (which it restores).
func Isolate(opts IsolateOptions) (int, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	sweepCgroups(logf)
	sweepWorkDirs(logf)
	workDir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", workDirPrefix, os.Getpid()))
	if err != nil {
		return 1, fmt.Errorf("creating the work directory: %w", err)
	}
	if opts.Keep {
		defer logf("node: kept %s", workDir)
		if err := os.WriteFile(filepath.Join(workDir, keptMarker), nil, 0o644); err != nil {
			return 1, fmt.Errorf("marking the work directory kept: %w", err)
		}
	} else {
		defer func() {
			if err := os.RemoveAll(workDir); err != nil {
				logf("node: removing the work directory: %v", err)
			}
		}()
	}
	if opts.Prepare != nil {
		if err := opts.Prepare(workDir); err != nil {
			return 1, err
		}
	}
	cgroup := fmt.Sprintf("%s%d", cgroupPrefix, os.Getpid())
	if err := createCgroupRoot(cgroup); err != nil {
		return 1, errors.Join(err, removeCgroupRoot(cgroup, 0))
	}
	sysctls, err := readSysctls()
	if err != nil {
		return 1, errors.Join(err, removeCgroupRoot(cgroup, 0))
	}

	code, pidNS, err := runInit(workDir, cgroup, opts.Hosts)
	problems := []error{err}
	if pidNS != "" {
		problems = append(problems, waitNamespaceEmpty(pidNS, leftoverTimeout))
	}
	problems = append(problems,
		removeCgroupRoot(cgroup, leftoverTimeout),
		restoreSysctls(sysctls),
		checkMounts(workDir))
	reportMasks(filepath.Join(workDir, "sysctl"), sysctls, logf)
	return code, errors.Join(problems...)
}

// runInit starts this binary as the init stage in new PID, mount and
// network namespaces, passes SIGINT and SIGTERM on to it and waits for its
// end. It returns the exit code and the PID namespace (as /proc names it).
func runInit(workDir, cgroup string, hosts []string) (code int, pidNS string, err error) {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(),
		stageEnv+"=init",
		workDirEnv+"="+workDir,
		cgroupEnv+"="+cgroup,
		hostsEnv+"="+strings.Join(hosts, " "))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID,
		// If this process dies, init dies, and the kernel kills the rest.
		Pdeathsig: syscall.SIGKILL,
	}
	// Ctrl-C reaches init only through us: PID 1 of a namespace ignores
	// signals from outside it that it has no handler for.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 1, "", fmt.Errorf("starting the namespaces' init: %w", err)
	}
	pidNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", cmd.Process.Pid))
	// The exit code is in cmd.ProcessState; Wait's error adds nothing.
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-done:
			return cmd.ProcessState.ExitCode(), pidNS, nil
		}
	}
}

// workDirPrefix starts the name of each work directory, followed by the
// host stage's PID: a dead PID marks a leftover of a killed run.
const workDirPrefix = "mutator-node-"

// keptMarker marks a work directory kept on purpose, for debugging.
const keptMarker = ".kept"

// sweepWorkDirs removes the work directories of earlier runs whose host
// stage is gone, unless they were kept on purpose.
func sweepWorkDirs(logf func(string, ...any)) {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range matches {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), workDirPrefix), "-")
		if alive(pid) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, keptMarker)); err == nil {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("node: removing %s of an earlier run: %v", dir, err)
		} else {
			logf("node: removed %s of an earlier run", dir)
		}
	}
}

// alive reports whether pid (decimal) names a running process; anything
// unparsable counts as alive, so that it is left alone.
func alive(pid string) bool {
	n, err := strconv.Atoi(pid)
	return err != nil || syscall.Kill(n, 0) == nil
}

// waitNamespaceEmpty waits until no process is in the PID namespace pidNS
// (as /proc/PID/ns/pid names it). The kernel kills them all when the
// namespace's init exits, but each takes a moment to die.
func waitNamespaceEmpty(pidNS string, timeout time.Duration) error {
	if pidNS == "" {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		left := processesIn(pidNS)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still running in the test's PID namespace after %s: %s", timeout, strings.Join(left, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processesIn lists "PID (command)" for each process in pidNS.
func processesIn(pidNS string) []string {
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/pid")
	var left []string
	for _, p := range paths {
		if ns, err := os.Readlink(p); err == nil && ns == pidNS {
			dir := filepath.Dir(filepath.Dir(p))
			comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
			left = append(left, fmt.Sprintf("%s (%s)", filepath.Base(dir), strings.TrimSpace(string(comm))))
		}
	}
	return left
}

// privatePaths are where the init stage mounts tmpfs; none of their mounts
// may show in the host's mount table.
var privatePaths = []string{"/run", "/var/lib", "/var/log"}

// checkMounts reports any mount in this (the host's) mount namespace under
// workDir or the paths the cluster used privately: they all belonged to
// the test's mount namespace and must have gone with it.
func checkMounts(workDir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading the host's mount table: %w", err)
	}
	watched := []string{workDir, "/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/lib/cni", "/run/netns", "/var/log/pods"}
	var left []string
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mountPoint := fields[4]
		for _, w := range watched {
			if w != "" && (mountPoint == w || strings.HasPrefix(mountPoint, w+"/")) {
				left = append(left, mountPoint)
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("mounts of the test cluster left in the host's mount namespace: %s", strings.Join(left, ", "))
	}
	return nil
}
