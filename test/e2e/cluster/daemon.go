package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Daemon is one server run as a direct child of the test binary, so its pid
// is the server's pid (no shell in between) and signals reach it. The
// end-to-end cluster and the real-node harness (test/cluster/node) run every
// component as one.
type Daemon struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	waitErr error         // valid after done is closed
}

// StartDaemon starts path with args and env (nil: this process's), its
// stdout and stderr going to logPath. It is not tied to a context: it lives
// until Stop, because tests typically cancel their context before their
// cleanups (and so Stop) run. On Linux the kernel kills it if the test
// binary dies, so a crashed test leaves no server behind.
func StartDaemon(name, path, logPath string, env []string, args ...string) (*Daemon, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	// The child gets its own copy of the descriptor; ours is not needed after Start.
	defer logFile.Close()

	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	d := &Daemon{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// Name is the name the daemon was started with, for messages.
func (d *Daemon) Name() string { return d.name }

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// LogPath is the file its output goes to.
func (d *Daemon) LogPath() string { return d.logPath }

// Exited reports whether the process has ended, and how.
func (d *Daemon) Exited() (bool, error) {
	select {
	case <-d.done:
		return true, d.waitErr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, waits up to grace for a clean exit, then SIGKILLs. It
// returns once the process is reaped, so its pid is gone when Stop returns.
// A nil Daemon is a no-op.
func (d *Daemon) Stop(grace time.Duration) error {
	if d == nil {
		return nil
	}
	if done, _ := d.Exited(); done {
		return nil
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sending SIGTERM to %s: %w", d.name, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-d.done:
		return nil
	case <-timer.C:
	}
	if err := d.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", d.name, err)
	}
	<-d.done
	return fmt.Errorf("%s ignored SIGTERM for %s and was killed", d.name, grace)
}

// Tail returns about the last n lines of the log, for error messages.
func (d *Daemon) Tail(n int) string {
	data, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s log: %v)", d.name, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
