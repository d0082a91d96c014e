package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ValueKind says where a credential field's secret lives.
type ValueKind string

const (
	// KindLiteral is a value given inline, stored sealed under the keyring.
	KindLiteral ValueKind = "literal"
	// KindEnv is read from an environment variable of the worker.
	KindEnv ValueKind = "env"
	// KindFile is read from a file on the worker (a mounted secret, say).
	KindFile ValueKind = "file"
)

const (
	envPrefix  = "env:"
	filePrefix = "file:"

	// maxFileValueBytes bounds what a file: source may hold, so that a
	// mistaken path (a log, /dev/zero) fails instead of filling memory.
	maxFileValueBytes = 64 << 10
)

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Value is a credential field value as stored: a sealed literal, or a
// reference to an environment variable or file that is resolved at call
// time. A Value never holds a secret in clear.
type Value struct {
	Kind   ValueKind `json:"kind"`
	Ref    string    `json:"ref,omitempty"`    // env var name or file path (not secret)
	Sealed string    `json:"sealed,omitempty"` // for literal
}

// ParseValue turns a raw field value into a Value: "env:NAME" (NAME matching
// [A-Za-z_][A-Za-z0-9_]*), "file:/abs/path" (absolute, cleaned, not under
// /proc, /sys or /dev), or anything else a literal, sealed under k with aad.
// The file is not looked at here: it only has to exist on the workers, at
// call time, when Resolve checks it again with its symlinks resolved.
func ParseValue(k *Keyring, raw string, aad []byte) (Value, error) {
	switch {
	case strings.HasPrefix(raw, envPrefix):
		name := strings.TrimPrefix(raw, envPrefix)
		if !envNamePattern.MatchString(name) {
			return Value{}, fmt.Errorf("env var name %q is not valid: want [A-Za-z_][A-Za-z0-9_]*", name)
		}
		return Value{Kind: KindEnv, Ref: name}, nil

	case strings.HasPrefix(raw, filePrefix):
		path := strings.TrimPrefix(raw, filePrefix)
		if path == "" {
			return Value{}, errors.New("file path is empty: want file:/absolute/path")
		}
		if strings.ContainsRune(path, 0) {
			return Value{}, errors.New("file path contains a NUL byte")
		}
		if !filepath.IsAbs(path) {
			return Value{}, fmt.Errorf("file path %q is not absolute: workers may run in any directory", path)
		}
		path = filepath.Clean(path)
		if err := SourceDirs(nil).checkPath(path); err != nil {
			return Value{}, err
		}
		return Value{Kind: KindFile, Ref: path}, nil

	default:
		return sealLiteral(k, raw, aad)
	}
}

// sealLiteral is raw as a literal Value, sealed under k with aad, whatever
// it begins with.
func sealLiteral(k *Keyring, raw string, aad []byte) (Value, error) {
	if raw == "" {
		return Value{}, errors.New("value is empty")
	}
	sealed, err := k.Seal([]byte(raw), aad)
	if err != nil {
		return Value{}, fmt.Errorf("sealing the value failed: %w", err)
	}
	return Value{Kind: KindLiteral, Sealed: sealed}, nil
}

// Resolve returns the secret the value stands for. Env vars and files are
// read on every call, so a rotated secret takes effect at once; trailing
// "\r\n" is trimmed from file contents, as editors and `echo` add it. A
// file must be allowed by dirs (see SourceDirs and readSecretFile).
// Literals are opened with k and aad. Errors name the source, never the
// secret.
func (v Value) Resolve(k *Keyring, aad []byte, dirs SourceDirs) (string, error) {
	switch v.Kind {
	case KindEnv:
		if strings.HasPrefix(v.Ref, "CALLQ_") || v.Ref == "REDIS_URL" {
			// callq's own configuration (its secret key, Redis password,
			// webhook secret) is never a credential.
			return "", fmt.Errorf("env var %s is callq's own configuration and cannot be a credential value", v.Ref)
		}
		secret, ok := os.LookupEnv(v.Ref)
		if !ok {
			return "", fmt.Errorf("env var %s is not set", v.Ref)
		}
		if secret == "" {
			return "", fmt.Errorf("env var %s is empty", v.Ref)
		}
		return secret, nil

	case KindFile:
		return readSecretFile(v.Ref, dirs)

	case KindLiteral:
		plaintext, err := k.Open(v.Sealed, aad)
		if err != nil {
			return "", fmt.Errorf("literal value cannot be opened: %w", err)
		}
		return string(plaintext), nil

	default:
		return "", fmt.Errorf("value kind %q is not known: want literal, env or file", v.Kind)
	}
}

// String describes the value without its secret, for listings and logs.
func (v Value) String() string {
	switch v.Kind {
	case KindEnv:
		return envPrefix + v.Ref
	case KindFile:
		return filePrefix + v.Ref
	case KindLiteral:
		return "literal"
	default:
		return string(v.Kind)
	}
}

// IsSourceRef reports whether raw names a source read on the workers at
// call time ("env:NAME", "file:/path") rather than being a literal secret.
// It looks at the prefix only: ParseValue checks the rest.
func IsSourceRef(raw string) bool {
	return strings.HasPrefix(raw, envPrefix) || strings.HasPrefix(raw, filePrefix)
}

// resolveSecretSource returns the secret raw stands for: read from the
// environment or a file (under dirs) now, or raw itself if it is a literal.
func resolveSecretSource(raw string, dirs SourceDirs) (string, error) {
	if !IsSourceRef(raw) {
		return raw, nil
	}
	v, err := ParseValue(nil, raw, nil)
	if err != nil {
		return "", err
	}
	return v.Resolve(nil, nil, dirs)
}
