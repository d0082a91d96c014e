package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/callq/callq/internal/httpurl"
)

// Type is how an integration authenticates.
type Type string

const (
	// TypeNone sends no credentials.
	TypeNone Type = "none"
	// TypeBearer sends "Authorization: Bearer {token}".
	TypeBearer Type = "bearer"
	// TypeAPIKey sends field key in a header or query parameter.
	TypeAPIKey Type = "api_key"
	// TypeBasic sends HTTP basic auth from fields username and password.
	TypeBasic Type = "basic"
	// TypeHeaders sends headers templated over any fields.
	TypeHeaders Type = "headers"
	// TypeOAuth2 sends "Authorization: Bearer {access_token}", the token
	// obtained and kept fresh by [OAuth].
	TypeOAuth2 Type = "oauth2"
)

// knownTypes is the list errors give for an unknown auth type.
const knownTypes = "none, bearer, api_key, basic, headers or oauth2"

// Where an api_key goes, and its default header.
const (
	InHeader          = "header"
	InQuery           = "query"
	DefaultAPIKeyName = "X-API-Key"
)

// Field names the built-in auth types read.
const (
	FieldToken    = "token"
	FieldKey      = "key"
	FieldUsername = "username"
	FieldPassword = "password"
)

var placeholderNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Spec is an integration's `auth:` block in the catalog: how a credential is
// put on a request. The zero Type means TypeNone.
type Spec struct {
	Type Type `yaml:"type" json:"type"`
	// In is where an api_key goes: "header" (default) or "query".
	In string `yaml:"in,omitempty" json:"in,omitempty"`
	// Name is the api_key header or query parameter name; the header
	// defaults to "X-API-Key".
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Headers are, for type headers, header name to value template; a
	// template references fields as {{name}}.
	Headers map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`

	// TokenURL is, for type oauth2, the provider's token endpoint: an
	// absolute http or https URL.
	TokenURL string `yaml:"token_url,omitempty" json:"token_url,omitempty"`
	// AuthorizeURL is, for type oauth2, the provider's authorization
	// endpoint: an absolute http or https URL. With it, end users can
	// connect their own accounts through the authorization code flow
	// (package producer's connect endpoints); without it, tokens are put.
	AuthorizeURL string `yaml:"authorize_url,omitempty" json:"authorize_url,omitempty"`
	// AuthorizeParams are, for type oauth2, extra query parameters of the
	// authorization request (access_type: offline, prompt: consent...). They
	// may not set those the flow sets itself (ReservedAuthorizeParams).
	AuthorizeParams map[string]string `yaml:"authorize_params,omitempty" json:"authorize_params,omitempty"`
	// ClientID is, for type oauth2, the OAuth2 client id. A credential field
	// client_id overrides it.
	ClientID string `yaml:"client_id,omitempty" json:"client_id,omitempty"`
	// ClientSecret is, for type oauth2, the client secret as a source: a
	// literal, "env:NAME" or "file:/path", resolved at every use. A
	// credential field client_secret overrides it. It never appears in JSON,
	// and fmt prints a literal one as [REDACTED].
	ClientSecret string `yaml:"client_secret,omitempty" json:"-"`
	// Scopes are, for type oauth2, the scopes a client_credentials token is
	// requested with.
	Scopes []string `yaml:"scopes,omitempty" json:"scopes,omitempty"`
	// Grant is, for type oauth2, "refresh_token" (the default) or
	// "client_credentials".
	Grant string `yaml:"grant,omitempty" json:"grant,omitempty"`
	// AuthStyle is, for type oauth2, how the client authenticates to the
	// token endpoint: "header" (HTTP basic), "params" (form fields) or
	// "auto" (the default: header first, then params, remembered per
	// process).
	AuthStyle string `yaml:"auth_style,omitempty" json:"auth_style,omitempty"`
}

// Format prints the spec as fmt would, but with a literal ClientSecret
// replaced by [REDACTED], so that logging a spec or an integration by
// mistake cannot leak it. env: and file: sources are printed: they are not
// secret.
func (s Spec) Format(f fmt.State, verb rune) {
	type plain Spec // no methods, so no recursion
	c := plain(s)
	if c.ClientSecret != "" && !IsSourceRef(c.ClientSecret) {
		c.ClientSecret = Redacted
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), c)
}

// MissingFieldError reports that a credential lacks a field its auth type
// needs. It never holds a value.
type MissingFieldError struct {
	Field    string
	AuthType Type
}

func (e *MissingFieldError) Error() string {
	return fmt.Sprintf("credential has no field %q required by auth type %s", e.Field, e.AuthType)
}

func (s *Spec) authType() Type {
	if s == nil || s.Type == "" {
		return TypeNone
	}
	return s.Type
}

// Validate checks the spec and reports the first problem as a *FieldError
// whose Field is the catalog key at fault ("auth.type", "auth.in",
// "auth.headers.X-Foo").
func (s *Spec) Validate() error {
	if s == nil {
		return nil
	}
	t := s.authType()
	switch t {
	case TypeNone, TypeBearer, TypeAPIKey, TypeBasic, TypeHeaders, TypeOAuth2:
	default:
		return fieldErrorf("auth.type", "auth type %q is not known: want %s", s.Type, knownTypes)
	}

	// Keys that do not apply to the type are errors rather than ignored: a
	// misplaced key is a misconfigured integration.
	if t != TypeAPIKey {
		if s.In != "" {
			return fieldErrorf("auth.in", "in applies only to auth type api_key, not %s", t)
		}
		if s.Name != "" {
			return fieldErrorf("auth.name", "name applies only to auth type api_key, not %s", t)
		}
	}
	if t != TypeHeaders && len(s.Headers) > 0 {
		return fieldErrorf("auth.headers", "headers applies only to auth type headers, not %s", t)
	}
	if t != TypeOAuth2 {
		for _, k := range []struct {
			key string
			set bool
		}{
			{"token_url", s.TokenURL != ""},
			{"authorize_url", s.AuthorizeURL != ""},
			{"authorize_params", len(s.AuthorizeParams) > 0},
			{"client_id", s.ClientID != ""},
			{"client_secret", s.ClientSecret != ""},
			{"scopes", len(s.Scopes) > 0},
			{"grant", s.Grant != ""},
			{"auth_style", s.AuthStyle != ""},
		} {
			if k.set {
				return fieldErrorf("auth."+k.key, "%s applies only to auth type oauth2, not %s", k.key, t)
			}
		}
	}

	switch t {
	case TypeAPIKey:
		switch s.In {
		case "", InHeader:
			if s.Name != "" && !validHeaderName(s.Name) {
				return fieldErrorf("auth.name", "%q is not a valid HTTP header name", s.Name)
			}
		case InQuery:
			if s.Name == "" {
				return fieldErrorf("auth.name", "name is required when in is query")
			}
			if hasControl(s.Name) {
				return fieldErrorf("auth.name", "query parameter name %q contains a control character", s.Name)
			}
		default:
			return fieldErrorf("auth.in", "in %q is not valid: want header or query", s.In)
		}

	case TypeHeaders:
		if len(s.Headers) == 0 {
			return fieldErrorf("auth.headers", "auth type headers needs at least one header")
		}
		seen := make(map[string]string, len(s.Headers))
		for _, name := range sortedKeys(s.Headers) {
			key := "auth.headers." + name
			if !validHeaderName(name) {
				return fieldErrorf(key, "%q is not a valid HTTP header name", name)
			}
			canonical := http.CanonicalHeaderKey(name)
			if other, dup := seen[canonical]; dup {
				return fieldErrorf(key, "header %q is also given as %q: header names are case-insensitive", name, other)
			}
			seen[canonical] = name
			if _, err := parseTemplate(s.Headers[name]); err != nil {
				return fieldErrorf(key, "%s", err.Error())
			}
		}

	case TypeOAuth2:
		return s.validateOAuth2()
	}
	return nil
}

func (s *Spec) validateOAuth2() error {
	if s.TokenURL == "" {
		return fieldErrorf("auth.token_url", "token_url is required for auth type oauth2")
	}
	u, ok := httpurl.Parse(s.TokenURL)
	if !ok {
		return fieldErrorf("auth.token_url", "token_url must be an absolute http or https URL, got %q", s.TokenURL)
	}
	if u.User != nil || u.Fragment != "" {
		return fieldErrorf("auth.token_url", "token_url must not hold userinfo or a fragment")
	}
	if s.ClientID == "" {
		return fieldErrorf("auth.client_id", "client_id is required for auth type oauth2")
	}
	if hasControl(s.ClientID) {
		return fieldErrorf("auth.client_id", "client_id contains a control character")
	}
	if IsSourceRef(s.ClientSecret) {
		if _, err := ParseValue(nil, s.ClientSecret, nil); err != nil {
			return fieldErrorf("auth.client_secret", "%s", err.Error())
		}
	} else if hasControl(s.ClientSecret) {
		return fieldErrorf("auth.client_secret", "client_secret contains a control character")
	}
	if s.AuthorizeURL != "" {
		u, ok := httpurl.Parse(s.AuthorizeURL)
		if !ok {
			return fieldErrorf("auth.authorize_url", "authorize_url must be an absolute http or https URL, got %q", s.AuthorizeURL)
		}
		if u.User != nil || u.Fragment != "" {
			return fieldErrorf("auth.authorize_url", "authorize_url must not hold userinfo or a fragment")
		}
	}
	if s.AuthorizeURL != "" && s.grant() != GrantRefreshToken {
		return fieldErrorf("auth.authorize_url", "authorize_url applies only to grant refresh_token: the tokens it gets are kept fresh with their refresh token")
	}
	if len(s.AuthorizeParams) > 0 && s.AuthorizeURL == "" {
		return fieldErrorf("auth.authorize_params", "authorize_params needs authorize_url")
	}
	for _, name := range sortedKeys(s.AuthorizeParams) {
		if name == "" || hasControl(name) || hasControl(s.AuthorizeParams[name]) {
			return fieldErrorf("auth.authorize_params."+name, "parameter names and values must be non-empty and hold no control character")
		}
		if slices.Contains(ReservedAuthorizeParams, name) {
			return fieldErrorf("auth.authorize_params."+name, "%s is set by callq's authorization request itself", name)
		}
	}
	for i, scope := range s.Scopes {
		if scope == "" || strings.ContainsFunc(scope, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fieldErrorf(fmt.Sprintf("auth.scopes[%d]", i), "scope %q is not valid: want a non-empty token without spaces", scope)
		}
	}
	switch s.Grant {
	case "", GrantRefreshToken, GrantClientCredentials:
	default:
		return fieldErrorf("auth.grant", "grant %q is not valid: want refresh_token or client_credentials", s.Grant)
	}
	switch s.AuthStyle {
	case "", AuthStyleAuto, AuthStyleHeader, AuthStyleParams:
	default:
		return fieldErrorf("auth.auth_style", "auth_style %q is not valid: want header, params or auto", s.AuthStyle)
	}
	return nil
}

// grant returns the spec's grant, refresh_token if none is given.
func (s *Spec) grant() string {
	if s.Grant == "" {
		return GrantRefreshToken
	}
	return s.Grant
}

// RequiredFields returns the fields a credential must have for this auth
// type. Type headers requires none: a header whose fields are missing is
// simply not sent.
func (s *Spec) RequiredFields() []string {
	switch s.authType() {
	case TypeBearer:
		return []string{FieldToken}
	case TypeAPIKey:
		return []string{FieldKey}
	case TypeBasic:
		return []string{FieldUsername}
	case TypeOAuth2:
		if s.grant() == GrantRefreshToken {
			return []string{FieldAccessToken, FieldRefreshToken}
		}
		return nil
	default:
		return nil
	}
}

// NeedsCredential reports whether a call must name a credential (its own or
// the integration's default_credential) for this auth type: bearer,
// api_key, basic and headers take their secrets from it, and oauth2 grant
// refresh_token its tokens. Type none sends nothing, and oauth2 grant
// client_credentials gets its token with the spec's client id and secret
// (a credential named all the same overrides them), so they need none.
func (s *Spec) NeedsCredential() bool {
	switch s.authType() {
	case TypeNone:
		return false
	case TypeOAuth2:
		return s.grant() == GrantRefreshToken
	default:
		return true
	}
}

// Apply puts secrets on req as the spec says. A required field that is
// missing or empty is a *MissingFieldError. For type headers, a header is set
// only if every field its template references is present and non-empty, so
// an optional header (Datadog's "Authorization: Bearer {{pat}}") is left out
// for credentials without that field. Apply never puts a secret in an error.
func (s *Spec) Apply(req *http.Request, secrets Secrets) error {
	if req == nil {
		return errors.New("request is nil: Apply needs one")
	}
	t := s.authType()
	if t != TypeNone && req.Header == nil {
		req.Header = make(http.Header)
	}

	switch t {
	case TypeNone:
		return nil

	case TypeBearer:
		token, err := requireField(secrets, FieldToken, t, true)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return nil

	case TypeOAuth2:
		// The token must already be fresh: OAuth.Token makes it so.
		token, err := requireField(secrets, FieldAccessToken, t, true)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return nil

	case TypeAPIKey:
		switch s.In {
		case "", InHeader:
			key, err := requireField(secrets, FieldKey, t, true)
			if err != nil {
				return err
			}
			req.Header.Set(s.apiKeyHeader(), key)
			return nil
		case InQuery:
			// Query values are escaped, so any byte is safe in them.
			key, err := requireField(secrets, FieldKey, t, false)
			if err != nil {
				return err
			}
			if s.Name == "" {
				return fieldErrorf("auth.name", "name is required when in is query")
			}
			if req.URL == nil {
				return errors.New("request has no URL to put the API key on")
			}
			setQueryParam(req.URL, s.Name, key)
			return nil
		default:
			return fieldErrorf("auth.in", "in %q is not valid: want header or query", s.In)
		}

	case TypeBasic:
		// Both go through base64, so any byte is safe in them.
		username, err := requireField(secrets, FieldUsername, t, false)
		if err != nil {
			return err
		}
		// The password may be absent: Stripe, for one, sends its secret key
		// as the username with an empty password.
		req.SetBasicAuth(username, secrets[FieldPassword])
		return nil

	case TypeHeaders:
		for _, name := range sortedKeys(s.Headers) {
			tmpl, err := parseTemplate(s.Headers[name])
			if err != nil {
				return fmt.Errorf("auth.headers.%s: %w", name, err)
			}
			value, ok, err := tmpl.render(secrets)
			if err != nil {
				return err
			}
			if ok {
				req.Header.Set(name, value)
			}
		}
		return nil

	default:
		return fieldErrorf("auth.type", "auth type %q is not known: want %s", s.Type, knownTypes)
	}
}

// SensitiveHeaders returns, in canonical form, the request header names that
// carry secrets under this spec, for redacting recorded requests.
func (s *Spec) SensitiveHeaders() []string {
	switch s.authType() {
	case TypeBearer, TypeBasic, TypeOAuth2:
		return []string{"Authorization"}
	case TypeAPIKey:
		if s.In == InQuery {
			return nil
		}
		return []string{http.CanonicalHeaderKey(s.apiKeyHeader())}
	case TypeHeaders:
		names := make([]string, 0, len(s.Headers))
		for name := range s.Headers {
			names = append(names, http.CanonicalHeaderKey(name))
		}
		sort.Strings(names)
		return names
	default:
		return nil
	}
}

// IsSensitiveHeader reports whether name, in any case, is one of
// SensitiveHeaders: a header the spec sets from the credential, which a
// call or the catalog may not set and a recorded response does not keep.
// It allocates nothing, as it runs per header on the call path.
func (s *Spec) IsSensitiveHeader(name string) bool {
	switch s.authType() {
	case TypeBearer, TypeBasic, TypeOAuth2:
		return strings.EqualFold(name, "Authorization")
	case TypeAPIKey:
		return s.In != InQuery && strings.EqualFold(name, s.apiKeyHeader())
	case TypeHeaders:
		for h := range s.Headers {
			if strings.EqualFold(h, name) {
				return true
			}
		}
	}
	return false
}

// SensitiveQuery returns the query parameter names that carry secrets under
// this spec.
func (s *Spec) SensitiveQuery() []string {
	if s.authType() == TypeAPIKey && s.In == InQuery && s.Name != "" {
		return []string{s.Name}
	}
	return nil
}

func (s *Spec) apiKeyHeader() string {
	if s.Name == "" {
		return DefaultAPIKeyName
	}
	return s.Name
}

// requireField returns secrets[field] or a *MissingFieldError. inHeader
// says the value goes into a header verbatim and must be a valid header
// value, lest it split the header or be refused by the transport later with
// a less helpful error.
func requireField(secrets Secrets, field string, t Type, inHeader bool) (string, error) {
	v := secrets[field]
	if v == "" {
		return "", &MissingFieldError{Field: field, AuthType: t}
	}
	if inHeader && !validHeaderValue(v) {
		return "", invalidHeaderValueError(field)
	}
	return v, nil
}

func invalidHeaderValueError(field string) error {
	return fmt.Errorf("credential field %q holds a character not allowed in an HTTP header value (a newline or other control character)", field)
}

// setQueryParam sets name=value on u, replacing any parameter of that name
// and leaving the others exactly as they were, order and encoding included;
// url.Values.Encode would sort and re-encode them.
func setQueryParam(u *url.URL, name, value string) {
	var kept []string
	if u.RawQuery != "" {
		for _, part := range strings.Split(u.RawQuery, "&") {
			if part == "" {
				continue
			}
			k, _, _ := strings.Cut(part, "=")
			if uk, err := url.QueryUnescape(k); err == nil && uk == name {
				continue
			}
			kept = append(kept, part)
		}
	}
	kept = append(kept, url.QueryEscape(name)+"="+url.QueryEscape(value))
	u.RawQuery = strings.Join(kept, "&")
	u.ForceQuery = false
}

// template is a parsed header template: literal text and {{field}}
// placeholders, alternating.
type template struct {
	parts []templatePart
}

type templatePart struct {
	text  string // literal text, if field is empty
	field string
}

// parseTemplate parses a header value template. Only {{name}}, with name of
// [A-Za-z0-9_.-]+ and no spaces, is a placeholder; any other "{{" or "}}" is
// an error rather than literal text, so a typo cannot send a template
// verbatim.
func parseTemplate(s string) (*template, error) {
	t := &template{}
	rest := s
	for rest != "" {
		open := strings.Index(rest, "{{")
		lit := rest
		if open >= 0 {
			lit = rest[:open]
		}
		if strings.Contains(lit, "}}") {
			return nil, errors.New(`template has "}}" without a matching "{{"`)
		}
		if !validHeaderValue(lit) {
			return nil, errors.New("template contains a control character")
		}
		if lit != "" {
			t.parts = append(t.parts, templatePart{text: lit})
		}
		if open < 0 {
			break
		}
		rest = rest[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return nil, errors.New(`template has "{{" without a matching "}}"`)
		}
		name := rest[:end]
		if !placeholderNamePattern.MatchString(name) {
			return nil, fmt.Errorf("template placeholder {{%s}} is not valid: want {{field}} with field of A-Z a-z 0-9 _ . - and no spaces", name)
		}
		t.parts = append(t.parts, templatePart{field: name})
		rest = rest[end+2:]
	}
	return t, nil
}

// render substitutes secrets into t. ok is false if a referenced field is
// missing or empty, meaning the header is not to be sent.
func (t *template) render(secrets Secrets) (value string, ok bool, err error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.field == "" {
			b.WriteString(p.text)
			continue
		}
		v := secrets[p.field]
		if v == "" {
			return "", false, nil
		}
		if !validHeaderValue(v) {
			return "", false, invalidHeaderValueError(p.field)
		}
		b.WriteString(v)
	}
	return b.String(), true, nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s has no control characters but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
