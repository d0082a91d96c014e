// Package httpurl is the one check of an http(s) URL callq is given: a
// catalog's base_url, an oauth2 token_url, a webhook url. Each caller adds
// its own rules (no userinfo, no fragment) and its own message.
package httpurl

import "net/url"

// Parse parses raw and reports whether it is an absolute http or https URL
// with a host.
func Parse(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || !Is(u) {
		return nil, false
	}
	return u, true
}

// Is reports whether u is an absolute http or https URL with a host.
func Is(u *url.URL) bool {
	return (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
