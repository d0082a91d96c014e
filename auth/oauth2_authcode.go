package auth

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"golang.org/x/oauth2"
)

// ReservedAuthorizeParams are the authorization request's parameters the
// authorization code flow sets itself; an integration's authorize_params
// may not set them.
var ReservedAuthorizeParams = []string{
	"response_type", "client_id", "redirect_uri", "scope", "state",
	"code_challenge", "code_challenge_method",
}

// ErrNotConnectable is matched by ConnectFields' and AuthCodeConfig's errors
// for a spec whose credentials an end user cannot connect.
var ErrNotConnectable = errors.New("integration cannot be connected by its end users")

// ConnectMethod is how an end user connects a credential of a spec.
type ConnectMethod string

const (
	// ConnectOAuth2 is the authorization code flow, with PKCE.
	ConnectOAuth2 ConnectMethod = "oauth2"
	// ConnectForm is a form of the fields the auth type uses.
	ConnectForm ConnectMethod = "form"
)

// ConnectMethod says how an end user connects a credential of this spec:
// ConnectOAuth2 for type oauth2 with an authorize_url, ConnectForm for
// bearer, api_key, basic and headers, or an error matching
// ErrNotConnectable.
func (s *Spec) ConnectMethod() (ConnectMethod, error) {
	switch t := s.authType(); t {
	case TypeOAuth2:
		if s.AuthorizeURL == "" {
			return "", fmt.Errorf("%w: its oauth2 auth block has no authorize_url", ErrNotConnectable)
		}
		return ConnectOAuth2, nil
	case TypeBearer, TypeAPIKey, TypeBasic, TypeHeaders:
		return ConnectForm, nil
	default:
		return "", fmt.Errorf("%w: auth type %s uses no credential", ErrNotConnectable, t)
	}
}

// ConnectFields returns, in the order a form shows them, the credential
// fields an end user fills in for this spec: token (bearer), key
// (api_key), username and password (basic), or the fields the header
// templates name (headers, sorted).
func (s *Spec) ConnectFields() []string {
	switch s.authType() {
	case TypeBearer:
		return []string{FieldToken}
	case TypeAPIKey:
		return []string{FieldKey}
	case TypeBasic:
		return []string{FieldUsername, FieldPassword}
	case TypeHeaders:
		seen := map[string]bool{}
		var names []string
		for _, name := range sortedKeys(s.Headers) {
			t, err := parseTemplate(s.Headers[name])
			if err != nil {
				continue
			}
			for _, p := range t.parts {
				if p.field != "" && !seen[p.field] {
					seen[p.field] = true
					names = append(names, p.field)
				}
			}
		}
		sort.Strings(names)
		return names
	default:
		return nil
	}
}

// AuthCodeConfig returns the golang.org/x/oauth2 config of the
// authorization code flow for this spec, whose authorization requests send
// the browser back to redirectURL. The client secret is resolved from its
// source now, under dirs.
func (s *Spec) AuthCodeConfig(redirectURL string, dirs SourceDirs) (*oauth2.Config, error) {
	if m, err := s.ConnectMethod(); err != nil {
		return nil, err
	} else if m != ConnectOAuth2 {
		return nil, fmt.Errorf("%w: auth type %s is connected with a form", ErrNotConnectable, s.authType())
	}
	secret := ""
	if s.ClientSecret != "" {
		v, err := resolveSecretSource(s.ClientSecret, dirs)
		if err != nil {
			return nil, fmt.Errorf("%w: auth.client_secret: %w", ErrOAuthConfig, err)
		}
		secret = v
	}
	return &oauth2.Config{
		ClientID:     s.ClientID,
		ClientSecret: secret,
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthorizeURL, TokenURL: s.TokenURL, AuthStyle: s.oauth2AuthStyle()},
		RedirectURL:  redirectURL,
		Scopes:       s.Scopes,
	}, nil
}

// AuthCodeOptions returns the authorize_params as options of AuthCodeURL,
// in name order.
func (s *Spec) AuthCodeOptions() []oauth2.AuthCodeOption {
	opts := make([]oauth2.AuthCodeOption, 0, len(s.AuthorizeParams))
	for _, name := range sortedKeys(s.AuthorizeParams) {
		opts = append(opts, oauth2.SetAuthURLParam(name, s.AuthorizeParams[name]))
	}
	return opts
}

// TokenFields returns the credential fields of type oauth2 grant
// refresh_token for tok, as the refresh machinery reads them: access_token,
// refresh_token when the provider sent one, and expiry (RFC 3339) when it
// said.
func TokenFields(tok *oauth2.Token) map[string]string {
	fields := map[string]string{FieldAccessToken: tok.AccessToken}
	if tok.RefreshToken != "" {
		fields[FieldRefreshToken] = tok.RefreshToken
	}
	if !tok.Expiry.IsZero() {
		fields[FieldExpiry] = tok.Expiry.UTC().Format(time.RFC3339)
	}
	return fields
}

// OAuth2Connection is the Connection of a credential an end user
// connected through the authorization code flow, whose token endpoint
// answered tok: whether it can be refreshed and, if not, when it expires.
func OAuth2Connection(tok *oauth2.Token, at time.Time, session string) *Connection {
	refreshable := tok.RefreshToken != ""
	c := &Connection{Method: ConnectOAuth2, At: at, Session: session, Refreshable: &refreshable}
	if !refreshable && !tok.Expiry.IsZero() {
		exp := tok.Expiry.UTC().Truncate(time.Second) // as TokenFields writes it
		c.ExpiresAt = &exp
	}
	return c
}

// SealConnectState seals b, an authorization request in flight (it holds
// the PKCE verifier), with the keyring that seals credentials, bound to id
// (the hash of its state), so that a blob moved under another state does
// not open.
func (s *Store) SealConnectState(id string, b []byte) (string, error) {
	return s.keyring.Seal(b, connectStateAAD(id))
}

// OpenConnectState opens what SealConnectState sealed for id.
func (s *Store) OpenConnectState(id, sealed string) ([]byte, error) {
	return s.keyring.Open(sealed, connectStateAAD(id))
}

func connectStateAAD(id string) []byte {
	return []byte("connectstate\x00" + id)
}
