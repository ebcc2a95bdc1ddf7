//go:build !linux

package e2e

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; TestMain stops the
// mutators.
func sysProcAttr() *syscall.SysProcAttr { return nil }
