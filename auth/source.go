package auth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// refusedRoots are the directories a file: value may never reach: through
// them a credential would send callq's own process (its environment holds
// CALLQ_SECRET_KEY), the kernel's state or a device upstream.
var refusedRoots = []string{"/proc", "/sys", "/dev"}

// SourceDirs restricts file: credential values to files inside these
// directories (CALLQ_SOURCE_DIRS), after symlinks are resolved. Empty, the
// default: any file outside /proc, /sys and /dev. Each entry is an absolute
// path; a file is inside it when its path, as written, is the directory or
// below it at a path boundary ("/run/secrets" holds "/run/secrets/gh", not
// "/run/secrets2/gh").
type SourceDirs []string

// ParseSourceDirs reads CALLQ_SOURCE_DIRS: absolute directories separated
// by commas or colons. An empty string is no restriction.
func ParseSourceDirs(s string) (SourceDirs, error) {
	var dirs SourceDirs
	for _, dir := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ':' }) {
		if dir = strings.TrimSpace(dir); dir != "" {
			dirs = append(dirs, dir)
		}
	}
	if err := dirs.validate(); err != nil {
		return nil, err
	}
	return dirs.clean(), nil
}

// clean returns a copy of d, each entry cleaned.
func (d SourceDirs) clean() SourceDirs {
	if len(d) == 0 {
		return nil
	}
	out := make(SourceDirs, len(d))
	for i, dir := range d {
		out[i] = filepath.Clean(dir)
	}
	return out
}

func (d SourceDirs) validate() error {
	for _, dir := range d {
		switch {
		case !filepath.IsAbs(dir):
			return fmt.Errorf("source directory %q is not an absolute path", dir)
		case refusedRoot(filepath.Clean(dir)) != "":
			return fmt.Errorf("source directory %q is under %s, which callq never reads", dir, refusedRoot(filepath.Clean(dir)))
		}
	}
	return nil
}

// within reports whether the clean path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// refusedRoot returns the refused directory the clean path is in, or "".
func refusedRoot(path string) string {
	for _, root := range refusedRoots {
		if within(path, root) {
			return root
		}
	}
	return ""
}

// checkPath refuses a clean absolute path that is, as written, under /proc,
// /sys or /dev, or outside d. The error may say why: it depends on the
// path alone, not on the filesystem.
func (d SourceDirs) checkPath(path string) error {
	if root := refusedRoot(path); root != "" {
		return fmt.Errorf("file path %s is under %s: callq never reads credentials from /proc, /sys or /dev", path, root)
	}
	if len(d) > 0 && !d.contain(path) {
		return fmt.Errorf("file path %s is not inside the directories the operator allows (CALLQ_SOURCE_DIRS: %s)", path, strings.Join(d, ", "))
	}
	return nil
}

func (d SourceDirs) contain(path string) bool {
	for _, dir := range d.clean() {
		if within(path, dir) {
			return true
		}
	}
	return false
}

// containReal reports whether real, a path with its symlinks resolved, is
// inside one of the directories with theirs resolved (a directory that
// cannot be resolved, not there on this host, holds nothing); any path when
// there are none.
func (d SourceDirs) containReal(real string) bool {
	if len(d) == 0 {
		return true
	}
	for _, dir := range d {
		if r, err := filepath.EvalSymlinks(dir); err == nil && within(real, filepath.Clean(r)) {
			return true
		}
	}
	return false
}

// readSecretFile reads a file: value under the rules of dirs. The path is
// cleaned and checked as written (an error then may say why), then its
// symlinks are resolved and the real path checked again, and the real path
// is opened so that nothing on it may be a symlink any more (openFile);
// the file must be a regular file outside the kernel's filesystems. Every
// failure from there on gives one message, so that the error does not tell
// whether the path exists, is a directory, is refused or is empty.
func readSecretFile(path string, dirs SourceDirs) (string, error) {
	path = filepath.Clean(path)
	if err := dirs.checkPath(path); err != nil {
		return "", err
	}
	secret, err := readCheckedFile(path, dirs)
	if err != nil {
		inside := ""
		if len(dirs) > 0 {
			inside = ", inside CALLQ_SOURCE_DIRS"
		}
		return "", fmt.Errorf("secret file %s cannot be read: a file: value must be a readable regular file of 1 to %d bytes whose real path (symlinks resolved) is outside /proc, /sys and /dev%s", path, maxFileValueBytes, inside)
	}
	return secret, nil
}

// errRefused is any reason readCheckedFile does not read a file; its
// callers do not tell them apart.
var errRefused = errors.New("refused")

func readCheckedFile(path string, dirs SourceDirs) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	if real = filepath.Clean(real); refusedRoot(real) != "" || !dirs.containReal(real) {
		return "", errRefused
	}
	f, err := openFile(real)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileValueBytes+1))
	if err != nil {
		return "", err
	}
	secret := strings.TrimRight(string(b), "\r\n")
	if len(b) > maxFileValueBytes || secret == "" {
		return "", errRefused
	}
	return secret, nil
}

// regularFile checks, on the open file, what no path check can race: that
// it is a regular file (not a device, FIFO or directory), and the same file
// as want, the real path's Lstat before it was opened.
func regularFile(f *os.File, want os.FileInfo) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || (want != nil && !os.SameFile(fi, want)) {
		return errRefused
	}
	return nil
}
