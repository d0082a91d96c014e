//go:build !linux

package auth

import "os"

// openFile opens real, a path with its symlinks already resolved. Outside
// Linux there is no openat2: the open file must be a regular file and the
// one Lstat saw, which catches the last component swapped for a symlink or
// a device, not a directory on the way.
func openFile(real string) (*os.File, error) {
	want, err := os.Lstat(real)
	if err != nil {
		return nil, err
	}
	if !want.Mode().IsRegular() {
		return nil, errRefused // before a FIFO could block the open
	}
	f, err := os.Open(real)
	if err != nil {
		return nil, err
	}
	if err := regularFile(f, want); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}
