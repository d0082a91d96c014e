package main

// The image without a container engine: deploy/Dockerfile's go build line is
// read from the file and run as written (so the test's flags cannot drift
// from the image's), and the binary it makes runs in an empty root, as
// distroless's nonroot user, with nothing writable: what the image and a
// Kubernetes pod with readOnlyRootFilesystem give it.

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/callq/callq/auth"
	"github.com/callq/callq/internal/redistest"
)

const (
	// imageVersion is the VERSION build argument the test builds with.
	imageVersion = "v0.0.0-imagetest"
	// imageCommit and imageCommitTime are its VCS_REF and VCS_TIME.
	imageCommit     = "0123456789abcdef0123456789abcdef01234567"
	imageCommitTime = "2026-11-26T12:34:56+00:00"
	// nonrootUID is distroless's nonroot user and group.
	nonrootUID = 65532
)

// repoRoot is the module's root directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// requireRoot skips a test that needs root (chroot, another user), or fails
// it under CI=true, where a skip would hide it.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, for chroot and setuid (CI=true, so this is a failure, not a skip)")
	}
	t.Skip("needs root, for chroot and setuid")
}

// dockerfile is what the tests read of deploy/Dockerfile.
type dockerfile struct {
	froms       []string // FROM lines' arguments, in order
	user        string   // the last USER
	entrypoint  string   // ENTRYPOINT's argument, as written
	copies      []string // COPY lines' arguments
	downloadRun []string // the RUN of go mod download, its words
	buildMounts []string // the go build RUN's --mount flags
	buildEnv    []string // NAME=value words before go build
	buildArgs   []string // go build's arguments, after "go"
}

// parseDockerfile reads a Dockerfile's instructions (continuation lines
// joined, comments dropped) and the words of its go build RUN, with ARGs
// expanded: vars first, then the ARG defaults. An unknown variable fails.
func parseDockerfile(t testing.TB, path string, vars map[string]string) *dockerfile {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var instrs []string
	var cur strings.Builder
	for l := range strings.SplitSeq(string(data), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if body, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		instrs = append(instrs, cur.String())
		cur.Reset()
	}
	require.Zero(t, cur.Len(), "the Dockerfile ends in a continuation")

	d := &dockerfile{}
	argDefaults := map[string]string{}
	expand := func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		if v, ok := argDefaults[name]; ok {
			return v
		}
		t.Fatalf("the Dockerfile uses $%s, which no ARG declares", name)
		return ""
	}
	for _, in := range instrs {
		kw, rest, _ := strings.Cut(in, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(kw) {
		case "FROM":
			d.froms = append(d.froms, rest)
		case "USER":
			d.user = rest
		case "ENTRYPOINT":
			d.entrypoint = rest
		case "COPY":
			d.copies = append(d.copies, rest)
		case "ARG":
			for _, w := range strings.Fields(rest) {
				name, def, _ := strings.Cut(w, "=")
				argDefaults[name] = def
			}
		case "RUN":
			words := shellWords(t, rest, expand)
			var mounts []string
			for len(words) > 0 && strings.HasPrefix(words[0], "--mount=") {
				mounts = append(mounts, words[0])
				words = words[1:]
			}
			var env []string
			for len(words) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[0]) {
				env = append(env, words[0])
				words = words[1:]
			}
			switch {
			case len(words) >= 2 && words[0] == "go" && words[1] == "build":
				require.Nil(t, d.buildArgs, "two go build RUNs")
				d.buildMounts, d.buildEnv, d.buildArgs = mounts, env, words[1:]
			case slices.Equal(words, []string{"go", "mod", "download"}):
				d.downloadRun = append(mounts, words...)
			}
		}
	}
	require.NotNil(t, d.buildArgs, "%s has no RUN ... go build", path)
	return d
}

