package auth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cannotRead is the one error for a file: value that cannot be read, with
// no CALLQ_SOURCE_DIRS.
func cannotRead(path string) string {
	return "secret file " + path + " cannot be read: a file: value must be a readable regular file of 1 to 65536 bytes whose real path (symlinks resolved) is outside /proc, /sys and /dev"
}

// hostileFiles are file: paths that name, or lead to, callq's own process
// (its environment holds CALLQ_SECRET_KEY), the kernel or devices: each is
// refused, at put time when the path itself says so, at read time always.
// The symlinks live in dir.
func hostileFiles(t *testing.T, dir string) (lexical, linked []string) {
	t.Helper()
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.Symlink(target, p))
		return p
	}
	lexical = []string{
		"/proc/self/environ",
		"/proc/./self/environ",
		"//proc/self/environ",
		"/proc//self/environ",
		"/proc/self/../self/environ",
		"/tmp/../proc/self/environ",
		"/proc/thread-self/environ",
		"/proc/1/environ",
		"/proc/self/root/proc/self/environ",
		"/proc/self/fd/0",
		"/proc",
		"/sys/class/net/lo/address",
		"/sys/kernel/../kernel/uevent_seqnum",
		"/dev/stdin",
		"/dev/zero",
		"/dev/fd/0",
		"/dev/shm/x",
	}
	linked = []string{
		link("environ", "/proc/self/environ"),
		link("self/x", "/proc/self") + "/environ",
		link("thread", "/proc/thread-self/environ"),
		link("chain-a", link("chain-b", "/proc/self/environ")),
		link("relative", strings.Repeat("../", strings.Count(dir, "/")+2)+"proc/self/environ"),
		link("procdir", "/proc") + "/self/environ",
		link("sys", "/sys/class/net/lo/address"),
		link("zero", "/dev/zero"),
		link("stdin", "/dev/stdin"),
	}
	return lexical, linked
}

func TestFileSourceRefusesSystemPaths(t *testing.T) {
	t.Parallel()
	environ, err := os.ReadFile("/proc/self/environ")
	require.NoError(t, err)
	require.NotEmpty(t, environ)

	lexical, linked := hostileFiles(t, t.TempDir())
	for _, path := range append(lexical, linked...) {
		got, err := Value{Kind: KindFile, Ref: path}.Resolve(nil, nil, nil)
		require.Error(t, err, "file:%s was read (%d bytes)", path, len(got))
		require.Empty(t, got, path)
		for _, entry := range strings.Split(string(environ), "\x00") {
			if len(entry) > 8 {
				require.NotContains(t, err.Error(), entry, path)
			}
		}
	}

	// The same paths are refused when put, where the path itself says so.
	for _, path := range lexical {
		_, err := ParseValue(nil, "file:"+path, nil)
		require.ErrorContains(t, err, "callq never reads", path)
	}
	// A symlink's target is only known when the file is read.
	for _, path := range linked {
		_, err := ParseValue(nil, "file:"+path, nil)
		require.NoError(t, err, path)
	}
	// Names that only begin like a refused directory are fine.
	for _, path := range []string{"/procfoo/x", "/system/x", "/devices/x", "/run/proc/x"} {
		_, err := ParseValue(nil, "file:"+path, nil)
		require.NoError(t, err, path)
	}
}

// Whatever keeps a file: value from being read, the error is the same, so
// that it does not tell whether the path exists.
func TestFileSourceErrorsDoNotRevealExistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		return p
	}
	loop := filepath.Join(dir, "loop")
	require.NoError(t, os.Symlink(loop, loop))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))

	paths := map[string]string{
		"missing":          filepath.Join(dir, "missing"),
		"missing dir":      filepath.Join(dir, "nodir", "token"),
		"under a file":     file("plain", "x", 0o600) + "/token",
		"directory":        dir,
		"empty":            file("empty", "\n", 0o600),
		"too large":        file("large", strings.Repeat("x", maxFileValueBytes+1), 0o600),
		"symlink loop":     loop,
		"fifo":             fifo,
		"link to /proc":    filepath.Join(dir, "environ"),
		"dangling symlink": filepath.Join(dir, "dangling"),
	}
	require.NoError(t, os.Symlink("/proc/self/environ", paths["link to /proc"]))
	require.NoError(t, os.Symlink(filepath.Join(dir, "nothing"), paths["dangling symlink"]))
	if os.Geteuid() != 0 { // root reads a file of mode 0
		paths["unreadable"] = file("unreadable", "secret", 0)
	}

	var want string
	for what, path := range paths {
		_, err := Value{Kind: KindFile, Ref: path}.Resolve(nil, nil, nil)
		require.Error(t, err, what)
		msg := strings.ReplaceAll(err.Error(), path, "PATH")
		if want == "" {
			want = msg
		}
		require.Equal(t, want, msg, "the error for a %s differs", what)
	}
}

