// Package oauthtest runs a real OAuth2 authorization server for tests:
// github.com/go-oauth2/oauth2 (v4), in process, enforcing PKCE with S256,
// with an API that accepts only the access tokens it issued, so that the
// connect flow is tested against a provider's real behaviour (single-use
// codes, redirect URI checks, refresh token rotation) rather than a fake.
// Only tests import it; cmd/callq's dependency check keeps it out of the
// binary.
package oauthtest