// shellWords splits a shell command line into words: quotes, backslashes
// and $NAME or ${NAME} (through expand) as sh reads them; nothing else of
// sh (no globs, no command substitution, which the test refuses).
func shellWords(t testing.TB, s string, expand func(string) string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == '\'':
			if r == '\'' {
				quote = 0
			} else {
				w.WriteRune(r)
			}
		case r == '$' && quote != '\'':
			inWord = true
			j := i + 1
			var name string
			if j < len(rs) && rs[j] == '{' {
				end := slices.Index(rs[j:], '}')
				require.Positive(t, end, "unclosed ${ in %q", s)
				name = string(rs[j+1 : j+end])
				i = j + end
			} else {
				for j < len(rs) && (rs[j] == '_' || rs[j] >= 'A' && rs[j] <= 'Z' || rs[j] >= 'a' && rs[j] <= 'z' || rs[j] >= '0' && rs[j] <= '9') {
					j++
				}
				name = string(rs[i+1 : j])
				i = j - 1
			}
			require.Regexp(t, `^[A-Za-z_][A-Za-z0-9_]*$`, name, "a $ the test cannot read in %q", s)
			w.WriteString(expand(name))
		case quote == '"':
			if r == '"' {
				quote = 0
			} else {
				require.NotEqual(t, '`', r, "command substitution in %q", s)
				w.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			w.WriteRune(rs[i])
			inWord = true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			require.NotContains(t, "`*?;&|<>()", string(r), "shell syntax the test does not read in %q", s)
			w.WriteRune(r)
			inWord = true
		}
	}
	require.Zero(t, quote, "unclosed quote in %q", s)
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func TestShellWords(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"V": "1.2", "OS": "linux"}
	got := shellWords(t, `CGO_ENABLED=0 GOOS=$OS go build -ldflags="-s -X main.version=${V}" -o /out/x 'a b' c\ d`,
		func(n string) string { return vars[n] })
	require.Equal(t, []string{"CGO_ENABLED=0", "GOOS=linux", "go", "build", "-ldflags=-s -X main.version=1.2", "-o", "/out/x", "a b", "c d"}, got)
}

// imageBuildArgs are the build arguments the tests give deploy/Dockerfile:
// the README's, with the test's values, and the target the test's own.
func imageBuildArgs() map[string]string {
	return map[string]string{"VERSION": imageVersion, "VCS_REF": imageCommit, "VCS_TIME": imageCommitTime,
		"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
}

// TestDockerfile checks the image's shape that the rest of deploy/ relies
// on: a golang:1.26 builder with cached modules and builds, a static
// stamped build, distroless's nonroot runtime, /callq as the entry point.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	d := parseDockerfile(t, filepath.Join(repoRoot(t), "deploy", "Dockerfile"),
		imageBuildArgs())
	require.Len(t, d.froms, 2, "a builder and the runtime")
	require.Regexp(t, `^(--platform=\S+ )?golang:1\.26(\.\d+)? AS build$`, d.froms[0])
	require.Equal(t, "gcr.io/distroless/static-debian12:nonroot", d.froms[1])
	require.Equal(t, "nonroot", d.user)
	require.Equal(t, `["/callq"]`, d.entrypoint)

	require.Contains(t, d.downloadRun, "--mount=type=cache,target=/go/pkg/mod", "go mod download caches modules")
	require.Contains(t, d.buildMounts, "--mount=type=cache,target=/go/pkg/mod")
	require.Contains(t, d.buildMounts, "--mount=type=cache,target=/root/.cache/go-build", "go build caches builds")
	require.Contains(t, d.buildEnv, "CGO_ENABLED=0", "distroless/static has no libc")
	require.Contains(t, d.buildArgs, "-trimpath")
	ldflags := slices.IndexFunc(d.buildArgs, func(a string) bool { return strings.HasPrefix(a, "-ldflags=") })
	require.GreaterOrEqual(t, ldflags, 0, "go build has -ldflags=")
	require.Contains(t, d.buildArgs[ldflags], "-X main.version="+imageVersion, "the version is stamped")
	require.Contains(t, d.buildArgs[ldflags], "-X main.commit="+imageCommit+" ", "the commit is stamped (no .git in the context)")
	require.Contains(t, d.buildArgs[ldflags], "-X main.commitTime="+imageCommitTime, "the commit's time is stamped")

	out := buildOutput(t, d)
	require.Contains(t, d.copies, "--from=build "+out+" /callq", "the runtime copies what go build wrote")

	// The build context is the repository's root: its .dockerignore keeps
	// the env files with secrets (deploy/.env, deploy/k8s/secret.env) and
	// the bulky directories out.
	ignore, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	require.NoError(t, err)
	patterns := strings.Fields(string(regexp.MustCompile(`(?m)^#.*$`).ReplaceAll(ignore, nil)))
	for _, p := range []string{"**/*.env", ".git", "**/node_modules"} {
		require.Contains(t, patterns, p, ".dockerignore")
	}
	for _, p := range patterns {
		require.False(t, strings.HasPrefix(p, "!"), ".dockerignore lets %s back in", p)
	}
}

