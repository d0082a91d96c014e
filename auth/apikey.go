package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

var (
	// ErrInvalidAPIKey is returned by KeyStore.Authenticate for an empty,
	// unknown or revoked secret. It says nothing more, on purpose.
	ErrInvalidAPIKey = errors.New("API key is not valid")

	// ErrAPIKeyNotFound is returned by KeyStore.Revoke for an unknown key id.
	ErrAPIKeyNotFound = errors.New("API key not found")
)

// Role is what an API key may do within its tenant.
type Role string

const (
	// RoleProducer enqueues and reads its tenant's calls.
	RoleProducer Role = "producer"
	// RoleAdmin also manages its tenant's credentials.
	RoleAdmin Role = "admin"
)

// ParseRole parses "producer" or "admin".
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleProducer, RoleAdmin:
		return r, nil
	default:
		return "", fmt.Errorf("role %q is not valid: want producer or admin", s)
	}
}

var tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidateTenant checks a tenant name: a lowercase letter or digit, then up
// to 62 lowercase letters, digits, '_' or '-'. The set keeps tenant names
// safe inside Redis hash tags and URLs.
func ValidateTenant(tenant string) error {
	if tenant == "" {
		return errors.New("tenant is required")
	}
	if !tenantPattern.MatchString(tenant) {
		return fmt.Errorf("tenant %q is not valid: want a lowercase letter or digit, then up to 62 of a-z 0-9 _ -", tenant)
	}
	return nil
}

const (
	apiKeyPrefix     = "cq_"
	apiKeyIDPrefix   = "key_"
	apiKeySecretSize = 32
	apiKeyIDHexLen   = 12

	// MinAPIKeySecretLen is the shortest secret CreateWithSecret accepts.
	MinAPIKeySecretLen = 16
)

