// Package auth holds callq's identities and secrets: the credentials
// workers put on outbound requests, and the API keys producers present.
//
// A [Credential] is a tenant's named set of fields for one integration. Each
// field [Value] is a literal, sealed with AES-256-GCM by a [Keyring] parsed
// from CALLQ_SECRET_KEY, or a reference, "env:NAME" or "file:/path", read by
// the worker at call time so that a rotated secret takes effect on the next
// attempt. Sealed literals are bound to their tenant, ref and field, so a
// blob copied elsewhere does not open. [Store] keeps credentials in Redis;
// a Redis dump holds no secret in clear. A worker reads them through a
// [Cache], which keeps what it read in memory and drops it when any process
// of the fleet changes the credential (a message on a Redis channel each
// change publishes), so a call with a credential costs no Redis read.
//
// A [Spec] is an integration's auth block in the catalog. [Spec.Apply] puts
// resolved [Secrets] on an *http.Request as a bearer token, an API key in a
// header or query parameter, basic auth, or templated headers.
// [Spec.SensitiveHeaders], [Spec.SensitiveQuery] and [Redactor] keep those
// secrets out of records, logs and webhook bodies.
//
// [OAuth] keeps OAuth2 tokens fresh through golang.org/x/oauth2: a
// refresh_token grant refreshes an expiring token (storing a rotated refresh
// token, sealed, at once), a client_credentials token is cached sealed and
// shared, and a Redis lock per credential makes one refresh per expiry for
// the whole fleet. [Store.Reseal] moves every sealed secret to the keyring's
// first key after a rotation. [WebhookSecrets] sign completion webhooks per
// the Standard Webhooks specification.
//
// [KeyStore] keeps producer API keys, each belonging to a tenant and having
// a [Role]. Only the SHA-256 of a key's secret is stored.
//
// The package imports nothing else of callq.
package auth