// buildOutput is the go build's -o.
func buildOutput(t testing.TB, d *dockerfile) string {
	t.Helper()
	i := slices.Index(d.buildArgs, "-o")
	require.True(t, i >= 0 && i+1 < len(d.buildArgs), "go build has -o FILE: %v", d.buildArgs)
	return d.buildArgs[i+1]
}

var (
	imageOnce sync.Once
	imageDir  string
	imageBin  string
	imageErr  error
)

// imageBinary builds callq as deploy/Dockerfile's go build line does, once:
// its environment and arguments, read from the file, with imageBuildArgs;
// only -o differs. It builds in a copy of the build context: the repository
// less what .dockerignore keeps out, .git included, so that the go command
// stamps no commit, as in the image.
func imageBinary(t testing.TB) string {
	t.Helper()
	imageOnce.Do(func() {
		root := repoRoot(t)
		d := parseDockerfile(t, filepath.Join(root, "deploy", "Dockerfile"),
			imageBuildArgs())
		dir, err := os.MkdirTemp("", "callq-image-")
		if err != nil {
			imageErr = err
			return
		}
		imageDir = dir                   // TestMain removes it
		src := filepath.Join(dir, "src") // WORKDIR /src holds the context (COPY . .)
		if imageErr = copyBuildContext(root, src); imageErr != nil {
			return
		}
		bin := filepath.Join(dir, "callq")
		start := time.Now()
		if imageErr = buildAsDockerfile(d, src, bin); imageErr != nil {
			return
		}
		imageBin = bin
		t.Logf("built %s as deploy/Dockerfile does (%s go %s) in %s", bin, strings.Join(d.buildEnv, " "), strings.Join(d.buildArgs, " "), time.Since(start).Round(time.Millisecond))
	})
	if imageErr != nil {
		t.Fatalf("cannot build callq as the Dockerfile does: %v", imageErr)
	}
	return imageBin
}

// buildAsDockerfile runs d's go build in src, writing bin: its environment
// and arguments, only -o differs. GOFLAGS is the golang image's (none, so
// -buildvcs=auto), whatever this machine's go env says.
func buildAsDockerfile(d *dockerfile, src, bin string) error {
	args := slices.Clone(d.buildArgs)
	args[slices.Index(args, "-o")+1] = bin
	cmd := exec.Command("go", args...)
	cmd.Dir = src
	cmd.Env = append(childEnv("GOFLAGS=-buildvcs=auto"), d.buildEnv...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s go %s: %v\n%s", strings.Join(d.buildEnv, " "), strings.Join(args, " "), err, out)
	}
	return nil
}

// copyBuildContext copies root to dst less what root's .dockerignore
// excludes, as docker build sends it: a pattern is matched against the path
// from root, and **/ against any directory's entries.
func copyBuildContext(root, dst string) error {
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return err
	}
	patterns := strings.Fields(string(regexp.MustCompile(`(?m)^#.*$`).ReplaceAll(ignore, nil)))
	ignored := func(rel string) bool {
		for _, p := range patterns {
			if base, ok := strings.CutPrefix(p, "**/"); ok {
				if m, _ := filepath.Match(base, filepath.Base(rel)); m {
					return true
				}
			} else if m, _ := filepath.Match(strings.TrimPrefix(p, "/"), rel); m {
				return true
			}
		}
		return false
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		switch {
		case ignored(rel) && d.IsDir():
			return filepath.SkipDir
		case ignored(rel):
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

// emptyRoot makes a root file system holding the binary and what
// distroless/static gives it (/etc/passwd and /etc/group with nonroot, the
// CA certificates, nsswitch.conf), plus files (path in the root: content),
// all owned by root and none writable by anyone else, /tmp included: the
// read-only root of readOnlyRootFilesystem.
func emptyRoot(t *testing.T, bin string, files map[string]string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	all := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"/etc/group":         "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n",
		"/etc/nsswitch.conf": "hosts: files dns\n",
	}
	if certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		all["/etc/ssl/certs/ca-certificates.crt"] = string(certs)
	}
	for p, c := range files {
		all[p] = c
	}
	for _, d := range []string{"/tmp", "/home/nonroot"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for p, c := range all {
		full := filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(c), 0o644))
	}
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "callq"), data, 0o755))
	// t.TempDir's directories are 0700: the user must reach the root.
	require.NoError(t, os.Chmod(root, 0o755))
	return root
}

