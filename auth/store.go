package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/callq/callq/internal/rediskeys"
)

// ErrCredentialNotFound is returned when a tenant has no credential of the
// given ref.
var ErrCredentialNotFound = errors.New("credential not found")

// Limits on what Put accepts; they keep one credential a small Redis value.
const (
	MaxFields          = 32
	MaxFieldValueBytes = 16 << 10
	maxIntegrationLen  = 128
)

var (
	idPattern        = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	fieldNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

// IDRule says, for error messages, what ValidID accepts.
const IDRule = "1 to 128 characters of A-Z a-z 0-9 . _ : -"

// ValidID reports whether s is acceptable as a credential ref, a
// correlation ID or an integration name: IDRule.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// FieldError reports an input field the caller must fix: a credential's
// ("ref", "fields.token", "auth.type") or, as tasks.FieldError, a call's
// ("path", "headers.Host", "retry.max_attempts"). Field is the field's path,
// so an API can name it to its caller. It is the one type for a bad field
// in every package.
type FieldError struct {
	Field   string
	Message string
	// TooLarge is set when the field exceeds a size limit (HTTP 413).
	TooLarge bool
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Is makes errors.Is(err, ErrTooLarge) true for size-limit errors.
func (e *FieldError) Is(target error) bool { return target == ErrTooLarge && e.TooLarge }

// ErrTooLarge matches a FieldError for a value over a size limit.
var ErrTooLarge = errors.New("value too large")

func fieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Keyring seals literal field values. Required.
	Keyring *Keyring
	// SourceDirs, when set (CALLQ_SOURCE_DIRS), are the only directories
	// file: values may name: Put refuses other paths, and credentials
	// resolved with the store's SourceDirs read nothing outside them, after
	// symlinks. Default: none, any file outside /proc, /sys and /dev.
	SourceDirs SourceDirs
}

func (c *StoreConfig) validate() error {
	if c.Keyring == nil || len(c.Keyring.entries) == 0 {
		return errors.New("StoreConfig.Keyring is required: parse one from CALLQ_SECRET_KEY with ParseKeyring")
	}
	if err := c.SourceDirs.validate(); err != nil {
		return fmt.Errorf("StoreConfig.SourceDirs: %w", err)
	}
	return nil
}

// Store keeps credentials in Redis, their literal fields sealed, so a Redis
// dump holds no secret in clear. A Store is safe for concurrent use.
//
// Layout (internal/rediskeys): "callq:{<tenant>}:cred:<ref>" holds the JSON
// of a Credential, and the set "callq:{<tenant>}:creds" its ref. The
// {tenant} hash tag puts a tenant's keys in one cluster slot, so they can
// change in one MULTI/EXEC and be read in one MGET.
type Store struct {
	rdb     redis.UniversalClient
	keyring *Keyring
	dirs    SourceDirs
	now     func() time.Time
}

// NewStore returns a Store over rdb.
func NewStore(rdb redis.UniversalClient, cfg *StoreConfig) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redis client is nil: NewStore needs one")
	}
	if cfg == nil {
		return nil, errors.New("StoreConfig is nil: NewStore needs at least a Keyring")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, keyring: cfg.Keyring, dirs: cfg.SourceDirs.clean(), now: time.Now}, nil
}

// SourceDirs returns the directories file: values are restricted to
// (StoreConfig.SourceDirs), to resolve the store's credentials with.
func (s *Store) SourceDirs() SourceDirs { return s.dirs }

// Put creates or replaces the credential ref of tenant. Literal values are
// sealed; "env:NAME" and "file:/path" are stored as references. Invalid input
// is reported as a *FieldError.
func (s *Store) Put(ctx context.Context, tenant, ref, integration string, fields map[string]string) (*Credential, error) {
	return s.put(ctx, tenant, ref, integration, fields, nil)
}

// PutConnected is Put for a credential an end user connected: every value
// is a literal and is sealed (an end user's "env:HOME" is a password, not a
// reference to the workers' environment), and the credential records conn.
func (s *Store) PutConnected(ctx context.Context, tenant, ref, integration string, fields map[string]string, conn *Connection) (*Credential, error) {
	if conn == nil {
		return nil, errors.New("PutConnected needs the Connection")
	}
	return s.put(ctx, tenant, ref, integration, fields, conn)
}

