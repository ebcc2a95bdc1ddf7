package e2e

import "syscall"

// sysProcAttr makes the kernel SIGKILL a mutator when the test binary dies
// (panic, -timeout), so none outlives the run; see cluster.sysProcAttr.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