// rootListing is every path under root with its size, to see that nothing
// was written.
func rootListing(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d", strings.TrimPrefix(p, root), info.Mode(), info.Size()))
		return nil
	}))
	return out
}

// inRoot is a command running /callq in root as distroless's nonroot user,
// with the environment the image gives (PATH, SSL_CERT_FILE, HOME) and env.
func inRoot(root string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("/callq", args...)
	cmd.Dir = "/"
	cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		"HOME=/home/nonroot",
	}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: nonrootUID, Gid: nonrootUID},
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd
}

// runInRoot runs a short command in root and returns its output and exit
// code.
func runInRoot(t *testing.T, root string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCmd(t, inRoot(root, env, args...))
}

// uidOf is the real and effective user of a running process.
func uidOf(t *testing.T, pid int) string {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for l := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			f := strings.Fields(v)
			return f[0] + " " + f[1]
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return ""
}

// The image's build context has no .git, so the go command cannot stamp the
// commit: `callq version` of the binary built as the Dockerfile builds it
// (its go build line and ldflags, with no VCS stamp) prints the commit and
// time the VCS_REF and VCS_TIME build arguments carried, not "unknown".
func TestImageBinaryVersionStamped(t *testing.T) {
	t.Parallel()
	bin := imageBinary(t)
	cmd := exec.Command(bin, "version")
	cmd.Env = childEnv()
	stdout, stderr, code := runCmd(t, cmd)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `^callq `+regexp.QuoteMeta(imageVersion)+`\ncommit: `+imageCommit+`\ncommit time: `+
		regexp.QuoteMeta(imageCommitTime)+`\ngo: go1\.\d+`, stdout)
}

// Where the go command can stamp the commit, a git checkout, its stamp wins
// over VCS_REF and VCS_TIME: the same build line in a checkout prints the
// checkout's commit.
func TestVersionPrefersTheGoCommandsStamp(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	d := parseDockerfile(t, filepath.Join(root, "deploy", "Dockerfile"), imageBuildArgs())
	src := filepath.Join(t.TempDir(), "src")
	require.NoError(t, copyBuildContext(root, src))
	head, _ := gitCommitAll(t, src)
	bin := filepath.Join(t.TempDir(), "callq")
	require.NoError(t, buildAsDockerfile(d, src, bin))

	cmd := exec.Command(bin, "version")
	cmd.Env = childEnv()
	stdout, stderr, code := runCmd(t, cmd)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `\ncommit: `+head+`\ncommit time: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n`, stdout)
	require.NotContains(t, stdout, imageCommit)
	require.NotContains(t, stdout, imageCommitTime)
}

// gitCommitAll makes dir a git repository with its files committed, and
// returns the commit and its time as the README's build line reads them
// (git rev-parse HEAD, git log -1 --format=%cI).
func gitCommitAll(t *testing.T, dir string) (head, headTime string) {
	t.Helper()
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "user.name=callq test", "-c", "user.email=test@callq.invalid"}, args...)...)
		cmd.Dir = dir
		cmd.Env = childEnv("GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %s: %s", strings.Join(args, " "), out)
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "test")
	return git("rev-parse", "HEAD"), git("log", "-1", "--format=%cI")
}

