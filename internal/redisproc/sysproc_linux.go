//go:build linux

package redisproc

import "syscall"

// sysProcAttr makes the kernel SIGKILL redis-server when the process that
// started it dies (e.g. a test timeout panic, where cleanups never run).
// Pdeathsig is tied to the OS thread that forked the child; Go only retires
// threads whose goroutine exits while locked with runtime.LockOSThread,
// which callers do not do around Start.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
