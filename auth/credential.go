package auth

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Secrets are a credential's resolved field values, by field name. They are
// secret: keep them out of logs, records and errors.
type Secrets map[string]string

// String lists the field names only, so that printing Secrets with fmt, by
// mistake, does not leak them.
func (s Secrets) String() string {
	names := make([]string, 0, len(s))
	for name := range s {
		names = append(names, name)
	}
	sort.Strings(names)
	return "auth.Secrets[" + strings.Join(names, " ") + "]"
}

// GoString is String, for %#v.
func (s Secrets) GoString() string { return s.String() }

// Credential is a tenant's named set of secret fields for one integration.
// Its Fields hold sealed literals or references, never secrets in clear.
type Credential struct {
	Ref         string           `json:"ref"`
	Tenant      string           `json:"tenant"`
	Integration string           `json:"integration"`
	Fields      map[string]Value `json:"fields"`
	UpdatedAt   time.Time        `json:"updated_at"`
	// Connected says how an end user connected the credential, when one
	// did (a connect session); nil when it was put through the API.
	Connected *Connection `json:"connected,omitempty"`
}

// Connection is how and when an end user connected a credential.
type Connection struct {
	// Method is ConnectOAuth2 or ConnectForm.
	Method ConnectMethod `json:"method"`
	// At is when the end user finished connecting it.
	At time.Time `json:"at"`
	// Session is the connect session's id (not its token).
	Session string `json:"session,omitempty"`
	// Refreshable says, for ConnectOAuth2 only (nil for a form), whether
	// the provider sent a refresh token: without one the access token
	// cannot be renewed, and a call after its expiry fails with kind
	// credential until the end user connects again.
	Refreshable *bool `json:"refreshable,omitempty"`
	// ExpiresAt is when a token that cannot be refreshed expires, as the
	// provider said (expires_in); nil when it can be refreshed, or when
	// the provider gave no expiry (a token that does not expire).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Unrefreshable reports a credential connected through OAuth2 whose
// provider sent no refresh token.
func (c *Connection) Unrefreshable() bool {
	return c != nil && c.Refreshable != nil && !*c.Refreshable
}

// FieldNames returns the names of the credential's fields, sorted.
func (c *Credential) FieldNames() []string {
	names := make([]string, 0, len(c.Fields))
	for name := range c.Fields {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Resolve resolves every field of the credential, in name order, and fails
// on the first field that cannot be resolved. Literals are opened with aad
// binding them to this tenant, ref and field, so a sealed blob copied into
// another credential or field does not open; files are read under dirs.
func (c *Credential) Resolve(k *Keyring, dirs SourceDirs) (Secrets, error) {
	secrets := make(Secrets, len(c.Fields))
	for _, name := range c.FieldNames() {
		secret, err := c.Fields[name].Resolve(k, fieldAAD(c.Tenant, c.Ref, name), dirs)
		if err != nil {
			return nil, fmt.Errorf("credential %q field %q: %w", c.Ref, name, err)
		}
		secrets[name] = secret
	}
	return secrets, nil
}

// fieldAAD is the additional authenticated data a literal field is sealed
// with. NUL cannot occur in a tenant, ref or field name, so the parts cannot
// run into each other.
func fieldAAD(tenant, ref, field string) []byte {
	return []byte(tenant + "\x00" + ref + "\x00" + field)
}