func TestParseSourceDirs(t *testing.T) {
	t.Parallel()
	dirs, err := ParseSourceDirs(" /run/secrets/ ,/etc/callq:/var/lib/../lib/x,,")
	require.NoError(t, err)
	require.Equal(t, SourceDirs{"/run/secrets", "/etc/callq", "/var/lib/x"}, dirs)

	dirs, err = ParseSourceDirs("")
	require.NoError(t, err)
	require.Empty(t, dirs)

	for raw, want := range map[string]string{
		"run/secrets":          `source directory "run/secrets" is not an absolute path`,
		"/run/secrets,./x":     `source directory "./x" is not an absolute path`,
		"/proc/self":           `source directory "/proc/self" is under /proc`,
		"/run:/dev/../dev/shm": `source directory "/dev/../dev/shm" is under /dev`,
	} {
		_, err := ParseSourceDirs(raw)
		require.ErrorContains(t, err, want, raw)
	}
}

// With CALLQ_SOURCE_DIRS, a file: value reads files inside those
// directories only, judged on the path as written and, at read time, on
// the path with its symlinks resolved.
func TestFileSourceDirs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	allowed := filepath.Join(root, "secrets")
	outside := filepath.Join(root, "secrets2") // shares a prefix, not the directory
	for _, d := range []string{allowed, outside} {
		require.NoError(t, os.Mkdir(d, 0o700))
	}
	write := func(p, content string) string {
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	inside := write(filepath.Join(allowed, "token"), "inside-secret\n")
	other := write(filepath.Join(outside, "token"), "outside-secret\n")
	escape := filepath.Join(allowed, "escape")
	require.NoError(t, os.Symlink(other, escape))
	// The directory as configured may itself be a symlink.
	alias := filepath.Join(root, "alias")
	require.NoError(t, os.Symlink(allowed, alias))
	dirs, err := ParseSourceDirs(alias)
	require.NoError(t, err)

	resolve := func(p string) (string, error) { return Value{Kind: KindFile, Ref: p}.Resolve(nil, nil, dirs) }

	got, err := resolve(filepath.Join(alias, "token"))
	require.NoError(t, err)
	require.Equal(t, "inside-secret", got)

	// Outside as written: refused, and the message may say so.
	for _, p := range []string{inside, other, filepath.Join(root, "secrets2/token")} {
		_, err = resolve(p)
		require.EqualError(t, err, "file path "+p+" is not inside the directories the operator allows (CALLQ_SOURCE_DIRS: "+alias+")")
	}
	// Inside as written, outside once resolved: the one message.
	_, err = resolve(filepath.Join(alias, "escape"))
	require.EqualError(t, err, "secret file "+filepath.Join(alias, "escape")+" cannot be read: a file: value must be a readable regular file of 1 to 65536 bytes whose real path (symlinks resolved) is outside /proc, /sys and /dev, inside CALLQ_SOURCE_DIRS")
	missing := filepath.Join(alias, "missing")
	_, errMissing := resolve(missing)
	require.Equal(t, strings.ReplaceAll(err.Error(), filepath.Join(alias, "escape"), "P"), strings.ReplaceAll(errMissing.Error(), missing, "P"))

	// A store with SourceDirs refuses such a path when it is put.
	_, rdb := testRedis(t)
	store, err := NewStore(rdb, &StoreConfig{Keyring: testKeyring(t, "k1"), SourceDirs: dirs})
	require.NoError(t, err)
	require.Equal(t, dirs, store.SourceDirs())
	_, err = store.Put(t.Context(), "acme", "gh", "github", map[string]string{"token": "file:" + other})
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "fields.token", fe.Field)
	require.Contains(t, fe.Message, "CALLQ_SOURCE_DIRS")
	_, err = store.Put(t.Context(), "acme", "gh", "github", map[string]string{"token": "file:" + filepath.Join(alias, "token")})
	require.NoError(t, err)

	_, err = NewStore(rdb, &StoreConfig{Keyring: testKeyring(t, "k1"), SourceDirs: SourceDirs{"relative"}})
	require.ErrorContains(t, err, "StoreConfig.SourceDirs")
}

// Put refuses a file: value under /proc, /sys or /dev with the field's name.
func TestStorePutRefusesSystemFiles(t *testing.T) {
	t.Parallel()
	_, rdb := testRedis(t)
	store, err := NewStore(rdb, &StoreConfig{Keyring: testKeyring(t, "k1")})
	require.NoError(t, err)
	lexical, _ := hostileFiles(t, t.TempDir())
	for _, p := range lexical {
		_, err := store.Put(t.Context(), "acme", "gh", "github", map[string]string{"token": "file:" + p})
		var fe *FieldError
		require.ErrorAs(t, err, &fe, p)
		require.Equal(t, "fields.token", fe.Field)
		require.Contains(t, fe.Message, "callq never reads credentials from /proc, /sys or /dev")
	}
}