func (s *Store) put(ctx context.Context, tenant, ref, integration string, fields map[string]string, conn *Connection) (*Credential, error) {
	if err := validateTenantRef(tenant, ref); err != nil {
		return nil, err
	}
	if integration == "" {
		return nil, fieldErrorf("integration", "integration is required")
	}
	if len(integration) > maxIntegrationLen || strings.IndexFunc(integration, notPrintable) >= 0 {
		return nil, fieldErrorf("integration", "integration %q is not a valid integration name", integration)
	}
	if len(fields) == 0 {
		return nil, fieldErrorf("fields", "a credential needs at least one field")
	}
	if len(fields) > MaxFields {
		return nil, fieldErrorf("fields", "a credential has at most %d fields, this one has %d", MaxFields, len(fields))
	}

	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names) // report the same first error every time

	cred := &Credential{
		Ref:         ref,
		Tenant:      tenant,
		Integration: integration,
		Fields:      make(map[string]Value, len(fields)),
		UpdatedAt:   s.now().UTC(),
		Connected:   conn,
	}
	for _, name := range names {
		if !fieldNamePattern.MatchString(name) {
			return nil, fieldErrorf("fields", "field name %q is not valid: want 1 to 64 of A-Z a-z 0-9 _ . -", name)
		}
		raw := fields[name]
		if len(raw) > MaxFieldValueBytes {
			return nil, fieldErrorf("fields."+name, "value is %d bytes, at most %d are allowed", len(raw), MaxFieldValueBytes)
		}
		var v Value
		var err error
		if conn != nil {
			v, err = sealLiteral(s.keyring, raw, fieldAAD(tenant, ref, name))
		} else {
			v, err = ParseValue(s.keyring, raw, fieldAAD(tenant, ref, name))
		}
		if err == nil && v.Kind == KindFile {
			err = s.dirs.checkPath(v.Ref)
		}
		if err != nil {
			return nil, fieldErrorf("fields."+name, "%s", err.Error())
		}
		cred.Fields[name] = v
	}

	b, err := json.Marshal(cred)
	if err != nil {
		return nil, fmt.Errorf("encoding credential %q failed: %w", ref, err)
	}
	pipe := s.rdb.TxPipeline()
	pipe.Set(ctx, rediskeys.Credential(tenant, ref), b, 0)
	pipe.SAdd(ctx, rediskeys.Credentials(tenant), ref)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("storing credential %q failed: %w", ref, err)
	}
	s.changed(ctx, tenant, ref)
	return cred, nil
}

// Get returns the credential ref of tenant, or an error matching
// ErrCredentialNotFound.
func (s *Store) Get(ctx context.Context, tenant, ref string) (*Credential, error) {
	if err := validateTenantRef(tenant, ref); err != nil {
		return nil, err
	}
	return s.get(ctx, s.rdb, tenant, ref)
}

// get reads and decodes the credential with c, which is the store's client
// or a transaction watching the credential's key.
func (s *Store) get(ctx context.Context, c redis.Cmdable, tenant, ref string) (*Credential, error) {
	return s.read(ctx, c, rediskeys.Credential(tenant, ref), tenant, ref)
}

// read is get with the credential's key already built.
func (s *Store) read(ctx context.Context, c redis.Cmdable, key, tenant, ref string) (*Credential, error) {
	b, err := c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, notFound(tenant, ref)
	}
	if err != nil {
		return nil, fmt.Errorf("reading credential %q failed: %w", ref, err)
	}
	return decodeCredential(b, tenant, ref)
}

// UpdateFields changes some fields of the existing credential ref of tenant
// in one atomic read-modify-write, keeping its other fields and bumping its
// UpdatedAt. Every value is a literal and is sealed (unlike Put, "env:" and
// "file:" are not parsed: the values are tokens from a provider, not
// configuration); an empty value removes the field. It returns an error
// matching ErrCredentialNotFound if the credential does not exist: it never
// creates one.
func (s *Store) UpdateFields(ctx context.Context, tenant, ref string, fields map[string]string) (*Credential, error) {
	return s.updateFields(ctx, tenant, ref, fields, nil)
}

// errCredentialChanged is returned by updateFields when the credential is no
// longer the one its caller based the update on.
var errCredentialChanged = errors.New("credential changed since it was read")

// updateFieldsAttempts bounds how often updateFields retries when another
// client writes the credential between its read and its write.
const updateFieldsAttempts = 5

