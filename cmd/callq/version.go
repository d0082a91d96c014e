package main

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is stamped at build time: go build -ldflags "-X main.version=v1.2.3"
// (deploy/Dockerfile does, from its VERSION build argument).
var version string

// commit and commitTime are stamped at build time too (-X main.commit=...
// -X main.commitTime=...), for a build the go command cannot stamp from
// git: deploy/Dockerfile's, whose context has no .git, from its VCS_REF and
// VCS_TIME build arguments. The build information's vcs.revision and
// vcs.time, when there, win: they are the go command's own record.
var commit, commitTime string

// versionString is the stamped version, else the module's version from the
// build information ("(devel)" for a build from a checkout).
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// runVersion is `callq version`: the version, and the commit and Go
// version the build information holds.
func runVersion(_ context.Context, x *invocation, args []string) error {
	fs := x.flags()
	if err := fs.parseNoArgs(args); err != nil {
		return err
	}
	rev, built, modified, goVersion := cmp.Or(commit, "unknown"), cmp.Or(commitTime, "unknown"), false, runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				built = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		rev += " (with uncommitted changes)"
	}
	_, err := fmt.Fprintf(x.stdout, "callq %s\ncommit: %s\ncommit time: %s\ngo: %s\n", versionString(), rev, built, goVersion)
	return err
}