// The binary the image holds, built with the Dockerfile's flags, is static
// and runs in an empty root as user 65532 with nothing writable: the API
// and a worker come up, a call runs, `callq healthcheck` answers 0 for both
// and 1 with the reason when Redis is down, `callq --version` prints the
// stamped version.
func TestImageBinaryInEmptyRoot(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	bin := imageBinary(t)

	// Static, and no build machine's path inside (-trimpath).
	f, err := elf.Open(bin)
	require.NoError(t, err)
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "the binary asks for a dynamic loader: it would not start on distroless/static")
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	require.Empty(t, libs, "the binary links shared libraries")
	require.NoError(t, f.Close())
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.False(t, bytes.Contains(data, []byte(repoRoot(t))), "-trimpath: the repository's path is in the binary")

	redis := redistest.Start(t)
	if redis.Dir == "" {
		t.Skip("needs a redis-server of its own (it is killed), not CALLQ_TEST_REDIS_URL")
	}
	up := newUpstream(t, 0)
	root := emptyRoot(t, bin, map[string]string{"/etc/callq/integrations.yaml": fmt.Sprintf(`integrations:
  slow:
    base_url: %s
    auth: {type: none}
`, up.URL)})
	before := rootListing(t, root)

	secret, err := auth.GenerateKey()
	require.NoError(t, err)
	env := []string{"REDIS_URL=" + redis.URL, "CALLQ_INTEGRATIONS=/etc/callq/integrations.yaml", "CALLQ_SECRET_KEY=" + secret}

	out, _, code := runInRoot(t, root, nil, "--version")
	require.Equal(t, 0, code)
	require.Equal(t, "callq "+imageVersion+"\n", out)

	p := newProcs(t)
	d := &deployment{t: t, procs: p, up: up, http: validatingClient(t)}
	d.apiKey = createAdminKey(t, p.bin, redis.URL)
	var apiAddr, metricsAddr string
	d.api = p.startListening(func() (*child, []string) {
		apiAddr = freeAddr(t)
		d.apiURL = "http://" + apiAddr
		return p.startCmd("api", inRoot(root, append(slices.Clone(env), "CALLQ_API_ADDR="+apiAddr), "api")), []string{d.apiURL + "/readyz"}
	})
	w := p.startListening(func() (*child, []string) {
		metricsAddr = freeAddr(t)
		return p.startCmd("worker", inRoot(root, append(slices.Clone(env), "CALLQ_METRICS_ADDR="+metricsAddr), "worker")),
			[]string{"http://" + metricsAddr + "/healthz", "http://" + metricsAddr + "/readyz"}
	})
	for _, c := range []*child{d.api, w} {
		require.Equal(t, fmt.Sprintf("%d %d", nonrootUID, nonrootUID), uidOf(t, c.cmd.Process.Pid), "%s runs as nonroot", c.name)
	}

	d.enqueue("image-1")
	recs := d.waitAllTerminal([]string{"image-1"}, time.Now().Add(30*time.Second))
	require.Equal(t, "succeeded", string(recs["image-1"].Status), "%s", historyString(recs["image-1"]))

	apiEnv := []string{"CALLQ_API_ADDR=" + apiAddr}
	workerEnv := []string{"CALLQ_METRICS_ADDR=" + metricsAddr}
	out, errOut, code := runInRoot(t, root, apiEnv, "healthcheck")
	require.Equal(t, 0, code, "callq healthcheck: %s%s", out, errOut)
	require.Equal(t, "ok: http://"+apiAddr+"/readyz answered 200\n", out)
	out, errOut, code = runInRoot(t, root, workerEnv, "healthcheck", "--worker")
	require.Equal(t, 0, code, "callq healthcheck --worker: %s%s", out, errOut)
	require.Equal(t, "ok: http://"+metricsAddr+"/readyz answered 200\n", out)

	// Redis down: both checks fail, with the reason on one line; back up,
	// they pass again without a restart of callq.
	redis.Kill(t)
	for _, args := range [][]string{{"healthcheck"}, {"healthcheck", "--worker"}} {
		e := apiEnv
		if len(args) > 1 {
			e = workerEnv
		}
		out, errOut, code = runInRoot(t, root, e, args...)
		require.Equal(t, 1, code, "callq %v with Redis down: %s%s", args, out, errOut)
		require.Empty(t, out)
		require.Regexp(t, `^callq: healthcheck: http://127\.0\.0\.1:\d+/readyz answered 503 Service Unavailable: redis unreachable\n$`, errOut)
	}
	redis.Restart(t)
	require.Eventually(t, func() bool {
		_, _, c1 := runInRoot(t, root, apiEnv, "healthcheck")
		_, _, c2 := runInRoot(t, root, workerEnv, "healthcheck", "--worker")
		return c1 == 0 && c2 == 0
	}, 30*time.Second, 100*time.Millisecond, "the checks pass again once Redis is back")

	// Nothing was written to the root: callq needs no writable file system.
	d.api.stop(10 * time.Second)
	w.stop(10 * time.Second)
	require.Equal(t, 0, d.api.exitCode(), "the API exits 0 on SIGTERM")
	require.Equal(t, 0, w.exitCode(), "the worker exits 0 on SIGTERM")
	require.Equal(t, before, rootListing(t, root), "callq wrote to its root file system")
	requireNoErrorLogs(t, d.api)
}
