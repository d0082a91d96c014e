package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// KeySize is the length in bytes of every key in a Keyring (AES-256).
const KeySize = 32

// DefaultKeyID is the key id given to a bare key, one without "kid:".
const DefaultKeyID = "default"

// sealVersion prefixes every sealed value so the format can change later
// without guessing what an old blob is.
const sealVersion = "v1"

var (
	// ErrUnknownKey is returned by Keyring.Open when a value was sealed under a
	// key id the ring does not hold. The concrete error is an *UnknownKeyError.
	ErrUnknownKey = errors.New("key id is not in CALLQ_SECRET_KEY")

	// ErrDecrypt is returned by Keyring.Open when a sealed value is malformed
	// or fails authentication: tampered with, sealed under a different key of
	// the same id, or sealed for another credential field (aad mismatch).
	ErrDecrypt = errors.New("sealed value cannot be decrypted")
)

// UnknownKeyError names the key id that a sealed value refers to and the
// ring lacks. It matches ErrUnknownKey with errors.Is.
type UnknownKeyError struct {
	KeyID string
}

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("key id %q is not in CALLQ_SECRET_KEY: add the key that sealed this value to the keyring", e.KeyID)
}

// Unwrap lets errors.Is(err, ErrUnknownKey) match.
func (e *UnknownKeyError) Unwrap() error { return ErrUnknownKey }

// keyIDPattern keeps ids free of '.', which separates the parts of a sealed
// value, and of ':' and ',', which separate keyring entries.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

type keyEntry struct {
	id   string
	aead cipher.AEAD
}

// Keyring holds the AES-256-GCM keys that seal credential literals. The first
// key seals; every key opens, so a new key can be put first while values
// sealed under the old one stay readable until rewritten. A Keyring is
// immutable and safe for concurrent use.
type Keyring struct {
	entries []keyEntry
	byID    map[string]cipher.AEAD
}

// ParseKeyring parses CALLQ_SECRET_KEY: either one base64 (standard
// encoding) 32-byte key, given the id "default", or a comma-separated list
// "kid1:key1,kid2:key2" whose first entry seals. Errors say which entry is
// wrong and how, and never include key material.
func ParseKeyring(s string) (*Keyring, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("CALLQ_SECRET_KEY is empty: want base64 of 32 bytes, or kid1:key1,kid2:key2")
	}

	parts := strings.Split(s, ",")
	ring := &Keyring{byID: make(map[string]cipher.AEAD, len(parts))}
	for i, part := range parts {
		part = strings.TrimSpace(part)
		n := i + 1 // people count entries from one

		id, encoded, hasID := strings.Cut(part, ":")
		if !hasID {
			if len(parts) > 1 {
				return nil, fmt.Errorf("CALLQ_SECRET_KEY entry %d has no key id: in a list every entry is kid:key", n)
			}
			id, encoded = DefaultKeyID, part
		}
		id, encoded = strings.TrimSpace(id), strings.TrimSpace(encoded)

		if !keyIDPattern.MatchString(id) {
			// The id is not secret, but a malformed entry may be a key pasted
			// into the wrong place, so it is not echoed.
			return nil, fmt.Errorf("CALLQ_SECRET_KEY entry %d has an invalid key id: want 1 to 64 of A-Z a-z 0-9 _ -", n)
		}
		if _, dup := ring.byID[id]; dup {
			return nil, fmt.Errorf("CALLQ_SECRET_KEY has key id %q more than once", id)
		}
		if encoded == "" {
			return nil, fmt.Errorf("CALLQ_SECRET_KEY key %q is empty", id)
		}
		key, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			// base64's error quotes the offending byte offset only, but keep
			// the message fixed so no part of the key can leak.
			return nil, fmt.Errorf("CALLQ_SECRET_KEY key %q is not valid base64 (standard encoding)", id)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("CALLQ_SECRET_KEY key %q is %d bytes, want %d", id, len(key), KeySize)
		}
		aead, err := newAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("CALLQ_SECRET_KEY key %q cannot be used: %w", id, err)
		}
		ring.entries = append(ring.entries, keyEntry{id: id, aead: aead})
		ring.byID[id] = aead
	}
	return ring, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// String describes the ring by key ids only. It exists so that printing a
// Keyring with fmt cannot dump the ciphers' key schedules.
func (k *Keyring) String() string {
	if k == nil {
		return "auth.Keyring(nil)"
	}
	ids := make([]string, len(k.entries))
	for i, e := range k.entries {
		ids[i] = e.id
	}
	return "auth.Keyring(" + strings.Join(ids, ",") + ")"
}

// GoString is String, for %#v.
func (k *Keyring) GoString() string { return k.String() }

// GenerateKey returns a new random key in the form ParseKeyring accepts:
// base64 (standard encoding) of 32 bytes.
func GenerateKey() (string, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("reading random bytes for a secret key failed: %w", err)
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// PrimaryID returns the id of the key that seals.
func (k *Keyring) PrimaryID() string {
	if k == nil || len(k.entries) == 0 {
		return ""
	}
	return k.entries[0].id
}

// Seal encrypts plaintext under the primary key, binding it to aad, and
// returns "v1.<kid>.<base64url-raw(nonce||ciphertext)>". The same aad must be
// given to Open.
func (k *Keyring) Seal(plaintext, aad []byte) (string, error) {
	if k == nil || len(k.entries) == 0 {
		return "", errors.New("no keyring is configured: set CALLQ_SECRET_KEY")
	}
	primary := k.entries[0]

	// A random 96-bit nonce is safe for far more seals than a credential
	// store will ever do under one key.
	nonce := make([]byte, primary.aead.NonceSize(), primary.aead.NonceSize()+len(plaintext)+primary.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("reading random bytes for a nonce failed: %w", err)
	}
	blob := primary.aead.Seal(nonce, nonce, plaintext, aad)
	return sealVersion + "." + primary.id + "." + base64.RawURLEncoding.EncodeToString(blob), nil
}

// Open decrypts a value made by Seal with the same aad. It returns an
// *UnknownKeyError (ErrUnknownKey) when the ring lacks the sealing key, and
// an error matching ErrDecrypt when the value is malformed or does not
// authenticate.
func (k *Keyring) Open(sealed string, aad []byte) ([]byte, error) {
	if k == nil || len(k.entries) == 0 {
		return nil, errors.New("no keyring is configured: set CALLQ_SECRET_KEY")
	}
	version, rest, ok := strings.Cut(sealed, ".")
	if !ok || version != sealVersion {
		return nil, fmt.Errorf("%w: it does not start with %q", ErrDecrypt, sealVersion+".")
	}
	id, encoded, ok := strings.Cut(rest, ".")
	if !ok || !keyIDPattern.MatchString(id) {
		return nil, fmt.Errorf("%w: it has no valid key id", ErrDecrypt)
	}
	aead, ok := k.byID[id]
	if !ok {
		return nil, &UnknownKeyError{KeyID: id}
	}
	blob, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil {
		return nil, fmt.Errorf("%w: it is not valid base64url", ErrDecrypt)
	}
	if len(blob) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: it is too short", ErrDecrypt)
	}
	nonce, ciphertext := blob[:aead.NonceSize()], blob[aead.NonceSize():]
	plaintext, err := aead.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (tampered, or sealed for another credential field)", ErrDecrypt)
	}
	return plaintext, nil
}