// openFile opens only what its path checks let through, even if the path
// changes between the check and the open: a directory on the resolved path
// swapped for a symlink, or a kernel file reached without one.
func TestFileSourceOpenChecksTheOpenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o700))
	real := filepath.Join(sub, "environ")
	require.NoError(t, os.WriteFile(real, []byte("fine"), 0o600))
	f, err := openFile(real)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	// The race, played out: sub is checked, then replaced by a symlink to
	// a directory outside the allowed ones.
	elsewhere := filepath.Join(dir, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(elsewhere, "environ"), []byte("not this one"), 0o600))
	require.NoError(t, os.Rename(sub, sub+".old"))
	require.NoError(t, os.Symlink(elsewhere, sub))
	_, err = openFile(real)
	require.Error(t, err, "a symlink swapped in after the check was followed")

	// procfs without a symlink on the way, a device, a FIFO (which must not
	// block), a directory: not regular files of an ordinary filesystem.
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	for _, p := range []string{fmt.Sprintf("/proc/%d/environ", os.Getpid()), "/dev/null", fifo, dir} {
		f, err := openFile(p)
		if err == nil {
			_ = f.Close()
		}
		require.Error(t, err, p)
	}
}

// An OAuth2 client_secret given as file: in the catalog follows the same
// rules: refused at load when its path is under /proc, /sys or /dev, and at
// use when its real path is, or is outside the store's SourceDirs.
func TestClientSecretFileSource(t *testing.T) {
	t.Parallel()
	spec := func(secret string) *Spec {
		return &Spec{Type: TypeOAuth2, TokenURL: "https://idp.example/token", ClientID: "callq", ClientSecret: secret}
	}
	var fe *FieldError
	require.ErrorAs(t, spec("file:/proc/self/environ").Validate(), &fe)
	require.Equal(t, "auth.client_secret", fe.Field)
	require.Contains(t, fe.Message, "callq never reads")

	dir := t.TempDir()
	link := filepath.Join(dir, "environ")
	require.NoError(t, os.Symlink("/proc/self/environ", link))
	require.NoError(t, spec("file:"+link).Validate())
	got, err := resolveSecretSource("file:"+link, nil)
	require.EqualError(t, err, cannotRead(link))
	require.Empty(t, got)

	ok := filepath.Join(dir, "client-secret")
	require.NoError(t, os.WriteFile(ok, []byte("cs-value\n"), 0o600))
	got, err = resolveSecretSource("file:"+ok, nil)
	require.NoError(t, err)
	require.Equal(t, "cs-value", got)
	_, err = resolveSecretSource("file:"+ok, SourceDirs{"/run/secrets"})
	require.ErrorContains(t, err, "CALLQ_SOURCE_DIRS")
}

// OAuth reads a catalog client_secret file under its store's SourceDirs.
func TestOAuthClientSecretUnderSourceDirs(t *testing.T) {
	parallelOAuth(t)
	e := newOAuthEnv(t, nil)
	e.putCredential(t, time.Now().Add(-time.Minute))
	dir := t.TempDir()
	path := filepath.Join(dir, "client_secret")
	require.NoError(t, os.WriteFile(path, []byte(oauthClientSecret+"\n"), 0o600))
	spec := *e.spec
	spec.ClientSecret = "file:" + path

	token := func(dirs SourceDirs) (Secrets, error) {
		store, err := NewStore(e.workers[0].rdb, &StoreConfig{Keyring: e.keyring, SourceDirs: dirs})
		require.NoError(t, err)
		o, err := NewOAuth(e.workers[0].rdb, &OAuthConfig{Store: store, Keyring: e.keyring})
		require.NoError(t, err)
		return o.Token(t.Context(), oauthTenant, oauthIntegration, &spec, e.credential(t))
	}
	_, err := token(SourceDirs{"/run/callq-nothing-here"})
	require.ErrorIs(t, err, ErrOAuthConfig)
	require.ErrorContains(t, err, "CALLQ_SOURCE_DIRS")
	require.EqualValues(t, 0, e.ts.requests.Load(), "no token request without the client secret")

	secrets, err := token(SourceDirs{dir})
	require.NoError(t, err)
	require.Equal(t, oauthClientSecret, secrets[FieldClientSecret])
	require.EqualValues(t, 1, e.ts.requests.Load())
}

// Directories that are not there hold nothing: they do not lift the
// restriction at read time.
func TestFileSourceDirsMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
	require.False(t, SourceDirs{"/nonexistent/callq"}.containReal(path))
	require.True(t, SourceDirs{"/nonexistent/callq", filepath.Dir(path)}.containReal(path))
	require.True(t, SourceDirs(nil).containReal(path))
}