// APIKey is a producer API key as stored: who it belongs to, never its
// secret.
type APIKey struct {
	ID        string    `json:"id"` // "key_" + 12 hex chars of the secret's SHA-256
	Tenant    string    `json:"tenant"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// KeyStore keeps producer API keys in Redis, each under the SHA-256 of its
// secret, so Redis never holds a secret and a lookup by secret is one GET.
// A KeyStore is safe for concurrent use.
//
// Layout (internal/rediskeys): "callq:apikey:<sha256hex>" holds the JSON of
// an APIKey, and the hash "callq:apikeys" maps each id to its sha256hex for
// List and Revoke.
// The two keys may sit in different cluster slots, so they are written in an
// order that is safe if a process dies between the writes: the index entry
// is written before the key and removed after it, so a key that
// authenticates is always listed and revocable.
type KeyStore struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// NewKeyStore returns a KeyStore over rdb.
func NewKeyStore(rdb redis.UniversalClient) *KeyStore {
	return &KeyStore{rdb: rdb, now: time.Now}
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Create makes a new API key for tenant with role and returns it with its
// secret, "cq_" followed by 43 base64url characters. The secret is not
// stored and cannot be recovered: show it once.
func (s *KeyStore) Create(ctx context.Context, tenant string, role Role) (*APIKey, string, error) {
	if err := validateKeyOwner(tenant, role); err != nil {
		return nil, "", err
	}
	b := make([]byte, apiKeySecretSize)
	if _, err := rand.Read(b); err != nil {
		return nil, "", fmt.Errorf("reading random bytes for an API key failed: %w", err)
	}
	secret := apiKeyPrefix + base64.RawURLEncoding.EncodeToString(b)

	key, created, err := s.register(ctx, tenant, role, secret)
	if err != nil {
		return nil, "", err
	}
	if !created {
		// 256 random bits do not collide; if they did, refusing beats
		// handing out another tenant's key.
		return nil, "", errors.New("a freshly generated API key already exists: refusing to reuse it")
	}
	return key, secret, nil
}

// CreateWithSecret registers a caller-chosen secret of at least 16
// characters for tenant with role; dev mode uses it for CALLQ_DEV_API_KEY.
// Registering the same secret, tenant and role again returns the existing
// key; the same secret for another tenant or role is an error.
func (s *KeyStore) CreateWithSecret(ctx context.Context, tenant string, role Role, secret string) (*APIKey, error) {
	if err := validateKeyOwner(tenant, role); err != nil {
		return nil, err
	}
	if len(secret) < MinAPIKeySecretLen {
		return nil, fmt.Errorf("API key secret is %d characters, at least %d are required", len(secret), MinAPIKeySecretLen)
	}
	key, created, err := s.register(ctx, tenant, role, secret)
	if err != nil {
		return nil, err
	}
	if !created && (key.Tenant != tenant || key.Role != role) {
		return nil, fmt.Errorf("API key secret is already registered as %s for another tenant or role", key.ID)
	}
	return key, nil
}

// register stores secret's key unless it exists, and returns the key stored
// under the secret's hash either way, with created saying which.
func (s *KeyStore) register(ctx context.Context, tenant string, role Role, secret string) (key *APIKey, created bool, err error) {
	hash := hashSecret(secret)
	key = &APIKey{
		ID:        apiKeyIDPrefix + hash[:apiKeyIDHexLen],
		Tenant:    tenant,
		Role:      role,
		CreatedAt: s.now().UTC(),
	}

	// Index first (see KeyStore): HSETNX also catches an id already taken.
	ok, err := s.rdb.HSetNX(ctx, rediskeys.APIKeys, key.ID, hash).Result()
	if err != nil {
		return nil, false, fmt.Errorf("storing API key %s failed: %w", key.ID, err)
	}
	if !ok {
		indexed, err := s.rdb.HGet(ctx, rediskeys.APIKeys, key.ID).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, false, fmt.Errorf("reading API key %s failed: %w", key.ID, err)
		}
		if indexed != hash {
			// Two secrets whose hashes share 48 bits: vanishingly rare.
			return nil, false, fmt.Errorf("API key id %s is already taken by another key", key.ID)
		}
	}

	b, err := json.Marshal(key)
	if err != nil {
		return nil, false, fmt.Errorf("encoding API key %s failed: %w", key.ID, err)
	}
	ok, err = s.rdb.SetNX(ctx, rediskeys.APIKey(hash), b, 0).Result()
	if err != nil {
		return nil, false, fmt.Errorf("storing API key %s failed: %w", key.ID, err)
	}
	if ok {
		return key, true, nil
	}
	existing, err := s.get(ctx, hash)
	if err != nil {
		return nil, false, err
	}
	if existing == nil {
		return nil, false, fmt.Errorf("API key %s was revoked while being registered", key.ID)
	}
	return existing, false, nil
}

// get returns the key stored under hash, or nil if there is none.
func (s *KeyStore) get(ctx context.Context, hash string) (*APIKey, error) {
	b, err := s.rdb.Get(ctx, rediskeys.APIKey(hash)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading API key failed: %w", err)
	}
	var key APIKey
	if err := json.Unmarshal(b, &key); err != nil {
		return nil, fmt.Errorf("API key is corrupt in Redis: %w", err)
	}
	return &key, nil
}

// Authenticate returns the key whose secret this is, or ErrInvalidAPIKey.
func (s *KeyStore) Authenticate(ctx context.Context, secret string) (*APIKey, error) {
	if secret == "" {
		return nil, ErrInvalidAPIKey
	}
	key, err := s.get(ctx, hashSecret(secret))
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, ErrInvalidAPIKey
	}
	return key, nil
}

// Lookup returns the API key id, or an error matching ErrAPIKeyNotFound
// when there is none: never was, or revoked. The dashboard looks a
// session's key up on each request, so that revoking a key ends its
// sessions.
func (s *KeyStore) Lookup(ctx context.Context, id string) (*APIKey, error) {
	hash, err := s.rdb.HGet(ctx, rediskeys.APIKeys, id).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: no API key has id %q", ErrAPIKeyNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("reading API key %q failed: %w", id, err)
	}
	key, err := s.get(ctx, hash)
	if err != nil {
		return nil, err
	}
	if key == nil {
		// Revoke deletes the key before its index entry: revoked.
		return nil, fmt.Errorf("%w: no API key has id %q", ErrAPIKeyNotFound, id)
	}
	return key, nil
}

// List returns every API key, sorted by tenant, then id.
func (s *KeyStore) List(ctx context.Context) ([]*APIKey, error) {
	index, err := s.rdb.HGetAll(ctx, rediskeys.APIKeys).Result()
	if err != nil {
		return nil, fmt.Errorf("listing API keys failed: %w", err)
	}
	if len(index) == 0 {
		return []*APIKey{}, nil
	}

	// A pipeline of GETs rather than one MGET: the keys span cluster slots.
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, 0, len(index))
	for _, hash := range index {
		cmds = append(cmds, pipe.Get(ctx, rediskeys.APIKey(hash)))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading API keys failed: %w", err)
	}

	keys := make([]*APIKey, 0, len(cmds))
	for _, cmd := range cmds {
		b, err := cmd.Bytes()
		if errors.Is(err, redis.Nil) {
			continue // indexed, but the key write never happened or was revoked
		}
		if err != nil {
			return nil, fmt.Errorf("reading API keys failed: %w", err)
		}
		var key APIKey
		if err := json.Unmarshal(b, &key); err != nil {
			return nil, fmt.Errorf("an API key is corrupt in Redis: %w", err)
		}
		keys = append(keys, &key)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Tenant != keys[j].Tenant {
			return keys[i].Tenant < keys[j].Tenant
		}
		return keys[i].ID < keys[j].ID
	})
	return keys, nil
}

// Revoke deletes the API key id, or returns an error matching
// ErrAPIKeyNotFound. The key stops authenticating at once.
func (s *KeyStore) Revoke(ctx context.Context, id string) error {
	hash, err := s.rdb.HGet(ctx, rediskeys.APIKeys, id).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: no API key has id %q", ErrAPIKeyNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("reading API key %q failed: %w", id, err)
	}
	// Key first, index second (see KeyStore).
	if err := s.rdb.Del(ctx, rediskeys.APIKey(hash)).Err(); err != nil {
		return fmt.Errorf("revoking API key %q failed: %w", id, err)
	}
	if err := s.rdb.HDel(ctx, rediskeys.APIKeys, id).Err(); err != nil {
		return fmt.Errorf("revoking API key %q failed: %w", id, err)
	}
	return nil
}

func validateKeyOwner(tenant string, role Role) error {
	if err := ValidateTenant(tenant); err != nil {
		return &FieldError{Field: "tenant", Message: err.Error()}
	}
	if _, err := ParseRole(string(role)); err != nil {
		return &FieldError{Field: "role", Message: err.Error()}
	}
	return nil
}