// updateFields is UpdateFields; if unchanged is not nil, the update happens
// only if unchanged reports that the stored credential is still the one the
// caller read, else it fails with errCredentialChanged.
func (s *Store) updateFields(ctx context.Context, tenant, ref string, fields map[string]string, unchanged func(*Credential) bool) (*Credential, error) {
	if err := validateTenantRef(tenant, ref); err != nil {
		return nil, err
	}
	if len(fields) == 0 {
		return nil, fieldErrorf("fields", "no field to update")
	}
	sealed := make(map[string]*Value, len(fields))
	for _, name := range sortedKeys(fields) {
		if !fieldNamePattern.MatchString(name) {
			return nil, fieldErrorf("fields", "field name %q is not valid: want 1 to 64 of A-Z a-z 0-9 _ . -", name)
		}
		raw := fields[name]
		if raw == "" {
			sealed[name] = nil
			continue
		}
		if len(raw) > MaxFieldValueBytes {
			return nil, fieldErrorf("fields."+name, "value is %d bytes, at most %d are allowed", len(raw), MaxFieldValueBytes)
		}
		blob, err := s.keyring.Seal([]byte(raw), fieldAAD(tenant, ref, name))
		if err != nil {
			return nil, fmt.Errorf("sealing field %q of credential %q failed: %w", name, ref, err)
		}
		sealed[name] = &Value{Kind: KindLiteral, Sealed: blob}
	}

	key := rediskeys.Credential(tenant, ref)
	var updated *Credential
	update := func(tx *redis.Tx) error {
		cred, err := s.get(ctx, tx, tenant, ref)
		if err != nil {
			return err
		}
		if unchanged != nil && !unchanged(cred) {
			return errCredentialChanged
		}
		if cred.Fields == nil {
			cred.Fields = make(map[string]Value, len(sealed))
		}
		for name, v := range sealed {
			if v == nil {
				delete(cred.Fields, name)
			} else {
				cred.Fields[name] = *v
			}
		}
		if len(cred.Fields) == 0 {
			return fieldErrorf("fields", "a credential needs at least one field")
		}
		if len(cred.Fields) > MaxFields {
			return fieldErrorf("fields", "a credential has at most %d fields, this one would have %d", MaxFields, len(cred.Fields))
		}
		cred.UpdatedAt = s.now().UTC()
		b, err := json.Marshal(cred)
		if err != nil {
			return fmt.Errorf("encoding credential %q failed: %w", ref, err)
		}
		if _, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, key, b, 0)
			return nil
		}); err != nil {
			return err
		}
		updated = cred
		return nil
	}
	for range updateFieldsAttempts {
		err := s.rdb.Watch(ctx, update, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue // written by someone else meanwhile: read it again
		}
		if updated != nil && err == nil {
			s.changed(ctx, tenant, ref)
		}
		var fe *FieldError
		if err != nil && !errors.Is(err, ErrCredentialNotFound) && !errors.Is(err, errCredentialChanged) && !errors.As(err, &fe) {
			return nil, fmt.Errorf("updating credential %q failed: %w", ref, err)
		}
		return updated, err
	}
	return nil, fmt.Errorf("updating credential %q failed: it kept changing under %d attempts", ref, updateFieldsAttempts)
}

// List returns every credential of tenant, sorted by ref.
func (s *Store) List(ctx context.Context, tenant string) ([]*Credential, error) {
	if err := ValidateTenant(tenant); err != nil {
		return nil, &FieldError{Field: "tenant", Message: err.Error()}
	}
	refs, err := s.rdb.SMembers(ctx, rediskeys.Credentials(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("listing credentials of tenant %q failed: %w", tenant, err)
	}
	if len(refs) == 0 {
		return []*Credential{}, nil
	}
	sort.Strings(refs)

	keys := make([]string, len(refs))
	for i, ref := range refs {
		keys[i] = rediskeys.Credential(tenant, ref)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("reading credentials of tenant %q failed: %w", tenant, err)
	}

	creds := make([]*Credential, 0, len(refs))
	for i, val := range vals {
		str, ok := val.(string)
		if !ok {
			// A ref whose key is gone (deleted between SMEMBERS and MGET) is
			// not a credential any more.
			continue
		}
		cred, err := decodeCredential([]byte(str), tenant, refs[i])
		if err != nil {
			return nil, err
		}
		creds = append(creds, cred)
	}
	return creds, nil
}

// Delete removes the credential ref of tenant, or returns an error matching
// ErrCredentialNotFound if there is none.
func (s *Store) Delete(ctx context.Context, tenant, ref string) error {
	if err := validateTenantRef(tenant, ref); err != nil {
		return err
	}
	pipe := s.rdb.TxPipeline()
	del := pipe.Del(ctx, rediskeys.Credential(tenant, ref))
	pipe.SRem(ctx, rediskeys.Credentials(tenant), ref)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("deleting credential %q failed: %w", ref, err)
	}
	if del.Val() == 0 {
		return notFound(tenant, ref)
	}
	s.changed(ctx, tenant, ref)
	return nil
}

func validateTenantRef(tenant, ref string) error {
	if err := ValidateTenant(tenant); err != nil {
		return &FieldError{Field: "tenant", Message: err.Error()}
	}
	if !ValidID(ref) {
		return fieldErrorf("ref", "credential ref %q is not valid: want %s", ref, IDRule)
	}
	return nil
}

func decodeCredential(b []byte, tenant, ref string) (*Credential, error) {
	var cred Credential
	if err := json.Unmarshal(b, &cred); err != nil {
		return nil, fmt.Errorf("credential %q of tenant %q is corrupt in Redis: %w", ref, tenant, err)
	}
	// The key names both; a mismatch means someone wrote the key by hand.
	if cred.Tenant != tenant || cred.Ref != ref {
		return nil, fmt.Errorf("credential %q of tenant %q is corrupt in Redis: it names tenant %q and ref %q", ref, tenant, cred.Tenant, cred.Ref)
	}
	return &cred, nil
}

func notFound(tenant, ref string) error {
	return fmt.Errorf("%w: tenant %q has no credential %q", ErrCredentialNotFound, tenant, ref)
}

func notPrintable(r rune) bool {
	return !unicode.IsPrint(r) || unicode.IsSpace(r)
}
