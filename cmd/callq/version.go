package main

import "runtime/debug"

// version is stamped at build time: go build -ldflags "-X main.version=v1.2.3"
// (deploy/Dockerfile does, from its VERSION build argument).
var version string

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
