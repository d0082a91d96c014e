package auth

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openFile opens real, a path with its symlinks already resolved, so that
// a symlink put anywhere on it since (a directory swapped for a link to
// /proc, say) fails the open instead of being followed: openat2 with
// RESOLVE_NO_SYMLINKS (Linux 5.6). Where openat2 is missing or filtered,
// O_NOFOLLOW covers the last component only, and the file must still be
// the one Lstat saw. Either way the open file must be a regular file on a
// filesystem that is not one of the kernel's (procfs, sysfs and the like,
// wherever they are mounted). O_NONBLOCK keeps a FIFO from blocking the
// open.
func openFile(real string) (*os.File, error) {
	const flags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK
	var want os.FileInfo
	fd, err := unix.Openat2(unix.AT_FDCWD, real, &unix.OpenHow{Flags: flags, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		if want, err = os.Lstat(real); err != nil {
			return nil, err
		}
		fd, err = unix.Open(real, flags|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), real)
	if err := regularFile(f, want); err != nil {
		_ = f.Close()
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || kernelFS(int64(st.Type)) {
		_ = f.Close()
		return nil, errRefused
	}
	return f, nil
}

// kernelFS reports whether a filesystem type is one through which the
// kernel exposes processes, devices or its own state.
func kernelFS(t int64) bool {
	switch t {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC,
		unix.DEBUGFS_MAGIC, unix.TRACEFS_MAGIC, unix.SECURITYFS_MAGIC, unix.BPF_FS_MAGIC,
		unix.DEVPTS_SUPER_MAGIC, unix.EFIVARFS_MAGIC:
		return true
	}
	return false
}
