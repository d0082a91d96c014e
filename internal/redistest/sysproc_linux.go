//go:build linux

package redistest

import "syscall"

// sysProcAttr makes the kernel SIGKILL redis-server when the test binary dies
// (e.g. a test timeout panic, where cleanups never run). Pdeathsig is tied to
// the OS thread that forked the child; Go only retires threads whose goroutine
// exits while locked with runtime.LockOSThread, which test code does not do
// around Start.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
