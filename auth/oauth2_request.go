package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"
)

// requestContext is the context of a token request: not canceled with the
// call (a refresh cut short after the provider rotated the refresh token
// would lose it), bounded well within the lock's TTL.
func (o *OAuth) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	rctx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient, o.client)
	return context.WithTimeout(rctx, o.tokenTimeout)
}

// tokenError turns a failed token request into a *TokenError, redacted.
func (c *oauthCall) tokenError(err error, redactor *Redactor, timeout time.Duration) *TokenError {
	te := &TokenError{Tenant: c.tenant, Integration: c.integration, Credential: c.ref, Grant: c.grant}
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re):
		// re.Error() and re.Body may hold the whole response: never used.
		if re.Response != nil {
			te.StatusCode = re.Response.StatusCode
		}
		te.Code = providerText(redactor.String(re.ErrorCode))
		te.Description = providerText(redactor.String(re.ErrorDescription))
		s := te.StatusCode
		te.Refused = (s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests) ||
			(s < 400 && te.Code != "")
		if !te.Refused {
			te.Cause = fmt.Sprintf("the token endpoint answered HTTP %d", s)
			if te.Code != "" {
				te.Cause += fmt.Sprintf(", error %q", te.Code)
			}
		}
	case errors.Is(err, context.DeadlineExceeded):
		te.Cause = fmt.Sprintf("no answer from the token endpoint within %s", timeout)
	default:
		var ue *url.Error
		if errors.As(err, &ue) && ue.Timeout() {
			te.Cause = "no answer from the token endpoint within the HTTP client's timeout"
		} else {
			te.Cause = providerText(redactor.String(err.Error()))
		}
	}
	return te
}

// providerText keeps text from the token endpoint printable and short.
func providerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxProviderText {
		cut := maxProviderText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.TrimSpace(s)
}

// cachedConfig returns m's config for key, building it once; the map is
// bounded by dropping everything when full.
func cachedConfig[T any](mu *sync.Mutex, m map[string]*T, key string, build func() *T) *T {
	mu.Lock()
	defer mu.Unlock()
	if conf, ok := m[key]; ok {
		return conf
	}
	if len(m) >= maxCachedConfigs {
		clear(m)
	}
	conf := build()
	m[key] = conf
	return conf
}

func configKey(spec *Spec, clientID, clientSecret string) string {
	h := sha256.New()
	for _, part := range append([]string{spec.TokenURL, clientID, clientSecret, spec.AuthStyle}, spec.Scopes...) {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Spec) oauth2AuthStyle() oauth2.AuthStyle {
	switch s.AuthStyle {
	case AuthStyleHeader:
		return oauth2.AuthStyleInHeader
	case AuthStyleParams:
		return oauth2.AuthStyleInParams
	default:
		return oauth2.AuthStyleAutoDetect
	}
}
