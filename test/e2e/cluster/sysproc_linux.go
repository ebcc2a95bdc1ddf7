package cluster

import "syscall"

// sysProcAttr makes the kernel SIGKILL a server when the test binary dies
// (panic, timeout, kill -9), so no etcd or kube-apiserver outlives its test.
// Strictly, Pdeathsig fires when the forking OS thread exits; the Go runtime
// only retires a thread when a goroutine exits while locked to it
// (runtime.LockOSThread), which test code does not normally do.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
